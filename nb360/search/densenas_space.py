"""The DenseNAS search space (ResNet-based variant), written once for 1D and 2D tasks (nb360.md 3.4).

DenseNAS (Fang et al. 2020, official code ``JaminFong/DenseNAS``, adapted by NAS-Bench-360 under
``densenas/{point,grid}``, ``densenas_1d``) searches the *widths and depth* of a network: a chain of
**blocks**, each of one candidate width, connected densely.

* Stages of candidate widths (CIFAR: 48/56/64, 72/96/112, ..., 480/496/512); one block per candidate. Node 0
  is the stem's output, the blocks follow in order, and a final **tail** node closes the graph.
* Block ``i`` connects to the next ``connect`` blocks (the official ``adjoin_connect_nums``) that lie in its
  own stage or the next one; a connection into the next stage carries that stage's stride (2 or 1).
* A block is a **head layer** (one ``basic_block`` per incoming connection, which changes width and stride)
  followed by ``layers_per_block`` **stacked layers**, each choosing between ``basic_block`` and ``skip``.
* Architecture weights: per node, the **path weights** (betas, softmaxed over its outgoing connections); per
  stacked layer, the **op weights** (alphas, softmaxed over the two ops). A block's input is the
  beta-weighted sum of its head branches; the tail maps every incoming block to a common width with a 1x1
  convolution (the supernet's ``Conv1_1_Block``) before pooling and the classifier.
* :meth:`DenseSupernet.expected_flops`: the official chained cost estimate, the expected FLOPs of the
  derived network when the path is a Markov chain with transition probabilities = path weights.
* :meth:`DenseSupernet.derive`: the official derivation, the most probable path by dynamic programming
  (Viterbi) over path weights, then per stacked layer the op of largest weight.

Written for our tasks: 1D tasks use 1D convolutions; dense tasks have no downsampling (stem and all stages at
stride 1, the official ``grid`` configs) and a per-pixel 1x1 head. Deliberate differences from the official
code (the space and the derivation are the same):

* The head layer's only candidate is ``basic_block`` (the official ResNet-based configs list one head op),
  so there are no head alphas: a softmax over one op is constant 1.
* The official search samples one op per stacked layer in weight steps and two in arch steps (= both ops
  here), then rescales the alphas of the sampled ops; with two ops the rescaling never changes the softmax,
  so it is left out. ``forward(sample_ops=True)`` is the weight-step sampling.
* The FLOPs estimate prices the derived network exactly, without the supernet-only tail convolutions (see
  :meth:`DenseSupernet.expected_flops`).
* Defaults ``layers_per_block=2``, ``connect=3`` keep the supernet small; the official CIFAR config has 0 to
  15 stacked layers per stage and connects each block to all later blocks of its own and the next stage.

:class:`DenseArch` is the discrete architecture (JSON); :func:`sample_arch` draws random ones of the same
space for DenseNAS-random; ``nb360.models.densenas_net`` builds the stand-alone evaluation network.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nb360.models.layers import batch_norm, check_dim, conv, global_avg_pool, init_kaiming_fan_out

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

STACK_OPS: tuple[str, ...] = ("basic_block", "skip")  # the head layer's only op is "basic_block"
_OP_ALIASES = {"skip_connect": "skip"}  # the official name

# Official defaults per kind of task: stem width/stride, candidate widths per stage, stage strides.
# Point 2D: DenseNAS' CIFAR/ImageNet ResNet space (densenas/point/configs/cifar_search_cfg_resnet.yaml),
# point 1D: densenas_1d/configs/ecg_search_cfg_resnet.yaml, dense: densenas/grid/configs/*_resnet.yaml.
# The tail width (official ``last_dim``) is the largest width of the last stage in each.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "point2d": {
        "stem_width": 32,
        "stem_stride": 2,
        "widths": (
            (48, 56, 64),
            (72, 96, 112),
            (128, 144, 160, 176),
            (192, 208, 224),
            (240, 256, 272, 288),
            (480, 496, 512),
        ),
        "strides": (2, 2, 2, 1, 1, 1),
    },
    "point1d": {
        "stem_width": 32,
        "stem_stride": 2,
        "widths": ((48, 56, 64), (72, 96, 112), (128, 144, 160, 176), (192, 208, 224)),
        "strides": (2, 2, 2, 1),
    },
    "dense": {"stem_width": 32, "stem_stride": 1, "widths": ((48, 56, 64), (72, 96, 112)), "strides": (1, 1)},
}


def scale_width(width: int, mult: float) -> int:
    """``width * mult`` rounded, at least 1 (``width_mult`` for smoke runs)."""
    return max(1, round(width * mult))


def canonical_stack_op(name: str) -> str:
    name = _OP_ALIASES.get(name, name)
    if name not in STACK_OPS:
        raise ValueError(f"unknown DenseNAS stacked-layer op {name!r}; known: {', '.join(STACK_OPS)}")
    return name


# ----------------------------------------------------------------------------------------------- ops


class BasicBlock(nn.Module):
    """ResNet's basic block: 3-conv/BN/ReLU, 3-conv/BN, plus the input (through a strided 1x1 conv/BN when the
    width or resolution changes), then ReLU. ``affine=False`` for the supernet's batch norms, as DenseNAS."""

    def __init__(self, dim: int, c_in: int, c_out: int, stride: int = 1, *, affine: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(dim, c_in, c_out, 3, stride=stride),
            batch_norm(dim, c_out, affine=affine),
            nn.ReLU(inplace=True),
            conv(dim, c_out, c_out, 3),
            batch_norm(dim, c_out, affine=affine),
        )
        self.downsample = (
            nn.Sequential(conv(dim, c_in, c_out, 1, stride=stride), batch_norm(dim, c_out, affine=affine))
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.body(x) + identity)


