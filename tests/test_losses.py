"""Tests for contrastlab.losses: each loss against a naive loop written from its paper, closed forms, bad inputs."""
import math

import pytest
import torch

from contrastlab.losses import byol, info_nce, margin_triplet, nt_logistic, nt_xent, sinkhorn, supcon, swav


def nt_xent_naive(z1: torch.Tensor, z2: torch.Tensor, tau: float, normalize: bool = True) -> torch.Tensor:
    """Algorithm 1 of SimCLR, literally: 1-based indices, views 2k-1 and 2k of image k, python loops.

    ``normalize=False`` replaces the cosine by the dot product (SimCLR's Table 5 without l2 norm)."""
    n = z1.shape[0]
    z = {}
    for k in range(1, n + 1):
        z[2 * k - 1] = z1[k - 1]
        z[2 * k] = z2[k - 1]

    def s(i, j):
        return torch.dot(z[i], z[j]) / ((z[i].norm() * z[j].norm()) if normalize else 1.0)

    def loss(i, j):
        denominator = sum(torch.exp(s(i, k) / tau) for k in range(1, 2 * n + 1) if k != i)
        return -torch.log(torch.exp(s(i, j) / tau) / denominator)

    total = sum(loss(2 * k - 1, 2 * k) + loss(2 * k, 2 * k - 1) for k in range(1, n + 1))
    return total / (2 * n)


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("tau", [0.07, 0.5, 1.0])
def test_matches_algorithm_1(n, tau):
    g = torch.Generator().manual_seed(100 * n + int(100 * tau))
    z1 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    z2 = z1 + 0.7 * torch.randn(n, 5, generator=g, dtype=torch.float64)
    expected = nt_xent_naive(z1, z2, tau)
    got = nt_xent(z1, z2, tau)
    assert got.dtype == torch.float32 and got.ndim == 0
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_gradients_match_algorithm_1():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad(nt_xent(z1, z2, 0.3), (z1, z2))
    grads_naive = torch.autograd.grad(nt_xent_naive(z1, z2, 0.3), (z1, z2))
    for got, expected in zip(grads, grads_naive):
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_identical_embeddings_give_log_2n_minus_1(n):
    # every similarity is 1: one positive among 2N - 1 equal terms
    z = torch.ones(n, 7)
    for tau in (0.1, 0.5):
        assert nt_xent(z, z, tau).item() == pytest.approx(math.log(2 * n - 1), abs=1e-5)


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_orthogonal_images_closed_form(tau):
    # z2 = z1 with mutually orthogonal rows: the positive has s = 1, the 2N - 2 other views s = 0,
    # so l = -log(e^{1/tau} / (e^{1/tau} + 2N - 2)) = log(1 + (2N - 2) e^{-1/tau}) for every anchor.
    n = 4
    z1 = torch.eye(6)[:n] * torch.arange(1.0, n + 1)[:, None]     # orthogonal, different norms
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / tau))
    assert nt_xent(z1, z1.clone(), tau).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # z2 = -z1: the positive now has s = -1: l = log(1 + (2N - 2) e^{1/tau})
    expected_opposite = math.log(1 + (2 * n - 2) * math.exp(1 / tau))
    assert nt_xent(z1, -z1, tau).item() == pytest.approx(expected_opposite, rel=1e-5)


def test_invariances():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    base = nt_xent(z1, z2)
    scale1, scale2 = torch.rand(8, 1, generator=g) * 10 + 0.1, torch.rand(8, 1, generator=g) * 10 + 0.1
    torch.testing.assert_close(nt_xent(scale1 * z1, scale2 * z2), base)   # cosine: row scales do not matter
    torch.testing.assert_close(nt_xent(z2, z1), base)                     # the two views are symmetric
    perm = torch.randperm(8, generator=g)
    torch.testing.assert_close(nt_xent(z1[perm], z2[perm]), base)         # the order of images does not matter


