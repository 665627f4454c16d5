"""The steps of `benchmarks/device_check.sh`: each in its own process, timed, recorded in one JSON.

    python benchmarks/device_check.py --mode device OUT_DIR    # what device_check.sh OUT_DIR runs
    python benchmarks/device_check.py --mode dry OUT_DIR       # every step on the CPU at smoke sizes

Each step of `STEPS` runs in a child process (``--step NAME``) under its time limit, so a crash or
a hang ends that step alone: the check goes on with the next one. After every step the record
``OUT_DIR/device_check.json`` is rewritten: the mode, the machine, and per step its ``status``
('ok' or 'failed'), ``seconds``, ``figures`` and, when it failed, ``error``. Everything the steps
print goes to ``OUT_DIR/device_check.log`` as well as to the terminal.

A step measures; targets (P1's full/model-only ratio, P4's thread ratio, P2's epoch time and
kNN) are reported beside the figures as ``met``, and missing one does not fail the step.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("device", "dry")

# Sizes per mode. device: what the issue asks of one GPU (under 8 minutes in all); dry: the CPU
# at smoke sizes, seconds per step.
SIZES = {
    "device": {
        "device": "cuda",
        "step": {"encoder": "resnet18", "width": None, "batch_size": 512, "image_size": 32, "channels": 3,
                 "dataset_size": 10000, "steps": 20, "warmup": 5},
        "small_size": 16, "amps": ("off", "bf16", "fp16"), "threads": (2, 16),
        "lightly": {"budget": "gpu"},
        "train": {"budget": "gpu", "overrides": {"train.epochs": 3, "train.warmup_epochs": 0.5}},
        "notebook_results": "private",
        "timeouts": {"cuda_tests": 60, "p1": 80, "p4": 30, "p2": 90, "train": 90, "notebooks": 120},
    },
    "dry": {
        "device": "cpu",
        "step": {"encoder": "small_cnn", "width": 4, "batch_size": 16, "image_size": 16, "channels": 3,
                 "dataset_size": 64, "steps": 2, "warmup": 1},
        "small_size": 8, "amps": ("off", "bf16", "fp16"), "threads": (1, 2),
        "lightly": {"budget": "smoke"},
        "train": {"budget": "smoke", "overrides": {"train.device": "cpu"}},
        # the smoke records in results/ (git-ignored): those `make test` trained in CI before this
        "notebook_results": "results",
        # limits far above what a free 2-core machine needs (minutes in all), for a machine shared with other work
        "timeouts": {"cuda_tests": 600, "p1": 600, "p4": 600, "p2": 600, "train": 600, "notebooks": 2400},
    },
}
P1_TARGETS = {"two_views": 0.95, "multi_crop": 0.90}
P4_TARGET = 0.95


def _throughput():
    """benchmarks/throughput.py as a module (benchmarks/ is no package)."""
    return _load("throughput")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- the steps

def parse_pytest_counts(text: str) -> dict:
    """Counts of pytest's closing line, e.g. '3 passed, 1 skipped in 2.0s' -> {'passed': 3, 'skipped': 1}."""
    counts = {}
    for line in reversed(text.strip().splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)", line)
        if found:
            for n, what in found:
                counts["errors" if what.startswith("error") else what] = int(n)
            break
    return counts