def stack_op(name: str, dim: int, width: int, *, affine: bool = True) -> nn.Module:
    """A stacked layer's op (width kept, stride 1): ``basic_block`` or ``skip`` (the identity)."""
    name = canonical_stack_op(name)
    return BasicBlock(dim, width, width, 1, affine=affine) if name == "basic_block" else nn.Identity()


def strided_size(size: Sequence[int], stride: int) -> tuple[int, ...]:
    """Spatial size after a 3-conv (padding 1) or 1-conv (padding 0) at ``stride``: the same for both."""
    return tuple((n - 1) // stride + 1 for n in size)


def conv_cost(dim: int, k: int, c_in: int, c_out: int, out_size: Sequence[int]) -> int:
    """Multiply-adds of a bias-free convolution producing ``out_size``."""
    return k**dim * c_in * c_out * math.prod(out_size)


def basic_block_cost(
    dim: int, c_in: int, c_out: int, stride: int, in_size: Sequence[int]
) -> tuple[int, int, tuple[int, ...]]:
    """``(parameters with affine batch norms, multiply-adds, output size)`` of :class:`BasicBlock`."""
    out = strided_size(in_size, stride)
    k = 3**dim
    params = k * c_in * c_out + k * c_out * c_out + 4 * c_out
    flops = conv_cost(dim, 3, c_in, c_out, out) + conv_cost(dim, 3, c_out, c_out, out)
    if stride != 1 or c_in != c_out:
        params += c_in * c_out + 2 * c_out
        flops += conv_cost(dim, 1, c_in, c_out, out)
    return params, flops, out


# -------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class SpaceLayout:
    """The graph of the space, without modules: shared by the supernet and the random sampler.

    Nodes: 0 the stem output, ``1..N`` the blocks, ``T = N + 1`` the tail. Per node: ``widths``, ``stages``
    (stem 0, blocks 1..S, tail S + 1), stacked ``layers`` (0 for stem and tail), spatial ``sizes``;
    ``out_edges[i]`` the successors of node ``i`` in increasing order (its path weights follow this order),
    ``in_edges[j]`` the predecessors. ``stage_strides[s]``: the stride into stage ``s`` (0: the stem's).
    """

    dim: int
    dense: bool
    in_channels: int
    num_outputs: int
    input_size: tuple[int, ...]
    widths: tuple[int, ...]
    stages: tuple[int, ...]
    layers: tuple[int, ...]
    stage_strides: tuple[int, ...]
    sizes: tuple[tuple[int, ...], ...]
    out_edges: tuple[tuple[int, ...], ...]
    in_edges: tuple[tuple[int, ...], ...] = field(repr=False)

    @property
    def tail(self) -> int:
        return len(self.widths) - 1

    @property
    def stem_stride(self) -> int:
        return self.stage_strides[0]

    def edge_stride(self, i: int, j: int) -> int:
        return self.stage_strides[self.stages[j]] if self.stages[j] != self.stages[i] else 1

    def slot(self, i: int, j: int) -> int:
        """Index of the connection ``i -> j`` in node ``i``'s path weights."""
        return self.out_edges[i].index(j)

    def to_arch(self, path: Sequence[int], ops: Sequence[Sequence[str]]) -> DenseArch:
        """The architecture of a path ``0 -> ... -> T``, ``ops[b]`` the stacked ops of its ``b``-th block."""
        if path[0] != 0 or path[-1] != self.tail:
            raise ValueError(f"a path runs from node 0 to the tail {self.tail}, got {list(path)}")
        blocks = []
        for prev, node, node_ops in zip(path[:-2], path[1:-1], ops, strict=True):
            if node not in self.out_edges[prev]:
                raise ValueError(f"the space has no connection {prev} -> {node}")
            if len(node_ops) != self.layers[node]:
                raise ValueError(
                    f"block {node} has {self.layers[node]} stacked layers, got {len(node_ops)} ops"
                )
            blocks.append(ArchBlock(self.widths[node], self.edge_stride(prev, node), tuple(node_ops)))
        return DenseArch(self.dim, self.dense, self.widths[0], self.stem_stride, tuple(blocks))

    def random_arch(self, rng: np.random.Generator) -> DenseArch:
        """A random walk from the stem to the tail, each successor and each stacked op uniform: the
        distribution the supernet's path and op weights define at their (near-uniform) initialisation."""
        path, ops = [0], []
        while path[-1] != self.tail:
            succ = self.out_edges[path[-1]]
            path.append(int(succ[rng.integers(len(succ))]))
            if path[-1] != self.tail:
                ops.append([STACK_OPS[k] for k in rng.integers(len(STACK_OPS), size=self.layers[path[-1]])])
        return self.to_arch(path, ops)

    def min_params(self) -> int:
        """Parameters of the smallest evaluation network of the space (every stacked op ``skip``), by a
        shortest-path pass over the graph: a lower bound to report when a parameter cap cannot be met."""
        k = 3**self.dim
        best = [math.inf] * len(self.widths)
        best[0] = k * self.in_channels * self.widths[0] + 2 * self.widths[0]  # stem
        for j in range(1, self.tail + 1):
            for i in self.in_edges[j]:
                if j == self.tail:
                    cost = self.widths[i] * self.num_outputs + self.num_outputs
                else:
                    stride = self.edge_stride(i, j)
                    cost = basic_block_cost(
                        self.dim, self.widths[i], self.widths[j], stride, (1,) * self.dim
                    )[0]
                best[j] = min(best[j], best[i] + cost)
        return int(best[self.tail])


def build_layout(
    spec: TaskSpec,
    *,
    widths: Sequence[Sequence[int]] | None = None,
    width_mult: float = 1.0,
    layers_per_block: int | Sequence[int] = 2,
    connect: int = 3,
    strides: Sequence[int] | None = None,
    stem_width: int | None = None,
    stem_stride: int | None = None,
    last_width: int | None = None,
) -> SpaceLayout:
    """The space for task ``spec``; see :class:`DenseSupernet` for the arguments."""
    dim = check_dim(spec.dim)
    dense = spec.output_kind == "dense"
    defaults = _DEFAULTS["dense" if dense else f"point{dim}d"]
    if widths is None:
        widths = defaults["widths"]
        strides = defaults["strides"] if strides is None else strides
    widths = [tuple(int(w) for w in stage) for stage in widths]
    n_stages = len(widths)
    if n_stages == 0 or any(len(stage) == 0 for stage in widths):
        raise ValueError(f"widths needs at least one stage and one width per stage, got {widths}")
    if any(w < 1 for stage in widths for w in stage):
        raise ValueError(f"widths must be positive, got {widths}")
    if strides is None:  # as the official configs: the first three stages halve the resolution
        strides = [1 if dense or s >= 3 else 2 for s in range(n_stages)]
    stem_stride = defaults["stem_stride"] if stem_stride is None else stem_stride
    if len(strides) != n_stages:
        raise ValueError(f"strides needs one entry per stage ({n_stages}), got {list(strides)}")
    if any(s not in (1, 2) for s in (*strides, stem_stride)):
        raise ValueError(f"strides must be 1 or 2, got stem {stem_stride}, stages {list(strides)}")
    if dense and any(s != 1 for s in (*strides, stem_stride)):
        raise ValueError("a dense task keeps its resolution: every stride must be 1")
    if isinstance(layers_per_block, int):
        layers_per_block = [layers_per_block] * n_stages
    if len(layers_per_block) != n_stages or any(n < 0 for n in layers_per_block):
        raise ValueError(
            f"layers_per_block: one non-negative count, or one per stage ({n_stages}); got {layers_per_block}"
        )
    if connect < 1:
        raise ValueError(f"connect must be >= 1, got {connect}")
    if width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {width_mult}")

    stem_width = defaults["stem_width"] if stem_width is None else stem_width
    last_width = max(widths[-1]) if last_width is None else last_width
    node_widths = [scale_width(stem_width, width_mult)]
    stages, layers = [0], [0]
    for s, stage in enumerate(widths, start=1):
        node_widths += [scale_width(w, width_mult) for w in stage]
        stages += [s] * len(stage)
        layers += [int(layers_per_block[s - 1])] * len(stage)
    node_widths.append(scale_width(last_width, width_mult))
    stages.append(n_stages + 1)
    layers.append(0)
    stage_strides = (int(stem_stride), *(int(s) for s in strides), 1)

    stage_sizes = [strided_size(spec.input_shape[1:], stem_stride)]
    for s in stage_strides[1:]:
        stage_sizes.append(strided_size(stage_sizes[-1], s))
    n_nodes = len(node_widths)
    # Official rule (_create_output_list): the next `connect` nodes, in the same stage or the next one.
    out_edges = tuple(
        tuple(j for j in range(i + 1, min(i + connect, n_nodes - 1) + 1) if stages[j] - stages[i] <= 1)
        for i in range(n_nodes)
    )
    in_edges = tuple(tuple(i for i in range(j) if j in out_edges[i]) for j in range(n_nodes))
    return SpaceLayout(
        dim=dim,
        dense=dense,
        in_channels=spec.input_shape[0],
        num_outputs=spec.num_outputs,
        input_size=tuple(spec.input_shape[1:]),
        widths=tuple(node_widths),
        stages=tuple(stages),
        layers=tuple(layers),
        stage_strides=stage_strides,
        sizes=tuple(stage_sizes[s] for s in stages),
        out_edges=out_edges,
        in_edges=in_edges,
    )


# -------------------------------------------------------------------------------------- architecture


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class ArchBlock:
    """One block of a derived architecture: a ``basic_block`` head to ``width`` at ``stride``, then one op per
    stacked layer (``skip`` layers are the identity: they build nothing)."""

    width: int
    stride: int
    ops: tuple[str, ...]


@dataclass(frozen=True)
class DenseArch:
    """A discrete DenseNAS architecture: the chosen path of blocks and the op of each stacked layer.

    ``dim``/``dense``: the kind of task it was searched on (an evaluation network checks them against its
    task). Widths are absolute channel counts (after any ``width_mult``).

    JSON file schema (:meth:`to_json` / :meth:`from_json`)::

        {"dim": 2,                                   # 1 or 2
         "dense": false,                             # dense tasks: every stride is 1
         "stem": {"width": 32, "stride": 2},         # 3-conv/BN/ReLU stem
         "blocks": [                                 # in order, at least one
            {"width": 56, "stride": 2, "ops": ["basic_block", "skip"]},
            {"width": 96, "stride": 2, "ops": ["skip", "skip"]},
            ...]}

    Each block's head is a ``basic_block`` from the previous width (the stem's for the first block) to
    ``width`` at ``stride``; ``ops`` are ``basic_block`` or ``skip`` (the official ``skip_connect`` is
    accepted on reading).
    """

    dim: int
    dense: bool
    stem_width: int
    stem_stride: int
    blocks: tuple[ArchBlock, ...]

    def __post_init__(self) -> None:
        # Canonical, hashable form (tuples, canonical op names) whatever the caller passed.
        blocks = tuple(
            ArchBlock(b.width, b.stride, tuple(canonical_stack_op(op) for op in b.ops)) for b in self.blocks
        )
        object.__setattr__(self, "blocks", blocks)
        if not _is_int(self.dim) or self.dim not in (1, 2):
            raise ValueError(f"DenseArch: dim must be 1 or 2, got {self.dim!r}")
        if not isinstance(self.dense, bool):
            raise ValueError(f"DenseArch: dense must be true or false, got {self.dense!r}")
        if not blocks:
            raise ValueError("DenseArch: needs at least one block")
        for where, width, stride in [("stem", self.stem_width, self.stem_stride)] + [
            (f"block {n}", b.width, b.stride) for n, b in enumerate(blocks)
        ]:
            if not _is_int(width) or width < 1:
                raise ValueError(f"DenseArch: {where} width must be a positive int, got {width!r}")
            if not _is_int(stride) or stride not in (1, 2):
                raise ValueError(f"DenseArch: {where} stride must be 1 or 2, got {stride!r}")
            if self.dense and stride != 1:
                raise ValueError(
                    f"DenseArch: a dense architecture keeps its resolution; {where} has stride {stride}"
                )

    @property
    def depth(self) -> int:
        """Weighted layers on the path: the stem, every head and every non-skip stacked layer."""
        return 1 + sum(1 + sum(op != "skip" for op in b.ops) for b in self.blocks)

    def summary(self) -> str:
        """One line for logs: ``width/stride`` of the stem and of each block, then a letter per stacked layer
        (``b`` basic_block, ``s`` skip), e.g. ``depth 5: stem 32/2 > 56/2 bs > 96/2 ss``."""
        blocks = [
            f"{b.width}/{b.stride}" + (" " + "".join(op[0] for op in b.ops) if b.ops else "")
            for b in self.blocks
        ]
        return f"depth {self.depth}: " + " > ".join([f"stem {self.stem_width}/{self.stem_stride}", *blocks])

    def scaled(self, mult: float) -> DenseArch:
        """The same architecture with every width times ``mult`` (rounded, at least 1)."""
        if mult <= 0:
            raise ValueError(f"width_mult must be positive, got {mult}")
        return DenseArch(
            self.dim,
            self.dense,
            scale_width(self.stem_width, mult),
            self.stem_stride,
            tuple(ArchBlock(scale_width(b.width, mult), b.stride, b.ops) for b in self.blocks),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "dense": self.dense,
            "stem": {"width": self.stem_width, "stride": self.stem_stride},
            "blocks": [{"width": b.width, "stride": b.stride, "ops": list(b.ops)} for b in self.blocks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DenseArch:
        try:
            unknown = set(d) - {"dim", "dense", "stem", "blocks"}
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}")
            blocks = tuple(ArchBlock(b["width"], b["stride"], tuple(b["ops"])) for b in d["blocks"])
            return cls(d["dim"], d["dense"], d["stem"]["width"], d["stem"]["stride"], blocks)
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"not a DenseNAS architecture (expected dim, dense, stem{{width, stride}}, "
                f"blocks[{{width, stride, ops}}]): {type(err).__name__} {err}"
            ) from None

    @classmethod
    def from_json(cls, text: str) -> DenseArch:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> DenseArch:
        try:
            return cls.from_json(Path(path).read_text())
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def arch_param_count(arch: DenseArch, in_channels: int, num_outputs: int) -> int:
    """Parameters of ``arch``'s evaluation network (``nb360.models.densenas_net``) for a task with
    ``in_channels`` inputs and ``num_outputs`` outputs, analytically (no network is built)."""
    k = 3**arch.dim
    params = k * in_channels * arch.stem_width + 2 * arch.stem_width
    c = arch.stem_width
    one = (1,) * arch.dim  # parameters do not depend on the size
    for b in arch.blocks:
        n_layers = sum(op == "basic_block" for op in b.ops)
        params += basic_block_cost(arch.dim, c, b.width, b.stride, one)[0]
        params += n_layers * basic_block_cost(arch.dim, b.width, b.width, 1, one)[0]
        c = b.width
    return params + c * num_outputs + num_outputs  # linear or 1x1-conv head, with bias


def arch_flops(arch: DenseArch, input_shape: Sequence[int], num_outputs: int) -> float:
    """MFLOPs (millions of multiply-adds of convolution and linear weights, DenseNAS' count) of ``arch``'s
    evaluation network on one input of shape ``input_shape = (C, *spatial)``."""
    size = strided_size(input_shape[1:], arch.stem_stride)
    flops = conv_cost(arch.dim, 3, input_shape[0], arch.stem_width, size)
    c = arch.stem_width
    for b in arch.blocks:
        n_layers = sum(op == "basic_block" for op in b.ops)
        _, head, size = basic_block_cost(arch.dim, c, b.width, b.stride, size)
        flops += head + n_layers * basic_block_cost(arch.dim, b.width, b.width, 1, size)[1]
        c = b.width
    flops += c * num_outputs * (math.prod(size) if arch.dense else 1)
    return flops / 1e6


# ----------------------------------------------------------------------------------------- supernet


class MixedOp(nn.Module):
    """A stacked layer of the supernet: the weighted sum of its ops, or one chosen op."""

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(stack_op(name, dim, width, affine=False) for name in STACK_OPS)

    def forward(
        self, x: torch.Tensor, weights: torch.Tensor | None, choice: int | None = None
    ) -> torch.Tensor:
        if choice is not None:
            return self.ops[choice](x)
        return sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))  # type: ignore[return-value]


