"""Exercises on the stateful parts of the methods: MoCo's queue, the EMA update, SwAV's Sinkhorn
codes and the memory-bank NCE loss of instance discrimination.

The queue and the EMA update change their first argument in place; the checkers compare the
state after the call with the state the reference leaves, and check that the other arguments
are untouched.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import losses
from ..methods.base import ema_update
from ..methods.instdisc import estimate_log_partition, nce_loss
from ..methods.moco import MoCo
from .core import Case, Exercise

# --------------------------------------------------------------------------------------------
# MoCo's queue

QUEUE_SIGNATURE = '''\
def dequeue_and_enqueue(queue: Tensor, ptr: int, keys: Tensor) -> int:
    """MoCo's queue update (He et al. 2020, Algorithm 1): first in, first out, in place.

    The queue is a ring buffer of K keys and ptr is the slot of the oldest one, the next
    to be overwritten. Write the N new keys, in order, into slots ptr, ptr + 1, ...,
    wrapping past the last slot back to slot 0, and return the new pointer.

    Args:
        queue: (K, D) float32, updated in place.
        ptr: int in [0, K), the slot of the oldest key.
        keys: (N, D) float32 with N <= K, the new keys; not to be changed.

    Returns:
        the new pointer, an int in [0, K).
    """'''


def _moco_dequeue_and_enqueue(queue: Tensor, ptr: int, keys: Tensor) -> int:
    """The reference: MoCo's own method, run on a stand-in holding just the queue and its pointer."""
    state = SimpleNamespace(queue=queue, queue_ptr=torch.tensor(ptr))
    MoCo._dequeue_and_enqueue(state, keys)
    return int(state.queue_ptr)


def _queue_cases(g: torch.Generator) -> list[Case]:
    def case(name, ptr, n, hint="", size=8):
        args = {"queue": torch.randn(size, 4, generator=g), "ptr": ptr, "keys": torch.randn(n, 4, generator=g)}
        return Case(name, args, hint=hint)

    return [
        case("pointer 0, N = 3", 0, 3),
        case("pointer in the middle (2), N = 3", 2, 3,
             hint="the keys go to slots ptr, ptr + 1, ... in their order, and the pointer moves forward by N"),
        case("the batch ends exactly at the last slot (pointer 5, N = 3, K = 8)", 5, 3,
             hint="after the last slot the pointer comes back to 0: return (ptr + N) % K"),
        case("the batch wraps around (pointer 6, N = 3, K = 8)", 6, 3,
             hint="keys that do not fit before the end go to the start: key j goes to slot (ptr + j) % K"),
        case("N = K, every slot replaced (pointer 4)", 4, 8),
    ]


def _queue_outputs(args: dict, returned) -> dict:
    return {"queue": args["queue"], "returned pointer": returned}


def _row_origin(row: Tensor, args: dict) -> str:
    for name, rows, label in (("keys", args["keys"], "keys[{}]"), ("queue", args["queue"], "the old row {}")):
        for j, other in enumerate(rows):
            if torch.equal(row, other):
                return label.format(j)
    return "values that are neither a key nor an old row"


def _compare_queue(want: Tensor, got: Tensor, args: dict) -> str | None:
    wrong = [int(r) for r in (~torch.isclose(got, want).all(dim=1)).nonzero()]
    if not wrong:
        return None
    r = wrong[0]
    return (f"queue rows {wrong} are wrong ({len(wrong)} of {want.shape[0]}); row {r} should hold "
            f"{_row_origin(want[r], args)} but holds {_row_origin(got[r], args)}")


QUEUE = Exercise("dequeue_and_enqueue", "MoCo's FIFO queue", QUEUE_SIGNATURE,
                 reference=_moco_dequeue_and_enqueue, cases=_queue_cases, outputs=_queue_outputs,
                 mutable=("queue",), compare={"queue": _compare_queue},
                 inplace_hint="Assign into it (queue[slots] = keys); `queue = ...` only rebinds the local name.")


# --------------------------------------------------------------------------------------------
# EMA

EMA_SIGNATURE = '''\
def ema_update(target_params, online_params, momentum: float) -> None:
    """The momentum (EMA) update of MoCo's key encoder (Eq. 2) and BYOL's target network.

    For every pair of parameters, in place and without recording anything for autograd:
        target <- momentum * target + (1 - momentum) * online

    Args:
        target_params: list of tensors (nn.Parameter), updated in place.
        online_params: list of tensors of the same shapes; not to be changed.
        momentum: m in [0, 1]; m = 1 keeps the target, m = 0 copies the online values.

    Returns:
        None.
    """'''


