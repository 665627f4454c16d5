"""SwAV (Caron et al. 2020): swap the cluster assignments of two views and predict each from the other.

Instead of comparing projections directly, SwAV compares them with K learnable prototypes
C = [c_1 .. c_K] (unit vectors). For each image, the codes q_s of a large view s are computed
online from the scores z_s^T C of the whole batch by a few Sinkhorn-Knopp iterations, which
spread the batch equally over the prototypes (the equal-partition constraint that rules out
the trivial solution). Every other view t of the same image must then predict q_s from its own
scores: the swapped prediction loss of the paper's Eq. (1)-(2),

    l(z_t, q_s) = - sum_k q_s^(k) log softmax(z_t^T C / tau)^(k).

Codes are targets only (no gradient). Two optional parts of the paper are here too:

- multi-crop (``n_small`` > 0): small views (made by `contrastlab.multicrop.MultiCropAugment`)
  predict the codes of both large views; codes are only computed from the large views.
- a queue of past projections (``queue_size`` > 0), one per large view as in the paper's code:
  once a queue is full, its scores are prepended to its view's before Sinkhorn, so the equal
  partition is enforced over more samples than a small batch has. Until then the codes come
  from the batch alone (a mostly empty queue would be old, few and zero-padded).

The prototypes are frozen (their gradient zeroed) during the first ``freeze_prototypes_steps``
optimizer steps, as the paper does during its first epoch.

Under torchrun (`contrastlab.distributed`) Sinkhorn runs over the global batch: its sums over
samples are reduced across ranks, so every rank gets the codes a single process would compute
for its rows. The queues receive the projections of every rank (the same queues on every rank,
in a single process's order), and each rank prepends only its share of a queue's rows to
the Sinkhorn batch, so each queued projection is counted once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed, losses
from .._validate import check_positive
from ..models import ProjectionHead
from .base import Method


@dataclass
class SwAVConfig:
    """SwAV's hyperparameters. Paper (ImageNet) defaults unless noted."""

    n_prototypes: int = 100  # K; the paper's 3000 is for ImageNet, CIFAR-scale setups use about 10x the classes
    proj_dim: int = 128  # output size of the MLP head g, the paper's
    hidden_dim: int | None = None  # hidden width of g; None means the encoder's width (paper: 2048)
    temperature: float = 0.1  # tau of the softmax over prototype scores, the paper's
    epsilon: float = 0.05  # entropy weight of the Sinkhorn codes, the paper's (smaller: sharper codes)
    sinkhorn_iterations: int = 3  # Sinkhorn-Knopp iterations, the paper's
    n_small: int = 0  # small multi-crop views per image (n_views = 2 + n_small); paper: 6; 0 = two views
    queue_size: int = 0  # past projections per large view whose scores join Sinkhorn once full; paper: 3840 for batches < 256; 0 = off
    freeze_prototypes_steps: int = 0  # optimizer steps with frozen prototypes; paper: its first epoch
                                      # (313 steps); about one epoch's steps is a good choice here too

    def __post_init__(self):
        for name in ("n_prototypes", "proj_dim", "sinkhorn_iterations"):
            _check_count(name, getattr(self, name), minimum=1)
        for name in ("n_small", "queue_size", "freeze_prototypes_steps"):
            _check_count(name, getattr(self, name), minimum=0)
        if self.hidden_dim is not None:
            _check_count("hidden_dim", self.hidden_dim, minimum=1)
        check_positive("temperature", self.temperature)
        check_positive("epsilon", self.epsilon)


