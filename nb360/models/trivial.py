"""The trivial baseline: what learning nothing from the inputs scores.

:class:`TrivialModel` ignores its input and returns the same output for every sample, in the shape and
space of any network's output for the task, so it is evaluated by exactly the code that evaluates the
networks. :func:`fit_trivial` computes that constant from the training batches:

* single-label: one-hot scores of the majority training class (ties: the lowest class index). One-hot, not a
  constant vector, so the 0-1 error does not depend on how top-1 breaks ties (nb360.md 1.2b).
* multi-label: the logit of each label's training prior (clamped to [1e-6, 1 - 1e-6]).
* dense binary (loss ``*bce_with_logits``, Cosmic): a constant field of the logit of the pixel prior, pooled
  over every training pixel that counts in the loss (``mask`` 1). Cosmic's metric thresholds the raw logit at
  0.5, so this predicts no cosmic ray anywhere: FNR 100 %, 1 - AUROC 0.5.
* dense regression (Darcy, PSICOV): the per-pixel mean of the training target ``y``, counting only pixels
  whose ``mask`` is set when batches carry one; a pixel no training sample covers gets the mean over all
  covered pixels. The mean is taken in the space of ``batch["y"]``. When the training loop compares a
  *decoded* network output with ``y`` (Darcy: outputs are in normalised units, ``y`` is raw), pass
  ``to_output_space``, the inverse of that decoding (Darcy: ``nb360.tasks.darcy.encode_y`` with the
  manifest's normaliser), so that the trivial model's output is decoded like any network's; never skip the
  decoding for the trivial model instead. The field has the training input's spatial size, which is what
  the model sees at evaluation too (PSICOV evaluates 128 x 128 windows of its canvas); another input size
  is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from nb360.models.registry import output_shape, register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

PRIOR_EPS = 1e-6  # keeps the logit of a label never (or always) seen in training finite


class TrivialModel(nn.Module):
    """Returns ``constant`` (a buffer, so it moves with ``.to()`` and is saved in the state dict) for every
    sample: ``(B, *constant.shape)``. For a field-shaped constant the input's spatial size must match."""

    def __init__(self, constant: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("constant", constant.detach().to(torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        field = self.constant.shape[1:]
        if field and tuple(x.shape[2:]) != tuple(field):
            got = tuple(x.shape[2:])
            raise ValueError(f"trivial model fitted on {tuple(field)} fields got input of spatial size {got}")
        return self.constant.unsqueeze(0).repeat(x.shape[0], *(1,) * self.constant.dim())


@register_model("trivial")
def trivial(spec: TaskSpec) -> TrivialModel:
    """An unfitted (all-zero) trivial model of the task's output shape; load a fitted state dict into it,
    or build a fitted one with :func:`fit_trivial`."""
    return TrivialModel(torch.zeros(output_shape(spec)))


def is_binary_dense(spec: TaskSpec) -> bool:
    """Dense task whose outputs are logits of a per-pixel binary target (Cosmic)."""
    return spec.output_kind == "dense" and spec.loss.endswith("bce_with_logits")


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(PRIOR_EPS, 1.0 - PRIOR_EPS))


def fit_trivial(
    spec: TaskSpec,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    to_output_space: Callable[[np.ndarray], np.ndarray] | None = None,
) -> TrivialModel:
    """The trivial model of ``spec`` fitted on training ``batches`` (dicts with ``y`` and optional ``mask``,
    as the loader yields them); see the module docstring for what each output kind predicts.

    ``to_output_space`` maps the mean target field (float64 array of the per-sample output shape) to the
    network's output space; only dense regression tasks take it.
    """
    if to_output_space is not None and (spec.output_kind != "dense" or is_binary_dense(spec)):
        raise ValueError(f"to_output_space applies to dense regression tasks only, not {spec.name!r}")
    shape = output_shape(spec)
    if spec.output_kind == "single_label":
        constant = _majority_one_hot(spec, batches)
    elif spec.output_kind == "multi_label":
        constant = _label_prior_logits(spec, batches)
    else:
        total, count = _masked_sums(spec, batches, shape)
        if is_binary_dense(spec):
            constant = torch.full(shape, float(_logit(total.sum() / count.sum())))
        else:
            overall = total.sum() / count.sum()
            field = torch.where(count > 0, total / torch.where(count > 0, count, 1.0), overall)
            if to_output_space is not None:
                field = torch.as_tensor(np.asarray(to_output_space(field.numpy())), dtype=torch.float64)
                if tuple(field.shape) != shape:
                    raise ValueError(f"to_output_space returned shape {tuple(field.shape)}, expected {shape}")
            constant = field
    return TrivialModel(constant)


def _majority_one_hot(spec: TaskSpec, batches: Iterable[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    counts = torch.zeros(spec.num_outputs, dtype=torch.int64)
    for batch in batches:
        y = torch.as_tensor(batch["y"]).reshape(-1).long()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= spec.num_outputs):
            raise ValueError(
                f"{spec.name}: class labels must lie in [0, {spec.num_outputs}), "
                f"got values from {int(y.min())} to {int(y.max())}"
            )
        counts += torch.bincount(y, minlength=spec.num_outputs)
    if counts.sum() == 0:
        raise ValueError(f"{spec.name}: no training samples to fit the trivial model on")
    one_hot = torch.zeros(spec.num_outputs)
    one_hot[int(torch.argmax(counts))] = 1.0  # argmax returns the first maximal index: ties -> lowest class
    return one_hot


def _label_prior_logits(spec: TaskSpec, batches: Iterable[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    positives = torch.zeros(spec.num_outputs, dtype=torch.float64)
    n = 0
    for batch in batches:
        y = torch.as_tensor(batch["y"]).to(torch.float64)
        if y.dim() != 2 or y.shape[1] != spec.num_outputs:
            raise ValueError(
                f"{spec.name}: multi-label targets must be (B, {spec.num_outputs}), got {tuple(y.shape)}"
            )
        positives += y.sum(dim=0)
        n += y.shape[0]
    if n == 0:
        raise ValueError(f"{spec.name}: no training samples to fit the trivial model on")
    return _logit(positives / n)


def _masked_sums(
    spec: TaskSpec, batches: Iterable[Mapping[str, torch.Tensor]], shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel sums of ``y`` and counts of the pixels that count (``mask`` set, or all)."""
    total = torch.zeros(shape, dtype=torch.float64)
    count = torch.zeros(shape, dtype=torch.float64)
    for batch in batches:
        y = torch.as_tensor(batch["y"]).to(torch.float64)
        if tuple(y.shape[1:]) != shape:
            raise ValueError(f"{spec.name}: dense targets must be (B, *{shape}), got {tuple(y.shape)}")
        mask = batch.get("mask")
        weight = torch.ones_like(y) if mask is None else torch.as_tensor(mask).to(torch.float64).expand_as(y)
        total += torch.where(weight > 0, y * weight, 0.0).sum(dim=0)  # a NaN target under mask 0 stays out
        count += weight.sum(dim=0)
    if count.sum() == 0:
        raise ValueError(f"{spec.name}: no training pixels to fit the trivial model on")
    return total, count
