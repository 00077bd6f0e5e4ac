"""AMBER's search space, its weight-sharing child network and its controller (more-methods.md section 4).

AMBER (Zhang et al. 2021) is an ENAS-style search for genomics-like 1D sequences; the benchmark ran it on
ECG, Satellite and DeepSEA. Written here in PyTorch (the AMBER package is TensorFlow 1):

* the space: :data:`LAYERS` layers, each one of :data:`OPS` (convolutions of kernel 8 and 4, the same
  dilated by 10, a 1 x 1 convolution followed by max or average pooling of 4 at stride 1, identity), and
  for each layer a skip connection from every earlier layer, sampled by the controller; the width doubles
  (and the length is divided by 4) after the layers in :data:`REDUCE_AFTER`;
* :class:`AmberNet`: a network of the space, built as AMBER's ResidualCnnBuilder builds one. With
  ``shared=True`` every layer holds all the ops and runs the one of ``net.arch`` (ENAS' weight-shared
  child); otherwise it builds one architecture alone (the final model);
* :class:`Controller`: AMBER's ``GeneralController``, a one-layer LSTM that samples an op per layer and,
  through an attention over the earlier layers' anchors, each skip connection; with AMBER's temperature,
  tanh constant and the KL penalty that pulls the skip probability towards a target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nb360.models.layers import avg_pool, batch_norm, conv, max_pool, same_padding

# AMBER's ECG example (amber_ecg.py): 12 layers of 7 ops, 32 filters doubled after layers 2, 5 and 8.
OPS = ("conv8", "conv4", "dilconv8", "dilconv4", "maxpool4", "avgpool4", "identity")
LAYERS = 12
REDUCE_AFTER = (2, 5, 8)
REDUCTION = 4  # the length is divided by this at each doubling (AMBER's reduction_factor)
DILATION = 10


@dataclass(frozen=True)
class AmberArch:
    """One architecture: ``ops[i]`` indexes :data:`OPS`; ``skips[i][j]`` is 1 where layer ``i`` adds the
    output of layer ``j < i`` (``skips[i]`` has ``i`` entries)."""

    ops: tuple[int, ...]
    skips: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(self.skips):
            raise ValueError(f"{len(self.ops)} ops but {len(self.skips)} skip rows")
        for i, (op, row) in enumerate(zip(self.ops, self.skips, strict=True)):
            if not 0 <= op < len(OPS):
                raise ValueError(f"layer {i}: op {op} is not an index of {OPS}")
            if len(row) != i or any(b not in (0, 1) for b in row):
                raise ValueError(f"layer {i}: skips {row} must be {i} bits (one per earlier layer)")

    def to_json(self) -> dict[str, Any]:
        return {"ops": [OPS[o] for o in self.ops], "skips": [list(r) for r in self.skips]}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> AmberArch:
        try:
            ops = tuple(OPS.index(o) for o in body["ops"])
        except ValueError as e:
            raise ValueError(f"unknown AMBER op in {body['ops']}; ops are {OPS}") from e
        return cls(ops, tuple(tuple(int(b) for b in row) for row in body["skips"]))

    def summary(self) -> str:
        layers = []
        for op, row in zip(self.ops, self.skips, strict=True):
            skips = [str(j) for j, b in enumerate(row) if b]
            layers.append(OPS[op] + (f"+{','.join(skips)}" if skips else ""))
        return " ".join(layers)


class SamePool(nn.Module):
    """Max or average pooling at stride 1 with TensorFlow's "same" padding (AMBER's pool ops; the padded
    positions never win a max and are not counted in an average)."""

    def __init__(self, kind: str, dim: int, kernel_size: int):
        super().__init__()
        self.left, self.right = same_padding(kernel_size)
        self.kind, self.dim = kind, dim
        pool = max_pool if kind == "max" else avg_pool
        self.pool = pool(dim, kernel_size, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sides = (self.left, self.right) * self.dim
        if self.kind == "max":
            return self.pool(F.pad(x, sides, value=-math.inf))
        ones = torch.ones_like(x[:1, :1])
        return self.pool(F.pad(x, sides)) / self.pool(F.pad(ones, sides))


def make_op(name: str, channels: int, dim: int = 1) -> nn.Module:
    """One op of the space on ``channels`` channels (length kept), as AMBER's ResidualCnnBuilder builds it:
    conv (no bias) -> batch norm -> ReLU; or a 1 x 1 conv -> batch norm -> ReLU followed by pooling of 4 at
    stride 1; or the identity."""
    if name == "identity":
        return nn.Identity()
    if name.startswith(("conv", "dilconv")):
        k = int(name.removeprefix("dil").removeprefix("conv"))
        d = DILATION if name.startswith("dil") else 1
        first: nn.Module = conv(dim, channels, channels, k, padding="same", dilation=d)
        return nn.Sequential(first, batch_norm(dim, channels), nn.ReLU())
    if name in ("maxpool4", "avgpool4"):
        pool = SamePool(name[:3], dim, 4)
        return nn.Sequential(conv(dim, channels, channels, 1), batch_norm(dim, channels), nn.ReLU(), pool)
    raise ValueError(f"unknown AMBER op {name!r}; ops are {OPS}")


class Reduce(nn.Module):
    """AMBER's factorised reduction of one layer's output at a width doubling: a 1 x 1 conv to the new
    width, then max pooling by :data:`REDUCTION` with "same" padding (ceil(L / 4) outputs)."""

    def __init__(self, in_channels: int, out_channels: int, dim: int = 1):
        super().__init__()
        self.conv = conv(dim, in_channels, out_channels, 1)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        sides: list[int] = []
        for n in reversed(x.shape[2:]):  # F.pad lists the last axis first
            sides += same_padding(REDUCTION, stride=REDUCTION, length=n)
        pooled = F.pad(x, sides, value=-math.inf)
        return F.max_pool1d(pooled, REDUCTION) if self.dim == 1 else F.max_pool2d(pooled, REDUCTION)


def reduced_length(length: int) -> int:
    """The length after the reductions of :data:`REDUCE_AFTER`."""
    for _ in REDUCE_AFTER:
        length = -(-length // REDUCTION)
    return length


class AmberNet(nn.Module):
    """A network of AMBER's space for inputs ``(C, L)`` and ``num_outputs`` logits, as AMBER's
    ResidualCnnBuilder: a stem (conv of 8, batch norm), then per layer its op on the previous layer's
    output, plus (from the second layer) the outputs of the earlier layers its skips name, batch-normalised,
    with ``dropout``; at each width doubling every layer's output so far is reduced (:class:`Reduce`), so
    that later skips reach them at the new width. The head turns the last output into features by
    ``flatten`` (the search's child) or global average pooling (``"gap"``, the final model), then dropout, a
    fully connected layer of ``fc`` with ReLU, and the outputs.

    ``shared``: every layer holds every op and runs ``self.arch`` (set it before each forward: ENAS' child
    network, whose weights all sampled architectures share); otherwise ``arch`` is built alone.
    """

    def __init__(
        self,
        in_channels: int,
        length: int,
        num_outputs: int,
        *,
        filters: int = 32,
        fc: int = 925,
        dropout: float = 0.0,
        head: str = "flatten",
        arch: AmberArch | None = None,
        shared: bool = False,
        dim: int = 1,
    ):
        super().__init__()
        if not shared and arch is None:
            raise ValueError("a network that is not weight-shared needs its architecture")
        if head not in ("flatten", "gap"):
            raise ValueError(f"head must be 'flatten' or 'gap', not {head!r}")
        self.arch, self.shared = arch, shared
        stem = conv(dim, in_channels, filters, 8, padding="same")
        self.stem = nn.Sequential(stem, batch_norm(dim, filters))
        self.layers = nn.ModuleList()
        self.joins = nn.ModuleList()
        self.reduce = nn.ModuleDict()
        c = filters
        for i in range(LAYERS):
            if shared:
                self.layers.append(nn.ModuleList(make_op(name, c, dim) for name in OPS))
            else:
                assert arch is not None
                self.layers.append(make_op(OPS[arch.ops[i]], c, dim))
            self.joins.append(batch_norm(dim, c) if i else nn.Identity())
            if i in REDUCE_AFTER:
                # one reduction per layer so far (AMBER reduces them all)
                self.reduce[str(i)] = nn.ModuleList(Reduce(c, 2 * c, dim) for _ in range(i + 1))
                c *= 2
        self.dropout = nn.Dropout(dropout)
        features = c * reduced_length(length) if head == "flatten" else c
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool1d(1) if head == "gap" else nn.Identity(),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(features, fc),
            nn.ReLU(),
            nn.Linear(fc, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arch = self.arch
        if arch is None:
            raise RuntimeError("set the weight-shared network's arch before its forward")
        h = self.stem(x)
        outputs: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            op = layer[arch.ops[i]] if self.shared else layer
            out = op(outputs[-1] if outputs else h)
            if i:
                for j, bit in enumerate(arch.skips[i]):
                    if bit:
                        out = out + outputs[j]
                out = self.joins[i](out)
            outputs.append(self.dropout(out))
            if str(i) in self.reduce:
                outputs = [r(o) for r, o in zip(self.reduce[str(i)], outputs, strict=True)]
        return self.head(outputs[-1])


def sample_uniform(generator: torch.Generator, skip_p: float = 0.4) -> AmberArch:
    """An architecture with uniform ops and independent skips of probability ``skip_p``."""
    ops = torch.randint(len(OPS), (LAYERS,), generator=generator).tolist()
    skips = [tuple((torch.rand(i, generator=generator) < skip_p).int().tolist()) for i in range(LAYERS)]
    return AmberArch(tuple(ops), tuple(skips))


@dataclass(frozen=True)
class ControllerConfig:
    """AMBER's controller settings (amber_ecg.py)."""

    hidden: int = 64
    temperature: float = 2.0
    tanh_constant: float = 1.5
    skip_target: float = 0.4
    skip_weight: float = 1.0
    lr: float = 1e-3
    train_pi_iter: int = 10
    batch_size: int = 20
    kl_threshold: float = 0.01


@dataclass
class Sampled:
    """The controller's record of one architecture: its summed log-probability, entropy and skip penalty."""

    arch: AmberArch
    log_prob: torch.Tensor
    entropy: torch.Tensor
    skip_kl: torch.Tensor


class Controller(nn.Module):
    """A one-layer LSTM that emits, layer by layer, the op (a categorical over :data:`OPS`) and then the
    skip connections (one Bernoulli per earlier layer, from an attention between the layer's query and the
    earlier layers' anchors), as ENAS' macro controller that AMBER's GeneralController follows. Logits are
    divided by the temperature and squashed by ``tanh_constant * tanh``."""

    def __init__(self, cfg: ControllerConfig = ControllerConfig(), layers: int = LAYERS):
        super().__init__()
        self.cfg, self.n_layers = cfg, layers
        h = cfg.hidden
        self.lstm = nn.LSTMCell(h, h)
        self.start = nn.Parameter(torch.zeros(1, h))
        self.op_embedding = nn.Embedding(len(OPS), h)
        self.op_logits = nn.Linear(h, len(OPS))
        self.anchor = nn.Linear(h, h, bias=False)
        self.query = nn.Linear(h, h, bias=False)
        self.attend = nn.Linear(h, 1, bias=False)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    def _squash(self, logits: torch.Tensor) -> torch.Tensor:
        return self.cfg.tanh_constant * torch.tanh(logits / self.cfg.temperature)

    def forward(self, arch: AmberArch | None = None, generator: torch.Generator | None = None) -> Sampled:
        """Sample an architecture (``arch`` None) or score ``arch``: its log-probability under the current
        policy, the entropy of the decisions and the skip penalty, all differentiable."""
        cfg = self.cfg
        state = (self.start.new_zeros(1, cfg.hidden), self.start.new_zeros(1, cfg.hidden))
        inputs = self.start
        anchors: list[torch.Tensor] = []
        log_prob, entropy, skip_kl = inputs.new_zeros(()), inputs.new_zeros(()), inputs.new_zeros(())
        ops: list[int] = []
        skips: list[tuple[int, ...]] = []
        target = torch.tensor([cfg.skip_target, 1 - cfg.skip_target])
        for i in range(self.n_layers):
            state = self.lstm(inputs, state)
            dist = torch.distributions.Categorical(logits=self._squash(self.op_logits(state[0]))[0])
            if arch is not None:
                op = arch.ops[i]
            else:
                op = int(torch.multinomial(dist.probs, 1, generator=generator))
            log_prob = log_prob + dist.log_prob(torch.tensor(op))
            entropy = entropy + dist.entropy()
            ops.append(op)
            inputs = self.op_embedding.weight[op : op + 1]
            state = self.lstm(inputs, state)
            if i == 0:
                skips.append(())
                inputs = state[0]
            else:
                query = self.query(state[0])
                logits = self.attend(torch.tanh(torch.cat(anchors) + query)).squeeze(1)  # (i,)
                p = torch.sigmoid(self._squash(logits))
                if arch is not None:
                    bits = torch.tensor(arch.skips[i], dtype=p.dtype)
                else:
                    bits = torch.bernoulli(p.detach(), generator=generator)
                log_p, log_q = torch.log(p + 1e-8), torch.log(1 - p + 1e-8)
                log_prob = log_prob + (bits * log_p + (1 - bits) * log_q).sum()
                entropy = entropy - (p * log_p + (1 - p) * log_q).sum()
                both = torch.stack([p, 1 - p], dim=1)
                skip_kl = skip_kl + (both * torch.log(both / target + 1e-8)).sum()
                skips.append(tuple(int(b) for b in bits.tolist()))
                chosen = torch.cat(anchors)[bits.bool()]
                inputs = chosen.sum(0, keepdim=True) / (1.0 + bits.sum()) if len(chosen) else state[0]
            anchors.append(self.anchor(state[0]))
        sampled = AmberArch(tuple(ops), tuple(skips)) if arch is None else arch
        return Sampled(sampled, log_prob, entropy, skip_kl)

    def sample(self, generator: torch.Generator | None = None) -> AmberArch:
        with torch.no_grad():
            return self(generator=generator).arch


def reinforce_update(
    controller: Controller,
    optimizer: torch.optim.Optimizer,
    archs: Sequence[AmberArch],
    rewards: Sequence[float],
    baseline: float,
) -> dict[str, float]:
    """AMBER's controller training on one episode's buffer: ``train_pi_iter`` passes over the sampled
    architectures in batches of ``batch_size``, each minimising ``-(reward - baseline) * log p(arch)`` plus
    ``skip_weight`` times the skip penalty; the passes stop early once the new policy has moved more than
    ``kl_threshold`` (mean log-probability change) from the one that sampled the buffer. Returns the passes
    run and the last KL."""
    cfg = controller.cfg
    advantages = torch.tensor([r - baseline for r in rewards], dtype=torch.float32)
    with torch.no_grad():
        old = torch.stack([controller(arch=a).log_prob for a in archs])
    passes, kl = 0, 0.0
    for _ in range(cfg.train_pi_iter):
        for start in range(0, len(archs), cfg.batch_size):
            idx = range(start, min(start + cfg.batch_size, len(archs)))
            scored = [controller(arch=archs[i]) for i in idx]
            log_p = torch.stack([s.log_prob for s in scored])
            penalty = torch.stack([s.skip_kl for s in scored]).mean()
            loss = -(advantages[list(idx)] * log_p).mean() + cfg.skip_weight * penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        passes += 1
        with torch.no_grad():
            new = torch.stack([controller(arch=a).log_prob for a in archs])
        kl = float((old - new).mean())
        if kl > cfg.kl_threshold:
            break
    return {"passes": passes, "kl": kl}
