"""repro: the library every chapter of *Reproduced* imports.

The package is in layers by role (CONTRIBUTING.md has the rule, a test enforces it):

* ``repro.core``: profiles and parameters, the run card, the verdict and its statistics, the plot theme;
* ``repro.nn``: the shared models, the training loops (one model, or many small models at once), metrics;
* ``repro.data``: the offline data sets;
* ``repro.methods``: methods two or more chapters use (attacks, attribution baselines, landscapes, kernels);
* ``repro.papers.<chapter>``: the code one chapter needs, named after its notebook;
* ``repro.tools``: notebook execution, the status and catalog pages, sweeps, stability, the bench.

``import repro`` gives the chapter preamble and the verdict; everything else is imported from its layer.
"""
from .core import *  # noqa: F401,F403
from .core import __all__  # noqa: F401
