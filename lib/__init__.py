"""repro: the small library every chapter of *Reproduced* imports.

Data, models, the training loops (one model, or many small models at once), metrics,
plots, the run card and the verdict. Chapters show the paper's idea; the plumbing lives here.
"""
from .runtime import (PROFILES, ParameterError, RunCard, check_choice, check_positive, check_range, device,
                      resolve_profile, seed_everything, start_run)
from .verdict import Verdict, verdict

__all__ = ["PROFILES", "ParameterError", "RunCard", "check_choice", "check_positive", "check_range", "device",
           "resolve_profile", "seed_everything", "start_run", "Verdict", "verdict"]
