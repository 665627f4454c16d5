"""The shape every method takes: an encoder f, whatever heads it needs, a loss, and state.

`fit()` calls ``method(views, index=index, labels=labels)`` once per step and reads
``out["loss"]``; after the optimizer step it calls ``method.on_step_end(progress)``, where
stateful methods update their EMA target, queue or memory bank. Everything a method must
carry across a checkpoint (buffers, target networks) lives in its ``state_dict``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Method(nn.Module):
    """Base class: subclasses set ``name``, build their heads and implement ``forward``.

    Attributes:
        encoder: the network f whose output h is the representation that is evaluated.
        n_views: how many augmented views of each image ``forward`` expects.
    """

    name: str = "method"
    n_views: int = 2

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, views: list[Tensor], index: Tensor | None = None,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def on_step_end(self, progress: float) -> None:
        """Called after each optimizer step; ``progress`` is the fraction of training done."""

    def embed(self, x: Tensor) -> Tensor:
        """The projection z of a batch (for h-versus-z evaluation); h for methods without a head."""
        return self.encoder(x)


@torch.no_grad()
def ema_update(target_params, online_params, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter, in place.

    The momentum (EMA) update of MoCo's key encoder and BYOL's target network.
    """
    for p_t, p_o in zip(target_params, online_params):
        p_t.mul_(momentum).add_(p_o.detach(), alpha=1 - momentum)
