"""Damaged files, full disks, diverging training and bad values through the API (issue 18)."""
import errno
import json
import os
import zipfile

import pytest
import torch
from torch import nn

from contrastlab import data, experiments, losses, metrics
from contrastlab.train import CHECKPOINT_FORMAT, CheckpointError, TrainConfig, fit, load_checkpoint, save_checkpoint

TINY = {"dataset.train_size": 300, "dataset.test_size": 100, "eval.linear_epochs": 5}


def raw_pixels(**overrides):
    """The cheapest experiment: nothing trained, kNN and the probe on pixels."""
    return experiments.ExperimentConfig("raw_pixels", "digits", "smoke", overrides={**TINY, **overrides})


def flip_tensor_bit(path):
    """Flip one exponent bit in the first tensor's bytes of a torch zip checkpoint."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = min((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.header_offset)
    start = info.header_offset
    offset = start + 30 + int.from_bytes(raw[start + 26:start + 28], "little") \
        + int.from_bytes(raw[start + 28:start + 30], "little") + 3
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


# ----------------------------------------------------------------------------------- checkpoints


def test_a_flipped_bit_in_a_checkpoint_is_refused_with_its_path(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"format": CHECKPOINT_FORMAT, "w": torch.ones(64, 64)}, path)
    assert load_checkpoint(path)["w"].sum() == 64 * 64
    flip_tensor_bit(path)
    with pytest.raises(CheckpointError, match="checkpoint.pt.*checksum"):
        load_checkpoint(path)


def test_a_full_disk_during_a_checkpoint_write_says_so_and_leaves_no_partial_file(tmp_path, monkeypatch):
    real_write = os.write

    def full(fd, chunk):                  # a few bytes reach the disk, then it is full
        real_write(fd, bytes(chunk)[:1000])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    folder = tmp_path / "run"
    save_checkpoint({"format": CHECKPOINT_FORMAT, "step": 1}, folder / "checkpoint.pt")
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match=r"could not write checkpoint .*checkpoint.pt.*No space left") as err:
        save_checkpoint({"format": CHECKPOINT_FORMAT, "step": 2, "w": torch.randn(500, 500)},
                        folder / "checkpoint.pt")
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC
    assert [p.name for p in folder.iterdir()] == ["checkpoint.pt"]      # the temporary file is gone
    assert load_checkpoint(folder / "checkpoint.pt")["step"] == 1       # and the old checkpoint intact


def test_written_files_keep_the_usual_permissions(tmp_path):
    path = experiments.write_json(tmp_path / "r.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ----------------------------------------------------------------------------------- records


@pytest.mark.parametrize("damage", ["{}", "", '{"config": {"budget"', "[1, 2]"])
def test_a_damaged_record_is_set_aside_named_and_computed_again(tmp_path, capsys, damage):
    config = raw_pixels()
    path = experiments.record_path(experiments.resolve(config), tmp_path)
    first = experiments.run(config, cache_dir=tmp_path, progress=False)
    path.write_text(damage)
    again = experiments.run(config, cache_dir=tmp_path, progress=False)
    assert again["metrics"] == first["metrics"]
    assert json.loads(path.read_text())["metrics"] == first["metrics"]        # written anew
    assert path.with_name(path.name + ".corrupt").read_text() == damage       # the damaged one kept aside
    assert path.name in capsys.readouterr().err


# ----------------------------------------------------------------------------------- divergence


class Toy(nn.Module):
    """A method whose loss turns NaN at one chosen step (1-based), counted over the process's calls."""

    name = "toy"

    def __init__(self, nan_at: int | None = None, width: int = 1):
        super().__init__()
        self.w = nn.Parameter(torch.ones(width))
        self.calls, self.nan_at = 0, nan_at

    def forward(self, views, index=None, labels=None):
        self.calls += 1
        scale = float("nan") if self.calls == self.nan_at else 1.0
        return {"loss": (self.w ** 2).sum() * scale + views[0].mean() * 0}

    def on_step_end(self, progress):
        pass


class Views:
    def views(self, x, n):
        return [x.float() / 255] * n


IMAGES = torch.randint(0, 255, (64, 1, 4, 4), dtype=torch.uint8)
TOY_CFG = TrainConfig(epochs=2, batch_size=16, optimizer="sgd", lr=0.1, warmup_epochs=0.0, knn_every=0, device="cpu")


