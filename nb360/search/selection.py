"""Pick the best of several candidate architectures by short training (random-search baselines).

Every candidate is trained with the same configuration in the search phase (fit on train, select on val:
the test split never chooses) and ranked by the task's primary metric on val, lower is better. Ties go to
the earlier candidate, so the choice is a function of the seed.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from nb360 import metrics
from nb360.train import TrainConfig, fit, seed_everything

log = logging.getLogger(__name__)


def select_by_short_training(
    candidates: Sequence[Any],
    build: Callable[[Any], nn.Module],
    manifest: str | os.PathLike,
    task: str,
    cfg: TrainConfig,
    seed: int,
    device: str,
    workdir: Path,
) -> tuple[int, list[dict[str, Any]]]:
    """(index of the best candidate, one record per candidate: val metrics, params, seconds, device).

    A candidate whose loss diverges is recorded with an infinite score; if all diverge, the search fails.
    """
    primary = metrics.PRIMARY_METRIC[task]
    records: list[dict[str, Any]] = []
    for i, candidate in enumerate(candidates):
        seed_everything(seed + i)
        model = build(candidate)
        try:
            ckpt = workdir / f"trial{i}.pt"
            result = fit(model, manifest, cfg, "search", seed + i, device, checkpoint=ckpt)
        except FloatingPointError as e:  # a diverged candidate loses; the search goes on
            log.warning("candidate %d/%d diverged: %s", i + 1, len(candidates), e)
            records.append({"trial": i, "val": {primary: math.inf}, "diverged": str(e)})
            continue
        value = result.metrics[primary]
        records.append(
            {
                "trial": i,
                "val": result.metrics,
                "params": result.params,
                "seconds": result.seconds,
                "device": result.device,
            }
        )
        log.info(
            "candidate %d/%d: val %s %.4g (%d parameters)",
            i + 1,
            len(candidates),
            primary,
            value,
            result.params,
        )
    values = [r["val"][primary] if math.isfinite(r["val"][primary]) else math.inf for r in records]
    if all(v == math.inf for v in values):
        raise FloatingPointError(f"{task}: every one of the {len(candidates)} candidates diverged")
    best = min(range(len(values)), key=lambda i: (values[i], i))
    return best, records
