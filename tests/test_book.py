"""contrastlab.book: the chapters' setup cell, record cache and fetching, display helpers, commands."""
from __future__ import annotations

import io
import json
import re
import sys
import urllib.error
from pathlib import Path

import nbformat
import pytest

from contrastlab import book, experiments, losses

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("CONTRASTLAB_BUDGET", "CONTRASTLAB_DATASET", "CONTRASTLAB_RECOMPUTE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONTRASTLAB_RESULTS", str(tmp_path / "results"))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    return tmp_path / "results"


def _fake_colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))


# ------------------------------------------------------------------------------ one repository URL


def test_repository_url_is_the_same_in_config_and_library():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == book.REPO_URL
    assert book.INSTALL_SPEC == f"contrastlab @ git+{book.REPO_URL}"


@pytest.mark.parametrize("path", [*CHAPTERS, book.TEMPLATE], ids=lambda p: p.name)
def test_every_chapter_opens_with_the_setup_cell(path):
    if path.suffix == ".md":
        from myst_nb.core.read import read_myst_markdown_notebook
        nb = read_myst_markdown_notebook(path.read_text())
        number = "NN"
    else:
        nb = nbformat.read(path, as_version=4)
        number = path.name[:2]
    first = next(cell for cell in nb.cells if cell.cell_type == "code").source
    assert 'if importlib.util.find_spec("contrastlab") is None:' in first, first
    assert f'%pip install -q "{book.INSTALL_SPEC}"' in first, first
    assert f'book.setup(chapter="{number}"' in first, first


# --------------------------------------------------------------------------------------- setup


def test_setup_outside_colab_uses_the_default_budget_and_the_local_cache(clean_env, capsys):
    ch = book.setup(chapter=3)
    assert ch.chapter == "03"
    assert ch.budget == experiments.default_budget()
    assert ch.dataset == "fashion-mnist"
    assert not ch.recompute and not ch.fetch
    assert ch.cache_dir == clean_env
    assert "chapter 03" in capsys.readouterr().out


def test_setup_reads_the_environment(clean_env, monkeypatch):
    monkeypatch.setenv("CONTRASTLAB_BUDGET", "smoke")
    monkeypatch.setenv("CONTRASTLAB_DATASET", "digits")
    monkeypatch.setenv("CONTRASTLAB_RECOMPUTE", "1")
    ch = book.setup(chapter="05", quiet=True)
    assert (ch.budget, ch.dataset, ch.recompute) == ("smoke", "digits", True)
    assert book.setup(chapter="05", recompute=False, quiet=True).recompute is False


def test_setup_on_colab_reuses_the_published_records_unless_asked_to_recompute(clean_env, monkeypatch):
    _fake_colab(monkeypatch)
    ch = book.setup(chapter="01", quiet=True)
    assert ch.fetch and not ch.recompute
    assert ch.budget == book.PUBLISHED_BUDGET
    again = book.setup(chapter="01", recompute=True, quiet=True)
    assert again.recompute and again.budget == experiments.default_budget()


@pytest.mark.parametrize("kwargs, message", [({"chapter": "5"}, "two-digit"), ({"chapter": "01", "budget": "huge"}, "budget"),
                                             ({"chapter": "01", "dataset": "imagenet"}, "dataset")])
def test_setup_rejects_bad_arguments(clean_env, kwargs, message):
    with pytest.raises(ValueError, match=message):
        book.setup(quiet=True, **kwargs)


def test_summary_offers_cifar10_on_a_gpu(clean_env):
    ch = book.setup(chapter="01", quiet=True)
    ch.device = "cuda"
    assert "cifar10" in ch.summary()


# ------------------------------------------------------------------------------------------ run


def _fake_run(calls):
    def run(config, *, cache_dir=None, force=False, progress=True):
        calls.append((config, Path(cache_dir), force))
        return {"metrics": {"knn_acc": 0.5}}
    return run