def test_training_stops_at_the_step_whose_loss_is_nan_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(**{**TOY_CFG.__dict__, "checkpoint_every": 1})
    with pytest.raises(FloatingPointError, match=r"diverged at step 3: the loss is nan \(train\.lr 0\.1, .*made [0-9.e-]+ at that step\).*temperature"):
        fit(Toy(nan_at=3), Views(), IMAGES, cfg, out_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 2 and torch.isfinite(state["model"]["w"]).all()


def test_a_resumed_run_logs_each_epoch_once(tmp_path):
    """A kill between an epoch's log row and its checkpoint: the run again logs that epoch once."""
    fit(Toy(), Views(), IMAGES, TrainConfig(**{**TOY_CFG.__dict__, "epochs": 1}), out_dir=tmp_path, progress=False)
    log = tmp_path / "log.jsonl"
    first = log.read_text()
    log.write_text(first + json.dumps({**json.loads(first), "epoch": 2, "step": 8}) + "\n" + '{"epoch": 3, "st')
    fit(Toy(), Views(), IMAGES, TOY_CFG, out_dir=tmp_path, progress=False)
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2]


def test_a_checkpoint_of_another_model_is_named_not_dumped(tmp_path):
    fit(Toy(width=1), Views(), IMAGES, TOY_CFG, out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=r"checkpoint.pt.* holds another model than 'toy'.*size mismatch for w"):
        fit(Toy(width=3), Views(), IMAGES, TrainConfig(**{**TOY_CFG.__dict__, "epochs": 3}),
            out_dir=tmp_path, progress=False)


@pytest.mark.parametrize("probe", ["knn", "linear"])
@pytest.mark.parametrize("where", ["train_features", "test_features"])
def test_probes_refuse_non_finite_features(probe, where):
    good = torch.randn(40, 4)
    bad = good.clone()
    bad[7, 2] = float("nan") if probe == "knn" else float("inf")
    y = torch.arange(40) % 4
    args = (bad, y, good, y) if where == "train_features" else (good, y, bad, y)
    with pytest.raises(ValueError, match=rf"{where} must be finite.*index \(7, 2\)"):
        if probe == "knn":
            metrics.knn_accuracy(*args, k=5)
        else:
            metrics.linear_probe(*args, epochs=3)


def test_nt_xent_refuses_rows_without_features():
    with pytest.raises(ValueError, match=r"D >= 1.*\(8, 0\)"):
        losses.nt_xent(torch.randn(8, 0), torch.randn(8, 0))


# ----------------------------------------------------------------------------------- config values


@pytest.mark.parametrize("key, value, error, match", [
    ("train.epochs", "1", TypeError, r"train.epochs must be an int, got '1' \(str\)"),
    ("train.batch_size", 64.0, TypeError, r"train.batch_size must be an int, got 64.0"),
    ("train.lr", "0.1", TypeError, r"train.lr must be a number"),
    ("method.temperature", None, TypeError, r"method.temperature must be a number, got None"),
    ("augment.crop_scale", 0.5, TypeError, r"augment.crop_scale must be a list of 2"),
    ("augment.flip", 1, TypeError, r"augment.flip must be true or false"),
    ("train.warmup_epochs", -3, ValueError, r"train.warmup_epochs must be >= 0"),
    ("dataset.test_size", 0, ValueError, r"dataset.test_size must be >= 1; None keeps the whole split"),
    ("dataset.train_size", -5, ValueError, r"dataset.train_size must be >= 1"),
    ("eval.knn_k", 0, ValueError, r"eval.knn_k must be >= 1"),
    ("eval.linear_epochs", 0, ValueError, r"eval.linear_epochs must be >= 1"),
    ("method.temperature", 0, ValueError, r"method.temperature must be > 0"),
])
def test_overrides_of_the_wrong_type_or_range_are_refused_by_resolve(key, value, error, match):
    config = experiments.ExperimentConfig("simclr", "digits", "smoke", overrides={key: value})
    with pytest.raises(error, match=match):
        experiments.resolve(config)


def test_values_of_the_right_type_still_resolve():
    config = experiments.ExperimentConfig("simclr", "digits", "smoke", overrides={
        "train.lr": 1, "dataset.test_size": None, "augment.crop_scale": [0.3, 1], "method.hidden_dim": None})
    assert experiments.resolve(config)["train"]["lr"] == 1


def test_run_checks_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"dataset.train_size must be at most the 1438 images of digits's train"):
        experiments.run(raw_pixels(**{"dataset.train_size": 99999}), cache_dir=tmp_path, progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"results folder must be a folder, got .*file"):
        experiments.run(raw_pixels(), cache_dir=tmp_path / "file", progress=False)
    if not torch.cuda.is_available():
        config = experiments.ExperimentConfig("simclr", "digits", "smoke", overrides={"train.device": "cuda"})
        with pytest.raises(ValueError, match=r"train.device is 'cuda', but torch finds no CUDA GPU"):
            experiments.run(config, cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.glob("*.json"))


def test_a_garbage_gz_dataset_file_is_named(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(b"this is not gzip data")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz is not a readable gzip file"):
        data._read_idx(bad)
