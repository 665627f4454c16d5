"""Figures for the book, drawn from result records (`contrastlab.experiments.run`) and analyses.

Every function returns a `matplotlib.figure.Figure` built without pyplot: nothing is shown,
nothing piles up in pyplot's global state, and ``fig.savefig("x.png")`` works on any backend,
Agg included; in a notebook the returned figure displays itself as a PNG, once. Figures made from records
carry a small caption naming where the numbers come from (budget and device of the runs,
e.g. "source: budget cpu · cpu (x86_64, 2 threads)"); figures from arrays take ``source=``.

``records`` is a list of result records, or of ``(label, record)`` pairs as returned by
`contrastlab.report.compare`, or a dict ``{label: record}``. Records are labelled by their
method name unless a label is given; ``labels=`` overrides either.

Importing this module imports matplotlib (``import contrastlab`` does not).
"""
from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from contrastlab._validate import check_choice, shape_str
from contrastlab.labels import device_label, name

# Legends, captions and annotations: readable when a figure is scaled to the page's column
# (a two-panel figure of 8.4 inches at 100 dpi shows at about 0.8 of its size there).
SMALL = 9

# --------------------------------------------------------------------------------------------
# records, arrays and captions


def _records(records, labels: Sequence[str] | None = None) -> list[tuple[str, dict]]:
    """Normalise the accepted forms of ``records`` to [(label, record)], checking each record."""
    if isinstance(records, Mapping):
        items = [(None, records)] if "config" in records else list(records.items())
    elif isinstance(records, Sequence) and not isinstance(records, str):
        items = [r if isinstance(r, tuple) and len(r) == 2 else (None, r) for r in records]
    else:
        raise TypeError(f"records must be a list of result records or a dict of them, got {type(records).__name__}")
    if not items:
        raise ValueError("records must hold at least one result record, got none")
    out = []
    for i, (label, rec) in enumerate(items):
        if not isinstance(rec, Mapping) or not isinstance(rec.get("config"), Mapping) \
                or "name" not in rec["config"].get("method", {}):
            raise TypeError(f"records[{i}] must be a result record (a dict with 'config' holding 'method.name', "
                            f"plus 'metrics', 'curves', 'provenance'), got {type(rec).__name__}")
        out.append((str(label) if label is not None else rec["config"]["method"]["name"], rec))
    if labels is not None:
        if isinstance(labels, str) or len(labels) != len(out):
            raise ValueError(f"labels must be a sequence of {len(out)} strings, one per record, got {labels!r}")
        out = [(str(lab), rec) for lab, (_, rec) in zip(labels, out)]
    return out


def source_caption(records) -> str | None:
    """"source: budget B · DEVICE" for each distinct (budget, device) in the records' provenance."""
    parts: list[str] = []
    for _, rec in _records(records):
        prov = rec.get("provenance") or {}
        budget = prov.get("budget", rec["config"].get("budget"))
        device = device_label(prov["device"]) if prov.get("device") else None
        text = " · ".join(p for p in (f"budget {budget}" if budget else None, device) if p)
        if text and text not in parts:
            parts.append(text)
    return "source: " + "; ".join(parts) if parts else None


def _config_value(rec: dict, dotted: str, index: int):
    """record["config"]["a"]["b"] for "a.b"; lists become tuples so they can key a group."""
    node = rec["config"]
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            have = ", ".join(map(repr, node)) if isinstance(node, Mapping) else type(node).__name__
            raise KeyError(f"records[{index}] has no config key {dotted!r} (at {part!r} found: {have})")
        node = node[part]
    return tuple(node) if isinstance(node, list) else node


def _metric(rec: dict, name: str):
    """record["metrics"][name] if there, else the last value of record["curves"][name], else None."""
    if name in (rec.get("metrics") or {}):
        return float(rec["metrics"][name])
    curve = (rec.get("curves") or {}).get(name)
    return float(curve[-1]) if curve else None


def _array(name: str, x, ndim: int | tuple[int, ...]) -> np.ndarray:
    """A float64 numpy copy of a tensor or array-like, of the given rank(s)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in ranks:
        raise ValueError(f"{name} must have {' or '.join(map(str, ranks))} dimensions, got shape {shape_str(a.shape)}")
    return a


def _labels_array(name: str, labels, n: int) -> np.ndarray:
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one label per point, got {shape_str(y.shape)}")
    return y


class _Figure(Figure):
    """A Figure that shows itself as a PNG in Jupyter even where pyplot (and so the inline backend) was never loaded."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


