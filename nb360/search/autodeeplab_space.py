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

The cells themselves are DARTS cells with 5 steps (:mod:`nb360.search.darts_space`,
:func:`~nb360.search.darts_space.derive_cell` with ``steps=STEPS``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

LAYERS = 12
LEVELS = 4
STEPS = 5  # nodes per cell (the DARTS space's cells have 4); the cell output concatenates them (block 5)
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
    """Levels a path can be at after ``layer + 1`` moves from the stem (level 0)."""
    return range(min(layer + 1, levels - 1) + 1)


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
