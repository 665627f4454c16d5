"""Alignment and uniformity as the objective (Wang & Isola 2020, Sec. 5).

"Understanding Contrastive Representation Learning through Alignment and Uniformity on the
Hypersphere", ICML 2020. The paper shows that the contrastive loss, for many negatives,
optimises two properties of normalised features: positive pairs close together (alignment)
and all features spread evenly over the sphere (uniformity). It then trains on the two
properties directly:

    L = L_align(alpha) + lambda * (L_uniform(t)(z1) + L_uniform(t)(z2)) / 2,

with L_align = E ||z1_i - z2_i||^alpha over positive pairs and L_uniform = log E_{i<j}
exp(-t ||z_i - z_j||^2) over the batch, both on z/||z||. The paper's defaults alpha = 2,
t = 2 and lambda = 1 worked well across its datasets. No temperature and no explicit
negatives: the uniformity term plays their part.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import metrics
from .._validate import check_positive
from ..models import ProjectionHead
from .base import Method


@dataclass
class AlignUniformConfig:
    """Hyperparameters of the alignment + uniformity objective. Paper defaults unless noted."""

    alpha: float = 2.0  # exponent of the alignment distance, the paper's
    t: float = 2.0  # scale of the Gaussian potential in the uniformity term, the paper's
    lam: float = 1.0  # lambda, the weight of uniformity against alignment, the paper's
    head: str = "mlp"  # head g before normalisation: 'mlp' (as SimCLR, for comparability), 'linear' or 'none'
    proj_dim: int = 128  # dimension of z, the paper's feature size for CIFAR-10 / STL-10

    def __post_init__(self):
        for name in ("alpha", "t"):
            check_positive(name, getattr(self, name))
        check_positive("lam", self.lam, allow_zero=True)


def align_uniform_terms(z1: Tensor, z2: Tensor, alpha: float = 2.0, t: float = 2.0) -> tuple[Tensor, Tensor]:
    """(L_align(z1, z2), mean of L_uniform(z1) and L_uniform(z2)) on L2-normalised rows, in float32.

    z1, z2: (N, D) projections of two views, row i of each a positive pair, N >= 2.
    """
    with torch.autocast(device_type=z1.device.type, enabled=False):
        u1, u2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
        return metrics.alignment(u1, u2, alpha), (metrics.uniformity(u1, t) + metrics.uniformity(u2, t)) / 2


class AlignUniform(Method):
    """Trains on alignment + uniformity: ``forward(views)`` -> ``{"loss", "align", "uniform"}``."""

    name = "align_uniform"

    def __init__(self, encoder: nn.Module, config: AlignUniformConfig | None = None):
        super().__init__(encoder)
        self.config = config or AlignUniformConfig()
        self.head = ProjectionHead(encoder.out_dim, kind=self.config.head, out_dim=self.config.proj_dim)

    def forward(self, views: list[Tensor], index: Tensor | None = None,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        if len(views) != 2:
            raise ValueError(f"views must hold 2 augmented batches for AlignUniform, got {len(views)}")
        n = views[0].shape[0]
        z = self.head(self.encoder(torch.cat(views)))     # (2N, d), one BN batch as in SimCLR
        align, uniform = align_uniform_terms(z[:n], z[n:], self.config.alpha, self.config.t)
        return {"loss": align + self.config.lam * uniform, "align": align.detach(), "uniform": uniform.detach()}

    def embed(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.encoder(x)), dim=1)
