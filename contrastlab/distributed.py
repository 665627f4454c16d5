"""Training on several processes (``torchrun``, PyTorch DDP): the collective helpers contrastlab uses.

    torchrun --nproc_per_node=2 -m contrastlab train simclr --batch-size 512

Every helper here is the identity (or the plain single-process operation) when no process
group with more than one process is running, so code that calls them behaves exactly as
before in a single process. Under ``torchrun`` `fit` joins the process group described by
the environment (`init_from_env`), and then:

- ``train.batch_size`` is the *global* batch: each step draws the same index batch as a
  single process would (`contrastlab.data.IndexBatches`), and rank r trains on the r-th of
  ``world_size`` equal slices of it (`shard`). One process with batch 2B and two with
  ``--batch-size 2B`` (B each) see the same images per step.
- the method runs inside ``DistributedDataParallel`` with every BatchNorm replaced by
  `SyncBatchNorm` (statistics of the global batch; MoCo's key encoder keeps per-rank BN, see
  its shuffled BN), so the forward pass is the single-process one.
- losses that compare a sample with the rest of the batch see the rest of the *global*
  batch: `gather_with_grad` collects the embeddings of every rank and lets the gradient flow
  back to the rank that made them.

Why the gradients come out right. DDP averages the parameter gradients of the W ranks. Let L
be the single-process loss of the global batch. Each rank computes L_r, the mean of the loss
terms of *its own* anchors against the gathered batch, so that mean_r L_r = L. The backward
pass of `gather_with_grad` sums, over all ranks, the gradient that reaches each rank's slice
of the gathered tensor, so the gradient that flows into rank r's own embeddings is
sum_s dL_s/dz_r = W dL/dz_r, and DDP's average over ranks, (1/W) sum_r W dL/dz_r dz_r/dtheta,
is dL/dtheta: the single-process gradient, neither divided by W nor missing the terms that
other ranks' anchors contribute. Losses whose mean runs over a data-dependent count (SupCon's
anchors with positives, InstDisc's filled rows) divide by the count summed over all ranks
(`global_mean`), for the same reason.
"""
from __future__ import annotations

import datetime
import os
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["SyncBatchNorm", "all_gather", "all_gather_object", "all_logsumexp", "all_reduce_mean",
           "all_reduce_sum", "barrier", "broadcast", "broadcast_object", "cleanup", "convert_sync_batchnorm",
           "gather_with_grad", "global_mean", "init_from_env", "is_distributed", "is_main", "local_rank",
           "main_process_first", "rank", "rank_seed", "revert_sync_batchnorm", "shard", "unwrap", "world_size",
           "wrap"]

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ----------------------------------------------------------------------------- who am I

def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the default process group; 1 when there is none."""
    return dist.get_world_size() if _initialized() else 1


def rank() -> int:
    """This process's rank in the default process group; 0 when there is none."""
    return dist.get_rank() if _initialized() else 0


def local_rank() -> int:
    """This process's index on its node (``$LOCAL_RANK`` set by torchrun); 0 when not distributed."""
    return int(os.environ.get("LOCAL_RANK", "0")) if _initialized() else 0


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return world_size() > 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that writes files and prints."""
    return rank() == 0


def init_from_env(backend: str | None = None, timeout_minutes: float = 60.0, *,
                  device: str | torch.device | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment; return `is_distributed()`.

    Does nothing when a process group already exists, or when ``$WORLD_SIZE`` is unset or 1
    (a plain ``python`` run). The backend follows the training ``device`` ('auto' or None: CUDA
    when available, else the CPU): NCCL for a CUDA device, and the process then uses GPU
    ``$LOCAL_RANK``, which must exist; Gloo for anything else, so ``--device cpu`` trains on CPU
    processes on a GPU machine too. ``timeout_minutes`` bounds how long a collective waits, long
    enough for rank 0 to evaluate a model while the other ranks wait for its record.
    """
    if _initialized():
        return is_distributed()
    value = os.environ.get("WORLD_SIZE")
    if value is None:
        return False
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be an integer, got {value!r}") from None
    if size <= 1:
        return False
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={size} asks for distributed training, but the environment lacks "
                           f"{', '.join(missing)}; start the run with torchrun (python -m torch.distributed.run)")
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 asks for distributed training, but this torch build has no "
                           "torch.distributed")
    backend = backend or ("nccl" if _device_type(device) == "cuda" else "gloo")
    if backend == "nccl":
        local, count = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if local >= count:
            raise RuntimeError(f"LOCAL_RANK={local} needs GPU {local}, but this machine has {count} CUDA "
                               f"device{'s' if count != 1 else ''}: start at most {count} processes per node, "
                               f"or train on CPU processes (--device cpu)")
        torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return is_distributed()


