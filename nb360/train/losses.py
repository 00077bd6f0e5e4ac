"""Training losses by name (``TaskSpec.loss``), computed on model outputs in target units."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from nb360.tasks import TaskSpec

LossFn = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


def _relative_l2(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||out - y|| / ||y|| (Darcy; the metric is the same quantity)."""
    diff = (out - y).flatten(1).norm(dim=1)
    return (diff / y.flatten(1).norm(dim=1).clamp_min(1e-12)).mean()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def make_loss(spec: TaskSpec, normaliser: Mapping[str, Any], fit_splits: tuple[str, ...]) -> LossFn:
    """The task's loss as ``loss(output, batch)``; outputs are decoded first where the task needs it."""

    def decode(out: torch.Tensor) -> torch.Tensor:
        return spec.decode_output(out, normaliser, fit_splits) if spec.decode_output else out

    kind = spec.loss
    if kind == "cross_entropy":
        return lambda out, b: F.cross_entropy(out, b["y"])
    if kind == "bce_with_logits":
        return lambda out, b: F.binary_cross_entropy_with_logits(out, b["y"].to(out.dtype))
    if kind == "relative_l2":
        return lambda out, b: _relative_l2(decode(out), b["y"])
    if kind == "mse":
        # PSICOV: padding and unknown distances are masked out (the mask marks real residue pairs).
        return lambda out, b: _masked_mean((decode(out) - b["y"]) ** 2, b.get("mask"))
    if kind == "masked_bce_with_logits":
        # Cosmic: pixels of the ignore mask do not count (mask = 1 - ignore).
        return lambda out, b: _masked_mean(
            F.binary_cross_entropy_with_logits(out, b["y"].to(out.dtype), reduction="none"), b.get("mask")
        )
    raise ValueError(f"task {spec.name}: unknown loss {kind!r}")
