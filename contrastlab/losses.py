"""Contrastive losses as pure tensor functions.

Each loss takes projections (and hyperparameters) and returns a scalar; nothing here holds
state. Shapes follow the book's vocabulary: N batch size, D projection dimension, K negatives
or prototypes, V views, B batch of SwAV codes. Every loss computes in float32 with autocast
disabled, so half-precision inputs (fp16/bf16) and autocast regions give the fp32 result.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab import distributed
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


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5, *, normalize: bool = True,
            gather: bool = False) -> Tensor:
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
        normalize: compare L2-normalised projections (cosine similarity, the paper's choice);
            False uses the raw dot product :math:`z_i^\top z_j` (SimCLR's Table 5 "no l2 norm" rows).
        gather: in a multi-process run (`contrastlab.distributed`), take the negatives from the
            views of every rank: the batch is the concatenation of all ranks' ``z1`` and ``z2``,
            and this rank's loss is the mean over its own 2N anchors, so that with DDP's gradient
            average the result is the single-process loss and gradient of the whole batch. No
            effect in a single process.

    Returns:
        the mean loss over the 2N anchors (this rank's, with ``gather``), a float32 scalar.
        Identical embeddings for all 2N views give log(2N - 1).
    """
    check_tensor("z1", z1, ndim=2, floating=True)
    check_tensor("z2", z2, ndim=2, floating=True)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {shape_str(z1.shape)} and {shape_str(z2.shape)}")
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"z1 and z2 need a batch of N >= 2 (a batch of one has no negatives), got N = {n}")
    if z1.shape[1] == 0:
        raise ValueError(f"z1 and z2 need at least one feature per row (D >= 1), got shape {shape_str(z1.shape)}")
    _check_temperature(temperature)
    _check_flag("normalize", normalize)

    device = z1.device
    with torch.autocast(device_type=device.type, enabled=False):   # autocast would run the matmul in half
        z, rows, targets = _two_view_layout(z1, z2, gather)   # (2N, D) views of image k at rows k and k + N
        if normalize:
            z = F.normalize(z, dim=1)               # in float32, where eps=1e-12 is representable
        anchors = z if rows is None else z[rows]    # this rank's anchors when gathered
        logits = (anchors @ z.T) / temperature      # (2N, 2N) s_ij / tau
        self_mask = torch.eye(len(z), dtype=torch.bool, device=device)
        if rows is not None:
            self_mask = self_mask[rows]
        logits = logits.masked_fill(self_mask, float("-inf"))   # drop k = i from the denominator
        return F.cross_entropy(logits.float(), targets)