def test_run_fills_in_the_chapter_budget_dataset_and_cache(clean_env, monkeypatch):
    calls = []
    monkeypatch.setattr(experiments, "run", _fake_run(calls))
    ch = book.setup(chapter="01", budget="smoke", dataset="digits", quiet=True)
    ch.run("simclr", overrides={"method.temperature": 0.1}, seed=2)
    config, cache_dir, force = calls[0]
    assert (config.method, config.dataset, config.budget, config.seed) == ("simclr", "digits", "smoke", 2)
    assert config.overrides == {"method.temperature": 0.1}
    assert cache_dir == clean_env and force is False
    ch.run(experiments.ExperimentConfig(method="raw_pixels", dataset="digits"))
    assert calls[1][0].budget == "smoke"
    assert len(ch.used) == 2 and all(name.endswith(".json") for name in ch.used)


def test_recompute_forces_each_record_once_per_session(clean_env, monkeypatch):
    calls = []
    monkeypatch.setattr(experiments, "run", _fake_run(calls))
    ch = book.setup(chapter="01", budget="smoke", recompute=True, quiet=True)
    ch.run("simclr")
    ch.run("simclr")
    ch.run("raw_pixels")
    assert [force for _, _, force in calls] == [True, False, True]


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_run_on_colab_fetches_the_published_record_instead_of_training(clean_env, monkeypatch):
    _fake_colab(monkeypatch)
    ch = book.setup(chapter="01", budget="smoke", dataset="digits", quiet=True)
    config = ch.config("raw_pixels")
    name = experiments.record_path(experiments.resolve(config)).name
    published = {"config": experiments.resolve(config), "metrics": {"knn_acc": 0.9, "linear_acc": 0.95},
                 "curves": {}, "provenance": {"budget": "smoke", "commit": "abc"}}
    urls = []

    def urlopen(url, timeout):
        urls.append(url)
        return _Response(json.dumps(published).encode())

    monkeypatch.setattr(book.urllib.request, "urlopen", urlopen)
    record = ch.run("raw_pixels")
    assert urls == [f"{book.RECORDS_URL}/{name}"]
    assert record["metrics"] == published["metrics"]
    assert (clean_env / name).exists()


@pytest.mark.parametrize("error", [urllib.error.HTTPError("u", 404, "Not Found", {}, None),
                                   urllib.error.URLError("offline")])
def test_fetch_record_returns_false_when_it_cannot(tmp_path, monkeypatch, error):
    def urlopen(url, timeout):
        raise error

    monkeypatch.setattr(book.urllib.request, "urlopen", urlopen)
    assert book.fetch_record("x.json", tmp_path) is False
    assert not (tmp_path / "x.json").exists()


# ------------------------------------------------------------------------------------- display


def test_show_source_shows_the_library_code_with_its_place():
    source = book.show_source(losses.nt_xent)
    markdown = source._repr_markdown_()
    assert "def nt_xent(" in markdown and "```python" in markdown
    assert "contrastlab/losses.py, line" in markdown
    assert str(source).startswith("def nt_xent(")


def test_show_source_fence_outlasts_backticks_in_the_code():
    markdown = book.Source("x = '```'\n")._repr_markdown_()
    assert markdown.startswith("````python")


RECORD = {"config": {"budget": "cpu", "dataset": {"name": "fashion-mnist"}, "encoder": {"name": "small_cnn"}},
          "metrics": {"linear_acc": 0.8537, "loss": 3.21234},
          "provenance": {"budget": "cpu", "device": "cpu (x86_64, 2 threads)",
                         "commit": "e2292bf0123456789012345678901234567890ab", "date": "2025-05-01T10:00:00+00:00"}}


