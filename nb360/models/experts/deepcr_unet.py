"""Cosmic's expert: deepCR's mask network ``UNet2Sigmoid(1, 1, hidden=32)`` (Zhang & Bloom 2020): a
two-level U-Net [double 3x3 conv-BN-ReLU at ``hidden`` channels; 2x2 max pool and a double conv at twice
that; a 2x2 transposed convolution up to ``hidden``, concatenated with the skip, a double conv], a 1x1
convolution to one channel. deepCR ends in a sigmoid; the logits are returned here for BCE-with-logits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nb360.models.layers import batch_norm, conv, max_pool
from nb360.models.registry import output_shape, register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

DIM = 2


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        conv(DIM, in_channels, out_channels, 3, bias=True),
        batch_norm(DIM, out_channels),
        nn.ReLU(inplace=True),
        conv(DIM, out_channels, out_channels, 3, bias=True),
        batch_norm(DIM, out_channels),
        nn.ReLU(inplace=True),
    )


class UNet2(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, hidden: int = 32):
        super().__init__()
        self.inc = double_conv(in_channels, hidden)
        self.down = nn.Sequential(max_pool(DIM, 2), double_conv(hidden, 2 * hidden))
        self.up = nn.ConvTranspose2d(2 * hidden, hidden, 2, stride=2)
        self.merge = double_conv(2 * hidden, hidden)
        self.out = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.inc(x)
        up = self.up(self.down(skip))
        # Odd sizes: pad the upsampled map to the skip's (as deepCR's ``up`` does).
        dh, dw = skip.shape[-2] - up.shape[-2], skip.shape[-1] - up.shape[-1]
        up = nn.functional.pad(up, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.out(self.merge(torch.cat([skip, up], dim=1)))


@register_model("expert_deepcr_unet")
def expert_deepcr_unet(spec: TaskSpec, **kwargs: int) -> UNet2:
    return UNet2(spec.input_shape[0], output_shape(spec)[0], **kwargs)
