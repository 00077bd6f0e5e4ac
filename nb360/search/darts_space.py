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

Speed (the supernet is launch/overhead bound at these sizes, on CPU as on a GPU): the ``none`` operation is
never computed (its output is zero whatever its weight), the four convolutions of an edge share one ReLU,
run their pointwise convolutions as one grouped convolution and their batch norms as one, and the edge's
weighted sum is one broadcasted product. ``MixedOp(fused=False)`` runs the same parameters op by op (the
straightforward loop), so a benchmark can compare both on identical weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

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

_F_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d}
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

# The convolution ops of the fused bank, in PRIMITIVES order: (name, kernel, dilation, stacked blocks). The
# two-block ops come first, so the second stage works on one contiguous channel range.
_CONV_OPS: tuple[tuple[str, int, int, int], ...] = (
    ("sep_conv_3", 3, 1, 2),
    ("sep_conv_5", 5, 1, 2),
    ("dil_conv_3", 3, 2, 1),
    ("dil_conv_5", 5, 2, 1),
)


# ----------------------------------------------------------------------------------------- mixed edge


class _ConvBank(nn.Module):
    """The four convolution ops of one edge with their parameters laid out for batching.

    Stage 1 (all four ops): depthwise weights per op, one ``(4C, C, 1...)`` pointwise weight applied as a
    4-group convolution, one batch norm over ``4C`` channels (per-channel, so identical to four separate
    ones). Stage 2 (the two sep convs): likewise with 2 groups. :meth:`forward` returns ``(B, 4C, *S)`` (op
    blocks one after another); :meth:`forward_loop` a list, computing each op on its own from the same
    parameters (and the same running statistics, through views).
    Both return the ops in ``_CONV_OPS`` order, which is :data:`PRIMITIVES` order.
    """

    def __init__(self, c: int, stride: int, dim: int, affine: bool) -> None:
        super().__init__()
        self.c, self.stride, self.dim = c, stride, dim
        n1 = len(_CONV_OPS)
        n2 = sum(blocks == 2 for *_, blocks in _CONV_OPS)
        self.dw1 = nn.ParameterList(
            conv(dim, c, c, k, dilation=d, groups=c).weight for _, k, d, _ in _CONV_OPS
        )
        self.pw1 = nn.Parameter(conv(dim, c, n1 * c, 1).weight)
        self.bn1 = batch_norm(dim, n1 * c, affine=affine)
        self.dw2 = nn.ParameterList(conv(dim, c, c, k, groups=c).weight for _, k, _, b in _CONV_OPS if b == 2)
        self.pw2 = nn.Parameter(conv(dim, c, n2 * c, 1).weight)
        self.bn2 = batch_norm(dim, n2 * c, affine=affine)
        self.n1, self.n2 = n1, n2

    def _depthwise(self, x: torch.Tensor, weight: torch.Tensor, k: int, d: int, stride: int) -> torch.Tensor:
        return _F_CONV[self.dim](
            x, weight, stride=stride, padding=d * (k - 1) // 2, dilation=d, groups=self.c
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv_fn = _F_CONV[self.dim]
        r = F.relu(x)
        d = torch.cat(
            [
                self._depthwise(r, w, k, dil, self.stride)
                for w, (_, k, dil, _) in zip(self.dw1, _CONV_OPS, strict=True)
            ],
            dim=1,
        )
        p = self.bn1(conv_fn(d, self.pw1, groups=self.n1))
        sep_c = self.n2 * self.c
        r2 = F.relu(p[:, :sep_c])
        second = [(k, dil) for _, k, dil, blocks in _CONV_OPS if blocks == 2]
        d2 = torch.cat(
            [
                self._depthwise(r2[:, i * self.c : (i + 1) * self.c], w, k, dil, 1)
                for i, (w, (k, dil)) in enumerate(zip(self.dw2, second, strict=True))
            ],
            dim=1,
        )
        out2 = self.bn2(conv_fn(d2, self.pw2, groups=self.n2))
        return torch.cat([out2, p[:, sep_c:]], dim=1)

    def _bn_slice(self, x: torch.Tensor, bn: nn.Module, i: int) -> torch.Tensor:
        part = slice(i * self.c, (i + 1) * self.c)

        def sliced(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[part]

        # Views of the shared running statistics: F.batch_norm updates them in place, as the fused path does.
        return F.batch_norm(
            x,
            sliced(bn.running_mean),
            sliced(bn.running_var),
            sliced(bn.weight),
            sliced(bn.bias),
            self.training,
            bn.momentum,
            bn.eps,
        )

    def forward_loop(self, x: torch.Tensor) -> list[torch.Tensor]:
        conv_fn = _F_CONV[self.dim]
        outs, j = [], 0
        for i, (_, k, dil, blocks) in enumerate(_CONV_OPS):
            y = self._depthwise(F.relu(x), self.dw1[i], k, dil, self.stride)
            y = self._bn_slice(conv_fn(y, self.pw1[i * self.c : (i + 1) * self.c]), self.bn1, i)
            if blocks == 2:
                y = self._depthwise(F.relu(y), self.dw2[j], k, dil, 1)
                y = self._bn_slice(conv_fn(y, self.pw2[j * self.c : (j + 1) * self.c]), self.bn2, j)
                j += 1
            outs.append(y)
        if self.training:  # one batch seen by each batch norm, as in the fused path
            for bn in (self.bn1, self.bn2):
                if bn.num_batches_tracked is not None:
                    bn.num_batches_tracked.add_(1)
        return outs


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel blocks: ``(B, g * n, *S)`` -> channel order ``0, n, 2n, ..., 1, ...``."""
    b, c = x.shape[:2]
    return x.view(b, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


class MixedOp(nn.Module):
    """One supernet edge: ``sum_o w[o] * op_o(x)`` over :data:`PRIMITIVES`, with PC-DARTS partial channels.

    With ``k > 1`` only the first ``C / k`` channels go through the operations; the others bypass them
    (max-pooled 2x2, ceil mode, on a reduction edge) and the result is channel-shuffled with ``k`` groups.
    Search-time batch norms have no affine parameters and pooling ops are followed by one, as in DARTS.
    ``fused=False`` runs the straightforward per-op loop on the same parameters.
    """

    def __init__(self, c: int, stride: int, dim: int, k: int = 4, fused: bool = True) -> None:
        super().__init__()
        if c % k:
            raise ValueError(f"channels {c} are not divisible by the partial-channel factor k={k}")
        self.k, self.stride, self.dim, self.fused = k, stride, check_dim(dim), fused
        cp = c // k
        self.max_pool = nn.Sequential(
            OPS["max_pool_3"](cp, stride, dim, False), batch_norm(dim, cp, affine=False)
        )
        self.avg_pool = nn.Sequential(
            OPS["avg_pool_3"](cp, stride, dim, False), batch_norm(dim, cp, affine=False)
        )
        self.skip = OPS["skip_connect"](cp, stride, dim, False)
        self.convs = _ConvBank(cp, stride, dim, affine=False)

    def _mix(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # weights[0] (none) is never used: its op contributes zeros.
        cheap = [self.max_pool(x), self.avg_pool(x), self.skip(x)]
        if self.fused:
            bank = self.convs(x)
            b, c = cheap[0].shape[:2]
            bank = bank.view(b, self.convs.n1, c, *bank.shape[2:])
            everything = torch.cat([torch.stack(cheap, dim=1), bank], dim=1)
            return (everything * weights[1:].view(1, -1, *([1] * (bank.dim() - 2)))).sum(dim=1)
        outs = cheap + self.convs.forward_loop(x)
        return sum(w * o for w, o in zip(weights[1:], outs, strict=True))  # type: ignore[return-value]

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return self._mix(x, weights)
        cp = x.shape[1] // self.k
        through, bypass = x[:, :cp], x[:, cp:]
        if self.stride != 1:
            bypass = _F_MAX_POOL[self.dim](bypass, 2, 2, ceil_mode=True)
        return channel_shuffle(torch.cat([self._mix(through, weights), bypass], dim=1), self.k)


# ------------------------------------------------------------------------------------------- cells


def _preprocess(c_in: int, c_out: int, dim: int, reduce: bool, affine: bool) -> nn.Module:
    return (
        FactorizedReduce(c_in, c_out, dim, affine) if reduce else ReLUConvBN(c_in, c_out, 1, 1, dim, affine)
    )


class SearchCell(nn.Module):
    """A supernet cell: 4 nodes, node ``i`` the beta-weighted sum of mixed edges from the two cell inputs and
    nodes ``< i``; output the concatenation of the 4 nodes (``4C`` channels)."""

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
        fused: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = _preprocess(c_pp, c, dim, reduction_prev, affine=False)
        self.preprocess1 = _preprocess(c_p, c, dim, False, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(c, 2 if reduction and j < 2 else 1, dim, k, fused)
            for i in range(STEPS)
            for j in range(2 + i)
        )

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor
    ) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for i in range(STEPS):
            n = 2 + i
            node = sum(
                edge_weights[offset + j] * self.edges[offset + j](h, weights[offset + j])
                for j, h in enumerate(states)
            )
            offset += n
            states.append(node)  # type: ignore[arg-type]
        return torch.cat(states[2:], dim=1)


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
    ``fused``: the batched mixed edge (default) or the per-op loop, same parameters and results.
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
        fused: bool = True,
    ) -> None:
        super().__init__()
        if arch_norm not in ("softmax", "simplex"):
            raise ValueError(f"arch_norm must be 'softmax' or 'simplex', got {arch_norm!r}")
        self.dim = check_dim(spec.dim)
        self.dense = spec.output_kind == "dense"
        self.arch_norm: ArchNorm = arch_norm
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
                    fused=fused,
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


def derive_cell(op_weights: torch.Tensor, edge_weights: torch.Tensor | None = None) -> list[tuple[str, int]]:
    """DARTS' discretisation of one cell: each edge's weights (times its PC-DARTS edge weight), then per node
    the 2 incoming edges with the strongest non-``none`` op, each with that op."""
    w = op_weights.detach().float().cpu().clone()
    if edge_weights is not None:
        w = w * edge_weights.detach().float().cpu()[:, None]
    none = PRIMITIVES.index("none")
    w[:, none] = -float("inf")
    cell, offset = [], 0
    for i in range(STEPS):
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