def test_lower_for_aligned_views():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(32, 16, generator=g)
    close = nt_xent(z1, z1 + 0.01 * torch.randn(32, 16, generator=g))
    unrelated = nt_xent(z1, torch.randn(32, 16, generator=g))
    assert close < unrelated


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    h1 = z1.to(dtype).requires_grad_()
    h2 = z2.to(dtype).requires_grad_()
    loss = nt_xent(h1, h2, 0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    reference = nt_xent(h1.detach().float(), h2.detach().float(), 0.1)  # same inputs, all in fp32
    torch.testing.assert_close(loss, reference, atol=1e-5, rtol=1e-5)
    assert abs(loss.item() - nt_xent(z1, z2, 0.1).item()) < 0.05 * loss.item()
    loss.backward()
    assert h1.grad.dtype == dtype and torch.isfinite(h1.grad.float()).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_zero_projection_in_half_precision_stays_finite(dtype):
    # F.normalize's eps=1e-12 is 0 in fp16, so a zero row normalised in half is 0/0 = NaN (lightly #1259)
    z1 = torch.randn(4, 8, generator=torch.Generator().manual_seed(5)).to(dtype)
    z1[1] = 0
    z2 = z1.flip(0).clone()
    if dtype == torch.float16:
        assert torch.isnan(torch.nn.functional.normalize(z1, dim=1)).any()   # the pitfall is real
    loss = nt_xent(z1, z2, 0.5)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, nt_xent(z1.float(), z2.float(), 0.5))


def test_under_cpu_autocast():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent(z1, z2, 0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, nt_xent(z1, z2, 0.1))


def test_learnable_temperature_tensor():
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    tau = torch.tensor(0.5, requires_grad=True)
    loss = nt_xent(z1, z2, tau)
    loss.backward()
    assert tau.grad is not None
    torch.testing.assert_close(loss, nt_xent(z1, z2, 0.5))


