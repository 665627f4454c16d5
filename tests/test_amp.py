"""Mixed precision without a GPU (issue 17, section 2): bf16 and fp16 autocast on CPU, the grad
scaler's contract (scaling, unscale before clipping, skipped steps, LARS, checkpoints), every loss
at half-precision inputs, and the device-resident data path's per-step copies."""
import math

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from contrastlab import losses, metrics
from contrastlab.augment import AugmentConfig, SimCLRAugment
from contrastlab.data import load_dataset
from contrastlab.methods import SimCLR, SimCLRConfig
from contrastlab.models import SmallCNN
from contrastlab.optim import build_optimizer
from contrastlab.train import TrainConfig, fit, load_checkpoint, train_step

AUG = SimCLRAugment(AugmentConfig(size=8, crop_scale=(0.3, 1.0)))


@pytest.fixture(scope="module")
def digits():
    x, _ = load_dataset("digits", "train")
    return x[:96]


def simclr(seed=0):
    torch.manual_seed(seed)
    return SimCLR(SmallCNN(in_channels=1, width=4), SimCLRConfig(proj_dim=8))


def config(**kw):
    base = dict(epochs=2, batch_size=32, optimizer="lars", lr=0.3, warmup_epochs=0.5, knn_every=0, device="cpu")
    return TrainConfig(**{**base, **kw})


def scaler(enabled=True, init_scale=2.0 ** 10):   # 2^16 (the default) overflows fp16 on these gradients
    return torch.amp.GradScaler("cpu", init_scale=init_scale, enabled=enabled)


# ----------------------------------------------------------------------------- fit under autocast on CPU

@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_fit_trains_under_cpu_autocast(digits, amp):
    method = simclr()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    hist = fit(method, AUG, digits, config(amp=amp), progress=False)
    assert hist["finished"] and all(math.isfinite(v) for v in hist["loss"])
    assert all(p.dtype == torch.float32 for p in method.parameters())         # master weights stay fp32
    assert any(not torch.equal(before[k], v) for k, v in method.state_dict().items())


def test_fp16_run_resumed_mid_run_ends_with_the_same_weights_and_scaler(digits, tmp_path):
    cfg = config(amp="fp16")
    full = simclr()
    fit(full, AUG, digits, cfg, out_dir=tmp_path / "full", progress=False)
    split = simclr()
    fit(split, AUG, digits, cfg, out_dir=tmp_path / "split", max_steps=4, progress=False)    # mid-epoch 2
    state = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert state["step"] == 4 and state["scaler"]["scale"] > 0 and "_growth_tracker" in state["scaler"]
    resumed = simclr(seed=9)
    fit(resumed, AUG, digits, cfg, out_dir=tmp_path / "split", progress=False)
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    assert (load_checkpoint(tmp_path / "split" / "checkpoint.pt")["scaler"]
            == load_checkpoint(tmp_path / "full" / "checkpoint.pt")["scaler"])


# ----------------------------------------------------------------------------- the scaler's contract

class Linear(nn.Module):
    """A method of one weight vector whose loss is w . x summed over the batch (gradient: sum of x)."""

    def __init__(self, d=4):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))

    def forward(self, views, index=None, labels=None):
        return {"loss": (views[0] @ self.w.to(views[0].dtype)).sum()}


def one_step(x, dtype, s, *, optimizer="sgd", grad_clip=0.0, model=None):
    model = model or Linear(x.shape[1])
    opt = build_optimizer(optimizer, model, lr=1.0, weight_decay=0.0, momentum=0.0)
    before = model.w.detach().clone()
    train_step(model, [x], opt, s, dtype, grad_clip=grad_clip)
    return model.w.detach() - before


def test_loss_is_scaled_and_the_update_is_the_unscaled_one():
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    s = scaler()
    delta = one_step(x, torch.float16, s)
    torch.testing.assert_close(delta, -x[0])              # lr 1: minus the true gradient, not 1024 times it
    assert s.get_scale() == 2.0 ** 10                      # a finite step leaves the scale (growth after 2000)
    overflow = scaler(init_scale=2.0 ** 16)                # 3 x 65536 > fp16's largest value: step skipped
    assert torch.equal(one_step(x, torch.float16, overflow), torch.zeros(4)) and overflow.get_scale() == 2.0 ** 15


def test_gradient_is_unscaled_before_clipping():
    x = torch.tensor([[3.0, 4.0, 0.0, 0.0]])              # gradient norm 5
    delta = one_step(x, torch.float16, scaler(), grad_clip=0.5)
    assert torch.linalg.vector_norm(delta).item() == pytest.approx(0.5, rel=1e-3)
    torch.testing.assert_close(delta, -x[0] / 10)          # the direction kept, the norm clipped
    unclipped = one_step(x, None, scaler(enabled=False), grad_clip=10.0)
    torch.testing.assert_close(unclipped, -x[0])


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_step_with_an_inf_or_nan_gradient_is_skipped_and_the_scale_backs_off(bad):
    x = torch.tensor([[1.0, bad, 0.0, 1.0]])
    s = scaler()
    delta = one_step(x, torch.float16, s, grad_clip=1.0)
    assert torch.equal(delta, torch.zeros(4))              # weights untouched
    assert s.get_scale() == 2.0 ** 9                       # halved for the next step


