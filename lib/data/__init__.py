"""The data layer: the offline data sets (see the book's data appendix), loaded as tensors.

Synthetic data that only one chapter uses is generated in that chapter's module (``repro.papers``).
"""
from .datasets import (
                       MissingDataError,
                       Split,
                       cache_dir,
                       digits,
                       draw_device,
                       fashion_mnist,
                       mnist1d,
                       mnist5k,
                       read_idx,
                       to_split,
)

__all__ = ["MissingDataError", "Split", "cache_dir", "digits", "draw_device", "fashion_mnist", "mnist1d", "mnist5k",
           "read_idx", "to_split"]
