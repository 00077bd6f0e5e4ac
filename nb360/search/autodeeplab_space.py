"""Auto-DeepLab's network-level search space (Liu et al. 2019; more-methods.md section 3): the path of
:data:`LAYERS` cells through :data:`LEVELS` resolutions, and its decoding by dynamic programming.

The network starts from the stem at level 0 (1/4 of the input resolution); each layer's cell sits at the
level of the previous one, one finer or one coarser (levels 0..3: 1/4, 1/8, 1/16, 1/32). The search weighs
these transitions with ``betas`` of shape ``(LAYERS, LEVELS, 3)``: ``betas[l, s]`` are the logits of the
moves out of level ``s`` into layer ``l`` (to ``s - 1``, stay, to ``s + 1``), normalised over the moves that
exist there (:func:`normalize_betas`: level 0 cannot go finer, level 3 cannot go coarser), so a layer's cell
at level ``s`` is the beta-weighted sum of the cells fed from levels ``s - 1``, ``s`` and ``s + 1`` (the
paper's equation 6). Layer 0 is fed by the stem (level 0). The decoded network is the path of highest
probability, the product of its transition weights, found by Viterbi's algorithm (:func:`decode_path`), as
the original's decoder does.

The cells are DARTS cells of 5 nodes (the edges and ops of :mod:`nb360.search.darts_space`, decoded by
:func:`~nb360.search.darts_space.derive_cell` with ``steps=STEPS``). :class:`Supernet` is the search network
(every cell of every reachable level, ASPP heads on all four levels, summed); inputs are zero-padded to a
power of two and outputs cropped back (:func:`pad_input`). Its cells run as the DARTS space's batched cell
(the same function as the edge-by-edge loop): a step of the 12-layer network at 2 filters and batch 2, which
is mostly the dispatch of small ops, takes half the loop's time on one CPU core (about 4 s against 8 s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# A module import, not names: nb360.search imports nb360.models.layers, so either package may load first.
import nb360.search.darts_space as darts
from nb360.models.layers import batch_norm, conv

LAYERS = 12
LEVELS = 4
STEPS = 5  # nodes per cell (the DARTS space's cells have 4)
BLOCK = 5  # the cell output concatenates the last BLOCK nodes: BLOCK x filters x 2^level channels
MOVES = (-1, 0, 1)  # to a finer level, stay, to a coarser level: the last axis of betas


def move_mask(levels: int = LEVELS) -> torch.Tensor:
    """``(levels, 3)``: True where the move out of a level exists."""
    mask = torch.ones(levels, len(MOVES), dtype=torch.bool)
    mask[0, 0] = False  # level 0 has no finer level
    mask[-1, 2] = False  # the coarsest level has no coarser one
    return mask


def normalize_betas(betas: torch.Tensor) -> torch.Tensor:
    """Softmax of ``betas`` (..., levels, 3) over the moves that exist from each level; 0 elsewhere."""
    mask = move_mask(betas.shape[-2]).to(betas.device)
    return torch.softmax(betas.masked_fill(~mask, -math.inf), dim=-1)


def reachable(layer: int, levels: int = LEVELS) -> range:
    """Levels a path can be at after ``layer + 1`` moves from the stem (level 0; layers before 0 are the
    stem)."""
    return range(min(max(layer + 1, 0), levels - 1) + 1)


def path_log_prob(weights: np.ndarray | torch.Tensor, path: Sequence[int]) -> float:
    """The log-probability of ``path`` (one level per layer, starting from the stem at level 0) under the
    normalised transition weights (:func:`normalize_betas`); -inf for a path with an impossible move."""
    w = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64)
    total, level = 0.0, 0
    for layer, nxt in enumerate(path):
        move = nxt - level
        if move not in MOVES or not 0 <= nxt < w.shape[1]:
            return -math.inf
        p = w[layer, level, move + 1]
        total += math.log(p) if p > 0 else -math.inf
        level = nxt
    return total


def decode_path(weights: np.ndarray | torch.Tensor) -> list[int]:
    """The most probable path (a level per layer) under the normalised transition weights ``(layers, levels,
    3)``, by dynamic programming over layers and levels (Viterbi). Ties go to the finer predecessor and the
    finer end level, so the path is a function of the weights only."""
    w = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64)
    layers, levels = w.shape[:2]
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    score = np.full(levels, -math.inf)
    score[0] = 0.0  # the stem
    back = np.zeros((layers, levels), dtype=np.int64)
    for layer in range(layers):
        new = np.full(levels, -math.inf)
        for level in range(levels):
            for move in MOVES:
                prev = level - move
                if not 0 <= prev < levels or score[prev] == -math.inf:
                    continue
                candidate = score[prev] + logw[layer, prev, move + 1]
                # ties: the finer predecessor (visited first, as prev grows with the move's sign)
                if candidate > new[level] or (candidate == new[level] and prev < back[layer, level]):
                    new[level], back[layer, level] = candidate, prev
        score = new
    if not np.isfinite(score).any():
        raise ValueError("no path has a non-zero probability under these weights")
    level = int(np.argmax(score))  # first maximum: the finest end level among ties
    path = [level]
    for layer in range(layers - 1, 0, -1):
        level = int(back[layer, level])
        path.append(level)
    return path[::-1]


# ------------------------------------------------------------------------------------------ networks
#
# Both networks work on inputs padded to a power of two (at least 32: four halvings below the stem's 1/4);
# their outputs are cropped back to the input's size (the original padded Darcy's 85 x 85 to 128 and cropped).


def padded_size(size: int) -> int:
    """The side an input of ``size`` is zero-padded to: the next power of two, at least 32."""
    return max(32, 1 << (size - 1).bit_length())


def pad_input(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` zero-padded on every spatial side to :func:`padded_size` (as evenly as possible, the extra
    element after), and the crop that undoes it on an output of the padded size."""
    sides: list[int] = []
    crop: list[int] = []
    for n in reversed(x.shape[2:]):  # F.pad lists the last axis first
        total = padded_size(n) - n
        sides += [total // 2, total - total // 2]
    for n in x.shape[2:]:
        total = padded_size(n) - n
        crop += [total // 2, total // 2 + n]
    return F.pad(x, sides), tuple(crop)


def crop_output(out: torch.Tensor, crop: Sequence[int]) -> torch.Tensor:
    index = [slice(None), slice(None)] + [slice(crop[2 * i], crop[2 * i + 1]) for i in range(out.dim() - 2)]
    return out[tuple(index)]


def resample(c_in: int, c_out: int, move: int, dim: int, affine: bool) -> nn.Module:
    """A state of the neighbouring level brought to this one with ``c_out`` channels: a factorised
    reduction from the finer level (``move`` +1), a 1 x 1 ReLU-conv-BN from the same level (0), or bilinear
    upsampling by 2 and a 1 x 1 ReLU-conv-BN from the coarser one (-1)."""
    if move == 1:
        return darts.FactorizedReduce(c_in, c_out, dim, affine)
    same = darts.ReLUConvBN(c_in, c_out, 1, 1, dim, affine)
    return same if move == 0 else nn.Sequential(Upsample(2.0), same)


class Upsample(nn.Module):
    def __init__(self, scale: float | None = None):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        mode = "linear" if x.dim() == 3 else "bilinear"
        if size is not None:
            return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)
        return F.interpolate(x, scale_factor=self.scale, mode=mode, align_corners=False)


class SearchCell(darts.SearchCell):
    """A cell of the search network: :data:`STEPS` nodes, node ``i`` the sum of mixed DARTS edges (weights
    ``alphas``, shared by every cell) from the two inputs and the earlier nodes; output the concatenation of
    the nodes. Its previous-layer input comes from level ``s - move`` (resampled); the one of two layers
    before, from the same level where that level existed then (``c_pp`` channels), else the previous-layer
    input stands in for it (``c_pp`` None). The edges run as the DARTS space's batched cell (``impl``)."""

    def __init__(
        self, c_pp: int | None, c_p: int, c: int, move: int, dim: int, impl: darts.Impl = "batched"
    ) -> None:
        super().__init__(c_pp or c, c_p, c, reduction=False, reduction_prev=False, dim=dim, k=1, impl=impl,
                         steps=STEPS, preprocess=False)  # fmt: skip
        self.preprocess0 = darts.ReLUConvBN(c_pp, c, 1, 1, dim, affine=False) if c_pp else None
        self.preprocess1 = resample(c_p, c, move, dim, affine=False)
        # Auto-DeepLab weighs no edge: every edge weight is 1
        self.register_buffer("ones", torch.ones(len(self.edges)), persistent=False)

    def forward(self, s0: torch.Tensor | None, s1: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        s1 = self.preprocess1(s1)
        # padded inputs halve exactly at every level, so both inputs have the same size
        h0 = s1 if self.preprocess0 is None or s0 is None else self.preprocess0(s0)
        return self.mix(h0, s1, alphas, self.ones)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab): a 1 x 1 branch, a 3 x 3 branch dilated by ``rate`` and
    an image-pooling branch, concatenated and projected to ``c_out`` channels."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, rate: int, dim: int):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(conv(dim, c_in, c_mid, k, dilation=d), batch_norm(dim, c_mid), nn.ReLU())
            for k, d in ((1, 1), (3, rate))
        )
        self.image = nn.Sequential(conv(dim, c_in, c_mid, 1), nn.ReLU())
        self.project = conv(dim, 3 * c_mid, c_out, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image(x.flatten(2).mean(-1).view(*x.shape[:2], *[1] * (x.dim() - 2)))
        parts = [b(x) for b in self.branches] + [pooled.expand(-1, -1, *x.shape[2:])]
        return self.project(torch.cat(parts, dim=1))


ASPP_RATES = (24, 12, 6, 3)  # per level, as the original's for its 96-pixel crops


class Supernet(nn.Module):
    """Auto-DeepLab's search network for ``(B, in_channels, H, W)`` inputs and per-pixel outputs.

    Stem: 3 x 3 stride 2, 3 x 3, 3 x 3 stride 2 (to level 0, ``BLOCK * filters`` channels). Layer ``l``
    holds a cell at every reachable level ``s`` for every level ``p`` it can be fed from; its state is
    ``sum_p w[l, p, s - p] * cell(state[l - 2, s], state[l - 1, p])`` with ``w`` the normalised betas (the
    stem is the state of layers -1 and -2). Every level of the last layer goes through its ASPP head; the
    heads' outputs, upsampled to the input, are summed. ``alphas`` (edges x DARTS ops) and ``betas``
    (layers x levels x 3) are the architecture parameters.
    """

    def __init__(
        self, in_channels: int, num_outputs: int, *, filters: int = 8, layers: int = LAYERS, dim: int = 2
    ):
        super().__init__()
        self.n_layers = layers
        width = [BLOCK * filters * 2**s for s in range(LEVELS)]  # a level's state channels
        self.stem = nn.Sequential(
            conv(dim, in_channels, width[0] // 2, 3, stride=2), batch_norm(dim, width[0] // 2), nn.ReLU(),
            conv(dim, width[0] // 2, width[0] // 2, 3), batch_norm(dim, width[0] // 2), nn.ReLU(),
            conv(dim, width[0] // 2, width[0], 3, stride=2), batch_norm(dim, width[0]), nn.ReLU(),
        )  # fmt: skip
        self.cells = nn.ModuleDict()
        for layer in range(layers):
            for s in reachable(layer):
                for move in MOVES:
                    if (p := s - move) in reachable(layer - 1):
                        c_pp = width[s] if s in reachable(layer - 2) else None
                        self.cells[f"{layer}_{s}_{p}"] = SearchCell(c_pp, width[p], filters * 2**s, move, dim)
        self.heads = nn.ModuleList(
            ASPP(width[s], width[0], num_outputs, ASPP_RATES[s], dim) for s in range(LEVELS)
        )
        n_edges = sum(2 + i for i in range(STEPS))
        self.alphas = nn.Parameter(1e-3 * torch.randn(n_edges, len(darts.PRIMITIVES)))
        self.betas = nn.Parameter(1e-3 * torch.randn(layers, LEVELS, len(MOVES)))
        self.upsample = Upsample()

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas, self.betas]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n not in ("alphas", "betas")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, crop = pad_input(x)
        alphas, w = torch.softmax(self.alphas, dim=-1), normalize_betas(self.betas)
        stem = self.stem(x)
        prevprev: dict[int, torch.Tensor] = {0: stem}
        prev: dict[int, torch.Tensor] = {0: stem}
        for layer in range(self.n_layers):
            cur: dict[int, torch.Tensor] = {}
            for s in reachable(layer):
                terms = [
                    w[layer, p, s - p + 1] * self.cells[f"{layer}_{s}_{p}"](prevprev.get(s), prev[p], alphas)
                    for p in prev
                    if f"{layer}_{s}_{p}" in self.cells
                ]
                cur[s] = torch.stack(terms).sum(0)
            prevprev, prev = prev, cur
        out = torch.stack([self.upsample(self.heads[s](h), x.shape[2:]) for s, h in prev.items()]).sum(0)
        return crop_output(out, crop)

    def decode(self) -> tuple[list[int], list[tuple[str, int]]]:
        """The decoded architecture: the most probable path and the cell (DARTS' rule on 5 nodes)."""
        with torch.no_grad():
            path = decode_path(normalize_betas(self.betas))
            cell = darts.derive_cell(torch.softmax(self.alphas, dim=-1), steps=STEPS)
        return path, cell


class Resize(nn.Module):
    """A state of level ``source`` brought to level ``target`` (bilinear, by a power of two: the padded
    inputs make every level's size exact), then a 1 x 1 ReLU-conv-BN to ``c_out`` channels: the decoded
    network's input of two layers before, whose level may differ by two."""

    def __init__(self, c_in: int, c_out: int, source: int, target: int, dim: int):
        super().__init__()
        self.scale = 2.0 ** (source - target)
        self.upsample = Upsample(self.scale)
        self.project = darts.ReLUConvBN(c_in, c_out, 1, 1, dim, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.upsample(x) if self.scale != 1 else x)


class DecodedNetwork(nn.Module):
    """The network Auto-DeepLab decodes, retrained from scratch: the stem, one cell per layer at the level
    of ``path`` (the searched ``cell``: 5 nodes, two ops each; the previous layer's state resampled from its
    level, the one of two layers before resized), then ASPP on the last state and DeepLab v3+'s decoder
    (the stem's features projected to 48 channels, concatenated with the ASPP output upsampled to them, two
    3 x 3 conv-BN-ReLU of ``decoder`` channels, a 1 x 1 classifier), upsampled to the padded input and
    cropped back to the input."""

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        path: Sequence[int],
        cell: Sequence[tuple[str, int]],
        *,
        filters: int = 32,
        aspp: int = 256,
        decoder: int = 256,
        dim: int = 2,
    ):
        super().__init__()
        from nb360.models.darts_eval import EvalCell  # nb360.models imports this module

        if len(cell) != 2 * STEPS:
            raise ValueError(f"a cell of {STEPS} nodes lists {2 * STEPS} ops, got {len(cell)}")
        if not math.isfinite(path_log_prob(normalize_betas(torch.zeros(len(path), LEVELS, 3)), path)):
            raise ValueError(f"{list(path)} is not a path of the space (from level 0, one level per layer)")
        self.path = list(path)
        width = [BLOCK * filters * 2**s for s in range(LEVELS)]
        self.stem = nn.Sequential(
            conv(dim, in_channels, width[0] // 2, 3, stride=2), batch_norm(dim, width[0] // 2), nn.ReLU(),
            conv(dim, width[0] // 2, width[0] // 2, 3), batch_norm(dim, width[0] // 2), nn.ReLU(),
            conv(dim, width[0] // 2, width[0], 3, stride=2), batch_norm(dim, width[0]), nn.ReLU(),
        )  # fmt: skip
        levels = [0, 0, *self.path]  # the stem stands for layers -2 and -1
        cells = []
        for layer, s in enumerate(self.path):
            pp, p = levels[layer], levels[layer + 1]
            c = filters * 2**s
            pre = (Resize(width[pp], c, pp, s, dim), resample(width[p], c, s - p, dim, affine=True))
            cells.append(
                EvalCell(list(cell), list(range(2, 2 + STEPS)), width[pp], width[p], c, reduction=False,
                         reduction_prev=False, dim=dim, preprocess=pre)
            )  # fmt: skip
        self.cells = nn.ModuleList(cells)
        last = width[self.path[-1]]
        self.aspp = ASPP(last, aspp, aspp, ASPP_RATES[self.path[-1]], dim)
        self.low = nn.Sequential(conv(dim, width[0], 48, 1), batch_norm(dim, 48), nn.ReLU())
        self.decoder = nn.Sequential(
            conv(dim, aspp + 48, decoder, 3), batch_norm(dim, decoder), nn.ReLU(),
            conv(dim, decoder, decoder, 3), batch_norm(dim, decoder), nn.ReLU(),
            conv(dim, decoder, num_outputs, 1, bias=True),
        )  # fmt: skip
        self.upsample = Upsample()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, crop = pad_input(x)
        stem = self.stem(x)
        s0 = s1 = stem
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, 0.0)
        y = self.upsample(self.aspp(s1), stem.shape[2:])
        y = self.decoder(torch.cat([y, self.low(stem)], dim=1))
        return crop_output(self.upsample(y, x.shape[2:]), crop)
