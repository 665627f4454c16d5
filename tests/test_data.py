"""Tests for contrastlab.data: offline, on tiny archives written in each dataset's real format."""
from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from contrastlab import data
from contrastlab.data import DATASETS, DatasetNotFoundError, IndexBatches, load_dataset, subsample


@pytest.fixture(autouse=True)
def isolated_search_path(tmp_path, monkeypatch):
    """Keep the user's $CONTRASTLAB_DATA and ~/.cache out of every test."""
    monkeypatch.delenv("CONTRASTLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def no_md5(monkeypatch):
    """Fake archives cannot match torchvision's md5s: accept any existing file, keep the rest of its loader."""
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.stl10 as tv_stl10

    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    monkeypatch.setattr(tv_cifar, "check_integrity", exists)
    monkeypatch.setattr(tv_stl10, "check_integrity", exists)


def _images(rng, n, c, size):
    return rng.integers(0, 256, size=(n, c, size, size), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# registry and argument errors


def test_registry_is_consistent():
    assert set(DATASETS) == {"digits", "fashion-mnist", "cifar10", "cifar100", "stl10", "waveforms", "colour-shapes",
                             "colour-shapes-large", "colour-shapes-p4"}
    for key, info in DATASETS.items():
        assert info.name == key
        assert len(info.classes) == info.num_classes
        assert "train" in info.splits and "test" in info.splits
    assert DATASETS["stl10"].splits == ("train", "test", "unlabeled")
    assert (DATASETS["cifar10"].channels, DATASETS["cifar10"].size) == (3, 32)
    assert {k for k, info in DATASETS.items() if info.kind != "image"} == {"waveforms"}
    assert DATASETS["waveforms"].kind == "sequence"


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="name.*'mnist'.*'fashion-mnist'"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="split 'val'.*'train', 'test'"):
        load_dataset("cifar10", "val", download=False)
    with pytest.raises(ValueError, match="'unlabeled'"):
        load_dataset("stl10", "validation", download=False)


# ----------------------------------------------------------------------------------------------
# digits


def test_digits_split():
    from sklearn.datasets import load_digits

    x_train, y_train = load_dataset("digits", "train")
    x_test, y_test = load_dataset("digits", "test")
    assert x_train.dtype == torch.uint8 and y_train.dtype == torch.int64
    assert x_train.shape[1:] == (1, 8, 8) and x_test.shape[1:] == (1, 8, 8)
    assert len(x_train) + len(x_test) == 1797 and len(y_train) == len(x_train)
    assert 0.78 < len(x_train) / 1797 < 0.82
    assert x_train.max() == 255 and x_train.min() == 0
    # stratified: every class is split about 80/20
    for c in range(10):
        n_train, n_test = int((y_train == c).sum()), int((y_test == c).sum())
        assert abs(n_train / (n_train + n_test) - 0.8) < 0.01
    # train and test together are exactly the original 1797 (image, label) rows: a partition
    digits = load_digits()
    expected = np.rint(digits.images * 255 / 16).astype(np.uint8).reshape(1797, 64)
    expected = np.concatenate([expected, digits.target[:, None].astype(np.uint8)], axis=1)
    got = torch.cat([torch.cat([x_train.reshape(-1, 64), y_train[:, None].to(torch.uint8)], 1),
                     torch.cat([x_test.reshape(-1, 64), y_test[:, None].to(torch.uint8)], 1)]).numpy()
    assert sorted(map(bytes, got)) == sorted(map(bytes, expected))


def test_digits_deterministic_and_copies():
    x1, y1 = load_dataset("digits", "test")
    x1[:] = 0  # must not leak into the in-process cache
    x2, _ = load_dataset("digits", "test")
    x3, y3 = load_dataset("digits", "test")
    assert torch.equal(x2, x3) and torch.equal(y1, y3)
    assert x2.max() > 0


# ----------------------------------------------------------------------------------------------
# waveforms (generated)


def test_waveforms_shapes_balance_and_determinism():
    x, y = load_dataset("waveforms", "train")
    xt, yt = load_dataset("waveforms", "test")
    info = DATASETS["waveforms"]
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x.shape == (32000, 1, 1, info.size) and xt.shape == (2000, 1, 1, info.size)
    assert torch.equal(torch.bincount(y), torch.full((8,), 4000))
    assert torch.equal(torch.bincount(yt), torch.full((8,), 250))
    x[:] = 0                                        # must not leak into the in-process cache
    again, y_again = load_dataset("waveforms", "train")
    fresh, y_fresh = data.make_waveforms(32000, 0)   # and the same signals when made anew
    assert torch.equal(again, fresh) and torch.equal(y_again, y_fresh) and torch.equal(y, y_fresh)
    other, _ = data.make_waveforms(2000, 5)
    assert not torch.equal(other, xt)               # the seed matters; train and test differ
    assert not any(torch.equal(a, b) for a, b in zip(xt[:50], fresh[:50]))
    assert 0.3 < (again.float() / 255).mean() < 0.7 and again.max() > 200 and again.min() < 50


def test_waveform_class_is_recoverable_from_the_spectrum_not_from_raw_samples():
    from contrastlab.metrics import knn_accuracy

    x, y = load_dataset("waveforms", "train")
    xt, yt = load_dataset("waveforms", "test")

    def spectrum(v):
        v = v.flatten(1).float()
        return torch.fft.rfft(v - v.mean(1, keepdim=True)).abs()

    # measured: 0.987 from |FFT|, 0.507 from the raw samples (chance: 0.125)
    assert knn_accuracy(spectrum(x), y, spectrum(xt), yt) > 0.95
    assert knn_accuracy(x.flatten(1).float(), y, xt.flatten(1).float(), yt) < 0.6


def test_waveform_shapes_and_speeds_are_as_documented():
    x, y = data.make_waveforms(400, 3, noise=0.0)
    signal = x.flatten(1).float() / 255 * 4 - 2      # back to [-2, 2]
    spectrum = torch.fft.rfft(signal - signal.mean(1, keepdim=True)).abs()
    period = 256 / spectrum.argmax(1).float()       # the strongest frequency's period, in samples
    slow, square, sine = y % 2 == 0, y // 2 == 1, y // 2 == 0
    assert period[sine & slow].min() > 20 and period[sine & ~slow].max() < 12    # 24 and 10, +-10%
    assert (signal[square].abs() > 0.45).float().mean() > 0.99          # two levels +-a, a >= 0.5
    assert (signal[sine].abs() < 0.2).float().mean() > 0.1              # a sine passes through 0


# ----------------------------------------------------------------------------------------------
# fashion-mnist


def _write_idx(path, array, compress=True):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _write_fashion_mnist(folder, seed=0, compress=True):
    """20 train and 10 test images of shape (28, 28); returns {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, prefix, n in (("train", "train", 20), ("test", "t10k", 10)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
        written[split] = (images, labels)
    return written


def _assert_fashion_equal(loaded, written):
    images, labels = loaded
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape == (len(written[0]), 1, 28, 28)
    np.testing.assert_array_equal(images[:, 0].numpy(), written[0])
    np.testing.assert_array_equal(labels.numpy(), written[1].astype(np.int64))


@pytest.mark.parametrize("layout", ["", "fashion-mnist", "FashionMNIST/raw"])
@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_root(tmp_path, layout, compress):
    written = _write_fashion_mnist(tmp_path / "data" / layout, compress=compress)
    for split in ("train", "test"):
        _assert_fashion_equal(load_dataset("fashion-mnist", split, root=tmp_path / "data", download=False),
                              written[split])


def test_fashion_mnist_from_env_and_root_wins(tmp_path, monkeypatch):
    from_env = _write_fashion_mnist(tmp_path / "env" / "FashionMNIST" / "raw", seed=1)
    monkeypatch.setenv("CONTRASTLAB_DATA", str(tmp_path / "env"))
    _assert_fashion_equal(load_dataset("fashion-mnist", "test", download=False), from_env["test"])
    from_root = _write_fashion_mnist(tmp_path / "root", seed=2)
    _assert_fashion_equal(load_dataset("fashion-mnist", "test", root=str(tmp_path / "root"), download=False),
                          from_root["test"])


def test_fashion_mnist_bad_idx_file(tmp_path):
    _write_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 10))
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        load_dataset("fashion-mnist", "test", root=tmp_path, download=False)


def test_fashion_mnist_missing_lists_folders_and_apt(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", root=tmp_path / "empty", download=False)
    message = str(info.value)
    for folder in (tmp_path / "empty", tmp_path / "empty" / "FashionMNIST" / "raw",
                   tmp_path / "xdg-cache" / "contrastlab", tmp_path / "no-debian"):
        assert str(folder) in message
    assert "apt-get install dataset-fashion-mnist" in message and "CONTRASTLAB_DATA" in message
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.skipif(not data._DEBIAN_FASHION_MNIST.is_dir(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_real_test_split():
    images, labels = load_dataset("fashion-mnist", "test", download=False)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(torch.bincount(labels), torch.full((10,), 1000))


# ----------------------------------------------------------------------------------------------
# cifar10 / cifar100 (torchvision's pickled batches)


def _write_cifar10(root, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = []
    for i in range(1, 6):
        x, y = _images(rng, 3, 3, 32), rng.integers(0, 10, size=3)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"batch {i}", "data": x.reshape(3, -1), "labels": y.tolist()}, f)
        train.append((x, y))
    x_test, y_test = _images(rng, 4, 3, 32), rng.integers(0, 10, size=4)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": x_test.reshape(4, -1), "labels": y_test.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(DATASETS["cifar10"].classes)}, f)
    return {"train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
            "test": (x_test, y_test)}


def _write_cifar100(root, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for split, n in (("train", 6), ("test", 4)):
        x, fine, coarse = _images(rng, n, 3, 32), rng.integers(0, 100, size=n), rng.integers(0, 20, size=n)
        with open(folder / split, "wb") as f:
            pickle.dump({"data": x.reshape(n, -1), "fine_labels": fine.tolist(),
                         "coarse_labels": coarse.tolist()}, f)
        written[split] = (x, fine)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": list(DATASETS["cifar100"].classes)}, f)
    return written


def _assert_equal(loaded, written, info):
    images, labels = loaded
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape == (len(written[0]), info.channels, info.size, info.size)
    assert images.is_contiguous()
    np.testing.assert_array_equal(images.numpy(), written[0])
    np.testing.assert_array_equal(labels.numpy(), np.asarray(written[1], dtype=np.int64))


@pytest.mark.parametrize("name, writer", [("cifar10", _write_cifar10), ("cifar100", _write_cifar100)])
def test_cifar_roundtrip(tmp_path, no_md5, name, writer):
    written = writer(tmp_path)
    for split in ("train", "test"):
        _assert_equal(load_dataset(name, split, root=tmp_path, download=False), written[split], DATASETS[name])


def test_cifar_from_env(tmp_path, monkeypatch, no_md5):
    written = _write_cifar10(tmp_path / "env")
    monkeypatch.setenv("CONTRASTLAB_DATA", str(tmp_path / "env"))
    _assert_equal(load_dataset("cifar10", "test", download=False), written["test"], DATASETS["cifar10"])


def test_cifar_corrupted_files_are_reported(tmp_path):
    _write_cifar10(tmp_path)  # the real md5 check stays on: these files fail it
    with pytest.raises(DatasetNotFoundError, match="rejected by torchvision"):
        load_dataset("cifar10", "test", root=tmp_path, download=False)


def test_missing_cifar_lists_folders(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("download=False must not download")

    monkeypatch.setattr(data, "_download", no_network)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", root=empty, download=False)
    message = str(info.value)
    assert str(empty / "cifar-10-batches-py") in message
    assert str(tmp_path / "xdg-cache" / "contrastlab") in message
    assert "download=True" in message and "CONTRASTLAB_DATA" in message


def test_failed_download_is_dataset_not_found(tmp_path, monkeypatch):
    def offline(name, split, dest):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(DatasetNotFoundError, match="network is unreachable"):
        load_dataset("cifar100", download=True)


def test_download_goes_to_cache_folder(tmp_path, monkeypatch, no_md5):
    calls = []

    def fake_download(name, split, dest):  # stands in for torchvision's download + extract
        calls.append(dest)
        written.update(_write_cifar10(dest))

    written = {}
    monkeypatch.setattr(data, "_download", fake_download)
    loaded = load_dataset("cifar10", "train", download=True)
    assert calls == [tmp_path / "xdg-cache" / "contrastlab"]
    _assert_equal(loaded, written["train"], DATASETS["cifar10"])
    load_dataset("cifar10", "test", download=True)  # found now: no second download
    assert len(calls) == 1


# ----------------------------------------------------------------------------------------------
# stl10 (binary files, each image stored column-major)


def _write_stl10(root, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for split, n in (("train", 4), ("test", 3), ("unlabeled", 2)):
        x = _images(rng, n, 3, 96)
        (folder / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())  # column-major
        y = rng.integers(0, 10, size=n) if split != "unlabeled" else np.full(n, -1)
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())  # 1-based
        written[split] = (x, y)
    (folder / "class_names.txt").write_text("\n".join(DATASETS["stl10"].classes) + "\n")
    (folder / "fold_indices.txt").write_text("\n".join("0 1 2" for _ in range(10)) + "\n")
    return written


def test_stl10_roundtrip(tmp_path, no_md5):
    written = _write_stl10(tmp_path)
    for split in ("train", "test", "unlabeled"):
        _assert_equal(load_dataset("stl10", split, root=tmp_path, download=False), written[split],
                      DATASETS["stl10"])


# ----------------------------------------------------------------------------------------------
# subsample


def _toy(counts):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    images = torch.arange(len(labels))[:, None, None, None].expand(-1, 1, 2, 2)  # image i holds i
    return images, labels


def test_subsample_balanced_and_consistent():
    images, labels = _toy([50] * 10)
    x, y = subsample(images, labels, 95, seed=3)
    assert x.shape == (95, 1, 2, 2) and y.shape == (95,)
    counts = torch.bincount(y, minlength=10)
    assert counts.sum() == 95 and counts.min() >= 9 and counts.max() <= 10
    index = x[:, 0, 0, 0]
    assert torch.equal(labels[index], y)                        # rows stay paired
    assert torch.all(index[1:] > index[:-1])                    # original order, no repeats


def test_subsample_small_class_gives_all_it_has():
    images, labels = _toy([3, 50, 50, 50, 50])
    _, y = subsample(images, labels, 50, seed=0)
    counts = torch.bincount(y).tolist()
    assert counts[0] == 3 and sum(counts) == 50 and sorted(counts[1:]) == [11, 12, 12, 12]


def test_subsample_deterministic_and_edge_sizes():
    images, labels = _toy([20] * 5)
    a = subsample(images, labels, 30, seed=7)
    b = subsample(images, labels, 30, seed=7)
    c = subsample(images, labels, 30, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    x, y = subsample(images, labels, 100)
    assert x is images and y is labels
    assert subsample(images, labels, 0)[0].shape == (0, 1, 2, 2)
    with pytest.raises(ValueError, match="same length, got 100 and 99"):
        subsample(images, labels[:99], 10)
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        subsample(images, labels, -1)


# ----------------------------------------------------------------------------------------------
# IndexBatches


def test_index_batches_are_permutations():
    sampler = IndexBatches(103, 10, seed=1, drop_last=False)
    assert len(sampler) == 11
    batches = list(sampler.epoch(2))
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert all(b.dtype == torch.int64 for b in batches)
    assert torch.equal(torch.sort(torch.cat(batches)).values, torch.arange(103))

    dropped = IndexBatches(103, 10, seed=1)
    assert len(dropped) == 10 and len(list(dropped.epoch(0))) == 10
    assert len(IndexBatches(100, 10, drop_last=False)) == 10


def test_index_batches_reproducible_and_resumable():
    sampler = IndexBatches(64, 8, seed=5)
    epoch3 = list(sampler.epoch(3))
    assert all(torch.equal(a, b) for a, b in zip(epoch3, IndexBatches(64, 8, seed=5).epoch(3)))
    assert not torch.equal(torch.cat(epoch3), torch.cat(list(sampler.epoch(4))))
    assert not torch.equal(torch.cat(epoch3), torch.cat(list(IndexBatches(64, 8, seed=6).epoch(3))))
    resumed = list(sampler.epoch(3, start=5))
    assert len(resumed) == 3 and all(torch.equal(a, b) for a, b in zip(resumed, epoch3[5:]))
    assert list(sampler.epoch(3, start=len(sampler))) == []
    assert torch.equal(torch.cat(list(sampler)), torch.cat(list(sampler.epoch(0))))


def test_index_batches_no_shuffle_and_errors():
    assert torch.equal(torch.cat(list(IndexBatches(12, 4, shuffle=False).epoch(9))), torch.arange(12))
    with pytest.raises(ValueError, match="batch_size must be <= n.*got batch_size=20 and n=10"):
        IndexBatches(10, 20)
    with pytest.raises(ValueError, match="batch_size must be > 0, got 0"):
        IndexBatches(10, 0)
    with pytest.raises(ValueError, match=r"start must be in \[0, 2\].*got 3"):
        IndexBatches(10, 5).epoch(0, start=3)


@pytest.mark.parametrize("device", ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else []))
def test_index_batches_device(device):
    sampler = IndexBatches(32, 8, device=device)
    batch = next(iter(sampler.epoch(1)))
    assert batch.device.type == device and batch.shape == (8,) and batch.dtype == torch.int64
    if device == "cuda":  # same permutation on every device
        assert torch.equal(batch.cpu(), next(iter(IndexBatches(32, 8).epoch(1))))


# ----------------------------------------------------------------------------------------------
# colour-shapes (generated)


def test_colour_shapes_are_balanced_deterministic_and_coloured_at_random():
    info = DATASETS["colour-shapes"]
    x, y = load_dataset("colour-shapes", "train")
    xt, yt = load_dataset("colour-shapes", "test")
    assert x.dtype == torch.uint8 and x.shape == (20000, 3, 32, 32) and xt.shape == (4000, 3, 32, 32)
    assert torch.equal(torch.bincount(y), torch.full((8,), 2500)) and len(info.classes) == 8
    assert torch.equal(torch.bincount(yt), torch.full((8,), 500))
    x[:] = 0                                         # must not leak into the in-process cache
    again, _ = load_dataset("colour-shapes", "train")
    fresh, y_fresh = data.make_colour_shapes(20000, 0)
    assert torch.equal(again, fresh) and torch.equal(y, y_fresh)
    assert not torch.equal(data.make_colour_shapes(64, 5)[0], data.make_colour_shapes(64, 6)[0])
    # the mean colour of an image says nothing about its class: per-class means agree within noise
    mean_rgb = again.float().mean((2, 3)) / 255                                  # (N, 3)
    per_class = torch.stack([mean_rgb[y_fresh == c].mean(0) for c in range(8)])  # (8, 3)
    assert (per_class - mean_rgb.mean(0)).abs().max() < 0.02


def test_colour_shapes_draw_each_shape_with_its_own_area_and_two_colours():
    x, y = data.make_colour_shapes(800, 3, noise=0.0)
    assert x.shape == (800, 3, 32, 32)
    # without noise every image holds exactly two colours: the shape's and the background's
    for img in x[:40]:
        assert len(torch.unique(img.flatten(1).T, dim=0)) == 2
    # the foreground is the less common colour; filled shapes cover more than outlines
    def share(img):
        _, counts = torch.unique(img.flatten(1).T, dim=0, return_counts=True)
        return counts.min().item() / counts.sum().item()
    area = torch.tensor([share(img) for img in x])
    mean = {c: area[y == c].mean().item() for c in range(8)}
    assert mean[0] > mean[1] and mean[2] > mean[3]           # disc > ring, square > frame
    assert all(0.03 < a < 0.5 for a in mean.values())


def test_colour_shapes_need_the_shape_not_the_colour():
    from contrastlab.metrics import knn_accuracy

    x, y = load_dataset("colour-shapes", "train")
    xt, yt = load_dataset("colour-shapes", "test")
    colour = lambda v: v.float().mean((2, 3))
    # measured: chance is 0.125; kNN on the mean colour 0.132, on raw pixels (5,000) 0.183, on an edge map 0.585
    assert knn_accuracy(colour(x), y, colour(xt), yt) < 0.2

    def edges(v):
        g = v.float().mean(1, keepdim=True)
        gx, gy = g[..., :, 1:] - g[..., :, :-1], g[..., 1:, :] - g[..., :-1, :]
        return torch.cat([gx.abs().flatten(1), gy.abs().flatten(1)], 1)
    assert knn_accuracy(edges(x[:5000]), y[:5000], edges(xt), yt) > 0.3


def test_colour_shapes_palette_draws_distinct_corner_colours():
    from contrastlab.data import make_colour_shapes
    x, y = make_colour_shapes(400, seed=5, noise=0.0, palette=4)
    corners = x[:, :, 0, 0].float() / 255, x[:, :, 16, 16].float() / 255      # background, maybe shape
    palette = {(0, 0, 0), (1, 1, 1), (1, 0, 0), (0, 1, 0)}
    colours = {tuple(int(v) for v in c) for c in torch.cat(corners).round()}
    assert colours <= palette and len({tuple(c.tolist()) for c in corners[0].round()}) == 4
    for bad in (1, 9, True, 2.5):
        with pytest.raises(ValueError, match="palette must be an int in"):
            make_colour_shapes(10, seed=0, palette=bad)
    # the uniform colours are unchanged by the option (the published colour-shapes records rest on them)
    a, _ = make_colour_shapes(64, seed=3)
    b, _ = make_colour_shapes(64, seed=3, palette=None)
    assert torch.equal(a, b)


def test_instrument_sets_are_larger_balanced_and_distinct():
    x, y = load_dataset("colour-shapes-p4", "test")
    xl, _ = load_dataset("colour-shapes-large", "test")
    assert x.shape == (16000, 3, 32, 32) and torch.bincount(y).tolist() == [2000] * 8
    assert not torch.equal(x, xl)
    # four colours only: every background pixel is a palette colour up to the pixel noise
    bg = x[:, :, 0, 0].float() / 255
    assert ((bg - bg.round()).abs() < 0.2).all()
