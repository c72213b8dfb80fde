"""Chapters as files: code hashes, execution with papermill, and what their stored outputs say.

A chapter's stored outputs are *current* when the hash of its code cells equals the hash stamped
into ``metadata.repro.code_hash`` when it was last executed by :func:`execute`. ``make book``
re-executes the stale ones; a test fails while any is stale.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import tempfile
import time
from pathlib import Path

import nbformat

from ..core.params import check_choice
from ..core.runcard import CARD_MIME, PROFILES
from ..core.verdicts import RECORD_MIME

ROOT = Path(__file__).resolve().parents[2]  # lib/tools/execution.py -> the repository
NOTEBOOKS = ROOT / "notebooks"


def chapters(folder: str | Path = NOTEBOOKS) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*.ipynb") if not p.name.startswith("_"))


def find_chapter(name: str | Path) -> Path:
    """A chapter by path or by name (``grokking`` -> notebooks/grokking.ipynb); one clear error otherwise."""
    p = Path(name)
    for cand in (p, NOTEBOOKS / p, NOTEBOOKS / f"{p}.ipynb"):
        if cand.suffix == ".ipynb" and cand.exists():
            return cand.resolve()
    known = ", ".join(c.stem for c in chapters())
    raise SystemExit(f"unknown chapter {str(name)!r}; the chapters are: {known}.")


def code_hash(nb) -> str:
    """sha256 over the sources of the code cells (papermill's injected-parameters cell excluded)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", []):
            h.update(cell.source.strip().encode())
            h.update(b"\0")
    return h.hexdigest()[:16]


def read(path: str | Path):
    return nbformat.read(str(path), as_version=4)


def is_stale(path: str | Path) -> bool:
    nb = read(path)
    return nb.metadata.get("repro", {}).get("code_hash") != code_hash(nb)


CELL_TIMEOUT_S = 1800  # no cell of any chapter comes near this at either profile
_POLL_SLICE_S = 1.0


def _poll_in_slices() -> None:
    """Make the kernel client wait for messages in one-second polls instead of one long poll.

    nbclient waits for a cell's reply with a single zmq poll as long as the cell's time limit. Now and
    then that poll misses its wake-up although the reply has arrived (jupyter/nbclient#312; here at
    ipywidgets cells, in about 1 run in 30 when two chapters run at once), and the run sits idle until
    the limit. A poll that times out re-reads the socket, so slicing the wait bounds such a stall to
    one slice. Applied once per process; the semantics of ``get_msg(timeout)`` are unchanged.
    """
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel
    if getattr(AsyncZMQSocketChannel.get_msg, "sliced", False):
        return
    get_msg = AsyncZMQSocketChannel.get_msg

    async def sliced(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _POLL_SLICE_S if deadline is None else max(0.0, min(_POLL_SLICE_S, deadline - time.monotonic()))
            try:
                return await get_msg(self, timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    sliced.sliced = True
    AsyncZMQSocketChannel.get_msg = sliced


def run_papermill(path: str | Path, out: str | Path, parameters: dict | None = None, progress: bool = True) -> None:
    """papermill with the chapter's directory as working directory, a per-cell time limit and sliced polls."""
    import papermill as pm
    _poll_in_slices()
    pm.execute_notebook(str(path), str(out), parameters=parameters or {}, cwd=str(Path(path).parent),
                        progress_bar=progress, kernel_name="python3", execution_timeout=CELL_TIMEOUT_S)


def execute(path: str | Path, profile: str = "quick", out: str | Path | None = None, parameters: dict | None = None,
            progress: bool = True) -> Path:
    """Run a chapter with papermill at ``profile`` and stamp its code hash; write to ``out`` (default: in place).

    The profile travels in $REPRO_PROFILE with ``profile = "auto"`` left in the notebook, so a stored
    notebook carries no injected cell and re-runs at whatever profile its reader's machine picks.
    """
    check_choice("profile", profile, PROFILES)
    path, out = Path(path), Path(out or path)
    old = os.environ.get("REPRO_PROFILE")
    os.environ["REPRO_PROFILE"] = profile
    fd, tmp = tempfile.mkstemp(prefix="_running-", suffix=".ipynb", dir=out.parent)  # "_": not a chapter
    os.close(fd)
    try:
        run_papermill(path, tmp, parameters, progress)
        nb = read(tmp)
        nb.metadata.pop("papermill", None)
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        nb.metadata["repro"] = {"code_hash": code_hash(nb), "profile": profile,
                                "executed": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        nbformat.write(nb, tmp)
        os.replace(tmp, out)  # atomic: an interrupted run leaves the old notebook as it was
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if old is None:
            os.environ.pop("REPRO_PROFILE", None)
        else:
            os.environ["REPRO_PROFILE"] = old
    return out


def _outputs(nb, mime):
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if mime in o.get("data", {}):
                yield o["data"][mime]


def summary(path: str | Path) -> dict:
    """What a chapter's stored outputs say: title, verdicts, run card (profile, device, wall time, date)."""
    nb = read(path)
    title = next((line.lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"
                  for line in c.source.splitlines() if line.startswith("# ")), Path(path).stem)
    cards = list(_outputs(nb, CARD_MIME))
    card = cards[-1] if cards else {}
    records = list(_outputs(nb, RECORD_MIME))
    return {"chapter": Path(path).stem, "title": title, "paper": nb.metadata.get("paper", {}),
            "verdicts": records, "profile": card.get("profile"), "device": card.get("device"),
            "wall_time_s": card.get("wall_time_s"), "date": (card.get("started") or "")[:10],
            "stale": is_stale(path)}
