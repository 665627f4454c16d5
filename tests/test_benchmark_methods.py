"""contrastlab.benchmark: every method is measured, state bytes are counted right, the record
round-trips, and bad arguments fail clearly. Tiny settings (smoke budget, digits, 2 steps);
no assertion on a time or a rate beyond its sign.

Run only these:  python -m pytest -q tests/test_benchmark_methods.py
"""
from __future__ import annotations

import json

import pytest

from contrastlab import benchmark, experiments
from contrastlab.methods import METHODS

TINY = {"budget": "smoke", "dataset": "digits", "steps": 2, "warmup": 1}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """One in-process run over every method and a small sweep, written to a temporary results folder."""
    folder = tmp_path_factory.mktemp("results")
    rec = benchmark.run_benchmark(**TINY, batch_sizes=(16, 32), queue_sizes=(256, 512),
                                  swav_sizes=((16, 0), (16, 64)), bank_sizes=(100, 1000), isolate=False,
                                  cache_dir=folder, progress=False)
    return rec, folder


def test_every_method_is_measured_with_positive_rates(record):
    rec, _ = record
    assert [r["method"] for r in rec["methods"]] == list(METHODS)
    for r in rec["methods"]:
        assert r["views_per_sec"] > 0 and r["images_per_sec"] > 0 and r["sec_per_step"] > 0
        assert r["views_per_sec"] == pytest.approx(r["images_per_sec"] * r["n_views"])
        assert r["step_peak_bytes"] >= 0 and r["peak_bytes"] > 0
        assert r["state"]["state"] == r["state"]["params"] + r["state"]["buffers"] > 0
        assert r["family"] == benchmark.FAMILIES[r["method"]]
        assert r["precision"] == experiments.resolved_precision(   # what the step trained in ('auto' resolved here)
            experiments.resolve(experiments.ExperimentConfig(method=r["method"], dataset="digits", budget="smoke")))
    assert set(benchmark.FAMILIES) == set(METHODS)


def test_instdisc_state_is_its_parameters_plus_a_bank_row_per_image(record):
    rec, _ = record
    row = next(r for r in rec["methods"] if r["method"] == "instdisc")
    config = experiments.ExperimentConfig(method="instdisc", dataset="digits", budget="smoke")
    resolved = experiments.resolve(config)
    n, dim = resolved["dataset"]["train_size"], resolved["method"]["feature_dim"]
    _, model = experiments.build_method(resolved, 1, num_samples=n)
    params = sum(p.numel() * 4 for p in model.parameters())          # float32
    batchnorm = sum(b.numel() * b.element_size() for name, b in model.named_buffers()
                    if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked"))
    # the bank (n x dim float32), which rows are filled (n bools), the running log Z (one float32)
    assert row["state"]["large_buffers"]["bank"] == n * dim * 4
    assert row["state"]["params"] == params
    assert row["state"]["state"] == params + batchnorm + n * dim * 4 + n + 4
    assert row["negatives"] == n            # an exact softmax over the whole bank at this budget
    bank = {b["train_size"]: b["state"]["large_buffers"]["bank"] for b in rec["sweep"]["bank"]}
    assert bank == {100: 100 * dim * 4, 1000: 1000 * dim * 4}


def test_sweep_covers_batches_and_queues(record):
    rec, _ = record
    assert [r["batch_size"] for r in rec["sweep"]["batch"]] == [16, 32]
    assert [r["negatives"] for r in rec["sweep"]["batch"]] == [30, 62]          # 2N - 2
    queue = rec["sweep"]["queue"]
    assert [r["negatives"] for r in queue] == [256, 512] and {r["batch_size"] for r in queue} == {256}
    # the queue is a (K, 128) float32 buffer: doubling K adds K x 128 x 4 bytes of state
    assert queue[1]["state"]["state"] - queue[0]["state"]["state"] == 256 * 128 * 4
    swav = rec["sweep"]["swav"]
    assert [(r["batch_size"], r["overrides"]["method.queue_size"]) for r in swav] == [(16, 0), (16, 64)]
    # one (K, 128) float32 queue per large view (two of them), as in the paper's code
    assert swav[1]["state"]["large_buffers"]["queue"] == 2 * 64 * 128 * 4


def test_record_round_trips_with_provenance(record):
    rec, folder = record
    path = benchmark.record_path("smoke", folder)
    assert path == folder / "benchmarks" / "methods-smoke.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(rec))
    prov = rec["provenance"]
    assert prov["budget"] == "smoke" and prov["device"].startswith("cpu") and prov["torch"]
    assert rec["settings"]["steps"] == 2 and rec["settings"]["dataset"] == "digits"
    table = benchmark.format_table(rec)
    assert all(f"| {m} |" in table for m in METHODS)


def test_isolated_measurement_runs_in_a_subprocess():
    row = benchmark.measure("supervised", **TINY, isolate=True)
    assert row["method"] == "supervised" and row["views_per_sec"] > 0
    assert row["peak_bytes"] > 0 and "RSS" in row["memory_measure"]


def test_cli_writes_the_record(tmp_path, capsys):
    argv = ["--budget", "smoke", "--dataset", "digits", "--steps", "1", "--warmup", "0", "--methods", "simclr",
            "--batch-sizes", "16", "--queue-sizes", "256", "--swav-sizes", "16:0", "--bank-sizes", "100",
            "--no-isolate"]
    assert benchmark.main([*argv, "--results", str(tmp_path)]) == 0
    assert "| simclr |" in capsys.readouterr().out
    written = json.loads((tmp_path / "benchmarks" / "methods-smoke.json").read_text())
    assert written["methods"][0]["method"] == "simclr"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"method": "simclrr"}, ValueError, "unknown method 'simclrr'"),
    ({"method": "simclr", "budget": "huge"}, ValueError, "unknown budget 'huge'"),
    ({"method": "simclr", "steps": 0}, ValueError, "steps must be an int >= 1, got 0"),
    ({"method": "simclr", "warmup": -1}, ValueError, "warmup must be an int >= 0, got -1"),
    ({"method": "simclr", "device": "gpu0"}, ValueError, "device must be 'auto' or a torch device"),
    ({"method": "simclr", "overrides": {"train.batchsize": 8}}, KeyError, "unknown override"),
    ({"method": "simclr", "overrides": {"train.batch_size": 5000}}, ValueError, "at most the number of"),
])
def test_measure_rejects_bad_arguments(kwargs, error, match):
    args = {**TINY, **kwargs}
    with pytest.raises(error, match=match):
        benchmark.measure(args.pop("method"), **args)


def test_run_benchmark_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        benchmark.run_benchmark(**TINY, methods=["simclr", "nope"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="methods must name at least one method"):
        benchmark.run_benchmark(**TINY, methods=[], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="batch_sizes must hold ints >= 1"):
        benchmark.run_benchmark(**TINY, batch_sizes=(0,), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="swav_sizes must hold"):
        benchmark.run_benchmark(**TINY, swav_sizes=((64,),), cache_dir=tmp_path)
    with pytest.raises(SystemExit):
        benchmark.main(["--swav-sizes", "64-0"])
    with pytest.raises(ValueError, match="unknown budget"):
        benchmark.record_path("huge")
