"""The public API stays put: no public name disappears and no signature changes unnoticed.

Every public module of contrastlab (the package and all its submodules, private ``_`` modules
and ``__main__`` aside) is imported; its public names are its ``__all__``, or, without one, the
functions, classes and constants it defines whose names do not start with ``_``. Each name is
recorded with its kind and ``inspect.signature`` in ``tests/public_api.json``. The test fails
when a recorded name is gone or its signature differs, unless the name is listed in
``contrastlab._deprecations.DEPRECATIONS``; new names only warn until they are recorded.

After an intended change, regenerate the snapshot from the repository root and commit it:

    python -m tests.test_public_api --update
    # or: CONTRASTLAB_UPDATE_API=1 python -m pytest -q tests/test_public_api.py

Run only these:  python -m pytest -q tests/test_public_api.py
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import re
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).with_name("public_api.json")
UPDATE_ENV = "CONTRASTLAB_UPDATE_API"
UPDATE_COMMAND = "python -m tests.test_public_api --update"
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")   # reprs of default values that differ from run to run


def public_modules() -> list[str]:
    import contrastlab
    names = ["contrastlab"]
    for info in pkgutil.walk_packages(contrastlab.__path__, "contrastlab."):
        parts = info.name.split(".")
        if not any(p.startswith("_") for p in parts[1:]):
            names.append(info.name)
    return sorted(names)


def public_names(module) -> list[str]:
    if hasattr(module, "__all__"):
        return sorted(module.__all__)
    names = []
    for name, obj in vars(module).items():
        if name.startswith("_") or inspect.ismodule(obj) or type(obj).__name__ == "_Feature":
            continue                                   # private, an imported module, `annotations`
        defined_here = getattr(obj, "__module__", module.__name__) == module.__name__
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not defined_here:
            continue                                   # imported from elsewhere: recorded there
        if not (inspect.isclass(obj) or callable(obj)) and not name.isupper():
            continue                                   # module-level variables that are not CONSTANTS
        names.append(name)
    return sorted(names)


def describe(obj) -> str:
    """'function (x, y=1) -> int', 'class (config=None)', 'constant dict', 'module'."""
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        kind = "class"
    elif callable(obj):
        kind = "function"
    else:
        return f"constant {type(obj).__name__}"
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        signature = "(signature not available)"
    return f"{kind} {ADDRESS.sub('', signature)}"


def current_api() -> dict[str, str]:
    api = {}
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name in public_names(module):
            api[f"{module_name}.{name}"] = describe(getattr(module, name))
    return api


def write_snapshot(api: dict[str, str]) -> None:
    SNAPSHOT.write_text(json.dumps(api, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def differences(recorded: dict[str, str], api: dict[str, str], deprecated) -> tuple[list[str], list[str]]:
    """(problems, new names): removed or changed recorded names not deprecated, and unrecorded names."""
    problems = []
    for name, was in sorted(recorded.items()):
        if name in deprecated:
            continue
        if name not in api:
            problems.append(f"{name} was removed (recorded as: {was})")
        elif api[name] != was:
            problems.append(f"{name} changed its signature\n    was: {was}\n    now: {api[name]}")
    return problems, sorted(set(api) - set(recorded))


def test_public_api_matches_the_snapshot():
    from contrastlab._deprecations import DEPRECATIONS
    api = current_api()
    if os.environ.get(UPDATE_ENV) == "1":
        write_snapshot(api)
        pytest.skip(f"{UPDATE_ENV}=1: wrote {len(api)} names to {SNAPSHOT.relative_to(ROOT)}")
    assert SNAPSHOT.exists(), f"no snapshot at {SNAPSHOT.relative_to(ROOT)}; create it with {UPDATE_COMMAND}"
    recorded = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    problems, added = differences(recorded, api, DEPRECATIONS)
    if added:
        warnings.warn(f"public names not yet in {SNAPSHOT.name}: {', '.join(added)}; record them with "
                      f"{UPDATE_COMMAND}", stacklevel=1)
    assert not problems, (
        "the public API of contrastlab changed:\n  " + "\n  ".join(problems) + "\n\n"
        "If the change is intended, either regenerate the snapshot and commit tests/public_api.json:\n"
        f"    {UPDATE_COMMAND}   (or {UPDATE_ENV}=1 python -m pytest -q tests/test_public_api.py)\n"
        "or, to keep the old name working for a while, list it in contrastlab/_deprecations.py "
        "(DEPRECATIONS['contrastlab.module.name'] = 'use ... instead; removed in ...') and give it a "
        "deprecated_alias. If it is not intended, restore the name or its signature.")


def test_differences_name_what_changed():
    recorded = {"contrastlab.a.f": "function (x)", "contrastlab.a.g": "function (x)", "contrastlab.a.h": "class ()"}
    api = {"contrastlab.a.f": "function (x, y)", "contrastlab.a.new": "function ()"}
    problems, added = differences(recorded, api, {"contrastlab.a.h": "use f"})
    assert problems == ["contrastlab.a.f changed its signature\n    was: function (x)\n    now: function (x, y)",
                        "contrastlab.a.g was removed (recorded as: function (x))"]
    assert added == ["contrastlab.a.new"]


def test_public_names_and_descriptions():
    from contrastlab import losses
    from contrastlab.methods import moco
    assert "nt_xent" in public_names(losses)
    names = public_names(moco)                  # no __all__: what the module itself defines
    assert "MoCo" in names and "MoCoConfig" in names
    assert not {"torch", "nn", "Tensor", "dataclass", "annotations"} & set(names)
    assert describe(losses.nt_xent).startswith("function (z1")
    assert "contrastlab.exercises" in public_modules()


def test_deprecated_alias_warns_and_requires_an_entry(monkeypatch):
    from contrastlab import _deprecations
    monkeypatch.setitem(_deprecations.DEPRECATIONS, "contrastlab.x.old", "use contrastlab.x.new")
    old = _deprecations.deprecated_alias("contrastlab.x.old", lambda a: a + 1)
    with pytest.warns(DeprecationWarning, match="contrastlab.x.old is deprecated: use contrastlab.x.new"):
        assert old(1) == 2
    with pytest.raises(KeyError, match="must be listed in contrastlab._deprecations.DEPRECATIONS"):
        _deprecations.deprecated_alias("contrastlab.x.other", len)


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(f"usage: {UPDATE_COMMAND}   (writes {SNAPSHOT.relative_to(ROOT)})")
    snapshot = current_api()
    write_snapshot(snapshot)
    print(f"wrote {len(snapshot)} public names to {SNAPSHOT.relative_to(ROOT)}")
