"""Tests for contrastlab.analysis: the InfoNCE bound on mutual information and the gradient weights of negatives and positives."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from contrastlab.analysis import (
    correlated_gaussians,
    gaussian_log_ratio,
    gaussian_mi,
    gradient_weight_curves,
    infonce_mi_estimate,
    mi_bound_experiment,
    negative_gradient_weights,
    rho_for_mi,
    supcon_gradient_norms,
)
from contrastlab.losses import nt_xent, supcon

# --------------------------------------------------------------------------------------------
# correlated Gaussians


def test_gaussian_mi_closed_form():
    assert gaussian_mi(1, 0.5) == pytest.approx(0.1438, abs=1e-4)     # -1/2 log(3/4)
    assert gaussian_mi(6, 0.5) == pytest.approx(6 * gaussian_mi(1, 0.5))
    assert gaussian_mi(3, 0.0) == 0.0
    assert gaussian_mi(2, -0.8) == gaussian_mi(2, 0.8)
    for mi, dim in [(0.5, 1), (4.0, 8), (8.0, 3)]:
        assert gaussian_mi(dim, rho_for_mi(mi, dim)) == pytest.approx(mi, rel=1e-12)


def test_correlated_gaussians_have_the_asked_correlation_and_are_reproducible():
    x, y = correlated_gaussians(20000, 3, 0.6, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (20000, 3)
    corr = ((x - x.mean(0)) * (y - y.mean(0))).mean(0) / (x.std(0) * y.std(0))
    assert torch.allclose(corr, torch.full((3,), 0.6), atol=0.02)
    assert y.std(0).sub(1).abs().max() < 0.03                      # unit variance marginals
    x2, _ = correlated_gaussians(20000, 3, 0.6, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    xb, yb = correlated_gaussians(4, 2, 0.1, batch=5)
    assert xb.shape == yb.shape == (5, 4, 2)


def test_optimal_critic_is_the_log_density_ratio_and_averages_to_the_mi():
    rho, dim = 0.7, 2
    x, y = correlated_gaussians(5, dim, rho, torch.Generator().manual_seed(1))
    x, y = x.double(), y.double()
    scores = gaussian_log_ratio(x, y, rho)                          # (5, 5)
    cond = torch.distributions.Normal(rho * x[:, None, :], math.sqrt(1 - rho**2))   # p(y | x_i)
    marg = torch.distributions.Normal(0.0, 1.0)
    expected = (cond.log_prob(y[None, :, :]) - marg.log_prob(y[None, :, :])).sum(-1)
    assert torch.allclose(scores, expected, atol=1e-10)
    # Monte-Carlo: the mean log ratio over positive pairs is I(X; Y)
    xm, ym = correlated_gaussians(1, dim, rho, torch.Generator().manual_seed(2), batch=40000)   # (B, 1, D)
    mc = gaussian_log_ratio(xm.double(), ym.double(), rho).mean().item()
    assert mc == pytest.approx(gaussian_mi(dim, rho), abs=0.03)


# --------------------------------------------------------------------------------------------
# the InfoNCE estimate


def test_infonce_estimate_is_log_n_minus_the_cross_entropy():
    scores = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    est = infonce_mi_estimate(scores)
    assert est.shape == (3,)
    for b in range(3):
        ce = F.cross_entropy(scores[b], torch.arange(6))
        assert est[b].item() == pytest.approx(math.log(6) - ce.item(), rel=1e-10)
    assert (est <= math.log(6)).all()
    assert infonce_mi_estimate(torch.zeros(4, 4)).item() == pytest.approx(0.0, abs=1e-6)   # a blind critic
    big = 50 * torch.eye(4)
    assert infonce_mi_estimate(big).item() == pytest.approx(math.log(4), abs=1e-6)      # a perfect one saturates


def test_infonce_estimate_takes_a_critic():
    x, y = correlated_gaussians(8, 2, 0.5, torch.Generator().manual_seed(0))
    via_critic = infonce_mi_estimate(lambda a, b: gaussian_log_ratio(a, b, 0.5), x, y)
    assert via_critic.item() == pytest.approx(infonce_mi_estimate(gaussian_log_ratio(x, y, 0.5)).item())


@pytest.mark.parametrize("call, match", [
    (lambda: infonce_mi_estimate(torch.zeros(3, 4)), "square"),
    (lambda: infonce_mi_estimate(torch.zeros(3, 3), torch.zeros(3, 1), torch.zeros(3, 1)), "only taken"),
    (lambda: infonce_mi_estimate(lambda a, b: a @ b.T), "needs samples"),
    (lambda: infonce_mi_estimate("scores"), "tensor or a callable"),
    (lambda: gaussian_mi(1, 1.0), "rho"),
    (lambda: correlated_gaussians(0, 1, 0.5), "n must be"),
    (lambda: mi_bound_experiment(batch_sizes=(1, 4)), "batch_sizes"),
    (lambda: mi_bound_experiment(critic="learned"), "critic"),
])
def test_analysis_errors_name_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_mi_bound_with_the_optimal_critic_stays_below_both_ceilings():
    result = mi_bound_experiment(batch_sizes=(2, 4, 8, 64, 256), mis=(0.5, 8.0), dim=4, eval_samples=4096, seed=0)
    json.dumps(result)                                              # JSON-able, for caching
    assert result["log_n"] == pytest.approx([math.log(n) for n in (2, 4, 8, 64, 256)])
    for run in result["runs"]:
        assert run["true_mi"] == pytest.approx(gaussian_mi(4, run["rho"]))
        for est, err, log_n in zip(run["estimate"], run["stderr"], result["log_n"]):
            assert est <= log_n + 1e-6                              # holds for every batch
            assert est <= run["true_mi"] + 3 * err + 1e-3           # holds in expectation
    low, high = result["runs"]
    # large I: the estimate is pinned to log N at small N
    for est, log_n in zip(high["estimate"][:3], result["log_n"][:3]):
        assert est == pytest.approx(log_n, abs=0.05)
    # small I: a large batch gets close to the truth, a small one does not
    assert low["estimate"][-1] == pytest.approx(0.5, abs=0.05)
    assert low["estimate"][0] < 0.4
    assert high["estimate"] == sorted(high["estimate"])             # grows with N
    again = mi_bound_experiment(batch_sizes=(2, 4, 8, 64, 256), mis=(0.5, 8.0), dim=4, eval_samples=4096, seed=0)
    assert again == result


def test_mi_bound_with_a_trained_separable_critic_learns_and_respects_log_n():
    result = mi_bound_experiment(batch_sizes=(2, 32), mis=(1.0,), dim=2, critic="separable", steps=150,
                                 eval_samples=1024, seed=0)
    (run,) = result["runs"]
    assert run["estimate"][0] <= math.log(2) + 1e-6
    assert run["estimate"][1] <= math.log(32) + 1e-6
    assert 0.4 < run["estimate"][1] < 1.0 + 3 * run["stderr"][1]    # learnt a good part of I = 1 nat


# --------------------------------------------------------------------------------------------
# gradient weights of the negatives


def test_negative_weights_match_the_closed_form_and_autograd():
    tau = 0.2
    s_pos = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    s_neg = torch.tensor([0.9, 0.3, 0.0, -0.5], dtype=torch.float64, requires_grad=True)
    weights = negative_gradient_weights(s_neg.detach(), s_pos.detach(), tau)
    denom = math.exp(0.7 / tau) + sum(math.exp(s / tau) for s in s_neg.tolist())
    expected = torch.tensor([math.exp(s / tau) / (tau * denom) for s in s_neg.tolist()], dtype=torch.float64)
    assert torch.allclose(weights, expected, rtol=1e-12)
    logits = torch.cat([s_pos[None], s_neg]) / tau                  # the anchor's row of NT-Xent
    F.cross_entropy(logits[None], torch.tensor([0])).backward()
    assert torch.allclose(s_neg.grad, weights, rtol=1e-10)
    assert s_pos.grad.item() == pytest.approx(-weights.sum().item(), rel=1e-10)   # the positive pulls back
    # plain numbers work too, in float64
    assert torch.allclose(negative_gradient_weights([0.9, 0.3, 0.0, -0.5], 0.7, tau), expected, rtol=1e-12)


def test_negative_weights_rebuild_the_gradient_of_nt_xent():
    """dL/dz of the library's nt_xent (dot products) from the per-anchor weights: dL/dS = W, dL/dz = (W + W^T) z."""
    n, d, tau = 4, 3, 0.5
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    nt_xent(z1, z2, tau, normalize=False).backward()
    z = torch.cat([z1, z2]).detach()                                # (2N, D)
    sim = z @ z.T
    grad_s = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        neg = [j for j in range(2 * n) if j not in (i, pos)]
        w = negative_gradient_weights(sim[i, neg], sim[i, pos], tau)
        grad_s[i, neg] = w / (2 * n)                                # the loss is the mean over 2N anchors
        grad_s[i, pos] = -w.sum() / (2 * n)
    grad_z = (grad_s + grad_s.T) @ z
    # nt_xent runs in float32: compare with a float32 tolerance
    assert torch.allclose(torch.cat([z1.grad, z2.grad]), grad_z, atol=1e-5)


