"""Choosing among candidates by short training: diverged candidates lose, all diverged is an error."""

from __future__ import annotations

import pytest
import torch

from nb360.models import create_model
from nb360.search.selection import select_by_short_training
from nb360.tasks import get_task
from nb360.train import TrainConfig

CFG = TrainConfig(epochs=1, lr=0.05, batch_size=64, max_batches_per_epoch=2)


def _build(kind: str) -> torch.nn.Module:
    model = create_model("wrn", get_task("satellite"), width=0.25)
    if kind == "nan":  # a candidate whose loss is NaN from the first step
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    return model


def test_diverged_candidates_lose_and_all_diverged_fails(embedded, tmp_path):
    manifest = embedded.build("satellite")[1]
    best, records = select_by_short_training(
        ["nan", "ok"], _build, manifest, "satellite", CFG, 0, "cpu", tmp_path
    )
    assert best == 1 and "diverged" in records[0] and records[1]["val"]["error_pct"] < 100
    with pytest.raises(FloatingPointError, match="every one of the 2 candidates diverged"):
        select_by_short_training(["nan", "nan"], _build, manifest, "satellite", CFG, 0, "cpu", tmp_path / "b")
