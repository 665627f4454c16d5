"""Tests for contrastlab.plots: every figure builds from small synthetic records or arrays and saves as PNG."""
import math
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from contrastlab import analysis, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CPU = "cpu (x86_64, 2 threads)"


def make_record(method="simclr", *, temperature=0.2, batch_size=256, seed=0, knn=0.8, linear=0.85, epochs=3,
                device=CPU, curves=True):
    """A result record shaped like those of contrastlab.experiments.run, with made-up numbers."""
    rec = {"config": {"budget": "cpu", "method": {"name": method, "temperature": temperature},
                      "train": {"seed": seed, "batch_size": batch_size}, "augment": {"crop_scale": [0.4, 1.0]}},
           "key": "0" * 12, "metrics": {"knn_acc": knn, "linear_acc": linear},
           "curves": {}, "provenance": {"budget": "cpu", "device": device, "commit": "abc"}}
    if curves:
        ep = list(range(1, epochs + 1))
        rec["curves"] = {"epoch": ep, "loss": [5.0 / e for e in ep], "knn_acc": [knn - 0.1 / e for e in ep],
                         "alignment": [0.2 - 0.01 * e for e in ep], "uniformity": [-1.0 - 0.1 * e for e in ep]}
    return rec


def saved(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=50)
    assert path.exists() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    return path


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def caption(fig):
    return [t.get_text() for t in fig.texts]


# --------------------------------------------------------------------------------------------
# records


def test_align_uniform_scatter(tmp_path):
    records = [make_record("simclr", knn=0.80), make_record("moco", knn=0.82),
               make_record("raw_pixels", curves=False)]        # a baseline: no alignment, left out
    records[1]["metrics"].update(alignment=0.5, uniformity=-2.0)   # metrics win over the curves
    fig = plots.align_uniform_scatter(records)
    saved(fig, tmp_path, "scatter")
    ax = visible_axes(fig)[0]
    offsets = ax.collections[0].get_offsets()
    assert np.allclose(offsets, [[0.17, -1.3], [0.5, -2.0]])
    assert np.allclose(ax.collections[0].get_array(), [0.80, 0.82])
    assert [t.get_text() for t in ax.texts] == ["simclr", "moco"]
    assert "alignment" in ax.get_xlabel() and "uniformity" in ax.get_ylabel()
    assert caption(fig) == [f"source: budget cpu · {CPU}"]
    fig = plots.align_uniform_scatter([("SimCLR τ=0.2", records[0])], color="linear_acc")
    assert [t.get_text() for t in visible_axes(fig)[0].texts] == ["SimCLR τ=0.2"]
    with pytest.raises(ValueError, match="alignment and uniformity"):
        plots.align_uniform_scatter([records[2]])


def test_training_curves(tmp_path):
    records = [make_record("simclr"), make_record("byol", epochs=4, device="NVIDIA H100"),
               make_record("raw_pixels", curves=False)]
    fig = plots.training_curves(records, keys=("loss", "knn_acc", "alignment"))
    saved(fig, tmp_path, "curves")
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes][::2] == ["training loss", "alignment"]   # readers' names, not keys
    assert axes[1].get_title().startswith("kNN monitor") and "reads higher" in axes[1].get_title()
    assert all(len(ax.lines) == 2 for ax in axes)
    assert list(axes[0].lines[1].get_xdata()) == [1, 2, 3, 4]
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["simclr", "byol"]
    assert caption(fig) == [f"source: budget cpu · {CPU}; budget cpu · NVIDIA H100"]
    fig = plots.training_curves({"a": records[0], "b": records[1]}, keys=("loss", "effective_rank"),
                                labels=["SimCLR", "BYOL"])
    axes = visible_axes(fig)
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["SimCLR", "BYOL"]
    assert "no record" in axes[1].texts[0].get_text()
    with pytest.raises(ValueError, match="no record has any of the curves"):
        plots.training_curves([records[2]])
    with pytest.raises(ValueError, match="labels"):
        plots.training_curves(records, labels=["one"])
    with pytest.raises(TypeError, match=r"records\[0\] must be a result record"):
        plots.training_curves([{"metrics": {}}])


def ablation_records():
    """Temperature x batch size x 2 seeds, knn = 0.8 + tau / 10 + seed / 100 + batch / 1e4."""
    return [make_record(temperature=t, batch_size=b, seed=s, knn=0.8 + t / 10 + s / 100 + b / 1e4)
            for t in (0.5, 0.1, 0.2) for b in (128, 256) for s in (0, 1)]


