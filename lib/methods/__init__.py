"""The methods layer: the standard methods of a field that chapters use as tools or baselines.

Adversarial attacks and adversarial training, attribution baselines, loss-landscape probes, kernels.
The method a paper introduces lives in its chapter's module under ``repro.papers``; when a second
chapter needs it, it moves here.
"""
