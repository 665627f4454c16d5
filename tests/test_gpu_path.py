"""The CUDA path, tested on CPU (issue 17, section 3): each test patches what a GPU machine would
report (the capability query, the device count, the backend) and checks the choice made from it."""
import ast
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from contrastlab import book, distributed, experiments, metrics, train
from contrastlab.augment import AugmentConfig, SimCLRAugment
from contrastlab.data import load_dataset
from contrastlab.methods import SimCLR, SimCLRConfig
from contrastlab.methods.moco import MoCo, MoCoConfig
from contrastlab.methods.swav import SwAV, SwAVConfig
from contrastlab.models import SmallCNN
from contrastlab.train import TrainConfig, autocast_dtype, fit, load_checkpoint

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]
CPU = TrainConfig(epochs=1, batch_size=32, optimizer="sgd", lr=0.1, warmup_epochs=0.0, knn_every=0, device="cpu")


@pytest.fixture(scope="module")
def digits():
    x, _ = load_dataset("digits", "train")
    return x[:96]


def simclr(seed=0):
    torch.manual_seed(seed)
    return SimCLR(SmallCNN(in_channels=1, width=4), SimCLRConfig(proj_dim=8))


AUG = SimCLRAugment(AugmentConfig(size=8, crop_scale=(0.3, 1.0)))


def fake_gpu(monkeypatch, capabilities=((8, 0),), current=0):
    """CUDA reported present with these per-device capabilities (nothing runs on it)."""
    def capability(device=None):
        index = device.index if isinstance(device, torch.device) else device
        return capabilities[current if index is None else index]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)   # what torch says on a T4 too


# ----------------------------------------------------------------------------- 1. precision from the device's capability

def test_auto_precision_is_fp16_below_capability_8_and_asks_the_training_device(monkeypatch):
    fake_gpu(monkeypatch, capabilities=((8, 0), (7, 5)), current=0)      # current device an A100, training on a T4
    assert autocast_dtype("auto", torch.device("cuda", 1)) is torch.float16
    assert autocast_dtype("auto", torch.device("cuda", 0)) is torch.bfloat16
    assert autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16      # the current device
    assert autocast_dtype("bf16", torch.device("cuda", 1)) is torch.bfloat16   # asked for: given


# ----------------------------------------------------------------------------- 2. the backend follows the device

TORCHRUN_ENV = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}


@pytest.fixture
def torchrun_on_one_gpu(monkeypatch):
    """Rank 1 of two under torchrun on a machine with one GPU; records what would be initialised."""
    for k, v in TORCHRUN_ENV.items():
        monkeypatch.setenv(k, v)
    fake_gpu(monkeypatch)
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend)))
    return calls


def test_cpu_processes_use_gloo_on_a_gpu_machine(torchrun_on_one_gpu):
    distributed.init_from_env(device="cpu")
    assert torchrun_on_one_gpu == [("init", "gloo")]


def test_gpu_processes_use_nccl_and_a_missing_gpu_is_named(torchrun_on_one_gpu, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    distributed.init_from_env(device="auto")
    assert torchrun_on_one_gpu == [("set_device", 0), ("init", "nccl")]
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match=r"LOCAL_RANK=1 .* 1 CUDA device.*device cpu"):
        distributed.init_from_env(device="cuda")


def test_fit_on_cpu_joins_with_gloo(torchrun_on_one_gpu, digits):
    fit(simclr(), AUG, digits, CPU, progress=False)     # the group is not really made: one process trains
    assert torchrun_on_one_gpu == [("init", "gloo")]


# ----------------------------------------------------------------------------- 3. SwAV's frozen prototypes at the gpu budget

@pytest.mark.parametrize("dataset, images", [("cifar10", 50000), ("fashion-mnist", 60000)])
def test_swav_gpu_recipe_freezes_the_prototypes_for_the_first_epoch(dataset, images):
    resolved = experiments.resolve(experiments.ExperimentConfig("swav", dataset, budget="gpu"))
    assert resolved["method"]["freeze_prototypes_steps"] == images // resolved["train"]["batch_size"]
    small = experiments.resolve(experiments.ExperimentConfig(
        "swav", dataset, budget="gpu", overrides={"dataset.train_size": 10240}))
    assert small["method"]["freeze_prototypes_steps"] == 10240 // 512


# ----------------------------------------------------------------------------- 4. MoCo's query BN split too

