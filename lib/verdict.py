"""The verdict: one line computed from measured values, and the evidence shown separately.

    v = repro.verdict("Networks fit random labels", passed=train_acc_random > 0.99,
                      evidence={"train accuracy, random labels": train_acc_random})

prints ``REPRODUCED: Networks fit random labels`` (or ``NOT REPRODUCED: ...``). The line holds no
numbers, so it is stable across runs and nbval can check it; the evidence table holds the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RECORD_MIME = "application/vnd.repro.record+json"


def _plain(value):
    """Make a measured value JSON-friendly (numpy/torch scalars to Python numbers)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


@dataclass
class Verdict:
    claim: str
    passed: bool
    evidence: dict = field(default_factory=dict)

    @property
    def line(self) -> str:
        return f"{'REPRODUCED' if self.passed else 'NOT REPRODUCED'}: {self.claim}"

    def show(self) -> None:
        """Display the evidence table and store the record (verdict + measured values) in the notebook."""
        show_evidence(self)

    def record(self) -> dict:
        return {"claim": self.claim, "reproduced": self.passed,
                "evidence": {k: _plain(v) for k, v in self.evidence.items()}}


def verdict(claim: str, passed, evidence: dict | None = None) -> Verdict:
    """Print the verdict line and nothing else (the cell nbval checks).

    Show the evidence in the next cell with ``v.show()``: it prints the measured values and stores
    the machine-readable record that the status page and sweeps read.
    """
    if not isinstance(claim, str) or not claim.strip():
        raise ValueError("claim must be a non-empty sentence.")
    passed = bool(_plain(passed))
    v = Verdict(claim.strip(), passed, dict(evidence or {}))
    print(v.line)
    return v


def show_evidence(v: Verdict) -> None:
    width = max([len(k) for k in v.evidence] + [8])
    text = "\n".join(f"  {k:<{width}}  {_fmt(val)}" for k, val in v.evidence.items())
    try:
        from IPython import get_ipython
        from IPython.display import display
        if get_ipython() is not None:
            display({"text/plain": v.line + "\nevidence:\n" + text, RECORD_MIME: v.record()}, raw=True)
            return
    except ImportError:
        pass
    print("evidence:\n" + text)


def _fmt(value) -> str:
    value = _plain(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
