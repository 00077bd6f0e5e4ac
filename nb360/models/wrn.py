"""Wide ResNet (WRN-depth-widen), the benchmark's "WRN" baseline for the 2D tasks (nb360.md 3.1).

Pre-activation basic blocks in three groups of ``(depth - 4) / 6`` blocks with ``16 * widen``,
``32 * widen`` and ``64 * widen`` channels after a 16-channel 3x3 stem; the default WRN-16-4 has channels
16/64/128/256. Optional dropout sits between the two 3x3 convolutions of a block. Initialisation as the
original: convolutions Kaiming-normal (fan_out), batch norm weight 1 and bias 0, head bias 0.

* Point tasks: group strides 1/2/2, final batch norm + ReLU, global average pool, linear head.
  Deviation: the original pooled with ``avg_pool2d(out, 8)`` unless the map was one of a few hard-coded
  sizes, so Spherical's 15x15 final map was averaged over its top-left 8x8 window only (nb360.md 3.1, 5.2);
  here the pool is global for every input size (CIFAR-100's 8x8 and NinaPro's 4x13 maps, which the
  original pooled globally, are unchanged, and FSD50K's adaptive-pool variant is the same network).
* Dense tasks: all strides 1 (no downsampling) and a per-pixel linear head, written as a 1x1 convolution
  (equivalent to the original's ``Linear(256, 1)`` applied to channels-last features). Deviations: the
  output is channels first ``(B, 1, H, W)`` and so is Darcy's input (the original permuted channels-last
  input inside the model and returned ``(B, H, W, 1)``); the original's input batch norm and ``out_conv``,
  which its forward pass never used, are left out (so the parameter count is that of the network that ran:
  Darcy 2,746,577, PSICOV 2,754,353, Cosmic 2,746,289).

``wrn`` (registered) is the benchmark's baseline for any task: this network for 2D tasks, the 1D ResNet of
:mod:`nb360.models.resnet1d` for 1D tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from nb360.models.layers import batch_norm, check_dim, conv, global_avg_pool, init_kaiming_fan_out
from nb360.models.registry import register_model
from nb360.models.resnet1d import ResNet1D, resnet1d

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

DEFAULT_DEPTH = 16
DEFAULT_WIDEN = 4
BASELINE_CONV = (3, 1)  # (kernel size, dilation) of every convolution of the benchmark's WRN


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus a shortcut.

    When the channel count changes, the shortcut is a 1x1 convolution (with the block's stride) of the
    *pre-activated* input, as in the original WRN code; otherwise it is the identity on the raw input.
    """

    def __init__(
        self,
        dim: int,
        in_channels: int,
        out_channels: int,
        stride: int,
        dropout: float,
        kernels: tuple[tuple[int, int], tuple[int, int]] = (BASELINE_CONV, BASELINE_CONV),
    ) -> None:
        super().__init__()
        (k1, d1), (k2, d2) = kernels
        self.bn1 = batch_norm(dim, in_channels)
        # a chosen (DASH) kernel applies only its taps that reach the input (the same numbers, cheaper);
        # the baseline's 3 x 3 stays a plain convolution, so its runs repeat bit for bit
        self.conv1 = conv(
            dim, in_channels, out_channels, k1, stride=stride, dilation=d1, reaching=(k1, d1) != BASELINE_CONV
        )
        self.bn2 = batch_norm(dim, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(
            dim, out_channels, out_channels, k2, dilation=d2, reaching=(k2, d2) != BASELINE_CONV
        )
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (
            conv(dim, in_channels, out_channels, 1, stride=stride) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu(self.bn1(x))
        out = self.conv2(self.dropout(self.relu(self.bn2(self.conv1(act)))))
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    """WRN-``depth``-``widen`` on ``(B, in_channels, *spatial)``.

    ``dense=False``: ``(B, num_outputs)`` logits; ``dense=True``: ``(B, num_outputs, *spatial)``, same
    spatial size as the input. ``convs``: the (kernel size, dilation) of each of the stem and block
    convolutions, in :meth:`searched_convs` order (DASH's searched networks; default 3 x 3, dilation 1).
    """

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        *,
        depth: int = DEFAULT_DEPTH,
        widen: int = DEFAULT_WIDEN,
        dropout: float = 0.0,
        dense: bool = False,
        dim: int = 2,
        convs: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        check_dim(dim)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}")
        if widen < 1:
            raise ValueError(f"WRN widen must be >= 1, got {widen}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        blocks_per_group = (depth - 4) // 6
        n_convs = 1 + 6 * blocks_per_group
        convs = [BASELINE_CONV] * n_convs if convs is None else [(int(k), int(d)) for k, d in convs]
        if len(convs) != n_convs:
            raise ValueError(
                f"WRN-{depth} has {n_convs} searchable convolutions, got {len(convs)} (kernel, dilation)"
            )
        if any(k % 2 == 0 or k < 1 or d < 1 for k, d in convs):
            raise ValueError(f"kernels must be odd and dilations positive, got {convs}")
        widths = (16 * widen, 32 * widen, 64 * widen)
        strides = (1, 1, 1) if dense else (1, 2, 2)
        self.dense = dense
        k, d = convs[0]
        self.stem = conv(dim, in_channels, 16, k, dilation=d, reaching=(k, d) != BASELINE_CONV)
        groups: list[nn.Module] = []
        channels = 16
        pairs = iter(convs[1:])
        for width, stride in zip(widths, strides, strict=True):
            blocks = []
            for i in range(blocks_per_group):
                kernels = (next(pairs), next(pairs))
                blocks.append(PreActBlock(dim, channels, width, stride if i == 0 else 1, dropout, kernels))
                channels = width
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.norm = batch_norm(dim, channels)
        self.relu = nn.ReLU(inplace=True)
        if dense:
            # Per-pixel linear map: a 1x1 convolution with bias (torch gives it nn.Linear's default init).
            self.head: nn.Module = conv(dim, channels, num_outputs, 1, bias=True)
        else:
            self.head = nn.Linear(channels, num_outputs)
        init_kaiming_fan_out(nn.ModuleList([self.stem, self.groups, self.norm]))
        nn.init.zeros_(self.head.bias)

    def searched_convs(self) -> list[tuple[nn.Module, str]]:
        """(parent module, attribute) of the stem and of every block's two convolutions, in order: the
        convolutions DASH searches (shortcuts and the head are not)."""
        slots: list[tuple[nn.Module, str]] = [(self, "stem")]
        for group in self.groups:
            for block in group:
                slots += [(block, "conv1"), (block, "conv2")]
        return slots

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm(self.groups(self.stem(x))))
        if self.dense:
            return self.head(out)
        return self.head(global_avg_pool(out))


def _check_2d(spec: TaskSpec, model: str) -> None:
    if spec.dim != 2:
        raise ValueError(f"{model} is a 2D network; task {spec.name!r} is {spec.dim}D (use 'resnet1d')")


@register_model("wrn_point")
def wrn_point(
    spec: TaskSpec,
    *,
    depth: int = DEFAULT_DEPTH,
    widen: int = DEFAULT_WIDEN,
    dropout: float = 0.0,
    convs: Sequence[tuple[int, int]] | None = None,
) -> WideResNet:
    """WRN with downsampling and a pooled linear head, for 2D point tasks (single- or multi-label)."""
    _check_2d(spec, "wrn_point")
    if spec.output_kind == "dense":
        raise ValueError(
            f"wrn_point predicts one vector per sample; task {spec.name!r} is dense (use 'wrn_dense')"
        )
    return WideResNet(
        spec.input_shape[0], spec.num_outputs, depth=depth, widen=widen, dropout=dropout, convs=convs
    )


@register_model("wrn_dense")
def wrn_dense(
    spec: TaskSpec,
    *,
    depth: int = DEFAULT_DEPTH,
    widen: int = DEFAULT_WIDEN,
    dropout: float = 0.0,
    convs: Sequence[tuple[int, int]] | None = None,
) -> WideResNet:
    """WRN without downsampling and a per-pixel head, for 2D dense tasks."""
    _check_2d(spec, "wrn_dense")
    if spec.output_kind != "dense":
        raise ValueError(
            f"wrn_dense predicts a field; task {spec.name!r} is {spec.output_kind} (use 'wrn_point')"
        )
    return WideResNet(
        spec.input_shape[0],
        spec.num_outputs,
        depth=depth,
        widen=widen,
        dropout=dropout,
        dense=True,
        convs=convs,
    )


@register_model("wrn")
def wrn(
    spec: TaskSpec,
    *,
    depth: int | None = None,
    widen: int | None = None,
    width: float | None = None,
    dropout: float | None = None,
    convs: Sequence[tuple[int, int]] | None = None,
) -> WideResNet | ResNet1D:
    """The benchmark's "WRN" baseline for any task: the 1D ResNet for 1D tasks, else the dense or point WRN.

    Size it with either ``widen`` (the WRN's own setting, default 4) or ``width``, a multiplier of the
    paper's width that applies to both families (a compute budget's knob): for 2D tasks ``widen`` becomes
    ``round(4 * width)`` (at least 1), for 1D tasks the ResNet's channels 64/128/128 are multiplied by
    ``width``, and a ``widen`` given for a 1D task counts as ``width = widen / 4`` (``widen=1``: 16/32/32
    channels), so one setting shrinks all ten baselines alike. ``convs``: each searchable convolution's
    (kernel size, dilation), as DASH chooses them. The 1D ResNet has a fixed depth and no dropout
    (the original 1D model ignored the dropout its tuning space sampled), so a ``depth`` or a nonzero
    ``dropout`` for a 1D task is an error rather than silently ignored.
    """
    if widen is not None and width is not None:
        raise ValueError("give the WRN's widen or the width multiplier, not both")
    if spec.dim == 1:
        if depth is not None or (dropout is not None and dropout != 0.0):
            raise ValueError(
                f"task {spec.name!r} uses the 1D ResNet baseline, which has no depth or dropout setting"
            )
        if width is None:
            width = (widen if widen is not None else DEFAULT_WIDEN) / DEFAULT_WIDEN
        return resnet1d(spec, width=width, convs=convs)
    if width is not None:
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        widen = max(1, round(DEFAULT_WIDEN * width))
    settings = {"depth": depth, "widen": widen, "dropout": dropout, "convs": convs}
    kwargs = {k: v for k, v in settings.items() if v is not None}
    if spec.output_kind == "dense":
        return wrn_dense(spec, **kwargs)
    return wrn_point(spec, **kwargs)
