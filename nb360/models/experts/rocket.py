"""Satellite's expert: ROCKET features with a linear (softmax) classifier, as the expert's
``rocket/code/reproduce_experiments_scalability.py`` ran it (Dempster et al. 2020).

The transform is sktime's ``Rocket`` (random convolution kernels of length 7, 9 or 11 with random dilation,
padding and bias; each kernel gives the proportion of positive values and the maximum of its output): fixed,
drawn from the run's seed, so only the classifier trains, by the one loop. The features are computed batch by
batch inside ``forward`` (streamed: the real 900k series give 72 GB of features at 10,000 kernels) and kept in
a cache of the last ``cache_size`` series, keyed by their values, as the original's 16,384-series cache: a
series seen again is not transformed again. Per-feature normalisation (mean and standard deviation) comes
from the first tranche of the training series, as in the original; it is part of the model's state, so a
checkpoint restores it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from nb360.models.registry import output_shape, register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec


class RocketClassifier(nn.Module):
    def __init__(
        self,
        channels: int,
        length: int,
        num_classes: int,
        num_kernels: int = 10_000,
        seed: int | None = None,
        cache_size: int = 16_384,
    ):
        super().__init__()
        # Imported here: sktime (and numba's compilation of its kernels, ~10 s) only where ROCKET runs.
        from sktime.transformations.panel.rocket import Rocket

        if seed is None:  # drawn like a weight initialisation: from torch's generator, seeded by the run
            seed = int(torch.randint(2**31 - 1, ()))
        self.transform = Rocket(num_kernels=num_kernels, random_state=seed, n_jobs=torch.get_num_threads())
        # The kernels depend only on the seed and the series' shape, not on the values fitted on.
        self.transform.fit(np.zeros((1, channels, length), dtype=np.float32))
        self.num_features = 2 * num_kernels
        self.register_buffer("mean", torch.zeros(self.num_features))
        self.register_buffer("std", torch.ones(self.num_features))
        self.head = nn.Linear(self.num_features, num_classes)
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The ROCKET features of a batch of series (B, channels, length), unnormalised, on ``x``'s device."""
        series = x.detach().float().cpu().numpy()
        keys = [row.tobytes() for row in series]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            computed = np.asarray(self.transform.transform(series[missing]), dtype=np.float32)
            for i, row in zip(missing, computed, strict=True):
                self._cache[keys[i]] = row
        out = np.stack([self._cache[k] for k in keys])
        for k in keys:
            self._cache.move_to_end(k)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.from_numpy(out).to(x.device)

    @torch.no_grad()
    def set_normalisation(self, x: torch.Tensor) -> None:
        """Per-feature mean and standard deviation (+1e-8) of the features of ``x`` (the first tranche)."""
        f = self.features(x).to(self.mean.device)
        self.mean.copy_(f.mean(dim=0))
        self.std.copy_(f.std(dim=0, unbiased=False) + 1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.features(x) - self.mean) / self.std)


@register_model("expert_rocket")
def expert_rocket(spec: TaskSpec, **kwargs: int) -> RocketClassifier:
    """Satellite's input is (1, 46)."""
    channels, length = spec.input_shape
    return RocketClassifier(channels, length, output_shape(spec)[0], **kwargs)
