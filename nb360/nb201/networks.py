"""The networks of the precomputed NB201 benchmark on NinaPro and Darcy Flow (nb201.md 6.1).

* :class:`InferCell`: one NB201 cell of a given arch. Node ``j`` sums ``op(node_i)`` over its input edges;
  edges from node 0 map ``C_in -> C_out``, all others ``C_out -> C_out`` (as xautodl's ``InferCell``).
* :class:`TinyNetwork` (NinaPro): stem 3x3 conv + BN, ``N`` cells at ``C``, a residual reduction block to
  ``2C`` (stride 2), ``N`` cells, another to ``4C``, ``N`` cells; BN-ReLU, global average pool, linear head.
* :class:`DarcyNetwork`: the same 17 cells (for ``N = 5``) without downsampling: the two reduction blocks
  are stride-1 cells mapping ``C -> 2C`` (skip = 1x1 conv + BN, avg-pool after a 1x1 ReLU-conv-BN, none =
  zeros of ``2C`` channels); BN-ReLU and a per-pixel ``Linear(4C, 1)``.

The operations come from :mod:`nb360.models.layers` and the DARTS space (``ReLUConvBN``); only what NB201
does differently is defined here (``none`` and ``skip`` changing the channel count, the pre-projected pool,
the ResNet reduction block). Inputs are our shards' channels-first batches: NinaPro ``(B, 1, 16, 52)``
(nb360/tasks/ninapro.py transposes the stored ``(N, 52, 16)`` and adds the channel axis, as DASH does);
Darcy ``(B, 3, 85, 85)`` (normalised coefficient + grid). Darcy's output is ``(B, 1, H, W)``, the layout of
our dense tasks, where the original squeezes to ``(B, H, W)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nb360.models.layers import avg_pool, batch_norm, conv, global_avg_pool
from nb360.nb201 import space
from nb360.search.darts_space import ReLUConvBN

TASKS = ("ninapro", "darcy")
NUM_CLASSES = {"ninapro": 18}
INPUT_SHAPES = {"ninapro": (1, 16, 52), "darcy": (3, 85, 85)}  # per sample, channels first (our shards)
DIM = 2  # both tasks are 2D


class Zero(nn.Module):
    """``none``: zeros of the output shape (``C_out`` channels, spatial size divided by ``stride``)."""

    def __init__(self, c_out: int, stride: int) -> None:
        super().__init__()
        self.c_out, self.stride = c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        if x.shape[1] == self.c_out:
            return x.mul(0.0)  # keeps the autograd graph, as the original
        return x.new_zeros((x.shape[0], self.c_out, *x.shape[2:]))


class Pool(nn.Module):
    """``avg_pool_3x3``: 3x3 average pool (padding not counted), after a 1x1 ReLU-conv-BN where the
    channel count changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.preprocess = ReLUConvBN(c_in, c_out, 1, 1, DIM) if c_in != c_out else None
        self.pool = avg_pool(DIM, 3, stride=stride, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.preprocess(x) if self.preprocess is not None else x)


def skip_connect(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Identity, or where shape changes at stride 1 (Darcy's transition cells) NB201's
    ``FactorizedReduce(stride=1)``: a 1x1 conv + BN, no ReLU."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    if stride != 1:
        raise ValueError("NB201 cells here run at stride 1 (reduction is a ResNet block)")
    return nn.Sequential(conv(DIM, c_in, c_out, 1, padding=0), batch_norm(DIM, c_out))


def make_op(name: str, c_in: int, c_out: int, stride: int = 1) -> nn.Module:
    """One NB201 operation (xautodl's ``OPS[name](C_in, C_out, stride, affine=True, track=True)``)."""
    if name == "none":
        return Zero(c_out, stride)
    if name == "skip_connect":
        return skip_connect(c_in, c_out, stride)
    if name == "nor_conv_1x1":
        return ReLUConvBN(c_in, c_out, 1, stride, DIM)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c_in, c_out, 3, stride, DIM)
    if name == "avg_pool_3x3":
        return Pool(c_in, c_out, stride)
    raise KeyError(f"unknown NB201 operation {name!r}; known: {', '.join(space.OPS)}")


def _arch(arch: str | int | space.Arch) -> space.Arch:
    if isinstance(arch, int):
        return space.arch_of(arch)
    return space.parse(arch) if isinstance(arch, str) else tuple(arch)


class InferCell(nn.Module):
    """One NB201 cell of ``arch`` (index, official string or ops in ``space.EDGES`` order)."""

    def __init__(self, arch: str | int | space.Arch, c_in: int, c_out: int) -> None:
        super().__init__()
        ops = _arch(arch)
        if len(ops) != len(space.EDGES):
            raise ValueError(f"a cell has {len(space.EDGES)} edges, got {len(ops)} ops")
        self.edges = space.EDGES
        self.layers = nn.ModuleList(
            make_op(op, c_in if i == 0 else c_out, c_out) for op, (i, _) in zip(ops, self.edges, strict=True)
        )
        self.out_dim = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, space.NODES):
            nodes.append(sum(self.layers[k](nodes[i]) for k, (i, to) in enumerate(self.edges) if to == j))
        return nodes[-1]