def test_lars_with_the_scaler_takes_the_unscaled_step(digits):
    torch.manual_seed(0)
    views = AUG.views(digits[:32], 2)
    results = []
    for enabled in (False, True):
        method = simclr()
        opt = build_optimizer("lars", method, lr=0.3, weight_decay=1e-6)
        train_step(method, views, opt, scaler(enabled=enabled), None)
        results.append({k: v.clone() for k, v in method.state_dict().items()})
    for k in results[0]:                                   # LARS's trust ratio saw the same gradient norms
        torch.testing.assert_close(results[1][k], results[0][k], rtol=1e-5, atol=1e-7, msg=k)


# ----------------------------------------------------------------------------- every loss at half-precision inputs

def _pairs(dtype, n=16, d=8, scale=30.0):
    g = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(n, d, generator=g) * scale for _ in range(2))
    z1[0] = 0.0                      # a zero row: normalised in fp16 (eps 1e-12 underflows) it is NaN
    return z1.to(dtype), z2.to(dtype)


LOSSES = {
    "nt_xent": lambda a, b: losses.nt_xent(a, b, 0.05),
    "nt_logistic": lambda a, b: losses.nt_logistic(a, b, 0.05),
    "margin_triplet": lambda a, b: losses.margin_triplet(a, b),
    "info_nce": lambda a, b: losses.info_nce(a, b, torch.cat([b, a]).flip(0), 0.05),
    "supcon": lambda a, b: losses.supcon(torch.stack([a, b], 1), torch.arange(len(a)) % 4, 0.05),
    "byol": lambda a, b: losses.byol(a, b),
    "swav": lambda a, b: losses.swav(a, b, losses.sinkhorn(b), losses.sinkhorn(a), 0.05),
    "sinkhorn": lambda a, b: losses.sinkhorn(a * 10, 0.05).sum(),
    "uniformity": lambda a, b: metrics.uniformity(a),   # far-apart points: every potential underflows
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_at_half_precision_inputs_is_finite_and_the_fp32_value(name, dtype):
    a, b = _pairs(dtype)
    a.requires_grad_(True)
    value = LOSSES[name](a, b)
    assert value.dtype == torch.float32 and torch.isfinite(value), f"{name}: {value}"
    if value.requires_grad:                                            # Sinkhorn's codes are targets
        (grad,) = torch.autograd.grad(value, a)         # row 0 is zero: 1/eps there, inf in half
        assert torch.isfinite(grad[1:]).all()
    reference = LOSSES[name](a.detach().float(), b.float())            # the same (rounded) inputs in fp32
    torch.testing.assert_close(value, reference, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=dtype):                           # and inside an autocast region
        torch.testing.assert_close(LOSSES[name](a.detach(), b), reference, rtol=1e-4, atol=1e-4)


def test_temperature_005_on_aligned_fp16_pairs_does_not_overflow():
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(1)).half() * 100
    for tau in (0.05, 0.01):        # cosines / tau up to 100: beyond fp16's exp range, fine in fp32
        assert torch.isfinite(losses.nt_xent(z, z, tau)) and torch.isfinite(losses.info_nce(z, z, z, tau))


# ----------------------------------------------------------------------------- the device-resident data path

class Transfers(TorchFunctionMode):
    """Counts calls that copy between devices or read a tensor back to the host."""

    HOST_READS = {"item", "tolist", "numpy", "cpu", "cuda", "pin_memory", "__float__", "__int__", "__bool__"}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        moves = name == "to" and any(isinstance(a, (torch.device, str)) for a in (*args[1:], *kwargs.values()))
        if name in self.HOST_READS or moves:
            self.calls.append((name, tuple(args[0].shape) if isinstance(args[0], torch.Tensor) else None))
        return func(*args, **kwargs)


def _count(digits, n_images):
    mode = Transfers()
    with mode:
        fit(simclr(), AUG, digits[:n_images], config(epochs=1, batch_size=16, warmup_epochs=0.0), progress=False)
    return mode.calls


def test_no_per_step_copy_or_host_read_in_the_step_loop(digits):
    """Images move once, index batches are made on the device: 6 steps copy no more than 3 do."""
    three, six = _count(digits, 48), _count(digits, 96)    # 3 and 6 steps of one epoch
    assert sorted(name for name, _ in six) == sorted(name for name, _ in three), (three, six)
    assert len(three) < 60, three                          # and the fixed part is small (epoch end, set-up)
