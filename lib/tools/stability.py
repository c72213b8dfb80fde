"""Stability of the verdicts: every claim decided again from disjoint seed sets.

    repro stability grokking               # seeds 0, 1000 and 2000 at the quick profile
    repro stability --all --workers 2      # every chapter (``make stability``)

A chapter's replicates are seeded from its ``seed`` parameter (``seed, seed + 1, ...``), so runs with
``seed`` = 0, 1000 and 2000 draw disjoint replicates. Each run is one papermill execution at the quick
profile, written with its record under ``--out`` (default ``sweeps/stability/<chapter>``) exactly as a
sweep writes it; a run whose record says ``ok`` is not run again, so an interrupted check loses
nothing already finished. The table has one row per claim: its outcome in every seed set, whether
they all agree, and whether the claim *flipped* (REPRODUCED in one set and NOT REPRODUCED in
another), which is a defect of the chapter. A claim that moves between a decided outcome and
INCONCLUSIVE is honest: its evidence is near the bar. ``book/stability.csv`` keeps the rows of every
chapter checked; the status page reads it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..core.verdicts import NOT_REPRODUCED, REPRODUCED
from . import execution as ch
from .sweep import _env, is_current, run_id, run_one

SEED_STEP = 1000
CSV = ch.ROOT / "book" / "stability.csv"
OUT = ch.ROOT / "sweeps" / "stability"
FAILED = "FAILED"


def seed_sets(sets: int = 3, step: int = SEED_STEP) -> list[int]:
    if sets < 2:
        raise ValueError(f"sets must be at least 2 (stability compares seed sets); got {sets}.")
    return [k * step for k in range(sets)]


def _record(out: Path, params: dict) -> dict | None:
    f = out / "records" / f"{run_id(params)}.json"
    return json.loads(f.read_text()) if f.exists() else None


def claims_table(chapter: str, records: dict) -> pd.DataFrame:
    """One row per claim: the outcome per seed set (``seed_<s>`` columns), agreed, flipped."""
    texts, outcomes = {}, {}
    for seed, rec in records.items():
        verdicts = rec.get("verdicts", []) if rec and rec.get("status") == "ok" else None
        outcomes[seed] = verdicts
        for i, v in enumerate(verdicts or [], 1):
            texts.setdefault(i, v["claim"])
    rows = []
    for i in sorted(texts):
        row = {"chapter": chapter, "claim": i, "text": texts[i]}
        got = []
        for seed, verdicts in outcomes.items():
            o = FAILED if verdicts is None else (verdicts[i - 1]["outcome"] if i <= len(verdicts) else FAILED)
            row[f"seed_{seed}"] = o
            got.append(o)
        row["agreed"] = len(set(got)) == 1 and FAILED not in got
        row["flipped"] = REPRODUCED in got and NOT_REPRODUCED in got
        rows.append(row)
    return pd.DataFrame(rows)


def stability(chapters: list[str], sets: int = 3, step: int = SEED_STEP, out_dir: str | Path = OUT,
              workers: int | None = None, csv: str | Path | None = CSV, progress: bool = True) -> pd.DataFrame:
    """Run every chapter at the quick profile once per seed set; return (and store) the claims table."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    paths = [ch.find_chapter(c) for c in chapters]
    seeds = seed_sets(sets, step)
    jobs = []
    for path in paths:
        out = Path(out_dir) / path.stem
        code = ch.code_hash(ch.read(path))
        (out / "runs").mkdir(parents=True, exist_ok=True)
        (out / "records").mkdir(parents=True, exist_ok=True)
        for s in seeds:
            params = {"profile": "quick", "seed": s}
            if not is_current(_record(out, params), code):
                jobs.append((path, params, out))
    cores = os.cpu_count() or 1
    workers = workers or max(1, cores // 2)
    threads = max(1, cores // workers)
    print(f"stability: {len(paths)} chapter(s) x {len(seeds)} seed sets ({', '.join(map(str, seeds))}); "
          f"{len(jobs)} runs to do, {workers} at a time")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_one, str(p), params, str(out), threads, _env()) for p, params, out in jobs]
        for f in tqdm(as_completed(futures), total=len(futures), desc="runs", disable=not progress):
            rec = f.result()
            if rec["status"] != "ok":
                tqdm.write(f"run {rec['run']} failed: {rec['error']}")
    tables = []
    for path in paths:
        out = Path(out_dir) / path.stem
        tables.append(claims_table(path.stem, {s: _record(out, {"profile": "quick", "seed": s}) for s in seeds}))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if csv is not None and len(table):
        store(table, csv)
    return table


def store(table: pd.DataFrame, csv: str | Path = CSV) -> None:
    """Replace the rows of the chapters in ``table`` in ``csv`` and keep every other chapter's rows."""
    csv = Path(csv)
    if csv.exists():
        old = pd.read_csv(csv)
        old = old[~old.chapter.isin(set(table.chapter))]
        table = pd.concat([old, table], ignore_index=True)
    table = table.sort_values(["chapter", "claim"]).reset_index(drop=True)
    tmp = csv.with_name(f".{csv.name}.{os.getpid()}.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, csv)


def describe(table: pd.DataFrame) -> str:
    """The table in words: per chapter, agreed or which claims moved."""
    lines = []
    for chapter, rows in table.groupby("chapter", sort=True):
        sets = [c for c in rows.columns if c.startswith("seed_")]
        if rows.agreed.all():
            lines.append(f"{chapter}: stable across {len(sets)} seed sets ({len(rows)} claims)")
            continue
        for _, r in rows[~rows.agreed].iterrows():
            kind = "FLIPPED" if r.flipped else "moved"
            lines.append(f"{chapter}: claim {r.claim} {kind}: " + " / ".join(str(r[c]) for c in sets))
    return "\n".join(lines)


def chapter_stability(csv: str | Path = CSV) -> dict:
    """chapter -> a short phrase for the status page ("stable across 3 seed sets", "claim 2 flipped", ...)."""
    csv = Path(csv)
    if not csv.exists():
        return {}
    table = pd.read_csv(csv)
    out = {}
    for chapter, rows in table.groupby("chapter"):
        sets = [c for c in rows.columns if c.startswith("seed_") and rows[c].notna().any()]
        if rows.agreed.all():
            out[chapter] = f"stable across {len(sets)} seed sets"
        else:
            moved = [f"claim {r.claim} {'flipped' if r.flipped else 'moved'} "
                     f"({' / '.join(str(r[c]) for c in sets)})" for _, r in rows[~rows.agreed].iterrows()]
            out[chapter] = "; ".join(moved)
    return out