def _figure(nrows: int = 1, ncols: int = 1, *, width: float = 4.2, height: float = 3.3, caption=None):
    """A constrained-layout figure with a grid of axes and, if given, a caption along the bottom."""
    fig = _Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if caption:
        strip = 0.25 / (height * nrows)                      # a quarter inch for the caption
        fig.get_layout_engine().set(rect=(0, strip, 1, 1 - strip))
        fig.text(0.01, 0.01, caption, fontsize=SMALL, color="0.35", ha="left", va="bottom")
    return fig, axes


def _sort_key(value):
    """Numbers in numeric order before everything else in text order."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


# --------------------------------------------------------------------------------------------
# features on the circle (Wang & Isola 2020, Fig. 1)


def _von_mises_kde(angles: np.ndarray, grid: np.ndarray, kappa: float) -> np.ndarray:
    """Density on the circle, mean over points of the von Mises kernel exp(kappa cos(t - a)) / (2 pi I0(kappa))."""
    from scipy.special import i0e  # exp(-kappa) I0(kappa): no overflow at large kappa
    total = np.zeros_like(grid)
    for start in range(0, len(angles), 4096):
        diff = grid[:, None] - angles[None, start:start + 4096]          # (G, chunk)
        total += np.exp(kappa * (np.cos(diff) - 1.0)).sum(axis=1)
    return total / (len(angles) * 2 * math.pi * i0e(kappa))


def circle_features(features_by_name: Mapping, *, kappa: float = 20.0, class_names: Sequence[str] | None = None,
                    source: str | None = None) -> Figure:
    """Features on the unit circle S^1, one column per encoder: the analogue of Wang & Isola (2020), Fig. 1.

    Top row: the density of all points on the circle (a von Mises kernel density estimate over
    the angle), drawn as a ring coloured by density with the density also as a radial outline;
    one colour scale for all encoders, so columns compare. Bottom row: the density of the angle
    per class. Uniform features give an evenly coloured ring; aligned and uniform ones give
    classes that occupy separate arcs.

    Args:
        features_by_name: ``{name: (features, labels)}``; features (N, 2) (L2-normalised here)
            or angles (N,) in radians; labels (N,) integer classes. Tensors or arrays. A value
            may instead be a result record made with ``eval.save_z`` and a 2-d z: its
            ``z_test`` and ``z_test_labels`` are drawn, and its provenance goes in the caption.
        kappa: concentration of the von Mises kernel (larger: sharper; 20 is about 0.22 rad wide).
        class_names: legend names of classes 0..C-1.
        source: caption text (where the features come from).

    Returns:
        a Figure with 2 rows and one column per encoder.
    """
    if not isinstance(features_by_name, Mapping) or not features_by_name:
        raise TypeError(f"features_by_name must be a non-empty dict {{name: (features, labels)}}, "
                        f"got {type(features_by_name).__name__}")
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0 < kappa < math.inf:
        raise ValueError(f"kappa must be a finite number > 0, got {kappa!r}")
    grid = np.linspace(-math.pi, math.pi, 361)
    columns, records = [], []
    for name, pair in features_by_name.items():
        if isinstance(pair, Mapping):
            if "z_test" not in pair or "z_test_labels" not in pair:
                raise ValueError(f"features_by_name[{name!r}] is a record without 'z_test': run it with "
                                 f"eval.save_z > 0 (and a 2-d z, e.g. method.proj_dim=2)")
            records.append(pair)
            pair = (pair["z_test"], pair["z_test_labels"])
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"features_by_name[{name!r}] must be a pair (features, labels), got {type(pair).__name__}")
        feats = _array(f"features_by_name[{name!r}] features", pair[0], (1, 2))
        if feats.ndim == 2 and feats.shape[1] != 2:
            raise ValueError(f"features_by_name[{name!r}] features must be (N, 2) points or (N,) angles, "
                             f"got shape {shape_str(feats.shape)}")
        angles = np.arctan2(feats[:, 1], feats[:, 0]) if feats.ndim == 2 else np.angle(np.exp(1j * feats))
        if len(angles) == 0:
            raise ValueError(f"features_by_name[{name!r}] features must hold at least one point, got none")
        labels = _labels_array(f"features_by_name[{name!r}] labels", pair[1], len(angles))
        columns.append((str(name), angles, labels, _von_mises_kde(angles, grid, kappa)))
    if source is None and records:
        source = source_caption(records)
    vmax = max(c[3].max() for c in columns)
    classes = sorted(set(np.concatenate([c[2] for c in columns]).tolist()))
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    fig, axes = _figure(2, len(columns), width=3.0, height=3.0, caption=source)
    norm = Normalize(0.0, vmax)
    ring = None
    for col, (name, angles, labels, density) in enumerate(columns):
        top, bottom = axes[0, col], axes[1, col]
        pts = np.stack([np.cos(grid), np.sin(grid)], axis=1)                  # (G, 2) on the circle
        ring = LineCollection(np.stack([pts[:-1], pts[1:]], axis=1), cmap="viridis", norm=norm, linewidths=7)
        ring.set_array((density[:-1] + density[1:]) / 2)
        top.add_collection(ring)
        radius = 1.12 + 0.5 * density / vmax
        top.plot(radius * np.cos(grid), radius * np.sin(grid), color="0.3", lw=0.8)
        top.set(xlim=(-1.7, 1.7), ylim=(-1.7, 1.7), aspect="equal", title=name)
        top.set_axis_off()
        for k, c in enumerate(classes):
            mask = labels == c
            if mask.any():
                name_c = class_names[int(c)] if class_names is not None else str(c)
                bottom.plot(grid, _von_mises_kde(angles[mask], grid, kappa), color=palette(k % palette.N),
                            lw=1.2, label=name_c)
        bottom.set(xlim=(-math.pi, math.pi), xlabel="angle (rad)", xticks=[-math.pi, 0, math.pi])
        bottom.set_xticklabels(["-π", "0", "π"])
        if col == 0:
            bottom.set_ylabel("density per class")
    fig.colorbar(ring, ax=axes[0, :].tolist(), shrink=0.7, label="density on the circle")
    axes[1, -1].legend(fontsize=SMALL, loc="center left", bbox_to_anchor=(1.02, 0.5), title="class")
    return fig


# --------------------------------------------------------------------------------------------
# records: alignment and uniformity, curves, ablations


def align_uniform_scatter(records, *, color: str = "knn_acc", labels: Sequence[str] | None = None) -> Figure:
    """Alignment (x) against uniformity (y) of each run, coloured by its accuracy (Wang & Isola 2020, Fig. 5).

    Alignment and uniformity are read from ``record["metrics"]`` when they are there, else
    from the last epoch of ``record["curves"]`` (the training monitor: L2-normalised h on two
    views of one batch). Lower is better on both axes, so good runs sit at the bottom left.
    Records without both (the baselines) are left out.

    Args:
        records: result records (see the module docstring).
        color: the accuracy to colour by, a key of ``record["metrics"]``, e.g. "knn_acc" or "linear_acc".
        labels: overrides of the point labels, one per record.

    Returns:
        a Figure with one axes and a colour bar.
    """
    items = _records(records, labels)
    points = []
    for label, rec in items:
        a, u, acc = _metric(rec, "alignment"), _metric(rec, "uniformity"), _metric(rec, color)
        if a is not None and u is not None:
            points.append((label, a, u, acc))
    if not points:
        raise ValueError("none of the records has both alignment and uniformity (in 'metrics' or 'curves')")
    if all(p[3] is None for p in points):
        raise ValueError(f"color {color!r} is not a metric of any record with alignment and uniformity")
    used = [rec for _, rec in items if _metric(rec, "alignment") is not None and _metric(rec, "uniformity") is not None]
    fig, axes = _figure(caption=source_caption(used), width=5.0, height=4.0)
    ax = axes[0, 0]
    acc = np.array([np.nan if p[3] is None else p[3] for p in points])
    dots = ax.scatter([p[1] for p in points], [p[2] for p in points], c=acc, cmap="viridis", s=60,
                      edgecolors="k", linewidths=0.5, plotnonfinite=True)
    ax.set(xlabel="alignment (lower: positives closer)", ylabel="uniformity (lower: more uniform)",
           title="Alignment and uniformity")
    _annotate_apart(ax, [(label, a, u) for label, a, u, _ in points])
    fig.colorbar(dots, ax=ax, label=name(color))
    return fig


def _annotate_apart(ax, points: list[tuple[str, float, float]], fontsize: float = SMALL) -> None:
    """Label each point beside it, moving a label down a line at a time while it overlaps one
    already placed (labels of nearby points otherwise print over each other); a moved label
    gets a thin line back to its point."""
    ax.autoscale_view()                                # settle the limits, so positions are final
    canvas = ax.figure.canvas if hasattr(ax.figure.canvas, "get_renderer") else FigureCanvasAgg(ax.figure)
    renderer = canvas.get_renderer()
    line = fontsize * 1.2                              # one text line, in points
    placed = []
    for label, x, y in sorted(points, key=lambda p: -p[2]):
        dy = 4.0
        while True:
            probe = ax.annotate(label, (x, y), xytext=(5, dy), textcoords="offset points", fontsize=fontsize)
            box = probe.get_window_extent(renderer).expanded(1.02, 1.1)
            probe.remove()
            if not any(box.overlaps(other) for other in placed) or dy < -20 * line:
                break
            dy -= line
        placed.append(box)
        ax.annotate(label, (x, y), xytext=(5, dy), textcoords="offset points", fontsize=fontsize,
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if dy < 0 else None)


def training_curves(records, keys: Sequence[str] = ("loss", "knn_acc", "alignment", "uniformity"), *,
                    labels: Sequence[str] | None = None, ncols: int = 2) -> Figure:
    """One panel per key of ``record["curves"]``, one line per record, against the epoch.

    Panels are titled with the reader's names of the keys (`contrastlab.labels.name`). The
    ``knn_acc`` curve is the training monitor: a kNN vote of ``train.monitor_train`` training
    images (5,000 by default) on ``train.monitor_test`` test images (1,000), with the final
    evaluation's k. With a bank twelve times smaller than the final kNN's 60,000 images, the same
    k reaches further from each query, so the monitor reads several points below the record's
    final ``knn_acc``; its panel's title says so.

    Args:
        records: result records (see the module docstring); records without curves are skipped.
        keys: the per-epoch series to draw, e.g. "loss", "knn_acc", "feature_std", "effective_rank",
            "alignment", "uniformity", "embed_std", "lr".
        labels: overrides of the line labels, one per record.
        ncols: panels per row.

    Returns:
        a Figure with one axes per key (unused grid cells hidden).
    """
    items = _records(records, labels)
    if isinstance(keys, str) or not keys:
        raise ValueError(f"keys must be a non-empty sequence of curve names, got {keys!r}")
    ncols = max(1, min(ncols, len(keys)))
    nrows = math.ceil(len(keys) / ncols)
    used = [rec for _, rec in items if any((rec.get("curves") or {}).get(k) for k in keys)]
    if not used:
        raise ValueError(f"no record has any of the curves {list(keys)}")
    fig, axes = _figure(nrows, ncols, caption=source_caption(used))
    palette = colormaps["tab10"]
    for i, key in enumerate(keys):
        ax = axes.flat[i]
        for j, (label, rec) in enumerate(items):
            curves = rec.get("curves") or {}
            ys = curves.get(key)
            if not ys:
                continue
            xs = curves.get("epoch") if len(curves.get("epoch") or []) == len(ys) else range(1, len(ys) + 1)
            ax.plot(list(xs), ys, marker="o" if len(ys) <= 20 else None, ms=3, color=palette(j % 10), label=label)
        if not ax.lines:
            ax.text(0.5, 0.5, f"no record has curves[{key!r}]", ha="center", va="center",
                    transform=ax.transAxes, fontsize=SMALL, color="0.4")
        ax.set(title=name(key), xlabel="epoch")
        if key == "knn_acc":                          # the monitor, not the final kNN: say why it reads lower
            ax.set_title(_monitor_note(used[0]), fontsize=SMALL)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    next(ax for ax in axes.flat if ax.lines).legend(fontsize=SMALL)
    return fig


def _monitor_note(record: dict) -> str:
    """Why the kNN monitor reads below the final kNN accuracy: it runs on subsets."""
    train, ev = record["config"].get("train") or {}, record["config"].get("eval") or {}
    bank, test, k = train.get("monitor_train"), train.get("monitor_test"), ev.get("knn_k", 200)
    if not bank or not test:
        return f"kNN monitor: subsets, k = {k}\n(the final kNN, on all images, reads higher)"
    return (f"kNN monitor: {bank:,} train / {test:,} test images, k = {k}\n"
            "(the final kNN, on all images, reads higher)")


def _grouped(items: list[tuple[str, dict]], keys: Sequence[str], metric: str) -> dict[tuple, list[float]]:
    """{values of the dotted config keys: [metric of each record]}, one record per seed in a group."""
    groups: dict[tuple, list[float]] = {}
    seeds: dict[tuple, dict] = {}
    for i, (_, rec) in enumerate(items):
        key = tuple(_config_value(rec, k, i) for k in keys)
        value = _metric(rec, metric)
        if value is None:
            raise KeyError(f"records[{i}] has no metric {metric!r}; it has {', '.join(rec.get('metrics') or {})}")
        seed = (rec["config"].get("train") or {}).get("seed")
        if seed is not None and seed in seeds.setdefault(key, {}):
            raise ValueError(f"records[{seeds[key][seed]}] and records[{i}] share the group {key} and the seed "
                             f"{seed}; add the config key they differ in to the grouping keys")
        seeds[key][seed] = i
        groups.setdefault(key, []).append(value)
    return groups


def _mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single seed, which has no spread to show)."""
    return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def _spread_text(m: float, s: float, n: int) -> str:
    return f"{m:.3f}\n±{s:.3f} (n={n})" if n > 1 else f"{m:.3f}\n(one seed)"