class SearchBlock(nn.Module):
    """One block of the supernet: the head layer (a branch per incoming connection) and the stacked layers."""

    def __init__(self, dim: int, in_widths: Sequence[int], strides: Sequence[int], width: int, layers: int):
        super().__init__()
        self.heads = nn.ModuleList(
            BasicBlock(dim, c, width, s, affine=False) for c, s in zip(in_widths, strides, strict=True)
        )
        self.layers = nn.ModuleList(MixedOp(dim, width) for _ in range(layers))

    def forward(
        self,
        inputs: Sequence[torch.Tensor],
        in_weights: Sequence[torch.Tensor],
        op_weights: torch.Tensor | None,
        choices: Sequence[int] | None,
    ) -> torch.Tensor:
        x = sum(w * head(h) for w, head, h in zip(in_weights, self.heads, inputs, strict=True))
        for n, layer in enumerate(self.layers):
            x = layer(
                x, None if op_weights is None else op_weights[n], None if choices is None else choices[n]
            )
        return x  # type: ignore[return-value]


class DenseSupernet(nn.Module):
    """The DenseNAS supernet of a task: ``(B, *spec.input_shape)`` -> ``(B, num_outputs)``, or for dense tasks
    ``(B, num_outputs, *spatial)``.

    ``widths``: candidate widths per stage (default: the official space of the task's kind, see
    ``_DEFAULTS``), each scaled by ``width_mult`` (with the stem and tail widths); ``strides``: the stride
    into each stage (default 2 for the first three, 1 after; all 1 for dense tasks); ``layers_per_block``:
    stacked layers per block, one count or one per stage (official CIFAR: 0, 5, 15, 5, 5, 1); ``connect``:
    how many following blocks each block connects to (official 10, i.e. all of its own and the next stage);
    ``last_width``: the tail's width (official ``last_dim``, default the largest width of the last stage);
    ``softmax_temp``: the temperature of the path and op softmaxes in the forward pass and the FLOPs
    estimate (official 0.9; derivation uses plain softmaxes, as the official code).

    Architecture parameters (``arch_parameters()``: ``betas_<i>`` per node with several successors,
    ``alphas_<j>`` ``(layers, 2)`` per block with stacked layers, initialised ``1e-3 * randn`` as DenseNAS)
    are registered under ``arch.`` so they checkpoint with the weights; build the weight optimiser from
    ``weight_parameters()``.
    """

    def __init__(
        self,
        spec: TaskSpec,
        *,
        widths: Sequence[Sequence[int]] | None = None,
        width_mult: float = 1.0,
        layers_per_block: int | Sequence[int] = 2,
        connect: int = 3,
        strides: Sequence[int] | None = None,
        stem_width: int | None = None,
        stem_stride: int | None = None,
        last_width: int | None = None,
        softmax_temp: float = 0.9,
        sample_in_training: bool = False,
    ) -> None:
        super().__init__()
        # The official weight step draws one op per layer: with this flag, a training-mode forward without
        # an explicit ``sample_ops`` does so (the training loop calls ``model(x)``).
        self.sample_in_training = sample_in_training
        if softmax_temp <= 0:
            raise ValueError(f"softmax_temp must be positive, got {softmax_temp}")
        lay = build_layout(
            spec,
            widths=widths,
            width_mult=width_mult,
            layers_per_block=layers_per_block,
            connect=connect,
            strides=strides,
            stem_width=stem_width,
            stem_stride=stem_stride,
            last_width=last_width,
        )
        self.layout = lay
        self.softmax_temp = softmax_temp
        dim, tail = lay.dim, lay.tail
        self.stem = nn.Sequential(
            conv(dim, lay.in_channels, lay.widths[0], 3, stride=lay.stem_stride),
            batch_norm(dim, lay.widths[0]),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.ModuleList(
            SearchBlock(
                dim,
                [lay.widths[i] for i in lay.in_edges[j]],
                [lay.edge_stride(i, j) for i in lay.in_edges[j]],
                lay.widths[j],
                lay.layers[j],
            )
            for j in range(1, tail)
        )
        # The official Conv1_1_Block: every block entering the tail is mapped to the tail width.
        self.tail = nn.ModuleList(
            nn.Sequential(
                conv(dim, lay.widths[i], lay.widths[tail], 1),
                batch_norm(dim, lay.widths[tail], affine=False),
                nn.ReLU6(inplace=True),
            )
            for i in lay.in_edges[tail]
        )
        self.classifier = (
            conv(dim, lay.widths[tail], lay.num_outputs, 1, bias=True)
            if lay.dense
            else nn.Linear(lay.widths[tail], lay.num_outputs)
        )
        init_kaiming_fan_out(self)
        self.arch = nn.ParameterDict()
        for i in range(tail):  # a node with one successor has a constant path weight: no parameter
            if len(lay.out_edges[i]) > 1:
                self.arch[f"betas_{i}"] = nn.Parameter(1e-3 * torch.randn(len(lay.out_edges[i])))
        for j in range(1, tail):
            if lay.layers[j]:
                self.arch[f"alphas_{j}"] = nn.Parameter(1e-3 * torch.randn(lay.layers[j], len(STACK_OPS)))
        self._init_costs()

    def _init_costs(self) -> None:
        """Per-op multiply-adds of the derived network, from the layout (formulas, no forward pass)."""
        lay, dim = self.layout, self.layout.dim
        self._stem_flops = conv_cost(dim, 3, lay.in_channels, lay.widths[0], lay.sizes[0])
        # _edge_flops[i][k]: the head branch i -> out_edges[i][k], or for the tail the derived network's head
        # on block i (the derived ResNet has no tail 1x1 convolution; nb360.models.densenas_net).
        self._edge_flops: list[list[int]] = []
        for i in range(lay.tail):
            row = []
            for j in lay.out_edges[i]:
                if j == lay.tail:
                    row.append(
                        lay.widths[i] * lay.num_outputs * (math.prod(lay.sizes[i]) if lay.dense else 1)
                    )
                else:
                    stride = lay.edge_stride(i, j)
                    row.append(basic_block_cost(dim, lay.widths[i], lay.widths[j], stride, lay.sizes[i])[1])
            self._edge_flops.append(row)
        self._layer_flops = [
            basic_block_cost(dim, w, w, 1, size)[1] for w, size in zip(lay.widths, lay.sizes, strict=True)
        ]

    # ------------------------------------------------------------------ parameters and weights

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.arch.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("arch.")]

    def path_weights(self, temperature: float | None = None) -> list[torch.Tensor]:
        """Per node ``i < T``: the softmax of its betas over ``layout.out_edges[i]`` (at ``softmax_temp``
        unless ``temperature`` is given)."""
        t = self.softmax_temp if temperature is None else temperature
        one = self.stem[0].weight.new_ones(1)
        return [
            F.softmax(self.arch[f"betas_{i}"] / t, dim=-1) if f"betas_{i}" in self.arch else one
            for i in range(self.layout.tail)
        ]

    def op_weights(self, temperature: float | None = None) -> dict[int, torch.Tensor]:
        """Per block ``j`` with stacked layers: the softmax of its alphas, ``(layers, len(STACK_OPS))``."""
        t = self.softmax_temp if temperature is None else temperature
        return {
            j: F.softmax(self.arch[f"alphas_{j}"] / t, dim=-1)
            for j in range(1, self.layout.tail)
            if self.layout.layers[j]
        }

    # ------------------------------------------------------------------------------ forward

    def forward(
        self, x: torch.Tensor, *, sample_ops: bool | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """All paths, weighted by the path weights; each stacked layer is the op-weighted sum of its ops, or
        with ``sample_ops`` (the official weight step) one op drawn from the plain softmax of its alphas
        (then the alphas get no gradient, as a softmax over the one sampled op is 1); ``generator`` must be
        on the model's device. ``sample_ops=None``: sample in training mode if ``sample_in_training``."""
        if sample_ops is None:
            sample_ops = self.training and self.sample_in_training
        lay = self.layout
        pw = self.path_weights()
        ow = self.op_weights()
        choices = self._sample_ops(generator) if sample_ops else {}
        states = [self.stem(x)]
        for j, block in enumerate(self.blocks, start=1):
            ins = lay.in_edges[j]
            states.append(
                block(
                    [states[i] for i in ins],
                    [pw[i][lay.slot(i, j)] for i in ins],
                    ow.get(j),
                    choices.get(j),
                )
            )
        ins = lay.in_edges[lay.tail]
        out = sum(
            pw[i][lay.slot(i, lay.tail)] * branch(states[i]) for i, branch in zip(ins, self.tail, strict=True)
        )
        return self.classifier(out) if lay.dense else self.classifier(global_avg_pool(out))  # type: ignore[arg-type]

    @torch.no_grad()
    def _sample_ops(self, generator: torch.Generator | None) -> dict[int, list[int]]:
        """One op index per stacked layer, drawn from the plain softmax of its alphas; every layer in one
        draw, so that a GPU forward waits for the host once, not once per block."""
        blocks = [j for j in range(1, self.layout.tail) if self.layout.layers[j]]
        if not blocks:
            return {}
        probs = F.softmax(torch.cat([self.arch[f"alphas_{j}"] for j in blocks]), dim=-1)
        flat = torch.multinomial(probs, 1, generator=generator).flatten().tolist()
        out, start = {}, 0
        for j in blocks:
            out[j] = flat[start : start + self.layout.layers[j]]
            start += self.layout.layers[j]
        return out

    # --------------------------------------------------------------------------------- cost

    def expected_flops(self, *, skip_reg: bool = False) -> torch.Tensor:
        """Expected MFLOPs (millions of multiply-adds) of the derived network under the current architecture
        weights, differentiable in them (the official chained estimate of ``Dropped_Network.forward``).

        The path is a Markov chain from the stem to the tail with transition probabilities = path weights, and
        each stacked layer costs the op-weighted mean of its ops, so from the tail backwards::

            E[i] = sum_k beta_ik * (head_flops(i -> j_k) + stack_flops(j_k) + E[j_k]),   E[T] = 0

        and the total is ``stem_flops + E[0]``. With one-hot weights it is exactly the FLOPs of the derived
        network (:func:`arch_flops`). Deviation: the official estimate also counts the supernet's tail 1x1
        convolutions, which the derived ResNet does not have; here the tail transition costs the derived
        network's classifier instead. ``skip_reg``: the official ``sub_obj.skip_reg`` (on in every official
        config), which prices a skip layer at a tenth of a basic block "as the cost of skip is too small".
        """
        lay = self.layout
        pw = self.path_weights()
        ow = self.op_weights()
        skip_cost = 0.1 if skip_reg else 0.0
        op_cost = {name: (1.0 if name == "basic_block" else skip_cost) for name in STACK_OPS}
        unit = torch.tensor([op_cost[name] for name in STACK_OPS], device=pw[0].device)
        stack = [pw[0].new_zeros(())] * (lay.tail + 1)
        for j, w in ow.items():
            stack[j] = (w @ unit).sum() * self._layer_flops[j]
        expect: list[torch.Tensor] = [pw[0].new_zeros(())] * (lay.tail + 1)
        for i in reversed(range(lay.tail)):
            terms = [
                pw[i][k] * (self._edge_flops[i][k] + stack[j] + expect[j])
                for k, j in enumerate(lay.out_edges[i])
            ]
            expect[i] = torch.stack(terms).sum()
        return (expect[0] + self._stem_flops) / 1e6

    # ----------------------------------------------------------------------------- derivation

    @torch.no_grad()
    def derive(self) -> DenseArch:
        """The official derivation (``derive_arch.derive_chs`` + ``derive_arch_res``): the path of largest
        probability (product of plain-softmax path weights) by dynamic programming over the graph, ties to the
        nearest predecessor; then each stacked layer's op of largest weight (ties to ``basic_block``)."""
        lay = self.layout
        logp = [w.double().log().cpu().tolist() for w in self.path_weights(temperature=1.0)]
        best: list[tuple[float, int]] = [(0.0, -1)] + [(-math.inf, -1)] * lay.tail
        for j in range(1, lay.tail + 1):
            for i in reversed(lay.in_edges[j]):  # nearest first, strictly better replaces: the official order
                score = best[i][0] + logp[i][lay.slot(i, j)]
                if best[j][1] < 0 or score > best[j][0]:
                    best[j] = (score, i)
        path = [lay.tail]
        while path[-1] != 0:
            path.append(best[path[-1]][1])
        path.reverse()
        ops = []
        for j in path[1:-1]:
            idx = self.arch[f"alphas_{j}"].argmax(dim=-1).tolist() if lay.layers[j] else []
            ops.append([STACK_OPS[k] for k in idx])
        return lay.to_arch(path, ops)


def densenas_objective(
    ce: torch.Tensor, flops: torch.Tensor, factor: float = 0.2, log_base: float = 3500.0
) -> torch.Tensor:
    """The DenseNAS architecture-step loss: ``ce + factor * log(flops) / log(log_base)``.

    As the official ``run_apis/optimizer.py`` (``Optimizer.arch_step``): the FLOPs term is *added* to the
    cross-entropy (``loss += log(sub_obj) / log(log_base) * sub_loss_factor``), with ``sub_obj`` in MFLOPs
    (``tools/multadds_count.py`` divides multiply-adds by 1e6), ``log_base`` 3500 and ``sub_loss_factor`` 0.2
    in every ResNet-space config (NB360's included). Weight steps use the plain loss. ``flops``: from
    :meth:`DenseSupernet.expected_flops` (MFLOPs, positive).
    """
    if log_base <= 1:
        raise ValueError(f"log_base must be > 1, got {log_base}")
    return ce + factor * torch.log(flops) / math.log(log_base)


def sample_arch(
    spec: TaskSpec,
    rng: np.random.Generator,
    *,
    max_params: int | None,
    width_mult: float = 1.0,
    widths: Sequence[Sequence[int]] | None = None,
    layers_per_block: int | Sequence[int] = 2,
    connect: int = 3,
    strides: Sequence[int] | None = None,
    stem_width: int | None = None,
    stem_stride: int | None = None,
    max_tries: int = 1000,
) -> DenseArch:
    """A random architecture of the space (:meth:`SpaceLayout.random_arch`) whose evaluation network has at
    most ``max_params`` parameters (``None``: no cap), by rejection sampling, for DenseNAS-random (nb360.md
    3.4: the cap is the DenseNAS-found architecture's parameters + 1M).

    The official ``generate_random.py`` derives the architecture of a freshly initialised supernet (Viterbi
    over near-uniform weights, which nearly fixes the path); we draw the path and ops uniformly instead, so
    the samples cover the space. Deterministic for a given ``rng`` state. Raises ``ValueError`` when the cap
    is below the smallest architecture of the space or no sample meets it in ``max_tries`` draws.
    """
    lay = build_layout(
        spec,
        widths=widths,
        width_mult=width_mult,
        layers_per_block=layers_per_block,
        connect=connect,
        strides=strides,
        stem_width=stem_width,
        stem_stride=stem_stride,
    )
    if max_params is not None and lay.min_params() > max_params:
        raise ValueError(
            f"max_params={max_params:,} is below the smallest architecture of the space "
            f"({lay.min_params():,} parameters); raise the cap or lower width_mult"
        )
    smallest = math.inf
    for _ in range(max_tries):
        arch = lay.random_arch(rng)
        if max_params is None:
            return arch
        n = arch_param_count(arch, lay.in_channels, lay.num_outputs)
        if n <= max_params:
            return arch
        smallest = min(smallest, n)
    raise ValueError(
        f"no random architecture with <= {max_params:,} parameters in {max_tries} draws (smallest drawn "
        f"{smallest:,}; the space's smallest is {lay.min_params():,}); raise the cap or max_tries"
    )
