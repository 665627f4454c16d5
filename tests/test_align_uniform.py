import math

import pytest
import torch

from contrastlab.methods.align_uniform import AlignUniform, AlignUniformConfig, align_uniform_terms
from contrastlab.models import SmallCNN


def naive_terms(z1, z2, alpha, t):
    """Wang & Isola's Eq. 4 and 5 as loops over pairs, on normalised rows."""
    u1 = [v / v.norm() for v in z1]
    u2 = [v / v.norm() for v in z2]
    align = sum((a - b).norm() ** alpha for a, b in zip(u1, u2)) / len(u1)

    def uniform(u):
        pairs = [(i, j) for i in range(len(u)) for j in range(i + 1, len(u))]
        return math.log(sum(math.exp(-t * float((u[i] - u[j]).norm() ** 2)) for i, j in pairs) / len(pairs))

    return float(align), (uniform(u1) + uniform(u2)) / 2


@pytest.mark.parametrize("alpha,t", [(2.0, 2.0), (1.0, 0.5)])
def test_terms_match_the_paper_written_as_loops(alpha, t):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(5, 3, generator=g, dtype=torch.float64)
    align, uniform = align_uniform_terms(z1, z2, alpha, t)
    expected = naive_terms(z1, z2, alpha, t)
    assert align.item() == pytest.approx(expected[0], rel=1e-5)
    assert uniform.item() == pytest.approx(expected[1], rel=1e-5)


def test_closed_forms():
    z = torch.tensor([[2.0, 0.0], [-3.0, 0.0]])          # antipodal after normalisation
    align, uniform = align_uniform_terms(z, z.clone())
    assert align.item() == 0.0                               # identical views are perfectly aligned
    assert uniform.item() == pytest.approx(-8.0)             # one pair at squared distance 4, t = 2


def test_forward_is_align_plus_lambda_uniform_and_learning_lowers_it():
    torch.manual_seed(0)
    method = AlignUniform(SmallCNN(in_channels=1, width=4), AlignUniformConfig(lam=0.5, proj_dim=8))
    v1, v2 = torch.rand(16, 1, 12, 12), torch.rand(16, 1, 12, 12)
    out = method([v1, v2])
    torch.testing.assert_close(out["loss"], out["align"] + 0.5 * out["uniform"])
    opt = torch.optim.Adam(method.parameters(), lr=1e-2)
    first = out["loss"].item()
    for _ in range(30):
        loss = method([v1, v2])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.1


def test_errors():
    with pytest.raises(ValueError, match="alpha must be"):
        AlignUniformConfig(alpha=0.0)
    with pytest.raises(ValueError, match="lam must be"):
        AlignUniformConfig(lam=-1.0)
    method = AlignUniform(SmallCNN(in_channels=1, width=4))
    with pytest.raises(ValueError, match="views must hold 2 augmented batches for AlignUniform, got 1"):
        method([torch.rand(4, 1, 8, 8)])
