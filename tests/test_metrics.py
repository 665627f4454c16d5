"""Tests for contrastlab.metrics: features, weighted kNN, linear probe, alignment and uniformity."""
import math

import pytest
import torch
from torch import nn

from contrastlab.metrics import (
    alignment,
    extract_features,
    few_label_probe,
    knn_accuracy,
    knn_predict,
    linear_probe,
    uniformity,
)

# --------------------------------------------------------------------------------------------
# weighted kNN


def knn_naive(train_x, train_y, query_x, k, temperature):
    """InstDisc's weighted kNN, one query at a time, in float64."""
    train_x, query_x = train_x.double(), query_x.double()
    preds = []
    for q in query_x:
        sims = [(torch.dot(q, x) / (q.norm() * x.norm())).item() for x in train_x]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = {}
        for i in order:
            c = int(train_y[i])
            votes[c] = votes.get(c, 0.0) + math.exp(sims[i] / temperature)
        best = max(votes.values())
        preds.append(min(c for c, v in votes.items() if v == best))
    return torch.tensor(preds)


def clustered(n, d=8, classes=4, noise=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + noise * torch.randn(n, d, generator=g), y


@pytest.mark.parametrize("k, temperature", [(1, 0.1), (5, 0.1), (20, 0.5), (200, 0.07)])
def test_knn_matches_naive_loop(k, temperature):
    train_x, train_y = clustered(120, seed=1)
    query_x, _ = clustered(40, seed=2)
    got = knn_predict(train_x, train_y, query_x, k=k, temperature=temperature, chunk_size=16)
    assert got.dtype == torch.int64 and got.shape == (40,)
    assert torch.equal(got, knn_naive(train_x, train_y, query_x, min(k, 120), temperature))


def test_knn_query_equal_to_training_point():
    train_x, train_y = clustered(50, seed=3)
    pred = knn_predict(train_x, train_y, train_x, k=1)
    assert torch.equal(pred, train_y)


def test_knn_temperature_matters():
    # query (1, 0); class 0 has one neighbour at cos 0.99, class 1 two neighbours at cos 0.9
    def unit(cos, sign=1.0):
        return [cos, sign * math.sqrt(1 - cos ** 2)]
    train_x = torch.tensor([unit(0.99), unit(0.9), unit(0.9, -1.0), unit(-0.5), unit(-0.6, -1.0)])
    train_y = torch.tensor([0, 1, 1, 2, 2])
    query = torch.tensor([[1.0, 0.0]])
    # sharp weights: exp(0.99/0.01) > 2 exp(0.9/0.01), the single closest point wins
    assert knn_predict(train_x, train_y, query, k=3, temperature=0.01).item() == 0
    # flat weights: two votes beat one
    assert knn_predict(train_x, train_y, query, k=3, temperature=10.0).item() == 1
    # tiny temperatures would overflow exp(s / tau) computed naively; the vote stays right
    assert knn_predict(train_x, train_y, query, k=3, temperature=1e-3).item() == 0


def test_knn_k_larger_than_train_set_and_options():
    train_x, train_y = clustered(7, seed=4)
    query_x, _ = clustered(9, seed=5)
    big = knn_predict(train_x, train_y, query_x, k=200)
    assert torch.equal(big, knn_predict(train_x, train_y, query_x, k=7))
    assert torch.equal(big, knn_predict(train_x, train_y, query_x, k=200, chunk_size=2, num_classes=10))
    # cosine similarity: scaling the features changes nothing
    assert torch.equal(big, knn_predict(3 * train_x, train_y, 0.1 * query_x, k=200))
    assert knn_predict(train_x, train_y, query_x[:0]).shape == (0,)


def test_knn_accuracy():
    train_x, train_y = clustered(200, noise=0.3, seed=6)
    test_x, test_y = clustered(100, noise=0.3, seed=6)
    acc = knn_accuracy(train_x, train_y, test_x, test_y, k=10)
    assert isinstance(acc, float)
    expected = (knn_naive(train_x, train_y, test_x, 10, 0.1) == test_y).double().mean().item()
    assert acc == pytest.approx(expected)
    assert acc > 0.9


def test_knn_errors():
    x, y = clustered(10)
    with pytest.raises(ValueError, match=r"train_features and train_labels must have the same length, got \(10, 8\) and \(9\)"):
        knn_predict(x, y[:9], x)
    with pytest.raises(ValueError, match=r"same feature dimension D, got \(10, 8\) and \(10, 4\)"):
        knn_predict(x, y, x[:, :4])
    with pytest.raises(TypeError, match="train_labels must be an integer tensor, got dtype torch.float32"):
        knn_predict(x, y.float(), x)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        knn_predict(x, y, x, k=0)
    with pytest.raises(ValueError, match="temperature must be > 0, got -0.1"):
        knn_predict(x, y, x, temperature=-0.1)
    with pytest.raises(ValueError, match="labels must be >= 0, got a label -1"):
        knn_predict(x, y - 1, x)
    with pytest.raises(ValueError, match="num_classes must exceed every label, got num_classes=2 and a label 3"):
        knn_predict(x, y, x, num_classes=2)


# --------------------------------------------------------------------------------------------
# linear probe


def test_linear_probe_separable():
    g = torch.Generator().manual_seed(7)
    centers = 6 * torch.randn(3, 20, generator=g)
    y_train, y_test = torch.randint(0, 3, (300,), generator=g), torch.randint(0, 3, (100,), generator=g)
    x_train = centers[y_train] + torch.randn(300, 20, generator=g)
    x_test = centers[y_test] + torch.randn(100, 20, generator=g)
    result = linear_probe(x_train, y_train, x_test, y_test)
    assert set(result) == {"train_acc", "test_acc"}
    assert all(isinstance(v, float) for v in result.values())
    assert result["train_acc"] == 1.0 and result["test_acc"] >= 0.99
    assert linear_probe(x_train, y_train, x_test, y_test, standardize=False)["train_acc"] == 1.0


def test_linear_probe_digits_raw_pixels():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16          # (1797, 64)
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1200], perm[1200:]
    result = linear_probe(x[train], y[train], x[test], y[test], epochs=100)
    assert result["test_acc"] > 0.9                                   # chance is 0.1
    again = linear_probe(x[train], y[train], x[test], y[test], epochs=100, seed=1)
    assert again == result                                            # deterministic


