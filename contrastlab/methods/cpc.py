"""CPC (van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding").

The paper, step by step. An encoder maps each step of the input to a latent z_t = g_enc(x_t);
an autoregressive network summarises the latents so far in a context c_t = g_ar(z_<=t); a
linear map W_k per future step k = 1..K turns the context into a prediction of z_{t+k}, scored
by the log-bilinear model f_k(x_{t+k}, c_t) = exp(z_{t+k}^T W_k c_t) (Eq. 3). The loss is
InfoNCE (Eq. 4): the true future z_{t+k} has to be picked out of a candidate set holding it
and negatives,

    L = -E[ log f_k(x_{t+k}, c_t) / sum_{x_j in candidates} f_k(x_j, c_t) ],

here averaged over every context c_t that has a future k steps ahead, then over k. Scores are
the raw dot products of the paper: no normalisation and no temperature.

Where the negatives come from is a hyperparameter (``negatives``): the latent at the same step
of the other sequences in the batch ('batch'), the latents at every other step of the same
sequence ('time'), or every latent in the batch ('both').

Two kinds of data go through the same machinery. A latent tensor has shape (N, T, S, D): N
sequences, T steps along which the context runs and predicts, S positions that run in
parallel, D features.

- Sequences (the paper's audio setting): the encoder is a strided 1-D convolution that exposes
  ``frames(x)`` (see `contrastlab.models.Conv1dEncoder`), inputs are (N, C, 1, L), the latents
  are its T frames, S = 1, and the context network is a GRU over time.
- Images (the paper's image setting, as in CPC v2): each image is cut into a grid of
  overlapping patches (the paper: 64x64 crops every 32 pixels of a 256x256 image, a 7x7
  grid; here 8x8 every 4 pixels of 28x28, a 6x6 grid), every patch is encoded by the image
  encoder f on its own (`PatchGrid`), the rows of the grid play the role of time and its
  columns run in parallel (S = columns): a GRU runs down each column, and c at row r predicts
  the patch k rows below in its column. (The paper's context network is a PixelCNN-style
  masked convolution, whose c also sees the neighbouring columns of the rows above; the
  column GRU is the simpler causal choice, and uses the same machinery as sequences.)

The representation that is evaluated is ``method.encoder``: for images the `PatchGrid`, which
mean-pools the features of the patches (CPC v2's spatially pooled patch features; ``pool``
keeps a coarse layout instead, which small images need, see `CPCConfig`), for sequences the
1-D encoder, which mean-pools its frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from .._validate import check_choice, check_tensor, shape_str
from .base import Method

NEGATIVES = ("batch", "time", "both")


@dataclass
class CPCConfig:
    """CPC's hyperparameters. Paper values where they carry over, scaled for 28x28 images where noted."""

    steps: int = 4  # K: predict k = 1..K steps ahead (paper: 12 audio frames, 5 of 7 grid rows; here 4 of 6)
    negatives: str = "batch"  # 'batch' (same step, other sequences), 'time' (other steps, same one) or 'both'
    context_dim: int = 256  # hidden size of the GRU context network g_ar, the paper's (audio)
    patch_size: int = 8  # side of an image patch (paper: 64 of a 256x256 image; 8 of 28x28 gives a 6x6 grid)
    patch_stride: int = 4  # step between patches: half a patch, the paper's 50% overlap
    pool: int = 1  # h of an image: patch features averaged over pool x pool cells (1: the paper's mean)


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_config(cfg: CPCConfig) -> None:
    for name in ("steps", "context_dim", "patch_size", "patch_stride", "pool"):
        _check_int(name, getattr(cfg, name))
    check_choice("negatives", cfg.negatives, NEGATIVES)


# --------------------------------------------------------------------------------------------
# the loss


