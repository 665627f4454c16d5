import pytest
import torch
import torch.nn.functional as F
from learning import train_briefly

from contrastlab import losses
from contrastlab.augment import AugmentConfig, SimCLRAugment
from contrastlab.data import load_dataset
from contrastlab.methods.swav import SwAV, SwAVConfig
from contrastlab.models import SmallCNN
from contrastlab.multicrop import MultiCropAugment
from contrastlab.train import TrainConfig, fit

# ----------------------------------------------------------------------------- references from the paper

def ref_sinkhorn(scores, epsilon=0.05, iterations=3):
    """Algorithm 1 of the paper (appendix A.1), as a plain loop: codes (B, K) with rows summing to 1."""
    q = torch.exp((scores - scores.max()) / epsilon).T.double()   # (K, B)
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k                  # each prototype gets 1/K of the mass
        q = q / q.sum(dim=0, keepdim=True) / b                  # each sample gets 1/B of the mass
    return (q * b).T.to(scores.dtype)


def seed_loss(z_s, z_t, c, q_s, q_t, tau):
    """The seed's expanded form: -1/N sum_n [z_t^T C q_s / tau + z_s^T C q_t / tau - logsumexp_t - logsumexp_s]."""
    a_t, a_s = z_t @ c.T / tau, z_s @ c.T / tau                  # (N, K)
    terms = (a_t * q_s).sum(1) + (a_s * q_t).sum(1) - a_t.logsumexp(1) - a_s.logsumexp(1)
    return -terms.mean()


def make(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = SwAVConfig(**{"n_prototypes": 10, "proj_dim": 8, **kwargs})
    return SwAV(SmallCNN(in_channels=1, width=4), config)


def views(n=8, side=12, n_small=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ([torch.rand(n, 1, side, side, generator=g) for _ in range(2)]
            + [torch.rand(n, 1, 6, 6, generator=g) for _ in range(n_small)])


# ----------------------------------------------------------------------------- the method

def test_prototypes_are_unit_norm_after_a_forward():
    method = make()
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)
    method(views())
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(10))


def test_codes_are_sinkhorn_of_the_scores_without_gradient():
    method = make()
    method.eval()
    v = views()
    out = method(v)
    for q, x in ((out["codes1"], v[0]), (out["codes2"], v[1])):
        assert q.shape == (8, 10) and not q.requires_grad
        torch.testing.assert_close(q.sum(1), torch.ones(8))
        scores = method.embed(x) @ method.prototypes.weight.T
        torch.testing.assert_close(q, losses.sinkhorn(scores, 0.05, 3))
        torch.testing.assert_close(q, ref_sinkhorn(scores), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["z1"].norm(dim=1), torch.ones(8))


def test_two_view_loss_is_the_seed_formula():
    method = make(temperature=0.2)
    method.eval()                          # BN in eval mode: each view's output is independent of the batch
    v = views()
    out = method(v)
    z1, z2, c = method.embed(v[0]), method.embed(v[1]), method.prototypes.weight
    torch.testing.assert_close(out["loss"], losses.swav(z1 @ c.T, z2 @ c.T, out["codes1"], out["codes2"], 0.2))
    torch.testing.assert_close(out["loss"], seed_loss(z1, z2, c, out["codes1"], out["codes2"], 0.2))
    out["loss"].backward()
    assert method.prototypes.weight.grad.abs().sum() > 0 and method.encoder.features[0][0].weight.grad is not None


def test_multi_crop_loss_averages_the_swapped_predictions():
    method = make(n_small=2)
    method.eval()
    assert method.n_views == 4
    v = views(n_small=2)
    out = method(v)
    c = method.prototypes.weight
    s = [method.embed(x) @ c.T for x in v]
    q1, q2 = out["codes1"], out["codes2"]
    expected = (losses.swav(s[0], s[1], q1, q2) + losses.swav(s[2], s[2], q1, q2)
                + losses.swav(s[3], s[3], q1, q2)) / 3
    torch.testing.assert_close(out["loss"], expected)
    # the paper's code: large view i's codes predicted by each other view, averaged over views and i;
    # losses.swav sums its two directions (the seed's formula), hence twice the paper code's value
    ce = [[-(q * F.log_softmax(x / 0.1, dim=1)).sum(1).mean() for x in s] for q in (q1, q2)]
    paper = sum(sum(ce[i][t] for t in range(4) if t != i) / 3 for i in range(2)) / 2
    torch.testing.assert_close(out["loss"], 2 * paper)


def step(method, optimizer, v):
    optimizer.zero_grad()
    method(v)["loss"].backward()
    optimizer.step()
    method.on_step_end(0.0)


def test_prototypes_are_frozen_for_the_first_steps():
    method = make(freeze_prototypes_steps=2)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    method(views())                                   # normalises the initial prototypes
    start = method.prototypes.weight.detach().clone()
    head = method.head.net[0].weight.detach().clone()
    for i in range(2):
        step(method, optimizer, views(seed=i))
    method(views())                                   # weight decay only rescaled them: normalise again
    torch.testing.assert_close(method.prototypes.weight, start, rtol=0, atol=1e-6)
    assert not torch.equal(method.head.net[0].weight, head)   # the rest of the network trains meanwhile
    assert int(method.steps) == 2
    step(method, optimizer, views(seed=5))
    assert (method.prototypes.weight - start).abs().max() > 1e-4