def test_errors():
    z = torch.randn(8, 128)
    with pytest.raises(ValueError, match=r"^z1 and z2 must have the same shape, got \(8, 128\) and \(8, 64\)$"):
        nt_xent(z, torch.randn(8, 64))
    with pytest.raises(TypeError, match="z1 must be a torch.Tensor, got list"):
        nt_xent([[1.0, 2.0]], z)
    with pytest.raises(ValueError, match=r"z2 must have 2 dimensions, got shape \(8\)"):
        nt_xent(z, torch.randn(8))
    with pytest.raises(TypeError, match="z1 must be a floating-point tensor, got dtype torch.int64"):
        nt_xent(torch.ones(8, 128, dtype=torch.long), z)
    with pytest.raises(ValueError, match="a batch of one has no negatives"):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4))
    for bad in (0.0, -0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0, got"):
            nt_xent(z, z, bad)
    with pytest.raises(TypeError, match="temperature must be a number, got str"):
        nt_xent(z, z, "0.5")


# ============================================================================================
# helpers shared by the naive references below


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(a, b) / (a.norm() * b.norm())


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(a, b)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def close(got: torch.Tensor, expected) -> None:
    assert got.dtype == torch.float32 and got.ndim == 0
    torch.testing.assert_close(got.double(), torch.as_tensor(expected, dtype=torch.float64), atol=1e-5, rtol=1e-5)


def views_2n(z1, z2):
    """SimCLR's 1-based layout: views 2k-1 and 2k of image k."""
    z = {}
    for k in range(1, z1.shape[0] + 1):
        z[2 * k - 1], z[2 * k] = z1[k - 1], z2[k - 1]
    return z


def partner(i):
    return i + 1 if i % 2 == 1 else i - 1


def negatives_of(z, i, semi_hard, sim=cos):
    """Indices of the negatives of anchor i; semi-hard keeps those less similar than the positive."""
    all_negs = [j for j in z if j != i and j != partner(i)]
    if not semi_hard:
        return all_negs
    kept = [j for j in all_negs if sim(z[i], z[j]) < sim(z[i], z[partner(i)])]
    return kept or all_negs


# ============================================================================================
# info_nce


def info_nce_naive(q, k_pos, negs, tau):
    """CPC Eq. 4 per query: -log(exp(q.k+/tau) / sum over {k+} and the negatives), then the mean."""
    total = 0.0
    for n in range(q.shape[0]):
        keys = negs if negs.ndim == 2 else negs[n]
        numerator = torch.exp(cos(q[n], k_pos[n]) / tau)
        denominator = numerator + sum(torch.exp(cos(q[n], keys[j]) / tau) for j in range(keys.shape[0]))
        total = total - torch.log(numerator / denominator)
    return total / q.shape[0]


@pytest.mark.parametrize("per_query", [False, True])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_info_nce_matches_naive(per_query, tau):
    q, k = randn(5, 6, seed=1), randn(5, 6, seed=2)
    negs = randn(5, 4, 6, seed=3) if per_query else randn(7, 6, seed=3)
    close(info_nce(q, k, negs, tau), info_nce_naive(q, k, negs, tau))


@pytest.mark.parametrize("k", [1, 4, 100])
def test_info_nce_identical_keys_give_log_k_plus_1(k):
    q = randn(3, 8, seed=4)
    negs = q[:, None, :].expand(3, k, 8) * 3.0          # per query, all equal to the query (scaled)
    close(info_nce(q, 2.0 * q, negs, 0.1), math.log(k + 1))


def test_info_nce_gradients_match_naive():
    q, k, negs = (randn(4, 5, seed=s).requires_grad_() for s in (5, 6, 7))
    got = torch.autograd.grad(info_nce(q, k, negs, 0.2), (q, k, negs))
    expected = torch.autograd.grad(info_nce_naive(q, k, negs, 0.2), (q, k, negs))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def test_info_nce_errors():
    q = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"^query and positive must have the same shape, got \(4, 8\) and \(4, 7\)$"):
        info_nce(q, torch.randn(4, 7), torch.randn(5, 8))
    with pytest.raises(ValueError, match=r"negatives must have shape \(K, 8\) with K >= 1 .* got \(5, 7\)"):
        info_nce(q, q, torch.randn(5, 7))
    with pytest.raises(ValueError, match=r"negatives must have shape \(K, 8\) or \(4, K, 8\) .* got \(3, 5, 8\)"):
        info_nce(q, q, torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match=r"K >= 1 .* got \(0, 8\)"):
        info_nce(q, q, torch.randn(0, 8))
    with pytest.raises(TypeError, match="negatives must be a floating-point tensor, got dtype torch.int64"):
        info_nce(q, q, torch.ones(5, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0.0"):
        info_nce(q, q, torch.randn(5, 8), 0.0)


# ============================================================================================
# nt_logistic and margin_triplet (SimCLR Table 2)


def nt_logistic_naive(z1, z2, tau, semi_hard, sim=cos):
    z = views_2n(z1, z2)
    total = 0.0
    for i in z:
        negs = negatives_of(z, i, semi_hard, sim)
        positive = -torch.log(torch.sigmoid(sim(z[i], z[partner(i)]) / tau))
        negative = -sum(torch.log(torch.sigmoid(-sim(z[i], z[j]) / tau)) for j in negs) / len(negs)
        total = total + positive + negative
    return total / len(z)


def margin_naive(z1, z2, m, semi_hard, sim=cos):
    z = views_2n(z1, z2)
    total = 0.0
    for i in z:
        negs = negatives_of(z, i, semi_hard, sim)
        s_pos = sim(z[i], z[partner(i)])
        total = total + sum(max(0.0, sim(z[i], z[j]) - s_pos + m) for j in negs) / len(negs)
    return total / len(z)


@pytest.mark.parametrize("semi_hard", [False, True])
@pytest.mark.parametrize("n", [2, 5])
def test_nt_logistic_and_margin_match_naive(semi_hard, n):
    z1 = randn(n, 4, seed=10 + n)
    z2 = z1 + 0.8 * randn(n, 4, seed=20 + n)
    close(nt_logistic(z1, z2, 0.3, semi_hard=semi_hard), nt_logistic_naive(z1, z2, 0.3, semi_hard))
    close(margin_triplet(z1, z2, 0.4, semi_hard=semi_hard), margin_naive(z1, z2, 0.4, semi_hard))


@pytest.mark.parametrize("semi_hard", [False, True])
def test_losses_without_l2_normalisation_use_the_dot_product(semi_hard):
    z1 = 0.5 * randn(4, 3, seed=50)
    z2 = z1 + 0.5 * randn(4, 3, seed=51)
    close(nt_xent(z1, z2, 0.7, normalize=False), nt_xent_naive(z1, z2, 0.7, normalize=False))
    close(nt_logistic(z1, z2, 0.7, semi_hard, normalize=False), nt_logistic_naive(z1, z2, 0.7, semi_hard, dot))
    close(margin_triplet(z1, z2, 0.5, semi_hard, normalize=False), margin_naive(z1, z2, 0.5, semi_hard, dot))
    # without the norm, scaling the projections changes the loss; with it, it does not
    assert nt_xent(3 * z1, 3 * z2, 0.7, normalize=False) != nt_xent(z1, z2, 0.7, normalize=False)
    close(nt_xent(3 * z1, 3 * z2, 0.7), nt_xent(z1, z2, 0.7))
    with pytest.raises(TypeError, match="normalize must be a bool, got str"):
        nt_xent(z1, z2, 0.7, normalize="no")


def test_semi_hard_selects_and_falls_back():
    z1 = randn(6, 4, seed=30)
    z2 = randn(6, 4, seed=31)                          # unrelated views: some anchors have no semi-hard negative
    z = views_2n(z1, z2)
    kinds = {len(negatives_of(z, i, True)) == len(negatives_of(z, i, False)) for i in z}
    assert kinds == {True, False}                      # both cases (fallback or all easier, and a strict subset) occur
    close(margin_triplet(z1, z2, 0.5, semi_hard=True), margin_naive(z1, z2, 0.5, True))
    assert margin_triplet(z1, z2, 0.5, semi_hard=True) != margin_triplet(z1, z2, 0.5)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_logistic_and_margin_identical_embeddings(tau):
    z = torch.ones(4, 3)                               # every similarity is 1
    expected = math.log1p(math.exp(-1 / tau)) + math.log1p(math.exp(1 / tau))
    close(nt_logistic(z, z, tau), expected)
    close(margin_triplet(z, z, 0.7), 0.7)
    close(margin_triplet(z, z, 0.7, semi_hard=True), 0.7)   # no s_neg < s_pos: falls back to all


def test_margin_zero_when_positive_wins_by_margin():
    z1 = torch.eye(4)                                  # orthogonal images: s_pos = 1, every s_neg = 0
    close(margin_triplet(z1, z1.clone(), 1.0), 0.0)
    close(margin_triplet(z1, z1.clone(), 1.5), 0.5)


def test_nt_logistic_and_margin_gradients_match_naive():
    z1, z2 = randn(3, 4, seed=40).requires_grad_(), randn(3, 4, seed=41).requires_grad_()
    for fast, naive in ((nt_logistic(z1, z2, 0.5, semi_hard=True), nt_logistic_naive(z1, z2, 0.5, True)),
                        (margin_triplet(z1, z2, 1.0), margin_naive(z1, z2, 1.0, False))):
        for g, e in zip(torch.autograd.grad(fast, (z1, z2)), torch.autograd.grad(naive, (z1, z2))):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("loss", [nt_logistic, margin_triplet])
def test_pair_loss_errors(loss):
    z = torch.randn(8, 16)
    with pytest.raises(ValueError, match=r"^z1 and z2 must have the same shape, got \(8, 16\) and \(8, 4\)$"):
        loss(z, torch.randn(8, 4))
    with pytest.raises(ValueError, match=r"a batch of one has no negatives\), got N = 1$"):
        loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(TypeError, match="z2 must be a floating-point tensor, got dtype torch.int64"):
        loss(z, torch.ones(8, 16, dtype=torch.long))
    with pytest.raises(TypeError, match="semi_hard must be a bool, got str"):
        loss(z, z, semi_hard="yes")
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got -1.0"):
        nt_logistic(z, z, -1.0)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0, got -0.1"):
        margin_triplet(z, z, -0.1)


# ============================================================================================
# supcon


def supcon_naive(z, labels, tau, variant):
    """Khosla et al. Eq. 2 (out) and Eq. 3 (in), anchors i in I, written with python loops; mean over anchors."""
    n, v, _ = z.shape
    items = [(z[a, b], int(labels[a])) for b in range(v) for a in range(n)]
    total, anchors = 0.0, 0
    for i, (zi, yi) in enumerate(items):
        a_set = [a for a in range(len(items)) if a != i]
        p_set = [p for p in a_set if items[p][1] == yi]
        if not p_set:
            continue
        denominator = sum(torch.exp(cos(zi, items[a][0]) / tau) for a in a_set)
        probs = [torch.exp(cos(zi, items[p][0]) / tau) / denominator for p in p_set]
        if variant == "out":
            total = total - sum(torch.log(pr) for pr in probs) / len(p_set)
        else:
            total = total - torch.log(sum(probs) / len(p_set))
        anchors += 1
    return total / anchors


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("v", [1, 2, 3])
def test_supcon_matches_naive(variant, v):
    z = randn(6, v, 5, seed=50 + v)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])         # label 2 alone: with V = 1 that anchor has no positive
    close(supcon(z, labels, 0.2, variant), supcon_naive(z, labels, 0.2, variant))


