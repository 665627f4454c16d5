"""Multi-process training on CPU: two Gloo processes against one process with the whole batch.

One spawn of two workers runs every distributed scenario (losses and their gradients through
DDP, Sinkhorn, MoCo's queue, a few training steps of each method, a checkpoint) and saves what
it saw; the tests compare that with a single process on the concatenated batch. The training
runs use views without randomness, so that both settings see the same images, and BatchNorm
over the global batch (`contrastlab.distributed.SyncBatchNorm`, which `fit` puts in under DDP):
two processes with B images each then take the steps one process takes with 2B.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from contrastlab import distributed, losses
from contrastlab.methods import (
    BYOL,
    CPC,
    BYOLConfig,
    CPCConfig,
    InstDisc,
    InstDiscConfig,
    MoCo,
    MoCoConfig,
    SimCLR,
    SimCLRConfig,
    SupCon,
    SupConConfig,
    SwAV,
    SwAVConfig,
)
from contrastlab.methods.cpc import cpc_loss
from contrastlab.models import SmallCNN
from contrastlab.train import TrainConfig, fit, load_checkpoint

WORLD = 2
N, D_IN, D = 8, 6, 5          # global batch of the loss checks: 4 rows per rank
TOL = {"rtol": 1e-4, "atol": 1e-5}


# ----------------------------------------------------------------------------- shared set-ups

def _loss_inputs() -> dict:
    g = torch.Generator().manual_seed(3)
    return {"x1": torch.randn(N, D_IN, generator=g), "x2": torch.randn(N, D_IN, generator=g),
            "neg": torch.randn(N, D_IN, generator=g), "labels": torch.tensor([0, 1, 2, 0, 1, 2, 3, 3]),
            "seq": torch.randn(N, 4, 2, D_IN, generator=g)}


LOSSES = {
    "nt_xent": lambda m, b, gather: losses.nt_xent(m.f(b["x1"]), m.f(b["x2"]), 0.5, gather=gather),
    "nt_logistic": lambda m, b, gather: losses.nt_logistic(m.f(b["x1"]), m.f(b["x2"]), 0.5, True, gather=gather),
    "supcon": lambda m, b, gather: losses.supcon(torch.stack([m.f(b["x1"]), m.f(b["x2"])], 1), b["labels"],
                                                 0.2, gather=gather),
    "info_nce": lambda m, b, gather: losses.info_nce(m.f(b["x1"]), m.f(b["x2"]), m.f(b["neg"]), 0.2,
                                                     gather=gather),
    "cpc_batch": lambda m, b, gather: cpc_loss(m.f(b["seq"]), m.g(b["seq"]), m.w, "batch", gather=gather),
    "cpc_both": lambda m, b, gather: cpc_loss(m.f(b["seq"]), m.g(b["seq"]), m.w, "both", gather=gather),
}


class _Heads(nn.Module):
    """Parameters in front of the losses, so that DDP averages real gradients."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.f, self.g = nn.Linear(D_IN, D), nn.Linear(D_IN, 3)
        self.w = nn.Parameter(torch.randn(2, D, 3) * 0.3)   # CPC's W_1, W_2

    def forward(self, batch: dict, name: str, gather: bool):
        return LOSSES[name](self, batch, gather)


def _images(n=32):
    g = torch.Generator().manual_seed(11)
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 4


class FixedViews:
    """Views without randomness: the same on every process, whatever its random stream."""

    def views(self, x, n_views=2):
        x = x.float() / 255
        return [x, x.flip(-1), x.flip(-2)][:n_views]


def _method(name: str, num_samples: int):
    torch.manual_seed(0)
    enc = SmallCNN(in_channels=1, width=4)
    return {
        "simclr": lambda: SimCLR(enc, SimCLRConfig(proj_dim=8)),
        "supcon": lambda: SupCon(enc, SupConConfig(proj_dim=8)),
        "moco": lambda: MoCo(enc, MoCoConfig(queue_size=32, bn_splits=2, proj_dim=8)),
        "swav": lambda: SwAV(enc, SwAVConfig(n_prototypes=6, proj_dim=8, queue_size=16)),
        "byol": lambda: BYOL(enc, BYOLConfig(proj_dim=8, hidden_dim=16)),
        "instdisc": lambda: InstDisc(enc, InstDiscConfig(feature_dim=8, nce_k=8, bank_init="random",
                                                         head="mlp"), num_samples=num_samples),
        "cpc": lambda: CPC(enc, CPCConfig(patch_size=4, patch_stride=2, steps=2, context_dim=8, negatives="both")),
    }[name]()