def cpc_scores(z: Tensor, c: Tensor, weights: Tensor, negatives: str = "batch", *,
               gather: bool = False) -> list[tuple[Tensor, Tensor]]:
    r"""The logits z_j^T W_k c_t of every context against its candidates, one entry per step k.

    Context c at (n, t, s) predicts the latent at (n, t + k, s). Its candidates, by ``negatives``:

    - ``"batch"``: the latents at (m, t + k, s) for every sequence m of the batch (N candidates);
      other steps of the same sequence are not among them.
    - ``"time"``: the latents at (n, t', s') for every step t' and position s' of the same
      sequence (T * S candidates), the past included.
    - ``"both"``: every latent in the batch (N * T * S candidates).

    Args:
        z: latents, (N, T, S, D) floating.
        c: contexts, (N, T, S, C), c at step t summarising z up to step t.
        weights: the predictors W_1 .. W_K stacked, (K, D, C), 1 <= K < T.
        negatives: "batch", "time" or "both".
        gather: in a multi-process run, the candidates of 'batch' and 'both' are the latents of
            every rank's sequences (gradients flowing back to the rank that made them), the
            contexts this rank's own; 'time' needs nothing from other ranks. See `cpc_loss`.

    Returns:
        for k = 1..K a pair (logits, targets): logits (N, T - k, S, M) in float32 over the M
        candidates and targets (N, T - k, S), the index of the true z_{t+k} among them.
    """
    check_tensor("z", z, ndim=4, floating=True)
    check_tensor("c", c, ndim=4, floating=True)
    check_tensor("weights", weights, ndim=3, floating=True)
    check_choice("negatives", negatives, NEGATIVES)
    n, t, s, d = z.shape
    if c.shape[:3] != z.shape[:3]:
        raise ValueError(f"c must have shape ({n}, {t}, {s}, C) to match z of shape {shape_str(z.shape)}, "
                         f"got {shape_str(c.shape)}")
    k_max = weights.shape[0]
    if weights.shape[1:] != (d, c.shape[3]) or k_max < 1:
        raise ValueError(f"weights must have shape (K, {d}, {c.shape[3]}) with K >= 1 for z of shape "
                         f"{shape_str(z.shape)} and c of shape {shape_str(c.shape)}, "
                         f"got {shape_str(weights.shape)}")
    if k_max >= t:
        raise ValueError(f"the number of steps K must be smaller than the sequence length T (a context needs "
                         f"a future K steps ahead), got K = {k_max} for T = {t}")
    gather = gather and negatives != "time" and distributed.is_distributed()
    if negatives == "batch" and n * (distributed.world_size() if gather else 1) < 2:
        raise ValueError("negatives='batch' needs N >= 2 sequences (the others are the negatives), got N = 1")

    dev = z.device
    out = []
    with torch.autocast(device_type=dev.type, enabled=False):
        z, c, weights = z.float(), c.float(), weights.float()
        flat = z.reshape(n, t * s, d)                                       # positions in (t, s) order
        cand = distributed.gather_with_grad(z) if gather else z            # (M, T, S, D) candidate sequences
        first = distributed.rank() * n if gather else 0                     # this rank's first sequence in cand
        for k in range(1, k_max + 1):
            pred = c[:, : t - k] @ weights[k - 1].T                           # (N, T-k, S, D) W_k c_t
            future = torch.arange(k, t, device=dev)[:, None] * s + torch.arange(s, device=dev)  # (T-k, S)
            if negatives == "batch":
                logits = torch.einsum("ntsd,mtsd->ntsm", pred, cand[:, k:])  # step t+k of every sequence
                targets = torch.arange(first, first + n, device=dev).view(n, 1, 1).expand(n, t - k, s)
            elif negatives == "time":
                logits = torch.einsum("ntsd,nqd->ntsq", pred, flat)         # every step of the same sequence
                targets = future.expand(n, t - k, s)
            else:
                logits = (pred.reshape(-1, d) @ cand.reshape(-1, d).T).view(n, t - k, s, len(cand) * t * s)
                targets = torch.arange(first, first + n, device=dev).view(n, 1, 1) * (t * s) + future
            out.append((logits, targets))
    return out