@pytest.mark.parametrize("n", [2, 7])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_supcon_with_instance_labels_is_nt_xent(n, tau):
    z = randn(n, 2, 8, seed=60 + n, dtype=torch.float32)
    labels = torch.arange(n)
    expected = nt_xent(z[:, 0], z[:, 1], tau)
    torch.testing.assert_close(supcon(z, labels, tau), expected)
    torch.testing.assert_close(supcon(z, labels, tau, "in"), expected)   # one positive each: in == out


def test_supcon_in_differs_from_out_with_several_positives():
    z, labels = randn(6, 2, 5, seed=70), torch.tensor([0, 0, 1, 1, 1, 2])
    assert supcon(z, labels, 0.1, "in") < supcon(z, labels, 0.1, "out")   # Jensen: log of mean >= mean of log


def test_supcon_gradients_match_naive():
    z = randn(4, 2, 3, seed=71).requires_grad_()
    labels = torch.tensor([1, 0, 1, 1])
    (got,) = torch.autograd.grad(supcon(z, labels, 0.3), z)
    (expected,) = torch.autograd.grad(supcon_naive(z, labels, 0.3, "out"), z)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_supcon_no_positive_anywhere_is_zero():
    z = torch.randn(4, 1, 8)
    assert supcon(z, torch.arange(4)).item() == 0.0


