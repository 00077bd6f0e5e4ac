"""The DARTS cell search space, written once for 1D and 2D tasks (nb360.md 3.3).

* :data:`PRIMITIVES` / :data:`OPS`: the eight candidate operations, ``OPS[name](C, stride, dim, affine)``.
  Kernel sizes are per spatial axis, so ``sep_conv_3`` is DARTS' ``sep_conv_3x3`` in 2D and a length-3
  kernel in 1D; the DARTS names (``sep_conv_3x3``...) are accepted wherever a genotype is read.
* :class:`MixedOp`: one supernet edge, the architecture-weighted sum of all operations, with PC-DARTS
  partial channels (``k``: only ``C / k`` channels go through the operations, the rest bypass, then a
  channel shuffle; ``k = 1`` is plain DARTS).
* :class:`SearchCell` / :class:`Supernet`: 4 intermediate nodes fed by the two previous cells; reduction
  cells at 1/3 and 2/3 of the depth for point tasks, none for dense tasks (resolution preserved, per-pixel
  1x1 head); PC-DARTS edge-normalisation weights (betas).
* :class:`Genotype` and :func:`derive_genotype`: the discrete cell DARTS reads off the architecture weights.

Two implementations of the same supernet, on the same parameters (``Supernet(impl=...)``): ``"loop"``, edge
by edge and op by op as DARTS / PC-DARTS publish it (:class:`MixedOp`), and ``"batched"`` (the default,
about twice as fast on CPU, ``benchmarks/supernet_step.py``), which runs every group of edges that read the
same state as one set of kernels (:class:`SearchCell`). :func:`sample_genotype` draws random architectures
of the space (random search).
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nb360.models.layers import avg_pool, batch_norm, check_dim, conv, global_avg_pool, max_pool

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3",
    "avg_pool_3",
    "skip_connect",
    "sep_conv_3",
    "sep_conv_5",
    "dil_conv_3",
    "dil_conv_5",
)
STEPS = 4  # intermediate nodes per cell
NUM_EDGES = sum(2 + i for i in range(STEPS))  # 14: node i has 2 + i inputs
ArchNorm = Literal["softmax", "simplex"]
Impl = Literal["batched", "loop"]
_IMPLS = ("batched", "loop")

_F_MAX_POOL: dict[int, Callable[..., torch.Tensor]] = {1: F.max_pool1d, 2: F.max_pool2d}


def canonical_op(name: str) -> str:
    """Our op name for ``name``; DARTS' 2D names (``sep_conv_3x3``) map to ours (``sep_conv_3``)."""
    name = name.replace("_3x3", "_3").replace("_5x5", "_5")
    if name not in PRIMITIVES:
        raise KeyError(f"unknown DARTS operation {name!r}; known: {', '.join(PRIMITIVES)}")
    return name


# ----------------------------------------------------------------------------------------------- ops


def _spatial_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    return x[(..., *([slice(None, None, stride)] * (x.dim() - 2)))]


