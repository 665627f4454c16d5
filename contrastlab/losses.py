"""Contrastive losses as pure tensor functions.

Each loss takes projections (and hyperparameters) and returns a scalar; nothing here holds
state. Shapes follow the book's vocabulary: N batch size, D projection dimension.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab._validate import check_tensor, shape_str


def _check_temperature(temperature) -> None:
    """A positive finite number, or a 0-d floating tensor (e.g. a learnable temperature; not value-checked)."""
    if isinstance(temperature, Tensor):
        if temperature.ndim != 0 or not temperature.is_floating_point():
            raise TypeError(
                f"temperature must be a number or a 0-d floating tensor, "
                f"got a tensor of shape {shape_str(temperature.shape)} and dtype {temperature.dtype}"
            )
        return
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    r"""NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, Eq. 1).

    Row k of ``z1`` and row k of ``z2`` are the projections of two views of image k. The 2N
    projections are compared by cosine similarity :math:`s_{ij} = z_i^\top z_j / \|z_i\|\|z_j\|`,
    and every one of the 2N views is an anchor whose positive is the other view of its image:

    .. math::

        \ell(i, j) = -\log \frac{\exp(s_{ij}/\tau)}{\sum_{k \ne i} \exp(s_{ik}/\tau)},
        \qquad
        L = \frac{1}{2N} \sum_{k=1}^{N} \big[\ell(2k-1, 2k) + \ell(2k, 2k-1)\big].

    The anchor is left out of its own denominator (the indicator :math:`1_{[k \ne i]}` of Eq. 1),
    so each anchor sees one positive and 2N - 2 negatives. The loss is computed as one
    (2N, 2N) similarity matrix whose diagonal is masked with -inf, then a cross-entropy whose
    target for row i is the row of its other view.

    Half-precision inputs (fp16/bf16, e.g. under autocast) are cast to float32 before the
    normalisation, whose eps of 1e-12 underflows to 0 in fp16 (the NaNs of lightly #1259), and
    the logits are computed in float32. Gradients flow back to ``z1`` and ``z2`` in their dtype.

    Args:
        z1: projections of the first views, (N, D) floating, N >= 2.
        z2: projections of the second views, (N, D), same shape as ``z1``.
        temperature: tau > 0 (SimCLR uses 0.5 on CIFAR-10, 0.1 on ImageNet with large batches).

    Returns:
        the mean loss over the 2N anchors, a float32 scalar. Identical embeddings for all 2N
        views give log(2N - 1).
    """
    check_tensor("z1", z1, ndim=2, floating=True)
    check_tensor("z2", z2, ndim=2, floating=True)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {shape_str(z1.shape)} and {shape_str(z2.shape)}")
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"z1 and z2 need a batch of N >= 2 (a batch of one has no negatives), got N = {n}")
    _check_temperature(temperature)

    device = z1.device
    with torch.autocast(device_type=device.type, enabled=False):   # autocast would run the matmul in half
        z = torch.cat([z1, z2], dim=0).float()      # (2N, D), the views of image k at rows k and k + N
        z = F.normalize(z, dim=1)                   # in float32, where eps=1e-12 is representable
        logits = (z @ z.T) / temperature            # (2N, 2N) s_ij / tau
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=device)
        logits = logits.masked_fill(self_mask, float("-inf"))   # drop k = i from the denominator
        idx = torch.arange(n, device=device)
        targets = torch.cat([idx + n, idx])         # (2N,) positive of row i is i + N, of row i + N is i
        return F.cross_entropy(logits.float(), targets)


__all__ = ["nt_xent"]
