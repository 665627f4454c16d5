"""Exercises on the contrastive losses: NT-Xent, BYOL's loss and SupCon.

Each is checked against the loss of the same name in `contrastlab.losses`, on random inputs
and on edge cases whose value is known in closed form, values and gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import losses
from .core import Case, Exercise


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0):
    """Random vectors of length ``scale`` along the last dimension, so that only the cases meant to
    test normalisation have rows of other lengths."""
    return F.normalize(torch.randn(shape, generator=g), dim=-1) * scale


# --------------------------------------------------------------------------------------------
# NT-Xent

NT_XENT_SIGNATURE = '''\
def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent, the loss of SimCLR (Chen et al. 2020, Eq. 1).

    Row k of z1 and row k of z2 are the projections of two views of image k. Each of the 2N
    views is an anchor; its positive is the other view of the same image, and its
    denominator runs over the 2N - 1 other views (never the anchor itself). Similarities
    are cosines (normalise the rows) divided by the temperature.

    Args:
        z1: (N, D) float32, N >= 2, rows not necessarily of unit length.
        z2: (N, D) float32, the second views.
        temperature: tau > 0.

    Returns:
        the mean loss over the 2N anchors, a float32 scalar (shape ()).
    """'''


def _nt_xent_cases(g: torch.Generator) -> list[Case]:
    same = _randn(g, 1, 16).expand(8, 16).clone()
    z = _randn(g, 6, 16)
    return [
        Case("random unit rows, N = 8, tau = 1", {"z1": _randn(g, 8, 16), "z2": _randn(g, 8, 16), "temperature": 1.0},
             grad=("z1", "z2")),
        Case("random unit rows, tau = 0.1", {"z1": _randn(g, 8, 16), "z2": _randn(g, 8, 16), "temperature": 0.1},
             hint="the similarities are divided by tau (s / tau), not multiplied", grad=("z1", "z2")),
        Case("N = 2, the smallest batch", {"z1": _randn(g, 2, 3), "z2": _randn(g, 2, 3), "temperature": 1.0},
             grad=("z1", "z2")),
        Case("all 2N embeddings identical: the loss is log(2N - 1) = log(15)",
             {"z1": same, "z2": same.clone(), "temperature": 0.5},
             hint="each anchor has 1 positive and 2N - 2 negatives: the anchor itself is not in its own "
                  "denominator, so with all views equal the loss is log(2N - 1), not log(2N)", closed_form=True),
        Case("rows of length 10, not 1", {"z1": _randn(g, 8, 16, scale=10.0), "z2": _randn(g, 8, 16, scale=10.0),
                                          "temperature": 1.0},
             hint="the similarities are cosines: L2-normalise the rows of z1 and z2 first", grad=("z1", "z2")),
        Case("two views nearly equal (z2 = z1 + small noise)",
             {"z1": z, "z2": F.normalize(z + 0.05 * _randn(g, 6, 16), dim=1), "temperature": 1.0},
             hint="the positive of row k of z1 is row k of z2, and that of row k of z2 is row k of z1"),
    ]


NT_XENT = Exercise("nt_xent", "NT-Xent (SimCLR)", NT_XENT_SIGNATURE,
                   reference=lambda z1, z2, temperature: losses.nt_xent(z1, z2, temperature),
                   cases=_nt_xent_cases)


# --------------------------------------------------------------------------------------------
# BYOL

BYOL_SIGNATURE = '''\
def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression loss (Grill et al. 2020, Eq. 2).

    The mean over the batch of || p_n/||p_n|| - z_n/||z_n|| ||^2 = 2 - 2 cos(p_n, z_n).

    Args:
        p: online predictions, (N, D) float32.
        z: target projections, (N, D) float32 (already detached by the caller).

    Returns:
        a float32 scalar in [0, 4]: 0 when p = z, 4 when p = -z.
    """'''


def _byol_cases(g: torch.Generator) -> list[Case]:
    z = _randn(g, 6, 8)
    return [
        Case("random, N = 8", {"p": _randn(g, 8, 16), "z": _randn(g, 8, 16)}, grad=("p",)),
        Case("p = z, the loss is 0", {"p": z, "z": z.clone()},
             hint="2 - 2 cos(p, z) is 0 for equal vectors", closed_form=True),
        Case("p = -z, the loss is 4", {"p": -z, "z": z.clone()},
             hint="2 - 2 cos(p, z) is 4 for opposite vectors: check the factor 2 and the constant 2",
             closed_form=True),
        Case("rows of length 10 and 0.1", {"p": _randn(g, 8, 16, scale=10.0), "z": _randn(g, 8, 16, scale=0.1)},
             hint="normalise p and z to unit length before comparing them", grad=("p",)),
        Case("N = 1", {"p": _randn(g, 1, 4), "z": _randn(g, 1, 4)}, grad=("p",)),
    ]


BYOL = Exercise("byol_loss", "BYOL's normalised MSE", BYOL_SIGNATURE,
                reference=lambda p, z: losses.byol(p, z), cases=_byol_cases)


# --------------------------------------------------------------------------------------------
# SupCon

SUPCON_SIGNATURE = '''\
def supcon(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """SupCon L_out (Khosla et al. 2020, Eq. 2), averaged over anchors.

    The N samples with V views each give NV anchors. The positives P(i) of an anchor are
    all *other* views with the same label, its own other views included; the denominator
    runs over all views but the anchor. With cosine similarities s and tau:

        L_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip/tau) / sum_{a != i} exp(s_ia/tau) )

    Anchors without any positive (possible when V = 1) are left out of the mean.

    Args:
        z: projections, (N, V, D) float32, rows not necessarily of unit length.
        labels: (N,) int64 class labels.
        temperature: tau > 0.

    Returns:
        the mean of L_i over the anchors that have a positive, a float32 scalar.
    """'''


def _supcon_cases(g: torch.Generator) -> list[Case]:
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    return [
        Case("N = 6, V = 2, repeated labels",
             {"z": _randn(g, 6, 2, 8), "labels": labels, "temperature": 0.1}, grad=("z",)),
        Case("distinct labels, V = 2 (then SupCon equals NT-Xent)",
             {"z": _randn(g, 4, 2, 8), "labels": torch.arange(4), "temperature": 0.5},
             hint="an anchor's own other view is a positive; with distinct labels it is the only one",
             grad=("z",)),
        Case("V = 3 views, tau = 0.5", {"z": _randn(g, 4, 3, 8), "labels": torch.tensor([1, 0, 1, 0]),
                                        "temperature": 0.5}, grad=("z",)),
        Case("V = 1 and labels seen once (anchors without a positive)",
             {"z": _randn(g, 6, 1, 8), "labels": torch.tensor([0, 0, 1, 2, 1, 3]), "temperature": 0.2},
             hint="anchors with no positive are left out of the mean: divide by the number of anchors that "
                  "have one", grad=("z",)),
        Case("every label equal", {"z": _randn(g, 4, 2, 8), "labels": torch.zeros(4, dtype=torch.long),
                                   "temperature": 0.1},
             hint="L_out averages the log-probabilities over the positives (the mean of the logs, not the "
                  "log of the mean, which is L_in)", grad=("z",)),
        Case("rows of length 10, not 1", {"z": _randn(g, 6, 2, 8, scale=10.0), "labels": labels,
                                          "temperature": 0.1},
             hint="the similarities are cosines: normalise every view first", grad=("z",)),
    ]


SUPCON = Exercise("supcon", "SupCon, L_out", SUPCON_SIGNATURE,
                  reference=lambda z, labels, temperature: losses.supcon(z, labels, temperature, "out"),
                  cases=_supcon_cases)

__all__ = ["BYOL", "NT_XENT", "SUPCON"]
