"""obsbench: benchmark and debug deep-learning optimizers in PyTorch."""

__version__ = "0.1.0"
