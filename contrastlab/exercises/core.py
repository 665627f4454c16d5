"""The machinery behind the exercise checkers: cases, comparisons with the reference, the result.

An `Exercise` names the function a student writes, documents its signature, and holds the
reference (contrastlab's own implementation) and a list of input `Case`s. `run` calls the
student's function and the reference on fresh copies of every case and compares:

- what comes back: type, shape, dtype, then the values within a tolerance (the worst element
  of the worst case is reported with both values);
- the gradients, on the cases that name inputs to differentiate (autograd on the student's
  result against autograd on the reference's), once the values agree;
- the inputs: an argument the function should leave alone must be unchanged afterwards, and
  an argument it should update in place (a queue, target parameters) must have changed;
- exceptions, which are caught and reported with their text and the line that raised them.

Problems of one kind (say "value of result") are reported once, on the case where they are
worst, with the names of the other cases where they also occur. A function that raises
``NotImplementedError`` (the stub of a student notebook) is reported as not implemented.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .compare import clone, compare, describe_args, describe_exception, same


class ExerciseFailed(AssertionError):
    """Raised by `assert_passes` (and ``raise_on_fail=True``); an AssertionError, so graders count it as a failed test."""


@dataclass
class Case:
    """One input of an exercise.

    Attributes:
        name: what the case is, in words the student reads ("all 2N embeddings identical").
        args: the arguments in the order of the documented signature; passed positionally.
        hint: shown when this case fails: what it is there to catch.
        grad: names of the inputs whose gradients are compared with the reference's.
        closed_form: the answer is known in closed form (named in ``name``); such a case is the
            one reported when it fails, however large the errors elsewhere.
    """

    name: str
    args: dict[str, Any]
    hint: str = ""
    grad: tuple[str, ...] = ()
    closed_form: bool = False


def result_only(args: dict, returned: Any) -> dict[str, Any]:
    """The default view of a call: only what the function returns, called "result"."""
    return {"result": returned}


@dataclass
class Exercise:
    """One exercise: the student's function, its reference and the cases it is checked on.

    Its fields:

    - ``name``: the name of the function the student writes, e.g. ``"nt_xent"``;
    - ``title``: a heading, e.g. ``"NT-Xent (SimCLR)"``;
    - ``signature``: the signature and docstring the student implements, as text;
    - ``reference``: the correct function, called like the student's (positionally);
    - ``cases``: ``cases(generator) -> list[Case]``, inputs drawn from the seeded generator;
    - ``outputs``: ``outputs(args_after_call, returned) -> {name: value}``, what is compared;
    - ``mutable``: arguments the function is meant to change in place;
    - ``inplace_hint``: how to change them in place, shown when they were left unchanged;
    - ``compare``: per-output comparisons replacing the generic one,
      ``compare(expected, got, case_args) -> message or None``;
    - ``extra``: ``extra(case, outputs) -> {kind: message}``, properties checked on the student's outputs;
    - ``rtol``, ``atol``: tolerance of the value comparison.
    """

    name: str
    title: str
    signature: str
    reference: Callable[..., Any]
    cases: Callable[[torch.Generator], list[Case]]
    outputs: Callable[[dict, Any], dict[str, Any]] = result_only
    mutable: tuple[str, ...] = ()
    inplace_hint: str = ""
    compare: dict[str, Callable[[Any, Any, dict], str | None]] = field(default_factory=dict)
    extra: Callable[[Case, dict], dict[str, str]] | None = None
    rtol: float = 1e-4
    atol: float = 1e-5

    def checker(self) -> Callable[..., CheckResult]:
        """A ``check_<name>(fn, *, raise_on_fail=False, seed=0)`` function with the signature in its docstring."""
        def check(fn: Callable, *, raise_on_fail: bool = False, seed: int = 0) -> CheckResult:
            return run(self, fn, raise_on_fail=raise_on_fail, seed=seed)

        check.__name__ = check.__qualname__ = f"check_{self.name}"
        check.__doc__ = (
            f"Check a student's ``{self.name}``: {self.title}.\n\n"
            f"The function to write::\n\n{_indent(self.signature, 4)}\n\n"
            "Args:\n"
            "    fn: the student's function.\n"
            "    raise_on_fail: raise `ExerciseFailed` (an AssertionError) with the report when a check fails.\n"
            "    seed: seed of the random inputs (another seed gives other, equally hard, cases).\n\n"
            "Returns:\n"
            "    a `CheckResult`: ``passed``, ``messages``, printable and shown in notebooks.\n"
        )
        check.__module__ = "contrastlab.exercises"
        check.exercise = self
        return check


@dataclass
class CheckResult:
    """What a checker found.

    Attributes:
        exercise: the name of the function checked.
        title: the exercise's heading.
        passed: True when every case matched the reference.
        messages: one line (or a few) per problem, worst case first; empty when passed.
        cases: how many cases were run.
        not_implemented: the function raised NotImplementedError (still a stub).
        example: the arguments of the case where the first problem was worst, to rerun
            the function on: ``fn(*result.example.values())``.
    """

    exercise: str
    title: str
    passed: bool
    messages: list[str]
    cases: int
    not_implemented: bool = False
    example: dict[str, Any] | None = None

    def headline(self) -> str:
        if self.passed:
            return f"PASSED {self.exercise} ({self.title}): all {self.cases} cases match the reference"
        if self.not_implemented:
            return f"NOT IMPLEMENTED {self.exercise} ({self.title})"
        n = len(self.messages)
        return f"FAILED {self.exercise} ({self.title}): {n} problem{'s' if n != 1 else ''}"

    def __str__(self) -> str:
        lines = [self.headline()]
        lines += [f"  - {_indent(m, 4).lstrip()}" for m in self.messages]
        if self.example is not None:
            lines.append("  Rerun your function on the worst input: fn(*result.example.values())")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else ("#9a6700" if self.not_implemented else "#cf222e")
        items = "".join(f"<li><pre style='white-space: pre-wrap; margin: 0'>{html.escape(m)}</pre></li>"
                        for m in self.messages)
        return (f"<div><b style='color: {colour}'>{html.escape(self.headline())}</b>"
                f"{'<ul>' + items + '</ul>' if items else ''}</div>")

    def __bool__(self) -> bool:
        return self.passed


def assert_passes(result: CheckResult) -> CheckResult:
    """Raise `ExerciseFailed` with the whole report unless ``result`` passed; return it otherwise.

    For graded cells (nbgrader, otter-grader, pytest), where a failed check must raise.
    """
    if not isinstance(result, CheckResult):
        raise TypeError(f"result must be a CheckResult (what a check_* function returns), "
                        f"got {type(result).__name__}")
    if not result.passed:
        raise ExerciseFailed(str(result))
    return result


# --------------------------------------------------------------------------------------------
# running an exercise


GRADIENT_HINT = ("the value is right here but its gradient is not: a step that changes nothing on these inputs "
                 "(normalising rows that already have length 1, say) still changes the gradient, and so does "
                 "a part computed outside autograd")


class _Problems:
    """Problems grouped by kind; each kind is reported once, on its worst case."""

    def __init__(self):
        self.by_kind: dict[str, list[tuple[float, Case, str]]] = {}
        self.hints: dict[str, str] = {}

    def add(self, kind: str, score: float, case: Case, message: str, hints: str = "cases") -> None:
        """``hints``: 'cases' (show the failing cases' hints), 'gradient' (the gradient hint) or 'none'
        (the message explains itself)."""
        self.by_kind.setdefault(kind, []).append((score, case, message))
        self.hints[kind] = hints

    def report(self, total: int) -> tuple[list[str], dict | None]:
        messages, example = [], None
        # Gradient problems last: a value problem, when there is one, is the thing to fix first.
        for kind in sorted(self.by_kind, key=lambda k: self.hints[k] == "gradient"):
            found = self.by_kind[kind]
            _, case, message = max(found, key=lambda f: (f[1].closed_form, f[0]))
            text = f"{message}\n  case: {case.name}; inputs: {describe_args(case.args)}"
            # A closed-form case says what is wrong by itself; otherwise the hints of the failing
            # cases, worst first, point at the property they test. Those hints are about values.
            if self.hints[kind] != "cases":
                hints = [GRADIENT_HINT] if self.hints[kind] == "gradient" else []
            elif case.closed_form:
                hints = [case.hint]
            else:
                hints = [c.hint for _, c, _ in sorted(found, key=lambda f: -f[0])]
            for hint in list(dict.fromkeys(h for h in hints if h))[:3]:
                text += f"\n  hint: {hint}"
            others = [c.name for _, c, _ in found if c is not case]
            if others:
                text += f"\n  also on {len(others)} more of the {total} cases: " + "; ".join(others)
            messages.append(text)
            if example is None:
                example = clone(case.args)
        return messages, example


class _NotImplemented(Exception):
    pass


def run(exercise: Exercise, fn: Callable, *, raise_on_fail: bool = False, seed: int = 0) -> CheckResult:
    """Check ``fn`` against ``exercise`` on every case; see the module docstring."""
    if not callable(fn):
        result = CheckResult(exercise.name, exercise.title, False,
                             [f"fn must be a function ({exercise.name}), got {type(fn).__name__}"], 0)
    else:
        generator = torch.Generator().manual_seed(seed)
        cases = exercise.cases(generator)
        problems = _Problems()
        try:
            for case in cases:
                _run_case(exercise, fn, case, problems)
        except _NotImplemented as err:
            message = (f"{exercise.name} is not implemented yet (it raised NotImplementedError: {err}); "
                       "write it, then run this check again")
            result = CheckResult(exercise.name, exercise.title, False, [message], len(cases), not_implemented=True)
        else:
            messages, example = problems.report(len(cases))
            result = CheckResult(exercise.name, exercise.title, not messages, messages, len(cases), example=example)
    if raise_on_fail:
        assert_passes(result)
    return result


def _run_case(ex: Exercise, fn: Callable, case: Case, problems: _Problems) -> None:
    ref_args = clone(case.args)
    expected = ex.outputs(ref_args, ex.reference(*ref_args.values()))
    args = clone(case.args)
    try:
        returned = fn(*args.values())
    except NotImplementedError as err:
        raise _NotImplemented(str(err)) from None
    except Exception as err:   # noqa: BLE001 - any error of the student's code is reported, not raised
        problems.add("exception", 0.0, case, f"{ex.name} raised {describe_exception(err)}")
        return

    mutated = [name for name in args if name not in ex.mutable and not same(case.args[name], args[name])]
    for name in mutated:
        problems.add(f"mutates {name}", 0.0, case,
                     f"{ex.name} changed its input {name} in place; leave it as it came and work on a "
                     f"new tensor (x = x / ..., not x /= ... or x.div_(...))")
    got = ex.outputs(args, returned)
    values_ok = True
    for key, want in expected.items():
        if key in ex.compare:
            message, score, kind = ex.compare[key](want, got[key], case.args), 1.0, "value"
        else:
            message, score, kind = compare(key, want, got[key], ex.rtol, ex.atol)
        if message:
            values_ok = False
            problems.add(f"{kind} of {key}", score, case, message)
    for name in ex.mutable:
        if not same(ref_args[name], case.args[name]) and same(args[name], case.args[name]):
            problems.add(f"unchanged {name}", 0.0, case,
                         f"{name} was left unchanged: {ex.name} must update it in place. {ex.inplace_hint}")
    if ex.extra is not None:
        for kind, message in ex.extra(case, got).items():
            problems.add(kind, 0.0, case, message, hints="none")
    if values_ok and case.grad and not mutated:   # in-place changes of a leaf fail in backward anyway
        _check_gradients(ex, fn, case, problems)


def _check_gradients(ex: Exercise, fn: Callable, case: Case, problems: _Problems) -> None:
    expected = _gradients(ex.reference, ex, case)
    try:
        got = _gradients(fn, ex, case)
    except Exception as err:   # noqa: BLE001 - as above, in the gradient pass
        problems.add("exception in backward", 0.0, case,
                     f"{ex.name} raised {describe_exception(err)} when called on inputs that require grad",
                     hints="gradient")
        return
    for name in case.grad:
        want, have = expected[name], got[name]
        if have is None:
            problems.add(f"no gradient to {name}", 0.0, case,
                         f"no gradient reaches {name}: the result of {ex.name} is not connected to {name} in "
                         "the autograd graph (.detach(), .item(), .numpy(), .data or torch.no_grad() cut it)",
                         hints="gradient")
            continue
        atol = 1e-6 + 1e-4 * float(want.abs().max())
        message, score, _ = compare(f"the gradient with respect to {name}", want, have, rtol=1e-3, atol=atol)
        if message:
            problems.add(f"gradient of {name}", score, case, message, hints="gradient")


def _gradients(fn: Callable, ex: Exercise, case: Case) -> dict[str, Tensor | None]:
    args = clone(case.args)
    for name in case.grad:
        args[name] = args[name].detach().requires_grad_(True)
    out = ex.outputs(args, fn(*args.values()))["result"]
    if not isinstance(out, Tensor) or not out.requires_grad:
        return {name: None for name in case.grad}
    # A fixed random weighting turns a tensor result into a scalar that depends on every element.
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    scalar = out if out.ndim == 0 else (out * weights).sum()
    grads = torch.autograd.grad(scalar, [args[n] for n in case.grad], allow_unused=True)
    return dict(zip(case.grad, grads))


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line if line else line for line in text.splitlines())


__all__ = ["Case", "CheckResult", "Exercise", "ExerciseFailed", "assert_passes", "result_only", "run"]
