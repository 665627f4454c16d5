"""Optimizers and learning-rate schedules used by `contrastlab.train.fit`.

* `LARS`: layer-wise adaptive rate scaling (You et al. 2017), the optimizer SimCLR trains
  with at large batch sizes (Chen et al. 2020, section B.1).
* `build_optimizer`: SGD, Adam or LARS over a model, with weight decay (and LARS's
  adaptation) applied to weight matrices and convolution kernels only, not to biases or
  BatchNorm parameters, as SimCLR does.
* `warmup_cosine`: linear warmup then cosine decay, as a pure function of the step, so a
  resumed run lands on exactly the same learning rate.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._validate import check_choice, check_positive

OPTIMIZERS = ("sgd", "adam", "lars")


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each parameter tensor is rescaled by a trust ratio.

    For a parameter w with gradient g (weight decay folded in, g <- g + wd * w), the local
    learning rate is ``eta * ||w|| / ||g||`` (1 when either norm is zero), and the update is
    ``v <- momentum * v + lr * ratio * g; w <- w - v``. Groups with ``adapt=False`` (biases,
    BatchNorm) take plain momentum SGD steps without weight decay.

    Args:
        params: parameters or parameter groups; a group may set ``adapt`` and ``weight_decay``.
        lr: learning rate.
        momentum: momentum coefficient.
        weight_decay: L2 penalty folded into the gradient of adapted groups.
        eta: trust coefficient (0.001 in You et al. and SimCLR).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001):
        check_positive("lr", lr)
        check_positive("momentum", momentum, allow_zero=True)
        check_positive("weight_decay", weight_decay, allow_zero=True)
        check_positive("eta", eta)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta,
                                  "adapt": True})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                if group["adapt"]:
                    if group["weight_decay"] > 0:
                        g = g.add(w, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(g)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g * ratio                      # no host sync: the ratio stays a tensor
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(w)
                v = state["momentum_buffer"]
                v.mul_(group["momentum"]).add_(g, alpha=group["lr"])
                w.sub_(v)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters into a decayed group (matrices, kernels) and an undecayed one (biases, norms)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "adapt": True},
            {"params": no_decay, "weight_decay": 0.0, "adapt": False}]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """Make the optimizer ``name`` ('sgd', 'adam' or 'lars') over ``model``'s trainable parameters."""
    check_choice("optimizer", name, OPTIMIZERS)
    check_positive("lr", lr)
    groups = param_groups(model, weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    for g in groups:
        g.pop("adapt")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    return torch.optim.AdamW(groups, lr=lr)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float,
                  final_lr: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based): linear warmup to ``base_lr``, then cosine to ``final_lr``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * progress))