def _two_view_layout(z1: Tensor, z2: Tensor, gather: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """nt_xent's layout of two views: z (2M, D) float32 with image k's views at rows k and k + M.

    Returns ``z``, ``rows`` and ``targets``. In a single process (or without ``gather``) M = N,
    ``rows`` is None (every row is an anchor) and ``targets`` (2N,) gives each row the row of its
    other view. With ``gather`` in a multi-process run, z holds the views of every rank (M = N
    times the world size, gradients flowing back through `distributed.gather_with_grad`),
    ``rows`` (2N,) are the rows of this rank's anchors and ``targets`` their other views' rows.
    """
    rows = None
    if gather and distributed.is_distributed():
        n = z1.shape[0]
        z = torch.cat([distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)]).float()
        own = torch.arange(n, device=z.device) + distributed.rank() * n
        rows = torch.cat([own, own + len(z) // 2])
    else:
        z = torch.cat([z1, z2], dim=0).float()
    m = len(z) // 2
    idx = torch.arange(m, device=z.device)
    targets = torch.cat([idx + m, idx])             # (2M,) positive of row i is i + M, of row i + M is i
    return z, rows, (targets if rows is None else targets[rows])




# --------------------------------------------------------------------------------------------
# small helpers


def _check_number(name: str, value, *, allow_zero: bool) -> None:
    """A finite python number > 0 (or >= 0 with allow_zero)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    bound = ">= 0" if allow_zero else "> 0"
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {shape_str(a.shape)} and {shape_str(b.shape)}"
        )


def _unit(x: Tensor) -> Tensor:
    """Cast to float32, then L2-normalise the last dimension (fp16 would turn eps=1e-12 into 0)."""
    return F.normalize(x.float(), dim=-1)


def _check_view_pair(z1: Tensor, z2: Tensor) -> None:
    check_tensor("z1", z1, ndim=2, floating=True)
    check_tensor("z2", z2, ndim=2, floating=True)
    _check_same_shape("z1", z1, "z2", z2)
    if z1.shape[0] < 2:
        raise ValueError(
            f"z1 and z2 need a batch of N >= 2 (a batch of one has no negatives), got N = {z1.shape[0]}"
        )


def _pair_similarities(z1: Tensor, z2: Tensor, semi_hard: bool, normalize: bool = True,
                       gather: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The 2N-view layout of nt_xent: cosine similarities, positive similarity, negative weights.

    With ``normalize=False`` the similarities are raw dot products instead of cosines.

    Returns ``sim`` (2N, 2N) float32, ``s_pos`` (2N,) the similarity of each anchor to its other
    view, and ``weights`` (2N, 2N) that average over the anchor's negatives: 1/|negatives| on
    the negatives kept, 0 elsewhere (the anchor itself and its positive are never negatives).
    With ``semi_hard`` only negatives with s_neg < s_pos are kept, or all of them for an anchor
    that has none; this is decided on the device, without a host sync. With ``gather`` in a
    multi-process run the rows are this rank's anchors and the columns the views of every rank
    (see `_two_view_layout`).
    """
    device = z1.device
    z, anchor_rows, targets = _two_view_layout(z1, z2, gather)   # (2N, D), views of image k at rows k, k + N
    z = F.normalize(z, dim=1) if normalize else z
    anchors = z if anchor_rows is None else z[anchor_rows]
    sim = anchors @ z.T                                 # (2N, 2N) s_ij
    rows = torch.arange(len(anchors), device=device)
    self_cols = rows if anchor_rows is None else anchor_rows
    s_pos = sim[rows, targets]                          # (2N,)
    negatives = torch.ones(len(anchors), len(z), dtype=torch.bool, device=device)
    negatives[rows, self_cols] = False                  # not the anchor itself
    negatives[rows, targets] = False                    # not its positive: 2N - 2 negatives per row
    if semi_hard:
        easier = negatives & (sim < s_pos[:, None])     # semi-hard: less similar than the positive
        negatives = torch.where(easier.any(dim=1, keepdim=True), easier, negatives)
    weights = negatives.float()
    weights = weights / weights.sum(dim=1, keepdim=True)
    return sim, s_pos, weights


# --------------------------------------------------------------------------------------------
# InfoNCE (CPC, MoCo)


def info_nce(query: Tensor, positive: Tensor, negatives: Tensor, temperature: float = 0.1, *,
             gather: bool = False) -> Tensor:
    r"""InfoNCE with explicit negatives (van den Oord et al. 2018, CPC Eq. 4; He et al. 2020, MoCo Eq. 1).

    Each query :math:`q_n` is scored against its positive key :math:`k_n^+` and K negative keys by
    cosine similarity, and the loss is a (K + 1)-way softmax cross-entropy whose target is the
    positive:

    .. math::

        \ell_n = -\log \frac{\exp(q_n \cdot k_n^+ / \tau)}
            {\exp(q_n \cdot k_n^+ / \tau) + \sum_{j=1}^{K} \exp(q_n \cdot k_{nj}^- / \tau)},
        \qquad L = \frac{1}{N} \sum_{n=1}^{N} \ell_n,

    with all vectors L2-normalised (in float32). The negatives are either one set shared by all
    queries, (K, D), like MoCo's queue, or a set per query, (N, K, D), like CPC's samples.
    Gradients flow into all three inputs; with MoCo, pass keys and queue already detached.

    Args:
        query: (N, D) floating.
        positive: (N, D), same shape as ``query``.
        negatives: (K, D) shared or (N, K, D) per query, K >= 1, same D.
        temperature: tau > 0 (MoCo uses 0.07, MoCo v2 and SimCLR-style setups 0.1–0.2).
        gather: in a multi-process run, shared negatives (K, D) are those of every rank
            concatenated (each rank passing its own, e.g. in-batch keys; gradients flow back to
            the rank that made them), and the loss is the mean over this rank's queries, so that
            DDP's gradient average gives the single-process result of the concatenated batch.
            Per-query negatives (N, K, D) belong to their queries and are not gathered. Pass
            False for negatives that every rank already holds in full, like MoCo's queue.

    Returns:
        the mean loss over the N queries, a float32 scalar. A positive and negatives all equal
        to the query give log(K + 1).
    """
    check_tensor("query", query, ndim=2, floating=True)
    check_tensor("positive", positive, ndim=2, floating=True)
    _check_same_shape("query", query, "positive", positive)
    check_tensor("negatives", negatives, floating=True)
    n, d = query.shape
    if negatives.ndim == 2:
        expected = f"(K, {d})"
        ok = negatives.shape[1] == d
    elif negatives.ndim == 3:
        expected = f"(K, {d}) or ({n}, K, {d})"
        ok = negatives.shape[0] == n and negatives.shape[2] == d
    else:
        expected, ok = f"(K, {d}) or ({n}, K, {d})", False
    if not ok or negatives.shape[-2] == 0:
        raise ValueError(
            f"negatives must have shape {expected} with K >= 1 for query of shape {shape_str(query.shape)}, "
            f"got {shape_str(negatives.shape)}"
        )
    _check_temperature(temperature)
    if gather and negatives.ndim == 2:
        negatives = distributed.gather_with_grad(negatives)            # (W K, D), every rank's

    with torch.autocast(device_type=query.device.type, enabled=False):
        q, k_pos, k_neg = _unit(query), _unit(positive), _unit(negatives)
        l_pos = (q * k_pos).sum(dim=1, keepdim=True)                   # (N, 1)
        if k_neg.ndim == 2:
            l_neg = q @ k_neg.T                                         # (N, D) x (D, K) -> (N, K)
        else:
            l_neg = torch.einsum("nd,nkd->nk", q, k_neg)                # (N, K)
        logits = torch.cat([l_pos, l_neg], dim=1) / temperature         # (N, 1 + K), positive at 0
        targets = torch.zeros(n, dtype=torch.long, device=query.device)
        return F.cross_entropy(logits.float(), targets)


# --------------------------------------------------------------------------------------------
# SimCLR's alternatives to NT-Xent (Chen et al. 2020, Table 2 and Section 5.1)


def nt_logistic(z1: Tensor, z2: Tensor, temperature: float = 0.5, semi_hard: bool = False, *,
                normalize: bool = True, gather: bool = False) -> Tensor:
    r"""NT-Logistic, the normalized temperature-scaled logistic loss of SimCLR (Chen et al. 2020, Table 2).

    Same 2N-view layout as :func:`nt_xent`: every view is an anchor, its positive is the other
    view of its image and the 2N - 2 views of other images are its negatives. Each pair is an
    independent binary classification on the cosine similarity :math:`s`:

    .. math::

        \ell_i = -\log \sigma(s_{i,+} / \tau)
                 - \frac{1}{|\mathcal{N}_i|} \sum_{j \in \mathcal{N}_i} \log \sigma(-s_{ij} / \tau),
        \qquad L = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i.

    Averaging: the negative terms are *averaged* over the anchor's negatives
    :math:`\mathcal{N}_i`, so the one positive and the negatives carry equal weight (SimCLR
    re-weights the two terms so the 2N - 2 negatives do not swamp the positive); the Table 2
    sum over negatives is :math:`|\mathcal{N}_i|` times our negative term.

    Args:
        z1: projections of the first views, (N, D) floating, N >= 2.
        z2: projections of the second views, (N, D), same shape as ``z1``.
        temperature: tau > 0.
        semi_hard: keep, per anchor, only negatives with :math:`s_{ij} < s_{i,+}` (SimCLR's
            semi-hard negative mining, Table 2 "sh"); an anchor with none keeps all of them.
        normalize: cosine similarities (True, the paper's) or raw dot products (False).
        gather: negatives from every rank of a multi-process run, as in :func:`nt_xent`.

    Returns:
        the mean loss over the 2N anchors, a float32 scalar. Identical embeddings (every s = 1)
        give log(1 + exp(-1/tau)) + log(1 + exp(1/tau)).
    """
    _check_view_pair(z1, z2)
    _check_temperature(temperature)
    _check_flag("semi_hard", semi_hard)
    _check_flag("normalize", normalize)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        sim, s_pos, weights = _pair_similarities(z1, z2, semi_hard, normalize, gather)
        positive_term = -F.logsigmoid(s_pos / temperature)                       # (2N,)
        negative_term = -(weights * F.logsigmoid(-sim / temperature)).sum(dim=1)  # (2N,)
        return (positive_term + negative_term).mean()


def margin_triplet(z1: Tensor, z2: Tensor, margin: float = 1.0, semi_hard: bool = False, *,
                   normalize: bool = True, gather: bool = False) -> Tensor:
    r"""The margin triplet loss of SimCLR's comparison (Chen et al. 2020, Table 2), on cosine similarity.

    Same 2N-view layout as :func:`nt_xent`. For each anchor i and each negative j, a hinge asks
    the positive to beat the negative by at least the margin m:

    .. math::

        \ell_i = \frac{1}{|\mathcal{N}_i|} \sum_{j \in \mathcal{N}_i} \max(0,\, s_{ij} - s_{i,+} + m),
        \qquad L = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i.

    As in SimCLR the similarities are cosines, in [-1, 1], so m lives on that scale: m = 0 only
    asks for the right order, m = 2 can never be met by all pairs (the default m = 1 asks for a
    gap of half the range). There is no temperature. The hinge is averaged over the anchor's
    negatives and then over the anchors.

    Args:
        z1: projections of the first views, (N, D) floating, N >= 2.
        z2: projections of the second views, (N, D), same shape as ``z1``.
        margin: m >= 0, a finite number.
        semi_hard: keep, per anchor, only negatives with :math:`s_{ij} < s_{i,+}`; an anchor
            with none keeps all of them.
        normalize: cosine similarities (True, the paper's) or raw dot products (False, where
            the margin is on the scale of the unnormalised projections).
        gather: negatives from every rank of a multi-process run, as in :func:`nt_xent`.

    Returns:
        the mean hinge, a float32 scalar. Identical embeddings give exactly m.
    """
    _check_view_pair(z1, z2)
    _check_number("margin", margin, allow_zero=True)
    _check_flag("semi_hard", semi_hard)
    _check_flag("normalize", normalize)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        sim, s_pos, weights = _pair_similarities(z1, z2, semi_hard, normalize, gather)
        hinge = F.relu(sim - s_pos[:, None] + margin)        # (2N, 2N), zero weight off the negatives
        return (weights * hinge).sum(dim=1).mean()


# --------------------------------------------------------------------------------------------
# Supervised contrastive loss


_SUPCON_VARIANTS = ("out", "in")


def _supcon_anchor_terms(log_prob: Tensor, positives: Tensor, variant: str = "out") -> Tensor:
    """Each anchor's SupCon term from its log-probabilities over A(i) and its positives: (..., M) -> (...).

    ``log_prob`` holds log p_ij (entries outside A(i) may be -inf), ``positives`` the boolean mask
    of P(i); "out" averages log p_ip over P(i) (Eq. 2), "in" takes the log of the mean of p_ip
    (Eq. 3). An anchor without positives gets a meaningless value: the caller masks it.
    """
    count = positives.sum(dim=-1).clamp(min=1).to(log_prob.dtype)            # |P(i)|
    if variant == "out":
        return -log_prob.masked_fill(~positives, 0.0).sum(dim=-1) / count
    return -(torch.logsumexp(log_prob.masked_fill(~positives, float("-inf")), dim=-1) - count.log())


def supcon(z: Tensor, labels: Tensor, temperature: float = 0.1, variant: str = "out", *,
           gather: bool = False) -> Tensor:
    r"""SupCon, the supervised contrastive loss (Khosla et al. 2020, Eq. 2 "out" and Eq. 3 "in").

    The N samples with V views each give NV anchors :math:`i \in I`. The positives
    P(i) of an anchor are every *other* view whose sample has the same label (including the
    anchor's own other views); the denominator runs over all views but the anchor,
    A(i) = I minus {i}. With cosine similarities :math:`s_{ij}`:

    .. math::

        \log p_{ij} = s_{ij}/\tau - \log \sum_{a \in A(i)} \exp(s_{ia}/\tau),

        L^{out}_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)} \log p_{ip},
        \qquad
        L^{in}_i = -\log \Big( \frac{1}{|P(i)|} \sum_{p \in P(i)} p_{ip} \Big).

    The paper sums over anchors; here L is the *mean* over anchors, so that with labels =
    arange(N) and V = 2 (each anchor's only positive is its other view) ``supcon`` equals
    :func:`nt_xent` of ``z[:, 0]`` and ``z[:, 1]``. When every anchor has exactly one positive,
    "in" and "out" coincide. Anchors without any positive (possible only with V = 1) are left
    out of the mean; if no anchor has one the loss is 0.

    Args:
        z: projections, (N, V, D) floating, N * V >= 2; normalised here.
        labels: (N,) class labels, any dtype comparable with ``==`` (usually int64).
        temperature: tau > 0 (the paper uses 0.1).
        variant: "out" (Eq. 2, the one the paper recommends) or "in" (Eq. 3).
        gather: in a multi-process run, positives and negatives come from the views and labels
            of every rank; this rank's anchors are its own N V views, and their summed loss is
            divided by the number of anchors with positives over all ranks (times the world
            size, see `contrastlab.distributed.global_mean`), so that DDP's gradient average
            gives the single-process loss and gradient of the whole batch.

    Returns:
        the mean loss over anchors with positives, a float32 scalar.
    """
    check_tensor("z", z, ndim=3, floating=True)
    check_tensor("labels", labels)
    n, v, _ = z.shape
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"labels must have one entry per sample, got {labels.shape[0] if labels.ndim == 1 else shape_str(labels.shape)}"
            f" for z with N = {n}"
        )
    if n * v < 2:
        raise ValueError(f"z needs N * V >= 2 views (one view has no negatives), got shape {shape_str(z.shape)}")
    _check_temperature(temperature)
    if variant not in _SUPCON_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(map(repr, _SUPCON_VARIANTS))}")

    device = z.device
    rows = None
    labels = labels.to(device)
    if gather and distributed.is_distributed():
        own = torch.arange(n, device=device) + distributed.rank() * n
        z, labels = distributed.gather_with_grad(z), distributed.all_gather(labels)
        rows = (torch.arange(v, device=device)[:, None] * len(z) + own).flatten()   # this rank's anchors
        n = len(z)
    with torch.autocast(device_type=device.type, enabled=False):
        views = _unit(z.transpose(0, 1).reshape(v * n, -1))   # (VN, D), view-major like nt_xent
        anchor_labels = labels.repeat(v)                      # (VN,)
        anchors = views if rows is None else views[rows]
        logits = (anchors @ views.T) / temperature            # (VN, VN) s_ij / tau
        self_mask = torch.eye(v * n, dtype=torch.bool, device=device)
        if rows is not None:
            self_mask = self_mask[rows]
        logits = logits.masked_fill(self_mask, float("-inf"))                   # A(i) = I \ {i}
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)        # (VN, VN) log p_ij
        own_labels = anchor_labels if rows is None else anchor_labels[rows]
        positives = (own_labels[:, None] == anchor_labels[None, :]) & ~self_mask   # P(i)
        has_pos = positives.any(dim=1)
        per_anchor = _supcon_anchor_terms(log_prob, positives, variant)
        per_anchor = torch.where(has_pos, per_anchor, torch.zeros_like(per_anchor))
        if rows is None:
            return per_anchor.sum() / has_pos.sum().clamp(min=1)
        return distributed.global_mean(per_anchor.sum(), has_pos.sum())


