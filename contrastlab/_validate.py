"""Small argument checks shared by the package.

Every error names the argument, what was expected and what came, e.g.
``ValueError: z1 and z2 must have the same shape, got (8, 128) and (8, 64)``.
"""
from __future__ import annotations

import types
import typing
from collections.abc import Iterable

import torch


def shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_tensor(name: str, x, *, ndim: int | None = None, floating: bool = False,
                 dtype: torch.dtype | None = None) -> None:
    """Raise TypeError/ValueError unless ``x`` is a tensor of the given rank and dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {shape_str(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {x.dtype}")


def check_positive(name: str, value, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def check_probability(name: str, value) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def check_choice(name: str, value, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")


def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if tp is type(None):
        return "None"
    if origin is tuple:
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if origin is typing.Literal:
        return " or ".join(map(repr, args))
    return {int: "an int", float: "a number", bool: "true or false", str: "a string",
            list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def matches_type(value, tp) -> bool:
    """Whether a JSON-like ``value`` fits the annotation ``tp`` (int is not bool; a number fits float;
    a list fits a tuple type; annotations not understood here accept anything)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if not args or args[-1] is Ellipsis:
            return all(matches_type(v, args[0]) for v in value) if args else True
        return len(value) == len(args) and all(matches_type(v, a) for v, a in zip(value, args))
    if origin is list or tp is list:
        return isinstance(value, (list, tuple)) and (not args or all(matches_type(v, args[0]) for v in value))
    if origin is typing.Literal:
        return value in args
    return True


def check_type(name: str, value, tp) -> None:
    """Raise TypeError unless ``value`` fits the annotation ``tp`` (see `matches_type`)."""
    if not matches_type(value, tp):
        raise TypeError(f"{name} must be {_describe(tp)}, got {value!r} ({type(value).__name__})")


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise ValueError if the tensor ``x`` holds a NaN or an infinity (say where the first one is)."""
    bad = ~torch.isfinite(x.detach())
    if bool(bad.any()):
        where = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(f"{name} must be finite, got {int(bad.sum())} NaN or infinite value(s), the first "
                         f"at index {where} ({x[where].item()}); a training run that diverged gives such features")