def ablation_bars(records, by: str | Sequence[str] = "method.temperature", metric: str = "knn_acc") -> Figure:
    """Mean and standard error over seeds of ``metric``, one bar per value of the config key(s) ``by``.

    Records are grouped by ``record["config"]`` at the dotted key(s), e.g. "method.temperature"
    reads ``record["config"]["method"]["temperature"]``; the records of a group should differ
    only in ``train.seed`` (two with the same seed in one group are an error). Pass several keys,
    e.g. ``("method.name", "method.temperature")``, to keep methods apart.

    Args:
        records: result records (see the module docstring).
        by: a dotted config key or a sequence of them.
        metric: a key of ``record["metrics"]`` (or the last value of a curve).

    Returns:
        a Figure with one axes; the error bars are the standard error of the mean (none for a single seed).
    """
    keys = (by,) if isinstance(by, str) else tuple(by)
    items = _records(records)
    groups = _grouped(items, keys, metric)
    order = sorted(groups, key=lambda k: tuple(map(_sort_key, k)))
    stats = [_mean_se(groups[k]) for k in order]
    fig, axes = _figure(width=max(4.0, 0.8 * len(order) + 1.5), caption=source_caption([r for _, r in items]))
    ax = axes[0, 0]
    xs = np.arange(len(order))
    ax.bar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], capsize=4, color="tab:blue", alpha=0.8)
    for x, (m, s), k in zip(xs, stats, order):
        n = len(groups[k])
        ax.annotate(f"{m:.3f}\nn={n}" if n > 1 else f"{m:.3f}\none seed", (x, m + s), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=SMALL)
    ax.set_xticks(xs, [", ".join(map(str, k)) for k in order])
    ax.set(xlabel=", ".join(map(name, keys)), ylabel=name(metric))
    single = all(len(v) == 1 for v in groups.values())
    ax.set_title(f"{name(metric)}: one seed each" if single else f"{name(metric)}: mean ± SE over seeds", fontsize=10)
    ax.margins(y=0.15)
    return fig


