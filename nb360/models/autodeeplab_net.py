"""Auto-DeepLab's networks (:mod:`nb360.search.autodeeplab_space`) for a dense 2D task: registered as
``autodeeplab_search`` (the search network; ``filters``, ``layers``) and ``autodeeplab_net`` (a decoded
architecture: ``path``, ``cell``, ``filters``, ``aspp``, ``decoder``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from nb360.models.registry import register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec


def _space(spec: TaskSpec) -> Any:
    """The space's module, imported when a network is built: its search cell subclasses the DARTS space's,
    which imports this package (nb360.models.layers) while it loads."""
    if spec.dim != 2 or spec.output_kind != "dense":
        raise ValueError(f"{spec.name}: Auto-DeepLab's space is for dense prediction on 2D inputs")
    import nb360.search.autodeeplab_space as space

    return space


@register_model("autodeeplab_search")
def autodeeplab_search(spec: TaskSpec, **kwargs: Any) -> nn.Module:
    return _space(spec).Supernet(spec.input_shape[0], spec.num_outputs, **kwargs)


@register_model("autodeeplab_net")
def autodeeplab_net(spec: TaskSpec, *, path: Any, cell: Any, **kwargs: Any) -> nn.Module:
    pairs = [(str(op), int(j)) for op, j in cell]
    return _space(spec).DecodedNetwork(
        spec.input_shape[0], spec.num_outputs, [int(s) for s in path], pairs, **kwargs
    )