def tagged_views(n):
    """Two views whose every pixel of image i is i / 1000, so a forward hook can tell who is in a batch."""
    tag = (torch.arange(n, dtype=torch.float32) / 1000).view(n, 1, 1, 1)
    return [tag.expand(n, 1, 8, 8).clone(), tag.expand(n, 1, 8, 8).clone()]


def bn_groups(method, views):
    """For each image: the set of images in its query's BN batch and in its key's BN batch."""
    seen = {"query": [], "key": []}

    def record(kind):
        def hook(module, args):
            seen[kind].append(set((args[0][:, 0, 0, 0] * 1000).round().long().tolist()))
        return hook
    handles = [method.encoder.register_forward_pre_hook(record("query")),
               method.key_encoder.register_forward_pre_hook(record("key"))]
    try:
        method(views)
    finally:
        for h in handles:
            h.remove()
    n = len(views[0])
    return ({i: next(g for g in seen[kind] if i in g) for i in range(n)} for kind in ("query", "key"))


@pytest.mark.parametrize("symmetric", [False, True])
def test_moco_query_statistics_never_hold_the_positive_keys_sub_batch(symmetric):
    torch.manual_seed(0)
    method = MoCo(SmallCNN(in_channels=1, width=4),
                  MoCoConfig(queue_size=128, proj_dim=8, bn_splits=4, symmetric=symmetric))
    query, key = bn_groups(method, tagged_views(32))
    for i in range(32):
        assert len(query[i]) == 8, "the query's BN batch is a quarter of the batch"
        assert not key[i] <= query[i], f"image {i}: its query's BN statistics hold its key's whole sub-batch"


def test_moco_split_query_bn_in_eval_and_without_shuffle_is_the_full_batch():
    torch.manual_seed(0)
    method = MoCo(SmallCNN(in_channels=1, width=4), MoCoConfig(queue_size=64, proj_dim=8, shuffle_bn=False))
    query, _ = bn_groups(method, tagged_views(16))
    assert all(len(g) == 16 for g in query.values())     # shuffle_bn=False shows the cheat: one batch


# ----------------------------------------------------------------------------- 5. torch floor, autocast off is no autocast

def _torch_floor(text: str) -> tuple[int, int]:
    match = re.search(r"""["']?torch>=(\d+)\.(\d+)""", text)
    assert match, "no torch>= floor"
    return int(match.group(1)), int(match.group(2))


def test_torch_floor_is_the_tested_release_in_both_files():
    req = _torch_floor((ROOT / "requirements.txt").read_text())
    pyproject = _torch_floor((ROOT / "pyproject.toml").read_text())
    assert req == pyproject
    assert req >= (2, 11), "below the oldest torch the tests have run on (2.11, the device check's)"
    installed = tuple(int(p) for p in re.match(r"(\d+)\.(\d+)", torch.__version__).groups())
    assert req <= installed