def test_supcon_negative_weights_match_autograd_for_both_variants():
    tau = 0.1
    s_pos = torch.tensor([0.8, 0.5, 0.6], dtype=torch.float64, requires_grad=True)
    s_neg = torch.tensor([0.7, 0.1, -0.3, 0.4], dtype=torch.float64, requires_grad=True)
    weights = negative_gradient_weights(s_neg.detach(), s_pos.detach(), tau, loss="supcon")
    for variant in ("out", "in"):
        s_neg.grad = None
        log_z = torch.logsumexp(torch.cat([s_pos, s_neg]) / tau, dim=0)
        log_p = s_pos / tau - log_z
        loss = -log_p.mean() if variant == "out" else -torch.logsumexp(log_p, 0) + math.log(3)
        loss.backward()
        assert torch.allclose(s_neg.grad, weights, rtol=1e-10), variant
    with pytest.raises(ValueError, match="one positive"):
        negative_gradient_weights(s_neg.detach(), s_pos.detach(), tau)   # nt_xent takes one


def test_projection_weights_match_autograd_per_negative():
    """The share of dl/dw (w the anchor before normalisation, ||w|| = 1) that comes through each key."""
    tau, d = 0.3, 5
    g = torch.Generator().manual_seed(3)
    w = F.normalize(torch.randn(d, generator=g, dtype=torch.float64), dim=0)
    keys = F.normalize(torch.randn(6, d, generator=g, dtype=torch.float64), dim=1)   # positive first
    copies = w.repeat(6, 1).requires_grad_()                        # one copy of w per key
    sims = (F.normalize(copies, dim=1) * keys).sum(1)               # (6,)
    F.cross_entropy((sims / tau)[None], torch.tensor([0])).backward()
    s = (w @ keys.T).detach()
    weights = negative_gradient_weights(s[1:], s[0], tau, wrt="projection")
    assert torch.allclose(copies.grad[1:].norm(dim=1), weights, rtol=1e-8)


