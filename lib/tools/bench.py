"""``make bench``: one table per question, on the machine it runs on.

* chapters: the wall time of each chapter at the quick profile (run now), next to the full-profile
  GPU time its stored outputs record (when they come from a full run on a CUDA device);
* batched training: the speed-up of training N small models at once (``train_ensemble``) over N
  one-at-a-time runs (``train``), the examples per second, and the achieved FLOP/s as a fraction of
  this device's measured dense matmul rate.

    python -m repro.tools.bench                     # everything
    python -m repro.tools.bench --no-chapters -n 1 8 64 256
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from ..core.runcard import device, device_name
from ..nn.ensemble import train_ensemble
from ..nn.models import MLP
from ..nn.train import train
from . import execution as ch


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(dev=None, size: int | None = None, repeats: int = 10) -> float:
    """The device's dense float32 matmul rate in GFLOP/s (square matrices, best of ``repeats``)."""
    dev = dev or device()
    size = size or (8192 if dev.type == "cuda" else 2048)
    a = torch.randn(size, size, device=dev)
    b = torch.randn(size, size, device=dev)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        a @ b
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best / 1e9


def batched_speedup(n_models: int, steps: int = 100, width: int = 256, depth: int = 2, batch: int = 128,
                    d_in: int = 40, n_data: int = 4000, dev=None) -> dict:
    """Time N MLPs trained one after another against the same N trained at once (same seeds, same steps)."""
    dev = dev or device()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_data, d_in, generator=g).to(dev)
    y = torch.randint(0, 10, (n_data,), generator=g).to(dev)
    build = lambda: MLP(d_in, width, depth, 10)  # noqa: E731
    seeds = list(range(n_models))
    kw = dict(steps=steps, lr=0.05, batch_size=batch, progress=False)
    train_ensemble(build, seeds[:2], x, y, **{**kw, "steps": 5})  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    train_ensemble(build, seeds, x, y, **kw)
    _sync(dev)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in seeds:
        torch.manual_seed(s)
        train(build().to(dev), x, y, seed=s, **kw)
    _sync(dev)
    t_loop = time.perf_counter() - t0
    # forward + backward of an MLP is about 6 FLOPs per weight per example
    weights = d_in * width + (depth - 1) * width * width + width * 10
    flops = 6 * weights * batch * steps * n_models
    return {"N": n_models, "one at a time (s)": t_loop, "all at once (s)": t_batched, "speed-up": t_loop / t_batched,
            "examples/s at once": batch * steps * n_models / t_batched, "GFLOP/s at once": flops / t_batched / 1e9}


def stored_full_gpu_time(path) -> float | None:
    """The wall time a chapter's stored outputs record, when they come from a full run on a CUDA GPU."""
    s = ch.summary(path)
    on_gpu = s["device"] and not s["device"].startswith("CPU")
    return s["wall_time_s"] if s["profile"] == "full" and on_gpu else None


def chapter_times(profile: str = "quick") -> pd.DataFrame:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in ch.chapters():
            t0 = time.perf_counter()
            try:
                ch.execute(path, profile, out=Path(tmp) / path.name, progress=False)
                status = "ok"
            except Exception as e:  # a failing chapter is reported, not fatal to the benchmark
                status = f"failed: {type(e).__name__}"
            rows.append({"chapter": path.stem, f"{profile} wall time here (s)": time.perf_counter() - t0,
                         "full GPU time, stored (s)": stored_full_gpu_time(path), "status": status})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, nargs="+", default=[1, 8, 64, 256], help="numbers of models trained at once")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--no-chapters", action="store_true", help="skip the chapter timings")
    p.add_argument("--profile", default="quick", choices=["quick", "full"])
    args = p.parse_args(argv)
    pd.set_option("display.width", 160)
    print(f"device: {device_name()}   torch {torch.__version__}")
    if not args.no_chapters:
        print(f"\nchapters at the {args.profile} profile")
        print(chapter_times(args.profile).to_string(index=False, float_format="%.1f"))
    rate = matmul_rate()
    print(f"\ndense float32 matmul: {rate:.0f} GFLOP/s")
    print(f"\ntraining N MLPs (40-256-256-10, batch 128, {args.steps} SGD steps each)")
    table = pd.DataFrame([batched_speedup(n, steps=args.steps) for n in args.n])
    table["share of matmul rate"] = table["GFLOP/s at once"] / rate
    print(table.to_string(index=False, float_format="%.2f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
