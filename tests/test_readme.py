"""The README and the preface tell the reader what the records say: the methods table is the one
`compare` makes from the published records, and the typed range of training minutes per method at
the cpu budget is that table's range."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from contrastlab import experiments, labels, report

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PREFACE = (ROOT / "book" / "preface.md").read_text()


def _block(name: str) -> str:
    return README.split(f"<!-- compare:{name} -->", 1)[1].split(f"<!-- /compare:{name} -->", 1)[0]


def _block_records(name: str):
    """The (spec, record) pairs of the README's table ``name``, read from results/ without training,
    for the runs (and the ``--set`` overrides) of the command its caption gives."""
    command = re.search(r"`python -m contrastlab compare ([^`]*?) --dataset fashion-mnist --budget cpu"
                        r"(?: --set ([^`]*))?`", _block(name))
    assert command, f"the README's {name} table names the command that regenerates it"
    common = report.parse_overrides(command.group(2)) if command.group(2) else {}
    out = []
    for spec in command.group(1).split():
        method, overrides = report.parse_run(spec)
        config = experiments.ExperimentConfig(method=method, dataset="fashion-mnist", budget="cpu")
        fields = experiments.resolve(config)
        config.overrides = {**{k: v for k, v in common.items() if report._has_field(fields, k)}, **overrides}
        path = experiments.record_path(experiments.resolve(config), ROOT / "results")
        assert path.is_file(), f"the README's {spec!r} row has no record {path.name} in results/"
        out.append((spec, json.loads(path.read_text())))
    return out


BLOCKS = ("methods", "fewlabels", "collapse")


@pytest.fixture(scope="module")
def methods():
    return _block_records("methods")


@pytest.mark.parametrize("name", BLOCKS)
def test_readme_tables_are_the_records(name):
    table = report.markdown_table(_block_records(name))
    assert table in _block(name), (f"README's {name} table differs from the records; regenerate it with the "
                                   f"command above it and --into README.md --block {name}")


def _minutes(methods) -> dict[str, float]:
    return {spec: labels.training_seconds(rec) / 60 for spec, rec in methods if labels.training_seconds(rec)}


def test_typed_training_minutes_are_the_records_range(methods):
    minutes = _minutes(methods)
    low, high = min(minutes, key=minutes.get), max(minutes, key=minutes.get)
    typed = re.search(r"([\d.]+) \((\w+)\) to ([\d.]+) \((\w+)\) minutes of training per method", README)
    assert typed, "the README's budget table states the range of training minutes per method"
    assert (typed[2].lower(), typed[4].lower()) == (low, high), typed.groups()
    assert (float(typed[1]), float(typed[3])) == (round(minutes[low], 1), round(minutes[high], 1))
    preface = re.search(r"(\d+) to (\d+) minutes of training per method", PREFACE)
    assert preface, "the preface's budget table states the range of training minutes per method"
    assert (int(preface[1]), int(preface[2])) == (round(minutes[low]), round(minutes[high]))


def test_speed_table_is_the_speed_record():
    """The README's speed table is `benchmarks/speed.py --table` of the committed record, and the
    prose around it names the figures of speed_changes.py's record."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_readme_speed", ROOT / "benchmarks" / "speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    record = json.loads((ROOT / "results" / "benchmarks" / "speed-cpu.json").read_text())
    block = README.split("<!-- speed:table -->", 1)[1].split("<!-- /speed:table -->", 1)[0].strip()
    assert block == speed.markdown_table(record), \
        "README's speed table differs from the record: paste `python benchmarks/speed.py --table ...`"
    changes = json.loads((ROOT / "results" / "benchmarks" / "speed-cpu-changes.json").read_text())
    ms, x = changes["ms_per_call"], changes["speedups"]
    section = README.split("### Speed on 2 CPU cores", 1)[1].split("###", 1)[0]
    for typed in (f"{x['channels_last']:.2f}x faster", f"{x['bf16_over_channels_last_fp32']:.2f}x faster again",
                  f"{x['views']:.2f}x faster ({ms['views_before']:.1f} to {ms['views_after']:.1f}"):
        assert typed in section, f"the README's speed section should say {typed!r}, as the record does"
    assert record["machine"]["model"] in section and record["machine"]["bf16_in_hardware"] == ("AVX-512 BF16" in section)


def test_bf16_paragraph_is_the_bf16_record():
    """What the README says of bf16 on the CPU is what benchmarks/bf16_accuracy.py recorded."""
    rec = json.loads((ROOT / "results" / "benchmarks" / "bf16-accuracy.json").read_text())
    rows = [row[metric] for row in rec["methods"].values() for metric in ("knn_acc", "linear_acc")]
    assert set(rec["methods"]) == {"simclr", "moco", "byol", "swav"} and len(rows) == 8
    assert all(r["verdict"] == "not resolved" and r["within_own_noise"] for r in rows), \
        "the README says every difference is not resolved and inside the method's own seed noise"
    probe = rec["methods"]["simclr"]["linear_acc"]
    assert f"SimCLR's probe {100 * probe['diff']:+.2f} +- {100 * probe['half_width']:.2f} points" in README
    ratio = {m: sum(r["cpu_seconds"][f"{m}-fp32"]) / sum(r["cpu_seconds"][f"{m}-bf16"]) for m, r in rec["methods"].items()}
    low, high = min(ratio, key=ratio.get), max(ratio, key=ratio.get)
    names = {"simclr": "SimCLR", "moco": "MoCo", "byol": "BYOL", "swav": "SwAV"}
    assert f"{ratio[low]:.1f} ({names[low]}) to {ratio[high]:.1f} ({names[high]}) times less" in " ".join(README.split())


def test_speed_prose_is_the_speed_records():
    """The sentences around the speed table say what the records hold: whether every target is met,
    and the range of the ratio to lightly over the published record and the earlier runs kept."""
    record = json.loads((ROOT / "results" / "benchmarks" / "speed-cpu.json").read_text())
    earlier = json.loads((ROOT / "results" / "benchmarks" / "speed-cpu-earlier-runs.json").read_text())["runs"]
    section = " ".join(README.split("### Speed on 2 CPU cores", 1)[1].split("###", 1)[0].split())
    met = record["summary"]["met"]
    every = met["vs_lightly"] and all(met["full_over_model_only"].values()) and met["fit_epoch"]
    assert ("Every target is met in this record" in section) == bool(every)
    runs = [record, *earlier]
    for key, template in (("vs_lightly", "ours / lightly's fastest read {} to {}"),
                          ("vs_lightly_fp32", "({} to {} with our step in fp32)")):
        values = [r["methods"]["simclr"][key] for r in runs]
        typed = template.format(f"{min(values):.2f}", f"{max(values):.2f}")
        assert typed in section, f"the README's speed section should say {typed!r}, as the records do"
    simclr = record["methods"]["simclr"]
    one_worker = simclr["arms"]["lightly_w1"]["s_per_step"] / simclr["arms"]["full_fp32"]["s_per_step"]
    assert f"{simclr['vs_lightly_fp32']:.2f}x lightly's fastest ({one_worker:.2f}x its 1-worker pipeline)" in section