def test_small_temperatures_focus_the_gradient_on_hard_negatives():
    taus = (0.05, 0.1, 0.2, 0.5, 1.0)
    curves = gradient_weight_curves(taus)
    json.dumps(curves)
    ratios = curves["hard_easy_ratio"]
    assert ratios == pytest.approx([math.exp(0.9 / t) for t in taus], rel=1e-9)
    assert ratios == sorted(ratios, reverse=True)                   # grows as tau falls
    s = torch.tensor(curves["similarity"])
    hardest = s >= 0.8
    top_share = [torch.tensor(share)[hardest].sum().item() for share in curves["share"]]
    assert top_share == sorted(top_share, reverse=True)
    assert top_share[0] > 0.95 and top_share[-1] < 0.3
    for share in curves["share"]:
        assert sum(share) == pytest.approx(1.0)
    proj = gradient_weight_curves(taus, wrt="projection")
    assert proj["weights"][0][0] == 0.0 and proj["weights"][0][-1] == 0.0   # s = -1 and s = 1: no tangent push


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "triplet"}, "loss"),
    ({"wrt": "z"}, "wrt"),
    ({"temperature": 0.0}, "temperature"),
])
def test_negative_weights_errors(kwargs, match):
    args = {"negatives": [0.1, 0.2], "positives": 0.5, "temperature": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        negative_gradient_weights(args.pop("negatives"), args.pop("positives"), args.pop("temperature"), **args)


# --------------------------------------------------------------------------------------------
# SupCon: the gradient each positive and each negative contributes (Khosla et al. 2020, Sec. 3.2.3)


def _paper_norms(s_pos, s_neg, tau, variant):
    """The appendix's closed form: key j's share of dL_i/dw_i has norm sqrt(1 - s_j^2) |P_ij - X_ij| / tau."""
    prob = torch.softmax(torch.cat([s_pos, s_neg], -1) / tau, -1)
    p_pos, p_neg = prob[..., :s_pos.shape[-1]], prob[..., s_pos.shape[-1]:]
    x_pos = torch.full_like(p_pos, 1 / s_pos.shape[-1]) if variant == "out" else p_pos / p_pos.sum(-1, keepdim=True)
    return ((1 - s_pos ** 2).sqrt() * (p_pos - x_pos).abs() / tau, (1 - s_neg ** 2).sqrt() * p_neg / tau)


@pytest.mark.parametrize("variant", ["out", "in"])
def test_supcon_gradient_norms_match_the_papers_closed_form(variant):
    g = torch.Generator().manual_seed(0)
    s_pos = torch.rand(4, 3, generator=g, dtype=torch.float64) * 2 - 1      # (B, P): 4 anchors, 3 positives
    s_neg = torch.rand(4, 7, generator=g, dtype=torch.float64) * 2 - 1      # (B, K)
    for tau in (0.1, 0.5):
        pos, neg = supcon_gradient_norms(s_pos, s_neg, tau, variant=variant)
        assert pos.shape == (4, 3) and neg.shape == (4, 7) and pos.dtype == torch.float64
        want_pos, want_neg = _paper_norms(s_pos, s_neg, tau, variant)
        assert torch.allclose(pos, want_pos, rtol=1e-9, atol=1e-12)
        assert torch.allclose(neg, want_neg, rtol=1e-9, atol=1e-12)
        # the negatives' shares are those of negative_gradient_weights, in both variants
        assert torch.allclose(neg, negative_gradient_weights(s_neg, s_pos, tau, loss="supcon", wrt="projection"))


def test_supcon_gradient_norms_match_finite_differences_of_a_naive_loss():
    """Perturb one copy of w at a time in the paper's Eq. 2 / Eq. 3, written as a plain loop."""
    tau, h = 0.2, 1e-6
    s_pos, s_neg = [0.7, 0.1], [0.3, -0.6, 0.9]
    sims = s_pos + s_neg
    d = len(sims) + 1
    keys = torch.zeros(len(sims), d, dtype=torch.float64)
    for j, s in enumerate(sims):
        keys[j, 0], keys[j, j + 1] = s, math.sqrt(1 - s * s)

    def naive(copies, variant):                       # copies[j]: the anchor as key j sees it
        logits = [float(F.normalize(copies[j], dim=0) @ keys[j]) / tau for j in range(len(sims))]
        z = sum(math.exp(x) for x in logits)
        probs = [math.exp(logits[p]) / z for p in range(len(s_pos))]
        if variant == "out":
            return -sum(math.log(q) for q in probs) / len(probs)
        return -math.log(sum(probs) / len(probs))

    for variant in ("out", "in"):
        base = torch.zeros(len(sims), d, dtype=torch.float64)
        base[:, 0] = 1.0
        fd = torch.zeros(len(sims))
        for j in range(len(sims)):
            grad = []
            for k in range(d):
                up, down = base.clone(), base.clone()
                up[j, k] += h
                down[j, k] -= h
                grad.append((naive(up, variant) - naive(down, variant)) / (2 * h))
            fd[j] = torch.tensor(grad).norm()
        pos, neg = supcon_gradient_norms(s_pos, s_neg, tau, variant=variant)
        assert torch.allclose(torch.cat([pos, neg]).float(), fd, rtol=1e-4, atol=1e-6), variant


def test_supcon_anchor_terms_average_to_the_librarys_loss_and_gradient():
    """The per-anchor loss that supcon_gradient_norms differentiates is losses.supcon, one anchor at a time."""
    from contrastlab.analysis import _supcon_anchor_loss

    g = torch.Generator().manual_seed(1)
    n, v, tau = 6, 2, 0.2
    labels = torch.tensor([0, 0, 1, 2, 1, 0])
    for variant in ("out", "in"):
        z = torch.randn(n, v, 5, generator=g, dtype=torch.float64, requires_grad=True)
        want = supcon(z, labels, tau, variant)
        (want_grad,) = torch.autograd.grad(want, z)
        views = F.normalize(z.transpose(0, 1).reshape(v * n, -1), dim=1)    # (VN, D), view-major
        view_labels = labels.repeat(v)
        terms = []
        for i in range(v * n):
            others = [j for j in range(v * n) if j != i]
            pos = [j for j in others if view_labels[j] == view_labels[i]]
            neg = [j for j in others if view_labels[j] != view_labels[i]]
            terms.append(_supcon_anchor_loss(views[pos] @ views[i], views[neg] @ views[i], tau, variant))
        got = torch.stack(terms).mean()
        (got_grad,) = torch.autograd.grad(got, z)
        assert got.item() == pytest.approx(want.item(), rel=1e-6), variant   # supcon runs in float32
        assert torch.allclose(got_grad, want_grad.double(), atol=1e-6), variant


def test_supcon_one_positive_one_negative_closed_form():
    """With one positive and one negative both variants are softplus((s_n - s_p) / tau)."""
    tau, s_p, s_n = 0.1, 0.4, 0.2
    sig = 1 / (1 + math.exp(-(s_n - s_p) / tau))
    for variant in ("out", "in"):
        pos, neg = supcon_gradient_norms([s_p], [s_n], tau, variant=variant)
        assert pos.item() == pytest.approx(math.sqrt(1 - s_p ** 2) * sig / tau, rel=1e-12)
        assert neg.item() == pytest.approx(math.sqrt(1 - s_n ** 2) * sig / tau, rel=1e-12)


def test_easy_keys_get_little_gradient_and_l_in_neglects_hard_positives():
    s = torch.tensor([-0.999, -0.5, 0.0, 0.5, 0.999], dtype=torch.float64)
    context_pos = torch.full((5, 3), 0.8, dtype=torch.float64)
    negs = torch.zeros(5, 10, dtype=torch.float64)
    out, _ = supcon_gradient_norms(torch.cat([s[:, None], context_pos], 1), negs, 0.1)
    assert out[4, 0] < 0.1 * out[2, 0]                      # an easy positive (s = 0.999) against a hard one (s = 0)
    _, neg = supcon_gradient_norms(context_pos, torch.cat([s[:, None], negs[:, 1:]], 1), 0.1)
    assert neg[0, 0] < 1e-3 * neg[2, 0]                     # an easy negative (s = -0.999) against a hard one
    assert neg[3, 0] > neg[2, 0]                            # more similar, harder, more push
    inn, _ = supcon_gradient_norms(torch.cat([s[:, None], context_pos], 1), negs, 0.1, variant="in")
    assert inn[2, 0] < 1e-3 * out[2, 0]                     # L_in weights a positive by its own softmax share
    with torch.no_grad():                                   # works under no_grad (it needs autograd inside)
        again, _ = supcon_gradient_norms(torch.cat([s[:, None], context_pos], 1), negs, 0.1)
    assert torch.equal(again, out)


@pytest.mark.parametrize("args, kwargs, error, match", [
    (([0.5], [0.1], 0.1), {"variant": "mean"}, ValueError, "variant"),
    (([0.5], [0.1], 0.0), {}, ValueError, "temperature"),
    (([0.5], [], 0.1), {}, ValueError, "negatives"),
    (([[0.5]], [0.1, 0.2], 0.1), {}, ValueError, "positives"),
    (([1.5], [0.1], 0.1), {}, ValueError, r"\[-1, 1\]"),
    (([0.5], torch.tensor([1, 0]), 0.1), {}, TypeError, "floating"),
])
def test_supcon_gradient_norms_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        supcon_gradient_norms(*args, **kwargs)
