import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_script_prints_both_rates_and_their_ratio():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cpu", "--encoder", "small_cnn",
         "--width", "4", "--batch-size", "16", "--image-size", "12", "--channels", "1", "--dataset-size", "64",
         "--steps", "2", "--warmup", "1"],
        capture_output=True, text=True, check=True, cwd=ROOT).stdout
    lines = {line.split(":")[0].strip(): line for line in out.splitlines()}
    assert "views/s" in lines["(a) full step (augment + train)"]
    assert "views/s" in lines["(b) step on premade views"]
    assert float(lines["ratio (a)/(b)"].split(":")[1]) > 0


# ----------------------------------------------------------------------------- throughput.py

def _load(name):
    spec = importlib.util.spec_from_file_location(f"_test_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_multicrop_writes_consistent_json(tmp_path):
    out = tmp_path / "rates.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cpu", "--encoder", "small_cnn",
         "--width", "4", "--batch-size", "8", "--image-size", "12", "--dataset-size", "32", "--steps", "1",
         "--warmup", "0", "--n-small", "2", "--small-size", "6", "--amp", "bf16", "--no-channels-last",
         "--threads", "1", "--json", str(out)], capture_output=True, text=True, check=True, cwd=ROOT)
    r = json.loads(out.read_text())
    assert (r["method"], r["views"], r["small_size"], r["amp"], r["channels_last"], r["threads"]) == \
        ("swav", 4 * 8, 6, "bf16", False, 1)
    assert r["ratio"] == pytest.approx(r["ms_premade"] / r["ms_full"])
    assert r["full_views_per_s"] == pytest.approx(r["views"] / r["ms_full"] * 1000)


def test_step_rates_rejects_a_negative_n_small():
    with pytest.raises(ValueError, match="n_small must be an int >= 0, got -1"):
        _load("throughput").step_rates(device="cpu", n_small=-1)


# ----------------------------------------------------------------------------- device_check.py

@pytest.fixture
def device_check():
    return _load("device_check")


def test_pytest_counts_come_from_the_closing_line(device_check):
    text = "sss.F\n== 2 passed, 1 failed, 3 skipped, 832 deselected in 28.71s ==\n"
    assert device_check.parse_pytest_counts(text) == {"passed": 2, "failed": 1, "skipped": 3, "deselected": 832}
    assert device_check.parse_pytest_counts("1 error in 0.5s") == {"errors": 1}
    assert device_check.parse_pytest_counts("no tests ran in 0.01s") == {}


def test_run_step_records_failures_with_their_figures(device_check, tmp_path, monkeypatch):
    def partial(sizes, out):
        raise device_check.StepFailed("1 of 2 settings failed", {"runs": [1]})

    def broken(sizes, out):
        raise RuntimeError("no kernel")
    monkeypatch.setitem(device_check.STEPS, "p1", partial)
    monkeypatch.setitem(device_check.STEPS, "p4", broken)
    monkeypatch.setitem(device_check.STEPS, "p2", lambda sizes, out: {"views_per_s": 3.0})
    assert device_check.run_step("p1", "dry", tmp_path) == \
        {"status": "failed", "figures": {"runs": [1]}, "error": "1 of 2 settings failed"}
    assert device_check.run_step("p4", "dry", tmp_path)["error"] == "RuntimeError: no kernel"
    assert device_check.run_step("p2", "dry", tmp_path) == {"status": "ok", "figures": {"views_per_s": 3.0},
                                                            "error": None}
    assert json.loads((tmp_path / "step-p2.json").read_text())["figures"] == {"views_per_s": 3.0}


