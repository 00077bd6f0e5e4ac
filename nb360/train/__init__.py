"""Training and evaluation: one loop for every task and architecture."""

from nb360.train.loop import RunResult, TrainConfig, count_params, evaluate, fit, predict, seed_everything

__all__ = ["RunResult", "TrainConfig", "count_params", "evaluate", "fit", "predict", "seed_everything"]