def test_paper_vs_ours_labels_the_sources_and_the_provenance():
    table = book.paper_vs_ours([
        {"quantity": "linear accuracy", "paper": "69.3% (ImageNet, ResNet-50)", "cite": "chen2020simple",
         "record": RECORD, "metric": "linear_acc"},
        {"quantity": "final loss", "paper": "n/a", "record": RECORD, "metric": "loss"},
        {"quantity": "epochs", "paper": "1000", "record": RECORD, "ours": "5"},
    ])
    text = str(table)
    assert table._repr_markdown_() == text
    header, rows = text.splitlines()[0], text.splitlines()[2:5]
    assert "the paper's number" in header and "this book's number" in header
    assert "the paper's setting" in header and "this book's setting" in header   # never one column for both
    assert "| 69.3% {cite}`chen2020simple` | ImageNet, ResNet-50 | 85.4% |" in rows[0]
    assert "3.212" in rows[1] and "| 5 |" in rows[2]
    for row in rows:
        assert "budget `cpu`" in row and "fashion-mnist" in row and "commit `e2292bf`" in row and "2025-05-01" in row


def test_paper_vs_ours_rejects_incomplete_rows():
    with pytest.raises(ValueError, match=r"rows\[0\]"):
        book.paper_vs_ours([{"quantity": "x", "paper": "1", "record": RECORD}])


# ------------------------------------------------------------------------------------ commands


def test_new_chapter_writes_a_clean_notebook_from_the_template(tmp_path):
    (tmp_path / "notebooks").mkdir()
    path = book.new_chapter("07_swav", root=tmp_path)
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    headings = [line for cell in nb.cells if cell.cell_type == "markdown"
                for line in cell.source.splitlines() if line.startswith("## ")]
    assert headings == ["## Running this notebook", "## The idea", "## The code", "## The experiment",
                        "## Plots", "## Paper versus this book", "## Summary", "## Exercises"]
    assert 'book.setup(chapter="07")' in nb.cells[1].source
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    assert "<!--" not in nb.cells[0].source
    with pytest.raises(FileExistsError):
        book.new_chapter("07_swav", root=tmp_path)
    with pytest.raises(ValueError, match="07_swav"):
        book.new_chapter("seven", root=tmp_path)


def test_chapter_notebook_finds_exactly_one(tmp_path):
    assert book.chapter_notebook("01") == ROOT / "notebooks" / "01_quickstart.ipynb"
    with pytest.raises(FileNotFoundError, match="notebooks/42_"):
        book.chapter_notebook(42)


@pytest.mark.slow
def test_records_command_recomputes_a_chapters_records(tmp_path, monkeypatch):
    """End to end: a one-cell chapter, executed in a kernel by `records`, rewrites its record."""
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from contrastlab import book\n"
        "ch = book.setup(chapter='09', budget='smoke', dataset='digits')\n"
        "assert ch.recompute\n"
        "ch.run('raw_pixels', progress=False)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "notebooks" / "09_tiny.ipynb")
    results = tmp_path / "results"
    monkeypatch.setenv("CONTRASTLAB_RESULTS", str(results))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("CONTRASTLAB_RECOMPUTE", raising=False)
    written = book.regenerate_records("09", root=tmp_path, timeout=600)
    assert [p.name for p in written] == [p.name for p in results.glob("raw_pixels-digits-smoke-*.json")]
    assert len(written) == 1
    assert re.fullmatch(r"raw_pixels-digits-smoke-[0-9a-f]{12}\.json", written[0].name)


def test_ablation_scale_follows_the_budget():
    assert book.setup("05", budget="cpu", quiet=True).ablation == book.ABLATION_SCALE
    assert book.setup("05", budget="smoke", quiet=True).ablation == {}
    assert book.setup("05", budget="gpu", quiet=True).ablation == book.GPU_ABLATION_SCALE
    assert book.GPU_ABLATION_SCALE["train.epochs"] < 100     # a tenth of the gpu budget's full runs
    ch = book.setup("05", budget="cpu", quiet=True)
    ch.ablation["train.epochs"] = 99                      # a copy: a chapter cannot change the scale
    assert book.ABLATION_SCALE["train.epochs"] == 3


def test_show_source_of_a_method_keeps_its_body_indented():
    from contrastlab.methods.simclr import SimCLR
    text = book.show_source(SimCLR.forward)._repr_markdown_()
    lines = text.splitlines()
    assert any(line.startswith("def forward(") for line in lines)          # dedented to column 0
    body = next(line for line in lines if "if len(views) != 2" in line)
    assert body.startswith("    ") and not body.startswith("     ")      # one level under its def