# --------------------------------------------------------------------------------------------
# BYOL


def byol(p: Tensor, z: Tensor) -> Tensor:
    r"""BYOL's regression loss (Grill et al. 2020, Eq. 2): normalised MSE between prediction and target.

    .. math::

        L = \frac{1}{N} \sum_{n=1}^{N} \Big\| \bar p_n - \bar z_n \Big\|_2^2
          = \frac{1}{N} \sum_{n=1}^{N} \big(2 - 2 \cos(p_n, z_n)\big),

    with :math:`\bar x = x / \|x\|_2`. Only the online network learns from this loss: the
    caller passes the target projection ``z`` already detached (``z.detach()`` or computed under
    ``torch.no_grad()``); the function does not detach it. The symmetric BYOL loss is
    ``byol(p1, z2) + byol(p2, z1)``.

    Args:
        p: online predictions q_theta(z_theta), (N, D) floating.
        z: target projections z'_xi, (N, D), same shape, detached by the caller.

    Returns:
        the mean over the batch, a float32 scalar in [0, 4]: 0 for p = z, 4 for p = -z.
    """
    check_tensor("p", p, ndim=2, floating=True)
    check_tensor("z", z, ndim=2, floating=True)
    _check_same_shape("p", p, "z", z)
    with torch.autocast(device_type=p.device.type, enabled=False):
        cos = (_unit(p) * _unit(z)).sum(dim=1)                # (N,)
        return (2 - 2 * cos).mean()