def test_queue_is_fifo_and_feeds_sinkhorn():
    method = make(queue_size=20)
    out = [method(views(n=8, seed=i)) for i in range(3)]   # each step enqueues 8 projections per view
    assert int(method.queue_filled) == 20
    for v, key in enumerate(("z1", "z2")):                 # one queue per large view
        assert torch.equal(method.queue[v, :8], out[2][key])          # newest first: the last batch
        assert torch.equal(method.queue[v, 16:20], out[0][key][:4])   # then older ones
    method.eval()                                               # eval: the queue is used, not updated
    before = method.queue.clone()
    v = views(seed=9)
    out = method(v)
    assert torch.equal(method.queue, before)
    c = method.prototypes.weight
    for view, key in enumerate(("codes1", "codes2")):           # each view's codes with its own queue
        scores = torch.cat([method.queue[view] @ c.T, method.embed(v[view]) @ c.T])
        torch.testing.assert_close(out[key], losses.sinkhorn(scores, 0.05, 3)[-8:])

    copy = make(seed=1, queue_size=20)
    copy.load_state_dict(method.state_dict())
    for name in ("queue", "queue_filled", "steps"):
        assert torch.equal(getattr(copy, name), getattr(method, name))


def test_small_batches_fill_the_queue_gradually():
    method = make(queue_size=40)
    method(views(n=4))
    assert int(method.queue_filled) == 4 and method.queue[:, 4:].abs().sum() == 0


def test_errors_name_the_argument():
    method = make(n_small=1)
    with pytest.raises(ValueError, match="views must hold 3 augmented batches for SwAV .* got 2"):
        method(views())
    with pytest.raises(ValueError, match="the two large views must have the same shape"):
        method([torch.rand(4, 1, 12, 12), torch.rand(4, 1, 10, 10), torch.rand(4, 1, 6, 6)])
    with pytest.raises(ValueError, match="every view must hold the same number of images"):
        method([torch.rand(4, 1, 12, 12)] * 2 + [torch.rand(3, 1, 6, 6)])
    for field, value in (("n_prototypes", 0), ("queue_size", -1), ("n_small", 1.5),
                         ("freeze_prototypes_steps", True)):
        with pytest.raises(ValueError, match=f"{field} must be an int"):
            SwAVConfig(**{field: value})
    with pytest.raises(ValueError, match="temperature"):
        SwAVConfig(temperature=0.0)


# ----------------------------------------------------------------------------- with fit()

@pytest.fixture(scope="module")
def digits():
    x, _ = load_dataset("digits", "train")
    return x[:96]


CFG = TrainConfig(device="cpu", epochs=2, batch_size=32, optimizer="sgd", lr=0.5, warmup_epochs=0.5, knn_every=0)


@pytest.mark.parametrize("n_small", [0, 2])
def test_fit_runs_with_two_views_and_with_multi_crop(digits, n_small):
    method = make(n_small=n_small, queue_size=48, freeze_prototypes_steps=2)
    config = AugmentConfig(size=8)
    augment = MultiCropAugment(config, n_small=2, small_size=6) if n_small else SimCLRAugment(config)
    hist = fit(method, augment, digits, TrainConfig(device="cpu", epochs=1, batch_size=32, knn_every=0), progress=False)
    assert hist["finished"] and len(hist["loss"]) == 1 and torch.isfinite(torch.tensor(hist["loss"])).all()
    assert int(method.steps) == 3 and int(method.queue_filled) == 48


def test_resumed_fit_ends_with_the_same_weights(digits, tmp_path):
    augment = MultiCropAugment(AugmentConfig(size=8), n_small=1, small_size=6)
    kwargs = {"n_small": 1, "queue_size": 48, "freeze_prototypes_steps": 3}
    full = make(**kwargs)
    fit(full, augment, digits, CFG, progress=False)
    split = make(**kwargs)
    fit(split, augment, digits, CFG, out_dir=tmp_path, max_steps=2, progress=False)   # inside the frozen period
    resumed = make(seed=7, **kwargs)
    fit(resumed, augment, digits, CFG, out_dir=tmp_path, progress=False)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and int(b["steps"]) == 6
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.mark.slow
def test_swav_learns_on_real_data():
    """Measured while writing this test (seed 0): loss 8.69 -> 5.04, linear probe 0.810 -> 0.836,
    kNN 0.725 -> 0.760."""
    torch.manual_seed(0)
    method = SwAV(SmallCNN(in_channels=1, width=16), SwAVConfig(n_prototypes=100, freeze_prototypes_steps=64))
    r = train_briefly(method, augment=MultiCropAugment(AugmentConfig(size=28), n_small=0, large_scale=(0.4, 1.0)))
    assert r.history["loss"][-1] < r.history["loss"][0] - 1.0, r
    assert r.linear_after > r.linear_before + 0.01, r
    assert r.knn_after > r.knn_before, r
