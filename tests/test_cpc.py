import math

import pytest
import torch
from learning import train_briefly

from contrastlab import experiments, metrics
from contrastlab.augment import AugmentConfig, SimCLRAugment
from contrastlab.data import load_dataset
from contrastlab.methods import METHODS
from contrastlab.methods.cpc import CPC, CPCConfig, PatchGrid, cpc_loss, cpc_scores
from contrastlab.models import Conv1dEncoder, SmallCNN
from contrastlab.train import TrainConfig, fit


class AsIs:
    """Views that are the batch itself, as float (CPC needs no augmentation)."""

    def views(self, x, n_views=1):
        return [x.float() / 255 if x.dtype == torch.uint8 else x.float()] * n_views


def make_image_cpc(seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = CPCConfig(**{"steps": 2, "context_dim": 8, "patch_size": 4, "patch_stride": 2, **overrides})
    return CPC(SmallCNN(in_channels=1, width=4), cfg)


def make_sequence_cpc(seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = CPCConfig(**{"steps": 3, "context_dim": 8, **overrides})
    return CPC(Conv1dEncoder(in_channels=1, width=4), cfg)


def random_inputs(n=3, t=5, s=2, d=4, c=3, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, t, s, d, generator=g), torch.randn(n, t, s, c, generator=g), \
        torch.randn(k, d, c, generator=g)


def candidates(negatives, n, t, s, k, i, j, p):
    """(sequence, step, position) of each candidate when c at (i, j, p) predicts z at (i, j + k, p)."""
    if negatives == "batch":
        return [(m, j + k, p) for m in range(n)]
    if negatives == "time":
        return [(i, tt, ss) for tt in range(t) for ss in range(s)]
    return [(m, tt, ss) for m in range(n) for tt in range(t) for ss in range(s)]


def naive_cpc_loss(z, c, weights, negatives):
    """CPC's Eq. 3-4 one prediction at a time: -log exp(z_{t+k}^T W_k c_t) / sum_j exp(z_j^T W_k c_t),
    averaged over the contexts of each step k, then over k."""
    n, t, s, _ = z.shape
    per_step = []
    for k in range(1, weights.shape[0] + 1):
        terms = []
        for i in range(n):
            for j in range(t - k):
                for p in range(s):
                    pred = weights[k - 1] @ c[i, j, p]
                    score = {ijp: float(z[ijp] @ pred) for ijp in candidates(negatives, n, t, s, k, i, j, p)}
                    denominator = sum(math.exp(v) for v in score.values())
                    terms.append(-math.log(math.exp(score[(i, j + k, p)]) / denominator))
        per_step.append(sum(terms) / len(terms))
    return sum(per_step) / len(per_step)


# ----------------------------------------------------------------------------------------------
# the loss


@pytest.mark.parametrize("negatives", ["batch", "time", "both"])
def test_loss_matches_a_naive_loop_over_the_paper_formula(negatives):
    z, c, w = random_inputs()
    assert cpc_loss(z, c, w, negatives).item() == pytest.approx(naive_cpc_loss(z, c, w, negatives), rel=1e-5)


def test_loss_of_a_single_sequence_with_one_position():
    z, c, w = random_inputs(n=1, t=6, s=1, k=3)
    for negatives in ("time", "both"):             # the same candidate set when N = 1
        assert cpc_loss(z, c, w, negatives).item() == pytest.approx(naive_cpc_loss(z, c, w, "time"), rel=1e-5)


@pytest.mark.parametrize("negatives, count", [("batch", 3), ("time", 5 * 2), ("both", 3 * 5 * 2)])
def test_equal_scores_give_log_of_the_number_of_candidates(negatives, count):
    z, c, _ = random_inputs()
    w = torch.zeros(2, 4, 3)                       # every score z_j^T W_k c_t is 0
    assert cpc_loss(z, c, w, negatives).item() == pytest.approx(math.log(count), rel=1e-6)


@pytest.mark.parametrize("negatives", ["batch", "time", "both"])
def test_each_prediction_is_scored_against_exactly_its_candidate_set(negatives):
    n, t, s, k = 3, 5, 2, 2
    z, c, w = random_inputs(n, t, s, k=k)
    z.requires_grad_(True)
    logits, targets = cpc_scores(z, c, w, negatives)[k - 1]
    assert logits.shape[:3] == targets.shape == (n, t - k, s)
    i, j, p = 1, 2, 0                               # c at sequence 1, step 2, position 0 predicts step 4
    logits[i, j, p].sum().backward()                # z_j gets a gradient exactly when it is a candidate
    scored = {tuple(ijp) for ijp in torch.nonzero(z.grad.abs().sum(-1)).tolist()}
    expected = set(candidates(negatives, n, t, s, k, i, j, p))
    assert scored == expected and logits.shape[-1] == len(expected)
    pred = w[k - 1] @ c[i, j, p]
    positive = logits[i, j, p, targets[i, j, p]].item()
    assert positive == pytest.approx(float(z.detach()[i, j + k, p] @ pred), rel=1e-5)
    if negatives == "batch":                        # the same sequence's other steps are not negatives
        assert not any((i, tt, p) in scored for tt in range(t) if tt != j + k)


def test_loss_argument_errors():
    z, c, w = random_inputs()
    with pytest.raises(ValueError, match="unknown negatives 'queue'; expected one of 'batch', 'time'"):
        cpc_loss(z, c, w, "queue")
    with pytest.raises(ValueError, match=r"z must have 4 dimensions, got shape \(3, 5, 4\)"):
        cpc_loss(z[:, :, 0], c, w)
    with pytest.raises(ValueError, match=r"c must have shape \(3, 5, 2, C\).*got \(3, 4, 2, 3\)"):
        cpc_loss(z, c[:, :4], w)
    with pytest.raises(ValueError, match=r"weights must have shape \(K, 4, 3\).*got \(2, 3, 3\)"):
        cpc_loss(z, c, w[:, :3])
    with pytest.raises(ValueError, match="K must be smaller than the sequence length T.*K = 5 for T = 5"):
        cpc_loss(z, c, torch.randn(5, 4, 3))
    with pytest.raises(ValueError, match=r"negatives='batch' needs N >= 2 sequences .*, got N = 1"):
        cpc_loss(z[:1], c[:1], w, "batch")
    with pytest.raises(TypeError, match="z must be a floating-point tensor"):
        cpc_loss(z.long(), c, w)


# ----------------------------------------------------------------------------------------------
# the method: images as patch grids, sequences as frames


def test_patch_grid_encodes_each_overlapping_patch_and_mean_pools():
    torch.manual_seed(0)
    f = SmallCNN(1, width=4).eval()
    grid = PatchGrid(f, patch_size=4, stride=2).eval()
    x = torch.rand(2, 1, 8, 10)
    z = grid.grid(x)
    assert grid.grid_shape(8, 10) == (3, 4) and z.shape == (2, 3, 4, 16) and grid.out_dim == 16
    torch.testing.assert_close(z[1, 2, 1], f(x[1:2, :, 4:8, 2:6])[0])     # row 2, column 1: pixels 4.., 2..
    torch.testing.assert_close(grid(x), z.mean(dim=(1, 2)))
    cells = PatchGrid(f, patch_size=4, stride=2, pool=2).eval()        # 2x2 cells of a 3x4 grid
    assert cells.out_dim == 4 * 16 and cells.patch_dim == 16
    h = cells(x).view(2, 2, 2, 16)                                      # (N, cell row, cell col, D)
    torch.testing.assert_close(h[:, 0, 0], z[:, :2, :2].mean(dim=(1, 2)))   # rows 0-1, cols 0-1
    torch.testing.assert_close(h[:, 1, 1], z[:, 1:, 2:].mean(dim=(1, 2)))   # rows 1-2, cols 2-3
    with pytest.raises(ValueError, match=r"patch_size x patch_size = 4x4 pixels, got shape \(2, 1, 3, 10\)"):
        grid.grid(x[:, :, :3])


def test_method_wraps_an_image_encoder_and_keeps_a_sequence_encoder():
    image, seq = make_image_cpc(), make_sequence_cpc()
    assert isinstance(image.encoder, PatchGrid) and not image.sequential
    assert isinstance(seq.encoder, Conv1dEncoder) and seq.sequential
    assert CPC.n_views == 1 and METHODS["cpc"] == (CPC, CPCConfig)
    assert len(image.predictors) == 2 and image.predictors[0].weight.shape == (16, 8)
    assert image.predictors[0].bias is None
    assert image.latents(torch.rand(3, 1, 8, 8)).shape == (3, 3, 3, 16)
    assert seq.latents(torch.rand(3, 1, 1, 128)).shape == (3, 8, 1, 16)


def test_forward_is_the_loss_of_its_latents_and_contexts():
    m = make_image_cpc(negatives="both", pool=3).eval()      # h of 3x3 cells; z stays per patch
    x = torch.rand(4, 1, 10, 10)
    out = m([x])
    z = m.latents(x)
    c = m.contexts(z)
    w = torch.stack([p.weight for p in m.predictors])
    expected = naive_cpc_loss(z.detach(), c.detach(), w.detach(), "both")
    assert out["loss"].item() == pytest.approx(expected, rel=1e-4)
    torch.testing.assert_close(out["z"], z)
    assert z.shape == (4, 4, 4, 16) and m.encoder(x).shape == (4, 9 * 16)


@pytest.mark.parametrize("make", [make_image_cpc, make_sequence_cpc])
def test_context_at_a_step_sees_only_that_step_and_the_ones_before(make):
    m = make().eval()
    z = torch.randn(2, 6, 1 if m.sequential else 3, 16)
    later = z.clone()
    later[:, 3:] = torch.randn_like(later[:, 3:])   # change steps 3.. (rows 3.. of the grid)
    c, c_later = m.contexts(z), m.contexts(later)
    torch.testing.assert_close(c[:, :3], c_later[:, :3])
    assert not torch.allclose(c[:, 3:], c_later[:, 3:])


@pytest.mark.parametrize("overrides, message", [
    ({"negatives": "memory"}, "unknown negatives 'memory'; expected one of 'batch', 'time', 'both'"),
    ({"steps": 0}, "steps must be an int >= 1, got 0"),
    ({"patch_stride": 0}, "patch_stride must be an int >= 1, got 0"),
    ({"pool": 1.5}, "pool must be an int >= 1, got 1.5"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_image_cpc(**overrides)


@pytest.mark.parametrize("make, shape, message", [
    (make_image_cpc, (4, 1, 8, 8), "views must hold 1 batch for CPC .n_views = 1., got 2"),
    (make_image_cpc, (4, 1, 8, 8), (r"steps \(K = 3\) must be smaller than the rows of the patch grid, "
                                    "got 3 rows for images of 8x8 with patch_size 4 and patch_stride 2")),
    (make_image_cpc, (4, 1, 3, 3), "images of at least patch_size x patch_size = 4x4 pixels"),
    (make_sequence_cpc, (4, 1, 1, 48), r"steps \(K = 3\) must be smaller than the number of frames, got 3 "),
    (make_sequence_cpc, (4, 1, 8, 8), r"sequences of shape \(N, C, 1, L\).*got shape \(4, 1, 8, 8\)"),
])
def test_input_errors(make, shape, message):
    m = make(steps=3)
    views = [torch.rand(shape)] * (2 if "views" in message else 1)
    with pytest.raises(ValueError, match=message):
        m(views)


# ----------------------------------------------------------------------------------------------
# training and checkpoints


def _digits():
    x, _ = load_dataset("digits", "train")
    return x[:128]


def _waves():
    x, _ = load_dataset("waveforms", "train")
    return x[:128, :, :, :128]


CFG = TrainConfig(device="cpu", epochs=2, batch_size=32, optimizer="adam", lr=1e-3, knn_every=0)
SETTINGS = {"images": (make_image_cpc, _digits, SimCLRAugment(AugmentConfig(size=8, crop_scale=(0.5, 1.0)))),
            "sequences": (make_sequence_cpc, _waves, AsIs())}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_a_training_step_updates_every_part(setting):
    make, data, augment = SETTINGS[setting]
    m = make()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    history = fit(m, augment, data(), CFG, max_steps=1, progress=False)
    assert history["finished"] is False
    after = m.state_dict()
    for prefix in ("encoder.", "context.", "predictors.0.", "predictors.1."):
        changed = [k for k in after if k.startswith(prefix) and not torch.equal(before[k], after[k])]
        assert changed, f"no parameter under {prefix} changed"


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_checkpoint_round_trip_and_resume(setting, tmp_path):
    make, data, augment = SETTINGS[setting]
    x = data()
    whole = make()
    fit(whole, augment, x, CFG, progress=False)
    split = make()
    fit(split, augment, x, CFG, out_dir=tmp_path, max_steps=3, progress=False)     # stops within epoch 1 of 2
    resumed = make(seed=7)                         # every weight must come from the checkpoint
    fit(resumed, augment, x, CFG, out_dir=tmp_path, progress=False)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), f"{k} differs after resuming"
    fresh = make(seed=3)
    fresh.load_state_dict(whole.state_dict())
    batch = augment.views(x[:16], 1)
    whole.eval()
    fresh.eval()
    assert torch.equal(whole(batch)["loss"], fresh(batch)["loss"])


@pytest.mark.parametrize("method", ["cpc", "random_init"])
def test_waveforms_go_through_experiments_with_the_1d_encoder_and_no_augmentation(method, tmp_path):
    over = {"dataset.train_size": 512, "dataset.test_size": 200, "encoder.cnn_width": 4,
            "eval.linear_epochs": 5}
    if method == "cpc":
        over.update({"train.batch_size": 64, "train.monitor_train": 200, "train.monitor_test": 100})
    config = experiments.ExperimentConfig(method=method, dataset="waveforms", budget="smoke", overrides=over)
    record = experiments.run(config, cache_dir=tmp_path, progress=False)
    assert record["config"]["encoder"]["name"] == "conv1d"
    assert 0.125 < record["metrics"]["knn_acc"] <= 1
    if method == "cpc":
        assert not record["config"]["augment"]["crop"] and len(record["curves"]["loss"]) == 1
        x, _ = load_dataset("waveforms", "test")
        (view,) = experiments.build_augment(record["config"]).views(x[:8], 1)
        assert torch.equal(view, x[:8].float() / 255)          # the sequences as they are


# ----------------------------------------------------------------------------------------------
# learning


def _waveform_knn(encoder, x, y, xt, yt):
    f_tr = metrics.extract_features(encoder, x.float() / 255)
    f_te = metrics.extract_features(encoder, xt.float() / 255)
    return metrics.knn_accuracy(f_tr, y, f_te, yt)


def test_cpc_learns_waveform_features_in_seconds():
    """Measured while writing this test (seed 0, training 2-7 s on one CPU thread): loss 4.75 -> 3.53,
    kNN 0.463 -> 0.684 (chance 0.125)."""
    x, y = load_dataset("waveforms", "train")
    xt, yt = load_dataset("waveforms", "test")
    x, y = x[:2000], y[:2000]
    torch.manual_seed(0)
    m = CPC(Conv1dEncoder(1, width=8), CPCConfig(context_dim=64))
    before = _waveform_knn(m.encoder, x, y, xt, yt)
    cfg = TrainConfig(device="cpu", epochs=5, batch_size=128, optimizer="adam", lr=2e-3, warmup_epochs=0.0, knn_every=0)
    history = fit(m, AsIs(), x, cfg, progress=False)
    after = _waveform_knn(m.encoder, x, y, xt, yt)
    assert history["loss"][-1] < history["loss"][0] - 0.5, history["loss"]
    assert after > before + 0.1, (before, after)


@pytest.mark.slow
def test_cpc_learns_on_real_data():
    """Fashion-MNIST as 6x6 grids of 8x8 patches, h keeping the grid's layout (the fast budgets'
    settings). Measured while writing this test (seed 0, 4.5 min on one CPU thread): loss 4.44 -> 2.82,
    linear probe 0.862 -> 0.870, kNN 0.748 -> 0.809."""
    torch.manual_seed(0)
    m = CPC(SmallCNN(in_channels=1, width=16), CPCConfig(pool=6, context_dim=128))
    r = train_briefly(m, epochs=4)
    assert r.history["loss"][-1] < r.history["loss"][0] - 0.5, r
    assert r.linear_after > r.linear_before, r
    assert r.knn_after > r.knn_before + 0.03, r
