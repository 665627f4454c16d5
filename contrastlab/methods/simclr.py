"""SimCLR (Chen et al. 2020): two views per image, one encoder, an MLP head, NT-Xent.

Algorithm 1 of the paper, step by step: draw two augmentations t, t' per image (done by
`contrastlab.augment.SimCLRAugment` before this module), h = f(x~), z = g(h) for the 2N
views, and minimise NT-Xent over the 2N projections, each view's positive being the other
view of the same image and its negatives the other 2N - 2 views.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import losses
from ..models import ProjectionHead
from .base import Method


@dataclass
class SimCLRConfig:
    """SimCLR's hyperparameters. Paper defaults unless noted."""

    temperature: float = 0.5  # tau in NT-Xent; the paper's CIFAR-10 value (0.1 on ImageNet with batch 4096)
    head: str = "mlp"  # projection head g: 'mlp' (the paper's), 'linear' or 'none' (section 4.2 ablation)
    proj_dim: int = 128  # output size of g, the paper's
    hidden_dim: int | None = None  # hidden width of the MLP head; None means the encoder's width, as in the paper


class SimCLR(Method):
    """SimCLR: ``forward(views)`` returns ``{"loss": nt_xent(z1, z2), "z1": ..., "z2": ...}``.

    Both views go through the encoder in one batch of 2N, so BatchNorm sees the statistics of
    all 2N views, which matches the paper's global BN on a single device.
    """

    name = "simclr"

    def __init__(self, encoder: nn.Module, config: SimCLRConfig | None = None):
        super().__init__(encoder)
        self.config = config or SimCLRConfig()
        self.head = ProjectionHead(encoder.out_dim, kind=self.config.head,
                                   out_dim=self.config.proj_dim, hidden_dim=self.config.hidden_dim)

    def forward(self, views: list[Tensor], index: Tensor | None = None,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        if len(views) != 2:
            raise ValueError(f"views must hold 2 augmented batches for SimCLR, got {len(views)}")
        n = views[0].shape[0]
        h = self.encoder(torch.cat(views))          # (2N, D)
        z = self.head(h)                            # (2N, d)
        z1, z2 = z[:n], z[n:]
        loss = losses.nt_xent(z1, z2, self.config.temperature)
        return {"loss": loss, "z1": z1.detach(), "z2": z2.detach()}

    def embed(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))
