"""Harness of the slow "learns on real data" tests, one per method.

Each test builds its method with a fixed seed, trains it briefly on 16k Fashion-MNIST images
and checks that the representation h beats the same encoder at random init, with the weighted
kNN (k = 200) and the linear probe fitted on those images and scored on 2,000 test images.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from contrastlab import metrics
from contrastlab.augment import AugmentConfig, SimCLRAugment
from contrastlab.data import load_dataset
from contrastlab.train import TrainConfig, eval_transform, fit


@dataclass
class Learned:
    """Accuracies at random init and after training, and fit()'s history."""

    knn_before: float
    linear_before: float
    knn_after: float
    linear_after: float
    history: dict

    def __str__(self) -> str:
        return (f"loss {self.history['loss'][0]:.3f} -> {self.history['loss'][-1]:.3f}, "
                f"linear {self.linear_before:.3f} -> {self.linear_after:.3f}, "
                f"kNN {self.knn_before:.3f} -> {self.knn_after:.3f}")


def fashion_subset(n_train: int = 16384, n_test: int = 2000):
    """(x, y, x_test, y_test) from Fashion-MNIST; skips the test when the data is not installed."""
    try:
        x, y = load_dataset("fashion-mnist", "train", download=False)
        xt, yt = load_dataset("fashion-mnist", "test", download=False)
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    return x[:n_train], y[:n_train], xt[:n_test], yt[:n_test]


def probe(encoder, data) -> tuple[float, float]:
    """(kNN accuracy, linear-probe accuracy) of the encoder's frozen features."""
    x, y, xt, yt = data
    t = eval_transform(None)
    f_tr = metrics.extract_features(encoder, x, transform=t)
    f_te = metrics.extract_features(encoder, xt, transform=t)
    return (metrics.knn_accuracy(f_tr, y, f_te, yt, k=200),
            metrics.linear_probe(f_tr, y, f_te, yt)["test_acc"])


def train_briefly(method, *, epochs: int = 6, lr: float = 2e-3, augment=None,
                  supervised: bool = False, amp: str = "off") -> Learned:
    """Probe at init, train with Adam (batch 256), probe again.

    In full precision unless ``amp`` says otherwise: each test's thresholds were set from fp32 runs,
    and with ``amp='auto'`` they would mean bf16 on CPUs that compute it and fp32 on the others. What
    bf16 does to accuracy is measured on the instrument (benchmarks/bf16_accuracy.py); SimCLR's test
    here also runs under bf16."""
    data = fashion_subset()
    before = probe(method.encoder, data)
    augment = augment or SimCLRAugment(AugmentConfig(size=28, crop_scale=(0.4, 1.0)))
    config = TrainConfig(device="cpu", epochs=epochs, batch_size=256, optimizer="adam", lr=lr, warmup_epochs=0.5,
                         knn_every=0, amp=amp)
    history = fit(method, augment, data[0], config, labels=data[1] if supervised else None, progress=False)
    return Learned(*before, *probe(method.encoder, data), history)
