"""Two small analyses of contrastive losses, each fast enough to run on a CPU in seconds.

1. InfoNCE as a lower bound on mutual information (van den Oord et al. 2018, CPC Sec. 2.3;
   Poole et al. 2019, "On Variational Bounds of Mutual Information"). For any critic f and a
   batch of N positive pairs (x_i, y_i) drawn from p(x, y),

       I(X; Y) >= E[log N - L],   L = -1/N sum_i log( exp f(x_i, y_i) / sum_j exp f(x_i, y_j) ).

   Each term of L is a log-probability's negative, so L >= 0 and the estimate log N - L is at
   most log N for *every* batch and critic: N samples cannot certify more than log N nats,
   however much information X and Y share. `mi_bound_experiment` shows both ceilings on
   correlated Gaussians, where the mutual information and the best critic are known exactly.

2. Hard-negative weighting by the temperature (Wang & Liu 2021, "Understanding the Behaviour
   of Contrastive Loss", Sec. 3; Khosla et al. 2020, SupCon Sec. 3.2.3). For one anchor with
   positive similarity s_+ and negative similarities s_j,

       l = -log( exp(s_+/tau) / (exp(s_+/tau) + sum_k exp(s_k/tau)) ),
       dl/ds_j = exp(s_j/tau) / (tau * (exp(s_+/tau) + sum_k exp(s_k/tau))) = P_j / tau,

   with P_j the softmax probability the anchor gives negative j. The weight grows like
   exp(s_j / tau), so a small tau puts nearly all of the push on the most similar (hardest)
   negatives: a built-in focal loss. `negative_gradient_weights` and `gradient_weight_curves`
   compute it; `contrastlab.plots.mi_bound` and `contrastlab.plots.gradient_weights` draw the results.
   `supcon_gradient_norms` adds SupCon's positives: the norm of each positive's and each negative's
   share of the gradient on the anchor's projection before normalisation (SupCon Sec. 3.2.3), small
   for easy keys (s near +1 or -1) and large for hard ones.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from contrastlab import losses
from contrastlab._validate import check_choice, check_tensor, shape_str
from contrastlab.metrics import _check_int, _check_number

# --------------------------------------------------------------------------------------------
# correlated Gaussians: the mutual information and the optimal critic in closed form


def _check_rho(rho) -> None:
    _check_number("rho", rho, positive=False)
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must lie in the open interval (-1, 1), got {rho!r}")


def correlated_gaussians(n: int, dim: int, rho: float, generator: torch.Generator | None = None,
                         *, batch: int | None = None) -> tuple[Tensor, Tensor]:
    r"""N pairs (x, y) with x ~ N(0, I_D) and y = rho x + sqrt(1 - rho^2) eps, eps ~ N(0, I_D).

    Each of the D coordinates of y has correlation rho with the same coordinate of x and is
    independent of the others, so :math:`I(X; Y) = -\tfrac{D}{2} \log(1 - \rho^2)` nats
    (:func:`gaussian_mi`). This is the test bed of Poole et al. (2019, Sec. 5).

    Args:
        n: N, pairs per batch (>= 1).
        dim: D, dimension of x and y (>= 1).
        rho: the per-coordinate correlation, in (-1, 1).
        generator: a torch.Generator for reproducible draws (default: the global RNG).
        batch: draw B independent batches at once and return (B, N, D) tensors.

    Returns:
        x and y, float32, (N, D) or (B, N, D).
    """
    _check_int("n", n)
    _check_int("dim", dim)
    _check_rho(rho)
    shape = (n, dim)
    if batch is not None:
        _check_int("batch", batch)
        shape = (batch, n, dim)
    x = torch.randn(shape, generator=generator)
    noise = torch.randn(shape, generator=generator)
    return x, rho * x + math.sqrt(1.0 - rho * rho) * noise


def gaussian_mi(dim: int, rho: float) -> float:
    r"""Mutual information of :func:`correlated_gaussians` in nats: :math:`-\tfrac{D}{2}\log(1-\rho^2)`.

    Example: D = 1, rho = 0.5 gives 0.1438 nats.
    """
    _check_int("dim", dim)
    _check_rho(rho)
    return -0.5 * dim * math.log1p(-rho * rho)


def rho_for_mi(mi: float, dim: int) -> float:
    r"""The correlation rho >= 0 at which D coordinate pairs share ``mi`` nats: :math:`\sqrt{1 - e^{-2I/D}}`."""
    _check_number("mi", mi)
    _check_int("dim", dim)
    return math.sqrt(-math.expm1(-2.0 * mi / dim))


def gaussian_log_ratio(x: Tensor, y: Tensor, rho: float) -> Tensor:
    r"""The optimal critic of InfoNCE for correlated Gaussians: all scores :math:`\log p(y_j|x_i) / p(y_j)`.

    .. math::

        f(x, y) = -\tfrac{D}{2}\log(1-\rho^2) - \frac{\|y - \rho x\|^2}{2(1-\rho^2)} + \frac{\|y\|^2}{2}.

    InfoNCE is a softmax over j, so any critic f(x, y) + c(x) works as well; the log density
    ratio is the best one (Poole et al. 2019), and its mean over positive pairs is exactly I(X; Y).

    Args:
        x: (..., N, D) floating, e.g. from :func:`correlated_gaussians`.
        y: (..., N, D), same shape.
        rho: the correlation the pairs were drawn with.

    Returns:
        scores (..., N, N), row i for x_i and column j for y_j; the positives on the diagonal.
    """
    check_tensor("x", x, floating=True)
    check_tensor("y", y, floating=True)
    if x.ndim < 2 or x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape (..., N, D), got {shape_str(x.shape)} "
                         f"and {shape_str(y.shape)}")
    _check_rho(rho)
    dim = x.shape[-1]
    var = 1.0 - rho * rho
    sq_x = x.pow(2).sum(-1)                                 # (..., N)
    sq_y = y.pow(2).sum(-1)                                 # (..., N)
    cross = x @ y.transpose(-1, -2)                         # (..., N, N) x_i . y_j
    # ||y_j - rho x_i||^2 = ||y_j||^2 - 2 rho x_i.y_j + rho^2 ||x_i||^2
    sq_diff = sq_y.unsqueeze(-2) - 2 * rho * cross + rho * rho * sq_x.unsqueeze(-1)
    return -0.5 * dim * math.log(var) - sq_diff / (2 * var) + 0.5 * sq_y.unsqueeze(-2)


def infonce_mi_estimate(scores_or_critic: Tensor | Callable[[Tensor, Tensor], Tensor],
                        x: Tensor | None = None, y: Tensor | None = None) -> Tensor:
    r"""The InfoNCE lower bound on I(X; Y) of one batch: :math:`\log N - L_{InfoNCE}` (nats).

    :math:`L = -\frac{1}{N}\sum_i \log \frac{e^{f_{ii}}}{\sum_j e^{f_{ij}}}`; the denominator runs
    over all N candidates y_j including the positive, which is what makes log N the ceiling
    (CPC, van den Oord et al. 2018, Sec. 2.3). In expectation over batches the estimate is also
    at most the true I(X; Y) (Poole et al. 2019).

    Args:
        scores_or_critic: either the score matrix f(x_i, y_j), (..., N, N) floating with the
            positive pairs on the diagonal, or a critic ``f(x, y) -> scores`` called on ``x`` and ``y``.
        x, y: (..., N, D) samples, only with a critic.

    Returns:
        the estimate per batch: a scalar for (N, N) scores, (B,) for (B, N, N).
    """
    if isinstance(scores_or_critic, Tensor):
        if x is not None or y is not None:
            raise TypeError("x and y are only taken with a critic, got a score tensor and samples")
        scores = scores_or_critic
    elif callable(scores_or_critic):
        if x is None or y is None:
            raise TypeError("a critic needs samples: pass x and y, got None")
        scores = scores_or_critic(x, y)
    else:
        raise TypeError(f"scores_or_critic must be a tensor or a callable critic, "
                        f"got {type(scores_or_critic).__name__}")
    check_tensor("scores", scores, floating=True)
    if scores.ndim < 2 or scores.shape[-1] != scores.shape[-2]:
        raise ValueError(f"scores must be square, (..., N, N), got shape {shape_str(scores.shape)}")
    n = scores.shape[-1]
    log_prob = scores.diagonal(dim1=-2, dim2=-1) - torch.logsumexp(scores, dim=-1)  # (..., N)
    return math.log(n) + log_prob.mean(-1)


class SeparableCritic(nn.Module):
    r"""A separable critic :math:`f(x, y) = g(x)^\top h(y)` with two small MLPs, as contrastive encoders are.

    Args:
        dim: D of x and y.
        hidden: width of the hidden layer.
        embed: dimension of g(x) and h(y).
    """

    def __init__(self, dim: int, hidden: int = 64, embed: int = 32):
        super().__init__()
        self.g = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, embed))
        self.h = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, embed))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.g(x) @ self.h(y).transpose(-1, -2)     # (..., N, N)


def train_separable_critic(dim: int, rho: float, *, batch_size: int = 128, steps: int = 300, lr: float = 3e-3,
                           generator: torch.Generator | None = None) -> SeparableCritic:
    """Fit a :class:`SeparableCritic` by minimising InfoNCE on fresh batches of correlated Gaussians.

    Args:
        dim, rho: the pairs' distribution (:func:`correlated_gaussians`).
        batch_size: N while training.
        steps: Adam steps, one fresh batch each.
        lr: Adam's learning rate.
        generator: seeds the initial weights' draws and the batches.

    Returns:
        the trained critic, in eval mode.
    """
    _check_int("steps", steps)
    _check_int("batch_size", batch_size, minimum=2)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = SeparableCritic(dim)
    optimizer = torch.optim.Adam(critic.parameters(), lr=lr)
    for _ in range(steps):
        x, y = correlated_gaussians(batch_size, dim, rho, generator)
        loss = -infonce_mi_estimate(critic, x, y)             # = L - log N
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return critic.eval()


@torch.no_grad()
def mi_bound_experiment(batch_sizes: Sequence[int] = (2, 4, 8, 16, 32, 64, 128, 256),
                        mis: Sequence[float] = (1.0, 2.0, 4.0, 8.0), dim: int = 8, *, critic: str = "optimal",
                        eval_samples: int = 8192, steps: int = 300, seed: int = 0) -> dict:
    """The InfoNCE estimate of I(X; Y) against the batch size N, for several true values of I.

    For each target I in ``mis`` the pairs are :func:`correlated_gaussians` in D = ``dim``
    dimensions with rho = :func:`rho_for_mi` (I, D). The estimate log N - L is averaged over
    ``eval_samples // N`` fresh batches (at least one) for each N. With ``critic="optimal"``
    the scores are the exact log density ratio (:func:`gaussian_log_ratio`): no training, and
    whatever gap remains is the bound's own, not the critic's. Expect the estimate to follow
    log N while log N < I and to level off below I once log N > I. ``critic="separable"`` trains
    one :class:`SeparableCritic` per I (batch 128, ``steps`` Adam steps) and evaluates it at
    every N, a few seconds on a CPU.

    Args:
        batch_sizes: the N to evaluate, each >= 2.
        mis: true mutual informations in nats, each > 0.
        dim: D.
        critic: "optimal" or "separable".
        eval_samples: pairs drawn per (I, N).
        steps: training steps of a separable critic.
        seed: seeds every draw; the result is a function of the arguments.

    Returns:
        a JSON-able dict: ``batch_sizes``, ``log_n`` (nats), ``dim``, ``critic``, ``seed`` and
        ``runs``, one per I: ``{"true_mi", "rho", "estimate": [per N], "stderr": [per N]}``.
    """
    check_choice("critic", critic, ("optimal", "separable"))
    if not batch_sizes or not mis:
        raise ValueError(f"batch_sizes and mis must be non-empty, got {list(batch_sizes)} and {list(mis)}")
    for n in batch_sizes:
        _check_int("batch_sizes[i]", n, minimum=2)
    _check_int("eval_samples", eval_samples)
    _check_int("seed", seed, minimum=0)
    generator = torch.Generator().manual_seed(seed)
    runs = []
    for mi in mis:
        rho = rho_for_mi(mi, dim)
        if critic == "optimal":
            def score(x, y, rho=rho):
                return gaussian_log_ratio(x, y, rho)
        else:
            with torch.enable_grad():
                score = train_separable_critic(dim, rho, steps=steps, generator=generator)
        estimate, stderr = [], []
        for n in batch_sizes:
            batches = max(1, eval_samples // n)
            x, y = correlated_gaussians(n, dim, rho, generator, batch=batches)   # (B, N, D) each
            per_batch = infonce_mi_estimate(score, x, y)                         # (B,)
            estimate.append(per_batch.mean().item())
            spread = per_batch.std().item() if batches > 1 else 0.0
            stderr.append(spread / math.sqrt(batches))
        runs.append({"true_mi": gaussian_mi(dim, rho), "rho": rho, "estimate": estimate, "stderr": stderr})
    return {"analysis": "infonce_mi_bound", "critic": critic, "dim": dim, "seed": seed,
            "eval_samples": eval_samples, "batch_sizes": list(batch_sizes),
            "log_n": [math.log(n) for n in batch_sizes], "runs": runs}


# --------------------------------------------------------------------------------------------
# how the temperature weights the negatives


def negative_gradient_weights(negatives, positives, temperature: float, *, loss: str = "nt_xent",
                              wrt: str = "similarity") -> Tensor:
    r"""How hard the loss of one anchor pushes on each of its negatives: :math:`|\partial \ell / \partial s_j|`.

    For an anchor with positive similarities :math:`s_p` and negative similarities :math:`s_j`
    (cosines), NT-Xent (SimCLR Eq. 1, one positive) and SupCon (Khosla et al. 2020, Eq. 2 and 3,
    several positives) give every negative the same form of gradient:

    .. math::

        \frac{\partial \ell}{\partial s_j} = \frac{1}{\tau}
            \frac{e^{s_j/\tau}}{\sum_p e^{s_p/\tau} + \sum_k e^{s_k/\tau}} = \frac{P_j}{\tau},

    where P_j is the anchor's softmax probability of negative j. (In L_out the ``1/|P|`` average
    over positives multiplies ``|P|`` equal terms; in L_in the negatives only enter log Z.) The
    positives differ: with one positive, :math:`\partial \ell / \partial s_+ = -\sum_j P_j / \tau`.

    With ``wrt="projection"`` the weight is instead the norm of negative j's share of
    :math:`\partial \ell / \partial w`, w the anchor's projection before L2 normalisation, at
    ||w|| = 1: :math:`(P_j/\tau)\sqrt{1 - s_j^2}` (SupCon Sec. 3.2.3). Normalisation removes the
    component along the anchor, so negatives near s = +-1 get little gradient there.

    Args:
        negatives: similarities s_j, (..., K) floating (or a sequence of numbers), K >= 1.
        positives: similarities s_p: a number or (...,) for one positive, or (..., P) with
            ``loss="supcon"``; the leading dimensions match ``negatives``.
        temperature: tau > 0.
        loss: "nt_xent" (exactly one positive) or "supcon" (P >= 1 positives).
        wrt: "similarity" or "projection".

    Returns:
        the weights, (..., K), in the dtype of ``negatives`` (float64 for numbers); non-negative.
    """
    check_choice("loss", loss, ("nt_xent", "supcon"))
    check_choice("wrt", wrt, ("similarity", "projection"))
    _check_number("temperature", temperature)
    s_neg = torch.as_tensor(negatives, dtype=None if isinstance(negatives, Tensor) else torch.float64)
    check_tensor("negatives", s_neg, floating=True)
    if s_neg.ndim == 0 or s_neg.shape[-1] == 0:
        raise ValueError(f"negatives must have shape (..., K) with K >= 1, got {shape_str(s_neg.shape)}")
    s_pos = torch.as_tensor(positives, dtype=s_neg.dtype, device=s_neg.device)
    lead = s_neg.shape[:-1]
    if s_pos.shape == lead or s_pos.ndim == 0:
        s_pos = s_pos.expand(lead).unsqueeze(-1)               # (..., 1) one positive
    elif s_pos.shape[:-1] != lead or s_pos.shape[-1] == 0:
        raise ValueError(f"positives must have shape {shape_str(lead)} or {shape_str(lead)} + (P,) to match "
                         f"negatives {shape_str(s_neg.shape)}, got {shape_str(s_pos.shape)}")
    if loss == "nt_xent" and s_pos.shape[-1] != 1:
        raise ValueError(f"loss 'nt_xent' has one positive per anchor, got positives of shape "
                         f"{shape_str(s_pos.shape)}; use loss='supcon' for several")
    logits = torch.cat([s_pos, s_neg], dim=-1) / temperature   # (..., P + K)
    prob = torch.softmax(logits, dim=-1)[..., s_pos.shape[-1]:]  # (..., K) P_j
    weights = prob / temperature
    if wrt == "projection":
        weights = weights * (1 - s_neg.pow(2)).clamp_min(0).sqrt()
    return weights


def gradient_weight_curves(temperatures: Sequence[float] = (0.05, 0.1, 0.2, 0.5, 1.0), similarities=None,
                           positive: float = 0.9, *, loss: str = "nt_xent", wrt: str = "similarity") -> dict:
    """Gradient weight of a negative against its similarity to the anchor, at several temperatures.

    The anchor has one positive at similarity ``positive`` and one negative at each of
    ``similarities`` (default 201 points evenly spaced over [-1, 1]); each negative's weight is
    :func:`negative_gradient_weights`. ``share`` is each negative's fraction of the total push
    on the negatives: flat at large tau, piled onto the hardest negatives at small tau.

    Args:
        temperatures: the tau to compare, each > 0.
        similarities: the negatives' cosines, a 1-D sequence or tensor (default ``linspace(-1, 1, 201)``).
        positive: the positive's cosine.
        loss, wrt: as in :func:`negative_gradient_weights`.

    Returns:
        a JSON-able dict: ``similarity`` (K,), ``temperatures``, ``weights`` and ``share`` (one
        list of K per tau), ``hard_easy_ratio`` (per tau, weight at s = 0.9 over weight at s = 0,
        i.e. exp(0.9 / tau) for ``wrt="similarity"``), ``positive``, ``loss``, ``wrt``.
    """
    if not temperatures:
        raise ValueError("temperatures must be non-empty, got an empty sequence")
    if similarities is None:
        similarities = torch.linspace(-1.0, 1.0, 201, dtype=torch.float64)
    s = torch.as_tensor(similarities, dtype=torch.float64)
    if s.ndim != 1 or s.numel() == 0:
        raise ValueError(f"similarities must be a non-empty 1-D sequence, got shape {shape_str(s.shape)}")
    _check_number("positive", positive, positive=False)
    weights, shares, ratios = [], [], []
    probe = torch.tensor([0.9, 0.0], dtype=torch.float64)
    for tau in temperatures:
        w = negative_gradient_weights(s, positive, tau, loss=loss, wrt=wrt)
        weights.append(w.tolist())
        shares.append((w / w.sum()).tolist())
        # two negatives in the same denominator: their ratio does not depend on the rest
        w_probe = negative_gradient_weights(torch.cat([probe, s]), positive, tau, loss=loss, wrt=wrt)
        ratios.append((w_probe[0] / w_probe[1]).item())
    return {"analysis": "negative_gradient_weights", "similarity": s.tolist(), "temperatures": list(temperatures),
            "weights": weights, "share": shares, "hard_easy_ratio": ratios, "positive": positive,
            "loss": loss, "wrt": wrt}


def _supcon_anchor_loss(s_pos: Tensor, s_neg: Tensor, temperature: float, variant: str) -> Tensor:
    """One anchor's term of `contrastlab.losses.supcon` from its similarities: (..., P), (..., K) -> (...)."""
    logits = torch.cat([s_pos, s_neg], dim=-1) / temperature                    # (..., P + K), A(i)
    log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    positives = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    positives[..., :s_pos.shape[-1]] = True
    return losses._supcon_anchor_terms(log_p, positives, variant)