class Linear(nn.Module):
    """A method whose loss is w . x, with no autocast region of its own (the losses have one)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def forward(self, views, index=None, labels=None):
        return {"loss": (views[0] @ self.w).sum()}


def test_full_precision_step_enters_no_autocast(monkeypatch):
    """Older torch raises for torch.autocast('mps', enabled=False): a step without amp must not call it."""
    def refuse(*args, **kwargs):
        raise RuntimeError("autocast called")
    monkeypatch.setattr(torch, "autocast", refuse)
    model = Linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    views = [torch.ones(2, 4)]
    with pytest.raises(RuntimeError, match="autocast called"):
        train.train_step(model, views, opt, scaler, torch.bfloat16)
    train.train_step(model, views, opt, scaler, None)
    torch.testing.assert_close(model.w.detach(), torch.full((4,), 0.8))


def test_auto_device_skips_an_mps_backend_that_is_not_built(monkeypatch):
    mps = torch.backends.mps
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(mps, "is_available", lambda: True)
    monkeypatch.setattr(mps, "is_built", lambda: False)
    assert train.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(mps, "is_built", lambda: True)
    assert train.resolve_device("auto") == torch.device("mps")


# ----------------------------------------------------------------------------- 6. precision in the run key, resume across it

def test_checkpoint_without_loss_scaling_resumes_into_an_fp16_run(digits, tmp_path):
    config = TrainConfig(**{**CPU.__dict__, "epochs": 2})
    fit(simclr(), AUG, digits, config, out_dir=tmp_path, max_steps=2, progress=False)   # fp32: no scaler state
    assert load_checkpoint(tmp_path / "checkpoint.pt")["scaler"] == {}
    fp16 = TrainConfig(**{**config.__dict__, "amp": "fp16"})
    hist = fit(simclr(), AUG, digits, fp16, out_dir=tmp_path, max_steps=4, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4 and state["scaler"]["scale"] > 0
    hist = fit(simclr(), AUG, digits, config, out_dir=tmp_path, progress=False)     # and back to fp32
    assert hist["finished"] and torch.isfinite(torch.tensor(hist["loss"])).all()


def test_run_folder_is_keyed_on_the_resolved_precision(monkeypatch):
    resolved = experiments.resolve(experiments.ExperimentConfig("simclr", "cifar10", budget="smoke"))
    training = {k: v for k, v in resolved.items() if k != "eval"}
    monkeypatch.setenv("CONTRASTLAB_CPU_BF16", "0")                  # a CPU without bf16 in hardware
    on_cpu = experiments.run_dir(resolved)
    assert on_cpu.name.endswith(experiments.config_hash(training))   # full precision: the key it always had
    monkeypatch.setenv("CONTRASTLAB_CPU_BF16", "1")                  # one with it: 'auto' trains in bf16 there
    on_bf16_cpu = experiments.run_dir(resolved)
    assert on_bf16_cpu.name.endswith(experiments.config_hash({**training, "precision": "bf16", "device": "cpu"}))
    fake_gpu(monkeypatch, capabilities=((8, 0),))
    bf16 = experiments.run_dir(resolved)
    assert bf16.name.endswith(experiments.config_hash({**training, "precision": "bf16"}))   # as GPU runs always had
    fake_gpu(monkeypatch, capabilities=((7, 5),))
    fp16 = experiments.run_dir(resolved)
    assert len({on_cpu, on_bf16_cpu, bf16, fp16}) == 4    # a CPU and a GPU run never share a checkpoint
    assert experiments.record_path(resolved) == experiments.record_path(resolved)   # records stay shared


# ----------------------------------------------------------------------------- 7. every test states its device

def _calls_without_device(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "TrainConfig":
            names = {kw.arg for kw in node.keywords}
            if "device" not in names and None not in names:      # **kwargs may carry it
                yield node.lineno


def test_every_train_config_in_the_tests_names_its_device():
    missing = [f"{p.name}:{line}" for p in sorted((ROOT / "tests").glob("*.py")) for line in _calls_without_device(p)]
    assert not missing, f"TrainConfig without device= (on a GPU machine it becomes a bf16 CUDA run): {missing}"


def test_cuda_marked_tests_are_skipped_without_cuda(pytester):
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile("""
        import pytest
        @pytest.mark.cuda
        def test_needs_gpu():
            import torch
            assert torch.cuda.is_available()
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcome = result.parseoutcomes()
    assert outcome.get("passed", 0) + outcome.get("skipped", 0) == 1 and outcome.get("failed", 0) == 0
    if not torch.cuda.is_available():
        assert outcome.get("skipped") == 1


# ----------------------------------------------------------------------------- 8. SwAV: one queue per large view, used once full

def swav(queue_size, seed=0):
    torch.manual_seed(seed)
    return SwAV(SmallCNN(in_channels=1, width=4), SwAVConfig(n_prototypes=10, proj_dim=8, queue_size=queue_size))


def rand_views(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, 8, 8, generator=g) for _ in range(2)]


def test_swav_keeps_one_queue_per_large_view():
    method = swav(queue_size=16)
    out = method(rand_views(seed=1))
    assert method.queue.shape == (2, 16, 8)
    assert torch.equal(method.queue[0, :8], out["z1"]) and torch.equal(method.queue[1, :8], out["z2"])


def test_swav_queue_is_ignored_until_full():
    with_queue, without = swav(queue_size=16), swav(queue_size=0)
    without.load_state_dict({k: v for k, v in with_queue.state_dict().items() if "queue" not in k}, strict=False)
    for step in range(2):                 # 8 then 16 of 16 rows: neither step's codes may see the queue
        a, b = with_queue(rand_views(seed=step)), without(rand_views(seed=step))
        torch.testing.assert_close(a["codes1"], b["codes1"])
    a, b = with_queue(rand_views(seed=5)), without(rand_views(seed=5))   # full now: the codes change
    assert not torch.allclose(a["codes1"], b["codes1"])


# ----------------------------------------------------------------------------- 9. per-method gpu recipes

