"""NAS-Bench-360 as a reproducible pipeline: data, search, retraining, evaluation and reports."""

__version__ = "0.1.0"
