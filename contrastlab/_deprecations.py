"""Deprecated public names: the table `tests/test_public_api.py` consults, and an alias helper.

The public API (every module's ``__all__``, or its public names) is recorded with signatures in
``tests/public_api.json``; the test fails when a recorded name disappears or its signature
changes. A change made on purpose either regenerates the snapshot
(``python -m tests.test_public_api --update``) or, to give users time, goes through this table:

1. add ``"contrastlab.module.old_name": "use contrastlab.module.new_name; removed in 0.3"`` to
   `DEPRECATIONS`;
2. keep the old name working for a release: ``old_name = deprecated_alias("contrastlab.module.old_name",
   new_name)`` in that module, which warns with the message on every call;
3. once it is removed, leave its entry here until the snapshot is regenerated.

A name listed here may change or disappear without failing the test.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

# full dotted name -> what to use instead, and when the old name goes
DEPRECATIONS: dict[str, str] = {}


def deprecated_alias(name: str, obj: Callable[..., Any]) -> Callable[..., Any]:
    """``obj`` under its deprecated ``name``: the same call, with a DeprecationWarning carrying the table's message.

    Raises:
        KeyError: ``name`` is not in `DEPRECATIONS` (every deprecation is documented there first).
    """
    if name not in DEPRECATIONS:
        raise KeyError(f"{name} must be listed in contrastlab._deprecations.DEPRECATIONS, with a message saying "
                       f"what to use instead, before it gets a deprecated alias")
    message = DEPRECATIONS[name]

    @functools.wraps(obj)
    def alias(*args, **kwargs):
        warnings.warn(f"{name} is deprecated: {message}", DeprecationWarning, stacklevel=2)
        return obj(*args, **kwargs)

    return alias