METHOD_NAMES = ("simclr", "supcon", "moco", "swav", "byol", "instdisc", "cpc")
TRAIN = TrainConfig(epochs=2, batch_size=16, optimizer="sgd", lr=0.4, warmup_epochs=0.0, device="cpu",
                    knn_every=0, amp="off")


def _train(name: str, steps: int = 3, **kw):
    x, y = _images()
    method = _method(name, len(x))
    fit(method, FixedViews(), x, TRAIN, labels=y, max_steps=steps, progress=False, **kw)
    return method


def _state(method):
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def _moco_step(x):
    torch.manual_seed(5)
    moco = MoCo(SmallCNN(in_channels=1, width=2), MoCoConfig(queue_size=16, bn_splits=2, proj_dim=4)).train()
    torch.manual_seed(7)   # the shuffle of the keys' BN: rank 0's permutation, shared with rank 1
    out = moco([x, x.flip(-1)])
    return moco.queue.clone(), out["k"]


# ----------------------------------------------------------------------------- the workers

def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    res = {}
    try:
        batch = _loss_inputs()
        mine = {k: distributed.shard(v) for k, v in batch.items()}
        for name in LOSSES:
            model = nn.parallel.DistributedDataParallel(_Heads(), find_unused_parameters=True)
            loss = model(mine, name, True)
            loss.backward()
            res[f"loss/{name}"] = (loss.detach(), {k: p.grad.clone() for k, p in model.module.named_parameters()
                                                   if p.grad is not None})
        scores = torch.randn(9, 7, generator=torch.Generator().manual_seed(4))
        res["sinkhorn"] = losses.sinkhorn(distributed.shard(scores), 0.05, 3, gather=True)   # 5 and 4 rows

        x, _ = _images()
        res["moco_queue"], res["moco_k"] = _moco_step(distributed.shard(x[:8].float() / 255))

        for name in METHOD_NAMES:
            res[f"train/{name}"] = _state(_train(name))

        import contrastlab.train as train_module
        saves = []
        real_save = train_module.save_checkpoint
        train_module.save_checkpoint = lambda state, path: (saves.append(str(path)), real_save(state, path))[1]
        try:
            _train("simclr", steps=2, out_dir=os.path.join(out_dir, "run"))
        finally:
            train_module.save_checkpoint = real_save
        res["saves"] = saves

        try:
            fit(_method("simclr", 32), FixedViews(), _images()[0], TrainConfig(batch_size=15, device="cpu"),
                max_steps=1, progress=False)
        except ValueError as e:
            res["odd_batch_error"] = str(e)
    finally:
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the two processes saw: a list of two dicts."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], out


def _close(a, b, what, **tol):
    tol = tol or TOL
    assert torch.allclose(a, b, **tol), f"{what}: max difference {(a - b).abs().max().item():.3g}"


# ----------------------------------------------------------------------------- the tests

def test_helpers_are_identities_in_one_process():
    x = torch.randn(4, 3, requires_grad=True)
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.gather_with_grad(x) is x and distributed.all_gather(x) is x and distributed.shard(x) is x
    assert distributed.all_reduce_sum(x) is x and distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.rank_seed(7) == 7 and distributed.rank_seed(7, 3) != 7
    assert torch.equal(distributed.global_mean(torch.tensor(6.0), torch.tensor(0)), torch.tensor(6.0))
    _close(distributed.all_logsumexp(x, 0), torch.logsumexp(x, 0), "logsumexp")


@pytest.mark.parametrize("name", list(LOSSES))
def test_gathered_loss_and_ddp_gradient_equal_one_process(ranks, name):
    res, _ = ranks
    single = _Heads()
    loss = single(_loss_inputs(), name, False)
    loss.backward()
    per_rank = [r[f"loss/{name}"] for r in res]
    _close(torch.stack([loss_r for loss_r, _ in per_rank]).mean(), loss.detach(), f"{name} loss")
    for param_name, p in single.named_parameters():
        if p.grad is None:
            continue
        for rank, (_, grads) in enumerate(per_rank):   # DDP's average: not divided by 2, nothing missing
            _close(grads[param_name], p.grad, f"{name} gradient of {param_name} on rank {rank}")