# --------------------------------------------------------------------------------------------
# SwAV


def _check_iterations(iterations) -> None:
    if isinstance(iterations, bool) or not isinstance(iterations, int):
        raise TypeError(f"iterations must be an int, got {type(iterations).__name__}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3, *, gather: bool = False) -> Tensor:
    r"""SwAV's Sinkhorn-Knopp codes (Caron et al. 2020, Eq. 3–4 and Algorithm 1).

    Finds soft assignments of the N samples to the J prototypes that follow the scores but
    split the batch equally among prototypes (the equal-partition constraint). In the book's
    notation (book/notation.md; the paper writes Q, q and K for Gamma, gamma and J):

    .. math::

        \Gamma = \exp(C^\top Z / \varepsilon) \in \mathbb{R}^{J \times N},\ \Gamma \leftarrow \Gamma / \textstyle\sum \Gamma,
        \quad \text{then repeat:}\ \
        \Gamma_{j\cdot} \leftarrow \frac{\Gamma_{j\cdot}}{J \sum_n \Gamma_{jn}},\ \
        \Gamma_{\cdot n} \leftarrow \frac{\Gamma_{\cdot n}}{N \sum_j \Gamma_{jn}},

    so that Gamma approaches the transportation polytope (rows sum to 1/J, columns to 1/N). The
    codes are :math:`N\,\Gamma^\top`: every sample's code sums to 1 exactly (the last step
    normalises the columns of Gamma), and the per-prototype sums over the batch approach N/J as
    iterations grow.

    Computed without gradient and in float32, in the log domain: each normalisation is a
    ``logsumexp`` (which subtracts the maximum before exponentiating), so the result equals the
    plain algorithm where that is finite and stays finite for scores / epsilon far beyond
    exp's range (where the plain version gives inf or 0/0).

    Args:
        scores: prototype scores z^T c_j, (N, J) floating (cosines in SwAV).
        epsilon: the entropy regularisation, > 0 (SwAV uses 0.05; smaller is sharper).
        iterations: Sinkhorn rounds, >= 1 (SwAV uses 3).
        gather: in a multi-process run, the batch is the concatenation of every rank's scores:
            the total and the per-prototype sums run over all ranks (all-reduced), N is the
            global number of samples, and each rank gets the codes of its own rows. The number
            of rows may differ between ranks. No effect in a single process.

    Returns:
        the codes gamma, (N, J) float32, rows summing to 1, no gradient (this rank's rows, with ``gather``).
    """
    check_tensor("scores", scores, ndim=2, floating=True)
    _check_number("epsilon", epsilon, allow_zero=False)
    _check_iterations(iterations)
    b, k = scores.shape
    lse = torch.logsumexp
    if gather and distributed.is_distributed():           # sums over samples run over every rank
        lse = distributed.all_logsumexp
        b = int(distributed.all_reduce_sum(torch.tensor(b, device=scores.device)))
    with torch.autocast(device_type=scores.device.type, enabled=False):
        log_q = scores.float().T / epsilon                                    # (J, N) log Gamma
        log_q = log_q - lse(log_q.flatten(), dim=0)                           # Gamma / sum(Gamma)
        for _ in range(iterations):
            log_q = log_q - lse(log_q, dim=1, keepdim=True) - math.log(k)     # rows to 1/J
            log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(b)   # columns to 1/N
        return torch.exp(log_q + math.log(b)).T                                # (N, J) = N Gamma^T


def swav(scores1: Tensor, scores2: Tensor, codes1: Tensor, codes2: Tensor, temperature: float = 0.1) -> Tensor:
    r"""SwAV's swapped prediction loss (Caron et al. 2020, Eq. 1–2).

    Two views s and t of each image give prototype scores :math:`z^\top c_j` (``scores1``,
    ``scores2``) and codes :math:`\gamma` from :func:`sinkhorn` (``codes1``, ``codes2``). Each view predicts
    the code of the *other* view from its own scores:

    .. math::

        p^{(j)} = \frac{\exp(z^\top c_j / \tau)}{\sum_{j'} \exp(z^\top c_{j'} / \tau)},
        \quad
        \ell(z, \gamma) = -\sum_j \gamma^{(j)} \log p^{(j)},
        \quad
        L = \frac{1}{N} \sum_{n=1}^{N} \big[\ell(z_{nt}, \gamma_{ns}) + \ell(z_{ns}, \gamma_{nt})\big],

    i.e. ``scores2`` is scored against ``codes1`` and ``scores1`` against ``codes2``. Scaling:
    this is the sum of the two swapped terms, averaged over the batch and *not* divided by 2
    (the form of the SwAV loss in the book's slides); SwAV's released code divides by the
    number of crops, which halves it for two views. Codes should carry no gradient (those of
    :func:`sinkhorn` do not); they are not detached here.

    Args:
        scores1: prototype scores of view s, (N, J) floating.
        scores2: prototype scores of view t, (N, J).
        codes1: codes of view s, (N, J), rows summing to 1.
        codes2: codes of view t, (N, J).
        temperature: tau > 0 (SwAV uses 0.1).

    Returns:
        the mean over the batch, a float32 scalar.
    """
    names = ("scores1", "scores2", "codes1", "codes2")
    tensors = (scores1, scores2, codes1, codes2)
    for name, x in zip(names, tensors):
        check_tensor(name, x, ndim=2, floating=True)
    for name, x in zip(names[1:], tensors[1:]):
        _check_same_shape("scores1", scores1, name, x)
    _check_temperature(temperature)
    with torch.autocast(device_type=scores1.device.type, enabled=False):
        log_p1 = F.log_softmax(scores1.float() / temperature, dim=1)   # (N, J)
        log_p2 = F.log_softmax(scores2.float() / temperature, dim=1)
        per_sample = -(codes1.float() * log_p2).sum(dim=1) - (codes2.float() * log_p1).sum(dim=1)
        return per_sample.mean()


__all__ = ["byol", "info_nce", "margin_triplet", "nt_logistic", "nt_xent", "sinkhorn", "supcon", "swav"]