def test_check_times_every_step_and_goes_on_after_a_failure(device_check, tmp_path, monkeypatch):
    # Each step's child is replaced by a small program: one that succeeds, one that fails with figures,
    # one that crashes without a result, one that hangs past its limit after keeping partial figures;
    # the step after them still runs.
    programs = {
        "cuda_tests": "print('hello'); w({'status': 'ok', 'figures': {'passed': 3}, 'error': None})",
        "p1": "w({'status': 'failed', 'figures': {'runs': []}, 'error': 'bf16 failed'})",
        "p4": "raise SystemExit(3)",
        "p2": "import time; open(partial, 'w').write(json.dumps({'runs': [1]})); time.sleep(60)",
        "train": "w({'status': 'ok', 'figures': {}, 'error': None})",
    }

    def command(name, mode, out):
        write = (f"import json; w = lambda r: open({str(out / f'step-{name}.json')!r}, 'w').write(json.dumps(r)); "
                 f"partial = {str(out / f'step-{name}.partial.json')!r}")
        return [sys.executable, "-c", f"{write}\n{programs[name]}"]
    monkeypatch.setattr(device_check, "_step_command", command)
    monkeypatch.setitem(device_check.SIZES["dry"], "timeouts", {name: 2 for name in programs})
    lines = []
    record = device_check.check("dry", tmp_path, list(programs), log=lines.append)
    assert record == json.loads((tmp_path / "device_check.json").read_text())
    steps = {s["name"]: s for s in record["steps"]}
    assert list(steps) == list(programs)
    assert [s["status"] for s in record["steps"]] == ["ok", "failed", "failed", "failed", "ok"]
    assert steps["cuda_tests"]["figures"] == {"passed": 3} and "hello" in lines
    assert steps["p1"]["error"] == "bf16 failed" and steps["p1"]["figures"] == {"runs": []}
    assert steps["p4"]["error"] == "the step's process exited 3 without a result"
    assert steps["p2"]["error"] == "timed out after 2 s" and 2 <= steps["p2"]["seconds"] < 30
    assert steps["p2"]["figures"] == {"runs": [1]}
    assert record["mode"] == "dry" and record["machine"]["python"] and record["seconds"] >= steps["p2"]["seconds"]
    assert not list(tmp_path.glob("step-*.json"))   # the per-step files are folded into the record


def test_device_check_sh_rejects_a_wrong_call():
    for args in ([], ["--bogus"], ["a", "b"]):
        out = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), *args],
                             capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 2 and out.stderr.startswith("usage:") and len(out.stderr.splitlines()) == 1