def _check_count(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


class SwAV(Method):
    """SwAV: ``forward(views)`` returns ``{"loss", "z1", "z2", "codes1", "codes2"}``.

    ``views`` holds the 2 large views first, then ``n_small`` small ones, each (N, C, H, W);
    the large views go through the encoder in one batch of 2N, the small ones in another (their
    size differs). ``z1``, ``z2`` (N, proj_dim) are the large views' unit projections and
    ``codes1``, ``codes2`` (N, K) their Sinkhorn codes, all detached.

    Loss: with q_1, q_2 the codes of the large views and V = 2 + n_small views,

        loss = [swav(s_1, s_2, q_1, q_2) + sum_{small t} swav(s_t, s_t, q_1, q_2)] / (V - 1),

    where ``swav(a, b, q_a, q_b)`` (`contrastlab.losses.swav`) is the two-way swapped prediction
    (b predicts q_a, a predicts q_b). With two views this is exactly ``losses.swav``; with
    multi-crop each large view's codes are predicted by all V - 1 other views and the terms are
    averaged over them, as in the paper's code.

    Buffers (saved in checkpoints): ``steps`` (optimizer steps taken, advanced by
    ``on_step_end``), ``queue`` (2, queue_size, proj_dim): one queue per large view, newest
    first, and ``queue_filled``, the rows filled in each.
    """

    name = "swav"

    def __init__(self, encoder: nn.Module, config: SwAVConfig | None = None):
        super().__init__(encoder)
        self.config = cfg = config or SwAVConfig()
        self.head = ProjectionHead(encoder.out_dim, kind="mlp", out_dim=cfg.proj_dim, hidden_dim=cfg.hidden_dim)
        self.prototypes = nn.Linear(cfg.proj_dim, cfg.n_prototypes, bias=False)   # rows are c_k
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue", torch.zeros(2, cfg.queue_size, cfg.proj_dim))   # one per large view
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        # Freezing must act before the optimizer step, which runs before on_step_end: zero the
        # gradient as it is computed. torch.where on the device keeps the step free of host syncs.
        # Weight decay and momentum then only rescale c_k, which the next normalisation undoes.
        self.prototypes.weight.register_hook(self._freeze_gradient)

    @property
    def n_views(self) -> int:
        return 2 + self.config.n_small

    def _freeze_gradient(self, grad: Tensor) -> Tensor:
        if self.config.freeze_prototypes_steps == 0:
            return grad
        return torch.where(self.steps < self.config.freeze_prototypes_steps, torch.zeros_like(grad), grad)

    @torch.no_grad()
    def _normalize_prototypes(self) -> None:
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1))

    def _project(self, x: Tensor) -> Tensor:
        """z = g(f(x)) / ||g(f(x))||: (M, C, H, W) -> (M, proj_dim)."""
        return F.normalize(self.head(self.encoder(x)), dim=1)

    def _scores(self, z: Tensor) -> Tensor:
        """z^T C in float32 (also under autocast: Sinkhorn exponentiates scores / epsilon)."""
        with torch.autocast(z.device.type, enabled=False):
            return F.linear(z.float(), self.prototypes.weight.float())   # (M, K)

    @torch.no_grad()
    def _codes(self, scores: Tensor, view: int) -> Tensor:
        """Sinkhorn codes of a large view's scores (N, K), its queue's scores prepended once the queue is full."""
        n, size = scores.shape[0], self.config.queue_size
        if size and int(self.queue_filled) == size:   # one host read per step with a queue
            # under torchrun each rank brings its share of the (shared) queue
            scores = torch.cat([self._scores(distributed.shard(self.queue[view])), scores])   # (size + N, K)
        codes = losses.sinkhorn(scores.detach(), self.config.epsilon, self.config.sinkhorn_iterations,
                                gather=True)                                    # over every rank's batch
        return codes[-n:]                                                       # (N, K): the batch's rows

    @torch.no_grad()
    def _enqueue(self, z1: Tensor, z2: Tensor) -> None:
        """FIFO per large view: z_v (M, proj_dim) goes in front of queue v, the oldest rows fall off the end."""
        size = self.config.queue_size
        k = min(z1.shape[0], size)
        new = torch.stack([z1[:k], z2[:k]]).to(self.queue.dtype)                # (2, k, d)
        self.queue.copy_(torch.cat([new, self.queue[:, : size - k]], dim=1))
        self.queue_filled.add_(k).clamp_(max=size)

    def _check_views(self, views) -> None:
        if not isinstance(views, (list, tuple)) or len(views) != self.n_views:
            got = len(views) if isinstance(views, (list, tuple)) else type(views).__name__
            raise ValueError(f"views must hold {self.n_views} augmented batches for SwAV "
                             f"(2 large + n_small={self.config.n_small} small), got {got}")
        if views[0].shape != views[1].shape:
            raise ValueError(f"the two large views must have the same shape, got "
                             f"{tuple(views[0].shape)} and {tuple(views[1].shape)}")
        sizes = [v.shape[0] for v in views]
        if len(set(sizes)) != 1:
            raise ValueError(f"every view must hold the same number of images, got batch sizes {sizes}")
        if any(v.shape[1:] != views[2].shape[1:] for v in views[2:]):
            raise ValueError(f"the small views must all have the same shape, got "
                             f"{[tuple(v.shape) for v in views[2:]]}")

    def forward(self, views: list[Tensor], index: Tensor | None = None,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        self._check_views(views)
        cfg, n = self.config, views[0].shape[0]
        self._normalize_prototypes()
        z_large = self._project(torch.cat(views[:2]))                 # (2N, d)
        s1, s2 = self._scores(z_large).split(n)                        # (N, K) each
        q1, q2 = self._codes(s1, 0), self._codes(s2, 1)                # (N, K), rows sum to 1, no grad
        loss = losses.swav(s1, s2, q1, q2, cfg.temperature)            # large views predict each other
        if cfg.n_small:
            s_small = self._scores(self._project(torch.cat(views[2:]))).split(n)   # n_small x (N, K)
            for s_t in s_small:                                        # small view t predicts q1 and q2
                loss = loss + losses.swav(s_t, s_t, q1, q2, cfg.temperature)
            loss = loss / (self.n_views - 1)
        z_large = z_large.detach()
        z1, z2 = z_large.split(n)
        if self.training and cfg.queue_size:    # every rank's projections, each view into its queue
            self._enqueue(distributed.all_gather(z1), distributed.all_gather(z2))
        return {"loss": loss, "z1": z1, "z2": z2, "codes1": q1, "codes2": q2}

    def on_step_end(self, progress: float) -> None:
        self.steps.add_(1)

    def embed(self, x: Tensor) -> Tensor:
        return self._project(x)