def ablation_heatmap(records, x: str = "method.temperature", y: str = "train.batch_size",
                     metric: str = "knn_acc") -> Figure:
    """A grid of ``metric`` (mean ± SE over seeds) over two config keys; missing cells stay blank.

    Args:
        records: result records (see the module docstring).
        x: dotted config key along the columns.
        y: dotted config key along the rows.
        metric: a key of ``record["metrics"]`` (or the last value of a curve).

    Returns:
        a Figure with one axes and a colour bar; each cell is annotated with mean, SE and n
        (a single seed says so instead of printing a spread of zero).
    """
    items = _records(records)
    groups = _grouped(items, (x, y), metric)
    xs = sorted({k[0] for k in groups}, key=_sort_key)
    ys = sorted({k[1] for k in groups}, key=_sort_key)
    grid = np.full((len(ys), len(xs)), np.nan)
    fig, axes = _figure(width=max(4.5, 1.0 * len(xs) + 2), height=max(3.3, 0.6 * len(ys) + 1.5),
                        caption=source_caption([r for _, r in items]))
    ax = axes[0, 0]
    for (vx, vy), values in groups.items():
        grid[ys.index(vy), xs.index(vx)] = _mean_se(values)[0]
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", origin="lower", aspect="auto")
    mid = np.nanmin(grid) + 0.5 * (np.nanmax(grid) - np.nanmin(grid))
    for (vx, vy), values in groups.items():
        m, s = _mean_se(values)
        ax.text(xs.index(vx), ys.index(vy), _spread_text(m, s, len(values)), ha="center", va="center",
                fontsize=SMALL, color="white" if m < mid else "black")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    single = all(len(v) == 1 for v in groups.values())
    ax.set(xlabel=name(x), ylabel=name(y),
           title=f"{name(metric)} (one seed each)" if single else f"{name(metric)} (mean ± SE over seeds)")
    fig.colorbar(image, ax=ax, label=name(metric))
    return fig