# ------------------------------------------------------------------- what a reader meets (issue 16)


def test_install_cell_keeps_an_installed_torch(tmp_path):
    """Every chapter's install cell, run where torch is already installed (as on Colab), keeps
    that torch: pip resolves the cell's requirement against this checkout (in place of the GitHub
    URL) in a fresh environment that sees the installed torch, and would install no torch,
    torchvision or nvidia-* package."""
    import subprocess
    import venv
    for path in CHAPTERS:
        first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code").source
        line = next(l.strip() for l in first.splitlines() if "%pip install" in l)
        assert line == f'%pip install -q "{book.INSTALL_SPEC}"', f"{path.name}: {line}"   # no -U, no --force
    env_dir = tmp_path / "colab-like"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    report = tmp_path / "report.json"
    done = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--no-build-isolation",
                           "--report", str(report), f"contrastlab @ {ROOT.as_uri()}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    names = [item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]]
    assert "contrastlab" in names
    replaced = [n for n in names if n in ("torch", "torchvision") or n.startswith("nvidia-")]
    assert not replaced, f"the install cell would replace the installed torch: {replaced}"


def test_device_strings_read_in_the_singular():
    from contrastlab import labels
    record = {**RECORD, "provenance": {**RECORD["provenance"], "device": "cpu (x86_64, 1 threads)"}}
    assert "cpu (x86_64, 1 thread)," in book.provenance_note(record) and "1 threads" not in book.provenance_note(record)
    assert labels.device_label("cpu (x86_64, 12 threads)") == "cpu (x86_64, 12 threads)"
    import torch
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert experiments.device_name(torch.device("cpu")).endswith(", 1 thread)")
    finally:
        torch.set_num_threads(before)


def test_difference_of_coinciding_seeds_prints_no_zero_spread():
    claim = {"metric": "linear_acc", "diff": 0.0123, "half_width": 0.0}
    assert "±" not in book.difference(claim) and "+1.2 points" in book.difference(claim)
    assert "0.000" not in book.difference({"metric": "uniformity", "diff": 0.5, "half_width": 0.0})


def test_show_source_shows_the_docstring_as_text_and_not_in_the_code():
    markdown = book.show_source(losses.nt_xent)._repr_markdown_()
    code = markdown[markdown.index("```python"):]
    prose = markdown[:markdown.index("```python")]
    assert '"""' not in code and "Args:" not in code               # the docstring left the code block
    assert "**Args**" in prose and "- `z1`:" in prose              # ... and reads as text above it
    assert "``" not in prose and ".. math::" not in prose and ":math:" not in prose
    assert "$$" in prose                                           # the docstring's display maths renders
    assert str(book.show_source(losses.nt_xent)).count('"""') == 2   # str() is still the file's code


def test_time_table_reads_training_times_from_the_records(clean_env):
    ch = book.setup("04", budget="cpu", quiet=True)
    config = experiments.resolve(ch.config("simclr"))
    path = experiments.record_path(config, ch.cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": config, "metrics": {}, "curves": {"time_s": [300.0, 366.0]},
                                "provenance": {"device": "cpu (x86_64, 1 threads)", "wall_time_s": 700.0}}))
    text = str(ch.time_table("simclr", "moco"))
    simclr, moco = text.splitlines()[2:4]
    assert simclr.startswith("| SimCLR |") and moco.startswith("| MoCo |")   # readers' names, not run specs
    assert "11.1 min (cpu (x86_64, 1 thread))" in simclr            # the epochs' 666 s, not the 700 s wall time
    assert "not measured yet" in simclr.split("|")[-2]              # no gpu record, no gpu benchmark: nothing invented
    assert "no record here" in moco
    assert "loads in" in text and "training time" in text
    with pytest.raises(ValueError, match="at least one run"):
        ch.time_table()


def test_every_chapter_shows_its_time_table_in_its_first_code_cell():
    for path in CHAPTERS:
        first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code").source
        assert "ch.time_table(" in first, path.name


