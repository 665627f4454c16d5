"""Supervised contrastive learning (Khosla et al. 2020) and its cross-entropy baseline.

"Supervised Contrastive Learning", NeurIPS 2020. The SimCLR pipeline with labels: two views
per image, h = f(x~), z = normalize(g(h)), and a contrastive loss in which *every* view of the
same class is a positive of the anchor, not only the other view of the same image. The paper's
preferred form averages the log-probabilities over the positives outside the log (L_out, Eq. 2);
L_in (Eq. 3) averages the probabilities inside it. With one image per class (labels all
different) both reduce to SimCLR's NT-Xent. After pre-training the paper freezes f and trains a
linear classifier on h.

`Supervised` is the baseline the paper compares against: the same encoder and augmentations, a
linear classifier on h and cross-entropy on the labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import losses
from .._validate import check_choice
from ..models import ProjectionHead
from .base import Method


def _require_labels(labels: Tensor | None, name: str) -> Tensor:
    if labels is None:
        raise ValueError(f"labels are required: {name} is supervised; pass labels to fit()")
    return labels


@dataclass
class SupConConfig:
    """SupCon's hyperparameters. Paper defaults unless noted."""

    temperature: float = 0.1  # tau, the paper's
    variant: str = "out"  # 'out' (L_out, the paper's choice: mean of log-probabilities) or 'in' (log of the mean)
    head: str = "mlp"  # projection head g: 'mlp' (the paper's), 'linear' or 'none'
    proj_dim: int = 128  # output size of g, the paper's


class SupCon(Method):
    """Supervised contrastive: ``forward(views, labels=y)`` -> ``{"loss", "z"}`` with z (N, V, D) unit rows."""

    name = "supcon"
    n_views = 2

    def __init__(self, encoder: nn.Module, config: SupConConfig | None = None):
        super().__init__(encoder)
        self.config = config or SupConConfig()
        check_choice("variant", self.config.variant, ("out", "in"))
        self.head = ProjectionHead(encoder.out_dim, kind=self.config.head, out_dim=self.config.proj_dim)

    def forward(self, views: list[Tensor], index: Tensor | None = None,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        labels = _require_labels(labels, "SupCon")
        n, v = views[0].shape[0], len(views)
        h = self.encoder(torch.cat(views))                      # (V*N, D_h), view-major
        z = F.normalize(self.head(h).float(), dim=1)            # (V*N, D)
        z = z.view(v, n, -1).transpose(0, 1)                    # (N, V, D): z[k, j] is view j of image k
        loss = losses.supcon(z, labels, temperature=self.config.temperature, variant=self.config.variant,
                             gather=True)                       # under torchrun: every rank's views and labels
        return {"loss": loss, "z": z.detach()}

    def embed(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.encoder(x)), dim=1)


@dataclass
class SupervisedConfig:
    """The cross-entropy baseline's hyperparameters."""

    label_smoothing: float = 0.0  # epsilon of label smoothing; 0 is plain cross-entropy
    num_classes: int = 10  # C, classes of the training labels (10 for Fashion-MNIST, CIFAR-10, digits)
    feature_dim: int = 0  # > 0: classify unit-length features of this size (a linear map of h), e.g. 2 to plot them on the circle


class Supervised(Method):
    """Cross-entropy baseline: a linear classifier on h; ``forward`` -> ``{"loss", "acc"}`` (batch accuracy).

    With ``feature_dim`` = d > 0 the classifier reads unit vectors u = W h / ||W h|| of size d
    instead, the supervised encoder of Wang & Isola's (2020) circle figure when d = 2.
    """

    name = "supervised"
    n_views = 1

    def __init__(self, encoder: nn.Module, config: SupervisedConfig | None = None):
        super().__init__(encoder)
        self.config = config or SupervisedConfig()
        if not 0.0 <= self.config.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.config.label_smoothing!r}")
        if self.config.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.config.num_classes!r}")
        if isinstance(self.config.feature_dim, bool) or not isinstance(self.config.feature_dim, int) \
                or self.config.feature_dim < 0:
            raise ValueError(f"feature_dim must be an int >= 0 (0: classify h itself), got {self.config.feature_dim!r}")
        width = self.config.feature_dim or encoder.out_dim
        self.bottleneck = nn.Linear(encoder.out_dim, width) if self.config.feature_dim else None
        self.classifier = nn.Linear(width, self.config.num_classes)

    def forward(self, views: list[Tensor], index: Tensor | None = None,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        labels = _require_labels(labels, "Supervised")
        if len(views) != 1:
            raise ValueError(f"views must hold 1 augmented batch for Supervised, got {len(views)}")
        logits = self.classifier(self.embed(views[0])).float()       # (N, C)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing)
        acc = (logits.detach().argmax(1) == labels).float().mean()   # stays on the device
        return {"loss": loss, "acc": acc}

    def embed(self, x: Tensor) -> Tensor:
        """The features the classifier reads: h, or with ``feature_dim`` its unit-length linear map."""
        h = self.encoder(x)
        return h if self.bottleneck is None else F.normalize(self.bottleneck(h), dim=1)
