"""gradconf: gradient confusion and per-example gradient geometry for PyTorch.

The main entry points, importable from the top level:

- ``per_example_gram``, ``minibatch_gram``, ``check_engine`` (``gradconf.engine``)
- ``measure_confusion``, ``gram_statistics`` (``gradconf.measure``)
- ``Monitor`` (``gradconf.monitor``): confusion of the training batch inside any loop
- ``build_model`` (``gradconf.models``), ``load_dataset`` (``gradconf.data``)

They are imported on first use, so ``import gradconf`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS = {
    "per_example_gram": "gradconf.engine",
    "minibatch_gram": "gradconf.engine",
    "check_engine": "gradconf.engine",
    "GramResult": "gradconf.engine",
    "measure_confusion": "gradconf.measure",
    "gram_statistics": "gradconf.measure",
    "ConfusionStats": "gradconf.measure",
    "Monitor": "gradconf.monitor",
    "build_model": "gradconf.models",
    "load_dataset": "gradconf.data",
    "RunConfig": "gradconf.config",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gradconf' has no attribute {name!r}")
