import pytest

from contrastlab import report
from contrastlab.cli import main

TINY = ("dataset.train_size=300,dataset.test_size=100,encoder.cnn_width=4,train.batch_size=64,"
        "train.monitor_train=100,train.monitor_test=50,eval.linear_epochs=5")


def test_parse_run_reads_values_as_json_where_it_can():
    assert report.parse_run("moco") == ("moco", {})
    assert report.parse_run("byol:method.predictor=false,train.epochs=2,augment.crop_scale=[0.3, 1]") == (
        "byol", {"method.predictor": False, "train.epochs": 2, "augment.crop_scale": [0.3, 1]})
    assert report.parse_run("simclr:method.head=linear") == ("simclr", {"method.head": "linear"})
    with pytest.raises(ValueError, match="key=value"):
        report.parse_run("simclr:temperature")
    with pytest.raises(ValueError, match="method name"):
        report.parse_run(":train.epochs=2")


def _record(knn, linear, embed_std, commit="0123456789abcdef-dirty", **few):
    return {"metrics": {"knn_acc": knn, "linear_acc": linear, **few},
            "curves": {"embed_std": embed_std, "time_s": [40.0, 50.0]},
            "provenance": {"wall_time_s": 300.0, "device": "cpu (x86_64, 2 threads)", "commit": commit}}


def test_markdown_table_has_a_row_per_run_with_its_numbers():
    table = report.markdown_table([("byol", _record(0.8, 0.85, [0.06, 0.05])),
                                   ("byol:method.ema=false", _record(0.3, 0.4, [0.05, 0.0001], "fedcba9876"))])
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| run | kNN | linear")
    assert "| `byol` | 0.8000 | 0.8500 | 0.0600 → 0.0500 | 1.5 min |" in lines[2]   # training time: the epochs, not the evaluation
    assert "0123456-dirty" in lines[2] and "0.0500 → 0.0001 " in lines[3] and "| fedcba9 |" in lines[3]


def test_markdown_table_adds_the_few_label_columns_that_records_have():
    table = report.markdown_table([("simclr", _record(0.8, 0.85, [0.06], linear_acc_10pct=0.7, linear_acc_1pct=0.6)),
                                   ("moco", _record(0.8, 0.85, [0.06]))])
    lines = table.splitlines()
    assert lines[0].startswith("| run | kNN | linear | linear, 1% labels | linear, 10% labels | std of z")
    assert "| 0.8500 | 0.6000 | 0.7000 | 0.0600 |" in lines[2] and "| 0.8500 | – | – | 0.0600 |" in lines[3]


def test_write_block_replaces_only_between_its_markers(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("intro\n<!-- compare:methods -->\nold\n<!-- /compare:methods -->\noutro\n")
    report.write_block(path, "methods", "| new |")
    assert path.read_text() == "intro\n<!-- compare:methods -->\n| new |\n<!-- /compare:methods -->\noutro\n"
    report.write_block(path, "methods", "| newer |")        # idempotent on its own output
    assert "| newer |" in path.read_text() and "| new |\n" not in path.read_text()
    with pytest.raises(ValueError, match="compare:collapse"):
        report.write_block(path, "collapse", "x")
    assert "| newer |" in path.read_text()                   # a failed write changes nothing


def test_compare_command_trains_each_run_then_reuses_the_cache(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- compare:t -->\n<!-- /compare:t -->\n")
    runs = ["raw_pixels:dataset.train_size=300,dataset.test_size=100", f"simclr:{TINY}",
            f"byol:{TINY},method.predictor=false"]
    argv = ["compare", *runs, "--dataset", "digits", "--budget", "smoke", "--results", str(tmp_path),
            "--into", str(readme), "--block", "t"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("| `") == 3 and "budget `smoke`" in out and "python -m contrastlab compare" in out
    written = readme.read_text()
    assert "| `simclr:" in written and "method.predictor=false" in written
    records = sorted(tmp_path.glob("*.json"))
    assert len(records) == 3
    stamps = [p.stat().st_mtime_ns for p in records]
    assert main(argv) == 0                                    # second time: loaded, nothing retrained
    assert [p.stat().st_mtime_ns for p in records] == stamps
    capsys.readouterr()
    assert main([*argv, "--set", "eval.label_fractions=[0.5]"]) == 0   # evaluation only: no training
    out = capsys.readouterr().out
    assert "linear, 50% labels" in out and "--set eval.label_fractions=[0.5]" in out
    assert len(list(tmp_path.glob("*.json"))) == 6 and [p.stat().st_mtime_ns for p in records] == stamps


def test_compare_checks_every_spec_before_training(tmp_path, capsys):
    assert main(["compare", "simclr", "simclr:method.temprature=0.1", "--budget", "smoke",
                 "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "unknown override 'method.temprature'" in err[-1], err
    assert not list(tmp_path.glob("*.json")) and not any("%|" in line for line in err)   # nothing trained


def test_common_overrides_apply_where_a_run_has_the_field(tmp_path):
    runs = report.compare(["raw_pixels", "simclr:train.epochs=1"], dataset="digits", budget="smoke",
                          cache_dir=tmp_path, progress=False,
                          common={**report.parse_run("x:" + TINY)[1], "method.temperature": 0.3,
                                  "eval.label_fractions": [0.5]})
    raw, simclr = runs[0][1], runs[1][1]
    assert simclr["config"]["method"]["temperature"] == 0.3 and "temperature" not in raw["config"]["method"]
    assert "linear_acc_50pct" in raw["metrics"] and "linear_acc_50pct" in simclr["metrics"]
    with pytest.raises(KeyError, match="common override 'method.temprature' names no field of any run"):
        report.compare(["simclr"], budget="smoke", cache_dir=tmp_path, common={"method.temprature": 0.3})


def test_markdown_table_shows_old_records_device_in_the_singular():
    record = _record(0.8, 0.85, [0.06])
    record["provenance"]["device"] = "cpu (x86_64, 1 threads)"
    table = report.markdown_table([("simclr", record)])
    assert "cpu (x86_64, 1 thread) |" in table and "1 threads" not in table