@pytest.mark.parametrize("variant", ["out", "in"])
def test_supcon_anchor_without_positive_has_finite_gradient(variant):
    z = torch.randn(6, 1, 5, requires_grad=True)
    supcon(z, torch.tensor([0, 1, 0, 2, 1, 0]), 0.2, variant).backward()   # label 2 has no positive
    assert torch.isfinite(z.grad).all()


def test_supcon_errors():
    z = torch.randn(8, 2, 16)
    with pytest.raises(ValueError, match=r"^labels must have one entry per sample, got 7 for z with N = 8$"):
        supcon(z, torch.arange(7))
    with pytest.raises(ValueError, match=r"z must have 3 dimensions, got shape \(8, 16\)"):
        supcon(torch.randn(8, 16), torch.arange(8))
    with pytest.raises(ValueError, match=r"^unknown variant 'mid'; expected one of 'out', 'in'$"):
        supcon(z, torch.arange(8), variant="mid")
    with pytest.raises(TypeError, match="labels must be a torch.Tensor, got list"):
        supcon(z, [0] * 8)
    with pytest.raises(TypeError, match="z must be a floating-point tensor, got dtype torch.int64"):
        supcon(torch.ones(8, 2, 16, dtype=torch.long), torch.arange(8))
    with pytest.raises(ValueError, match=r"N \* V >= 2 .* got shape \(1, 1, 16\)"):
        supcon(torch.randn(1, 1, 16), torch.arange(1))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        supcon(z, torch.arange(8), 0)


# ============================================================================================
# byol