def step_cuda_tests(sizes: dict, out: Path) -> dict:
    """``pytest -m cuda``: the tests marked for a CUDA device (they skip themselves without one)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                           str(ROOT / "tests")], capture_output=True, text=True, cwd=ROOT)
    print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors")} | parse_pytest_counts(proc.stdout)
    counts["exit_code"] = proc.returncode
    if proc.returncode == 5:     # no test selected: nothing marked cuda
        counts["note"] = "no test is marked cuda"
    elif proc.returncode != 0:
        raise StepFailed(f"pytest -m cuda exited {proc.returncode}", counts)
    return counts


def step_p1(sizes: dict, out: Path) -> dict:
    """P1: views/s of the full step against the step on premade views, per precision, memory
    format, and for two views (SimCLR) and multi-crop (SwAV, 2 large + 6 small views)."""
    tp, runs, errors = _throughput(), [], []
    for crops, n_small in (("two_views", 0), ("multi_crop", 6)):
        for amp in sizes["amps"]:
            for cl in (True, False):
                row = {"views": crops, "amp": amp, "channels_last": cl}
                try:
                    r = tp.step_rates(device=sizes["device"], amp=amp, channels_last=cl, n_small=n_small,
                                      small_size=sizes["small_size"] if n_small else None, **sizes["step"])
                    row.update({k: r[k] for k in ("full_views_per_s", "premade_views_per_s", "ratio")},
                               target=P1_TARGETS[crops], met=r["ratio"] >= P1_TARGETS[crops])
                    print(tp.format_rates(r), flush=True)
                except Exception as e:   # one setting's failure is recorded; the others still run
                    row["error"] = f"{type(e).__name__}: {e}"
                    errors.append(row["error"])
                runs.append(row)
                _partial(out, "p1", {"runs": runs})
    figures = {"settings": {**sizes["step"], "small_size": sizes["small_size"], "device": sizes["device"]},
               "runs": runs}
    if errors:
        raise StepFailed(f"{len(errors)} of {len(runs)} settings failed: {errors[0]}", figures)
    return figures


def step_p4(sizes: dict, out: Path) -> dict:
    """P4: the full SimCLR step with few and with many CPU threads (the library makes views on the
    device and uses no DataLoader workers, so torch's threads are what a Colab CPU count changes)."""
    tp, rates = _throughput(), {}
    few, many = sizes["threads"]
    for n in (many, few):
        r = tp.step_rates(device=sizes["device"], threads=n, **sizes["step"])
        print(tp.format_rates(r), flush=True)
        rates[n] = r["full_views_per_s"]
    ratio = rates[few] / rates[many]
    return {"threads": [few, many], "full_views_per_s": {str(n): v for n, v in rates.items()},
            "ratio": ratio, "target": P4_TARGET, "met": ratio >= P4_TARGET}


def step_p2(sizes: dict, out: Path) -> dict:
    """P2: SimCLR epochs of contrastlab against lightly's standard pipeline (benchmarks/vs_lightly.py)."""
    vs = _load("vs_lightly")
    rec = vs.compare(device=sizes["device"], **sizes["lightly"])
    print(vs.format_record(rec), flush=True)
    vs.experiments.write_json(out / "vs_lightly.json", rec)
    return {k: rec[k] for k in ("contrastlab", "lightly", "epoch_time_ratio", "speedup", "knn_diff", "targets",
                                "met", "settings")}


def step_train(sizes: dict, out: Path) -> dict:
    """A short run of SimCLR and BYOL on Fashion-MNIST (`experiments.run`, a private results
    folder): kNN and linear accuracy, wall time and peak GPU memory of each."""
    import torch
    from contrastlab import experiments
    figures = {}
    for method in ("simclr", "byol"):
        cuda = torch.cuda.is_available() and sizes["device"] == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        tic = time.perf_counter()
        rec = experiments.run(experiments.ExperimentConfig(method, "fashion-mnist", sizes["train"]["budget"],
                                                           overrides=dict(sizes["train"]["overrides"])),
                              cache_dir=out / "results", force=True, progress=False)
        figures[method] = {"knn_acc": rec["metrics"].get("knn_acc"), "linear_acc": rec["metrics"].get("linear_acc"),
                           "seconds": round(time.perf_counter() - tic, 2), "device": rec["provenance"]["device"],
                           "epochs": rec["config"]["train"]["epochs"],
                           "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None}
        print(method, json.dumps(figures[method]), flush=True)
    figures["budget"], figures["overrides"] = sizes["train"]["budget"], sizes["train"]["overrides"]
    return figures


def step_notebooks(sizes: dict, out: Path) -> dict:
    """Every chapter executed top to bottom in a fresh kernel under the smoke budget (as
    tests/test_notebooks.py does), with the machine's devices visible."""
    import nbformat
    from nbclient import NotebookClient
    results = ROOT / "results" if sizes["notebook_results"] == "results" else out / "notebook-results"
    os.environ.update(CONTRASTLAB_BUDGET="smoke", CONTRASTLAB_RESULTS=str(results))
    chapters, failed = {}, []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        tic = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        try:
            NotebookClient(nb, kernel_name="python3", timeout=600,
                           resources={"metadata": {"path": str(path.parent)}}).execute()
            chapters[path.stem] = {"status": "ok"}
        except Exception as e:
            chapters[path.stem] = {"status": "failed", "error": re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(e))[-1500:]}
            failed.append(path.stem)
        chapters[path.stem]["seconds"] = round(time.perf_counter() - tic, 2)
        _partial(out, "notebooks", {"chapters": chapters, "results": str(results)})
        print(path.name, chapters[path.stem]["status"], chapters[path.stem]["seconds"], "s", flush=True)
    figures = {"chapters": chapters, "results": str(results)}
    if failed:
        raise StepFailed(f"chapters failed: {', '.join(failed)}", figures)
    return figures


def _partial(out: Path, name: str, figures: dict) -> None:
    """The figures a step has so far: what the check records if the step runs out of time."""
    (out / f"step-{name}.partial.json").write_text(json.dumps(figures, default=str) + "\n")


STEPS = {"cuda_tests": step_cuda_tests, "p1": step_p1, "p4": step_p4, "p2": step_p2, "train": step_train,
         "notebooks": step_notebooks}


class StepFailed(Exception):
    """A step that ran to its end and failed, with the figures it has."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


def run_step(name: str, mode: str, out: Path) -> dict:
    """Run one step in this process; its result {status, figures, error} goes to out/step-NAME.json."""
    try:
        result = {"status": "ok", "figures": STEPS[name](SIZES[mode], out), "error": None}
    except StepFailed as e:
        result = {"status": "failed", "figures": e.figures, "error": str(e)}
    except Exception as e:
        import traceback
        traceback.print_exc()
        result = {"status": "failed", "figures": {}, "error": f"{type(e).__name__}: {e}"}
    (out / f"step-{name}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


# ----------------------------------------------------------------------------- the check

def machine() -> dict:
    """What ran the check: Python, torch, the device, the checkout's commit."""
    import torch
    cuda = torch.cuda.is_available()
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        commit = git.stdout.strip() if git.returncode == 0 else None
    except OSError:   # no git on the machine (a copied working tree)
        commit = None
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "cpus": os.cpu_count(),
            "commit": commit or None,
            "host": platform.node()}


