"""DASH's search space (Shen, Khodak, Talwalkar 2022; more-methods.md section 7): every searched convolution
of a backbone chooses one (kernel size, dilation) pair.

The mixture operation is written once for 1D and 2D: each candidate has its own weights; a candidate's
kernel is dilated (zeros between its taps) and zero-padded to the largest receptive field of the layer, and
the candidates are summed with the layer's architecture weights (Gumbel-softmax of the logits while
training) into one kernel, which is applied once, by direct convolution or by FFT (:func:`fft_conv`, the
same numbers). Candidate ``i`` is kernel ``kernels[i // len(dilations)]`` with dilation
``dilations[i % len(dilations)]``, DASH's order. The gradient of the architecture logits is normalised and a
receptive-field penalty added (:meth:`MixedConv.arch_gradient`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nb360.models.layers import CONV_TYPES, check_dim, reaching_taps

# (kernels, dilations) of DASH's spaces (task_configs.py): 2D tasks, NinaPro's small maps, 1D tasks.
SPACE_2D = ((3, 5, 7, 9), (1, 3, 7, 15))
SPACE_NINAPRO = ((3, 5, 7), (1, 3, 7))
SPACE_1D = ((3, 7, 11, 15, 19), (1, 3, 7, 15))
FIELD_PENALTY = 1e-5  # weight of a candidate's receptive field in the architecture gradient


def receptive_field(kernel: int, dilation: int) -> int:
    return dilation * (kernel - 1) + 1


def dilate(weight: torch.Tensor, dilation: int, dim: int) -> torch.Tensor:
    """A kernel (out, in, *k) with ``dilation - 1`` zeros between neighbouring taps along each of its
    ``dim`` spatial axes: (out, in, *(d (k - 1) + 1))."""
    if dilation == 1:
        return weight
    k = weight.shape[-1]
    size = receptive_field(k, dilation)
    out = weight.new_zeros((*weight.shape[:2], *(size,) * dim))
    index = (slice(None), slice(None), *(slice(None, None, dilation),) * dim)
    out[index] = weight
    return out


def pad_centred(weight: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """An odd-sized kernel zero-padded equally on both sides of each spatial axis to ``size`` (odd)."""
    p = (size - weight.shape[-1]) // 2
    return F.pad(weight, (p, p) * dim) if p else weight


def _flat_index(axes: Sequence[torch.Tensor], sides: Sequence[int]) -> torch.Tensor:
    """Row-major flat indices of the grid ``axes[0] x axes[1] x ...`` in a grid of ``sides``."""
    grids = torch.meshgrid(*axes, indexing="ij")
    index = torch.zeros_like(grids[0])
    for g, side in zip(grids, sides, strict=True):
        index = index * side + g
    return index.flatten()


def _cropped_taps(kernel: int, dilation: int, keep: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, destination): the flat indices, in a centred ``kernel``-sized kernel dilated by
    ``dilation``, of its taps within ``keep[a]`` of the centre along every axis ``a``, and where they fall in
    a centred kernel of side ``2 keep[a] + 1``."""
    offsets = dilation * (torch.arange(kernel) - (kernel - 1) // 2)
    src = [torch.nonzero(offsets.abs() <= t).flatten() for t in keep]
    dst = [offsets[i] + t for i, t in zip(src, keep, strict=True)]
    return _flat_index(src, (kernel,) * len(keep)), _flat_index(dst, [2 * t + 1 for t in keep])


def aggregate_kernel(
    weights: Sequence[torch.Tensor], probs: torch.Tensor, dilations: Sequence[int], size: int, dim: int
) -> torch.Tensor:
    """sum_c probs[c] * pad(dilate(weights[c], dilations[c])): one kernel of side ``size``."""
    total = None
    for w, p, d in zip(weights, probs, dilations, strict=True):
        term = p * pad_centred(dilate(w, d, dim), size, dim)
        total = term if total is None else total + term
    assert total is not None
    return total


def fft_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    padding: int | Sequence[int],
    stride: int = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv{1,2}d(x, weight, padding=padding, stride=stride, groups=groups)`` computed by FFT: the
    cross-correlation is a product of spectra, which costs the same for every kernel size (the mixture's
    kernels reach 121 x 121 in 2D and 271 in 1D). ``padding``: one for every axis, or one per axis."""
    dim = x.dim() - 2
    pads = (padding,) * dim if isinstance(padding, int) else tuple(padding)
    if any(pads):
        x = F.pad(x, [p for q in reversed(pads) for p in (q, q)])  # F.pad lists the last axis first
    spatial = x.shape[2:]
    k = weight.shape[2:]
    axes = tuple(range(2, 2 + dim))
    fx = torch.fft.rfftn(x, s=spatial, dim=axes)
    # correlation = convolution with the flipped kernel; its result at n is at n + k - 1 of the full one
    fw = torch.fft.rfftn(weight.flip(axes), s=spatial, dim=axes)
    b, c_in = x.shape[:2]
    c_out = weight.shape[0]
    g = groups
    fx = fx.reshape(b, g, c_in // g, *fx.shape[2:])
    fw = fw.reshape(g, c_out // g, c_in // g, *fw.shape[2:])
    fy = torch.einsum("bgi...,goi...->bgo...", fx, fw).reshape(b, c_out, *fx.shape[3:])
    y = torch.fft.irfftn(fy, s=spatial, dim=axes)
    valid = tuple(slice(kk - 1, n, stride) for kk, n in zip(k, spatial, strict=True))
    return y[(slice(None), slice(None), *valid)].contiguous()


class MixedConv(nn.Module):
    """DASH's aggregated convolution over (kernel, dilation) candidates, ``dim``-dimensional, "same"
    padding of the largest field, any stride."""

    def __init__(
        self,
        dim: int,
        in_channels: int,
        out_channels: int,
        kernels: Sequence[int],
        dilations: Sequence[int],
        *,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        grad_scale: float = 100.0,
        use_fft: bool | None = None,
    ):
        super().__init__()
        self.dim = check_dim(dim)
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"DASH's candidate kernels are odd, got {tuple(kernels)}")
        self.candidates = [(k, d) for k in kernels for d in dilations]
        self.stride, self.groups, self.grad_scale = stride, groups, grad_scale
        self.size = max(receptive_field(k, d) for k, d in self.candidates)
        self.use_fft = use_fft
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(out_channels, in_channels // groups, *(k,) * dim) * 0.01)
            for k, _ in self.candidates
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(self.candidates)))
        fields = torch.tensor([float(receptive_field(k, d)) for k, d in self.candidates])
        self.register_buffer("fields", fields, persistent=False)
        self.alpha.register_hook(self.arch_gradient)
        # Per kept extent and device: where each candidate's kept taps come from and go to (built once).
        self._taps: dict[tuple[tuple[int, ...], torch.device], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def arch_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        """g / (grad_scale ||g||) + 1e-5 x receptive field: the normalised gradient, pushed towards small
        fields (DASH's dash.py)."""
        norm = grad.norm()
        scaled = grad / (self.grad_scale * norm) if norm > 0 else grad
        return scaled + FIELD_PENALTY * self.fields.to(grad)

    def probs(self) -> torch.Tensor:
        """The candidates' weights: a Gumbel-softmax sample (temperature 1, soft) in training, the softmax
        of the logits in evaluation."""
        if self.training:
            return F.gumbel_softmax(F.log_softmax(self.alpha, dim=0), tau=1.0, hard=False)
        return F.softmax(self.alpha, dim=0)

    def kernel(self, probs: torch.Tensor | None = None) -> torch.Tensor:
        """The aggregated kernel (out, in / groups, *(size,) * dim): :func:`aggregate_kernel`'s sum."""
        return self._aggregate(((self.size - 1) // 2,) * self.dim, probs)

    def reaching_kernel(
        self, spatial: Sequence[int], probs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[int, ...]]:
        """The aggregated kernel cropped to the taps that can reach an input of ``spatial``, and its
        padding: ``crop_to_input(self.kernel(probs), (1,) * dim, spatial)``, built from those taps alone
        (a 121-wide kernel on an 8 x 8 map is a 15 x 15 one; the full kernel is never filled)."""
        keep = tuple(reaching_taps(self.size, 1, n) for n in spatial)
        return self._aggregate(keep, probs), keep

    def _aggregate(self, keep: tuple[int, ...], probs: torch.Tensor | None) -> torch.Tensor:
        """The weighted sum of the candidates' taps within ``keep[a]`` of the centre along each axis ``a``:
        a scatter-add of each candidate's kept taps into a kernel of side ``2 keep[a] + 1``."""
        probs = self.probs() if probs is None else probs
        w0 = self.weights[0]
        key = (keep, w0.device)
        if key not in self._taps:
            self._taps[key] = [
                tuple(i.to(w0.device) for i in _cropped_taps(k, d, keep)) for k, d in self.candidates
            ]
        sides = [2 * t + 1 for t in keep]
        flat = w0.new_zeros((*w0.shape[:2], math.prod(sides)))
        for p, w, (src, dst) in zip(probs, self.weights, self._taps[key], strict=True):
            taps = w.flatten(2)
            if len(src) < taps.shape[2]:  # a candidate wider than the kept extent loses its outer taps
                taps = taps.index_select(2, src)
            flat = flat.index_add(2, dst, p * taps)
        return flat.view(*w0.shape[:2], *sides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Only the taps that can reach the input take part (exactly the same output): a 121-wide kernel on
        # an 8 x 8 map is a 15 x 15 one, and the FFT's size shrinks with it.
        weight, padding = self.reaching_kernel(x.shape[2:])
        use_fft = self.use_fft if self.use_fft is not None else prefer_fft(x, math.prod(weight.shape[2:]))
        if use_fft:
            out = fft_conv(x, weight.to(x.dtype), padding, self.stride, self.groups)
        else:
            conv = F.conv1d if self.dim == 1 else F.conv2d
            out = conv(x, weight.to(x.dtype), stride=self.stride, padding=padding, groups=self.groups)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype).view(-1, *(1,) * self.dim)
        return out

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [*self.weights, *([self.bias] if self.bias is not None else [])]

    def chosen(self) -> tuple[int, int]:
        """The (kernel, dilation) of the largest architecture logit."""
        return self.candidates[int(torch.argmax(self.alpha))]


def to_supernet(
    model: nn.Module,
    kernels: Sequence[int],
    dilations: Sequence[int],
    *,
    grad_scale: float = 100.0,
    separable: bool = True,
) -> list[MixedConv]:
    """Replace every convolution of ``model.searched_convs()`` (a WRN or the 1D ResNet) with a
    :class:`MixedConv` of the same channels, stride and bias, depthwise where its input and output channels
    are equal (DASH's ``--separable 1``); return them in order. The model's other layers are unchanged."""
    mixed = []
    for parent, name in model.searched_convs():
        slot = getattr(parent, name)
        layer = next(m for m in slot.modules() if isinstance(m, CONV_TYPES))  # a conv, or pad + conv
        dim = layer.weight.dim() - 2
        c_in, c_out = layer.in_channels, layer.out_channels
        op = MixedConv(
            dim,
            c_in,
            c_out,
            kernels,
            dilations,
            stride=layer.stride[0],
            groups=c_in if separable and c_in == c_out else 1,
            bias=layer.bias is not None,
            grad_scale=grad_scale,
        )
        setattr(parent, name, op)
        mixed.append(op)
    return mixed


def prefer_fft(x: torch.Tensor, taps: int) -> bool:
    """Whether the FFT path is the faster one for a kernel of ``taps`` taps (``size ** dim``): direct
    convolution costs ~ taps multiply-adds per output and channel pair, the FFT's product one per frequency
    (plus transforms of ~ log(length) per element), so large mixed kernels go by FFT (DASH's default) and
    small ones directly."""
    length = math.prod(x.shape[2:])
    return taps > 8 * math.log2(max(length, 2))