def supcon_gradient_norms(positives, negatives, temperature: float = 0.1, *,
                          variant: str = "out") -> tuple[Tensor, Tensor]:
    r"""How hard one anchor's SupCon loss pulls on each positive and pushes on each negative.

    SupCon normalises the projection, :math:`z_i = w_i / \lVert w_i \rVert`. Khosla et al. (2020,
    Sec. 3.2.3 and the appendix) write the gradient of anchor i's loss with respect to the
    un-normalised :math:`w_i` as a sum over the other views j, with :math:`s_{ij} = z_i \cdot z_j`:

    .. math::

        \frac{\partial L_i}{\partial w_i} = \frac{1}{\tau \lVert w_i \rVert} \sum_{j \in A(i)}
            \big(z_j - s_{ij} z_i\big) \big(P_{ij} - X_{ij}\big),

    :math:`P_{ij}` the anchor's softmax over A(i), :math:`X_{ij} = 0` for a negative,
    :math:`1/|P(i)|` for a positive in L_out and :math:`P_{ij} / \sum_{p \in P(i)} P_{ip}` in L_in.
    Since :math:`\lVert z_j - s_{ij} z_i \rVert = \sqrt{1 - s_{ij}^2}`, key j's share has norm
    :math:`\sqrt{1 - s_{ij}^2}\, |P_{ij} - X_{ij}| / \tau` at :math:`\lVert w_i \rVert = 1`: an easy
    positive (s near 1) or an easy negative (s near -1) adds almost nothing, a hard one (s near 0)
    much. Here the shares are computed by autograd, not from the formula: the anchor's term of
    `contrastlab.losses.supcon` (L_out, Eq. 2, or L_in, Eq. 3) is written as a function of one copy
    of w per key, and each copy's gradient is that key's share. The keys are unit vectors with the
    given cosines to the anchor and mutually orthogonal tangent parts.

    Args:
        positives: cosines s_p of the anchor's positives, (..., P) floating (or a sequence), P >= 1,
            each in [-1, 1].
        negatives: cosines s_n of its negatives, (..., K), K >= 1, the same leading dimensions.
        temperature: tau > 0 (the paper's 0.1 by default).
        variant: "out" (L_out) or "in" (L_in).

    Returns:
        ``(positive_norms, negative_norms)``, shapes (..., P) and (..., K), in the dtype of
        ``negatives`` (float64 for numbers), at :math:`\lVert w \rVert = 1` (at any other norm divide
        by it).
    """
    check_choice("variant", variant, ("out", "in"))
    _check_number("temperature", temperature)
    s_neg = torch.as_tensor(negatives, dtype=None if isinstance(negatives, Tensor) else torch.float64)
    check_tensor("negatives", s_neg, floating=True)
    s_pos = torch.as_tensor(positives, dtype=s_neg.dtype, device=s_neg.device)
    if s_neg.ndim == 0 or s_neg.shape[-1] == 0:
        raise ValueError(f"negatives must have shape (..., K) with K >= 1, got {shape_str(s_neg.shape)}")
    if s_pos.ndim == 0 or s_pos.shape[-1] == 0 or s_pos.shape[:-1] != s_neg.shape[:-1]:
        raise ValueError(f"positives must have shape {shape_str(s_neg.shape[:-1])} + (P,) with P >= 1 to match "
                         f"negatives {shape_str(s_neg.shape)}, got {shape_str(s_pos.shape)}")
    for name, s in (("positives", s_pos), ("negatives", s_neg)):
        if not bool(((s >= -1) & (s <= 1)).all()):
            raise ValueError(f"{name} must be cosines in [-1, 1], got values from {s.min().item():.4g} "
                             f"to {s.max().item():.4g}")
    s = torch.cat([s_pos, s_neg], dim=-1).detach()                        # (..., M) with M = P + K
    m = s.shape[-1]
    # key j = s_j e_0 + sqrt(1 - s_j^2) e_{j+1}: cosine s_j with the anchor w = e_0, tangents orthogonal
    keys = torch.zeros(*s.shape, m + 1, dtype=s.dtype, device=s.device)   # (..., M, M + 1)
    keys[..., 0] = s
    keys[..., 1:] = torch.diag_embed((1 - s.pow(2)).clamp_min(0).sqrt())
    anchor = torch.zeros(m + 1, dtype=s.dtype, device=s.device)
    anchor[0] = 1.0
    with torch.enable_grad():
        copies = anchor.expand(*s.shape, m + 1).clone().requires_grad_()  # (..., M, M + 1) one w per key
        sims = (nn.functional.normalize(copies, dim=-1) * keys).sum(-1)   # (..., M) = s, differentiable
        p = s_pos.shape[-1]
        loss = _supcon_anchor_loss(sims[..., :p], sims[..., p:], temperature, variant)
        (grad,) = torch.autograd.grad(loss.sum(), copies)                 # anchors are independent
    norms = grad.norm(dim=-1)                                             # (..., M)
    return norms[..., :p], norms[..., p:]