def _step_command(name: str, mode: str, out: Path) -> list[str]:
    """The child process that runs step ``name`` (`run_step`)."""
    return [sys.executable, __file__, "--mode", mode, "--step", name, str(out)]


def check(mode: str, out: Path, steps=None, log=print) -> dict:
    """Run the steps (default all) each in a child process under its time limit; return the record."""
    steps = list(STEPS) if steps is None else list(steps)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    record = {"check": "contrastlab device check", "mode": mode, "machine": machine(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": None, "steps": []}
    path = out / "device_check.json"
    for name in steps:
        limit = SIZES[mode]["timeouts"][name]
        log(f"::: {name} (at most {limit} s)")
        for stale in (out / f"step-{name}.json", out / f"step-{name}.partial.json"):
            stale.unlink(missing_ok=True)
        start = time.perf_counter()
        # a process group of its own, so that on time-out the step's children (kernels, workers) end too
        proc = subprocess.Popen(_step_command(name, mode, out), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True)
        timed_out = _relay(proc, limit, log)
        seconds = round(time.perf_counter() - start, 2)
        result_file, partial = out / f"step-{name}.json", out / f"step-{name}.partial.json"
        if timed_out:   # the figures of what it finished, if it kept any
            figures = json.loads(partial.read_text()) if partial.exists() else {}
            result = {"status": "failed", "figures": figures, "error": f"timed out after {limit} s"}
        elif result_file.exists():
            result = json.loads(result_file.read_text())
            result_file.unlink()
        else:
            result = {"status": "failed", "figures": {}, "error": f"the step's process exited {proc.returncode} "
                                                                  "without a result"}
        partial.unlink(missing_ok=True)
        record["steps"].append({"name": name, "status": result["status"], "seconds": seconds,
                                "figures": result["figures"], "error": result["error"]})
        record["seconds"] = round(time.perf_counter() - tic, 2)
        path.write_text(json.dumps(record, indent=1, default=str) + "\n")
        log(f"::: {name}: {result['status']} in {seconds} s" + (f" ({result['error']})" if result["error"] else ""))
    return record


def _relay(proc: subprocess.Popen, limit: float, log) -> bool:
    """Pass the child's output lines to ``log`` until it exits or ``limit`` seconds pass; True on time-out."""
    import threading
    reader = threading.Thread(target=lambda: [log(line.rstrip("\n")) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        proc.wait(timeout=limit)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the group this check started for the step
        proc.wait()
        timed_out = True
    reader.join(timeout=5)
    return timed_out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=MODES, default="device", help="device (default) or dry (CPU, smoke sizes)")
    p.add_argument("--step", choices=list(STEPS), help="run this one step in this process (what the check does)")
    p.add_argument("--only", nargs="+", choices=list(STEPS), help="run these steps only")
    p.add_argument("out", type=Path, help="the folder for device_check.json and device_check.log")
    args = p.parse_args(argv)
    if args.step:
        args.out.mkdir(parents=True, exist_ok=True)
        run_step(args.step, args.mode, args.out)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "device_check.log", "a") as logfile:
        def log(line: str) -> None:
            print(line, flush=True)
            logfile.write(line + "\n")
            logfile.flush()
        record = check(args.mode, args.out, args.only, log)
        failed = [s["name"] for s in record["steps"] if s["status"] != "ok"]
        log(f"device check ({args.mode}): {len(record['steps']) - len(failed)} of {len(record['steps'])} steps "
            f"ok{' (failed: ' + ', '.join(failed) + ')' if failed else ''} in {record['seconds']} s; "
            f"record: {args.out / 'device_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
