"""Parameterized batch runs of a chapter: one papermill run per grid point, then one table and figures.

    repro sweep grokking -p seed 0 1 2 -p train_fraction 0.4 0.6 -o sweeps/grokking --profile quick

Each run writes its executed notebook to ``OUT/runs/<run>.ipynb`` and a record to
``OUT/records/<run>.json`` (parameters, status, verdicts, the measured evidence, run card), both
atomically. Run again with the same arguments, a sweep skips every run whose record says ``ok``, so an
interrupted sweep loses nothing already finished. Then ``OUT/results.csv`` aggregates the records and
``OUT/summary-<param>.png`` plots, per swept parameter, the share of runs in which each claim came out
REPRODUCED and the measured values.

Runs go to a local pool (sized to the cores; one run at a time on a GPU) or, with ``--engine ray``, to a
Ray cluster (``--address``, default: a local instance), one task per run, each asking for a GPU when
the machine running the sweep has one.
"""
from __future__ import annotations

import ast
import hashlib
import itertools
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import yaml
from tqdm.auto import tqdm

from ..core.runcard import CARD_MIME
from ..core.verdicts import OUTCOMES, RECORD_MIME, REPRODUCED, combine
from . import execution as ch


class SweepError(ValueError):
    """Bad sweep input; the message is one sentence."""


# ---------------------------------------------------------------- the grid


def declared_parameters(path: Path) -> dict:
    """The chapter's ``parameters`` cell, as name -> default value (papermill's inspection)."""
    import papermill as pm
    params = pm.inspect_notebook(str(path))
    out = {}
    for name, p in params.items():
        try:
            out[name] = ast.literal_eval(p["default"])
        except (ValueError, SyntaxError):
            out[name] = p["default"]
    return out


def _cast(name: str, raw, default):
    """Cast one value to the type of the parameter's default (values from the command line are strings)."""
    if not isinstance(raw, str):
        value = raw
    else:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word is a string
    if default is None or value is None:
        return value
    want = type(default)
    if want is bool:
        if isinstance(value, bool):
            return value
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif want is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, want):
        return value
    raise SweepError(f"parameter {name} takes a value of type {want.__name__} (its default is {default!r}); "
                     f"got {raw!r}.")


def build_grid(path: Path, cli_params: list[list[str]] | None = None, yaml_file: str | None = None,
               fixed: dict | None = None) -> list[dict]:
    """The cartesian product of every swept parameter's values, checked against the chapter's parameters."""
    declared = declared_parameters(path)
    axes: dict[str, list] = {}
    if yaml_file:
        try:
            loaded = yaml.safe_load(Path(yaml_file).read_text()) or {}
        except OSError as e:
            raise SweepError(f"cannot read the grid file {yaml_file}: {e.strerror}.") from None
        if not isinstance(loaded, dict):
            raise SweepError(f"the grid file {yaml_file} must map parameter names to lists of values.")
        for k, v in loaded.items():
            axes[str(k)] = v if isinstance(v, list) else [v]
    for item in cli_params or []:
        if len(item) < 2:
            raise SweepError(f"-p needs a parameter name and at least one value; got {' '.join(item)!r}.")
        axes[item[0]] = item[1:]
    for k, v in (fixed or {}).items():
        axes[k] = [v]
    for name in axes:
        if name not in declared:
            raise SweepError(f"chapter {path.stem} has no parameter {name!r}; its parameters are: "
                             f"{', '.join(declared)}.")
    cast = {k: [_cast(k, v, declared[k]) for v in vals] for k, vals in axes.items()}
    names = list(cast)
    return [dict(zip(names, combo)) for combo in itertools.product(*(cast[n] for n in names))]