def test_few_label_probe_fits_on_a_balanced_share_of_the_labels():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16          # (1797, 64)
    y = torch.tensor(digits.target)
    train, test = slice(0, 1200), slice(1200, None)
    few = few_label_probe(x[train], y[train], x[test], y[test], 0.05, epochs=100)
    assert few["n_labels"] == 60                                      # 5% of 1200: 6 of each digit
    full = linear_probe(x[train], y[train], x[test], y[test], epochs=100)
    assert 0.5 < few["test_acc"] < full["test_acc"]                   # fewer labels, lower but far above chance
    assert few_label_probe(x[train], y[train], x[test], y[test], 0.05, epochs=100) == few     # deterministic
    other = few_label_probe(x[train], y[train], x[test], y[test], 0.05, epochs=100, seed=2)
    assert other["n_labels"] == 60 and other != few                   # another subset
    assert few_label_probe(x[train], y[train], x[test], y[test], 1e-6)["n_labels"] == 10      # one per class
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\].*got 1.5"):
        few_label_probe(x, y, x, y, 1.5)
    with pytest.raises(ValueError, match="fraction must be > 0, got 0"):
        few_label_probe(x, y, x, y, 0)


def test_linear_probe_inside_no_grad_and_errors():
    x, y = clustered(60, seed=8)
    with torch.no_grad():
        assert linear_probe(x, y, x, y, epochs=20)["train_acc"] > 0.5
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
    assert linear_probe(xi, yi, xi, yi, epochs=20)["train_acc"] > 0.5
    with pytest.raises(ValueError, match=r"same feature dimension D, got \(60, 8\) and \(60, 3\)"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(TypeError, match="test_labels must be an integer tensor"):
        linear_probe(x, y, x, y.float())
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        linear_probe(x, y, x, y, epochs=0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -1"):
        linear_probe(x, y, x, y, weight_decay=-1.0)


# --------------------------------------------------------------------------------------------
# features


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.drop(torch.relu(self.bn(self.conv(x))))).flatten(1)   # (N, 4)


def test_extract_features_modes_batches_and_transform():
    torch.manual_seed(0)
    model = TinyNet()
    model(torch.rand(16, 1, 8, 8))                    # give BN non-trivial running statistics
    model.train()
    model.drop.eval()                                 # a submodule in its own mode
    images = torch.randint(0, 256, (37, 1, 8, 8), dtype=torch.uint8)

    small = extract_features(model, images, batch_size=5)
    large = extract_features(model, images, batch_size=512)
    assert small.shape == (37, 4) and small.dtype == torch.float32
    torch.testing.assert_close(small, large)
    assert model.training and model.conv.training and not model.drop.training   # restored per module
    assert not small.requires_grad

    model.eval()
    with torch.no_grad():
        expected = model(images.float() / 255)
    torch.testing.assert_close(small, expected)
    assert not model.training                          # eval stays eval

    custom = extract_features(model, images, transform=lambda x: x.float() / 255 * 2 - 1)
    with torch.no_grad():
        torch.testing.assert_close(custom, model(images.float() / 255 * 2 - 1))
    floats = images.float() / 255                      # float images pass through unscaled
    torch.testing.assert_close(extract_features(model, floats), expected)


def test_extract_features_restores_mode_on_error():
    class Broken(TinyNet):
        def forward(self, x):
            raise RuntimeError("boom")

    model = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        extract_features(model, torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    assert model.training and model.bn.training


def test_extract_features_errors():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        extract_features(lambda x: x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        extract_features(TinyNet(), torch.zeros(2, 1, 8, 8), batch_size=0)


# --------------------------------------------------------------------------------------------
# alignment and uniformity


def unit_rows(n, d, seed):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def test_alignment():
    x, y = unit_rows(10, 5, 0), unit_rows(10, 5, 1)
    assert alignment(x, x.clone()).item() == 0.0
    for alpha in (2.0, 1.5):
        expected = sum(((x[i] - y[i]).norm() ** alpha).item() for i in range(10)) / 10
        assert alignment(x, y, alpha).item() == pytest.approx(expected, rel=1e-10)
    # antipodal pairs are the worst case: ||x - (-x)||^2 = 4
    assert alignment(x, -x).item() == pytest.approx(4.0)
    xg = x.clone().requires_grad_()
    alignment(xg, x).backward()                        # zero distance: a zero, finite gradient
    assert torch.equal(xg.grad, torch.zeros_like(x))


def test_uniformity():
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert uniformity(antipodal, t=2.0).item() == pytest.approx(-8.0)
    x = unit_rows(9, 4, 2)
    for t in (2.0, 0.5):
        terms = [math.exp(-t * ((x[i] - x[j]).norm() ** 2).item()) for i in range(9) for j in range(i + 1, 9)]
        assert uniformity(x, t).item() == pytest.approx(math.log(sum(terms) / len(terms)), rel=1e-5)
    # identical points: every potential is exp(0) = 1 -> 0, the worst value
    same = torch.ones(4, 3) / math.sqrt(3)
    assert uniformity(same).item() == pytest.approx(0.0, abs=1e-6)
    # far-apart points do not underflow to log(0)
    assert math.isfinite(uniformity(torch.tensor([[100.0, 0.0], [-100.0, 0.0]])).item())
    xg = same.clone().requires_grad_()
    uniformity(xg).backward()
    assert torch.isfinite(xg.grad).all()


def test_alignment_uniformity_errors():
    with pytest.raises(ValueError, match=r"x and y must have the same shape, got \(4, 3\) and \(4, 2\)"):
        alignment(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"x must hold N >= 2 points to form a pair, got shape \(1, 3\)"):
        uniformity(torch.randn(1, 3))
    with pytest.raises(ValueError, match="t must be > 0, got 0"):
        uniformity(torch.randn(4, 3), t=0.0)
    with pytest.raises(ValueError, match="alpha must be > 0, got -2"):
        alignment(torch.randn(4, 3), torch.randn(4, 3), alpha=-2.0)


def test_feature_std_is_zero_for_collapsed_features_and_about_one_over_sqrt_d_when_spread():
    from contrastlab.metrics import feature_std
    assert feature_std(torch.ones(16, 8) * 3).item() == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(0)
    spread = feature_std(torch.randn(20000, 16)).item()
    assert spread == pytest.approx(1 / 16 ** 0.5, rel=0.03)


def test_effective_rank_closed_forms():
    from contrastlab.metrics import effective_rank
    torch.manual_seed(0)
    direction = torch.randn(1, 8)
    rank_one = torch.randn(50, 1) * direction
    assert effective_rank(rank_one).item() == pytest.approx(1.0, abs=1e-3)
    # +-e_i rows: centred, every singular value equal -> effective rank D
    eye = torch.eye(6)
    assert effective_rank(torch.cat([eye, -eye])).item() == pytest.approx(6.0, rel=1e-4)
    with pytest.raises(ValueError, match="N >= 2"):
        effective_rank(torch.ones(1, 4))