# --------------------------------------------------------------------------------------------
# arrays: embeddings and similarities


def embedding_2d(features, labels, *, method: str = "tsne", n: int = 2000, seed: int = 0,
                 class_names: Sequence[str] | None = None, source: str | None = None) -> Figure:
    """A 2-D map of features coloured by class: t-SNE (scikit-learn) or UMAP (umap-learn).

    At most ``n`` points are drawn, a subsample without replacement fixed by ``seed``, which
    also seeds t-SNE / UMAP, so the map is reproducible. t-SNE starts from PCA; its perplexity
    is 30, lowered for tiny samples. UMAP uses 15 neighbours and needs the umap-learn package.

    Args:
        features: (N, D) tensor or array, e.g. from `contrastlab.metrics.extract_features`.
        labels: (N,) integer classes.
        method: "tsne" or "umap".
        n: the largest number of points to embed (>= 3).
        seed: subsample and embedding seed.
        class_names: legend names of classes 0..C-1.
        source: caption text (where the features come from).

    Returns:
        a Figure with one axes and a class legend.
    """
    check_choice("method", method, ("tsne", "umap"))
    x = _array("features", features, 2)
    y = _labels_array("labels", labels, x.shape[0])
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"n must be an int >= 3, got {n!r}")
    if x.shape[0] < 3:
        raise ValueError(f"features must hold at least 3 points to embed, got shape {shape_str(x.shape)}")
    rng = np.random.default_rng(seed)
    if x.shape[0] > n:
        keep = np.sort(rng.choice(x.shape[0], size=n, replace=False))
        x, y = x[keep], y[keep]
    m = x.shape[0]
    if method == "tsne":
        from sklearn.manifold import TSNE
        xy = TSNE(n_components=2, perplexity=min(30.0, (m - 1) / 3), init="pca", random_state=seed).fit_transform(x)
    else:
        try:
            import umap
        except ImportError as err:
            raise ImportError("embedding_2d(method='umap') needs the umap-learn package: "
                              "pip install umap-learn (or use method='tsne')") from err
        with warnings.catch_warnings():   # umap says n_jobs becomes 1 because random_state is set
            warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
            xy = umap.UMAP(n_components=2, n_neighbors=min(15, m - 1), random_state=seed).fit_transform(x)
    classes = sorted(set(y.tolist()))
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    fig, axes = _figure(width=5.5, height=4.5, caption=source)
    ax = axes[0, 0]
    for k, c in enumerate(classes):
        mask = y == c
        name = class_names[int(c)] if class_names is not None else str(c)
        ax.scatter(xy[mask, 0], xy[mask, 1], s=4 if m > 500 else 12, color=palette(k % palette.N), label=name)
    ax.set(xticks=[], yticks=[], title=f"{'t-SNE' if method == 'tsne' else 'UMAP'} of {m} points")
    ax.legend(fontsize=SMALL, markerscale=2, loc="center left", bbox_to_anchor=(1.01, 0.5), title="class")
    return fig