def test_gpu_recipes_follow_each_papers_optimizer_and_colour_strength():
    def resolved(method, dataset="cifar10"):
        return experiments.resolve(experiments.ExperimentConfig(method, dataset, budget="gpu"))
    for name in ("moco", "instdisc"):
        train_ = resolved(name)["train"]
        assert train_["optimizer"] == "sgd" and train_["weight_decay"] == 5e-4 and train_["warmup_epochs"] == 0
    assert resolved("simclr")["train"]["optimizer"] == "lars"
    assert resolved("simclr")["augment"]["strength"] == 0.5          # SimCLR's CIFAR-10 colour strength
    assert resolved("simclr", "fashion-mnist")["augment"]["strength"] == 1.0


# ----------------------------------------------------------------------------- 10. uniformity in O(N^2) memory

def test_uniformity_needs_no_pdist_and_keeps_its_value_and_gradient(monkeypatch):
    x = torch.nn.functional.normalize(torch.randn(50, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    x.requires_grad_(True)
    reference = torch.logsumexp(-2 * torch.pdist(x, p=2).pow(2), 0) - torch.log(torch.tensor(50 * 49 / 2))
    (g_ref,) = torch.autograd.grad(reference, x)

    def refuse(*args, **kwargs):
        raise RuntimeError("pdist's backward allocates (N-1) N D")
    monkeypatch.setattr(torch, "pdist", refuse)
    value = metrics.uniformity(x)
    (g,) = torch.autograd.grad(value, x)
    torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- 11. cudnn.benchmark and channels_last in fit

def test_training_on_cuda_sets_cudnn_benchmark_and_channels_last(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    method = simclr()
    convs = [m.weight for m in method.modules() if isinstance(m, nn.Conv2d)]
    assert convs and not any(w.is_contiguous(memory_format=torch.channels_last) for w in convs if w.shape[1] > 1)
    train.prepare_device(method, torch.device("cpu"))      # the CPU gets channels_last too, not the autotuner
    assert not torch.backends.cudnn.benchmark
    convs = [m.weight for m in method.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    train.prepare_device(method, torch.device("cuda"))     # the .to(device) is fit's; here the layout only
    assert torch.backends.cudnn.benchmark
    convs = [m.weight for m in method.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


# ----------------------------------------------------------------------------- 12. a gpu ablation a reader can finish

def test_gpu_budget_ablation_is_a_short_schedule_said_before_running(tmp_path):
    ch = book.Chapter(chapter="05", device="cuda", budget="gpu", dataset="cifar10", recompute=True,
                      fetch=False, cache_dir=tmp_path)
    overrides = ch.ablation
    full = experiments.resolve(ch.config("simclr"))["train"]
    short = experiments.resolve(ch.config("simclr", overrides=overrides))["train"]
    assert short["epochs"] <= full["epochs"] // 5 and short["warmup_epochs"] < short["epochs"]
    assert f"{short['epochs']} epochs" in ch.summary()


# ----------------------------------------------------------------------------- 13. data loaded main process first

def test_run_loads_its_data_inside_the_main_process_first_guard(monkeypatch, tmp_path):
    state = {"inside": False, "loads": []}

    @contextmanager
    def guard():
        state["inside"] = True
        yield
        state["inside"] = False
    real_load = experiments.load_data

    def load(section, seed):
        state["loads"].append(state["inside"])
        return real_load(section, seed)
    monkeypatch.setattr(distributed, "main_process_first", guard)
    monkeypatch.setattr(experiments, "load_data", load)
    experiments.run(experiments.ExperimentConfig("raw_pixels", "digits", budget="smoke"), cache_dir=tmp_path)
    assert state["loads"] == [True]


# ----------------------------------------------------------------------------- 14. views/s measured after the sync

def test_progress_views_per_second_counts_the_time_of_the_sync(monkeypatch):
    clock = {"t": 100.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["t"])

    class PendingLoss:          # .item() waits for the device: here it takes 10 s
        def item(self):
            clock["t"] += 10.0
            return 2.5

    class Bar:
        def update(self, n):
            pass

        def set_postfix(self, **kw):
            self.postfix = kw
    bar = Bar()
    partial = {"count": 25, "time": 0.0}
    train._show_progress(bar, PendingLoss(), partial, tic=100.0, views_per_step=64, step=25)
    assert bar.postfix["views_per_s"] == f"{25 * 64 / 10:.0f}" and bar.postfix["loss"] == "0.1000"
