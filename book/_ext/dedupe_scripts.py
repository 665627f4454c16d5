"""Sphinx extension of the contrastlab book: each page lists each script once.

sphinx-thebe (which Jupyter Book 1.x always loads, for its launch buttons) registers its inline
configuration script (``const THEBE_JS_URL = ...``) on an event that fires more than once per
build (seen with jupyter-book 1.0.4 and sphinx-thebe 0.3.1), so pages carried it twice and the
browser stopped at "Identifier 'THEBE_JS_URL' has already been declared". This drops the
repeats from every page's script list.

Enabled from _config.yml (``sphinx: local_extensions: {dedupe_scripts: book/_ext}``).
"""
from __future__ import annotations


def _script_key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    filename = getattr(script, "filename", script) or ""   # an inline script's is None or "", by who added it
    return (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _dedupe(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept   # in place: it is the builder's list, which MathJax's handler appends to later


def setup(app):
    # early: handlers of this event run until one returns a value, and some later ones do
    app.connect("html-page-context", _dedupe, priority=100)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
