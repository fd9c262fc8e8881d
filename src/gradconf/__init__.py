"""gradconf: gradient confusion and per-example gradient geometry for PyTorch."""

__version__ = "0.1.0"
