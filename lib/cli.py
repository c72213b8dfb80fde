"""The ``repro`` command.

    repro run CHAPTER [--profile quick|full]   execute a chapter in place with papermill and stamp it
    repro refresh [FOLDER]                     re-execute the chapters whose code changed since their outputs
    repro status [--out book/status.md]        write the status page from the chapters' stored outputs
    repro catalog [--out book/catalog.md]      write the catalog page from book/catalog.tsv
    repro sweep CHAPTER -p NAME V1 V2 ... -o OUT   run a chapter over a grid of parameters (see repro.tools.sweep)
    repro stability CHAPTER ... | --all         every claim decided again from 3 disjoint seed sets (quick)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .core.params import ParameterError
from .core.runcard import resolve_profile
from .tools import execution as ch


def cmd_run(args) -> int:
    for name in args.chapters:
        path = ch.find_chapter(name)
        t0 = time.perf_counter()
        ch.execute(path, resolve_profile(args.profile))
        print(f"{path.name}: executed at {resolve_profile(args.profile)} in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_refresh(args) -> int:
    stale = [p for p in ch.chapters(args.folder) if ch.is_stale(p)]
    if not stale:
        print("every chapter's stored outputs match its code")
    for path in stale:
        t0 = time.perf_counter()
        print(f"{path.name}: code changed since its outputs were stored; re-executing at {resolve_profile(args.profile)}")
        ch.execute(path, resolve_profile(args.profile))
        print(f"{path.name}: done in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_status(args) -> int:
    from .tools.status import status_markdown
    text = status_markdown(args.folder, args.stability) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def cmd_stability(args) -> int:
    from .tools.stability import describe, stability
    names = [p.stem for p in ch.chapters()] if args.all else args.chapters
    if not names:
        raise SystemExit("stability needs chapter names or --all.")
    table = stability(names, sets=args.sets, step=args.step, out_dir=args.out, workers=args.workers,
                      csv=None if args.no_csv else args.csv)
    print(describe(table))
    flipped = int(table.flipped.sum()) if len(table) else 0
    agreed = int(table.agreed.sum()) if len(table) else 0
    print(f"{agreed} of {len(table)} claims agreed across {args.sets} seed sets; {flipped} flipped between "
          f"REPRODUCED and NOT REPRODUCED" + ("" if args.no_csv else f"; table: {args.csv}"))
    return 1 if flipped else 0


def cmd_catalog(args) -> int:
    from .tools.catalog import catalog_markdown
    text = catalog_markdown(args.tsv, args.folder)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


def cmd_sweep(args) -> int:
    from .tools.sweep import sweep
    if not args.params and not args.grid:
        raise SystemExit("sweep needs a grid: -p NAME VALUE [VALUE ...] (repeatable) and/or -f GRID.yaml.")
    sweep(args.chapter, args.params, args.grid, args.out, profile=args.profile, engine=args.engine,
          address=args.address, workers=args.workers, values=args.values)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="repro", description="Run and inspect the chapters of Reproduced.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute chapters in place and stamp their code hash")
    r.add_argument("chapters", nargs="+")
    r.add_argument("--profile", default="auto", help="auto, quick or full (auto: full on CUDA, quick otherwise)")
    r.set_defaults(fn=cmd_run)
    f = sub.add_parser("refresh", help="re-execute chapters whose code changed since their outputs were stored")
    f.add_argument("folder", nargs="?", default=str(ch.NOTEBOOKS))
    f.add_argument("--profile", default="auto")
    f.set_defaults(fn=cmd_refresh)
    s = sub.add_parser("status", help="write the status page")
    s.add_argument("--folder", default=str(ch.NOTEBOOKS))
    s.add_argument("--out")
    s.add_argument("--stability", default=str(ch.ROOT / "book" / "stability.csv"),
                   help="the table written by `repro stability`")
    s.set_defaults(fn=cmd_status)
    b = sub.add_parser("stability", help="run chapters at quick from disjoint seed sets and compare the outcomes")
    b.add_argument("chapters", nargs="*")
    b.add_argument("--all", action="store_true", help="every chapter")
    b.add_argument("--sets", type=int, default=3, help="seed sets (default 3: seeds 0, 1000, 2000)")
    b.add_argument("--step", type=int, default=1000, help="distance between the sets' base seeds")
    b.add_argument("--out", default=str(ch.ROOT / "sweeps" / "stability"), help="runs and records (resumable)")
    b.add_argument("--workers", type=int, help="runs at a time (default: cores/2)")
    b.add_argument("--csv", default=str(ch.ROOT / "book" / "stability.csv"))
    b.add_argument("--no-csv", action="store_true", help="print the table only")
    b.set_defaults(fn=cmd_stability)
    c = sub.add_parser("catalog", help="write the catalog page from book/catalog.tsv")
    c.add_argument("--tsv", default=str(ch.ROOT / "book" / "catalog.tsv"))
    c.add_argument("--folder", default=str(ch.NOTEBOOKS))
    c.add_argument("--out", default=str(ch.ROOT / "book" / "catalog.md"))
    c.set_defaults(fn=cmd_catalog)
    w = sub.add_parser("sweep", help="run a chapter over a grid of parameters with papermill")
    w.add_argument("chapter")
    w.add_argument("-p", "--param", dest="params", nargs="+", action="append", metavar=("NAME", "VALUE"),
                   help="a parameter and its values; repeat for a grid")
    w.add_argument("-f", "--grid", help="a YAML file mapping parameter names to lists of values")
    w.add_argument("-o", "--out", required=True, help="output folder (re-use it to resume a sweep)")
    w.add_argument("--profile", choices=["auto", "quick", "full"], help="set the profile parameter of every run")
    w.add_argument("--engine", choices=["local", "ray"], default="local")
    w.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    w.add_argument("--workers", type=int, help="local runs at a time (default: cores/2 on a CPU, 1 on a GPU)")
    w.add_argument("-v", "--values", nargs="+", metavar="NAME",
                   help="measured values to plot in the summary figures (default: the first three)")
    w.set_defaults(fn=cmd_sweep)
    args = p.parse_args(argv)
    from .tools.sweep import SweepError
    try:
        return args.fn(args)
    except (SweepError, ParameterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