def run_id(params: dict) -> str:
    """A stable, file-safe name for one grid point."""
    text = ",".join(f"{k}={params[k]!r}" for k in sorted(params))
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(f"{k}={params[k]}" for k in sorted(params)))[:80]
    return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------- one run


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def extract_record(nb) -> dict:
    """Verdicts (claim, outcome, tests), flattened measured values and run card from an executed notebook.

    The values are the evidence of every claim and the estimate of every test, keyed by the test's name."""
    verdicts, values, card = [], {}, {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if RECORD_MIME in data:
                rec = data[RECORD_MIME]
                verdicts.append({"claim": rec["claim"], "outcome": rec["outcome"], "tests": rec.get("tests", [])})
                values.update(rec.get("evidence", {}))
                values.update({t["name"]: t["estimate"] for t in rec.get("tests", [])})
            if CARD_MIME in data:
                card = data[CARD_MIME]
    return {"verdicts": verdicts, "values": values, "card": card}


def is_current(record: dict | None, code: str) -> bool:
    """A finished run of the chapter's present code (a run of older code is done again)."""
    return bool(record) and record.get("status") == "ok" and record.get("code_hash") == code


def run_one(chapter_path: str, params: dict, out_dir: str, threads: int | None = None, env: dict | None = None) -> dict:
    """Execute one grid point and write its notebook and record atomically. Never raises for a failed run."""
    import nbformat
    import papermill as pm
    os.environ.update(env or {})  # inherited by the kernel (the same values for every run)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    out = Path(out_dir)
    rid = run_id(params)
    nb_path = out / "runs" / f"{rid}.ipynb"
    t0 = time.perf_counter()
    record = {"run": rid, "params": params, "status": "ok", "error": None,
              "code_hash": ch.code_hash(ch.read(chapter_path))}  # a later run reuses it only for this code
    tmp_nb = nb_path.with_name(f".{rid}.{os.getpid()}.tmp.ipynb")
    try:
        ch.run_papermill(chapter_path, tmp_nb, params, progress=False)
    except pm.PapermillExecutionError as e:
        record.update(status="failed", error=f"{e.ename}: {e.evalue}")
    except Exception as e:  # kernel died, timeout, ...
        record.update(status="failed", error=f"{type(e).__name__}: {e}")
    if tmp_nb.exists():
        record.update(extract_record(nbformat.read(str(tmp_nb), as_version=4)))
        os.replace(tmp_nb, nb_path)
    record["wall_time_s"] = round(time.perf_counter() - t0, 2)
    if record["status"] == "ok" and not record.get("verdicts"):
        record.update(status="failed", error="the run stored no verdict")
    _write_atomic(out / "records" / f"{rid}.json", json.dumps(record, indent=1, default=str))
    return record


# ---------------------------------------------------------------- executors


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k.startswith("REPRO_")}


def _local(chapter: Path, todo: list[dict], out: Path, workers: int, threads: int):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_one, str(chapter), p, str(out), threads, _env()) for p in todo]
        for f in as_completed(futures):
            yield f.result()


def _ray(chapter: Path, todo: list[dict], out: Path, address: str | None, threads: int, gpu: bool):
    try:
        import ray
    except ImportError:
        raise SweepError("--engine ray needs Ray: install it with `pip install -e '.[ray]'`.") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=threads, num_gpus=1 if gpu else 0, max_retries=0)(run_one)
    pending = [task.remote(str(chapter), p, str(out.resolve()), threads, _env()) for p in todo]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()


# ---------------------------------------------------------------- the sweep


