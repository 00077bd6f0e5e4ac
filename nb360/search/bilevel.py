"""Bilevel architecture search as a hook of the one training loop (nb360.md 3.3, 3.4).

:func:`nb360.train.fit` trains a supernet's weights on one part of the training data; :class:`ArchStep`
updates its architecture parameters before each weight step on a batch from the other part, once the
warm-up epochs are over. The update rules:

* ``"eg"``: GAEA's exponentiated gradient on the simplex, ``a <- a * exp(-lr * grad)`` then renormalised
  (the supernet must use ``arch_norm="simplex"``);
* ``"adam"``: first-order DARTS (Adam on the architecture logits, betas (0.5, 0.999), weight decay 1e-3);
  DenseNAS uses the same optimiser with its own learning rate;
* ``"darts2"``: second-order DARTS, the gradient through one virtual weight step
  ``w' = w - xi * grad_w L_train(w, a)`` with the Hessian-vector product by finite differences.

An ``objective`` turns the architecture batch's task loss into the loss the architecture minimises
(DenseNAS adds its FLOPs term there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call

from nb360.data.loader import make_loader
from nb360.train.loop import FitHook, FitState

ArchUpdate = Literal["eg", "adam", "darts2"]
Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class ExpGrad(torch.optim.Optimizer):
    """Exponentiated-gradient descent on the probability simplex (GAEA; Li et al. 2021).

    Each parameter is a stack of distributions along its last dimension (one row per supernet edge; a
    1-D parameter is one vector): ``p <- p * exp(-lr * grad)``, then every row renormalised to sum 1.
    """

    def __init__(self, params: Any, lr: float = 0.1) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.mul_(torch.exp(-group["lr"] * p.grad))
                p.div_(p.sum(dim=-1, keepdim=True))
        return loss


class ArchStep(FitHook):
    """Architecture updates of a bilevel search, run by :func:`nb360.train.fit` before each weight step.

    The weights train on ``cfg.fit_subset`` of the fit data (set it to the complement of ``subset``);
    architecture batches come from ``subset`` (default: the second half, as DARTS and GAEA).
    ``warmup_epochs``: no architecture update before this epoch (GAEA and DenseNAS: 10 of 50/70).
    ``every``: one architecture step per this many weight steps (DenseNAS: 1 per 4).
    ``forward_kwargs``: passed to the model's forward on architecture batches (DenseNAS: the full mixture,
    ``sample_ops=False``, where its weight steps sample one op per layer).
    """

    def __init__(
        self,
        update: ArchUpdate,
        lr: float,
        *,
        warmup_epochs: int = 0,
        subset: tuple[float, float] = (0.5, 1.0),
        batch_size: int | None = None,
        weight_decay: float = 1e-3,
        objective: Objective | None = None,
        xi: float | None = None,
        every: int = 1,
        forward_kwargs: Mapping[str, Any] | None = None,
        betas: tuple[float, float] = (0.5, 0.999),
    ) -> None:
        if update not in ("eg", "adam", "darts2"):
            raise ValueError(f"update must be 'eg', 'adam' or 'darts2', not {update!r}")
        self.update, self.lr, self.warmup_epochs = update, lr, warmup_epochs
        self.subset, self.batch_size, self.weight_decay = subset, batch_size, weight_decay
        self.objective, self.xi, self.every = objective, xi, every
        self.forward_kwargs = dict(forward_kwargs or {})
        self.betas = betas  # Adam's (DARTS: 0.5, 0.999; Auto-DeepLab: 0.9, 0.999)
        self.updates = 0  # architecture steps taken (logged in each epoch's record)

    def setup(self, state: FitState) -> None:
        self.state = state
        model = state.model
        if not hasattr(model, "arch_parameters"):
            raise TypeError(f"{type(model).__name__} has no arch_parameters(): it is not a supernet")
        self.arch_params: list[nn.Parameter] = list(model.arch_parameters())
        if self.update == "eg":
            if getattr(model, "arch_norm", "simplex") != "simplex":
                raise ValueError("exponentiated-gradient updates need a supernet with arch_norm='simplex'")
            self.optimizer: torch.optim.Optimizer = ExpGrad(self.arch_params, lr=self.lr)
        else:
            self.optimizer = torch.optim.Adam(
                self.arch_params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay
            )
        cfg = state.cfg
        self.loader = make_loader(
            state.manifest,
            state.fit_splits,
            self.batch_size or cfg.batch_size,
            train=True,
            seed=state.seed + 7919,  # its own stream, independent of the weight batches
            fit_splits=state.fit_splits,
            subset=self.subset,
        )
        self._epoch, self._passes, self._it = 0, 0, iter(())

    def epoch_start(self, epoch: int) -> None:
        # Arch batches are a function of (epoch, pass): a resumed run draws the same ones.
        self._epoch, self._passes, self._it = epoch, 0, iter(())

    def _next_batch(self) -> dict[str, torch.Tensor]:
        batch = next(self._it, None)
        if batch is None:
            self.loader.sampler.set_epoch(self._epoch * 1000 + self._passes)
            self._passes += 1
            self._it = iter(self.loader)
            batch = next(self._it)
        return self.state.accel.batch(batch)

    def _loss(
        self, batch: Mapping[str, torch.Tensor], params: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        model, accel = self.state.model, self.state.accel
        with accel.autocast():
            out = (
                model(batch["x"], **self.forward_kwargs)
                if params is None
                else functional_call(model, params, (batch["x"],), self.forward_kwargs)
            )
        loss = self.state.loss_fn(out.float(), batch)
        return self.objective(model, loss) if self.objective is not None else loss

    def before_step(self, epoch: int, step: int, batch: Mapping[str, torch.Tensor]) -> None:
        if epoch < self.warmup_epochs or step % self.every:
            return
        arch_batch = self._next_batch()
        if self.update == "darts2":
            grads = self._second_order_grads(batch, arch_batch)
        else:
            grads = torch.autograd.grad(self._loss(arch_batch), self.arch_params)
        for p, g in zip(self.arch_params, grads, strict=True):
            p.grad = g.detach()
        self.optimizer.step()
        for p in self.arch_params:
            p.grad = None
        self.updates += 1

    def _second_order_grads(
        self, batch: Mapping[str, torch.Tensor], arch_batch: Mapping[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        """DARTS' unrolled gradient (Liu et al. 2019, eq. 7-8), momentum left out of the virtual step."""
        model = self.state.model
        xi = self.xi if self.xi is not None else self.state.cfg.lr
        arch_ids = {id(p) for p in self.arch_params}
        names = [n for n, p in model.named_parameters() if id(p) not in arch_ids]
        weights = [p for n, p in model.named_parameters() if id(p) not in arch_ids]
        wd = self.state.cfg.weight_decay
        g_train = torch.autograd.grad(self.state.loss_fn(model(batch["x"]).float(), batch), weights)
        w_virtual = [
            (w - xi * (g + wd * w)).detach().requires_grad_() for w, g in zip(weights, g_train, strict=True)
        ]
        loss_val = self._loss(arch_batch, dict(zip(names, w_virtual, strict=True)))
        grads = torch.autograd.grad(loss_val, self.arch_params + w_virtual)
        g_arch, v = grads[: len(self.arch_params)], grads[len(self.arch_params) :]
        eps = 0.01 / torch.cat([x.flatten() for x in v]).norm().clamp_min(1e-12)

        def arch_grad_at(sign: float) -> tuple[torch.Tensor, ...]:
            shifted = {n: (w + sign * eps * d).detach() for n, w, d in zip(names, weights, v, strict=True)}
            out = functional_call(model, shifted, (batch["x"],))
            return torch.autograd.grad(self.state.loss_fn(out.float(), batch), self.arch_params)

        plus, minus = arch_grad_at(1.0), arch_grad_at(-1.0)
        return [g - xi * (p - m) / (2 * eps) for g, p, m in zip(g_arch, plus, minus, strict=True)]

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        record["arch_updates"] = self.updates
        genotype = getattr(self.state.model, "genotype", None)
        if callable(genotype):
            record["genotype"] = genotype().to_json()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
