"""Spherical CIFAR-100's expert: S2CNN (Cohen et al. 2018), the "deep" network of the expert's
``s2cnn/cifar/run_cifar.py``, built from e3nn's spherical harmonics and Wigner matrices (the original
``s2cnn`` package needs its own CUDA kernels and is not installable).

Signals live in the spectral domain, as coefficients of spherical harmonics (on S2) or of Wigner D matrices
(on SO(3)), so both convolutions are per-degree linear maps (``o3.Linear``) whose weights are the kernel's
coefficients; the kernels are learned values on the original's near-identity grids. The nonlinearity (batch
norm and ReLU, as the original) is applied on a grid of SO(3) and transformed back, which is also where the
band limit falls to the next layer's. The input image is read on its Driscoll-Healy grid (rows beta, columns
alpha, as e3nn's ``FromS2Grid`` expects), the output is the integral over SO(3) (the degree-0 coefficient) of
the last layer, followed by the original's batch-normalised MLP.

The SO(3) grid is this module's own (:class:`SO3Grid`): e3nn's evaluates every Wigner matrix by a matrix
exponential at every grid point, minutes at degree 10 on a CPU; D(a, b, c) = D(a, 0, 0) D(0, b, 0) D(0, 0, c)
needs the exponentials on the three axes only. The grid's transform is dense (points x coefficients), so
memory grows with the sixth power of the degree: the paper budget caps the original's degree 29 (bandwidth 30)
at 14 (README, deviations).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nb360.models.registry import output_shape, register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

# The original's deep network: features after each convolution, and each one's band limit (bandwidth - 1:
# 29, 14, 14, 6, 6, 2, 2), the first capped at 14 here (module docstring).
FEATURES = (8, 16, 16, 24, 24, 32, 64)
DEGREES = (14, 14, 14, 6, 6, 2, 2)
MLP = (64, 32)


def _o3():  # e3nn imports sympy and opt_einsum: only where an S2CNN is built
    from e3nn import o3

    return o3


def s2_irreps(lmax: int):
    return _o3().Irreps([(1, (deg, 1)) for deg in range(lmax + 1)])


def so3_irreps(lmax: int):
    return _o3().Irreps([(2 * deg + 1, (deg, 1)) for deg in range(lmax + 1)])


def so3_dim(lmax: int) -> int:
    """Coefficients of an SO(3) signal of band limit ``lmax``: the sum of (2l + 1)^2."""
    return (lmax + 1) * (2 * lmax + 1) * (2 * lmax + 3) // 3


def wigner_flat(
    lmax: int, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, grid: bool = True
) -> torch.Tensor:
    """sqrt(2l + 1) D^l(alpha, beta, gamma), flattened and concatenated over l = 0..lmax, for 1-D angle
    tensors: on their grid, shape (len(alpha), len(beta), len(gamma), so3_dim(lmax)), or (``grid=False``) at
    the points (alpha[n], beta[n], gamma[n]), shape (n, so3_dim(lmax)). Each D^l is the product of the
    matrices of the three axis rotations, so exponentials are taken per axis value only."""
    o3 = _o3()
    zero = torch.zeros((), dtype=alpha.dtype)
    parts = []
    for deg in range(lmax + 1):
        da = o3.wigner_D(deg, alpha, zero, zero)
        db = o3.wigner_D(deg, zero, beta, zero)
        dc = o3.wigner_D(deg, gamma, zero, zero)  # D(0, 0, c) = D(c, 0, 0): both rotate about Y
        d = torch.einsum("aij,bjk,ckl->abcil" if grid else "nij,njk,nkl->nil", da, db, dc)
        parts.append((2 * deg + 1) ** 0.5 * d.flatten(-2))
    return torch.cat(parts, dim=-1)


def quadrature_weights(b: int) -> torch.Tensor:
    """The Driscoll-Healy / Kostelec-Rockmore quadrature weights of the 2b beta rows of a bandwidth-b grid,
    scaled as e3nn's SO(3) grid uses them (divided by 2 (2b)^2)."""
    j = torch.arange(2 * b, dtype=torch.float64)[:, None]
    k = torch.arange(b, dtype=torch.float64)[None, :]
    inner = (torch.sin((2 * j + 1) * (2 * k + 1) * math.pi / (4 * b)) / (2 * k + 1)).sum(dim=1)
    w = (2.0 / b) * torch.sin(math.pi * (2 * j[:, 0] + 1) / (4 * b)) * inner
    return (w / (2 * (2 * b) ** 2)).float()