def cpc_loss(z: Tensor, c: Tensor, weights: Tensor, negatives: str = "batch", *, gather: bool = False) -> Tensor:
    r"""CPC's InfoNCE (Eq. 4) with the log-bilinear score f_k = exp(z_{t+k}^T W_k c_t) (Eq. 3).

    .. math::

        \ell_{t,k} = -\log \frac{\exp(z_{t+k}^\top W_k c_t)}{\sum_{z_j \in X_{t,k}} \exp(z_j^\top W_k c_t)},
        \qquad L = \frac{1}{K} \sum_{k=1}^{K} \operatorname{mean}_{n, t < T-k, s}\ \ell_{t,k},

    where the candidate set X_{t,k} holds the true z_{t+k} and the negatives chosen by
    ``negatives`` (see :func:`cpc_scores`). Each step k weighs the same however many contexts
    have a future k steps ahead. When every score is equal the loss is log of the number of
    candidates: log N ('batch'), log(T S) ('time'), log(N T S) ('both').

    With ``gather`` in a multi-process run the candidates come from every rank and the loss is
    the mean over this rank's contexts (the same number on every rank), so DDP's gradient
    average gives the single-process loss and gradient of the whole batch.

    Args: as :func:`cpc_scores`.

    Returns:
        a float32 scalar.
    """
    steps = [F.cross_entropy(logits.flatten(0, 2), targets.flatten())
             for logits, targets in cpc_scores(z, c, weights, negatives, gather=gather)]
    return torch.stack(steps).mean()


# --------------------------------------------------------------------------------------------
# images as grids of patches