def _ema_cases(g: torch.Generator) -> list[Case]:
    def case(name, momentum, hint=""):
        def params(requires_grad):
            return [torch.nn.Parameter(torch.randn(shape, generator=g), requires_grad=requires_grad)
                    for shape in ((3, 4), (4,))]
        # As in MoCo and BYOL: the target gets no gradient, the online network does.
        args = {"target_params": params(False), "online_params": params(True), "momentum": momentum}
        return Case(name, args, hint=hint)

    return [
        case("momentum 0.99", 0.99,
             hint="the momentum multiplies the target (the slow copy): target <- m target + (1 - m) online"),
        case("momentum 0.9", 0.9),
        case("momentum 0: the target becomes the online network", 0.0),
        case("momentum 1: the target stays as it is", 1.0),
    ]


def _ema_outputs(args: dict, returned) -> dict:
    return {f"target_params[{i}]": p for i, p in enumerate(args["target_params"])}


def _ema_extra(case: Case, outputs: dict) -> dict[str, str]:
    tracked = [name for name, p in outputs.items() if p.grad_fn is not None]
    if not tracked:
        return {}
    return {"history": f"{', '.join(tracked)} now carry an autograd history: do the update under "
                       "torch.no_grad() (or use online.detach()), or the next backward runs into the target"}


EMA = Exercise("ema_update", "the momentum (EMA) update", EMA_SIGNATURE,
               reference=ema_update, cases=_ema_cases, outputs=_ema_outputs, mutable=("target_params",),
               extra=_ema_extra,
               inplace_hint="Under torch.no_grad() use p_t.mul_(m).add_(p_o, alpha=1 - m) or p_t.copy_(...); "
                            "`p_t = ...` only rebinds the loop variable.")


# --------------------------------------------------------------------------------------------
# Sinkhorn-Knopp

SINKHORN_SIGNATURE = '''\
def sinkhorn(scores: Tensor, epsilon: float, iterations: int) -> Tensor:
    """SwAV's codes by Sinkhorn-Knopp (Caron et al. 2020, Eq. 3 and Algorithm 1).

    Gamma = exp(scores / epsilon).T is a (J, N) matrix; divide it by its total, then repeat
    `iterations` times: divide each row of Gamma by its sum and by J (rows sum to 1/J), then
    each column by its sum and by N (columns sum to 1/N). The codes are N * Gamma.T.

    Args:
        scores: (N, J) float32 prototype scores (cosines): N samples, J prototypes.
        epsilon: > 0; smaller gives sharper codes (SwAV: 0.05).
        iterations: >= 1 rounds of normalisation (SwAV: 3).

    Returns:
        the codes, (N, J) float32, every row summing to 1, carrying no gradient.
    """'''


def _sinkhorn_cases(g: torch.Generator) -> list[Case]:
    def scores(n, j):
        z = F.normalize(torch.randn(n, 16, generator=g), dim=1)
        c = F.normalize(torch.randn(j, 16, generator=g), dim=1)
        return z @ c.T                                        # (N, J) cosines

    return [
        Case("N = 16 samples, J = 4 prototypes, epsilon 0.05, 3 iterations",
             {"scores": scores(16, 4).requires_grad_(True), "epsilon": 0.05, "iterations": 3}),
        Case("fewer samples than prototypes (N = 3, J = 8)",
             {"scores": scores(3, 8), "epsilon": 0.05, "iterations": 3},
             hint="rows of Gamma (prototypes) are divided by J, columns (samples) by N; Gamma is (J, N), the transpose "
                  "of scores"),
        Case("1 iteration", {"scores": scores(12, 6), "epsilon": 0.1, "iterations": 1},
             hint="loop exactly `iterations` times, each time rows first, then columns"),
        Case("10 iterations", {"scores": scores(10, 5), "epsilon": 0.05, "iterations": 10},
             hint="loop exactly `iterations` times, each time rows first, then columns"),
        Case("sharp codes, epsilon 0.02", {"scores": scores(8, 4), "epsilon": 0.02, "iterations": 3}),
    ]