def test_prepared_packages_come_after_the_installed_ones(tmp_path):
    # device_site/sitecustomize.py appends DEVICE_CHECK_SITE: a module only there imports, and a name
    # the interpreter has (json) still comes from the interpreter.
    (tmp_path / "only_in_the_prepared_folder.py").write_text("WHERE = 'prepared'\n")
    (tmp_path / "json.py").write_text("raise ImportError('the prepared copy shadowed json')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "benchmarks" / "device_site"), "DEVICE_CHECK_SITE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", "import only_in_the_prepared_folder as m, json; print(m.WHERE)"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "prepared"


def test_every_device_requirement_is_pinned():
    lines = [line.strip() for line in (ROOT / "benchmarks" / "device_requirements.txt").read_text().splitlines()]
    reqs = [line for line in lines if line and not line.startswith("#")]
    assert "lightly==1.6.0" in reqs and "nbclient==0.11.0" in reqs
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", r) for r in reqs), reqs


# ----------------------------------------------------------------------------- vs_lightly.py

def _lightly_path() -> str | None:
    """Where lightly imports from: installed, or the wheels of `device_check.sh --prepare` (zip-importable)."""
    if importlib.util.find_spec("lightly") is not None:
        return ""
    wheels = ROOT / ".device-data" / "wheels"
    found = [sorted(wheels.glob(f"{name}-*.whl")) for name in ("lightly", "lightning_utilities")]
    if not all(found):
        return None
    return os.pathsep.join(str(f[-1]) for f in found)


def test_vs_lightly_rejects_bad_arguments_in_one_line():
    for args, word in ((["--epochs", "0"], "--epochs must be >= 1, got 0"),
                       (["--workers", "-1"], "--workers must be >= 0, got -1")):
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vs_lightly.py"), *args],
                             capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 2 and word in out.stderr and "Traceback" not in out.stderr


def test_lightly_transform_needs_crops_that_reach_the_whole_image():
    vs = _load("vs_lightly")
    augment = {"crop": True, "crop_scale": (0.4, 0.9), "strength": 1.0, "color": True, "grayscale": True,
               "blur": False, "flip": True, "size": 28}
    with pytest.raises(ValueError, match=r"augment.crop_scale must end at 1.0.*\(0.4, 0.9\)"):
        vs.lightly_transform(augment)


def _run_with_lightly(script: str, *args: str) -> subprocess.CompletedProcess:
    """benchmarks/<script> in a child process that finds lightly (installed, or in .device-data);
    skips the test when lightly is in neither place."""
    path = _lightly_path()
    if path is None:
        pytest.skip("lightly is neither installed nor prepared (benchmarks/device_check.sh --prepare)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), path]))}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          capture_output=True, text=True, cwd=ROOT, env=env)


def test_vs_lightly_trains_both_arms_and_writes_their_figures(tmp_path):
    out = tmp_path / "vs.json"
    printed = _run_with_lightly("vs_lightly.py", "--budget", "smoke", "--device", "cpu", "--threads", "1",
                                "--workers", "0", "--epochs", "2", "--train-size", "96", "--test-size", "40",
                                "--batch-size", "32", "--out", str(out))
    assert printed.returncode == 0, printed.stderr
    rec = json.loads(out.read_text())
    c, li = rec["contrastlab"], rec["lightly"]
    for arm in (c, li):
        assert len(arm["epoch_s"]) == 2 and 0 <= arm["knn_acc"] <= 1
        assert arm["views_per_s"] == pytest.approx(2 * 32 * 3 / arm["steady_epoch_s"])   # 3 full batches of 32
    assert rec["epoch_time_ratio"] == pytest.approx(c["steady_epoch_s"] / li["steady_epoch_s"])
    assert rec["knn_diff"] == pytest.approx(c["knn_acc"] - li["knn_acc"])
    assert rec["settings"]["lightly"] == "1.6.0" and rec["settings"]["train_size"] == 96
    assert rec["provenance"]["device"].startswith("cpu")
    assert "epoch time contrastlab / lightly" in printed.stdout


# ----------------------------------------------------------------------------- speed.py

def test_interleave_takes_turns_and_keeps_the_median_of_the_rounds():
    speed = _load("speed")
    calls, seconds = [], {"a": iter([3.0, 1.0, 2.0]), "b": iter([10.0, 30.0, 20.0])}

    def arm(name):
        def run(n):
            calls.append((name, n))
            wall = next(seconds[name])
            return wall, wall / 2
        return run
    res = speed.interleave({"a": arm("a"), "b": arm("b")}, reps=3, steps=2)
    assert calls == [("a", 3), ("b", 3)] * 3            # A B A B A B, each turn one untimed step more
    assert res["a"]["s_per_step"] == 1.0 and res["b"]["s_per_step"] == 10.0   # median of 1.5, 0.5, 1.0 / 5, 15, 10
    assert res["a"]["rounds"] == [1.5, 0.5, 1.0] and res["b"]["cpu_s_per_step"] == 5.0


def test_speed_summary_compares_each_ratio_with_its_target():
    speed = _load("speed")
    m = {"methods": {"simclr": {"full_over_model_only": 0.96, "vs_lightly": 2.9},
                     "swav": {"full_over_model_only": 0.94}},
         "fit": {"epoch_over_steps": 1.08}}
    s = speed.summary(m)
    assert s["vs_lightly"] == 2.9 and s["met"]["vs_lightly"] is False
    assert s["met"]["full_over_model_only"] == {"simclr": True, "swav": False}
    assert s["fit_epoch_over_steps"] == 1.08 and s["met"]["fit_epoch"] is True
    assert speed.summary({"methods": {"byol": {"full_over_model_only": 1.0}}})["met"]["vs_lightly"] is None


def test_speed_rejects_bad_arguments_in_one_line():
    for args, word in ((["--threads", "0"], "--threads must be >= 1, got 0"),
                       (["--methods", "simclr,nope"], "--methods must be a comma-separated list"),
                       (["--workers", "-2"], "--workers must be distinct comma-separated counts >= 0, got '-2'"),
                       (["--workers", "1,x"], "--workers must be distinct comma-separated counts >= 0, got '1,x'")):
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), *args],
                             capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 2 and word in out.stderr and "Traceback" not in out.stderr


