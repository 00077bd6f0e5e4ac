"""DeepSEA's expert: the DeepSEA CNN (Zhou & Troyanskaya 2015; the expert script's Keras version): three
1D convolutions of kernel 8 with 320, 480 and 960 filters, "same" padding and ReLU, a max pool of 4 after the
first two, dropout 0.2, 0.2 and 0.5, then a 925-unit ReLU layer and a linear layer to the 36 labels (the
sigmoid is the loss's). The script's L2 (5e-7), max-norm (0.9) and L1 activity (1e-8) regularisers belong to
the training recipe (nb360.methods.expert), not to the module."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nb360.models.layers import conv, max_pool
from nb360.models.registry import output_shape, register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

DIM = 1
FILTERS = (320, 480, 960)
DROPOUT = (0.2, 0.2, 0.5)
KERNEL = 8
POOL = 4
HIDDEN = 925


class DeepSEA(nn.Module):
    def __init__(self, in_channels: int, length: int, num_outputs: int, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, (f, p) in enumerate(zip(FILTERS, DROPOUT, strict=True)):
            f = max(1, round(f * width))
            layers += [conv(DIM, c, f, KERNEL, padding="same", bias=True), nn.ReLU()]
            if i < 2:
                layers.append(max_pool(DIM, POOL))
                length //= POOL
            layers.append(nn.Dropout(p))
            c = f
        self.features = nn.Sequential(*layers)
        hidden = max(1, round(HIDDEN * width))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c * length, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("expert_deepsea")
def expert_deepsea(spec: TaskSpec, **kwargs: float) -> DeepSEA:
    return DeepSEA(spec.input_shape[0], spec.input_shape[1], output_shape(spec)[0], **kwargs)