def test_ablation_bars(tmp_path):
    records = [r for r in ablation_records() if r["config"]["train"]["batch_size"] == 256]
    fig = plots.ablation_bars(records, by="method.temperature", metric="knn_acc")
    saved(fig, tmp_path, "bars")
    ax = visible_axes(fig)[0]
    heights = [p.get_height() for p in ax.patches]
    expected = [0.8 + t / 10 + 0.005 + 0.0256 for t in (0.1, 0.2, 0.5)]   # sorted by temperature
    assert heights == pytest.approx(expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1", "0.2", "0.5"]
    assert ax.get_xlabel() == "temperature τ" and ax.get_ylabel() == "kNN accuracy"
    assert caption(fig) == [f"source: budget cpu · {CPU}"]
    # two keys: one bar per combination
    fig = plots.ablation_bars(ablation_records(), by=("method.temperature", "train.batch_size"))
    assert len(visible_axes(fig)[0].patches) == 6
    # a list in the config keys its group like a tuple
    ax = visible_axes(plots.ablation_bars([make_record(seed=0), make_record(seed=1)], by="augment.crop_scale"))[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["(0.4, 1.0)"]
    with pytest.raises(ValueError, match="same seed|share the group"):
        plots.ablation_bars(ablation_records(), by="method.temperature")    # batch sizes would be pooled
    with pytest.raises(KeyError, match="method.tau"):
        plots.ablation_bars(records, by="method.tau")
    with pytest.raises(KeyError, match="no metric 'top5'"):
        plots.ablation_bars(records, metric="top5")


def test_ablation_bars_se_over_seeds():
    records = [make_record(temperature=0.1, seed=s, knn=k) for s, k in enumerate((0.80, 0.82, 0.84))]
    ax = visible_axes(plots.ablation_bars(records))[0]
    assert ax.patches[0].get_height() == pytest.approx(0.82)
    err_segments = ax.collections[0].get_segments()[0]              # the error bar: mean -+ standard error
    se = 0.02 / 3 ** 0.5
    assert err_segments[:, 1] == pytest.approx([0.82 - se, 0.82 + se])
    assert "mean ± SE" in ax.get_title()
    one = visible_axes(plots.ablation_bars([make_record(temperature=0.1, seed=0)]))[0]
    assert "one seed each" in one.get_title() and "±" not in one.get_title()


def test_ablation_heatmap(tmp_path):
    records = ablation_records()[:-2]                               # drop tau 0.2, batch 256: an empty cell
    fig = plots.ablation_heatmap(records, x="method.temperature", y="train.batch_size", metric="knn_acc")
    saved(fig, tmp_path, "heatmap")
    ax = visible_axes(fig)[0]
    grid = ax.images[0].get_array()
    assert grid.shape == (2, 3)
    assert grid[0, 0] == pytest.approx(0.8 + 0.01 + 0.005 + 0.0128)           # tau 0.1, batch 128
    assert grid.mask[1, 1]                                          # tau 0.2, batch 256 missing
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1", "0.2", "0.5"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["128", "256"]
    assert len(ax.texts) == 5


# --------------------------------------------------------------------------------------------
# arrays


def two_encoders(n=300):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (n,), generator=g)
    angle = labels * (math.pi / 2) + 0.2 * torch.randn(n, generator=g)     # classes on separate arcs
    clustered = torch.stack([angle.cos(), angle.sin()], dim=1) * 3         # not unit: normalised inside
    return {"aligned": (clustered, labels), "uniform (angles)": (torch.rand(n, generator=g) * 2 * math.pi, labels)}


def test_circle_features(tmp_path):
    fig = plots.circle_features(two_encoders(), class_names=["a", "b", "c", "d"], source="synthetic features")
    saved(fig, tmp_path, "circle")
    axes = visible_axes(fig)
    assert len(axes) == 4                                           # 2 rows x 2 encoders
    assert [ax.get_title() for ax in axes[:2]] == ["aligned", "uniform (angles)"]
    assert len(axes[2].lines) == 4                                  # one density per class
    assert caption(fig) == ["synthetic features"]
    # each per-class density integrates to one over the circle
    line = axes[2].lines[0]
    x, y = line.get_xdata(), line.get_ydata()
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match=r"\(N, 2\) points or \(N,\) angles"):
        plots.circle_features({"bad": (np.zeros((5, 3)), np.zeros(5, dtype=int))})
    rec = make_record("simclr", curves=False)
    angles = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    rec.update(z_test=np.stack([np.cos(angles), np.sin(angles)], 1).tolist(), z_test_labels=[0, 1] * 20)
    fig = plots.circle_features({"SimCLR": rec})                    # a record made with eval.save_z
    assert caption(fig) == [f"source: budget cpu · {CPU}"]
    assert len(visible_axes(fig)[1].lines) == 2
    with pytest.raises(ValueError, match="record without 'z_test': run it with eval.save_z"):
        plots.circle_features({"SimCLR": make_record()})
    with pytest.raises(ValueError, match="labels must have shape"):
        plots.circle_features({"bad": (np.zeros((5, 2)), np.zeros(4, dtype=int))})


