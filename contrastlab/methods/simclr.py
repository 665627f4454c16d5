"""SimCLR (Chen et al. 2020): two views per image, one encoder, an MLP head, NT-Xent.

Algorithm 1 of the paper, step by step: draw two augmentations t, t' per image (done by
`contrastlab.augment.SimCLRAugment` before this module), h = f(x~), z = g(h) for the 2N
views, and minimise NT-Xent over the 2N projections, each view's positive being the other
view of the same image and its negatives the other 2N - 2 views.

The paper's loss comparison (Table 2) and its l2-norm/temperature table (Table 5) are config
switches: ``loss`` picks NT-Xent, NT-Logistic or the margin triplet loss, ``semi_hard`` turns
on semi-hard negative mining for the latter two, ``normalize=False`` drops the l2
normalisation (dot products instead of cosines).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import losses
from .._validate import check_choice
from ..models import ProjectionHead
from .base import Method


@dataclass
class SimCLRConfig:
    """SimCLR's hyperparameters. Paper defaults unless noted."""

    temperature: float = 0.5  # tau in NT-Xent; the paper's CIFAR-10 value (0.1 on ImageNet with batch 4096)
    head: str = "mlp"  # projection head g: 'mlp' (the paper's), 'linear' or 'none' (section 4.2 ablation)
    proj_dim: int = 128  # output size of g, the paper's
    hidden_dim: int | None = None  # hidden width of the MLP head; None means the encoder's width, as in the paper
    loss: str = "nt_xent"  # 'nt_xent' (the paper's), 'nt_logistic' or 'margin_triplet' (Table 2's comparison)
    normalize: bool = True  # l2-normalise z before the similarities (the paper's); False: dot products (Table 5)
    semi_hard: bool = False  # semi-hard negative mining for nt_logistic and margin_triplet (Table 2 "sh")
    margin: float = 1.0  # m of margin_triplet, on the cosine scale [-1, 1]

    def __post_init__(self):
        check_choice("loss", self.loss, LOSSES)
        if self.semi_hard and self.loss == "nt_xent":
            raise ValueError("semi_hard applies to loss='nt_logistic' or 'margin_triplet' (as in the paper's "
                             "Table 2), got loss='nt_xent'")


LOSSES = ("nt_xent", "nt_logistic", "margin_triplet")


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
        loss = self.loss(z1, z2)
        return {"loss": loss, "z1": z1.detach(), "z2": z2.detach()}

    def loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        """The configured loss of the two views' projections, each (N, d)."""
        cfg = self.config
        if cfg.loss == "nt_xent":   # gather: under torchrun, the negatives of every rank (no-op in one process)
            return losses.nt_xent(z1, z2, cfg.temperature, normalize=cfg.normalize, gather=True)
        if cfg.loss == "nt_logistic":
            return losses.nt_logistic(z1, z2, cfg.temperature, cfg.semi_hard, normalize=cfg.normalize, gather=True)
        return losses.margin_triplet(z1, z2, cfg.margin, cfg.semi_hard, normalize=cfg.normalize, gather=True)

    def embed(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))
