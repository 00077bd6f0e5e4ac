"""Training losses by name (``TaskSpec.loss``), computed on model outputs in target units."""

from __future__ import annotations

import math
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


def _log_cosh(d: torch.Tensor) -> torch.Tensor:
    """log(cosh(d)) without overflow: |d| + log1p(exp(-2|d|)) - log 2."""
    a = d.abs()
    return a + F.softplus(-2.0 * a) - math.log(2.0)


def _focal(out: torch.Tensor, y: torch.Tensor, gamma: float, alpha: float) -> torch.Tensor:
    """Mean of -alpha (1 - p_t)^gamma log p_t over samples, p_t the softmax probability of the true class."""
    log_p = F.log_softmax(out, dim=1).gather(1, y[:, None])[:, 0]
    return (-alpha * (1.0 - log_p.exp()) ** gamma * log_p).mean()


# Losses a training recipe may use instead of its task's (TrainConfig.loss), with their parameters' defaults.
LOSS_OVERRIDES = {"focal": {"gamma": 2.0, "alpha": 1.0}, "log_cosh": {}}


def make_loss(
    spec: TaskSpec,
    normaliser: Mapping[str, Any],
    fit_splits: tuple[str, ...],
    override: str | None = None,
    params: Mapping[str, float] | None = None,
) -> LossFn:
    """The task's loss as ``loss(output, batch)``; outputs are decoded first where the task needs it.

    ``override`` replaces it with a recipe's own (``LOSS_OVERRIDES``, ``params`` setting their parameters):
    ``focal`` for single-label tasks, ``log_cosh`` for regression (masked like the task's loss)."""

    def decode(out: torch.Tensor) -> torch.Tensor:
        return spec.decode_output(out, normaliser, fit_splits) if spec.decode_output else out

    if override is not None:
        if override not in LOSS_OVERRIDES:
            raise ValueError(f"unknown loss {override!r}; use one of {', '.join(LOSS_OVERRIDES)}")
        kw = {**LOSS_OVERRIDES[override], **(params or {})}
        unknown = set(kw) - set(LOSS_OVERRIDES[override])
        if unknown:
            raise ValueError(f"loss {override!r} takes no parameter(s) {', '.join(sorted(unknown))}")
        if override == "focal":
            if spec.loss != "cross_entropy":
                raise ValueError(f"task {spec.name}: the focal loss is for single-label tasks")
            return lambda out, b: _focal(out, b["y"], **kw)
        if spec.loss not in ("mse", "relative_l2"):
            raise ValueError(f"task {spec.name}: log_cosh is a regression loss")
        return lambda out, b: _masked_mean(_log_cosh(decode(out) - b["y"]), b.get("mask"))

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