def test_speed_smoke_writes_a_consistent_record(tmp_path):
    out = tmp_path / "speed.json"
    printed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--smoke", "--no-lightly", "--methods", "simclr,swav",
         "--n-small", "2", "--threads", "1", "--amp", "bf16", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert printed.returncode == 0, printed.stderr
    rec = json.loads(out.read_text())
    bs = rec["settings"]["batch_size"]
    assert set(rec["methods"]) == {"simclr", "swav"}
    assert rec["methods"]["swav"]["views_per_step"] == 4 * bs and rec["methods"]["simclr"]["views_per_step"] == 2 * bs
    for name, row in rec["methods"].items():
        arms = row["arms"]
        # under bf16, SimCLR's full step is also timed in full precision, for the record
        assert set(arms) == {"full", "model_only", *(["full_fp32"] if name == "simclr" else [])}
        assert len(arms["full"]["rounds"]) == rec["settings"]["reps"] and row["precision"] == "bf16"
        assert row["full_over_model_only"] == pytest.approx(arms["model_only"]["s_per_step"] / arms["full"]["s_per_step"])
        assert row["full_views_per_s"] == pytest.approx(row["views_per_step"] / arms["full"]["s_per_step"])
    f = rec["fit"]
    assert f["steps"] == rec["settings"]["fit_train_size"] // bs and 0 <= f["knn_acc"] <= 1
    assert f["epoch_over_steps"] == pytest.approx(f["epoch_s"] / (f["steps"] * f["step_s"]))
    assert rec["methods"]["simclr"]["full_fp32_views_per_s"] == pytest.approx(
        2 * bs / rec["methods"]["simclr"]["arms"]["full_fp32"]["s_per_step"])
    assert rec["summary"]["vs_lightly"] is None and rec["settings"]["threads"] == 1
    assert (rec["settings"]["amp"], rec["settings"]["precision"]) == ("bf16", "bf16")
    assert rec["provenance"]["device"].startswith("cpu") and rec["provenance"]["commit"]
    assert "full / model only" in printed.stdout and "fit epoch" in printed.stdout


def test_speed_measures_lightlys_pipeline_beside_ours(tmp_path):
    out = tmp_path / "speed.json"
    printed = _run_with_lightly("speed.py", "--smoke", "--methods", "simclr", "--no-fit", "--workers", "0,1",
                                "--threads", "1", "--amp", "off", "--out", str(out))
    assert printed.returncode == 0, printed.stderr
    rec = json.loads(out.read_text())
    row = rec["methods"]["simclr"]
    assert set(row["arms"]) == {"full", "model_only", "lightly_w0", "lightly_w1"}
    # the ratio is taken against lightly's fastest worker count
    lightly = {w: row["arms"][f"lightly_w{w}"]["s_per_step"] for w in (0, 1)}
    best = min(lightly, key=lightly.get)
    assert row["lightly_best_workers"] == best and rec["settings"]["lightly_workers"] == [0, 1]
    assert row["vs_lightly"] == pytest.approx(lightly[best] / row["arms"]["full"]["s_per_step"])
    assert row["vs_lightly"] == min(row["vs_lightly_by_workers"].values())
    assert rec["summary"]["vs_lightly"] == row["vs_lightly"] and rec["settings"]["lightly"] == "1.6.0"
    assert "fit" not in rec and rec["summary"]["met"]["fit_epoch"] is None


def test_speed_table_has_a_column_per_library_and_a_row_per_target():
    speed = _load("speed")

    def figures(commit, precision, vs):
        rows = {m: {"full_over_model_only": 0.9 + i / 100, "precision": precision} for i, m in enumerate(speed.METHODS)}
        rows["simclr"].update(vs_lightly=vs, full_views_per_s=700.0, lightly_views_per_s=200.0)
        if precision == "bf16":
            rows["simclr"].update(vs_lightly_fp32=2.0, full_fp32_views_per_s=400.0)
        return {"commit": commit, "methods": rows, "fit": {"epoch_over_steps": 1.05, "epoch_s": 20.0}}
    rec = {**figures("b" * 40, "bf16", 3.5), "settings": {"lightly_workers": [1, 2]},
           "before": figures("a" * 40, "fp32", 1.8)}
    lines = speed.markdown_table(rec).splitlines()
    assert lines[0] == "| ratio (target) | before (aaaaaaa, fp32) | after (bbbbbbb, bf16) |"
    assert lines[2].startswith("| SimCLR full step / lightly's pipeline at its fastest (1 and 2 DataLoader workers")
    assert lines[2].endswith("| 1.80 (700 / 200 views/s) | 3.50 (700 / 200 views/s) |")
    assert lines[3] == "| the same, our step in fp32 |  | 2.00 (400 views/s) |"       # measured after only
    assert lines[-1] == "| `fit` epoch / (steps x step) (<= 1.10) | 1.050 (20.0 s) | 1.050 (20.0 s) |"
    assert len(lines) == 2 + 2 + len(speed.METHODS) + 1
    del rec["before"]
    assert speed.markdown_table(rec).splitlines()[0] == "| ratio (target) | after (bbbbbbb, bf16) |"
