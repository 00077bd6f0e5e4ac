"""The model registry: name -> factory that builds a network for a task.

A factory has the signature ``fn(spec: TaskSpec, **kwargs) -> nn.Module``; the returned module maps a batch
``x`` of shape ``(B, *spec.input_shape)`` to outputs of shape ``(B, *output_shape(spec))``. Factories are
recorded at import time by :func:`register_model` (importing :mod:`nb360.models` registers the built-in
ones), and the workflow builds every network through :func:`create_model`, so a new architecture (for
example a search method's evaluation network) is one decorated factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

ModelFactory = Callable[..., nn.Module]

# The only state of the registry: filled by @register_model when the model modules are imported.
_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator recording ``fn(spec, **kwargs) -> nn.Module`` under ``name`` (returned unchanged)."""

    def decorator(fn: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        return fn

    return decorator


def create_model(name: str, spec: TaskSpec, **kwargs: Any) -> nn.Module:
    """Build model ``name`` for task ``spec``.

    Keyword arguments set to ``None`` are dropped, so a config can leave a setting unset and the factory's
    default applies. An unknown name raises ``KeyError`` listing the registered names; an argument the
    factory does not take raises its ``TypeError``.
    """
    try:
        factory = _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None
    return factory(spec, **{k: v for k, v in kwargs.items() if v is not None})


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def output_shape(spec: TaskSpec) -> tuple[int, ...]:
    """Per-sample output shape of every model for ``spec``: ``(num_outputs,)`` for point tasks (scores or
    logits), ``(num_outputs, *spatial)`` channels first for dense tasks (same spatial size as the input)."""
    if spec.output_kind == "dense":
        return (spec.num_outputs, *spec.input_shape[1:])
    return (spec.num_outputs,)
