import itertools
import math

import pytest
import torch
from torch import nn

from contrastlab.optim import LARS, build_optimizer, param_groups, warmup_cosine


def naive_lars_step(w, g, v, lr, momentum, wd, eta, adapt):
    """One LARS step written from You et al. (2017), one tensor at a time."""
    if adapt:
        g = g + wd * w
        wn, gn = w.norm().item(), g.norm().item()
        ratio = eta * wn / gn if wn > 0 and gn > 0 else 1.0
        g = ratio * g
    v = momentum * v + lr * g
    return w - v, v


def test_lars_matches_naive_update_over_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    opt = LARS(param_groups(model, 1e-4), lr=0.5, momentum=0.9, weight_decay=1e-4, eta=0.02)
    ref = {n: (p.detach().clone(), torch.zeros_like(p)) for n, p in model.named_parameters()}
    for _ in range(3):
        x = torch.randn(16, 5)
        model.zero_grad()
        model(x).pow(2).mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        for n, p in model.named_parameters():
            w, v = ref[n]
            ref[n] = naive_lars_step(w, grads[n], v, 0.5, 0.9, 1e-4, 0.02, adapt=p.ndim > 1)
            torch.testing.assert_close(p.detach(), ref[n][0], rtol=1e-5, atol=1e-6)


def test_param_groups_keep_biases_and_norms_out_of_weight_decay():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 1, 3, 3])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.AdamW), ("lars", LARS)])
def test_build_optimizer(name, cls):
    assert isinstance(build_optimizer(name, nn.Linear(2, 2), lr=0.1), cls)


def test_build_optimizer_rejects_unknown_name_and_bad_lr():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        build_optimizer("rmsprop", nn.Linear(2, 2), lr=0.1)
    with pytest.raises(ValueError, match="lr must be > 0, got -1"):
        build_optimizer("sgd", nn.Linear(2, 2), lr=-1)


def test_warmup_cosine_shape():
    lrs = [warmup_cosine(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))          # non-increasing after warmup
    assert lrs[10 + 45] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert warmup_cosine(100, 100, 10, 1.0) == pytest.approx(0.0)
    assert warmup_cosine(0, 10, 0, 2.0) == pytest.approx(2.0)
