"""BYOL (Grill et al. 2020): predict a slowly moving target network's projection; no negatives.

Two networks see two views of each image. The online network (encoder f, projector g,
predictor q) is trained; the target network (f', g') is an exponential moving average of
the online f and g and gets no gradient. For views v, v' the online prediction p = q(g(f(v)))
is regressed onto the target projection z' = g'(f'(v')) with the normalized MSE

    L = || p/||p|| - z'/||z'|| ||^2 = 2 - 2 cos(p, z'),

symmetrized by swapping the views (Sec. 3.1). After each optimizer step
xi <- tau xi + (1 - tau) theta, with tau rising from tau_base to 1 on a cosine schedule
(Sec. 3.2): tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2.

Without negatives nothing in the loss forbids the constant solution; the predictor and the
slow target are what keep the features from collapsing. The switches ``predictor=False``
and ``ema=False`` remove them (the paper's ablations, Table 5), and ``forward`` returns the
feature spread "std" to watch for the collapse: the mean over dimensions of the batch
standard deviation of z/||z||, about 1/sqrt(d) for well spread features and 0 when all
images map to one point. (SimSiam, Chen & He 2021, later found that stop-gradient with a
predictor can be enough when the predictor is trained well; without the predictor it
collapses.)
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import losses
from ..metrics import feature_std
from ..models import ProjectionHead
from .base import Method, ema_update


@dataclass
class BYOLConfig:
    """BYOL's hyperparameters. Paper defaults unless noted."""

    proj_dim: int = 256  # output size of projector and predictor, the paper's
    hidden_dim: int = 512  # hidden width of both MLPs (paper: 4096 on ImageNet; 512 for small images)
    base_momentum: float = 0.996  # tau_base of the target EMA, the paper's; tau rises to 1 over training
    predictor: bool = True  # the predictor q; False removes it (ablation: the features collapse)
    ema: bool = True  # the moving-average target; False makes the target a stop-gradient copy of the online net


def target_momentum(base_momentum: float, progress: float) -> float:
    """tau = 1 - (1 - tau_base) (cos(pi progress) + 1) / 2: tau_base at the start, 1 at the end."""
    return 1 - (1 - base_momentum) * (math.cos(math.pi * progress) + 1) / 2


class BYOL(Method):
    """BYOL: ``forward(views)`` returns ``{"loss", "std", "z1", "z2"}``.

    Modules: ``encoder``, ``projector``, ``predictor`` (the online network; ``predictor`` is the
    identity when the config removes it) and ``target_encoder``, ``target_projector`` (no
    gradient). Both views go through each network as one batch of 2N, so BN sees all 2N
    views, as in this book's SimCLR.
    """

    name = "byol"

    def __init__(self, encoder: nn.Module, config: BYOLConfig | None = None):
        super().__init__(encoder)
        self.config = cfg = config or BYOLConfig()
        if not 0.0 <= cfg.base_momentum <= 1.0:
            raise ValueError(f"base_momentum must be in [0, 1], got {cfg.base_momentum!r}")
        self.projector = ProjectionHead(encoder.out_dim, "mlp", out_dim=cfg.proj_dim, hidden_dim=cfg.hidden_dim)
        self.predictor = (ProjectionHead(cfg.proj_dim, "mlp", out_dim=cfg.proj_dim, hidden_dim=cfg.hidden_dim)
                          if cfg.predictor else nn.Identity())
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self._target_params():
            p.requires_grad = False

    def _online_params(self):
        yield from self.encoder.parameters()
        yield from self.projector.parameters()

    def _target_params(self):
        yield from self.target_encoder.parameters()
        yield from self.target_projector.parameters()

    @torch.no_grad()
    def _update_target(self, tau: float) -> None:
        """xi <- tau xi + (1 - tau) theta on parameters (BN buffers stay the target's own)."""
        ema_update(self._target_params(), self._online_params(), tau)

    @torch.no_grad()
    def _copy_online_to_target(self) -> None:
        """ema=False: the target becomes the online network, parameters and buffers."""
        self.target_encoder.load_state_dict(self.encoder.state_dict())
        self.target_projector.load_state_dict(self.projector.state_dict())

    def forward(self, views: list[Tensor], index: Tensor | None = None,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        if len(views) != 2:
            raise ValueError(f"views must hold 2 augmented batches for BYOL, got {len(views)}")
        n = views[0].shape[0]
        x = torch.cat(views)                                     # (2N, C, H, W)
        z = self.projector(self.encoder(x))                      # (2N, d) online projections
        p = self.predictor(z)                                    # (2N, d) predictions
        with torch.no_grad():
            z_t = self.target_projector(self.target_encoder(x))  # (2N, d) target projections
        p1, p2 = p[:n], p[n:]
        z1_t, z2_t = z_t[:n].detach(), z_t[n:].detach()
        loss = losses.byol(p1, z2_t) + losses.byol(p2, z1_t)    # each view predicts the other's target
        return {"loss": loss, "std": feature_std(z.detach()), "z1": z[:n].detach(), "z2": z[n:].detach()}

    def on_step_end(self, progress: float) -> None:
        if self.config.ema:
            self._update_target(target_momentum(self.config.base_momentum, progress))
        else:
            self._copy_online_to_target()

    def embed(self, x: Tensor) -> Tensor:
        return self.projector(self.encoder(x))