def similarity_matrix(z1, z2, *, mask_self: bool = True, source: str | None = None) -> Figure:
    """The (2N, 2N) cosine-similarity matrix of a batch of views, as NT-Xent sees it (SimCLR, Eq. 1).

    Rows and columns list the first views of the N images, then their second views, so the
    positive pairs lie on the two diagonals offset by N (outlined for N <= 32); every other
    off-diagonal entry is a negative. The self-similarities (always 1, and not part of the
    loss) are greyed out with ``mask_self``.

    Args:
        z1: (N, D) projections of the first views (tensor or array; normalised here).
        z2: (N, D) projections of the second views.
        mask_self: grey out the main diagonal.
        source: caption text.

    Returns:
        a Figure with one axes and a colour bar; its image holds the (2N, 2N) similarities.
    """
    a, b = _array("z1", z1, 2), _array("z2", z2, 2)
    if a.shape != b.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {shape_str(a.shape)} and {shape_str(b.shape)}")
    n = a.shape[0]
    z = np.concatenate([a, b])                                        # (2N, D), view-1 block then view-2 block
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    sim = z @ z.T                                                      # (2N, 2N)
    shown = np.ma.masked_where(np.eye(2 * n, dtype=bool), sim) if mask_self else sim
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.8")
    fig, axes = _figure(width=5.0, height=4.2, caption=source)
    ax = axes[0, 0]
    image = ax.imshow(shown, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.axhline(n - 0.5, color="k", lw=0.8)                              # block borders
    ax.axvline(n - 0.5, color="k", lw=0.8)
    if n <= 32:
        rows = np.arange(2 * n)
        ax.plot((rows + n) % (2 * n), rows, ls="none", marker="s", ms=max(2.0, 120 / n), mfc="none", mec="k",
                mew=0.6)
    ticks = [(n - 1) / 2, n + (n - 1) / 2]
    ax.set_xticks(ticks, ["view 1", "view 2"])
    ax.set_yticks(ticks, ["view 1", "view 2"])
    ax.set_title(f"cosine similarity of 2N = {2 * n} views (positives at offset ±N)", fontsize=9)
    fig.colorbar(image, ax=ax, label="cosine similarity")
    return fig


# --------------------------------------------------------------------------------------------
# analyses (contrastlab.analysis)


def _check_result(result, analysis: str, producer: str) -> None:
    if not isinstance(result, Mapping) or result.get("analysis") != analysis:
        got = result.get("analysis") if isinstance(result, Mapping) else type(result).__name__
        raise ValueError(f"result must be the dict returned by contrastlab.analysis.{producer}, got {got!r}")


def mi_bound(result: Mapping) -> Figure:
    """The InfoNCE estimate of mutual information against the batch size N (`analysis.mi_bound_experiment`).

    One line per true I (the dashed line of the same colour), the band ±2 standard errors, and
    log N dotted: the estimate climbs along log N while log N < I and stays below I after
    (van den Oord et al. 2018; Poole et al. 2019).

    Args:
        result: the dict returned by `contrastlab.analysis.mi_bound_experiment`.

    Returns:
        a Figure with one axes, N on a log-2 axis.
    """
    _check_result(result, "infonce_mi_bound", "mi_bound_experiment")
    caption = (f"analysis: {result['critic']} critic, D = {result['dim']}, "
               f"{result['eval_samples']} pairs per point, seed {result['seed']}")
    fig, axes = _figure(width=5.5, height=4.0, caption=caption)
    ax = axes[0, 0]
    ns = np.array(result["batch_sizes"])
    ax.plot(ns, result["log_n"], color="k", ls=":", label="log N")
    palette = colormaps["viridis"]
    for k, run in enumerate(result["runs"]):
        color = palette(k / max(1, len(result["runs"]) - 1) * 0.9)
        est, err = np.array(run["estimate"]), 2 * np.array(run["stderr"])
        ax.fill_between(ns, est - err, est + err, color=color, alpha=0.2, lw=0)
        ax.plot(ns, est, marker="o", ms=3, color=color, label=f"I = {run['true_mi']:.3g} nats")
        ax.axhline(run["true_mi"], color=color, ls="--", lw=0.9)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(int(v)) for v in ns])
    ax.set(xlabel="batch size N", ylabel="nats", title="InfoNCE estimate log N − L ≤ min(I, log N)")
    ax.legend(fontsize=SMALL)
    return fig