class SO3Grid(nn.Module):
    """Signals of band limit ``lmax`` on a (4r alpha) x (2r beta) x (4r gamma) grid of SO(3), r =
    ``resolution``: ``to_grid`` evaluates the Wigner expansion at the grid points, ``from_grid`` integrates
    against it (the same convention as e3nn's ``SO3Grid``, which the tests compare it with)."""

    def __init__(self, lmax: int, resolution: int):
        super().__init__()
        nb, na = 2 * resolution, 4 * resolution
        beta = (torch.arange(nb, dtype=torch.float64) + 0.5) / nb * math.pi
        alpha = torch.arange(na, dtype=torch.float64) / na * 2 * math.pi
        self.register_buffer("D", wigner_flat(lmax, alpha, beta, alpha).float(), persistent=False)
        self.register_buffer("qw", quadrature_weights(resolution) * nb**2 / na**2, persistent=False)
        self.lmax = lmax

    def to_grid(self, coeffs: torch.Tensor) -> torch.Tensor:
        """(..., so3_dim) -> (..., alpha, beta, gamma)."""
        return torch.einsum("...i,abci->...abc", coeffs, self.D) / self.D.shape[-1] ** 0.5

    def from_grid(self, values: torch.Tensor) -> torch.Tensor:
        """(..., alpha, beta, gamma) -> (..., so3_dim)."""
        weighted = values * self.qw[:, None]
        return torch.einsum("...abc,abci->...i", weighted, self.D) * self.D.shape[-1] ** 0.5


def s2_near_identity_grid(max_beta: float = math.pi / 8, n_alpha: int = 8, n_beta: int = 3) -> torch.Tensor:
    """S2CNN's kernel support for the S2 convolution: rings of ``n_alpha`` points at polar angles
    max_beta * (1..n_beta) / n_beta around the north pole. Shape (2, points): alpha, beta."""
    beta = torch.arange(1, n_beta + 1, dtype=torch.float64) * max_beta / n_beta
    alpha = torch.arange(n_alpha, dtype=torch.float64) * 2 * math.pi / n_alpha
    b, a = torch.meshgrid(beta, alpha, indexing="ij")
    return torch.stack([a.flatten(), b.flatten()])


def so3_near_identity_grid(
    max_beta: float = math.pi / 8, max_gamma: float = 2 * math.pi, n_alpha: int = 8, n_beta: int = 3
) -> torch.Tensor:
    """S2CNN's kernel support for the SO(3) convolution: the S2 rings, each point with n_alpha values of
    gamma from -max_gamma to max_gamma taken relative to alpha. Shape (3, points): alpha, beta, gamma."""
    beta = torch.arange(1, n_beta + 1, dtype=torch.float64) * max_beta / n_beta
    alpha = torch.arange(n_alpha, dtype=torch.float64) * 2 * math.pi / n_alpha
    pre_gamma = torch.linspace(-max_gamma, max_gamma, n_alpha, dtype=torch.float64)
    b, a, c = torch.meshgrid(beta, alpha, pre_gamma, indexing="ij")
    return torch.stack([a.flatten(), b.flatten(), (c - a).flatten()])


