"""Perceiver IO as the NAS-Bench-360 paper ran it (krasserm's perceiver-io 0.1; more-methods.md section 2).

Every input position is a token ``[x, pos, sin(pi f pos), cos(pi f pos)]`` (Fourier position features, 32
bands per spatial dimension, f from 1 to half the size, pos in [-1, 1]). A latent array of 32 x 128 reads the
tokens through one cross-attention (4 heads) and runs 3 self-attention layers (4 heads); the encoder's layers
2 and 3 are one shared module applied twice, as in the original. One learned output query cross-attends (1
head) to the latents and a linear head gives the classes, or the whole output field for dense tasks (``H x W``
values reshaped, the original's per-pixel output without per-pixel queries). Pre-LayerNorm residual blocks,
MLPs of widening factor 1, no dropout; latents and query drawn from N(0, 0.02) truncated at +-2.

Written once for 1D and 2D inputs. Deviation: 1D tasks get position features for their one axis (the
original treated them as height-1 images, adding a constant feature block for the height axis).

``patch`` > 1 makes each input token a non-overlapping block of ``patch`` positions per axis (Perceiver IO's
"patches" preprocessor, space-to-depth), for the smoke budget only: the original (``patch=1``) reads every
pixel as a token. Dense outputs are still decoded per pixel at full resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nb360.models.registry import output_shape, register_model
from nb360.tasks.base import TaskSpec


def fourier_features(shape: tuple[int, ...], bands: int) -> torch.Tensor:
    """(prod(shape), len(shape) * (2 * bands + 1)) position features of a grid, row-major like ``flatten``."""
    axes = [torch.linspace(-1.0, 1.0, n) for n in shape]
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))
    parts = [pos]
    for d, n in enumerate(shape):
        freqs = torch.linspace(1.0, max(n / 2.0, 1.0), bands)
        angle = math.pi * pos[:, d : d + 1] * freqs
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, dim=1)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, *S) -> (B, C * patch**d, *ceil(S / patch)): non-overlapping blocks of ``patch`` positions per
    axis stacked as channels (space-to-depth), the input zero-padded at the end of each axis to a multiple."""
    if patch == 1:
        return x
    spatial = x.shape[2:]
    pad = [p for n in reversed(spatial) for p in (0, -n % patch)]
    x = F.pad(x, pad)
    b, c, *s = x.shape
    d = len(s)
    x = x.reshape(b, c, *[v for n in s for v in (n // patch, patch)])
    # (B, C, g0, p0, g1, p1, ...) -> (B, C, p0, p1, ..., g0, g1, ...): channel index = (c, offsets)
    x = x.permute(0, 1, *[3 + 2 * i for i in range(d)], *[2 + 2 * i for i in range(d)])
    return x.reshape(b, c * patch**d, *[n // patch for n in s])


def patch_grid(spatial: tuple[int, ...], patch: int) -> tuple[int, ...]:
    return tuple(-(-n // patch) for n in spatial)


class MLP(nn.Sequential):
    def __init__(self, channels: int):
        super().__init__(
            nn.LayerNorm(channels), nn.Linear(channels, channels), nn.GELU(), nn.Linear(channels, channels)
        )


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head scaled dot-product attention of (B, L, D) queries to (B, N, D) keys and values."""
    b, n_q, d = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, t.shape[1], heads, d // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, n_q, d)


class TokenProjection(nn.Module):
    """``Linear(LayerNorm([x, pos]))`` for the keys and values of the input tokens, computed exactly but
    without concatenating the position features to every sample's tokens.

    With t = [x, pos], LayerNorm(t) W^T = ((t * g) W^T - mu (g W^T)) / sigma + b W^T, and (t * g) W^T splits
    into an x part (a few channels per position) and a pos part that is the same for every sample: the pos
    part is computed once per forward instead of once per sample, which makes the projections of the 100-180
    wide tokens as cheap as those of their few input channels (Perceiver IO's cost on long inputs; tested
    against the concatenated form)."""

    def __init__(self, in_channels: int, pos_channels: int, out_channels: int, norm: nn.LayerNorm):
        super().__init__()
        self.in_channels = in_channels
        self.norm = norm
        self.linear = nn.Linear(in_channels + pos_channels, out_channels)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        c, width = self.in_channels, self.in_channels + pos.shape[1]
        g, beta, w = self.norm.weight, self.norm.bias, self.linear.weight
        mean = (x.sum(-1, keepdim=True) + pos.sum(-1)[:, None]) / width
        sq = (x * x).sum(-1, keepdim=True) + (pos * pos).sum(-1)[:, None]
        inv_std = torch.rsqrt(sq / width - mean * mean + self.norm.eps)
        # [x * g, mean] @ [W_x^T; -g W^T] in one matmul, then the samples' shared pos part: few passes over
        # the (B, N, out) result, which is what the cost is on long inputs.
        x_mean = torch.cat([x * g[:c], mean], dim=-1)
        w_mean = torch.cat([w[:, :c].T, -(g @ w.T)[None]], dim=0)
        scaled = (x_mean @ w_mean).add_((pos * g[c:]) @ w[:, c:].T)
        return torch.addcmul(beta @ w.T + self.linear.bias, scaled, inv_std)


class CrossAttention(nn.Module):
    """Pre-LayerNorm cross-attention of queries to keys/values of another width, residual on the queries."""

    def __init__(self, q_channels: int, kv_channels: int, heads: int, pos_channels: int = 0):
        super().__init__()
        self.heads = heads
        self.q_norm = nn.LayerNorm(q_channels)
        self.kv_norm = nn.LayerNorm(kv_channels + pos_channels)
        self.q_proj = nn.Linear(q_channels, q_channels)
        self.kv_proj = TokenProjection(kv_channels, pos_channels, 2 * q_channels, self.kv_norm)
        self.out_proj = nn.Linear(q_channels, q_channels)
        self.mlp = MLP(q_channels)

    def keys_values(self, kv: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv_proj(kv, pos).chunk(2, dim=-1)
        return k, v

    def forward(self, q: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = q + self.out_proj(attend(self.q_proj(self.q_norm(q)), *keys_values, self.heads))
        return q + self.mlp(q)


class SelfAttention(nn.Module):
    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out_proj = nn.Linear(channels, channels)
        self.mlp = MLP(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.out_proj(attend(*self.qkv(self.norm(x)).chunk(3, dim=-1), self.heads))
        return x + self.mlp(x)


class EncoderLayer(nn.Module):
    """Cross-attention from the latents to the tokens, then a block of self-attention layers."""

    def __init__(
        self,
        latent_channels: int,
        in_channels: int,
        pos_channels: int,
        cross_heads: int,
        heads: int,
        depth: int,
    ):
        super().__init__()
        self.cross = CrossAttention(latent_channels, in_channels, cross_heads, pos_channels)
        self.blocks = nn.Sequential(*[SelfAttention(latent_channels, heads) for _ in range(depth)])

    def forward(self, latents: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.blocks(self.cross(latents, keys_values))


class PixelDecoder(nn.Module):
    """Perceiver IO's decoding of a dense output: one query per output position, made from the position's
    input channels and Fourier features, cross-attends to the latents; a linear head gives its values."""

    def __init__(
        self, in_channels: int, pos_channels: int, latent_channels: int, heads: int, out_channels: int
    ):
        super().__init__()
        self.heads = heads
        norm = nn.LayerNorm(in_channels + pos_channels)
        self.query = TokenProjection(in_channels, pos_channels, latent_channels, norm)
        self.kv_norm = nn.LayerNorm(latent_channels)
        self.kv = nn.Linear(latent_channels, 2 * latent_channels)
        self.norm = nn.LayerNorm(latent_channels)
        self.head = nn.Linear(latent_channels, out_channels)

    def forward(self, pixels: torch.Tensor, pos: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        q = self.query(pixels, pos)  # (B, positions, latent_channels)
        k, v = self.kv(self.kv_norm(latents)).chunk(2, dim=-1)
        return self.head(self.norm(q + attend(q, k, v, self.heads)))  # (B, positions, out_channels)


class PerceiverIO(nn.Module):
    def __init__(
        self,
        in_channels: int,
        spatial: tuple[int, ...],
        out_shape: tuple[int, ...],
        num_latents: int = 32,
        latent_channels: int = 128,
        bands: int = 32,
        num_layers: int = 3,
        self_attention_layers: int = 3,
        cross_heads: int = 4,
        heads: int = 4,
        decoder_heads: int = 1,
        decoder: str = "query",
        patch: int = 1,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if patch < 1:
            raise ValueError(f"patch must be at least 1, got {patch}")
        self.out_shape = tuple(out_shape)
        self.patch = patch
        spatial = tuple(spatial)
        self.register_buffer("pos", fourier_features(patch_grid(spatial, patch), bands), persistent=False)
        pos_channels = self.pos.shape[1]
        token_channels = in_channels * patch ** len(spatial)
        self.latents = nn.Parameter(torch.empty(num_latents, latent_channels))
        self.query = nn.Parameter(torch.empty(1, latent_channels))
        layer = (latent_channels, token_channels, pos_channels, cross_heads, heads, self_attention_layers)
        self.first = EncoderLayer(*layer)
        # Layers 2..num_layers share one module (the original's weight sharing).
        self.shared = EncoderLayer(*layer) if num_layers > 1 else None
        self.repeats = num_layers - 1
        if decoder not in ("query", "pixel"):
            raise ValueError(f"decoder must be 'query' or 'pixel', not {decoder!r}")
        if decoder == "pixel" and tuple(out_shape[1:]) != tuple(spatial):
            raise ValueError(
                f"the pixel decoder needs a dense output of the input's size {spatial}, not {out_shape}"
            )
        self.pixel_decoder = self.decoder = self.head = None
        if decoder == "pixel":
            # The queries: every pixel at full resolution (its own position features when tokens are patches).
            pixel_pos = fourier_features(spatial, bands) if patch > 1 else None
            self.register_buffer("pixel_pos", pixel_pos, persistent=False)
            self.pixel_decoder = PixelDecoder(
                in_channels, pos_channels, latent_channels, decoder_heads, out_shape[0]
            )
        else:
            self.decoder = CrossAttention(latent_channels, latent_channels, decoder_heads)
            self.head = nn.Linear(latent_channels, math.prod(self.out_shape))
        for p in (self.latents, self.query):
            nn.init.trunc_normal_(p, std=0.02, a=-2.0, b=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        tokens = patchify(x, self.patch).flatten(2).transpose(1, 2)  # (B, positions, channels), row-major
        pos = self.pos.to(tokens.dtype)
        latents = self.first(self.latents.expand(b, -1, -1), self.first.cross.keys_values(tokens, pos))
        if self.shared is not None:
            # The shared layer sees the same tokens with the same weights: its keys and values once.
            shared_kv = self.shared.cross.keys_values(tokens, pos)
            for _ in range(self.repeats):
                latents = self.shared(latents, shared_kv)
        if self.pixel_decoder is not None:
            pixels = x.flatten(2).transpose(1, 2)
            pixel_pos = pos if self.pixel_pos is None else self.pixel_pos.to(pixels.dtype)
            out = self.pixel_decoder(pixels, pixel_pos, latents)  # (B, positions, channels)
            return out.transpose(1, 2).reshape(b, *self.out_shape)
        no_pos = pos.new_zeros(1, 0)
        out = self.decoder(self.query.expand(b, -1, -1), self.decoder.keys_values(latents, no_pos))
        return self.head(out[:, 0]).reshape(b, *self.out_shape)


@register_model("perceiver_io")
def perceiver_io(spec: TaskSpec, **kwargs: int) -> PerceiverIO:
    """Perceiver IO for ``spec`` (the paper's sizes by default; keyword arguments override them)."""
    return PerceiverIO(spec.input_shape[0], tuple(spec.input_shape[1:]), output_shape(spec), **kwargs)