def _device_type(device: str | torch.device | None) -> str:
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto' or a torch device such as 'cuda:0', got {device!r}") from e


def cleanup() -> None:
    """Leave the process group, if this process is in one."""
    if _initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for in a single process)."""
    if is_distributed():
        dist.barrier()


@contextmanager
def main_process_first():
    """Rank 0 runs the body first, the others after it has finished (e.g. a download into a shared cache)."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def rank_seed(seed: int, extra: int = 0) -> int:
    """The seed of this rank's random stream: ``seed`` itself on rank 0 with ``extra`` 0, so a
    single process is seeded as it always was; other ranks (and ``extra``, e.g. a step to reseed
    at) get well-separated streams."""
    if rank() == 0 and extra == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank(), extra]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------- collectives

def shard(x: Tensor) -> Tensor:
    """This rank's contiguous part of ``x`` along dim 0 (``torch.tensor_split`` into world_size parts)."""
    if not is_distributed():
        return x
    return torch.tensor_split(x, world_size())[rank()]


def all_gather(x: Tensor) -> Tensor:
    """Every rank's ``x`` concatenated along dim 0 in rank order, without gradient.

    All ranks must pass tensors of the same shape (fit's equal slices of the global batch).
    """
    if not is_distributed():
        return x
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    """Forward: all_gather along dim 0. Backward: sum the incoming gradient over ranks, keep own slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)   # every rank's loss depends on this rank's rows
        start = rank() * ctx.n
        return grad[start:start + ctx.n]


def gather_with_grad(x: Tensor) -> Tensor:
    """Every rank's ``x`` concatenated along dim 0 in rank order, with the gradient flowing back.

    The gradient reaching rank r's ``x`` is the sum over ranks of the gradients of their losses
    with respect to rank r's rows (module docstring: with each rank's loss the mean over its own
    anchors and DDP's gradient averaging, the result is the single-process gradient). All ranks
    must pass tensors of the same shape. In a single process ``x`` itself is returned.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_sum(x: Tensor) -> Tensor:
    """The sum of ``x`` over ranks, as a new tensor without gradient (``x`` itself in a single process)."""
    if not is_distributed():
        return x
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(x: Tensor) -> Tensor:
    """The mean of ``x`` over ranks, without gradient (``x`` itself in a single process)."""
    if not is_distributed():
        return x
    return all_reduce_sum(x) / world_size()


def all_logsumexp(x: Tensor, dim: int, keepdim: bool = False) -> Tensor:
    """``torch.logsumexp`` over ``dim`` of the concatenation of every rank's ``x`` along ``dim``; no gradient.

    Computed stably as the logsumexp over ranks of each rank's own logsumexp. The shapes of
    ``x`` may differ along ``dim`` only.
    """
    local = torch.logsumexp(x, dim=dim, keepdim=keepdim)
    if not is_distributed():
        return local
    return torch.logsumexp(all_gather(local.unsqueeze(0)), dim=0)


def global_mean(total: Tensor, count: Tensor) -> Tensor:
    """``total / count`` of a loss averaged over a data-dependent number of terms, for DDP.

    ``total`` is the sum of this rank's terms (with gradient), ``count`` how many there are. In
    a single process: ``total / max(count, 1)``. Distributed: ``total * W / max(sum of counts, 1)``,
    whose mean over ranks is the single-process mean over all terms, so DDP's gradient average
    gives the single-process gradient.
    """
    if not is_distributed():
        return total / count.clamp(min=1)
    return total * world_size() / all_reduce_sum(count).clamp(min=1)


