"""Comparing what a student's function gave with what the reference gave, and saying it in words.

`compare` checks one output (type, shape, dtype, then values within a tolerance, reporting the
worst element with both values); `same` and `clone` serve the before/after check of inputs;
the ``describe_*`` helpers write inputs and exceptions the way the reports show them.
"""
from __future__ import annotations

import os
import traceback
from typing import Any

import torch
from torch import Tensor

import contrastlab

_QUIET_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(contrastlab.__file__))


def compare(key: str, want: Any, got: Any, rtol: float, atol: float) -> tuple[str | None, float, str]:
    """Compare one output with the reference's; returns (message or None, how bad, kind of problem)."""
    if isinstance(want, bool) or not isinstance(want, (Tensor, int)):
        raise TypeError(f"the reference's {key} must be a tensor or an int, got {type(want).__name__}")
    if isinstance(want, int):
        return _compare_int(key, want, got)
    if not isinstance(got, Tensor):
        return f"{key} must be a torch.Tensor, got {type_name(got)}{type_hint(got)}", 0.0, "type"
    if got.shape != want.shape:
        extra = " (a scalar: reduce with .mean())" if want.ndim == 0 else ""
        return (f"{key} has the wrong shape: expected {_shape(want)}{extra}, got {_shape(got)}", 0.0, "shape")
    if got.dtype != want.dtype:
        return f"{key} has the wrong dtype: expected {want.dtype}, got {got.dtype}", 0.0, "dtype"
    got = got.detach()
    if not want.is_floating_point():
        bad = got != want
        if not bad.any():
            return None, 0.0, "value"
        first = tuple(int(i) for i in bad.nonzero()[0])
        message = (f"{key} differs in {int(bad.sum())} of {bad.numel()} elements; first at {_index(first)}: "
                   f"expected {want[first].item()}, got {got[first].item()}")
        return message, float(bad.float().mean()), "value"
    want = want.detach()
    diff = (got - want).abs()
    tol = atol + rtol * want.abs()
    both_nan = want.isnan() & got.isnan()
    bad = ~((diff <= tol) | both_nan)
    if not bad.any():
        return None, 0.0, "value"
    excess = torch.where(bad, (diff / tol).nan_to_num(float("inf")), torch.zeros_like(diff))
    worst = tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape)) if want.ndim else ()
    score = float(excess[worst])
    w, g = want[worst].item(), got[worst].item()
    if want.ndim == 0:
        return f"{key} is wrong: expected {w:.6g}, got {g:.6g}", score, "value"
    message = (f"{key} differs in {int(bad.sum())} of {bad.numel()} elements; worst at {_index(worst)}: "
               f"expected {w:.6g}, got {g:.6g}")
    return message, score, "value"


def _compare_int(key: str, want: int, got: Any) -> tuple[str | None, float, str]:
    if isinstance(got, Tensor) and got.ndim == 0 and not got.is_floating_point():
        got = int(got)
    if isinstance(got, bool) or not isinstance(got, int):
        return f"{key} must be an int, got {type_name(got)}{type_hint(got)}", 0.0, "type"
    if got != want:
        return f"{key} is wrong: expected {want}, got {got}", 1.0, "value"
    return None, 0.0, "value"


def same(a: Any, b: Any) -> bool:
    """Equal values (nan equal to nan), recursively through lists and tuples."""
    if isinstance(a, Tensor):
        return (isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype
                and bool(((a == b) | (a.isnan() & b.isnan()) if a.is_floating_point() else (a == b)).all()))
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def clone(value: Any) -> Any:
    """A deep copy of tensors (parameters stay parameters), lists, tuples and dicts of them."""
    if isinstance(value, torch.nn.Parameter):
        return torch.nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad)
    if isinstance(value, Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, (list, tuple)):
        return type(value)(clone(v) for v in value)
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# words


def _shape(x: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ("," if x.ndim == 1 else "") + ")"


def _index(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, index)) + "]"


def type_name(x: Any) -> str:
    return "None" if x is None else type(x).__name__


def type_hint(x: Any) -> str:
    if x is None:
        return " (did you forget `return`?)"
    if isinstance(x, float):
        return " (.item() and float() cut the gradient: return the tensor itself)"
    return ""


def describe_args(args: dict[str, Any]) -> str:
    return ", ".join(f"{name}={_describe(value)}" for name, value in args.items())


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        if value.numel() <= 6:
            return f"tensor({[round(v, 4) if isinstance(v, float) else v for v in value.flatten().tolist()]}" \
                   f", shape {_shape(value)}, {value.dtype})"
        return f"{value.dtype} {_shape(value)}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    return repr(value)


def describe_exception(err: Exception) -> str:
    """'ValueError: text (at line 7 of nt_xent: z = ...)', the line in the student's own code."""
    where = ""
    frames = [f for f in traceback.extract_tb(err.__traceback__)[1:]
              if not f.filename.startswith(_QUIET_DIRS)]
    if frames:
        frame = frames[-1]
        line = f": {frame.line.strip()}" if frame.line else ""
        where = f" (at line {frame.lineno} of {frame.name}{line})"
    return f"{type(err).__name__}: {err}{where}"


__all__ = ["clone", "compare", "describe_args", "describe_exception", "same"]