def test_byol_matches_naive_and_closed_forms():
    p, z = randn(5, 7, seed=80), randn(5, 7, seed=81)
    expected = sum(((p[n] / p[n].norm() - z[n] / z[n].norm()) ** 2).sum() for n in range(5)) / 5
    close(byol(p, z), expected)
    close(byol(p, 3.0 * p), 0.0)
    close(byol(p, -p), 4.0)


def test_byol_gradient_flows_only_to_the_prediction():
    p = torch.randn(4, 6, requires_grad=True)
    z = torch.randn(4, 6, requires_grad=True)
    byol(p, z.detach()).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and z.grad is None


def test_byol_errors():
    with pytest.raises(ValueError, match=r"^p and z must have the same shape, got \(4, 6\) and \(4, 5\)$"):
        byol(torch.randn(4, 6), torch.randn(4, 5))
    with pytest.raises(TypeError, match="p must be a floating-point tensor, got dtype torch.int64"):
        byol(torch.ones(4, 6, dtype=torch.long), torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"z must have 2 dimensions, got shape \(4\)"):
        byol(torch.randn(4, 6), torch.randn(4))


# ============================================================================================
# sinkhorn and swav


def sinkhorn_naive(scores, eps, iterations):
    """SwAV Algorithm 1 with explicit loops over prototypes k and samples b."""
    b, k = scores.shape
    q = [[math.exp(float(scores[j, i]) / eps) for j in range(b)] for i in range(k)]   # (K, B)
    total = sum(map(sum, q))
    q = [[x / total for x in row] for row in q]
    for _ in range(iterations):
        q = [[x / (k * sum(row)) for x in row] for row in q]
        col = [sum(q[i][j] for i in range(k)) for j in range(b)]
        q = [[q[i][j] / (b * col[j]) for j in range(b)] for i in range(k)]
    return torch.tensor([[b * q[i][j] for i in range(k)] for j in range(b)], dtype=torch.float64)


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_matches_naive(iterations):
    scores = torch.nn.functional.normalize(randn(6, 4, seed=90), dim=1)   # cosine-like scores
    codes = sinkhorn(scores, 0.1, iterations)
    assert codes.shape == (6, 4) and codes.dtype == torch.float32
    torch.testing.assert_close(codes.double(), sinkhorn_naive(scores, 0.1, iterations), atol=1e-5, rtol=1e-5)


def test_sinkhorn_marginals():
    scores = torch.nn.functional.normalize(randn(32, 8, seed=91, dtype=torch.float32), dim=1)
    codes = sinkhorn(scores)                             # epsilon 0.05, 3 iterations
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(32))            # rows sum to 1 exactly
    codes = sinkhorn(scores, 0.05, 200)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(32))
    torch.testing.assert_close(codes.sum(dim=0), torch.full((8,), 32 / 8), atol=1e-3, rtol=1e-3)   # equal partition
    assert (codes >= 0).all()


def test_sinkhorn_equalises_a_collapsed_batch():
    scores = torch.zeros(12, 3)
    scores[:, 0] = 1.0                                   # every sample prefers prototype 0
    plain = torch.softmax(scores / 0.5, dim=1)
    codes = sinkhorn(scores, 0.5, 50)
    assert plain.sum(dim=0)[0] > 8
    torch.testing.assert_close(codes.sum(dim=0), torch.full((3,), 4.0), atol=1e-4, rtol=1e-4)


def test_sinkhorn_no_grad_and_stable():
    scores = torch.randn(5, 4, requires_grad=True) * 1000   # exp(1000 / 0.05) would overflow without the max shift
    codes = sinkhorn(scores)
    assert not codes.requires_grad and torch.isfinite(codes).all()
    half = sinkhorn(scores.detach().to(torch.bfloat16))
    assert half.dtype == torch.float32