def broadcast(x: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``x`` in place with rank ``src``'s values and return it (unchanged in a single process)."""
    if is_distributed():
        dist.broadcast(x, src=src)
    return x


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable ``obj`` on every rank (``obj`` itself in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------- BatchNorm over the global batch

class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the global batch, on any device.

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors; this one needs only ``all_gather``, so it
    runs with Gloo on CPU and with NCCL on GPU alike. Each rank sends its per-channel count,
    mean and sum of squared deviations (one collective, through `gather_with_grad`, so the
    backward pass is exact), and they are combined as in a parallel variance computation.
    Normalisation uses the biased variance and the running variance the unbiased one, as
    ``nn.BatchNorm``. In eval mode, or without a process group, it is a plain BatchNorm.
    Parameters and buffers have BatchNorm's names, so state dicts move freely between the two.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"SyncBatchNorm expects an input of at least 2 dimensions (N, C, ...), "
                             f"got {input.dim()} dimensions")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)
        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        with torch.autocast(device_type=input.device.type, enabled=False):
            x = input.float()
            count = x.numel() // c
            mean = x.mean(dim=dims)                                               # (C,)
            m2 = (x - mean.view(shape)).pow(2).sum(dim=dims)                      # (C,)
            n = torch.full((1,), float(count), device=x.device)
            stats = gather_with_grad(torch.cat([n, mean, m2])[None])              # (W, 1 + 2C)
            counts, means, m2s = stats[:, :1], stats[:, 1:1 + c], stats[:, 1 + c:]
            total = counts.sum()
            g_mean = (counts * means).sum(0) / total
            g_m2 = (m2s + counts * (means - g_mean).pow(2)).sum(0)
            var = g_m2 / total                                                    # biased: normalisation
            if self.track_running_stats and self.running_mean is not None:
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                with torch.no_grad():
                    self.running_mean.mul_(1 - factor).add_(g_mean.detach(), alpha=factor)
                    unbiased = g_m2.detach() / (total.detach() - 1).clamp(min=1)
                    self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
            y = (x - g_mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
            if self.affine:
                y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        return y.to(input.dtype)


def _swap_batchnorm(module: nn.Module, make, skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace, recursively, each submodule for which ``make(m)`` returns a new module, sharing its
    parameters and buffers; direct children named in ``skip`` are left alone."""
    for name, child in module.named_children():
        if name in skip:
            continue
        new = make(child)
        if new is None:
            _swap_batchnorm(child, make)
            continue
        for attr in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            if getattr(child, attr, None) is not None:
                setattr(new, attr, getattr(child, attr))
        new.train(child.training)
        setattr(module, name, new)
    return module


def convert_sync_batchnorm(module: nn.Module, skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace, in place, every BatchNorm inside ``module`` by a `SyncBatchNorm` sharing its parameters.

    ``skip`` names direct children left alone (MoCo's key encoder, whose BN must stay per rank).
    Parameter objects are kept, so an optimizer built before the conversion still holds them.
    """
    def make(m):
        if not isinstance(m, nn.modules.batchnorm._BatchNorm) or isinstance(m, (SyncBatchNorm, nn.SyncBatchNorm)):
            return None
        new = SyncBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        new._original_class = type(m)
        return new
    return _swap_batchnorm(module, make, skip)


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Undo `convert_sync_batchnorm`: each `SyncBatchNorm` back to the BatchNorm class it replaced."""
    def make(m):
        if not isinstance(m, SyncBatchNorm):
            return None
        cls = getattr(m, "_original_class", nn.BatchNorm2d)
        return cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    return _swap_batchnorm(module, make)


def wrap(method: nn.Module, device: torch.device) -> nn.Module:
    """``method`` ready for multi-process training: global-batch BatchNorm, inside DDP.

    BatchNorms become `SyncBatchNorm` except in the children the method names in its
    ``local_batchnorm`` attribute. Buffers are not broadcast every step (DDP's default): the
    methods keep their queues, banks and EMA targets identical on every rank themselves. Call
    `unwrap` on the method afterwards to get its plain BatchNorms back.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel
    convert_sync_batchnorm(method, skip=tuple(getattr(method, "local_batchnorm", ())))
    # rank 0's buffers are copied once at construction either way; newer torch renames the switch
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")
    return DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None,
                                   **{no_sync: False})


def unwrap(method: nn.Module) -> nn.Module:
    """Undo `wrap` on the method itself (its BatchNorms back to plain ones); returns it."""
    return revert_sync_batchnorm(method)
