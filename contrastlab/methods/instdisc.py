"""Instance discrimination (Wu et al. 2018): every training image is its own class.

"Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018. One
view per image goes through the encoder f and a linear layer to a unit vector v = f(x) (128-d).
Instead of a weight vector per class, the classifier compares v with a *memory bank*
V = {v_1, ..., v_n} holding one unit vector per training image (the feature it had when it was
last seen). The non-parametric softmax (Sec. 3.1)

    P(i | v) = exp(v_i^T v / tau) / sum_j exp(v_j^T v / tau)

is trained with cross-entropy on the image's own index i. With n images the denominator costs
n dot products, so the paper approximates it with noise-contrastive estimation (Sec. 3.2): M rows drawn uniformly from
the bank (P_n = 1/n) act as noise, the partition function Z is replaced by a constant
estimated once, and each sample solves a binary "data or noise" task:

    P(D=1 | i, v) = P(i|v) / (P(i|v) + M P_n(i)),
    L_NCE = -log P(D=1 | i, v) - sum_{noise j} log(1 - P(D=1 | j, v))     (per sample, batch-averaged)

(the book's notation, book/notation.md; the paper writes h(i, v) for P(D=1 | i, v), J_NCE for the
loss and m for both the noise count M and the bank momentum mu).

After each optimizer step the bank rows of the batch move towards the new features,
v_i <- normalize(mu v_i + (1 - mu) f_i) (`on_step_end`). The optional proximal term
lambda * ||v^(t) - v_i^(t-1)||^2 (Sec. 3.3) pulls the new feature towards its bank row.

Note on the noise: the paper draws M noise rows per sample; here one set of M rows is drawn
per batch and shared by its N samples (under torchrun: drawn by rank 0 and shared by every
rank's samples). Each sample's noise is still i.i.d. uniform over the
bank, so the loss has the same expectation, and it costs an (N, M) matrix product instead of a
gather of N * M rows.

Deviations from the paper, for short runs (measured on 16k Fashion-MNIST images, small CNN,
6 epochs of Adam; kNN 0.725 at random init). A bank row is the only positive, and it was
written one epoch earlier by an encoder that has moved since:

- ``bank_init='first_pass'`` (default): the paper's code starts from random rows, so the first
  epoch trains every image towards a random vector while the rows already visited, which hold
  half a current feature, are its hardest negatives (the exact loss sat above log n and the kNN
  monitor fell from 0.63 to 0.45 in that epoch). Here a row enters the loss only once its image
  has written a feature to it (the first write copies the feature), so the first epoch fills the
  bank with the initial encoder's features and trains nothing. ``'random'`` is the paper's.
- ``z_momentum=0.99`` (default): Z is a running average of the per-batch estimate instead of the
  value of the first batch. Estimated against the random (or just filled) bank, that value is
  soon too small as the features gather, every noise row then looks like data (h -> 1) and the
  NCE loss diverges (tau 0.07: 73 -> 376 in 5 epochs). ``z_momentum=1`` is the paper's.
- ``head='mlp'`` (fast budgets): behind the paper's linear head the unit features sit in a
  narrow cone (h is a ReLU output; mean cosine to the bank 0.58 in the second epoch, 0.30 with
  the MLP head), where small moves of the common direction outweigh what tells images apart;
  the BN of SimCLR's MLP head centres them. kNN after 6 epochs, exact softmax, tau 0.2: 0.705
  with the linear head, 0.758 with the MLP head; with NCE and a running Z 0.764 (fixed Z: 0.707).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from .._validate import check_choice, check_positive, check_tensor
from ..models import ProjectionHead
from .base import Method

# ----------------------------------------------------------------------------- pure losses

def nonparametric_softmax_loss(v: Tensor, bank: Tensor, index: Tensor, temperature: float,
                               reduction: str = "mean") -> Tensor:
    """Cross-entropy of the exact non-parametric softmax over the whole bank (Wu et al. 2018, Sec. 3.1).

    Args:
        v: unit features of the batch, (N, D).
        bank: memory bank, (n, D) unit rows; row ``index[k]`` is sample k's positive.
        index: (N,) int64 rows of the batch's images in the bank.
        temperature: tau.
        reduction: 'mean' over the batch, or 'none' for the (N,) per-sample losses.

    Returns:
        mean over the batch of -log P(index_k | v_k), a scalar (or the (N,) terms).
    """
    logits = v @ bank.T / temperature                  # (N, n) v_j^T v / tau
    return F.cross_entropy(logits, index, reduction=reduction)


def nce_loss(v: Tensor, bank: Tensor, index: Tensor, noise: Tensor, temperature: float,
             log_Z: Tensor | float, reduction: str = "mean") -> Tensor:
    """NCE loss of instance discrimination (Wu et al. 2018, Sec. 3.2) with uniform noise P_n = 1/n.

    P(i|v) = exp(v_i^T v / tau) / Z with a constant Z; P(D=1 | i, v) = P / (P + M/n), written h below.
    Logs are computed as log h = log P - logaddexp(log P, log(M/n)) and
    log(1 - h) = log(M/n) - logaddexp(...), which
    stays finite for any similarity.

    Args:
        v: unit features of the batch, (N, D).
        bank: memory bank, (n, D).
        index: (N,) rows of the positives (the batch's own images).
        noise: (M,) rows drawn from P_n, shared by every sample of the batch.
        temperature: tau.
        log_Z: log of the normalising constant Z (a number or 0-d tensor).
        reduction: 'mean' over the batch, or 'none' for the (N,) per-sample losses.

    Returns:
        mean over the batch of -log h(pos) - sum_{M noise} log(1 - h(noise)), a scalar (or the (N,) terms).
    """
    n, noise_count = bank.shape[0], noise.shape[0]
    log_mpn = math.log(noise_count / n)                # log(M * P_n)
    log_p_pos = (v * bank[index]).sum(1) / temperature - log_Z      # (N,)
    log_p_noise = v @ bank[noise].T / temperature - log_Z           # (N, M)
    log_h_pos = log_p_pos - torch.logaddexp(log_p_pos, torch.tensor(log_mpn, device=v.device))
    log_1mh_noise = log_mpn - torch.logaddexp(log_p_noise, torch.tensor(log_mpn, device=v.device))
    per_sample = -(log_h_pos + log_1mh_noise.sum(1))
    return per_sample.mean() if reduction == "mean" else per_sample


def estimate_log_partition(v: Tensor, bank: Tensor, noise: Tensor, temperature: float, *,
                           gather: bool = False) -> Tensor:
    """log Z for the Monte-Carlo estimate Z ~ n E_j[exp(v_j^T v / tau)] (Wu et al. 2018, Sec. 3.2).

    The mean runs over the M noise rows and the N samples of the batch; computed with logsumexp
    so that a small tau (exp(1/0.01) overflows float32) stays finite. With ``gather`` in a
    multi-process run it runs over the samples of every rank (one estimate, the same on all).

    Returns:
        a detached 0-d tensor: the estimate from this batch (see `running_log_partition`).
    """
    sims = v.detach() @ bank[noise].T / temperature    # (N, M)
    if gather and distributed.is_distributed():       # the mean over every rank's samples
        count = sims.numel() * distributed.world_size()
        return math.log(bank.shape[0]) + distributed.all_logsumexp(sims.flatten(), 0) - math.log(count)
    return math.log(bank.shape[0]) + torch.logsumexp(sims.flatten(), 0) - math.log(sims.numel())


def running_log_partition(log_Z: Tensor, estimate: Tensor, momentum: float) -> Tensor:
    """log of the running estimate Z <- beta Z + (1 - beta) Z_batch, in log space; no host sync.

    The first estimate (``log_Z`` nan) is taken as it is. ``momentum`` beta = 1 keeps that first
    estimate for good (the paper: Z from the first iterations, then fixed); beta = 0 uses each
    batch's own estimate.
    """
    if momentum == 1.0:
        mixed = log_Z
    elif momentum == 0.0:
        mixed = estimate
    else:
        mixed = torch.logaddexp(log_Z + math.log(momentum), estimate + math.log1p(-momentum))
    return torch.where(log_Z.isnan(), estimate, mixed)


# ----------------------------------------------------------------------------- the method

@dataclass
class InstDiscConfig:
    """Instance discrimination's hyperparameters. Paper defaults unless noted."""

    feature_dim: int = 128  # D of the unit feature v and of the bank rows, the paper's
    temperature: float = 0.07  # tau of the non-parametric softmax, the paper's
    bank_momentum: float = 0.5  # mu in v_i <- normalize(mu v_i + (1 - mu) f_i) (the paper's m), its code's value
    nce_k: int = 4096  # noise rows M per batch (paper: m = 4096 per sample); 0 = exact softmax, cheap for small n
    proximal: float = 0.0  # lambda of the proximal term (paper: 30 in its ablation); 0 turns it off
    head: str = "linear"  # 'linear' (the paper's fc to feature_dim) or 'mlp' (SimCLR's / MoCo v2's, with BN)
    bank_init: str = "first_pass"  # 'first_pass': a row joins the loss once its image has written it; 'random': the paper's code
    z_momentum: float = 0.99  # beta of the running NCE constant Z <- beta Z + (1 - beta) Z_batch; 1 = fixed after one batch (paper)


HEADS = ("linear", "mlp")
BANK_INITS = ("first_pass", "random")


class InstDisc(Method):
    """Instance discrimination with a memory bank; ``forward(views, index)`` -> ``{"loss", "features"}``.

    Args:
        encoder: f, with ``out_dim``.
        config: an InstDiscConfig.
        num_samples: n, the number of training images; the bank has one row per image and
            ``index`` (from `fit`) must hold rows in [0, n).

    Buffers (saved in ``state_dict``, so a resumed run continues exactly): ``bank`` (n, D) unit
    rows, random at start; ``filled`` (n,) bool, whether row i holds a feature of image i (all
    True from the start with ``bank_init='random'``, where the random rows count as the images'
    rows); ``log_Z`` the log of the NCE constant Z, nan until the first NCE forward estimates it.

    Under torchrun every rank writes the features of every rank's images into its bank (they
    are gathered with their indices), estimates Z over every rank's samples, and divides its
    loss by the number of filled rows over all ranks, so the buffers stay the same on all ranks
    and the gradient is that of a single process with the global batch.
    """

    name = "instdisc"
    n_views = 1

    def __init__(self, encoder: nn.Module, config: InstDiscConfig | None = None, *, num_samples: int):
        super().__init__(encoder)
        self.config = cfg = config or InstDiscConfig()
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int (the number of training images), "
                             f"got {num_samples!r}")
        check_positive("temperature", cfg.temperature)
        check_positive("nce_k", cfg.nce_k, allow_zero=True)
        check_positive("proximal", cfg.proximal, allow_zero=True)
        check_choice("head", cfg.head, HEADS)
        check_choice("bank_init", cfg.bank_init, BANK_INITS)
        if not 0.0 <= cfg.bank_momentum < 1.0:
            raise ValueError(f"bank_momentum must be in [0, 1), got {cfg.bank_momentum!r}")
        if not 0.0 <= cfg.z_momentum <= 1.0:
            raise ValueError(f"z_momentum must be in [0, 1] (1 keeps the first estimate of Z), "
                             f"got {cfg.z_momentum!r}")
        self.num_samples = num_samples
        self.head = ProjectionHead(encoder.out_dim, kind=cfg.head, out_dim=cfg.feature_dim)
        self.register_buffer("bank", F.normalize(torch.randn(num_samples, cfg.feature_dim), dim=1))
        self.register_buffer("filled", torch.full((num_samples,), cfg.bank_init == "random"))
        self.register_buffer("log_Z", torch.full((), float("nan")))
        self._pending: tuple[Tensor, Tensor] | None = None   # (v, index) of the last training step

    def forward(self, views: list[Tensor], index: Tensor | None = None,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        if len(views) != 1:
            raise ValueError(f"views must hold 1 augmented batch for InstDisc, got {len(views)}")
        x = views[0]
        self._check_index(index, x.shape[0])
        cfg = self.config
        z = self.head(self.encoder(x))                 # (N, D), under the caller's autocast
        with torch.autocast(device_type=x.device.type, enabled=False):   # the loss in float32
            v = F.normalize(z.float(), dim=1)           # (N, D) unit features
            if cfg.nce_k == 0:
                per_sample = nonparametric_softmax_loss(v, self.bank, index, cfg.temperature, reduction="none")
            else:
                noise = distributed.broadcast(self.sample_noise(cfg.nce_k, v.device))   # (K,), rank 0's
                est = estimate_log_partition(v, self.bank, noise, cfg.temperature, gather=True)
                log_Z = running_log_partition(self.log_Z, est, cfg.z_momentum)
                if self.training:
                    self.log_Z.copy_(log_Z)
                per_sample = nce_loss(v, self.bank, index, noise, cfg.temperature, log_Z, reduction="none")
            if cfg.proximal > 0:
                per_sample = per_sample + cfg.proximal * (v - self.bank[index]).pow(2).sum(1)
            # Only images whose row holds one of their features count; with bank_init='first_pass'
            # the first epoch fills the bank and its loss is 0.
            seen = self.filled[index].to(per_sample.dtype)
            loss = distributed.global_mean((per_sample * seen).sum(), seen.sum())   # over every rank's seen rows
        if self.training:   # the bank update of every rank's batch, so the bank stays the same on all ranks
            self._pending = (distributed.all_gather(v.detach()), distributed.all_gather(index))
        return {"loss": loss, "features": v.detach()}

    def sample_noise(self, k: int, device) -> Tensor:
        """K bank rows drawn uniformly with replacement (P_n = 1/n), on ``device``."""
        return torch.randint(self.num_samples, (k,), device=device)

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        """Memory-bank update of the last batch: v_i <- normalize(mu v_i + (1 - mu) f_i).

        A row not yet filled (``bank_init='first_pass'``) takes the feature as it is (mu = 0).
        """
        if self._pending is None:
            return
        v, index = self._pending
        mu = torch.where(self.filled[index], self.config.bank_momentum, 0.0)[:, None]    # (N, 1)
        rows = F.normalize(mu * self.bank[index] + (1 - mu) * v, dim=1)    # (N, D)
        self.bank.index_copy_(0, index, rows)
        self.filled[index] = True
        self._pending = None

    def _check_index(self, index, n: int) -> None:
        if index is None:
            raise ValueError("index is required: InstDisc keeps one memory-bank row per training image")
        check_tensor("index", index, ndim=1)
        if index.dtype != torch.long:
            raise TypeError(f"index must have dtype torch.int64, got {index.dtype}")
        if index.shape[0] != n:
            raise ValueError(f"index must have one entry per image in the batch, got {index.shape[0]} "
                             f"for a batch of {n}")
        # The range check reads the values, which on a GPU would stall the host every step; there
        # an out-of-range index surfaces as a device-side assert in the gather instead.
        if index.device.type == "cpu" and n > 0 and (index.min() < 0 or index.max() >= self.num_samples):
            raise ValueError(f"index must hold bank rows in [0, {self.num_samples}) (num_samples), "
                             f"got values in [{int(index.min())}, {int(index.max())}]; was the method "
                             f"built with num_samples = the number of training images?")

    def embed(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.encoder(x)), dim=1)
