import math

import pytest
import torch
import torch.nn.functional as F
from learning import train_briefly

from contrastlab import losses
from contrastlab.augment import SimCLRAugment
from contrastlab.data import load_dataset
from contrastlab.methods.supcon import SupCon, SupConConfig, Supervised, SupervisedConfig
from contrastlab.models import SmallCNN
from contrastlab.train import TrainConfig, fit


def make_supcon(**cfg):
    torch.manual_seed(0)
    return SupCon(SmallCNN(in_channels=1, width=4), SupConConfig(proj_dim=8, **cfg))


def views(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, 12, 12, generator=g), torch.rand(n, 1, 12, 12, generator=g)]


@pytest.mark.parametrize("variant", ["out", "in"])
def test_supcon_with_one_image_per_class_is_nt_xent(variant):
    method = make_supcon(temperature=0.3, variant=variant).eval()   # eval BN: each view independent
    v1, v2 = views()
    out = method([v1, v2], labels=torch.arange(6))
    assert out["z"].shape == (6, 2, 8)
    torch.testing.assert_close(out["z"][:, 0], method.embed(v1))
    torch.testing.assert_close(out["loss"], losses.nt_xent(method.embed(v1), method.embed(v2), 0.3))


def test_supcon_forward_is_the_loss_of_its_projections():
    method = make_supcon(temperature=0.2).eval()
    v1, v2 = views()
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    out = method([v1, v2], labels=labels)
    z = torch.stack([method.embed(v1), method.embed(v2)], dim=1)     # (N, V, D)
    torch.testing.assert_close(out["loss"], losses.supcon(z, labels, temperature=0.2, variant="out"))


def test_supcon_closed_form_for_identical_projections():
    # all 2N views equal: every log p_ij = -log(2N - 1), whatever the labels
    z = F.normalize(torch.ones(4, 2, 3), dim=2)
    loss = losses.supcon(z, torch.tensor([0, 0, 1, 1]), temperature=0.1)
    assert loss.item() == pytest.approx(math.log(7), rel=1e-5)


def test_supcon_errors():
    method = make_supcon()
    with pytest.raises(ValueError, match="labels are required: SupCon is supervised"):
        method(views())
    with pytest.raises(ValueError, match="labels must have one entry per sample"):
        method(views(), labels=torch.arange(3))
    with pytest.raises(ValueError, match="unknown variant 'both'"):
        make_supcon(variant="both")


def test_supervised_loss_is_cross_entropy():
    torch.manual_seed(0)
    method = Supervised(SmallCNN(in_channels=1, width=4), SupervisedConfig(num_classes=3, label_smoothing=0.1))
    method.eval()
    x = views()[0]
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = method([x], labels=labels)
    logits = method.classifier(method.encoder(x))
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits, labels, label_smoothing=0.1))
    assert out["acc"].item() == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    with pytest.raises(ValueError, match="labels are required: Supervised is supervised"):
        method([x])
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        Supervised(SmallCNN(in_channels=1, width=4), SupervisedConfig(label_smoothing=1.0))


@pytest.fixture(scope="module")
def digits():
    x, y = load_dataset("digits", "train")
    return x[:128], y[:128]


AUG = SimCLRAugment(size=8, crop_scale=(0.3, 1.0))
CFG = TrainConfig(device="cpu", epochs=1, batch_size=32, optimizer="sgd", lr=0.1, knn_every=0)


@pytest.mark.parametrize("kind", ["supcon", "supervised"])
def test_fit_runs_with_labels(digits, kind):
    x, y = digits
    torch.manual_seed(0)
    enc = SmallCNN(in_channels=1, width=4)
    method = SupCon(enc, SupConConfig(proj_dim=16)) if kind == "supcon" else Supervised(enc)
    before = {k: p.clone() for k, p in method.named_parameters()}
    hist = fit(method, AUG, x, CFG, labels=y, progress=False)
    assert hist["finished"] and math.isfinite(hist["loss"][0])
    assert any(not torch.equal(before[k], p) for k, p in method.named_parameters())
    with pytest.raises(ValueError, match="labels are required"):
        fit(method, AUG, x, CFG, progress=False)


@pytest.mark.slow
def test_supcon_learns_on_real_data():
    """Measured while writing this test (seed 0): loss 5.89 -> 5.02, kNN 0.725 -> 0.801,
    linear probe 0.812 -> 0.846."""
    torch.manual_seed(0)
    r = train_briefly(SupCon(SmallCNN(in_channels=1, width=16), SupConConfig()), epochs=4, supervised=True)
    assert r.history["loss"][-1] < r.history["loss"][0], r
    assert r.linear_after > r.linear_before + 0.015, r
    assert r.knn_after > r.knn_before + 0.03, r


def test_supervised_feature_dim_classifies_unit_features():
    torch.manual_seed(0)
    method = Supervised(SmallCNN(in_channels=1, width=4), SupervisedConfig(feature_dim=2))
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    u = method.embed(x)
    assert u.shape == (16, 2) and torch.allclose(u.norm(dim=1), torch.ones(16))
    logits = method.classifier(u)
    assert torch.allclose(method([x], labels=y)["loss"], F.cross_entropy(logits, y))
    plain = Supervised(SmallCNN(in_channels=1, width=4))
    assert plain.bottleneck is None and plain.embed(x).shape == (16, plain.encoder.out_dim)
    with pytest.raises(ValueError, match="feature_dim must be an int >= 0.*got -2"):
        Supervised(SmallCNN(in_channels=1, width=4), SupervisedConfig(feature_dim=-2))
