"""ECG's expert: the 1D ResNet of the PhysioNet 2017 reference (Hong et al.; ``hsd1503/resnet1d``, as the
expert's ``test_physionet.py`` configured it): a kernel-16 convolution to 128 filters, 48 pre-activation
basic blocks [BN-ReLU-dropout 0.5-conv, BN-ReLU-dropout-conv; the first block skips the first BN-ReLU-dropout]
of grouped (32) kernel-16 convolutions, a stride of 2 in every sixth block (from the second) and twice the
filters every twelfth; shortcuts max-pool where the block strides and zero-pad the new channels. TensorFlow
"same" padding throughout. Then BN-ReLU, the mean over time and a linear layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from nb360.models.layers import same_padding
from nb360.models.registry import output_shape, register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec


def pad_same(x: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    """``x`` zero-padded as TensorFlow's "same" (:func:`~nb360.models.layers.same_padding`) for a window of
    ``kernel_size`` at ``stride``: ceil(length / stride) outputs."""
    return F.pad(x, same_padding(kernel_size, stride=stride, length=x.shape[-1]))


class SameConv1d(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self.kernel_size[0], self.stride[0]))


class BasicBlock(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int, first: bool
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        pre = [] if first else [nn.BatchNorm1d(in_channels), nn.ReLU(), nn.Dropout(0.5)]
        self.body = nn.Sequential(
            *pre,
            SameConv1d(in_channels, out_channels, kernel_size, stride=stride, groups=groups),
            nn.BatchNorm1d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
            SameConv1d(out_channels, out_channels, kernel_size, groups=groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        if self.stride > 1:
            identity = F.max_pool1d(pad_same(identity, self.stride, 1), self.stride)
        extra = self.out_channels - self.in_channels
        if extra:
            identity = F.pad(identity, (0, 0, extra // 2, extra - extra // 2))
        return self.body(x) + identity


class ResNet1DECG(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_filters: int = 128,
        kernel_size: int = 16,
        groups: int = 32,
        blocks: int = 48,
        downsample_gap: int = 6,
        increase_gap: int = 12,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            SameConv1d(in_channels, base_filters, kernel_size), nn.BatchNorm1d(base_filters), nn.ReLU()
        )
        layers, out = [], base_filters
        for i in range(blocks):
            c_in = base_filters if i == 0 else base_filters * 2 ** ((i - 1) // increase_gap)
            out = 2 * c_in if i and i % increase_gap == 0 else c_in
            stride = 2 if i % downsample_gap == 1 else 1
            layers.append(BasicBlock(c_in, out, kernel_size, stride, groups, first=i == 0))
        self.blocks = nn.Sequential(*layers)
        self.tail = nn.Sequential(nn.BatchNorm1d(out), nn.ReLU())
        self.head = nn.Linear(out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(self.blocks(self.stem(x))).mean(dim=-1))


@register_model("expert_resnet1d_ecg")
def expert_resnet1d_ecg(spec: TaskSpec, **kwargs: int) -> ResNet1DECG:
    return ResNet1DECG(spec.input_shape[0], output_shape(spec)[0], **kwargs)