def gradient_weights(result: Mapping) -> Figure:
    """Gradient weight of a negative against its similarity, one line per temperature (`analysis.gradient_weight_curves`).

    Left: the weight ``|dl/ds_j|`` on a log scale; right: each negative's share of the total push
    on the negatives. A small tau concentrates the gradient on the hardest negatives
    (Wang & Liu 2021; the "built-in focal" behaviour of Khosla et al. 2020, Sec. 3.2.3).

    Args:
        result: the dict returned by `contrastlab.analysis.gradient_weight_curves`.

    Returns:
        a Figure with two axes.
    """
    _check_result(result, "negative_gradient_weights", "gradient_weight_curves")
    caption = (f"analysis: {result['loss']}, gradient w.r.t. the {result['wrt']}, "
               f"positive at s = {result['positive']}")
    fig, axes = _figure(1, 2, caption=caption)
    s = np.array(result["similarity"])
    palette = colormaps["viridis"]
    taus = result["temperatures"]
    for k, tau in enumerate(taus):
        color = palette(k / max(1, len(taus) - 1) * 0.9)
        axes[0, 0].plot(s, result["weights"][k], color=color, label=f"τ = {tau:g}")
        axes[0, 1].plot(s, result["share"][k], color=color, label=f"τ = {tau:g}")
    for ax in axes[0]:
        ax.axvline(result["positive"], color="0.5", ls=":", lw=1)
        ax.set(xlabel="similarity of the negative to the anchor")
    axes[0, 0].set(yscale="log", ylabel="gradient weight |∂ℓ/∂s|", title="weight per negative")
    axes[0, 1].set(ylabel="share of the negatives' gradient", title="where the push goes")
    axes[0, 0].legend(fontsize=SMALL)
    return fig


__all__ = ["ablation_bars", "ablation_heatmap", "align_uniform_scatter", "circle_features", "embedding_2d",
           "gradient_weights", "mi_bound", "similarity_matrix", "source_caption", "training_curves"]