class ResNetBasicBlock(nn.Module):
    """The reduction block between stages: two ReLU-conv3x3-BN (the first with the stride) plus a
    residual of 2x2 average pool + 1x1 conv (stride 2), as xautodl's ``ResNetBasicblock``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, DIM)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, DIM)
        if stride == 2:
            self.downsample: nn.Module | None = nn.Sequential(
                avg_pool(DIM, 2, stride=2), conv(DIM, c_in, c_out, 1, padding=0)
            )
        elif c_in != c_out:
            self.downsample = ReLUConvBN(c_in, c_out, 1, 1, DIM)
        else:
            self.downsample = None
        self.out_dim = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.downsample(x) if self.downsample is not None else x
        return residual + self.conv_b(self.conv_a(x))


def _stage_plan(c: int, n: int) -> list[tuple[int, bool]]:
    """(channels, is the transition) of every body layer: N at C, one to 2C, N at 2C, one to 4C, N at 4C."""
    return [(c, False)] * n + [(2 * c, True)] + [(2 * c, False)] * n + [(4 * c, True)] + [(4 * c, False)] * n


class TinyNetwork(nn.Module):
    """NinaPro's NB201 network: ``(B, in_channels, H, W)`` -> ``(B, num_classes)`` logits."""

    def __init__(
        self,
        arch: str | int | space.Arch,
        c: int = 16,
        n: int = 5,
        num_classes: int = 18,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        ops = _arch(arch)
        self.stem = nn.Sequential(conv(DIM, in_channels, c, 3), batch_norm(DIM, c))
        cells, c_prev = [], c
        for c_cur, transition in _stage_plan(c, n):
            cell = ResNetBasicBlock(c_prev, c_cur, 2) if transition else InferCell(ops, c_prev, c_cur)
            cells.append(cell)
            c_prev = cell.out_dim
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(batch_norm(DIM, c_prev), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(global_avg_pool(self.lastact(x)))


class DarcyNetwork(nn.Module):
    """Darcy's NB201 network: ``(B, in_channels, H, W)`` -> ``(B, 1, H, W)``, no downsampling."""

    def __init__(self, arch: str | int | space.Arch, c: int = 16, n: int = 5, in_channels: int = 3) -> None:
        super().__init__()
        ops = _arch(arch)
        self.stem = nn.Sequential(conv(DIM, in_channels, c, 3), batch_norm(DIM, c))
        cells, c_prev = [], c
        for c_cur, _ in _stage_plan(c, n):  # the transitions are cells too (C -> 2C at stride 1)
            cells.append(InferCell(ops, c_prev, c_cur))
            c_prev = c_cur
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(batch_norm(DIM, c_prev), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(c_prev, 1)  # per pixel, channels last (the original's parameter shapes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.lastact(x).permute(0, 2, 3, 1)
        return self.classifier(x).permute(0, 3, 1, 2)


def build_network(task: str, arch: str | int | space.Arch, C: int = 16, N: int = 5) -> nn.Module:
    """The benchmark's network of cell ``arch`` (index, string or ops) for ``task`` (``ninapro``/``darcy``),
    width ``C`` and ``N`` cells per stage (the benchmark: C = 16, N = 5)."""
    if C < 1 or N < 0:
        raise ValueError(f"C must be >= 1 and N >= 0, got C={C}, N={N}")
    if task == "ninapro":
        return TinyNetwork(arch, C, N, NUM_CLASSES["ninapro"], INPUT_SHAPES["ninapro"][0])
    if task == "darcy":
        return DarcyNetwork(arch, C, N, INPUT_SHAPES["darcy"][0])
    raise KeyError(f"NB201 benchmark task must be one of {TASKS}, got {task!r}")


def count_params(model: nn.Module) -> float:
    """All parameters in millions (xautodl's ``count_parameters_in_MB``: BN affine included)."""
    return sum(p.numel() for p in model.parameters()) / 1e6


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward of one sample of ``input_shape`` (per sample, no batch axis), in millions, as
    ``torch.utils.flop_counter`` counts them: convolutions and matrix products at 2 FLOPs per
    multiply-add; pooling, batch norm and additions are not counted. The model runs once in eval mode on its
    own device, then goes back to its mode."""
    was_training = model.training
    device = next(model.parameters(), torch.zeros(0)).device
    model.eval()
    try:
        x = torch.zeros((1, *input_shape), device=device)
        with FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops() / 1e6
    finally:
        model.train(was_training)
