"""NinaPro's expert: the attention MLP of the expert's ``semg_repro/repro.py`` (Josephs et al.-style): the
window as 52 time steps of 16 electrodes, batch-normalised per electrode, a 128-unit Mish layer per time step
and LayerNorm, softmax attention pooling over the time steps (a learned score per step), then three blocks
[dropout 0.36, a 500-, 500- and 2000-unit Mish layer, LayerNorm] and a linear layer to the 18 gestures (the
softmax is the loss's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nb360.models.registry import output_shape, register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

DROPOUT = 0.36
HIDDEN = (500, 500, 2000)


class AttentionMLP(nn.Module):
    def __init__(self, electrodes: int, num_classes: int, embed: int = 128, width: float = 1.0):
        super().__init__()
        self.norm_in = nn.BatchNorm1d(electrodes)
        self.embed = nn.Sequential(nn.Linear(electrodes, embed), nn.Mish(), nn.LayerNorm(embed))
        self.score = nn.Linear(embed, 1)
        layers: list[nn.Module] = []
        c = embed
        for h in HIDDEN:
            h = max(1, round(h * width))
            layers += [nn.Dropout(DROPOUT), nn.Linear(c, h), nn.Mish(), nn.LayerNorm(h)]
            c = h
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(self.norm_in(x.flatten(1, -2)).transpose(1, 2))  # (B, time, embed)
        weights = torch.softmax(self.score(h), dim=1)  # (B, time, 1)
        return self.head(self.mlp((weights * h).sum(dim=1)))


@register_model("expert_attention_mlp")
def expert_attention_mlp(spec: TaskSpec, **kwargs: float) -> AttentionMLP:
    """NinaPro's input is (1, electrodes, time)."""
    return AttentionMLP(spec.input_shape[-2], output_shape(spec)[0], **kwargs)