# --------------------------------------------------------------------------------------------
# the measuring instrument: references with their seed bands, and the claims' arms against them

REFERENCE_NAMES = {"random_init": "untrained encoder", "raw_pixels": "raw pixels",
                   "supervised": "supervised (cross-entropy)", "simclr": "SimCLR (reference recipe)"}
_BAND_COLOURS = {"random_init": "tab:gray", "raw_pixels": "tab:brown", "supervised": "tab:green", "simclr": "tab:blue"}


def _band(ax, values, colour: str, label: str) -> None:
    mean = float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    ax.axhspan(mean - sd, mean + sd, color=colour, alpha=0.15, lw=0)
    ax.axhline(mean, color=colour, ls="--", lw=1, label=f"{label} (mean ± SD, n = {len(values)})")


def reference_bands(references: Mapping, names: Mapping | None = None, *, source: str | None = None) -> Figure:
    """The instrument's references: every seed's value as a point, the mean ± SD as a band.

    Args:
        references: ``{"random_init": [per-seed values], ...}`` (a scorecard's ``instrument.references``).
        names: display names by key (default `REFERENCE_NAMES`).
        source: the caption.
    """
    names = {**REFERENCE_NAMES, **(names or {})}
    keys = [k for k, v in references.items() if len(v)]
    if not keys:
        raise ValueError("references must hold at least one reference with values, got none")
    fig, axes = _figure(width=6.4, height=3.4, caption=source)
    ax = axes[0, 0]
    for i, key in enumerate(keys):
        values = np.asarray(references[key], dtype=float)
        colour = _BAND_COLOURS.get(key, "tab:purple")
        mean, sd = values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0
        ax.bar(i, 2 * sd, bottom=mean - sd, width=0.5, color=colour, alpha=0.2)
        ax.hlines(mean, i - 0.25, i + 0.25, color=colour, lw=2)
        ax.scatter(i + np.linspace(-0.12, 0.12, len(values)), values, color=colour, s=18, zorder=3)
    ax.set_xticks(range(len(keys)), [names.get(k, k) for k in keys], fontsize=9)
    ax.set_ylabel("linear-probe accuracy (test)")
    ax.set_ylim(0, 1)
    return fig


def claim_arms(card: Mapping, chapter: str | None = None, *, columns: int = 3) -> Figure:
    """Each accuracy claim of ``chapter`` measured on the instrument: both arms' per-seed values
    (points) and means (bars), over the untrained, raw-pixel and supervised references as bands.

    Claims whose arms are differences of runs, analyses or another dataset are left to the
    chapter's table (their values are not on the references' scale).
    """
    ins = card["instrument"]
    setting = f"{ins['dataset']}, budget {ins['budget']}"
    claims = [c for c in card["claims"] if (chapter is None or c["chapter"] == chapter)
              and c["setting"] == setting and c["metric"].startswith("linear_acc")
              and not any(arm["difference"] for arm in c["arms"])]
    if not claims:
        raise ValueError(f"no accuracy claim of chapter {chapter!r} on the instrument has its records yet")
    rows = math.ceil(len(claims) / columns)
    fig, axes = _figure(rows, min(columns, len(claims)), width=3.3, height=3.0,
                        caption=f"source: the {ins['name']} instrument, {setting}; one point a seed")
    axes = axes.ravel()
    refs = ins["references"]
    for ax, c in zip(axes, claims):
        for key in ("random_init", "raw_pixels", "supervised"):
            if refs.get(key):
                _band(ax, refs[key], _BAND_COLOURS[key], REFERENCE_NAMES[key])
        for i, arm in enumerate(c["arms"]):
            values = np.asarray(arm["values"], dtype=float)
            ax.bar(i, values.mean(), width=0.55, color=("tab:blue", "tab:orange")[i], alpha=0.6)
            ax.scatter(i + np.linspace(-0.1, 0.1, len(values)), values, color="black", s=10, zorder=3)
        ax.set_xticks([0, 1], [textwrap_label(a["name"]) for a in c["arms"]], fontsize=SMALL)
        ax.set_title(f"{textwrap_label(c['claim'], 34)}\n{c['verdict']}", fontsize=SMALL)
        ax.set_ylim(0, 1)
    for ax in axes[len(claims):]:
        ax.set_visible(False)
    axes[0].set_ylabel("linear-probe accuracy (test)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncol=3, fontsize=SMALL, frameon=False)
    return fig


def textwrap_label(text: str, width: int = 16) -> str:
    """``text`` broken into lines of at most ``width`` characters (tick labels and titles)."""
    import textwrap
    return "\n".join(textwrap.wrap(text, width)) or text
