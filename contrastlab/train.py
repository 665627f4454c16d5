"""Training loop shared by every method: `fit(method, augment, images, config)`.

One step: a batch of indices -> views made on the device by ``augment`` -> ``method(views)``
-> backward (under autocast: `autocast_dtype`) -> optimizer step with the warmup-cosine learning rate
-> ``method.on_step_end``. Once per epoch: mean loss, views per second, a weighted-kNN
monitor, health metrics of h (feature std, effective rank, alignment, uniformity), one
JSON line in ``out_dir/log.jsonl`` and an atomic checkpoint.

A checkpoint holds the model, optimizer, grad scaler, step, history and RNG states, so a
resumed run continues the same run: same batches, same augmentations, same weights. Ctrl-C
(or a notebook's interrupt) finishes the current step, writes a checkpoint and stops.

    python -m contrastlab train simclr --epochs 10      # the CLI wraps this through experiments.run
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _io, distributed, metrics
from ._validate import check_choice, check_positive, check_tensor
from .data import IndexBatches
from .optim import OPTIMIZERS, build_optimizer, warmup_cosine

CHECKPOINT_FORMAT = "contrastlab-checkpoint-v1"
AMPS = ("auto", "bf16", "fp16", "off")   # the values of TrainConfig.amp


@dataclass
class TrainConfig:
    """How to train. Defaults follow SimCLR's recipe, scaled to small images."""

    epochs: int = 10  # passes over the training images (0 evaluates the method as initialised)
    batch_size: int = 256  # images per step (the method sees n_views times as many views); under torchrun the global batch, split equally over the processes
    optimizer: str = "lars"  # 'lars' (SimCLR's), 'sgd' or 'adam'
    lr: float = 0.3  # learning rate per 256 images, scaled linearly with batch_size (SimCLR: 0.3 x B/256)
    weight_decay: float = 1e-6  # on weights only, not biases or BatchNorm (SimCLR's value with LARS)
    momentum: float = 0.9  # for SGD and LARS
    warmup_epochs: float = 1.0  # linear warmup, then cosine decay to zero
    amp: str = "auto"  # 'auto' (bf16 on GPUs that have it, else fp16 with loss scaling; on a CPU bf16 where it computes bf16 natively, else off), 'bf16', 'fp16' or 'off'
    device: str = "auto"  # 'auto' (cuda, then mps, then cpu) or a torch device string
    seed: int = 0  # seeds the batches and the augmentations
    knn_every: int = 1  # kNN monitor every this many epochs; 0 turns it off
    monitor_train: int = 5000  # train images in the monitor's kNN bank
    monitor_test: int = 1000  # test images the monitor classifies
    checkpoint_every: int = 0  # also checkpoint every this many steps within an epoch; 0: at epoch ends only
    grad_clip: float = 0.0  # clip the gradients' global norm to this (after unscaling under fp16); 0: no clipping


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read back (truncated, corrupt or not ours)."""


# ----------------------------------------------------------------------------- devices and precision

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available, then mps (where this torch build has it), then cpu; anything else
    is passed to torch.device."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_built() and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device must be 'auto' or a torch device such as 'cuda:0', got {device!r}") from e


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for full precision.

    'auto' on CUDA asks ``device`` itself (not the current device) for its compute capability:
    bf16 from capability 8.0 (Ampere) on, fp16 with loss scaling below it (T4, V100), where torch
    reports bf16 as supported but emulates it, off cuDNN. On a CPU 'auto' is bf16 where the CPU
    computes bf16 in hardware (`cpu_computes_bf16`: on 2 cores SimCLR's step is about 1.5x faster,
    and on the book's instrument the accuracy of SimCLR, MoCo, BYOL and SwAV stays within seed
    noise: ``benchmarks/bf16_accuracy.py``), else full precision, as on MPS.
    """
    check_choice("amp", amp, AMPS)
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if tuple(torch.cuda.get_device_capability(device)) >= (8, 0) else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_computes_bf16() else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def cpu_computes_bf16() -> bool:
    """True where this CPU has bf16 arithmetic in hardware (AVX-512 BF16 or AMX) and oneDNN uses it;
    elsewhere bf16 autocast on the CPU is emulated and slower than full precision.
    ``CONTRASTLAB_CPU_BF16=0`` (or ``1``) overrides the answer, e.g. to time both on one machine."""
    forced = os.environ.get("CONTRASTLAB_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    cpu = getattr(torch, "cpu", None)
    native = any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return native and torch.backends.mkldnn.is_available()


def precision_name(dtype: torch.dtype | None) -> str:
    """'fp32', 'bf16' or 'fp16' for an `autocast_dtype` result."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def prepare_device(method: nn.Module, device: torch.device) -> None:
    """What training on ``device`` gets beyond ``.to(device)``: channels_last weights on CUDA and on
    the CPU (the convolutions then run in NHWC: on 2 CPU cores BatchNorm and max-pooling are several
    times faster in that layout; the results equal NCHW's up to float rounding), and on CUDA cuDNN's
    autotuner (``cudnn.benchmark``). The autotuner may pick other kernels in another process, so on
    GPU a resumed run equals an uninterrupted one up to floating-point tolerance, not bit for bit
    (on CPU: exactly)."""
    if device.type in ("cuda", "cpu"):
        method.to(memory_format=torch.channels_last)   # 4-D weights only; others are left as they are
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def train_step(model: nn.Module, views: list[Tensor], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, dtype: torch.dtype | None, *, index: Tensor | None = None,
               labels: Tensor | None = None, grad_clip: float = 0.0) -> dict:
    """One optimizer step of `fit`: the forward pass under autocast (``dtype`` from `autocast_dtype`;
    None: full precision, no autocast region at all), the backward pass through the grad scaler,
    gradient clipping to global norm ``grad_clip`` (if > 0) on the unscaled gradients, the
    optimizer step (skipped by the scaler when a gradient is inf or NaN, the scale then halved).

    Returns the method's output dict (its ``"loss"`` still on the device: no host sync here).
    The learning rate and ``on_step_end`` are the caller's.
    """
    region = nullcontext() if dtype is None else torch.autocast(views[0].device.type, dtype=dtype)
    with region:
        out = model(views, index=index, labels=labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out["loss"]).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)             # clip the true gradients, not the scaled ones
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return out


def _note_non_finite(first: Tensor, loss: Tensor, step: int) -> Tensor:
    """``first`` (a 0-d tensor on the loss's device, 0 while every loss was finite) becomes ``step``
    at the first step whose loss is NaN or infinite. No host sync: the loop reads it where it
    already reads the loss (`_stop_if_diverged`)."""
    return torch.where((first == 0) & ~torch.isfinite(loss.detach()).all(), step, first)


def _stop_if_diverged(first: Tensor, loss_sum: float, lr_of_step, lr_given: float) -> None:
    """Stop `fit` if a loss was non-finite, before any checkpoint holds that step's weights; the
    run's checkpoint on disk stays the last one written while the loss was finite."""
    step = int(first)
    if step == 0:
        return
    raise FloatingPointError(
        f"training diverged at step {step}: the loss is {loss_sum} "
        f"(train.lr {lr_given:.3g}, which the batch-size scaling and the schedule made {lr_of_step(step):.3g} at "
        f"that step). "
        f"Likely cause: a learning rate too high (train.lr, --lr) or a "
        f"temperature too low (method.temperature, --temperature); lower it and train again. "
        f"The last checkpoint written before this step is kept")


def eval_transform(size: int | None):
    """uint8 images -> float in [0, 1], resized to ``size`` when they are another size."""
    def transform(x: Tensor) -> Tensor:
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if size is not None and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x
    return transform


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file of its own, fsync, then rename over the old one."""
    return _io.save_torch(state, path)   # a unique temporary file, so concurrent writers never mix


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`; raise CheckpointError if it is damaged
    (its zip members' CRC-32 checksums are verified before anything is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = _io.load_torch(path, map_location=map_location)
    except Exception as e:  # torch raises several types for truncated or garbled files
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt and cannot be loaded "
                              f"({type(e).__name__}: {e}); delete it to start the run again") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{str(path)!r} is not a contrastlab checkpoint: expected format "
                              f"{CHECKPOINT_FORMAT!r}, got {got!r}")
    return state


def _load_model_state(method: nn.Module, model_state: dict, path) -> None:
    """``method.load_state_dict``, a checkpoint of another method or width told as a CheckpointError."""
    try:
        method.load_state_dict(model_state)
    except RuntimeError as e:
        details = [line.strip() for line in str(e).split("\n") if line.strip()][1:]
        more = f" and {len(details) - 1} more" if len(details) > 1 else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds another model than {getattr(method, 'name', type(method).__name__)!r} "
            f"of this config ({details[0] if details else e}{more}): it was written by another method or "
            "width; delete it, or train with --force") from None


def _trim_log(out_dir, step: int) -> None:
    """Drop the rows of ``out_dir/log.jsonl`` past ``step``: epochs logged by a run killed before
    their checkpoint, which the resumed run logs again."""
    log = Path(out_dir) / "log.jsonl" if out_dir is not None else None
    if log is None or not distributed.is_main() or not log.exists():
        return
    lines = log.read_text().splitlines()
    keep = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:           # a row cut short by the kill
            pass
    if len(keep) != len(lines):
        _io.atomic_write(log, "".join(line + "\n" for line in keep).encode(), what="log")


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _seed_all(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextmanager
def _deferred_interrupt(enabled: bool = True):
    """Turn the first Ctrl-C into a flag checked between steps, so a checkpoint is consistent.

    Not under torchrun (``enabled=False``): there torchrun stops every rank, and the run resumes
    from the last checkpoint written.
    """
    flag = {"stop": False}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"]:                      # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- the loop

def _check_inputs(method, images, labels, eval_data, config):
    if not isinstance(method, nn.Module):
        raise TypeError(f"method must be a contrastlab Method (an nn.Module), got {type(method).__name__}")
    check_tensor("images", images, ndim=4, dtype=torch.uint8)
    if labels is not None:
        check_tensor("labels", labels, ndim=1)
        if len(labels) != len(images):
            raise ValueError(f"labels must have one entry per image, got {len(labels)} labels "
                             f"for {len(images)} images")
    if eval_data is not None:
        if not (isinstance(eval_data, (tuple, list)) and len(eval_data) == 2):
            raise TypeError("eval_data must be a pair (test_images, test_labels)")
        check_tensor("eval_data[0]", eval_data[0], ndim=4, dtype=torch.uint8)
    check_positive("epochs", config.epochs, allow_zero=True)   # 0: nothing trained, the method at init
    check_positive("batch_size", config.batch_size)
    check_choice("optimizer", config.optimizer, OPTIMIZERS)
    if config.batch_size > len(images):
        raise ValueError(f"batch_size must be at most the number of images ({len(images)}), "
                         f"got {config.batch_size}")


def _monitor_subset(n: int, k: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed + 7919)
    return torch.randperm(n, generator=g)[: min(n, k)]


def fit(method: nn.Module, augment, images: Tensor, config: TrainConfig | None = None, *,
        labels: Tensor | None = None, eval_data: tuple[Tensor, Tensor] | None = None,
        out_dir: str | Path | None = None, resume: bool = True, max_steps: int | None = None,
        progress: bool = True, meta: dict | None = None) -> dict:
    """Train ``method`` on ``images`` with views from ``augment``; return the per-epoch history.

    Args:
        method: a `contrastlab.methods.Method`.
        augment: makes views on the device: ``augment.views(x, n)`` -> list of n float batches.
        images: uint8 (N, C, H, W), on any device (moved once to the training device).
        config: a TrainConfig.
        labels: int64 (N,); used by supervised methods and by the kNN monitor's bank.
        eval_data: (test_images, test_labels) classified by the kNN monitor each epoch.
        out_dir: where ``checkpoint.pt`` and ``log.jsonl`` go; None keeps nothing on disk.
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (also one written at another
            precision: the grad scaler then starts afresh).
        max_steps: stop (with a checkpoint) after this many steps in all, e.g. to split a run.
        progress: show a tqdm progress bar with the loss and views per second.
        meta: extra JSON-able facts stored in the checkpoint (the experiment's config, say).

    Under torchrun (several processes, `contrastlab.distributed`): ``config.batch_size`` is the
    global batch, and each rank trains on its equal slice of the index batch a single process
    would draw; the method runs in DDP with BatchNorm over the global batch; rank 0 alone writes
    the checkpoint (with every rank's RNG state) and the log, and runs the kNN monitor and the
    health metrics, whose row every rank appends to its history. A checkpoint resumes on any
    number of processes whose count divides the batch (with another count, the augmentation
    draws continue from fresh per-rank seeds). Ctrl-C is left to torchrun, which stops all ranks.

    Returns:
        dict of lists, one entry per finished epoch: epoch, step, loss, lr, views_per_sec,
        knn_acc (None where the monitor did not run), time_s, feature_std, effective_rank,
        alignment, uniformity (health of h) and embed_std (of the embedding z); plus "finished".
    """
    config = config or TrainConfig()
    _check_inputs(method, images, labels, eval_data, config)
    run = _set_up(method, augment, images, config, labels, eval_data, out_dir, resume, meta)
    stop_at = run.total_steps if max_steps is None else min(run.total_steps, max_steps)
    bar = _progress_bar(run, stop_at) if progress else None
    method.train()
    try:
        with _deferred_interrupt(enabled=run.world == 1) as interrupt:
            while run.step < stop_at:
                _train_epoch(run, augment, stop_at, interrupt, bar)
    finally:
        if bar is not None:
            bar.close()
    if run.world > 1:
        distributed.unwrap(method)      # plain BatchNorms again
    run.history["finished"] = run.step >= run.total_steps
    return run.history


@dataclass
class _Run:
    """What one call of `fit` trains with (made by `_set_up`); ``step``, ``history`` and ``partial``
    (the running sums of the epoch in progress) advance as it trains and go into its checkpoints."""

    method: nn.Module
    model: nn.Module                    # the method itself, or the method inside DDP under torchrun
    config: TrainConfig
    device: torch.device
    dtype: torch.dtype | None           # autocast dtype; None: full precision
    world: int
    images: Tensor                      # on the device, as are labels
    labels: Tensor | None
    n_views: int
    batches: IndexBatches
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    base_lr: float
    warmup_steps: int
    total_steps: int
    monitor: tuple | None               # the kNN monitor's bank and test images
    health: tuple | None                # the health metrics' two fixed views
    out_dir: str | Path | None
    ckpt_path: Path | None
    meta: dict
    step: int = 0
    history: dict = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})
    partial: dict = field(default_factory=lambda: {"loss_sum": 0.0, "count": 0, "time": 0.0})

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)


def _set_up(method, augment, images, config, labels, eval_data, out_dir, resume, meta) -> _Run:
    """Set-up and resume: the device and process group, the precision, the data moved once to the
    device, the optimizer, the grad scaler and the monitors; then the checkpoint's state when
    resuming, else the seeds of a fresh run."""
    device = resolve_device(config.device)
    distributed.init_from_env(device=device)   # joins torchrun's process group; nothing in a plain process
    world = distributed.world_size()
    if world > 1:
        if config.batch_size % world:
            raise ValueError(f"batch_size must be a multiple of the number of processes ({world}): it is the "
                             f"global batch, split equally over them; got {config.batch_size}")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", distributed.local_rank())
    dtype = autocast_dtype(config.amp, device)
    method.to(device)
    prepare_device(method, device)
    images = images.to(device)
    batches = IndexBatches(len(images), config.batch_size, seed=config.seed, device=device)
    base_lr = config.lr * config.batch_size / 256
    run = _Run(method=method, model=method, config=config, device=device, dtype=dtype, world=world,
               images=images, labels=labels.to(device) if labels is not None else None,
               n_views=getattr(method, "n_views", 2), batches=batches,
               optimizer=build_optimizer(config.optimizer, method, base_lr, config.weight_decay, config.momentum),
               scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
               base_lr=base_lr, warmup_steps=round(config.warmup_epochs * len(batches)),
               total_steps=config.epochs * len(batches),
               monitor=_knn_monitor(images, labels, eval_data, augment, config),
               health=_health_probe(augment, eval_data[0] if eval_data is not None else images, config.seed, device),
               out_dir=out_dir, ckpt_path=Path(out_dir) / "checkpoint.pt" if out_dir is not None else None,
               meta=meta or {})
    _resume_or_seed(run, resume)
    if world > 1:
        run.model = distributed.wrap(method, device)
    return run


def _knn_monitor(images, labels, eval_data, augment, config):
    """The kNN monitor's bank (on the device) and test images, or None where it does not run."""
    if not (config.knn_every and labels is not None and eval_data is not None):
        return None
    tr = _monitor_subset(len(images), config.monitor_train, config.seed)
    te = _monitor_subset(len(eval_data[0]), config.monitor_test, config.seed)
    size = getattr(getattr(augment, "config", None), "size", None)
    return images[tr.to(images.device)], labels[tr], eval_data[0][te], eval_data[1][te], eval_transform(size)


def _resume_or_seed(run: _Run, resume: bool) -> None:
    path, world = run.ckpt_path, run.world
    resuming = path is not None and resume and path.exists()
    if world > 1 and len(set(distributed.all_gather_object(resuming))) > 1:
        raise RuntimeError(f"checkpoint {str(path)!r} exists for some ranks and not for others: under "
                           f"torchrun on several nodes, out_dir must be on a filesystem that every node sees")
    if not resuming:
        _seed_all(distributed.rank_seed(run.config.seed), run.device)   # config.seed itself on rank 0
        return
    state = load_checkpoint(path)
    _load_model_state(run.method, state["model"], path)
    run.optimizer.load_state_dict(state["optimizer"])
    if state["scaler"] and run.scaler.is_enabled():   # written at another precision: a fresh scale
        run.scaler.load_state_dict(state["scaler"])
    run.step, run.history, run.partial = state["step"], state["history"], state["partial"]
    rngs = state.get("rng_ranks") if world > 1 else [state["rng"]]
    if rngs is not None and len(rngs) == world:
        _set_rng_state(rngs[distributed.rank()], run.device)
    else:                               # another number of processes: fresh per-rank streams from here
        _seed_all(distributed.rank_seed(run.config.seed, run.step), run.device)
    _trim_log(run.out_dir, run.step)    # rows past the checkpoint: a kill came between a log row and its checkpoint


def _progress_bar(run: _Run, stop_at: int):
    if run.step >= stop_at or not distributed.is_main():
        return None
    from tqdm.auto import tqdm
    return tqdm(total=run.total_steps, initial=run.step, desc=getattr(run.method, "name", "train"), unit="step")


def _train_epoch(run: _Run, augment, stop_at: int, interrupt: dict, bar) -> None:
    """One epoch: the steps from ``run.step`` to the end of its epoch (or to ``stop_at``). At each
    sync point (the epoch's end, the stop, a Ctrl-C, ``checkpoint_every``) the running loss comes
    to the host; at the epoch's end `_end_epoch` evaluates and logs; then `_checkpoint`."""
    config, partial = run.config, run.partial
    epoch, start = divmod(run.step, run.steps_per_epoch)
    loss_sum = torch.tensor(partial["loss_sum"], device=run.device)
    first_bad = torch.zeros((), dtype=torch.long, device=run.device)   # first step with a non-finite loss
    tic = time.perf_counter()
    for idx in run.batches.epoch(epoch, start=start):
        idx = distributed.shard(idx)   # this rank's slice of the global batch
        lr = warmup_cosine(run.step, run.total_steps, run.warmup_steps, run.base_lr)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        views = augment.views(run.images[idx], run.n_views)
        out = train_step(run.model, views, run.optimizer, run.scaler, run.dtype, index=idx,
                         labels=None if run.labels is None else run.labels[idx], grad_clip=config.grad_clip)
        run.step += 1
        first_bad = _note_non_finite(first_bad, out["loss"], run.step)
        run.method.on_step_end(run.step / run.total_steps)
        loss_sum += out["loss"].detach().float()
        partial["count"] += 1
        if bar is not None:
            _show_progress(bar, loss_sum, partial, tic, config.batch_size * run.n_views, run.step)
        ends_epoch = run.step % run.steps_per_epoch == 0
        if interrupt["stop"] or run.step == stop_at or ends_epoch or (
                config.checkpoint_every and run.step % config.checkpoint_every == 0):
            partial["loss_sum"] = distributed.all_reduce_mean(loss_sum).item()   # over ranks
            _stop_if_diverged(first_bad, partial["loss_sum"],
                              lambda s: warmup_cosine(s - 1, run.total_steps, run.warmup_steps, run.base_lr),
                              config.lr)
            partial["time"] += time.perf_counter() - tic
            tic = time.perf_counter()
            if ends_epoch:
                _end_epoch(run.method, run.history, partial, epoch, run.step, lr, config, run.n_views,
                           run.monitor, run.health, run.out_dir)
            _checkpoint(run)
            if interrupt["stop"]:
                where = f"; checkpoint saved to {run.ckpt_path}, run again to resume" if run.ckpt_path else ""
                raise KeyboardInterrupt(f"training interrupted at step {run.step}{where}")
            if run.step == stop_at:
                return


def _show_progress(bar, loss_sum: Tensor, partial: dict, tic: float, views_per_step: int, step: int) -> None:
    """Advance the bar; every 25 steps show the mean loss and views per second. The loss is read
    first: that host read waits for the queued steps, so the time taken after it covers them."""
    bar.update(1)
    if step % 25:
        return
    loss = loss_sum.item() / partial["count"]
    elapsed = partial["time"] + time.perf_counter() - tic
    bar.set_postfix(loss=f"{loss:.4f}", views_per_s=f"{partial['count'] * views_per_step / elapsed:.0f}")


def _checkpoint(run: _Run) -> None:
    """Write ``run``'s state to its checkpoint (rank 0 alone, with every rank's RNG state)."""
    if run.ckpt_path is None:
        return
    rng, extra = _rng_state(run.device), {}
    if run.world > 1:                   # every rank's RNG, so a resume on as many ranks is exact
        extra = {"rng_ranks": distributed.all_gather_object(rng), "world_size": run.world}
        if not distributed.is_main():
            return
    save_checkpoint({
        "format": CHECKPOINT_FORMAT, "step": run.step, "history": run.history, "partial": run.partial,
        "model": run.method.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(), "rng": rng,
        "train_config": asdict(run.config), "meta": run.meta, **extra,
    }, run.ckpt_path)


HEALTH_KEYS = ("feature_std", "effective_rank", "alignment", "uniformity", "embed_std")
HISTORY_KEYS = ("epoch", "step", "loss", "lr", "views_per_sec", "knn_acc", "time_s", *HEALTH_KEYS)


def _health_probe(augment, images: Tensor, seed: int, device: torch.device, n: int = 512):
    """A fixed batch and two fixed views of it, made once, for the per-epoch health metrics.

    The views come from a private generator, so measuring health never moves the training RNG
    (and a resumed run stays identical to an uninterrupted one).
    """
    config = getattr(augment, "config", None)
    if config is None or len(images) < 2:
        return None
    from .augment import SimCLRAugment
    x = images[_monitor_subset(len(images), n, seed + 1)].to(device)
    g = torch.Generator(device=device).manual_seed(seed + 104729)
    pair = SimCLRAugment(config)
    return pair(x, generator=g), pair(x, generator=g)


@torch.no_grad()
def health_metrics(method: nn.Module, v1: Tensor, v2: Tensor) -> dict[str, float]:
    """Feature std, effective rank, alignment and uniformity of h on two views of one batch.

    Alignment and uniformity (Wang & Isola 2020) are taken on L2-normalised h, uniformity as the
    mean over the two views; std and effective rank on the first view's h. ``embed_std`` is the
    feature std of the method's embedding z (``method.embed``), where a collapse shows first.
    """
    was_training = method.training
    method.eval()
    h1, h2 = method.encoder(v1).float(), method.encoder(v2).float()
    z1 = method.embed(v1).float() if hasattr(method, "embed") else h1
    method.train(was_training)
    n1, n2 = F.normalize(h1, dim=1), F.normalize(h2, dim=1)
    values = {"feature_std": metrics.feature_std(h1), "effective_rank": metrics.effective_rank(h1),
              "alignment": metrics.alignment(n1, n2),
              "uniformity": (metrics.uniformity(n1) + metrics.uniformity(n2)) / 2,
              "embed_std": metrics.feature_std(z1.flatten(1))}
    return {k: float(v) for k, v in values.items()}


def _end_epoch(method, history, partial, epoch, step, lr, config, n_views, monitor, health, out_dir):
    knn = None
    main = distributed.is_main()   # under torchrun rank 0 measures, and every rank takes its row
    if main and monitor is not None and (epoch + 1) % config.knn_every == 0:
        bank, bank_labels, test, test_labels, transform = monitor
        f_bank = metrics.extract_features(method.encoder, bank, transform=transform)
        f_test = metrics.extract_features(method.encoder, test, transform=transform)
        knn = metrics.knn_accuracy(f_bank, bank_labels.to(f_bank.device), f_test, test_labels.to(f_bank.device))
        method.train()
    row = {"epoch": epoch + 1, "step": step, "loss": partial["loss_sum"] / max(1, partial["count"]),
           "lr": lr, "views_per_sec": partial["count"] * config.batch_size * n_views / max(partial["time"], 1e-9),
           "knn_acc": knn, "time_s": partial["time"]}
    row.update(health_metrics(method, *health) if health is not None and main
               else dict.fromkeys(HEALTH_KEYS))
    row = distributed.broadcast_object(row)
    for k, v in row.items():
        history[k].append(v)
    partial.update(loss_sum=0.0, count=0, time=0.0)
    if out_dir is not None and main:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(out_dir) / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