def test_sinkhorn_codes_equal_one_process_on_concatenated_scores(ranks):
    res, _ = ranks
    scores = torch.randn(9, 7, generator=torch.Generator().manual_seed(4))
    codes = torch.cat([r["sinkhorn"] for r in res])
    _close(codes, losses.sinkhorn(scores, 0.05, 3), "Sinkhorn codes", rtol=1e-4, atol=1e-6)


def test_moco_queue_holds_every_ranks_keys_after_a_step(ranks):
    res, _ = ranks
    x, _ = _images()
    queue, keys = _moco_step(x[:8].float() / 255)
    both = torch.cat([r["moco_k"] for r in res])              # rank 0's keys, then rank 1's
    for rank, r in enumerate(res):
        _close(r["moco_queue"][:8], both, f"queue of rank {rank} against the keys of both ranks")
        _close(r["moco_queue"], queue, f"queue of rank {rank} against one process")
    _close(both, keys, "keys with BN shuffled across ranks against one process")


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_two_ranks_train_like_one_process_with_the_global_batch(ranks, name):
    res, _ = ranks
    single = _state(_train(name))
    for rank, r in enumerate(res):
        state = r[f"train/{name}"]
        assert state.keys() == single.keys()
        for key, value in single.items():
            if name == "moco" and ("running" in key or "num_batches" in key):
                continue   # MoCo's BN statistics are per rank by design (its split and shuffled BN)
            if value.is_floating_point():
                _close(state[key], value, f"{name}: {key} on rank {rank}", rtol=1e-3, atol=1e-5)
            else:
                assert torch.equal(state[key], value), f"{name}: {key} on rank {rank}"


def test_targets_queues_and_banks_identical_on_every_rank(ranks):
    res, _ = ranks
    for name in ("moco", "byol", "swav", "instdisc"):
        a, b = res[0][f"train/{name}"], res[1][f"train/{name}"]
        for key in a:
            if key.startswith(("target_", "key_", "queue", "bank", "filled", "log_Z")) and "running" not in key:
                assert torch.equal(a[key], b[key]), f"{name}: {key} differs between the ranks"


def test_checkpoint_written_by_rank_zero_and_resumed_on_one_process(ranks, tmp_path):
    res, out = ranks
    assert len(res[0]["saves"]) == 1 and res[1]["saves"] == []
    state = load_checkpoint(out / "run" / "checkpoint.pt")
    assert state["step"] == 2 and state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert not (out / "run" / "checkpoint.pt.tmp").exists()
    assert len((out / "run" / "log.jsonl").read_text().splitlines()) == 1     # epoch 1, logged once

    run_dir = tmp_path / "resumed"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes((out / "run" / "checkpoint.pt").read_bytes())
    resumed = _state(_train("simclr", steps=4, out_dir=run_dir))      # steps 3 and 4 on one process
    straight = _state(_train("simclr", steps=4))
    for key, value in straight.items():
        if value.is_floating_point():
            _close(resumed[key], value, f"resumed {key}", rtol=1e-3, atol=1e-5)


def test_batch_size_must_split_evenly(ranks):
    res, _ = ranks
    for r in res:
        assert "batch_size must be a multiple of the number of processes (2)" in r["odd_batch_error"]
        assert "got 15" in r["odd_batch_error"]


def test_torchrun_trains_simclr_on_digits_and_writes_one_record(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CONTRASTLAB_RESULTS": str(tmp_path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "contrastlab", "train", "simclr", "--budget", "smoke", "--dataset", "digits", "--device", "cpu",
           "--results", str(tmp_path)]   # CPU processes (Gloo) on a GPU machine too
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("linear probe accuracy") == 1          # rank 0 alone reports
    records = list(tmp_path.glob("*.json"))
    assert len(records) == 1, records
    record = json.loads(records[0].read_text())
    assert record["provenance"]["world_size"] == 2
    assert 0.0 <= record["metrics"]["knn_acc"] <= 1.0 and record["curves"]["epoch"] == [1]
    logs = list(tmp_path.glob("runs/*/log.jsonl"))
    assert len(logs) == 1 and len(logs[0].read_text().splitlines()) == 1
