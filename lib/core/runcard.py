"""Device, profile, seeding, parameter checks and the run card.

A chapter starts with::

    card = repro.start_run("grokking", profile, seeds=[seed])

which resolves the profile, seeds every generator, prints the run card and stores it in the
notebook (as a display output with machine-readable metadata, which the status page reads).
It ends with ``card.finish()``, which prints and stores the wall time.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .params import check_choice, check_positive

PROFILES = ("quick", "full")
PROFILE_ENV = "REPRO_PROFILE"  # overrides profile="auto" (the test suite sets it to "quick")
CARD_MIME = "application/vnd.repro.card+json"


def device() -> torch.device:
    """CUDA when a GPU is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(dev: torch.device | None = None) -> str:
    dev = dev or device()
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def resolve_profile(profile: str = "auto") -> str:
    """``"auto"`` means ``full`` on CUDA and ``quick`` on a CPU; $REPRO_PROFILE overrides ``auto``."""
    check_choice("profile", profile, ("auto",) + PROFILES)
    if profile != "auto":
        return profile
    env = os.environ.get(PROFILE_ENV)
    if env:
        check_choice(PROFILE_ENV, env, PROFILES)
        return env
    return "full" if torch.cuda.is_available() else "quick"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator seeded the same way."""
    check_positive("seed", seed, integer=True, allow_zero=True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class RunCard:
    chapter: str
    profile: str
    device: str
    torch: str
    seeds: list
    started: str
    wall_time_s: float | None = None
    finished: str | None = None
    _t0: float = field(default=0.0, repr=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("_t0")
        return d

    def text(self) -> str:
        lines = [f"chapter   {self.chapter}", f"profile   {self.profile}", f"device    {self.device}",
                 f"torch     {self.torch}", f"seeds     {self.seeds}", f"started   {self.started}"]
        if self.wall_time_s is not None:
            lines.append(f"wall time {self.wall_time_s:.1f} s")
        return "\n".join(lines)

    def _show(self):
        try:
            from IPython import get_ipython
            from IPython.display import display
            if get_ipython() is not None:
                display({"text/plain": self.text(), CARD_MIME: self.as_dict()}, raw=True)
                return
        except ImportError:
            pass
        print(self.text())

    def finish(self) -> "RunCard":
        self.wall_time_s = round(time.perf_counter() - self._t0, 2)
        self.finished = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._show()
        return self


def start_run(chapter: str, profile: str = "auto", seeds=(0,)) -> RunCard:
    """Resolve the profile, seed everything with the first seed, print and store the run card."""
    seeds = list(seeds)
    for s in seeds:
        check_positive("seed", s, integer=True, allow_zero=True)
    prof = resolve_profile(profile)
    seed_everything(seeds[0])
    card = RunCard(chapter=chapter, profile=prof, device=device_name(), torch=torch.__version__,
                   seeds=seeds, started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   _t0=time.perf_counter())
    card._show()
    return card