def blobs(n=60, classes=3, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    return torch.randn(n, d, generator=g) + 4 * torch.eye(d)[labels], labels


def test_embedding_2d_tsne_subsamples_reproducibly(tmp_path):
    x, y = blobs()
    fig = plots.embedding_2d(x, y, method="tsne", n=45, seed=0, class_names=["x", "y", "z"], source="blobs")
    saved(fig, tmp_path, "tsne")
    ax = visible_axes(fig)[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 45
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["x", "y", "z"]
    again = visible_axes(plots.embedding_2d(x, y, n=45, seed=0))[0]
    assert np.allclose(ax.collections[0].get_offsets(), again.collections[0].get_offsets())


def test_embedding_2d_umap_is_imported_lazily(tmp_path, monkeypatch):
    calls = {}

    class FakeUMAP:
        def __init__(self, **kw):
            calls.update(kw)

        def fit_transform(self, x):
            return x[:, :2]

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    x, y = blobs(n=30)
    saved(plots.embedding_2d(x, y, method="umap", seed=3), tmp_path, "umap")
    assert calls == {"n_components": 2, "n_neighbors": 15, "random_state": 3}
    monkeypatch.setitem(sys.modules, "umap", None)                 # as if umap-learn were not installed
    with pytest.raises(ImportError, match="pip install umap-learn"):
        plots.embedding_2d(x, y, method="umap")
    with pytest.raises(ValueError, match="method"):
        plots.embedding_2d(x, y, method="pca")


def test_similarity_matrix(tmp_path):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 8, generator=g)
    z2 = z1 + 0.1 * torch.randn(6, 8, generator=g)
    fig = plots.similarity_matrix(z1, z2)
    saved(fig, tmp_path, "similarity")
    image = visible_axes(fig)[0].images[0].get_array()
    assert image.shape == (12, 12)
    assert image.mask.diagonal().all()                              # self-similarities greyed out
    cos = torch.nn.functional.cosine_similarity(z1, z2).numpy()
    assert np.allclose(np.diagonal(image, offset=6), cos, atol=1e-6)     # positive pairs at offset N
    assert np.allclose(np.diagonal(image, offset=-6), cos, atol=1e-6)
    assert np.allclose(image, image.T)
    with pytest.raises(ValueError, match="same shape"):
        plots.similarity_matrix(z1, z2[:, :4])


# --------------------------------------------------------------------------------------------
# analyses


def test_mi_bound_figure(tmp_path):
    result = analysis.mi_bound_experiment(batch_sizes=(2, 8, 32), mis=(1.0, 4.0), dim=2, eval_samples=256)
    fig = plots.mi_bound(result)
    saved(fig, tmp_path, "mi_bound")
    ax = visible_axes(fig)[0]
    assert ax.get_xscale() == "log"
    assert len(ax.get_legend().get_texts()) == 3                    # log N and two values of I
    assert "optimal critic" in caption(fig)[0]
    with pytest.raises(ValueError, match="mi_bound_experiment"):
        plots.mi_bound({"analysis": "something else"})


def test_gradient_weights_figure(tmp_path):
    fig = plots.gradient_weights(analysis.gradient_weight_curves((0.1, 0.5)))
    saved(fig, tmp_path, "gradient_weights")
    left, right = visible_axes(fig)
    assert left.get_yscale() == "log"
    assert len(left.get_lines()) == 3 and len(right.get_lines()) == 3   # two temperatures + the positive
    assert fig._repr_png_()[:8] == PNG_MAGIC                        # shows in Jupyter without pyplot
    with pytest.raises(ValueError, match="gradient_weight_curves"):
        plots.gradient_weights([1, 2])


def test_importing_contrastlab_does_not_import_matplotlib():
    code = ("import sys, contrastlab, contrastlab.analysis; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _card():
    refs = {"random_init": [0.60, 0.62, 0.70], "raw_pixels": [0.23] * 3, "supervised": [0.99] * 3,
            "simclr": [0.95, 0.97, 0.98]}
    arm = lambda name, v, diff=False: {"name": name, "values": v, "difference": diff}
    return {"instrument": {"name": "bench", "dataset": "shapes", "budget": "bench", "references": refs},
            "claims": [{"chapter": "05", "setting": "shapes, budget bench", "metric": "linear_acc", "claim": "a beats b",
                        "verdict": "reproduced", "arms": [arm("a", [0.95, 0.97, 0.98]), arm("b", [0.9, 0.91, 0.92])]},
                       {"chapter": "05", "setting": "shapes, budget bench", "metric": "linear_acc", "claim": "gain",
                        "verdict": "reproduced", "arms": [arm("g", [0.1] * 3, True), arm("h", [0.0] * 3, True)]},
                       {"chapter": "03", "setting": "an analysis, no training", "metric": "nats", "claim": "bound",
                        "verdict": "reproduced", "arms": [arm("x", [1.0] * 3), arm("y", [0.5] * 3)]}]}


def test_claim_arms_draws_each_accuracy_claim_over_the_reference_bands(tmp_path):
    fig = plots.claim_arms(_card(), "05")
    saved(fig, tmp_path, "claim_arms")
    axes = visible_axes(fig)
    assert len(axes) == 1                                            # the difference claim is left to the table
    ax = axes[0]
    assert [p.get_height() for p in ax.patches if p.get_height() < 1][-2:] == pytest.approx([0.9667, 0.91], abs=1e-3)
    assert any("untrained encoder (mean ± SD, n = 3)" == line.get_label() for line in ax.lines)
    with pytest.raises(ValueError, match="no accuracy claim of chapter '03'"):
        plots.claim_arms(_card(), "03")


def test_reference_bands_shows_every_seed(tmp_path):
    fig = plots.reference_bands(_card()["instrument"]["references"])
    saved(fig, tmp_path, "references")
    ax = visible_axes(fig)[0]
    from matplotlib.collections import PathCollection
    assert sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)) == 12
    assert [t.get_text() for t in ax.get_xticklabels()][0] == "untrained encoder"


