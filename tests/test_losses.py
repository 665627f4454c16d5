"""Tests for contrastlab.losses.nt_xent against SimCLR's Algorithm 1 and closed forms."""
import math

import pytest
import torch

from contrastlab.losses import nt_xent


def nt_xent_naive(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """Algorithm 1 of SimCLR, literally: 1-based indices, views 2k-1 and 2k of image k, python loops."""
    n = z1.shape[0]
    z = {}
    for k in range(1, n + 1):
        z[2 * k - 1] = z1[k - 1]
        z[2 * k] = z2[k - 1]

    def s(i, j):
        return torch.dot(z[i], z[j]) / (z[i].norm() * z[j].norm())

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
