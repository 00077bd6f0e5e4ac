"""AMBER's networks (:mod:`nb360.search.amber_space`) for a task: registered as ``amber_net``.

``arch`` (an :class:`~nb360.search.amber_space.AmberArch`, or None with ``shared=True`` for the search's
weight-shared child) on the task's ``(C, L)`` inputs; ``filters``, ``fc`` and ``dropout`` as
:class:`~nb360.search.amber_space.AmberNet`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

# A module import, not names: nb360.search imports nb360.models.layers, so either package may load first.
import nb360.search.amber_space as space
from nb360.models.registry import register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec


@register_model("amber_net")
def amber_net(spec: TaskSpec, **kwargs: Any) -> nn.Module:
    if spec.dim != 1 or spec.output_kind == "dense":
        raise ValueError(f"{spec.name}: AMBER's space is for 1D sequences with point outputs")
    channels, length = spec.input_shape
    return space.AmberNet(channels, length, spec.num_outputs, **kwargs)
