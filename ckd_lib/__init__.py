"""ckd_lib: models, losses, training engine and results for the CKD reproduction study."""

__version__ = "0.1.0"