def _two_arm_claim(claim_id, a, b, at_ceiling):
    return {"id": claim_id, "chapter": "09", "metric": "linear_acc", "paired": False, "kind": "claim",
            "claim": f"{claim_id} holds", "paper": "p", "setting": "s", "diff": 0.001, "half_width": 0.004,
            "verdict": "not resolved", "at_ceiling": at_ceiling,
            "arms": [{"name": "a", "values": a}, {"name": "b", "values": b}]}


def test_claims_table_marks_and_explains_claims_at_the_ceiling():
    card = {"instrument": {"name": "bench", "dataset": "d", "budget": "bench", "metric": "linear_acc"}, "pending": [],
            "claims": [_two_arm_claim("top", [0.998, 0.997, 0.999], [0.997, 0.996, 0.998], True),
                       _two_arm_claim("mid", [0.80, 0.81, 0.82], [0.80, 0.80, 0.81], False)]}
    rows = {line.split(" holds")[0].strip("| "): line for line in str(book.claims_table(card, "09")).splitlines()
            if " holds" in line}
    assert rows["top"].endswith(f"**not resolved**{book.CEILING_MARK} |")
    assert rows["mid"].endswith("**not resolved** |")
    assert "At the instrument's ceiling" in str(book.claims_table(card, "09"))
    card["claims"] = card["claims"][1:]                       # no claim at the ceiling: no mark, no note
    assert book.CEILING_MARK not in str(book.claims_table(card, "09"))


def test_run_labels_name_the_method_and_each_override_for_a_reader():
    from contrastlab import labels
    assert labels.run_label("byol:method.predictor=false,train.epochs=2") == "BYOL, predictor false, epochs 2"
    assert labels.run_label("simclr:eval.label_fractions=[0.01,0.1]") == "SimCLR, label fractions [0.01,0.1]"
    assert labels.run_label("random_init") == "random init"
    with pytest.raises(TypeError, match="spec must be a run spec"):
        labels.run_label("")


def test_a_small_spread_gets_the_places_it_needs():
    # BYOL without its predictor: per-dimension SD of z 0.0100 +- 0.0001; SupCon at the ceiling
    assert book.mean_se([0.0101, 0.0100, 0.0099], "final.embed_std") == "0.01000 ± 0.00006 (n = 3)"
    assert book.mean_se([1.0, 0.9999, 1.0]) == "99.997 ± 0.003% (n = 3)"
    assert book.mean_se([0.81, 0.82, 0.83]) == "82.0 ± 0.6% (n = 3)"          # the usual places otherwise
    tiny = {"metric": "linear_acc", "diff": 0.00006, "half_width": 8.55e-8}
    assert not re.search(r"± 0\.0+(?![0-9])", book.difference(tiny) + book.mean_se([0.5, 0.50001, 0.5]))


def test_verdict_list_and_interval_side_read_the_scorecard():
    card = {"instrument": {"name": "bench", "dataset": "d", "budget": "bench", "metric": "linear_acc",
                           "seeds_per_cell": 3}, "pending": ["moco-symmetric"],
            "claims": [_two_arm_claim("moco-vs-random", [0.9, 0.91, 0.92], [0.6, 0.62, 0.64], False),
                       _two_arm_claim("moco-queue-size", [0.8, 0.81, 0.82], [0.8, 0.80, 0.81], False)]}
    card["claims"][0].update(diff=0.29, half_width=0.05, verdict="reproduced")
    text = book.verdict_list(card, "moco-vs-random", "moco-symmetric")
    assert text.startswith("On the instrument (`bench` budget, `d`, 3 seeds an arm):")
    first, second = text.splitlines()[2:4]
    assert first.startswith("- *MoCo learns") and "**reproduced**" in first and first.endswith(".")
    assert "not yet measured" in second
    assert book.interval_side(card, "moco-vs-random") == "above"
    assert book.interval_side(card, "moco-queue-size") == "across"         # 0.001 +- 0.004
    assert book.interval_side(card, "moco-symmetric") is None               # pending
    card["claims"][1].update(diff=-0.02, half_width=0.01)
    assert book.interval_side(card, "moco-queue-size") == "below"