class Zero(nn.Module):
    """The ``none`` operation: zeros of the (strided) output shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _spatial_stride(x, self.stride).mul(0.0)


class ReLUConvBN(nn.Module):
    """ReLU, convolution, batch norm (the cells' 1x1 preprocessing)."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, dim: int, affine: bool = True
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            conv(dim, c_in, c_out, kernel_size, stride=stride),
            batch_norm(dim, c_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing positions: two stride-2 1x1 convolutions, the second on the input
    shifted by one element along every axis, concatenated. The shifted copy is zero padded at the end
    (instead of cropped as in DARTS) so both halves have ``ceil(L / 2)`` positions for odd sizes too; for
    even sizes the result is identical."""

    def __init__(self, c_in: int, c_out: int, dim: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even output channel count, got {c_out}")
        self.dim = check_dim(dim)
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = conv(dim, c_in, c_out // 2, 1, stride=2, padding=0)
        self.conv_2 = conv(dim, c_in, c_out // 2, 1, stride=2, padding=0)
        self.bn = batch_norm(dim, c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[(..., *([slice(1, None)] * self.dim))], (0, 1) * self.dim)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class DilConv(nn.Module):
    """ReLU, depthwise (dilated) convolution, pointwise convolution, batch norm."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, dilation: int, dim: int, affine: bool
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            conv(dim, c_in, c_in, kernel_size, stride=stride, dilation=dilation, groups=c_in),
            conv(dim, c_in, c_out, 1, padding=0),
            batch_norm(dim, c_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked ReLU-depthwise-pointwise-BN blocks; the stride applies to the first."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, dim: int, affine: bool) -> None:
        super().__init__()
        self.op = nn.Sequential(
            DilConv(c_in, c_in, kernel_size, stride, 1, dim, affine),
            DilConv(c_in, c_out, kernel_size, 1, 1, dim, affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


OpFactory = Callable[[int, int, int, bool], nn.Module]

# name -> factory(C, stride, dim, affine); every op maps (B, C, *S) to (B, C, *ceil(S / stride)).
OPS: dict[str, OpFactory] = {
    "none": lambda c, stride, dim, affine: Zero(stride),
    "max_pool_3": lambda c, stride, dim, affine: max_pool(dim, 3, stride=stride, padding=1),
    "avg_pool_3": lambda c, stride, dim, affine: avg_pool(
        dim, 3, stride=stride, padding=1, count_include_pad=False
    ),
    "skip_connect": lambda c, stride, dim, affine: (
        nn.Identity() if stride == 1 else FactorizedReduce(c, c, dim, affine)
    ),
    "sep_conv_3": lambda c, stride, dim, affine: SepConv(c, c, 3, stride, dim, affine),
    "sep_conv_5": lambda c, stride, dim, affine: SepConv(c, c, 5, stride, dim, affine),
    "dil_conv_3": lambda c, stride, dim, affine: DilConv(c, c, 3, stride, 2, dim, affine),
    "dil_conv_5": lambda c, stride, dim, affine: DilConv(c, c, 5, stride, 2, dim, affine),
}

# ----------------------------------------------------------------------------------------- mixed edge


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel blocks: ``(B, g * n, *S)`` -> channel order ``0, n, 2n, ..., 1, ...``."""
    b, c = x.shape[:2]
    return x.view(b, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


def _search_op(name: str, c: int, stride: int, dim: int) -> nn.Module:
    """A supernet operation: no affine batch-norm parameters, pooling followed by a batch norm (DARTS)."""
    op = OPS[name](c, stride, dim, False)
    return nn.Sequential(op, batch_norm(dim, c, affine=False)) if "pool" in name else op


class MixedOp(nn.Module):
    """One supernet edge: ``sum_o w[o] * op_o(x)`` over :data:`PRIMITIVES`, with PC-DARTS partial channels.

    With ``k > 1`` only the first ``C / k`` channels go through the operations; the others bypass them
    (max-pooled 2x2, ceil mode, on a reduction edge) and the result is channel-shuffled with ``k`` groups.
    :meth:`forward` is the straightforward per-op loop of DARTS / PC-DARTS (``none`` included); the batched
    cell (:class:`SearchCell`) reads the same ``ops`` parameters.
    """

    def __init__(self, c: int, stride: int, dim: int, k: int = 4) -> None:
        super().__init__()
        if c % k:
            raise ValueError(f"channels {c} are not divisible by the partial-channel factor k={k}")
        self.k, self.stride, self.dim = k, stride, check_dim(dim)
        self.ops = nn.ModuleList(_search_op(name, c // k, stride, dim) for name in PRIMITIVES)

    def _mix(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))  # type: ignore[return-value]

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return self._mix(x, weights)
        cp = x.shape[1] // self.k
        through, bypass = x[:, :cp], x[:, cp:]
        if self.stride != 1:
            bypass = _F_MAX_POOL[self.dim](bypass, 2, 2, ceil_mode=True)
        return channel_shuffle(torch.cat([self._mix(through, weights), bypass], dim=1), self.k)


# ------------------------------------------------------------------------------------- batched cell
#
# The batched cell runs on "lifted" tensors: 4D and channels-last in memory, a 1D task's (B, C, L) seen as
# (B, C, 1, L) with 1-by-k kernels, so one code path serves both and every kernel gets the memory layout
# that CPU convolutions and pools are fastest in. Channel reshuffles are done on the (B, *S, C) view.

_MAX, _AVG, _SKIP = (PRIMITIVES.index(n) for n in ("max_pool_3", "avg_pool_3", "skip_connect"))
_SEP = tuple(i for i, n in enumerate(PRIMITIVES) if n.startswith("sep_conv"))  # two blocks each
_DIL = tuple(i for i, n in enumerate(PRIMITIVES) if n.startswith("dil_conv"))  # one block each
_CONV = _SEP + _DIL  # the order of the batched convolution stages, whose weights are one slice of a row
_CONV_WEIGHTS = slice(_CONV[0], _CONV[-1] + 1)
assert tuple(range(len(PRIMITIVES)))[_CONV_WEIGHTS] == _CONV


def _lift(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, L)`` -> ``(B, C, 1, L)``, channels-last (a view when ``x`` came out of a batched cell)."""
    return (x.unsqueeze(2) if x.dim() == 3 else x).contiguous(memory_format=torch.channels_last)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1)


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(-1, 1)


def _lifted(values: tuple[int, ...] | int, fill: int, dim: int = 2) -> tuple[int, int]:
    """A 1D or 2D kernel/stride/padding/dilation as the lifted 2D pair (``fill`` on the added axis)."""
    values = (values,) * dim if isinstance(values, int) else tuple(values)
    return (fill,) * (2 - len(values)) + values  # type: ignore[return-value]


def _conv(x: torch.Tensor, weight: torch.Tensor, like: nn.Module, groups: int) -> torch.Tensor:
    """The convolution ``like`` (stride, padding, dilation) with another weight and group count.

    A dilated convolution with stride ``s`` equal to its dilation (a reduction edge's dil conv) reads only
    every ``s``-th input position, so it is the undilated, unstrided convolution of the subsampled input
    (padding ``p / s``): the same products and sums, and CPU kernels are several times faster at it."""
    stride, padding = _lifted(like.stride, 1), _lifted(like.padding, 0)
    dilation = _lifted(like.dilation, 1)
    if stride == dilation != (1, 1) and all(p % s == 0 for p, s in zip(padding, stride, strict=True)):
        x = x[..., :: stride[0], :: stride[1]]
        padding = tuple(p // s for p, s in zip(padding, stride, strict=True))  # type: ignore[assignment]
        stride = dilation = (1, 1)
    weight = weight if weight.dim() == 4 else weight.unsqueeze(2)
    if groups > 1 and weight.shape[-2:] == (1, 1) and stride == dilation == (1, 1) and x.device.type == "cpu":
        # A 1x1 kernel ignores its dilation. Asking for 2 steers PyTorch's CPU dispatch to oneDNN, which it
        # skips for 1x1 kernels at batch < 16 on one thread, falling back to a loop over the groups there
        # (5x slower for the grouped pointwise convolutions at a dense task's batch of 4).
        dilation = (2, 2)
    return F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)


def _batch_norm(
    x: torch.Tensor, blocks: Sequence[Sequence[nn.Module]], scale: torch.Tensor | None = None
) -> torch.Tensor:
    """One batch norm over channel blocks, block ``i`` being the batch norms ``blocks[i]``; ``scale``, one
    factor per block, multiplies the result (as an affine weight, so it costs no extra pass).

    Batch norm is per channel, so this equals running each module on its block. The modules of one block
    all see the same input (a pooling op shared by the edges that read one state): the statistics come from
    the first and are written to all. They are identical in the per-op loop too, which feeds those modules
    identical inputs, so evaluation mode (running statistics of the first) gives the loop's result as well.
    """
    first = [group[0] for group in blocks]
    bn = first[0]
    if bn.affine:  # only the stem's batch norm is affine, and it never comes here
        raise ValueError("the batched cell expects non-affine batch norms")
    sizes = [m.num_features for m in first]
    weight = None if scale is None else scale.repeat_interleave(sizes[0])
    mean = torch.cat([m.running_mean for m in first])
    var = torch.cat([m.running_var for m in first])
    out = F.batch_norm(x, mean, var, weight, None, bn.training, bn.momentum, bn.eps)
    if bn.training:  # F.batch_norm updated the concatenated statistics: hand them back to the modules
        with torch.no_grad():
            everyone = [m for group in blocks for m in group]
            copies = [len(group) for group in blocks]
            means = [t for t, n in zip(mean.split(sizes), copies, strict=True) for _ in range(n)]
            variances = [t for t, n in zip(var.split(sizes), copies, strict=True) for _ in range(n)]
            torch._foreach_copy_([m.running_mean for m in everyone], means)
            torch._foreach_copy_([m.running_var for m in everyone], variances)
            torch._foreach_add_([m.num_batches_tracked for m in everyone], 1)
    return out


def _relu_conv_bn(module: ReLUConvBN, x: torch.Tensor) -> torch.Tensor:
    _, conv_, bn = module.op
    return _batch_norm(_conv(F.relu(x), conv_.weight, conv_, 1), [[bn]])


def _preprocess_batched(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A cell's input preprocessing on a lifted tensor."""
    if isinstance(module, FactorizedReduce):
        return _factorized_reduce(x, [[module]])
    return _relu_conv_bn(module, x)


def _factorized_reduce(
    x: torch.Tensor, modules: Sequence[Sequence[FactorizedReduce]], scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Many :class:`FactorizedReduce` at once: ``x`` holds one channel block per row of ``modules``, the
    modules of a row all read that block. Output: the modules' outputs one after another, module ``j``'s
    times ``scale[j]``."""
    flat = [m for row in modules for m in row]
    dim = flat[0].dim
    x = F.relu(x)
    shifted = F.pad(x[(..., *([slice(1, None)] * dim))], (0, 1) * dim)

    def half(inp: torch.Tensor, name: str) -> torch.Tensor:
        convs = [getattr(m, name) for m in flat]
        return _nhwc(_conv(inp, torch.cat([cv.weight for cv in convs]), convs[0], len(modules)))

    halves = [half(x, "conv_1"), half(shifted, "conv_2")]
    # Module j's output is its conv_1 half then its conv_2 half.
    y = torch.stack([h.unflatten(-1, (len(flat), -1)) for h in halves], dim=-2).flatten(-3)
    return _batch_norm(_nchw(y), [[m.bn] for m in flat], scale)


def _blocks(op: nn.Module) -> list[DilConv]:
    """The ReLU-depthwise-pointwise-BN blocks of a convolution op (two for a sep conv)."""
    return list(op.op) if isinstance(op, SepConv) else [op]


def _conv_stage(
    inputs: Sequence[torch.Tensor], blocks: Sequence[Sequence[DilConv]], scale: torch.Tensor | None = None
) -> torch.Tensor:
    """One block of one or more convolution ops on several edges: ``blocks[o][e]`` is op ``o``'s block on
    edge ``e``, ``inputs[o]`` its input on all edges (``E`` channel blocks, the ReLU already applied),
    ``scale`` ``(O, E)`` factors for the outputs. The depthwise convolutions run per op (kernels differ),
    the pointwise ones as one grouped convolution, the batch norms as one. Output channels: op-major."""
    depthwise = [
        _conv(x, torch.cat([b.op[1].weight for b in row]), row[0].op[1], x.shape[1])
        for x, row in zip(inputs, blocks, strict=True)
    ]
    flat = [b for row in blocks for b in row]
    d = depthwise[0] if len(depthwise) == 1 else torch.cat(depthwise, dim=1)
    out = _conv(d, torch.cat([b.op[2].weight for b in flat]), flat[0].op[2], len(flat))
    return _batch_norm(out, [[b.op[3]] for b in flat], None if scale is None else scale.flatten())


def _total(terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """The sum of tensors, without the extra pass of Python's ``sum`` (which starts from 0)."""
    return functools.reduce(operator.add, terms)


def _edge_index(source: int, node: int) -> int:
    """Index among a cell's edges (14 for 4 nodes) of the edge from state ``source`` (0, 1: cell inputs)
    into ``node``."""
    return sum(2 + i for i in range(node)) + source


def _edge_groups(steps: int = STEPS) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(sources, nodes): the edges that read the same states and can run together as soon as those exist:
    the two cell inputs into every node, then each node into the later ones."""
    groups = [((0, 1), tuple(range(steps)))]
    groups += [((2 + i,), tuple(range(i + 1, steps))) for i in range(steps - 1)]
    return groups


# ------------------------------------------------------------------------------------------- cells


def cell_preprocess(c_in: int, c_out: int, dim: int, reduce: bool, affine: bool) -> nn.Module:
    """A cell input to ``c_out`` channels: factorized reduction after a reduction cell, else ReLU-conv-BN 1x1
    (search cells without affine batch norms, evaluation cells with them)."""
    return (
        FactorizedReduce(c_in, c_out, dim, affine) if reduce else ReLUConvBN(c_in, c_out, 1, 1, dim, affine)
    )


class SearchCell(nn.Module):
    """A supernet cell: ``steps`` nodes (4 in the DARTS space), node ``i`` the beta-weighted sum of mixed
    edges from the two cell inputs and nodes ``< i``; output the concatenation of the nodes (``steps * C``
    channels). A space whose cells read their inputs otherwise (Auto-DeepLab's) builds the cell with
    ``preprocess=False``, preprocesses the inputs itself and calls :meth:`mix`.

    ``impl="loop"`` runs edge by edge and op by op (DARTS / PC-DARTS as published). ``impl="batched"``
    computes the same function from the same parameters, the edges that read the same states together (the
    two cell inputs into all nodes, then each node into the later ones: ``steps`` groups): the pooling ops,
    the identity skip and the PC-DARTS bypass once per state (on identical inputs they are identical on every
    edge), the convolution ops of all the group's edges stacked along channels (depthwise kernels
    concatenated, pointwise convolutions as one grouped convolution, batch norms as one, the weights
    ``beta_e * alpha_eo`` applied as that batch norm's scale), summed into each node at once. Everything
    runs on channels-last memory, 1D tasks as ``(B, C, 1, L)``. The only numerical difference to the loop
    is the order of floating-point sums.
    """

    def __init__(
        self,
        c_pp: int,
        c_p: int,
        c: int,
        *,
        reduction: bool,
        reduction_prev: bool,
        dim: int,
        k: int,
        impl: Impl = "batched",
        steps: int = STEPS,
        preprocess: bool = True,
    ) -> None:
        super().__init__()
        if impl not in _IMPLS:
            raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
        self.reduction, self.dim, self.k, self.impl, self.steps = reduction, check_dim(dim), k, impl, steps
        if preprocess:
            self.preprocess0 = cell_preprocess(c_pp, c, dim, reduction_prev, affine=False)
            self.preprocess1 = cell_preprocess(c_p, c, dim, False, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(c, 2 if reduction and j < 2 else 1, dim, k) for i in range(steps) for j in range(2 + i)
        )
        # The edges in the batched path's order (group after group, source-major), as a tensor that moves
        # with the module: one gather per cell instead of an index built on the host per group.
        order = [_edge_index(s, t) for sources, nodes in _edge_groups(steps) for s in sources for t in nodes]
        self.register_buffer("batched_order", torch.tensor(order), persistent=False)

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor
    ) -> torch.Tensor:
        if self.impl == "batched":
            h0 = _preprocess_batched(self.preprocess0, _lift(s0))
            h1 = _preprocess_batched(self.preprocess1, _lift(s1))
        else:
            h0, h1 = self.preprocess0(s0), self.preprocess1(s1)
        return self.mix(h0, h1, weights, edge_weights)

    def mix(
        self, h0: torch.Tensor, h1: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor
    ) -> torch.Tensor:
        """The cell's nodes from its preprocessed inputs ``h0``, ``h1`` (``C`` channels each): the op
        weights ``weights`` (edges x ops) and ``edge_weights`` (edges)."""
        if self.impl == "batched":
            out = self._forward_batched(_lift(h0), _lift(h1), weights, edge_weights)
            return out.squeeze(2) if self.dim == 1 else out
        states = [h0, h1]
        offset = 0
        for i in range(self.steps):
            n = 2 + i
            node = sum(
                edge_weights[offset + j] * self.edges[offset + j](h, weights[offset + j])
                for j, h in enumerate(states)
            )
            offset += n
            states.append(node)  # type: ignore[arg-type]
        return torch.cat(states[2:], dim=1)

    def _forward_batched(
        self, h0: torch.Tensor, h1: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor
    ) -> torch.Tensor:
        states = [h0, h1]  # preprocessed, lifted, channels-last
        # The loop weighs op o of edge e by w[e, o], then the edge by beta[e]: one factor per (edge, op).
        betas = edge_weights.index_select(0, self.batched_order)
        coef = betas[:, None] * weights.index_select(0, self.batched_order)
        through: list[list[torch.Tensor]] = [[] for _ in range(self.steps)]  # per node: (B, *S, c) parts
        bypass: list[list[torch.Tensor]] = [[] for _ in range(self.steps)]
        start = 0
        for sources, nodes in _edge_groups(self.steps):
            xs, end = [states[s] for s in sources], start + len(sources) * len(nodes)
            parts, bypass_parts = self._group(xs, sources, nodes, coef[start:end].T, betas[start:end])
            start = end
            for node, part in zip(nodes, parts.unbind(-2), strict=True):
                through[node].append(part)
            if bypass_parts is not None:
                for node, part in zip(nodes, bypass_parts.unbind(-2), strict=True):
                    bypass[node].append(part)
            # This group completed node nodes[0], which the next group reads.
            node = nodes[0]
            mixed = _total(through[node])
            if self.k > 1:  # PC-DARTS: concatenate with the bypass and shuffle, in one copy
                rest = _total(bypass[node]).unflatten(-1, (self.k - 1, -1)).unbind(-2)
                mixed = torch.stack([mixed, *rest], dim=-1).flatten(-2)
            states.append(_nchw(mixed))
        return torch.cat(states[2:], dim=1)

    def _group(
        self,
        xs: list[torch.Tensor],
        sources: tuple[int, ...],
        nodes: tuple[int, ...],
        w: torch.Tensor,
        betas: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The edges from ``sources`` into ``nodes``, together: each node's share of the weighted sum over
        those edges' ops, ``(B, *S, len(nodes), c)``, and of the bypassed channels (``None`` for k = 1).
        ``w[o, e]``: ``beta_e * alpha_eo``, ``betas[e]``: ``beta_e``, edges ``e`` source-major."""
        n_s, n_t = len(sources), len(nodes)
        edges = [[self.edges[_edge_index(s, t)] for t in nodes] for s in sources]
        flat = [e for row in edges for e in row]
        stride = flat[0].stride
        # Splits, not slices: their backward concatenates gradients instead of zero-filling a full copy.
        c = xs[0].shape[1] // self.k
        halves = [x.split([c, x.shape[1] - c], dim=1) for x in xs]
        x = torch.cat([h[0] for h in halves], dim=1).contiguous(memory_format=torch.channels_last)

        def per_source(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            # features (B, *S, n_s, c), the same on every edge from a source; weight (n_s, n_t)
            return torch.einsum("...sc,st->...tc", features, weight)

        def per_edge(features: torch.Tensor) -> torch.Tensor:
            # features (B, *S, p * E * c), already weighted -> sum over ops and sources, (B, *S, n_t, c)
            return features.unflatten(-1, (-1, n_s, n_t, c)).sum(dim=(-4, -3))

        # Pooling ops: once per source, for all its edges.
        ks, st, pad = _lifted(3, 1, self.dim), _lifted(stride, 1, self.dim), _lifted(1, 0, self.dim)
        pools = (
            (_MAX, F.max_pool2d(x, ks, st, pad)),
            (_AVG, F.avg_pool2d(x, ks, st, pad, count_include_pad=False)),
        )
        terms = []
        for op, pooled in pools:
            pooled = _batch_norm(pooled, [[e.ops[op][1] for e in row] for row in edges])
            terms.append(per_source(_nhwc(pooled).unflatten(-1, (n_s, c)), w[op].reshape(n_s, n_t)))
        if stride == 1:  # skip: the identity, once per source
            terms.append(per_source(_nhwc(x).unflatten(-1, (n_s, c)), w[_SKIP].reshape(n_s, n_t)))
        else:  # skip: a factorized reduction per edge
            skip = _factorized_reduce(x, [[e.ops[_SKIP] for e in row] for row in edges], w[_SKIP])
            terms.append(per_edge(_nhwc(skip)))
        # Convolution ops: the shared ReLU'd input repeated per edge, then two stacked stages. The weights
        # multiply the last batch norm of each op; the sep convs' first stage stays unscaled.
        r = _nhwc(F.relu(x)).unflatten(-1, (n_s, 1, c))
        r = _nchw(r.expand(*r.shape[:-2], n_t, c).flatten(-3))
        blocks = {op: [_blocks(e.ops[op]) for e in flat] for op in _CONV}
        # Each sep conv's first block on its own, so its output is one dense tensor for the next depthwise
        # convolution (a slice of a larger one would be copied, in the backward pass too).
        mid = [F.relu(_conv_stage([r], [[b[0] for b in blocks[op]]])) for op in _SEP]
        # Then the last block of every op: the sep convs' second blocks and the dil convs, weighted.
        last_blocks = [[b[-1] for b in blocks[op]] for op in _CONV]
        last = _conv_stage(mid + [r] * len(_DIL), last_blocks, w[_CONV_WEIGHTS])
        terms.append(per_edge(_nhwc(last)))
        out = _total(terms)
        if self.k == 1:
            return out, None
        # PC-DARTS bypass: once per source (max-pooled on a reduction edge), beta-weighted per node.
        rest = [h[1] for h in halves]
        if stride != 1:
            two = _lifted(2, 1, self.dim)
            rest = [F.max_pool2d(t, two, two, ceil_mode=True) for t in rest]
        rest_nhwc = _nhwc(torch.cat(rest, dim=1)).unflatten(-1, (n_s, -1))
        return out, per_source(rest_nhwc, betas.reshape(n_s, n_t))


def normalize_edges(betas: torch.Tensor, norm: ArchNorm = "softmax") -> torch.Tensor:
    """Per-node normalisation of the 14 edge weights (softmax over each node's incoming edges)."""
    parts, offset = [], 0
    for i in range(STEPS):
        chunk = betas[offset : offset + 2 + i]
        parts.append(F.softmax(chunk, dim=-1) if norm == "softmax" else chunk / chunk.sum())
        offset += 2 + i
    return torch.cat(parts)


class Supernet(nn.Module):
    """The DARTS / PC-DARTS supernet for a task.

    Architecture parameters (``arch_parameters()``: alphas ``(14, 8)`` for normal cells, for reduction cells
    when the task has them, and the per-edge betas ``(14,)`` of each) are registered under ``arch.`` so they
    are checkpointed with the weights, but are kept out of ``weight_parameters()``: build the weight
    optimiser from that, never from ``parameters()``.

    ``arch_norm``: ``"softmax"`` (DARTS: alphas are logits) or ``"simplex"`` (GAEA's exponentiated gradient
    keeps alphas and betas on the simplex and they are used as they are; initialised uniform).
    ``impl``: ``"batched"`` (default) or ``"loop"`` (:class:`SearchCell`): the same parameters (the module
    tree does not depend on it, so a state dict moves between them) and the same function.
    """

    def __init__(
        self,
        spec: TaskSpec,
        C: int = 16,  # the DARTS papers' name for the initial channel count
        layers: int = 8,
        k: int = 4,
        *,
        stem_multiplier: int = 3,
        arch_norm: ArchNorm = "softmax",
        impl: Impl = "batched",
    ) -> None:
        super().__init__()
        if arch_norm not in ("softmax", "simplex"):
            raise ValueError(f"arch_norm must be 'softmax' or 'simplex', got {arch_norm!r}")
        self.dim = check_dim(spec.dim)
        self.dense = spec.output_kind == "dense"
        self.arch_norm: ArchNorm = arch_norm
        self.impl: Impl = impl
        reductions = set() if self.dense else {layers // 3, 2 * layers // 3}
        c_cur = stem_multiplier * C
        self.stem = nn.Sequential(conv(self.dim, spec.input_shape[0], c_cur, 3), batch_norm(self.dim, c_cur))
        c_pp, c_p, c_cur = c_cur, c_cur, C
        cells, reduction_prev = [], False
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_cur *= 2
            cells.append(
                SearchCell(
                    c_pp,
                    c_p,
                    c_cur,
                    reduction=reduction,
                    reduction_prev=reduction_prev,
                    dim=self.dim,
                    k=k,
                    impl=impl,
                )
            )
            reduction_prev = reduction
            c_pp, c_p = c_p, STEPS * c_cur
        self.cells = nn.ModuleList(cells)
        self.head = (
            conv(self.dim, c_p, spec.num_outputs, 1, bias=True)
            if self.dense
            else nn.Linear(c_p, spec.num_outputs)
        )
        self.has_reduction = bool(reductions)
        self.arch = nn.ParameterDict()
        kinds = ["normal", "reduce"] if self.has_reduction else ["normal"]
        for kind in kinds:
            if arch_norm == "softmax":  # small random logits, as DARTS
                alphas = 1e-3 * torch.randn(NUM_EDGES, len(PRIMITIVES))
                betas = 1e-3 * torch.randn(NUM_EDGES)
            else:
                alphas = torch.full((NUM_EDGES, len(PRIMITIVES)), 1.0 / len(PRIMITIVES))
                betas = torch.ones(NUM_EDGES)
            self.arch[f"alphas_{kind}"] = nn.Parameter(alphas)
            self.arch[f"betas_{kind}"] = nn.Parameter(betas)

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.arch.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("arch.")]

    def op_weights(self, kind: str) -> torch.Tensor:
        """Normalised op weights ``(14, 8)`` of ``kind`` (normal / reduce) cells."""
        alphas = self.arch[f"alphas_{kind}"]
        return F.softmax(alphas, dim=-1) if self.arch_norm == "softmax" else alphas

    def edge_weights(self, kind: str) -> torch.Tensor:
        """Normalised per-node edge weights ``(14,)`` of ``kind`` cells."""
        return normalize_edges(self.arch[f"betas_{kind}"], self.arch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = {kind: (self.op_weights(kind), self.edge_weights(kind)) for kind in self._kinds()}
        s0 = s1 = self.stem(x)
        if self.impl == "batched":  # one channels-last copy for both inputs of the first cell
            s0 = s1 = _lift(s0)
        for cell in self.cells:
            w, ew = weights["reduce" if cell.reduction else "normal"]
            s0, s1 = s1, cell(s0, s1, w, ew)
        return self.head(s1) if self.dense else self.head(global_avg_pool(s1))

    def _kinds(self) -> list[str]:
        return ["normal", "reduce"] if self.has_reduction else ["normal"]

    @torch.no_grad()
    def genotype(self) -> Genotype:
        """The discrete architecture the current weights select (:func:`derive_genotype`)."""
        cells = {kind: derive_cell(self.op_weights(kind), self.edge_weights(kind)) for kind in self._kinds()}
        concat = list(range(2, 2 + STEPS))
        return Genotype(
            normal=cells["normal"],
            normal_concat=concat,
            reduce=cells.get("reduce", []),
            reduce_concat=concat if self.has_reduction else [],
            dim=self.dim,
            dense=self.dense,
        )


# ------------------------------------------------------------------------------------------- genotype


@dataclass
class Genotype:
    """A discrete DARTS architecture.

    ``normal`` / ``reduce``: 8 pairs ``(op, input)`` per cell, two per node in node order; ``input`` 0 and 1
    are the cell inputs (the cells two back and one back), ``2 + i`` node ``i``. ``*_concat``: the nodes
    concatenated into the cell output. ``dim``/``dense``: the kind of task it was searched on (``None``:
    unknown, e.g. a published CIFAR genotype typed in); a dense genotype has no reduction cell (``reduce``
    empty).

    JSON file schema (:meth:`to_json` / :meth:`from_json`)::

        {"normal": [["sep_conv_3", 0], ["skip_connect", 1], ...],   # 8 [op, input] pairs
         "normal_concat": [2, 3, 4, 5],
         "reduce": [["max_pool_3", 0], ...],                          # [] for dense tasks
         "reduce_concat": [2, 3, 4, 5],                               # [] for dense tasks
         "dim": 2,                                                    # 1, 2 or null
         "dense": false}                                              # true, false or null

    Op names are those of :data:`PRIMITIVES`; DARTS' 2D names (``sep_conv_3x3``) are accepted on reading.
    """

    normal: list[tuple[str, int]]
    normal_concat: list[int]
    reduce: list[tuple[str, int]] = field(default_factory=list)
    reduce_concat: list[int] = field(default_factory=list)
    dim: int | None = None
    dense: bool | None = None

    def __post_init__(self) -> None:
        self.normal = _check_cell(self.normal, "normal")
        self.reduce = _check_cell(self.reduce, "reduce") if self.reduce else []

    def to_json(self) -> str:
        return json.dumps(
            {
                "normal": [list(p) for p in self.normal],
                "normal_concat": list(self.normal_concat),
                "reduce": [list(p) for p in self.reduce],
                "reduce_concat": list(self.reduce_concat),
                "dim": self.dim,
                "dense": self.dense,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        d = json.loads(text)
        return cls(
            normal=[(op, int(j)) for op, j in d["normal"]],
            normal_concat=[int(i) for i in d["normal_concat"]],
            reduce=[(op, int(j)) for op, j in d.get("reduce", [])],
            reduce_concat=[int(i) for i in d.get("reduce_concat", [])],
            dim=d.get("dim"),
            dense=d.get("dense"),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        return cls.from_json(Path(path).read_text())


def _check_cell(pairs: Sequence[Sequence[object]], name: str) -> list[tuple[str, int]]:
    if len(pairs) != 2 * STEPS:
        raise ValueError(f"genotype {name} cell needs {2 * STEPS} (op, input) pairs, got {len(pairs)}")
    out = []
    for n, (op, j) in enumerate(pairs):
        if not 0 <= int(j) < 2 + n // 2:  # type: ignore[call-overload]
            raise ValueError(f"genotype {name} cell: node {n // 2} cannot take input {j}")
        out.append((canonical_op(str(op)), int(j)))  # type: ignore[call-overload]
    if any(op == "none" for op, _ in out):
        raise ValueError(f"genotype {name} cell selects 'none'")
    return out


def derive_cell(
    op_weights: torch.Tensor, edge_weights: torch.Tensor | None = None, steps: int = STEPS
) -> list[tuple[str, int]]:
    """DARTS' discretisation of one cell of ``steps`` nodes (Auto-DeepLab's have 5): each edge's weights
    (times its PC-DARTS edge weight), then per node the 2 incoming edges with the strongest non-``none`` op,
    each with that op."""
    if len(op_weights) != sum(2 + i for i in range(steps)):
        raise ValueError(f"{len(op_weights)} edges of op weights, but a cell of {steps} nodes has "
                         f"{sum(2 + i for i in range(steps))}")  # fmt: skip
    w = op_weights.detach().float().cpu().clone()
    if edge_weights is not None:
        w = w * edge_weights.detach().float().cpu()[:, None]
    none = PRIMITIVES.index("none")
    w[:, none] = -float("inf")
    cell, offset = [], 0
    for i in range(steps):
        node = w[offset : offset + 2 + i]
        best_w, best_op = node.max(dim=1)
        # Stable order on ties: sort by descending weight, then by input index.
        inputs = sorted(range(2 + i), key=lambda j: (-float(best_w[j]), j))[:2]
        cell.extend((PRIMITIVES[int(best_op[j])], j) for j in inputs)
        offset += 2 + i
    return cell


def derive_genotype(
    alphas_normal: torch.Tensor,
    alphas_reduce: torch.Tensor | None = None,
    betas_normal: torch.Tensor | None = None,
    betas_reduce: torch.Tensor | None = None,
    *,
    dim: int | None = None,
    dense: bool | None = None,
) -> Genotype:
    """A genotype from *normalised* op weights ``(14, 8)`` and optional normalised edge weights ``(14,)``."""
    concat = list(range(2, 2 + STEPS))
    return Genotype(
        normal=derive_cell(alphas_normal, betas_normal),
        normal_concat=concat,
        reduce=derive_cell(alphas_reduce, betas_reduce) if alphas_reduce is not None else [],
        reduce_concat=concat if alphas_reduce is not None else [],
        dim=dim,
        dense=dense,
    )


def sample_genotype(rng: np.random.Generator, *, dim: int, dense: bool) -> Genotype:
    """A uniformly random architecture of the space, for random search: per node two distinct inputs (an
    unordered pair, listed in increasing order) each with an operation other than ``none``; a normal and a
    reduction cell, or only a normal one for a dense task (no reductions there)."""
    ops = [name for name in PRIMITIVES if name != "none"]

    def cell() -> list[tuple[str, int]]:
        pairs = []
        for i in range(STEPS):
            inputs = sorted(int(j) for j in rng.choice(2 + i, size=2, replace=False))
            pairs.extend((ops[int(rng.integers(len(ops)))], j) for j in inputs)
        return pairs

    concat = list(range(2, 2 + STEPS))
    normal = cell()
    reduce = [] if dense else cell()
    return Genotype(
        normal=normal,
        normal_concat=concat,
        reduce=reduce,
        reduce_concat=[] if dense else concat,
        dim=check_dim(dim),
        dense=dense,
    )
