"""Method registry. Importing this package registers every method (one module per method)."""

import importlib

from nb360.methods.base import (
    Method,
    RunContext,
    SearchResult,
    get_method,
    list_methods,
    register_method,
)

__all__ = ["Method", "RunContext", "SearchResult", "get_method", "list_methods", "register_method"]

# The method modules, in the order of the tables' rows. A new method is one module plus one entry here.
METHOD_MODULES = ("trivial", "wrn", "wrn_asha", "darts", "random_search", "densenas")
for _module in METHOD_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
