"""tuner: measured hyperparameter sweeps for PyTorch recommenders."""

__version__ = "0.1.0"
