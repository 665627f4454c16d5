import json
import math
import os
import signal

import pytest
import torch

from contrastlab.augment import AugmentConfig, SimCLRAugment
from contrastlab.data import load_dataset
from contrastlab.methods import SimCLR, SimCLRConfig
from contrastlab.models import SmallCNN
from contrastlab.train import (
    CheckpointError,
    TrainConfig,
    autocast_dtype,
    cpu_computes_bf16,
    fit,
    load_checkpoint,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def digits():
    x, y = load_dataset("digits", "train")
    return x[:256], y[:256]


def make_method(seed=0):
    torch.manual_seed(seed)
    return SimCLR(SmallCNN(in_channels=1, width=4), SimCLRConfig(proj_dim=16))


AUG = SimCLRAugment(AugmentConfig(size=8, crop_scale=(0.3, 1.0)))
CFG = TrainConfig(device="cpu", epochs=2, batch_size=64, optimizer="sgd", lr=0.5, warmup_epochs=0.5,
                monitor_train=128, monitor_test=64)


def weights(method):
    return {k: v.clone() for k, v in method.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"parameter {k} differs"


def test_fit_trains_logs_and_monitors(digits, tmp_path):
    x, y = digits
    method = make_method()
    before = weights(method)
    hist = fit(method, AUG, x, CFG, labels=y, eval_data=(x[:64], y[:64]), out_dir=tmp_path, progress=False)
    assert hist["finished"] and hist["epoch"] == [1, 2] and hist["step"] == [4, 8]
    assert all(0.0 <= a <= 1.0 for a in hist["knn_acc"])
    assert all(v > 0 for v in hist["views_per_sec"])
    for key in ("feature_std", "effective_rank", "alignment", "uniformity", "embed_std"):   # health, each epoch
        assert len(hist[key]) == 2 and all(math.isfinite(v) for v in hist[key]), key
    assert 0 <= hist["alignment"][0] <= 4 and -4 <= hist["uniformity"][0] <= 0
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in lines] == [1, 2]
    assert lines[1]["loss"] == pytest.approx(hist["loss"][1])
    assert any(not torch.equal(before[k], v) for k, v in method.state_dict().items())


def test_resumed_run_ends_with_the_same_weights(digits, tmp_path):
    x, y = digits
    full = make_method()
    h_full = fit(full, AUG, x, CFG, labels=y, progress=False)

    split = make_method()
    h1 = fit(split, AUG, x, CFG, labels=y, out_dir=tmp_path, max_steps=6, progress=False)  # mid-epoch 2
    assert not h1["finished"] and h1["step"] == [4]
    resumed = make_method(seed=123)            # different init: everything must come from the checkpoint
    h2 = fit(resumed, AUG, x, CFG, labels=y, out_dir=tmp_path, progress=False)
    assert h2["finished"]
    assert_same_weights(weights(full), weights(resumed))
    assert h2["loss"] == pytest.approx(h_full["loss"], rel=1e-6)


def test_ctrl_c_leaves_a_resumable_checkpoint(digits, tmp_path):
    x, y = digits
    full = make_method()
    fit(full, AUG, x, CFG, labels=y, progress=False)

    method = make_method()
    calls = {"n": 0}
    original = method.forward

    def forward_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:                    # Ctrl-C arrives in the middle of step 3
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    method.forward = forward_then_interrupt
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 3"):
        fit(method, AUG, x, CFG, labels=y, out_dir=tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    resumed = make_method(seed=5)
    fit(resumed, AUG, x, CFG, labels=y, out_dir=tmp_path, progress=False)
    assert_same_weights(weights(full), weights(resumed))


def test_checkpoint_is_atomic_and_damage_is_reported(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(path)
    good = {"format": "contrastlab-checkpoint-v1", "step": 1, "w": torch.arange(1000.0)}
    save_checkpoint(good, path)
    assert load_checkpoint(path)["step"] == 1 and not list(tmp_path.glob("*.tmp"))

    real_save = torch.save

    def failing_save(obj, f):                  # dies half-way through writing the new file
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    torch.save = failing_save
    try:
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint({**good, "step": 2}, path)
    finally:
        torch.save = real_save
    assert load_checkpoint(path)["step"] == 1          # the old checkpoint survived

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a contrastlab checkpoint"):
        load_checkpoint(path)


def test_fit_rejects_bad_input(digits):
    x, y = digits
    with pytest.raises(TypeError, match="images must have dtype torch.uint8, got torch.float32"):
        fit(make_method(), AUG, x.float(), CFG, progress=False)
    with pytest.raises(ValueError, match="labels must have one entry per image, got 10 labels for 256"):
        fit(make_method(), AUG, x, CFG, labels=y[:10], progress=False)
    with pytest.raises(ValueError, match="batch_size must be at most the number of images"):
        fit(make_method(), AUG, x[:32], CFG, progress=False)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        fit(make_method(), AUG, x, TrainConfig(device="cpu", optimizer="rmsprop"), progress=False)


def test_autocast_dtype(monkeypatch):
    cpu = torch.device("cpu")
    assert autocast_dtype("off", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16 and autocast_dtype("fp16", cpu) is torch.float16
    with pytest.raises(ValueError, match="unknown amp 'fp8'"):
        autocast_dtype("fp8", cpu)
    # 'auto' on a CPU: bf16 where the CPU computes it in hardware, full precision elsewhere
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert cpu_computes_bf16() == (native and torch.backends.mkldnn.is_available())
    assert autocast_dtype("auto", cpu) is (torch.bfloat16 if cpu_computes_bf16() else None)
    for forced, dtype in (("0", None), ("1", torch.bfloat16)):
        monkeypatch.setenv("CONTRASTLAB_CPU_BF16", forced)
        assert autocast_dtype("auto", cpu) is dtype
    assert autocast_dtype("auto", torch.device("mps")) is None


def test_bf16_autocast_trains_on_cpu(digits):
    x, _ = digits
    cfg = TrainConfig(device="cpu", epochs=1, batch_size=64, optimizer="sgd", lr=0.1, amp="bf16", knn_every=0)
    hist = fit(make_method(), AUG, x, cfg, progress=False)
    assert torch.isfinite(torch.tensor(hist["loss"])).all()
