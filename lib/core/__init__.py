"""The core layer: parameters and profiles, the run card, the verdict and its statistics, the plot theme.

Nothing here imports from any other layer of ``repro``.
"""
from .params import (
                     ParameterError,
                     check_choice,
                     check_positive,
                     check_range,
                     choice,
                     fill_parameters,
                     flag,
                     integer,
                     list_of,
                     number,
                     optional,
)
from .runcard import (
                     PROFILES,
                     RunCard,
                     device,
                     resolve_profile,
                     seed_everything,
                     start_run,
)
from .verdicts import (
                     INCONCLUSIVE,
                     NOT_REPRODUCED,
                     REPRODUCED,
                     Test,
                     Verdict,
                     exact,
                     paired,
                     rate,
                     replicates,
                     show_verdicts,
                     unpaired,
                     verdict,
)

__all__ = ["ParameterError", "check_choice", "check_positive", "check_range", "choice", "fill_parameters", "flag",
           "integer", "list_of", "number", "optional", "PROFILES", "RunCard", "device", "resolve_profile",
           "seed_everything", "start_run", "INCONCLUSIVE", "NOT_REPRODUCED", "REPRODUCED", "Test", "Verdict",
           "exact", "paired", "rate", "replicates", "show_verdicts", "unpaired", "verdict"]
