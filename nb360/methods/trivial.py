"""The trivial baseline: what "learning nothing" scores, evaluated by the same code as every model.

Majority class (one-hot scores), per-label prior, or the training-mean target field, computed from the
retrain-fit splits (nb360.models.trivial) and scored on the test split like any network.
"""

from __future__ import annotations

import functools

from nb360.data.loader import make_loader
from nb360.data.shards import read_manifest
from nb360.methods.base import Method, RunContext, register_method
from nb360.models.trivial import fit_trivial
from nb360.train import RunResult, evaluate
from nb360.train.loop import phase_splits

EVAL_BATCH = 64


def retrain(ctx: RunContext) -> RunResult:
    manifest = read_manifest(ctx.manifest)
    spec = ctx.task
    fit_splits, report = phase_splits(spec, "retrain")
    normaliser = manifest.get("normaliser", {})
    # Training-mode batches: the same crops and targets a network is trained on.
    batches = make_loader(manifest, fit_splits, EVAL_BATCH, train=True, seed=ctx.seed, fit_splits=fit_splits)
    to_output = (
        functools.partial(spec.encode_target, normaliser=normaliser, fit_splits=fit_splits)
        if spec.encode_target
        else None
    )
    model = fit_trivial(spec, batches, to_output_space=to_output)
    metrics = evaluate(model, spec, manifest, report, fit_splits, EVAL_BATCH)
    return RunResult(metrics, history=[], params=0, phase="retrain", eval_splits=report)


register_method(Method("trivial", retrain))
