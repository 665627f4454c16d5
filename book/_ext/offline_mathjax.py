"""Sphinx extension of the contrastlab book: render the math with a local MathJax, no CDN.

The built HTML must show its equations on a machine without internet (the browser test runs
on one, and so may a reader). When a MathJax 2.7 tree is found (Debian/Ubuntu package
``libjs-mathjax``: /usr/share/javascript/mathjax, or the folder named by $CONTRASTLAB_MATHJAX),
the pages load it from ``_static/mathjax/`` and the parts of it they need are copied there
after the build (about 1.5 MB: the TeX input, CommonHTML output and its web fonts).
Without one, Sphinx's default stays: MathJax 3 from a CDN, which works wherever the reader is
online. ``CONTRASTLAB_MATHJAX=cdn`` forces the CDN.

Enabled from _config.yml (``sphinx: local_extensions: {offline_mathjax: book/_ext}``).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

SEARCHED = ("/usr/share/javascript/mathjax", "/usr/share/mathjax", "/usr/share/nodejs/mathjax")
# What the pages need from the tree, relative to its root: the loader, the combined TeX + CommonHTML
# configuration, the TeX input, the CommonHTML output (and the fast preview run before it), the
# extensions TeX loads on demand (\boldsymbol, \cancel, ...), the web fonts and English messages.
NEEDED = ("MathJax.js", "config/TeX-AMS_CHTML.js", "config/local", "extensions", "jax/element",
          "jax/input/TeX", "jax/output/CommonHTML", "jax/output/PreviewHTML", "fonts/HTML-CSS/TeX/woff",
          "localization/en")
TARGET = "mathjax"  # under _static
# MathJax 2 reads only what myst-parser marks as math (the classes it gives math nodes), with the
# delimiters Sphinx writes; equation numbers come from Sphinx, not from MathJax.
MATHJAX2_CONFIG = {
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                "processEscapes": True, "processEnvironments": True, "processRefs": False,
                "processClass": "tex2jax_process|mathjax_process|math|output_area",
                "ignoreClass": "tex2jax_ignore|mathjax_ignore"},
    "TeX": {"equationNumbers": {"autoNumber": "none"}},
    "messageStyle": "none",
    "showMathMenu": False,
}


def find_mathjax() -> Path | None:
    """The local MathJax 2 tree to use, or None for the CDN."""
    chosen = os.environ.get("CONTRASTLAB_MATHJAX", "").strip()
    if chosen.lower() == "cdn":
        return None
    for folder in ([chosen] if chosen else SEARCHED):
        if (Path(folder) / "MathJax.js").is_file() and (Path(folder) / "config" / "TeX-AMS_CHTML.js").is_file():
            return Path(folder)
    if chosen:
        logger.warning(f"CONTRASTLAB_MATHJAX={chosen} holds no MathJax 2 tree (MathJax.js, config/TeX-AMS_CHTML.js)")
    return None


def _configure(app, config) -> None:
    source = find_mathjax()
    app.offline_mathjax_source = source
    if source is None:
        logger.info("offline_mathjax: no local MathJax found; the pages load MathJax 3 from its CDN")
        return
    config.mathjax_path = f"{TARGET}/MathJax.js?config=TeX-AMS_CHTML"
    config.mathjax2_config = MATHJAX2_CONFIG
    config.mathjax3_config = None
    config.myst_update_mathjax = False   # myst-parser would otherwise add a MathJax 3 configuration
    logger.info(f"offline_mathjax: the pages load MathJax 2 from _static/{TARGET} (copied from {source})")


def _copy(app, exception) -> None:
    source = getattr(app, "offline_mathjax_source", None)
    if exception is not None or source is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / TARGET
    for part in NEEDED:
        src, dst = source / part, target / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)   # follows symlinks (Debian links the fonts)
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def setup(app):
    app.connect("config-inited", _configure, priority=900)   # after the other extensions' defaults
    app.connect("build-finished", _copy)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