class PatchGrid(nn.Module):
    """An image encoder f read over a grid of overlapping patches: what CPC trains on images.

    ``grid(x)`` cuts each (C, H, W) image into patches of side ``patch_size`` every ``stride``
    pixels, rows x cols of them, and encodes every patch with f on its own: (N, rows, cols, D).
    ``forward(x)`` pools them into the representation h: with ``pool = 1`` the mean over the
    grid (N, D), as CPC v2 pools its patch features; with ``pool = P`` an adaptive average
    pooling of the grid to P x P cells, concatenated row by row, (N, P * P * D), which keeps
    where in the image each feature was (``pool`` = rows = cols keeps every patch).
    ``patch_dim`` is f's output dimension D, ``out_dim`` that of h, ``pool ** 2 * D``.
    """

    def __init__(self, f: nn.Module, patch_size: int, stride: int, pool: int = 1):
        super().__init__()
        _check_int("patch_size", patch_size)
        _check_int("stride", stride)
        _check_int("pool", pool)
        self.f = f
        self.patch_size, self.stride, self.pool = patch_size, stride, pool
        self.patch_dim: int = f.out_dim                  # D of one patch's features
        self.out_dim: int = pool * pool * f.out_dim

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of the patch grid of an image of this size (0 where no patch fits)."""
        p, st = self.patch_size, self.stride
        return max(0, (height - p) // st + 1), max(0, (width - p) // st + 1)

    def grid(self, x: Tensor) -> Tensor:
        """(N, C, H, W) images -> (N, rows, cols, D) patch features."""
        check_tensor("x", x, ndim=4, floating=True)
        n, ch, height, width = x.shape
        rows, cols = self.grid_shape(height, width)
        if rows == 0 or cols == 0:
            raise ValueError(f"x must be images of at least patch_size x patch_size = {self.patch_size}x"
                             f"{self.patch_size} pixels, got shape {shape_str(x.shape)}")
        p, st = self.patch_size, self.stride
        patches = x.unfold(2, p, st).unfold(3, p, st)                    # (N, C, rows, cols, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(n * rows * cols, ch, p, p)
        # channels-last: on CPU about 2x faster for many small patches (oneDNN's small-image convolutions)
        patches = patches.to(memory_format=torch.channels_last)
        return self.f(patches).reshape(n, rows, cols, -1)

    def forward(self, x: Tensor) -> Tensor:
        z = self.grid(x)                                                  # (N, rows, cols, D)
        if self.pool == 1:
            return z.mean(dim=(1, 2))
        cells = F.adaptive_avg_pool2d(z.permute(0, 3, 1, 2), self.pool)   # (N, D, pool, pool)
        return cells.permute(0, 2, 3, 1).flatten(1)                       # (N, pool * pool * D)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, stride={self.stride}, pool={self.pool}"


# --------------------------------------------------------------------------------------------
# the method


class CPC(Method):
    """CPC: ``forward([x])`` returns ``{"loss": cpc_loss(z, c, W), "z": ..., "c": ...}``.

    Modules: ``encoder`` (a `PatchGrid` around the given image encoder, or the given sequence
    encoder itself when it has ``frames``), ``context`` (the GRU g_ar) and ``predictors`` (W_k,
    k = 1..K, linear maps from c to z without bias). No buffers: the state is the parameters.
    One view per image (``n_views = 1``); the augmentation, if any, is the caller's.
    """

    name = "cpc"
    n_views = 1

    def __init__(self, encoder: nn.Module, config: CPCConfig | None = None):
        cfg = config or CPCConfig()
        _check_config(cfg)
        sequential = callable(getattr(encoder, "frames", None))
        if not sequential:
            encoder = PatchGrid(encoder, cfg.patch_size, cfg.patch_stride, cfg.pool)
        super().__init__(encoder)
        self.config, self.sequential = cfg, sequential
        d = encoder.out_dim if sequential else encoder.patch_dim     # D of the latents z
        self.context = nn.GRU(d, cfg.context_dim, batch_first=True)
        self.predictors = nn.ModuleList(nn.Linear(cfg.context_dim, d, bias=False) for _ in range(cfg.steps))

    def latents(self, x: Tensor) -> Tensor:
        """z of a batch, (N, T, S, D): frames (S = 1) of sequences, or the patch grid of images."""
        if self.sequential:
            return self.encoder.frames(x).unsqueeze(2)
        return self.encoder.grid(x)

    def contexts(self, z: Tensor) -> Tensor:
        """c, (N, T, S, C): the GRU run along T, separately for each sequence and position s."""
        n, t, s, d = z.shape
        c, _ = self.context(z.transpose(1, 2).reshape(n * s, t, d))     # (N S, T, C)
        return c.view(n, s, t, -1).transpose(1, 2)

    def _check_length(self, x: Tensor, t: int) -> None:
        k = self.config.steps
        if k < t:
            return
        if self.sequential:
            raise ValueError(f"steps (K = {k}) must be smaller than the number of frames, got {t} frames "
                             f"for sequences of shape {shape_str(x.shape[1:])}")
        raise ValueError(f"steps (K = {k}) must be smaller than the rows of the patch grid, got {t} rows for "
                         f"images of {x.shape[-2]}x{x.shape[-1]} with patch_size {self.config.patch_size} "
                         f"and patch_stride {self.config.patch_stride}")

    def forward(self, views: list[Tensor], index: Tensor | None = None,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        if len(views) != 1:
            raise ValueError(f"views must hold 1 batch for CPC (n_views = 1), got {len(views)}")
        x = views[0]
        z = self.latents(x)                                   # (N, T, S, D)
        self._check_length(x, z.shape[1])
        c = self.contexts(z)                                  # (N, T, S, C)
        weights = torch.stack([p.weight for p in self.predictors])   # (K, D, C)
        loss = cpc_loss(z, c, weights, self.config.negatives, gather=True)   # all ranks' negatives
        return {"loss": loss, "z": z.detach(), "c": c.detach()}