def sweep(chapter: str, cli_params=None, yaml_file=None, out_dir="sweeps", profile: str | None = None,
          engine: str = "local", address: str | None = None, workers: int | None = None, progress: bool = True,
          values: list[str] | None = None) -> pd.DataFrame:
    path = ch.find_chapter(chapter)
    if engine not in ("local", "ray"):
        raise SweepError(f"engine must be 'local' or 'ray'; got {engine!r}.")
    grid = build_grid(path, cli_params, yaml_file, fixed={"profile": profile} if profile else None)
    out = Path(out_dir)
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
        (out / "records").mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SweepError(f"the output folder {out} is not writable: {e.strerror}.") from None

    import torch
    gpu = torch.cuda.is_available()
    cores = os.cpu_count() or 1
    workers = workers or (1 if gpu else max(1, cores // 2))
    threads = max(1, cores // workers)

    code = ch.code_hash(ch.read(path))

    def done(p):
        f = out / "records" / f"{run_id(p)}.json"
        return f.exists() and is_current(json.loads(f.read_text()), code)

    todo = [p for p in grid if not done(p)]
    print(f"{path.stem}: {len(grid)} runs in the grid, {len(grid) - len(todo)} already finished, {len(todo)} to run "
          f"({engine}{', ' + str(workers) + ' at a time' if engine == 'local' else ''})")
    results = _local(path, todo, out, workers, threads) if engine == "local" else _ray(path, todo, out, address, threads, gpu)
    for rec in tqdm(results, total=len(todo), desc="runs", disable=not progress):
        if rec["status"] != "ok":
            tqdm.write(f"run {rec['run']} failed: {rec['error']}")
    table = aggregate(out, grid)
    swept = [k for k in grid[0] if len({repr(g[k]) for g in grid}) > 1] if grid else []
    summarize(table, swept, out, values, params=list(grid[0]) if grid else [])
    return table


def aggregate(out: Path, grid: list[dict]) -> pd.DataFrame:
    """One row per grid point: parameters, status, the chapter's outcome and each claim's, the measured values."""
    rows = []
    for p in grid:
        f = out / "records" / f"{run_id(p)}.json"
        if not f.exists():
            continue
        rec = json.loads(f.read_text())
        verdicts = rec.get("verdicts", [])
        row = {**rec["params"], "run": rec["run"], "status": rec["status"], "error": rec.get("error"),
               "outcome": combine(v["outcome"] for v in verdicts) if rec["status"] == "ok" else None,
               "wall_time_s": rec.get("wall_time_s"), "device": rec.get("card", {}).get("device")}
        for i, v in enumerate(verdicts):
            row[f"verdict {i + 1}"] = v["outcome"]
        row.update({k: v for k, v in rec.get("values", {}).items() if isinstance(v, (int, float, bool, str))})
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "results.csv", index=False)
    return table


def summarize(table: pd.DataFrame, swept: list[str], out: Path, values: list[str] | None = None,
              max_values: int = 3, params: list[str] = ()) -> list[Path]:
    """Print the outcome counts; draw one figure per swept parameter: the share of runs in which each claim
    came out REPRODUCED, and the mean and spread of measured ``values`` (default: the first ``max_values``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.plots import use_theme
    ok = table[table.status == "ok"] if len(table) else table
    counts = ok.outcome.value_counts().to_dict() if len(ok) else {}
    n_failed = int((table.status != "ok").sum()) if len(table) else 0
    outcomes = ", ".join(f"{counts.get(o, 0)} {o}" for o in OUTCOMES)
    print(f"{len(ok)} finished runs ({outcomes}); {n_failed} runs failed; table: {out / 'results.csv'}")
    figures = []
    if not len(ok):
        return figures
    use_theme()
    skip = set(swept) | set(params) | {"run", "status", "error", "outcome", "wall_time_s", "device", "profile"}
    numeric = [c for c in ok.columns if c not in skip and not c.startswith("verdict")
               and pd.api.types.is_numeric_dtype(ok[c]) and not pd.api.types.is_bool_dtype(ok[c])]
    if values:
        unknown = [v for v in values if v not in numeric]
        if unknown:
            raise SweepError(f"no measured value named {unknown[0]!r}; the runs measured: {', '.join(numeric)}.")
        numeric = list(values)
    else:
        numeric = numeric[:max_values]
    verdict_cols = sorted(c for c in ok.columns if c.startswith("verdict "))
    for p in swept:
        fig, axes = plt.subplots(1, 1 + len(numeric), figsize=(4.2 * (1 + len(numeric)), 3.4), squeeze=False)
        axes = axes.ravel()
        share = (ok[verdict_cols] == REPRODUCED).groupby(ok[p]).mean()
        share.index = [str(i) for i in share.index]
        share.plot.bar(ax=axes[0], rot=0, legend=False)
        if len(verdict_cols) > 1:
            axes[0].legend(fontsize=8, loc="lower left", framealpha=0.9)
        axes[0].set(xlabel=p, ylabel="share of runs REPRODUCED", ylim=(0, 1.05), title="verdicts")
        for ax, col in zip(axes[1:], numeric):
            g = ok.groupby(p)[col]
            ax.errorbar([str(i) for i in g.mean().index], g.mean().values, yerr=g.std().fillna(0).values,
                        marker="o", capsize=3)
            ax.set(xlabel=p, ylabel=col, title="mean ± sd over the rest")
        fig.tight_layout()
        path = out / f"summary-{re.sub(r'[^A-Za-z0-9_.-]+', '_', p)}.png"
        fig.savefig(path)
        plt.close(fig)
        figures.append(path)
    return figures
