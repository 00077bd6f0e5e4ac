"""CIFAR-100's expert: DenseNet-BC (Huang et al.; the expert script's densenet-pytorch): depth 100, growth
rate 24 (the script's default; its README says 12), compression 0.5, bottleneck layers, no dropout. Three
dense blocks of (depth - 4) / 6 bottleneck layers each [BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv to k],
transitions [BN-ReLU-1x1 conv, 2x2 average pool], then BN-ReLU, global average pool and a linear head."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from nb360.models.layers import avg_pool, batch_norm, conv, global_avg_pool
from nb360.models.registry import output_shape, register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

DIM = 2


class Bottleneck(nn.Module):
    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            batch_norm(DIM, in_channels),
            nn.ReLU(inplace=True),
            conv(DIM, in_channels, 4 * growth, 1),
            batch_norm(DIM, 4 * growth),
            nn.ReLU(inplace=True),
            conv(DIM, 4 * growth, growth, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


def transition(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        batch_norm(DIM, in_channels),
        nn.ReLU(inplace=True),
        conv(DIM, in_channels, out_channels, 1),
        avg_pool(DIM, 2),
    )


class DenseNetBC(nn.Module):
    def __init__(
        self, in_channels: int, num_classes: int, depth: int = 100, growth: int = 24, reduction: float = 0.5
    ):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"DenseNet-BC depth must be 6n + 4, got {depth}")
        layers = (depth - 4) // 6
        channels = 2 * growth
        stages: list[nn.Module] = [conv(DIM, in_channels, channels, 3)]
        for block in range(3):
            for _ in range(layers):
                stages.append(Bottleneck(channels, growth))
                channels += growth
            if block < 2:
                out = math.floor(channels * reduction)
                stages.append(transition(channels, out))
                channels = out
        stages += [batch_norm(DIM, channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*stages)
        self.head = nn.Linear(channels, num_classes)
        for m in self.modules():  # the script's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(
                    m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
                )
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(global_avg_pool(self.features(x)))


@register_model("expert_densenet_bc")
def expert_densenet_bc(spec: TaskSpec, **kwargs: float) -> DenseNetBC:
    return DenseNetBC(spec.input_shape[0], output_shape(spec)[0], **kwargs)
