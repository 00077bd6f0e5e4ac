"""Methods: the registry (:mod:`nb360.methods.registry`, metadata only) and each method's module.

Importing this package is cheap (no torch, scipy or optuna): the workflow reads the registry when it parses,
and :func:`get_method` imports a method's module only when a job runs it. A new method is one module plus
one entry in ``nb360/methods/registry.py`` (docs/adding-a-method.md).
"""

from nb360.methods.base import Method, RunContext, SearchResult, TuneResult, get_method, register_method
from nb360.methods.registry import MethodInfo, list_methods, method_info

__all__ = [
    "Method",
    "MethodInfo",
    "RunContext",
    "SearchResult",
    "TuneResult",
    "get_method",
    "list_methods",
    "method_info",
    "register_method",
]
