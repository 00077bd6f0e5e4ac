"""Modules imported on first use: a training job pays for scipy, scikit-learn or soundfile only if it calls
them (about a second per job, on every job of a cluster run), and parsing the workflow pays for none."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule(ModuleType):
    """Stands for module ``name``; the first attribute read imports it and copies its namespace in."""

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # later reads are plain attribute reads
        return getattr(module, attr)


def lazy_import(name: str) -> ModuleType:
    """``import name`` deferred until an attribute of the module is first read.

    Unlike :class:`importlib.util.LazyLoader`, nothing is imported now, not even the parent packages
    (``find_spec("sklearn.metrics")`` would import all of ``sklearn``'s heavy ``__init__``). A missing
    module fails at first use, with the usual ``ModuleNotFoundError``.
    """
    return _LazyModule(name)
