"""Darcy Flow's expert: the Fourier neural operator FNO-2d (Li et al., ``fourier_2d.py``): a pointwise lift
of the input channels (the coefficient and the two grid channels, which the benchmark's loader supplies) to
``width``, the field zero-padded by 9 on the far sides, four Fourier layers [spectral convolution keeping
``modes`` x ``modes`` low frequencies (both signs along the first axis) + a pointwise linear map, GELU after
all but the last], the padding cropped, then a pointwise 128-unit GELU layer and one output channel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from nb360.models.registry import output_shape, register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

PAD = 9


class SpectralConv2d(nn.Module):
    """Multiplies the lowest ``modes`` x ``modes`` Fourier coefficients (of both signs along the first axis)
    by learned complex weights and transforms back; higher frequencies are dropped."""

    def __init__(self, in_channels: int, out_channels: int, modes: int):
        super().__init__()
        self.modes = modes
        scale = 1.0 / (in_channels * out_channels)
        shape = (in_channels, out_channels, modes, modes)
        # Two 4-D weights (non-negative and negative frequencies of the first axis), as the original's
        # weights1 and weights2: 4-D parameters also take the 2D models' channels-last memory format.
        self.weight_pos = nn.Parameter(scale * torch.rand(*shape, dtype=torch.cfloat))
        self.weight_neg = nn.Parameter(scale * torch.rand(*shape, dtype=torch.cfloat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        m = self.modes
        if h < 2 * m or w // 2 + 1 < m:
            raise ValueError(
                f"{m} Fourier modes need a field of at least {2 * m} x {2 * (m - 1)}, got {h} x {w}"
            )
        coeffs = torch.fft.rfft2(x.float())
        out = coeffs.new_zeros(b, self.weight_pos.shape[1], h, w // 2 + 1)
        out[:, :, :m, :m] = torch.einsum("bixy,ioxy->boxy", coeffs[:, :, :m, :m], self.weight_pos)
        out[:, :, -m:, :m] = torch.einsum("bixy,ioxy->boxy", coeffs[:, :, -m:, :m], self.weight_neg)
        return torch.fft.irfft2(out, s=(h, w)).to(x.dtype)


class FNO2d(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, modes: int = 12, width: int = 32, layers: int = 4
    ):
        super().__init__()
        self.lift = nn.Conv2d(in_channels, width, 1)
        self.spectral = nn.ModuleList(SpectralConv2d(width, width, modes) for _ in range(layers))
        self.pointwise = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(layers))
        self.project = nn.Sequential(nn.Conv2d(width, 128, 1), nn.GELU(), nn.Conv2d(128, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(self.lift(x), [0, PAD, 0, PAD])
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            x = spectral(x) + pointwise(x)
            if i < len(self.spectral) - 1:
                x = F.gelu(x)
        return self.project(x[..., :h, :w])


@register_model("expert_fno")
def expert_fno(spec: TaskSpec, **kwargs: int) -> FNO2d:
    return FNO2d(spec.input_shape[0], output_shape(spec)[0], **kwargs)