class _SpectralConvolution(nn.Module):
    """A convolution in the spectral domain: the kernel's learned values at ``basis``'s points, expanded in
    the basis (spherical harmonics or Wigner matrices there: (points, coefficients)), are the weights of a
    per-degree linear map from ``irreps_in`` to ``irreps_out``."""

    def __init__(self, f_in: int, f_out: int, basis: torch.Tensor, irreps_in: Any, irreps_out: Any):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(f_in, f_out, basis.shape[0]))
        self.register_buffer("basis", basis.float(), persistent=False)
        self.lin = _o3().Linear(irreps_in, irreps_out, f_in=f_in, f_out=f_out, internal_weights=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        psi = torch.einsum("ni,xyn->xyi", self.basis, self.weight) / self.basis.shape[0] ** 0.5
        return self.lin(x, weight=psi)


class S2Convolution(_SpectralConvolution):
    """(B, f_in, (lmax + 1)^2) spherical-harmonic coefficients -> (B, f_out, so3_dim(lmax)); ``grid``:
    (alpha, beta) of the kernel's points."""

    def __init__(self, f_in: int, f_out: int, lmax: int, grid: torch.Tensor):
        degrees = list(range(lmax + 1))
        y = _o3().spherical_harmonics_alpha_beta(degrees, grid[0], grid[1], normalization="component")
        super().__init__(f_in, f_out, y, s2_irreps(lmax), so3_irreps(lmax))


class SO3Convolution(_SpectralConvolution):
    """(B, f_in, so3_dim(lmax)) -> (B, f_out, so3_dim(lmax)); ``grid``: (alpha, beta, gamma) of the kernel's
    points."""

    def __init__(self, f_in: int, f_out: int, lmax: int, grid: torch.Tensor):
        d = wigner_flat(lmax, grid[0], grid[1], grid[2], grid=False)
        super().__init__(f_in, f_out, d, so3_irreps(lmax), so3_irreps(lmax))


class GridActivation(nn.Module):
    """Batch norm and ReLU on the SO(3) grid (the original's BatchNorm3d and ReLU), from band limit
    ``lmax_in`` to ``lmax_out`` (the next layer's)."""

    def __init__(self, channels: int, lmax_in: int, lmax_out: int, grids: dict[tuple[int, int], SO3Grid]):
        super().__init__()
        resolution = max(lmax_in, lmax_out) + 1
        self.grid_in = grids.setdefault((lmax_in, resolution), SO3Grid(lmax_in, resolution))
        self.grid_out = grids.setdefault((lmax_out, resolution), SO3Grid(lmax_out, resolution))
        self.norm = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grid_out.from_grid(torch.relu(self.norm(self.grid_in.to_grid(x))))


class S2CNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        grid_size: tuple[int, int],
        num_classes: int,
        features: tuple[int, ...] = FEATURES,
        degrees: tuple[int, ...] = DEGREES,
        mlp: tuple[int, ...] = MLP,
    ):
        super().__init__()
        if len(features) != len(degrees) or len(features) < 1:
            raise ValueError(f"S2CNN needs one degree per layer: features {features}, degrees {degrees}")
        o3 = _o3()
        self.from_image = o3.FromS2Grid(grid_size, degrees[0])
        grids: dict[tuple[int, int], SO3Grid] = {}
        layers: list[nn.Module] = [
            S2Convolution(in_channels, features[0], degrees[0], s2_near_identity_grid())
        ]
        nxt = (*degrees[1:], 0)
        layers.append(GridActivation(features[0], degrees[0], nxt[0], grids))
        for i in range(1, len(features)):
            layers.append(SO3Convolution(features[i - 1], features[i], degrees[i], so3_near_identity_grid()))
            layers.append(GridActivation(features[i], degrees[i], nxt[i], grids))
        self.layers = nn.Sequential(*layers)
        head: list[nn.Module] = []
        c = features[-1]
        for h in mlp:
            head += [nn.BatchNorm1d(c), nn.Linear(c, h), nn.ReLU()]
            c = h
        head += [nn.BatchNorm1d(c), nn.Linear(c, num_classes)]
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.from_image(x)  # (B, C, (lmax + 1)^2)
        x = self.layers(x)  # (B, features[-1], 1): the last activation keeps degree 0, the SO(3) integral
        return self.head(x[..., 0])


@register_model("expert_s2cnn")
def expert_s2cnn(spec: TaskSpec, **kwargs: tuple[int, ...]) -> S2CNN:
    """Spherical's input is (3, 60, 60) on the Driscoll-Healy grid of bandwidth 30."""
    channels, beta, alpha = spec.input_shape
    return S2CNN(channels, (beta, alpha), output_shape(spec)[0], **kwargs)