def test_knn_monitor_panel_says_its_subsets_and_why_it_reads_low():
    record = make_record()
    record["config"]["train"].update(monitor_train=5000, monitor_test=1000)
    record["config"]["eval"] = {"knn_k": 200}
    title = visible_axes(plots.training_curves([record], keys=("knn_acc",)))[0].get_title()
    assert "5,000 train / 1,000 test images, k = 200" in title and "final kNN" in title


def test_no_raw_keys_or_metric_names_in_labels():
    """Titles, axis labels and colour bars show the readers' names (contrastlab.labels), never
    'knn_acc' or 'method.temperature'."""
    figures = [plots.ablation_bars(ablation_records(), by=("method.temperature", "train.batch_size")),
               plots.ablation_heatmap(ablation_records(), x="method.temperature", y="train.batch_size"),
               plots.align_uniform_scatter([make_record()]),
               plots.training_curves([make_record()], keys=("loss", "knn_acc", "uniformity"))]
    for fig in figures:
        for ax in fig.axes:
            for text in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()):
                assert not any(raw in text for raw in ("knn_acc", "linear_acc", "method.", "train.")), text


def test_small_text_is_readable_at_the_page_width():
    """Legends, captions and annotations are at least plots.SMALL (9 pt): a figure is shown at
    about 0.8 of its size in the book's column."""
    from matplotlib.text import Text
    records = [make_record("simclr"), make_record("moco", device="cpu (x86_64, 1 threads)")]
    figures = [plots.training_curves(records), plots.ablation_bars([r for r in ablation_records() if r["config"]["train"]["batch_size"] == 256]),
               plots.ablation_heatmap(ablation_records()), plots.align_uniform_scatter(records)]
    for fig in figures:
        fig.canvas.draw() if hasattr(fig.canvas, "draw") else None
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
        assert sizes and min(sizes) >= plots.SMALL, sorted(sizes)[:5]


def test_caption_shows_old_records_device_in_the_singular():
    fig = plots.training_curves([make_record(device="cpu (x86_64, 1 threads)")])
    assert caption(fig) == ["source: budget cpu · cpu (x86_64, 1 thread)"]
