"""The DARTS evaluation network: a genotype's cell stacked ``layers`` times, trained from scratch.

As DARTS' ``NetworkCIFAR`` (nb360.md 3.3): a 3x3 stem to ``3C`` channels, ``layers`` cells (20 by default)
with ``C = 36`` initial channels; for point tasks reduction cells (channels doubled, resolution halved) at
1/3 and 2/3 of the depth, global average pooling and a linear head; for dense tasks no reduction cell and a
per-pixel 1x1 head. 1D tasks use the 1D version of every op. Drop-path: during training each non-identity
op output of a cell is zeroed per sample with probability ``drop_path_prob`` (and the rest rescaled); the
attribute is meant to be ramped linearly over training by the caller (DARTS: 0 -> 0.3). The auxiliary head
is left out.

Registered as ``darts_eval``; ``genotype`` is a :class:`~nb360.search.darts_space.Genotype` or the path of
its JSON file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

# A module import, not names: nb360.search imports nb360.models.layers, so either package may load first.
import nb360.search.darts_space as space
from nb360.models.layers import batch_norm, check_dim, conv, global_avg_pool
from nb360.models.registry import register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``drop_prob``, scaling the kept ones by ``1 / keep``."""
    keep = 1.0 - drop_prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class EvalCell(nn.Module):
    """One cell of a genotype: node ``i`` sums the two ops the genotype lists for it."""

    def __init__(
        self,
        pairs: list[tuple[str, int]],
        concat: list[int],
        c_pp: int,
        c_p: int,
        c: int,
        *,
        reduction: bool,
        reduction_prev: bool,
        dim: int,
        preprocess: tuple[nn.Module, nn.Module] | None = None,
    ) -> None:
        """``preprocess``: the modules that bring the two inputs to ``c`` channels, where the caller's
        network needs others than DARTS' (Auto-DeepLab's resample between resolutions)."""
        super().__init__()
        self.reduction = reduction
        if preprocess is None:
            preprocess = (
                space.cell_preprocess(c_pp, c, dim, reduction_prev, affine=True),
                space.cell_preprocess(c_p, c, dim, False, affine=True),
            )
        self.preprocess0, self.preprocess1 = preprocess
        self.inputs = [j for _, j in pairs]
        self.concat = list(concat)
        self.ops = nn.ModuleList(
            space.OPS[name](c, 2 if reduction and j < 2 else 1, dim, True) for name, j in pairs
        )
        self.out_channels = len(self.concat) * c

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self.inputs) // 2):  # two ops per node
            node = 0
            for n in (2 * i, 2 * i + 1):
                h = self.ops[n](states[self.inputs[n]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[n], nn.Identity):
                    h = drop_path(h, drop_prob)
                node = node + h
            states.append(node)  # type: ignore[arg-type]
        return torch.cat([states[i] for i in self.concat], dim=1)


class DartsEvalNetwork(nn.Module):
    """A genotype's network on ``(B, in_channels, *spatial)``: ``(B, num_outputs)`` logits, or for
    ``dense=True`` ``(B, num_outputs, *spatial)``."""

    def __init__(
        self,
        genotype: space.Genotype,
        in_channels: int,
        num_outputs: int,
        *,
        layers: int = 20,
        channels: int = 36,
        drop_path: float = 0.0,
        dense: bool = False,
        dim: int = 2,
        stem_multiplier: int = 3,
    ) -> None:
        super().__init__()
        check_dim(dim)
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        reductions = set() if dense else {layers // 3, 2 * layers // 3}
        if reductions and not genotype.reduce:
            raise ValueError("a point-task network needs a genotype with a reduction cell")
        self.dense = dense
        self.drop_path_prob = drop_path  # mutable: the training loop may ramp it
        c_cur = stem_multiplier * channels
        self.stem = nn.Sequential(conv(dim, in_channels, c_cur, 3), batch_norm(dim, c_cur))
        c_pp, c_p, c_cur = c_cur, c_cur, channels
        cells, reduction_prev = [], False
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_cur *= 2
            pairs, concat = (
                (genotype.reduce, genotype.reduce_concat)
                if reduction
                else (genotype.normal, genotype.normal_concat)
            )
            cell = EvalCell(
                pairs, concat, c_pp, c_p, c_cur, reduction=reduction, reduction_prev=reduction_prev, dim=dim
            )
            cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.out_channels
        self.cells = nn.ModuleList(cells)
        self.head = conv(dim, c_p, num_outputs, 1, bias=True) if dense else nn.Linear(c_p, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
        return self.head(s1) if self.dense else self.head(global_avg_pool(s1))


@register_model("darts_eval")
def darts_eval(
    spec: TaskSpec,
    *,
    genotype: str | Path | space.Genotype,
    layers: int = 20,
    channels: int = 36,
    drop_path: float = 0.0,
) -> DartsEvalNetwork:
    """The evaluation network of ``genotype`` (a Genotype or a JSON file path) for task ``spec``.

    A genotype that records the kind of task it was searched on must match ``spec`` (dimension, dense or
    not); one with ``dim``/``dense`` unset (e.g. a published CIFAR genotype) is used for any task.
    """
    if not isinstance(genotype, space.Genotype):
        genotype = space.Genotype.load(genotype)
    dense = spec.output_kind == "dense"
    if genotype.dim is not None and genotype.dim != spec.dim:
        raise ValueError(f"genotype was searched on a {genotype.dim}D task; {spec.name!r} is {spec.dim}D")
    if genotype.dense is not None and genotype.dense != dense:
        kind = "dense" if genotype.dense else "point"
        raise ValueError(f"genotype was searched on a {kind} task; {spec.name!r} is {spec.output_kind}")
    return DartsEvalNetwork(
        genotype,
        spec.input_shape[0],
        spec.num_outputs,
        layers=layers,
        channels=channels,
        drop_path=drop_path,
        dense=dense,
        dim=spec.dim,
    )