__all__ = ["SeparableCritic", "code_usage", "correlated_gaussians", "gaussian_log_ratio", "gaussian_mi", "gradient_weight_curves",
           "infonce_mi_estimate", "mi_bound_experiment", "negative_gradient_weights", "rho_for_mi",
           "supcon_gradient_norms", "train_separable_critic"]


@torch.no_grad()
def code_usage(method, images: Tensor, *, transform=None, batch_size: int = 256) -> dict[str, float]:
    """How evenly a trained SwAV spreads images over its K prototypes, as entropies / log K (1 = even).

    For each batch of ``batch_size`` images (in order) it takes the scores z^T C of the prototypes,
    then counts each image once for the prototype of (i) its Sinkhorn code (the argmax of the
    equal-partition assignment, with the method's epsilon and iterations, no queue) and (ii) its
    highest score (the assignment without the constraint). Returns ``code_entropy`` and
    ``argmax_entropy``: the entropy of each usage histogram over all images, divided by log K.
    """
    if not hasattr(method, "prototypes"):
        raise TypeError(f"method must be a SwAV (with prototypes), got {type(method).__name__}")
    was_training = method.training
    method.eval()
    device = method.prototypes.weight.device
    k = method.prototypes.weight.shape[0]
    counts = {"code": torch.zeros(k), "argmax": torch.zeros(k)}
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        x = transform(x) if transform is not None else x.float() / 255 if x.dtype == torch.uint8 else x.float()
        scores = method._scores(method.embed(x))
        codes = losses.sinkhorn(scores, method.config.epsilon, method.config.sinkhorn_iterations)
        counts["code"] += torch.bincount(codes.argmax(1).cpu(), minlength=k).float()
        counts["argmax"] += torch.bincount(scores.argmax(1).cpu(), minlength=k).float()
    method.train(was_training)

    def entropy(c: Tensor) -> float:
        p = c[c > 0] / c.sum()
        return float(-(p * p.log()).sum() / math.log(k))
    return {"code_entropy": entropy(counts["code"]), "argmax_entropy": entropy(counts["argmax"])}
