"""MoCo (He et al. 2020) and its v2 head (Chen et al. 2020): a momentum key encoder and a queue.

Algorithm 1 of the MoCo paper, step by step: two augmentations x_q, x_k of each image; the
query q = f_q(x_q) comes from the encoder being trained, the key k = f_k(x_k) from a slowly
moving copy of it; q is contrasted with its own key (the positive) and the K keys of earlier
batches kept in a FIFO queue (the negatives) by InfoNCE; after the optimizer step the key
encoder follows the query encoder, theta_k <- m theta_k + (1 - m) theta_q (Eq. 2), and this
batch's keys replace the oldest ones in the queue.

The queue decouples the number of negatives K from the batch size N, and the momentum
keeps the queued keys consistent with each other: they were all made by nearly the same
encoder.

Shuffling BN on one device. The paper shuffles the batch across GPUs before computing the
keys, so that a query and its positive key get their BatchNorm statistics from different
sub-batches; otherwise the model can pick out the positive from the statistics alone (the
"cheating" of Sec. 3.3). Here, as in the MoCo authors' CIFAR-10 demo (its SplitBatchNorm in
both encoders), both sides use ``bn_splits`` sub-batches: the queries those of the batch as it
comes, the keys those of a shuffled batch, each network run once per sub-batch, and the keys are
put back in order. A query's BN statistics then never hold its positive key's whole sub-batch
(with full-batch BN on the query side they would: they hold every image). Running statistics
are updated once per sub-batch, so they average over the sub-batches.

Under torchrun (`contrastlab.distributed`) this is the paper's shuffling BN across GPUs: the
key views of all ranks are gathered, shuffled by one permutation shared by every rank, rank r
computes the keys of the r-th part of the shuffled batch in ``bn_splits / world_size``
sub-batches (so ``bn_splits`` must be a multiple of the world size), and the keys are gathered
and unshuffled; rank r's queries are its own slice in ``bn_splits / world_size`` sub-batches. With
shuffled BN every BatchNorm of MoCo stays per rank (``local_batchnorm``). The queue receives
the keys of every rank, in the order a single process would enqueue them, so it is the same on
every rank; so is the key encoder, the momentum average of identical query encoders. With
``bn_splits`` dividing the global batch, the queries and keys are those of a single process
with the global batch.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed, losses
from ..models import ProjectionHead
from .base import Method, ema_update


@dataclass
class MoCoConfig:
    """MoCo's hyperparameters; the defaults are those of the MoCo authors' CIFAR-10 demo, scaled for small images."""

    queue_size: int = 4096  # K negatives in the queue (paper: 65536 on ImageNet; 4096 for CIFAR-size data)
    momentum: float = 0.99  # m of the key encoder's EMA (paper: 0.999; 0.99 for short runs on small data)
    temperature: float = 0.1  # tau of InfoNCE (v1: 0.07, v2: 0.2 on ImageNet; 0.1 with K = 4096 on CIFAR-10)
    head: str = "mlp"  # 'mlp' (v2's head, here with BN as in SimCLR), 'linear' (v1's fc) or 'none'
    proj_dim: int = 128  # dimension of q and k, the paper's
    shuffle_bn: bool = True  # keys over shuffled sub-batches (the paper's shuffling BN); False shows the cheat
    bn_splits: int = 4  # sub-batches for the queries' and the keys' BN (the CIFAR demo: 8 of a batch of 512; here 4 of 256)
    symmetric: bool = False  # also use x_k as a query against x_q's key, averaging the two losses


def _check_config(cfg: MoCoConfig) -> None:
    for name in ("queue_size", "bn_splits", "proj_dim"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not 0.0 <= cfg.momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {cfg.momentum!r}")
    if not cfg.temperature > 0:
        raise ValueError(f"temperature must be > 0, got {cfg.temperature!r}")


class MoCo(Method):
    """MoCo: ``forward(views)`` returns ``{"loss": info_nce(q, k, queue), "q": ..., "k": ...}``.

    Modules: ``encoder`` + ``head`` form the query encoder f_q (trained); ``key_encoder`` +
    ``key_head`` form the key encoder f_k (a copy, updated only by the momentum rule).
    Buffers: ``queue`` (K, D) of normalized keys, oldest first at ``queue_ptr``.

    When the queue is updated: in ``forward``, after the loss has been computed from the old
    queue, and only in training mode (an eval-mode forward, say for a validation loss,
    changes nothing). ``fit`` checkpoints after ``on_step_end``, so a checkpoint always holds
    the queue and the key encoder of the same step, and a resumed run continues exactly.
    """

    name = "moco"

    def __init__(self, encoder: nn.Module, config: MoCoConfig | None = None):
        super().__init__(encoder)
        self.config = cfg = config or MoCoConfig()
        _check_config(cfg)
        self.head = ProjectionHead(encoder.out_dim, kind=cfg.head, out_dim=cfg.proj_dim)
        self.key_encoder = copy.deepcopy(encoder)
        self.key_head = copy.deepcopy(self.head)
        for p in self._key_params():
            p.requires_grad = False                   # f_k is not trained by gradients
        d = self.head.out_dim
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_size, d), dim=1))  # (K, D)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next slot to overwrite

    @property
    def local_batchnorm(self) -> tuple[str, ...]:
        """The children whose BatchNorm stays per rank under torchrun; with shuffled BN all of them,
        since each rank normalises its own sub-batches."""
        return ("encoder", "head", "key_encoder", "key_head") if self.config.shuffle_bn else ()

    def _key_params(self):
        yield from self.key_encoder.parameters()
        yield from self.key_head.parameters()

    def _query_params(self):
        yield from self.encoder.parameters()
        yield from self.head.parameters()

    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q (Eq. 2), on parameters only.

        As in the paper's code, BatchNorm buffers are not averaged: the key encoder keeps its own
        running statistics from its own forward passes (in training it normalizes with batch
        statistics, so they are never used).
        """
        ema_update(self._key_params(), self._query_params(), self.config.momentum)

    def _queries(self, x: Tensor) -> Tensor:
        """q = normalize(f_q(x)), with BN over ``bn_splits`` sub-batches of x in order when ``shuffle_bn``."""
        def f_q(x):
            return F.normalize(self.head(self.encoder(x)), dim=1)

        if not (self.config.shuffle_bn and self.training):
            return f_q(x)                             # (N, D)
        splits = self.config.bn_splits // distributed.world_size()   # this rank's share of the sub-batches
        return torch.cat([f_q(c) for c in torch.tensor_split(x, splits)])

    @torch.no_grad()
    def _keys(self, x: Tensor) -> Tensor:
        """k = normalize(f_k(x)), with BN over shuffled sub-batches when ``shuffle_bn``."""
        def f_k(x):
            return F.normalize(self.key_head(self.key_encoder(x)), dim=1)

        if not (self.config.shuffle_bn and self.training):
            return f_k(x)                             # (N, D)
        if distributed.is_distributed():
            return self._keys_across_ranks(x, f_k)
        n = x.shape[0]
        perm = torch.randperm(n, device=x.device)     # shuffle ...
        chunks = torch.tensor_split(x[perm], self.config.bn_splits)
        k = torch.cat([f_k(c) for c in chunks])       # (N, D), BN statistics per sub-batch
        unshuffled = torch.empty_like(k)
        unshuffled[perm] = k                          # ... and unshuffle: row i is image i again
        return unshuffled

    @torch.no_grad()
    def _keys_across_ranks(self, x: Tensor, f_k) -> Tensor:
        """Shuffled BN over the ranks: keys of the global batch in bn_splits sub-batches, this rank's rows back."""
        x_all = distributed.all_gather(x)                                    # (W N, ...) every rank's x_k
        perm = distributed.broadcast(torch.randperm(len(x_all), device=x.device))   # one shuffle for all
        mine = distributed.shard(x_all[perm])                                # (N, ...) r-th part of it
        chunks = torch.tensor_split(mine, self.config.bn_splits // distributed.world_size())
        k_shuffled = distributed.all_gather(torch.cat([f_k(c) for c in chunks]))   # (W N, D)
        k_all = torch.empty_like(k_shuffled)
        k_all[perm] = k_shuffled                                             # unshuffle
        return distributed.shard(k_all)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, k: Tensor) -> None:
        """Write the N keys over the N oldest ones (FIFO), wrapping around the end of the queue."""
        n, size = k.shape[0], self.queue.shape[0]
        slots = (self.queue_ptr + torch.arange(n, device=k.device)) % size   # (N,)
        self.queue[slots] = k.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def _check_batch(self, views: list[Tensor]) -> None:
        if len(views) != 2:
            raise ValueError(f"views must hold 2 augmented batches for MoCo, got {len(views)}")
        cfg, world = self.config, distributed.world_size()
        n = views[0].shape[0] * world                 # the global batch: every rank's keys are enqueued
        if cfg.shuffle_bn and self.training and cfg.bn_splits % world:
            raise ValueError(f"bn_splits must be a multiple of the world size ({world}) for shuffled BN "
                             f"across ranks, got bn_splits={cfg.bn_splits}")
        if cfg.symmetric and cfg.queue_size < 2 * n:
            raise ValueError(f"queue_size must be at least twice the batch size with symmetric=True, "
                             f"got {cfg.queue_size} for a batch of {n}")
        if cfg.queue_size < n:
            raise ValueError(f"queue_size must be at least the batch size, got {cfg.queue_size} for a batch of {n}")
        if cfg.shuffle_bn and self.training and n < 2 * cfg.bn_splits:
            raise ValueError(f"the batch must hold at least 2 images per BN sub-batch, got a batch of {n} "
                             f"for bn_splits={cfg.bn_splits}")

    def forward(self, views: list[Tensor], index: Tensor | None = None,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        self._check_batch(views)
        x_q, x_k = views
        tau = self.config.temperature
        negatives = self.queue.clone().detach()       # (K, D), the keys of earlier batches
        q = self._queries(x_q)                                 # (N, D)
        k = self._keys(x_k)                                    # (N, D), no gradient
        loss = losses.info_nce(q, k, negatives, tau)
        if self.config.symmetric:
            q2 = self._queries(x_k)
            k2 = self._keys(x_q)
            loss = (loss + losses.info_nce(q2, k2, negatives, tau)) / 2
            k = torch.cat([k, k2])                    # (2N, D), all enqueued
        if self.training:
            keys = k.tensor_split(2) if self.config.symmetric else (k,)
            self._dequeue_and_enqueue(torch.cat([distributed.all_gather(part) for part in keys]))  # all ranks'
        return {"loss": loss, "q": q.detach(), "k": k}

    def on_step_end(self, progress: float) -> None:
        self._momentum_update_key_encoder()

    def embed(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))
