"""The DenseNAS evaluation network: a :class:`~nb360.search.densenas_space.DenseArch` trained from scratch.

As the official ResNet-based derived network (``RES_Net`` in DenseNAS' ``models/model_derived.py``): the
3-conv/BN/ReLU stem, then per block of the chosen path its ``basic_block`` head (new width and stride) and
its non-skip stacked layers (``skip`` builds nothing), then for point tasks global average pooling and a
linear classifier on the last block's width (no 1x1 tail convolution: that belongs to the supernet only),
for dense tasks a per-pixel 1x1 head. Batch norms are affine here (the supernet's are not). 1D tasks use the
1D version of every op.

Registered as ``densenas_net``; ``arch`` is a DenseArch or the path of its JSON file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from nb360.models.layers import batch_norm, conv, global_avg_pool, init_kaiming_fan_out
from nb360.models.registry import register_model
from nb360.search.densenas_space import BasicBlock, DenseArch, arch_param_count, stack_op

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec


class DenseNASNet(nn.Module):
    """``arch``'s network on ``(B, in_channels, *spatial)``: ``(B, num_outputs)``, or for a dense arch
    ``(B, num_outputs, *spatial)``."""

    def __init__(self, arch: DenseArch, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        dim = arch.dim
        self.dense = arch.dense
        self.stem = nn.Sequential(
            conv(dim, in_channels, arch.stem_width, 3, stride=arch.stem_stride),
            batch_norm(dim, arch.stem_width),
            nn.ReLU(inplace=True),
        )
        blocks, c = [], arch.stem_width
        for b in arch.blocks:
            layers = [BasicBlock(dim, c, b.width, b.stride)]
            layers += [stack_op(op, dim, b.width) for op in b.ops if op != "skip"]
            blocks.append(nn.Sequential(*layers))
            c = b.width
        self.blocks = nn.Sequential(*blocks)
        self.head = conv(dim, c, num_outputs, 1, bias=True) if self.dense else nn.Linear(c, num_outputs)
        init_kaiming_fan_out(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x) if self.dense else self.head(global_avg_pool(x))


def _load(arch: str | Path | DenseArch) -> DenseArch:
    return arch if isinstance(arch, DenseArch) else DenseArch.load(arch)


def check_arch_task(arch: DenseArch, spec: TaskSpec) -> None:
    """Raise ``ValueError`` unless ``arch`` was searched on a task of ``spec``'s kind (dimension, dense)."""
    if arch.dim != spec.dim:
        raise ValueError(f"architecture was searched on a {arch.dim}D task; {spec.name!r} is {spec.dim}D")
    dense = spec.output_kind == "dense"
    if arch.dense != dense:
        kind = "dense" if arch.dense else "point"
        raise ValueError(f"architecture was searched on a {kind} task; {spec.name!r} is {spec.output_kind}")


def arch_params(spec: TaskSpec, arch: str | Path | DenseArch) -> int:
    """Parameters of ``arch``'s evaluation network for ``spec`` (analytic; equals the built network's)."""
    arch = _load(arch)
    check_arch_task(arch, spec)
    return arch_param_count(arch, spec.input_shape[0], spec.num_outputs)


@register_model("densenas_net")
def densenas_net(
    spec: TaskSpec, *, arch: str | Path | DenseArch, width_mult: float | None = None
) -> DenseNASNet:
    """The evaluation network of ``arch`` (a DenseArch or a JSON file path) for task ``spec``; ``width_mult``
    scales the architecture's widths (for smoke runs of an architecture searched at full width)."""
    arch = _load(arch)
    check_arch_task(arch, spec)
    if width_mult is not None:
        arch = arch.scaled(width_mult)
    return DenseNASNet(arch, spec.input_shape[0], spec.num_outputs)
