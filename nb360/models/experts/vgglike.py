"""FSD50K's expert: the VGG-like network of fsd50k-pytorch on log-mel chunks. Blocks of 3x3 conv-BN-ReLU
with 32, 32, 32 | 64, 64 | 128, 128 channels, a 2x2 max pool between blocks, then the average and the
maximum over time and frequency concatenated (256 features) and a linear layer to the 200 labels."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nb360.models.layers import batch_norm, conv, max_pool
from nb360.models.registry import output_shape, register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

DIM = 2
BLOCKS = ((32, 32, 32), (64, 64), (128, 128))


class VGGLike(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, block in enumerate(BLOCKS):
            if i:
                layers.append(max_pool(DIM, 2))
            for out in block:
                out = max(1, round(out * width))
                layers += [conv(DIM, c, out, 3), batch_norm(DIM, out), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).flatten(2)
        return self.head(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))


@register_model("expert_vgglike")
def expert_vgglike(spec: TaskSpec, **kwargs: float) -> VGGLike:
    return VGGLike(spec.input_shape[0], output_shape(spec)[0], **kwargs)
