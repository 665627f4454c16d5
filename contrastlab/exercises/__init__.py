"""Checkers for course assignments: a student writes a function, a checker says what is right and wrong.

Each ``check_<name>(fn)`` calls the student's ``fn`` and contrastlab's own implementation on
the same inputs (random ones, and edge cases with a known answer) and returns a `CheckResult`:
``passed``, and ``messages`` in plain words (wrong shape or dtype; the worst element of the
worst case, with the expected and the computed value; a gradient that differs from the
reference's or does not reach an input; an input changed in place; an exception, with its text
and the line that raised it). A stub that raises ``NotImplementedError`` is reported as not
implemented. Checkers never raise on a wrong answer unless asked (``raise_on_fail=True``, or
`assert_passes`), so a notebook of unsolved exercises still runs to the end.

    >>> from contrastlab import exercises
    >>> result = exercises.check_nt_xent(my_nt_xent)
    >>> result.passed, result.messages

The function each exercise asks for is documented in its checker's docstring
(``help(exercises.check_nt_xent)``) and in ``EXERCISES[name].signature``:

| checker | the student writes | reference |
| --- | --- | --- |
| `check_nt_xent` | ``nt_xent(z1, z2, temperature)`` | `contrastlab.losses.nt_xent` |
| `check_byol_loss` | ``byol_loss(p, z)`` | `contrastlab.losses.byol` |
| `check_supcon` | ``supcon(z, labels, temperature)`` | `contrastlab.losses.supcon` (L_out) |
| `check_nce_loss` | ``nce_loss(v, bank, index, noise, temperature, log_Z)`` | `contrastlab.methods.instdisc.nce_loss` |
| `check_dequeue_and_enqueue` | ``dequeue_and_enqueue(queue, ptr, keys)`` | MoCo's ``_dequeue_and_enqueue`` |
| `check_ema_update` | ``ema_update(target_params, online_params, momentum)`` | `contrastlab.methods.base.ema_update` |
| `check_sinkhorn` | ``sinkhorn(scores, epsilon, iterations)`` | `contrastlab.losses.sinkhorn` |
| `check_alignment` | ``alignment(x, y, alpha)`` | `contrastlab.metrics.alignment` |
| `check_uniformity` | ``uniformity(x, t)`` | `contrastlab.metrics.uniformity` |
| `check_knn_predict` | ``knn_predict(train_features, train_labels, query_features, k, temperature)`` | `contrastlab.metrics.knn_predict` |

Notebooks: instructor notebooks in the repository's ``exercises/`` folder mark solutions with
``### BEGIN SOLUTION`` / ``### END SOLUTION``; ``python -m contrastlab.exercises make-student SRC
DST`` (`make_student_notebook`) writes the student version. See ``book/instructors.md``.
"""
from __future__ import annotations

from .core import Case, CheckResult, Exercise, ExerciseFailed, assert_passes
from .evaluation import ALIGNMENT, KNN, UNIFORMITY
from .losses import BYOL, NT_XENT, SUPCON
from .notebook import make_student_notebook
from .state import EMA, NCE, QUEUE, SINKHORN

EXERCISES: dict[str, Exercise] = {ex.name: ex for ex in (
    NT_XENT, BYOL, SUPCON, NCE, QUEUE, EMA, SINKHORN, ALIGNMENT, UNIFORMITY, KNN)}

check_nt_xent = NT_XENT.checker()
check_byol_loss = BYOL.checker()
check_supcon = SUPCON.checker()
check_nce_loss = NCE.checker()
check_dequeue_and_enqueue = QUEUE.checker()
check_ema_update = EMA.checker()
check_sinkhorn = SINKHORN.checker()
check_alignment = ALIGNMENT.checker()
check_uniformity = UNIFORMITY.checker()
check_knn_predict = KNN.checker()

__all__ = [
    "EXERCISES",
    "Case",
    "CheckResult",
    "Exercise",
    "ExerciseFailed",
    "assert_passes",
    "check_alignment",
    "check_byol_loss",
    "check_dequeue_and_enqueue",
    "check_ema_update",
    "check_knn_predict",
    "check_nce_loss",
    "check_nt_xent",
    "check_sinkhorn",
    "check_supcon",
    "check_uniformity",
    "make_student_notebook",
]