def _sinkhorn_extra(case: Case, outputs: dict) -> dict[str, str]:
    codes, n, j = outputs["result"], *case.args["scores"].shape
    if not isinstance(codes, Tensor) or codes.shape != (n, j):
        return {}
    found = {}
    if codes.requires_grad:
        found["gradient"] = ("codes carry a gradient: compute them under torch.no_grad() (or from "
                             "scores.detach()); SwAV uses them as fixed targets")
    codes = codes.detach()
    sums = codes.sum(dim=1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        found["row sums"] = (f"rows of the codes must each sum to 1 (each iteration ends by normalising the "
                             f"columns of Gamma, the samples); got row sums from {float(sums.min()):.4g} to "
                             f"{float(sums.max()):.4g}")
    if float(codes.min()) < 0:
        found["negative"] = (f"codes must be >= 0 (probabilities over the prototypes); got a minimum of "
                             f"{float(codes.min()):.4g}: is Gamma = exp(scores / epsilon)?")
    return found


SINKHORN = Exercise("sinkhorn", "SwAV's Sinkhorn-Knopp codes", SINKHORN_SIGNATURE,
                    reference=lambda scores, epsilon, iterations: losses.sinkhorn(scores, epsilon, iterations),
                    cases=_sinkhorn_cases, extra=_sinkhorn_extra)


# --------------------------------------------------------------------------------------------
# memory-bank NCE

NCE_SIGNATURE = '''\
def nce_loss(v: Tensor, bank: Tensor, index: Tensor, noise: Tensor, temperature: float,
             log_Z: float) -> Tensor:
    """NCE loss of instance discrimination with a memory bank (Wu et al. 2018, Sec. 3.2).

    P(i | v) = exp(bank_i . v / tau) / Z. With m = len(noise) noise rows drawn uniformly
    from the n rows of the bank (P_n = 1/n), the probability that row i came from the data
    is h(i, v) = P(i | v) / (P(i | v) + m / n). The loss of sample k is
        -log h(index_k, v_k) - sum over the m noise rows j of log(1 - h(j, v_k)),
    the same noise rows serving every sample of the batch.

    Args:
        v: (N, D) float32 unit features of the batch.
        bank: (n, D) float32 memory bank with unit rows; not to be changed.
        index: (N,) int64, the bank row of each sample (its positive).
        noise: (m,) int64, bank rows drawn from P_n.
        temperature: tau > 0.
        log_Z: float, the log of the normalising constant Z.

    Returns:
        the mean loss over the N samples, a float32 scalar.
    """'''


def _nce_cases(g: torch.Generator) -> list[Case]:
    # One noise row and log_Z = 0 unless a case is about them, so that each mistake fails few cases.
    def case(name, n_batch=6, m=1, temperature=0.1, log_z=0.0, hint="", noise=None):
        bank = F.normalize(torch.randn(40, 8, generator=g), dim=1)
        v = F.normalize(torch.randn(n_batch, 8, generator=g), dim=1)
        index = torch.randperm(40, generator=g)[:n_batch]
        noise = torch.randint(40, (m,), generator=g) if noise is None else noise(index)
        if log_z is None:                    # the Monte-Carlo estimate that InstDisc would use
            log_z = float(estimate_log_partition(v, bank, noise, temperature))
        args = {"v": v, "bank": bank, "index": index, "noise": noise, "temperature": temperature, "log_Z": log_z}
        return Case(name, args, hint=hint, grad=("v",))

    several = ("h = P / (P + m / n), with m the number of noise rows; the noise terms are summed over the "
               "m rows, not averaged")
    return [
        case("N = 6, one noise row, log_Z = 0, tau 0.1"),
        case("N = 1", n_batch=1),
        case("log_Z = 3 (Z = e^3)", log_z=3.0, hint="P(i | v) = exp(s / tau) / Z: in logs, s / tau - log_Z"),
        case("m = 10 noise rows", m=10, hint=several),
        case("m = 20 noise rows, the positives among them", n_batch=5, m=20, hint=several,
             noise=lambda index: torch.cat([index, torch.randint(40, (15,), generator=g)])),
        case("as in training: m = 10, tau 0.07, log_Z estimated from the batch", m=10, temperature=0.07,
             log_z=None),
    ]


NCE = Exercise("nce_loss", "the memory-bank NCE loss (instance discrimination)", NCE_SIGNATURE,
               reference=lambda v, bank, index, noise, temperature, log_Z:
               nce_loss(v, bank, index, noise, temperature, log_Z),
               cases=_nce_cases)

__all__ = ["EMA", "NCE", "QUEUE", "SINKHORN"]