def test_sinkhorn_errors():
    s = torch.randn(4, 3)
    with pytest.raises(ValueError, match="epsilon must be a finite number > 0, got 0.0"):
        sinkhorn(s, 0.0)
    with pytest.raises(ValueError, match="iterations must be >= 1, got 0"):
        sinkhorn(s, iterations=0)
    with pytest.raises(TypeError, match="iterations must be an int, got float"):
        sinkhorn(s, iterations=3.0)
    with pytest.raises(ValueError, match=r"scores must have 2 dimensions, got shape \(4, 3, 1\)"):
        sinkhorn(torch.randn(4, 3, 1))
    with pytest.raises(TypeError, match="scores must be a floating-point tensor"):
        sinkhorn(torch.ones(4, 3, dtype=torch.long))


def swav_naive(s1, s2, q1, q2, tau):
    """Seed 000's SwAV loss: -1/N sum_n [z_t.C q_s / tau + z_s.C q_t / tau - logsumexp_t - logsumexp_s]."""
    n, k = s1.shape
    total = 0.0
    for i in range(n):
        lse1 = torch.log(sum(torch.exp(s1[i, j] / tau) for j in range(k)))
        lse2 = torch.log(sum(torch.exp(s2[i, j] / tau) for j in range(k)))
        total = total - (sum(s2[i, j] * q1[i, j] for j in range(k)) / tau
                         + sum(s1[i, j] * q2[i, j] for j in range(k)) / tau - lse2 - lse1)
    return total / n


def test_swav_matches_naive():
    s1, s2 = randn(5, 4, seed=100), randn(5, 4, seed=101)
    q1, q2 = sinkhorn(s1).double(), sinkhorn(s2).double()
    close(swav(s1, s2, q1, q2, 0.1), swav_naive(s1, s2, q1, q2, 0.1))
    assert swav(s1, s2, q1, q2) != swav(s2, s1, q1, q2)     # the prediction is swapped, not view-wise


def test_swav_closed_form_and_gradient():
    # equal scores: p = 1/K for every prototype, so each term is log K and the sum of the two is 2 log K
    k = 6
    s = torch.zeros(4, k, requires_grad=True)
    codes = sinkhorn(torch.randn(4, k))
    loss = swav(s, s, codes, codes)
    close(loss, 2 * math.log(k))
    (grad,) = torch.autograd.grad(loss, s)
    # d/ds of -q.log_softmax(s/tau) is (softmax(s/tau) - q) / tau, from both terms, averaged over N = 4
    torch.testing.assert_close(grad, 2 * (1 / k - codes) / 0.1 / 4)


def test_swav_errors():
    s = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"^scores1 and codes2 must have the same shape, got \(4, 3\) and \(4, 2\)$"):
        swav(s, s, s, torch.randn(4, 2))
    with pytest.raises(TypeError, match="codes1 must be a floating-point tensor, got dtype torch.int64"):
        swav(s, s, torch.ones(4, 3, dtype=torch.long), s)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got -0.1"):
        swav(s, s, s, s, -0.1)


# ============================================================================================
# all losses: float32 results under autocast and from half-precision inputs


def _all_losses(x1, x2):
    views = torch.stack([x1, x2], dim=1)                 # outside autocast: CPU autocast rejects fp16 stack
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return _losses(x1, x2, views)


def _losses(x1, x2, views):
    return {
        "info_nce": info_nce(x1, x2, x2.flip(0)),
        "nt_logistic": nt_logistic(x1, x2),
        "margin_triplet": margin_triplet(x1, x2, semi_hard=True),
        "supcon": supcon(views, torch.tensor([0, 1, 0, 1, 2, 2])),
        "byol": byol(x1, x2),
        "swav": swav(x1, x2, sinkhorn(x1), sinkhorn(x2)),
    }


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_all_losses_float32_from_half_and_autocast(dtype):
    x1, x2 = randn(6, 8, seed=110, dtype=torch.float32), randn(6, 8, seed=111, dtype=torch.float32)
    h1, h2 = x1.to(dtype), x2.to(dtype)
    reference = _losses(h1.float(), h2.float(), torch.stack([h1, h2], dim=1).float())
    under_autocast = _all_losses(h1, h2)
    for name, loss in under_autocast.items():
        assert loss.dtype == torch.float32, name
        torch.testing.assert_close(loss, reference[name], atol=1e-5, rtol=1e-5, msg=name)
