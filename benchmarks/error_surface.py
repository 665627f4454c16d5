"""How contrastlab answers a user's mistakes: bad command lines, bad API calls, damaged files.

Each case runs against the contrastlab of ``--root`` (this checkout by default) and is sorted into
one outcome:

    clear      the command printed one line ``error: ...`` (or ``interrupted: ...``), no traceback,
               naming the argument or file at fault; for an API call: an exception raised by
               contrastlab's own checks, naming it
    vague      such a line or exception, but it does not name the argument or file at fault
    traceback  (command line only) a Python traceback whose last frame is contrastlab's own code
    raw        a traceback from torch or the standard library (a frame outside contrastlab last)
    silent     the bad input was accepted (exit status 0 / a value returned), or damage went unseen
    works      a case that should succeed did; ``broken`` one that should succeed did not
    hang       the case ran past its time limit; ``skipped`` it cannot be set up here

The cases come in four kinds: ``cli`` (command lines and config values), ``api`` (calls of the
library), ``files`` (damaged, mismatched or unwritable files) and ``processes`` (Ctrl-C, kill -9,
concurrent runs and writers).

    python benchmarks/error_surface.py                   # this checkout
    python benchmarks/error_surface.py --root /tmp/old   # a copy of the code before a change
    python benchmarks/error_surface.py --only cli -v     # only the command lines, with each stderr tail
    python benchmarks/error_surface.py --before 2e5071b --json results/benchmarks/error-surface.json
                                                         # that commit (a temporary git worktree) and
                                                         # this checkout, counted side by side

Every case is small (the digits dataset, a few hundred images, one epoch). The command lines and API
calls run in one worker process per ``--root`` (``cli.main(argv)`` with stderr captured, which is what
``python -m contrastlab`` runs); the cases about processes (Ctrl-C, kill -9, concurrent runs and
writers) start real ones. With ``--before`` each side runs in a process of its own, one after the
other.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

TINY = ["--dataset", "digits", "--budget", "smoke", "--train-size", "300", "--test-size", "100",
        "--cnn-width", "4", "--batch-size", "64", "--monitor-train", "100", "--monitor-test", "50",
        "--linear-epochs", "5"]
# the same run as overrides of the API (experiments.run), for the API cases
TINY_API = ("{'dataset.train_size': 300, 'dataset.test_size': 100, 'encoder.cnn_width': 4, "
            "'train.batch_size': 64, 'train.monitor_train': 100, 'train.monitor_test': 50, "
            "'eval.linear_epochs': 5}")
API_PRELUDE = f"""
import io, json, os, sys, torch
from pathlib import Path
from contrastlab import experiments, metrics, losses, train
TINY = {TINY_API}
def cfg(**over):
    return experiments.ExperimentConfig(method='simclr', dataset='digits', budget='smoke',
                                        overrides={{**TINY, **over}})
"""


class Env:
    """The folders and prepared files the cases share (made once per run of this script)."""

    def __init__(self, root: Path, work: Path):
        self.root, self.work = root, work
        self.results = work / "base"          # one trained tiny run, its record and checkpoint
        self.env = {**os.environ, "PYTHONPATH": str(root), "CONTRASTLAB_BUDGET": "smoke",
                    "CUDA_VISIBLE_DEVICES": "", "CONTRASTLAB_DEBUG": "", "PYTHONWARNINGS": "ignore"}

    def python(self, args, *, timeout=240, env=None, cwd=None):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env or {})}, cwd=cwd or self.work)

    def cli(self, args, env=None):
        """``python -m contrastlab ARGS`` in this process: its exit status and what it printed on stderr."""
        from contrastlab import cli
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    rc = cli.main([str(a) for a in args])
                except SystemExit as e:         # what the interpreter prints for it, as it would
                    rc = e.code if isinstance(e.code, int) else 1
                    if isinstance(e.code, str):
                        print(e.code, file=sys.stderr)
                except BaseException:           # what reaches the interpreter: a traceback
                    traceback.print_exc(file=sys.stderr)
                    rc = 1
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        return subprocess.CompletedProcess(args, rc or 0, "", err.getvalue())

    def api(self, code: str):
        """``code`` run in this process after API_PRELUDE: status 1 and the traceback if it raises."""
        err = io.StringIO()
        rc = 0
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                exec(compile(API_PRELUDE + code, "<case>", "exec"), {"__name__": "__case__"})
            except BaseException:
                traceback.print_exc(file=sys.stderr)
                rc = 1
        return subprocess.CompletedProcess(code, rc, "", err.getvalue())

    def prepare(self) -> None:
        done = self.cli(["train", "simclr", *TINY, "--results", str(self.results)])
        if done.returncode:
            raise SystemExit(f"the base run failed:\n{done.stderr[-3000:]}")
        self.checkpoint = next(self.results.glob("runs/*/checkpoint.pt"))
        self.record = next(self.results.glob("simclr-*.json"))

    def copy_run(self, name: str) -> Path:
        """A fresh copy of the base results folder (so a case may damage it)."""
        import shutil
        dest = self.work / name
        shutil.copytree(self.results, dest)
        return dest


def _flip_tensor_byte(path: Path, last: bool = False) -> None:
    """Flip one exponent bit of the first float stored in the checkpoint's first tensor record (its
    last one with ``last``: the optimizer's state, written after the model's)."""
    import zipfile
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        tensors = [i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 4]
        info = (max if last else min)(tensors, key=lambda i: i.header_offset)
    # local header: 30 bytes, then the name and the extra field (lengths at offsets 26 and 28)
    start = info.header_offset
    name_len = int.from_bytes(data[start + 26:start + 28], "little")
    extra_len = int.from_bytes(data[start + 28:start + 30], "little")
    offset = start + 30 + name_len + extra_len + 3     # byte 3 of a little-endian float32: sign and exponent
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------- the cases
# Each case: (name, kind, via, expect, names, how). kind: cli | api | files | processes (how the counts
# are grouped); via: "cli" (a command line, judged by its stderr) or "api" (Python, judged by the
# exception); expect: "error" or "ok"; names: a pattern the error must contain to be clear (the
# argument or file at fault); how(env) returns a CompletedProcess, or a (CompletedProcess, override)
# pair where override is an outcome decided by the case itself.


def _train(*extra, results=None):
    def case(env):
        return env.cli(["train", "simclr", *TINY, *extra, "--results", str(results or env.work / "scratch")])
    return case


def _compare(*extra):
    def case(env):
        return env.cli(["compare", "simclr", "--dataset", "digits", "--budget", "smoke",
                        "--set", "dataset.train_size=300,dataset.test_size=100,encoder.cnn_width=4,"
                        "train.batch_size=64,eval.linear_epochs=5", *extra,
                        "--results", str(env.work / "scratch")])
    return case


def _results_is_a_file(env):
    file = env.work / "results-file"
    file.write_text("not a folder")
    return env.cli(["train", "simclr", *TINY, "--results", str(file)])


def _eval_directory(env):
    return env.cli(["eval", str(env.checkpoint.parent)])


def _eval_garbage(env):
    bad = env.work / "garbage.pt"
    bad.write_bytes(b"\x80garbage")
    return env.cli(["eval", str(bad)])


def _eval_flipped(env):
    results = env.copy_run("flipped")
    ckpt = next(results.glob("runs/*/checkpoint.pt"))
    _flip_tensor_byte(ckpt)
    return env.cli(["eval", str(ckpt)])


def _corrupt_record(text: str):
    def case(env):
        results = env.copy_run(f"record-{len(text)}")
        next(results.glob("simclr-*.json")).write_text(text)
        done = env.cli(["train", "simclr", *TINY, "--results", str(results)])
        record = next(results.glob("simclr-*.json"))
        try:
            ok = "metrics" in json.loads(record.read_text())
        except ValueError:
            ok = False
        if done.returncode == 0 and not ok:
            return done, "silent"
        return done
    return case


def _other_checkpoint(method: str, width: int):
    """The base run's checkpoint (simclr, width 4) in the run folder of ``method`` at ``width``."""
    def case(env):
        from contrastlab import experiments
        results = env.work / f"other-{method}-{width}"
        c = experiments.ExperimentConfig(method, "digits", "smoke",
                                         overrides={**eval(TINY_API), "encoder.cnn_width": width})
        folder = experiments.run_dir(experiments.resolve(c), results)
        folder.mkdir(parents=True)
        shutil.copy(env.checkpoint, folder / "checkpoint.pt")
        return env.cli(["train", method, *TINY, "--cnn-width", str(width), "--results", str(results)])
    return case


def _resume_flipped(env):
    """A run whose record is gone resumes from its checkpoint, one bit of the optimizer's state flipped."""
    results = env.copy_run("flipped-resume")
    next(results.glob("simclr-*.json")).unlink()
    _flip_tensor_byte(next(results.glob("runs/*/checkpoint.pt")), last=True)
    return env.cli(["train", "simclr", *TINY, "--results", str(results)])


def _results_read_only(env):
    """A results folder this user cannot write: chmod for a user, a read-only tmpfs mount for root
    (whom permissions do not stop); skipped where neither can be made."""
    folder = env.work / "read-only"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
        if not mounted:
            return subprocess.CompletedProcess("read-only", 0, "", "cannot mount"), "skipped"
    else:
        folder.chmod(0o555)
    try:
        return env.cli(["train", "simclr", *TINY, "--results", str(folder)])
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True)
        folder.chmod(0o755)


def _garbage_gz(env):
    data = env.work / "data-gz"
    data.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (data / f"{stem}.gz").write_bytes(b"this is not gzip data at all")
    return env.cli(["train", "simclr", *TINY[2:], "--dataset", "fashion-mnist", "--results",
                    str(env.work / "scratch")], env={"CONTRASTLAB_DATA": str(data)})


def _ctrl_c(env):
    """SIGINT once the run has started training (a long run of 200 epochs): a message, no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "contrastlab", "train", "simclr", *TINY, "--epochs", "200",
                             "--results", str(env.work / "ctrl-c")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env.env, cwd=env.work)
    deadline = time.time() + 180
    while time.time() < deadline and not list((env.work / "ctrl-c").glob("runs/*/log.jsonl")):
        time.sleep(0.2)                     # the first epoch is written: training is under way
    proc.send_signal(signal.SIGINT)
    (rc, out, err), = _communicate([proc], timeout=120)
    return subprocess.CompletedProcess(proc.args, rc, out, err)


def _diverge_cli(env):
    return env.cli(["train", "simclr", *TINY, "--lr", "1e30", "--epochs", "3", "--results",
                    str(env.work / "diverge")])


def _kill_after_log_row(env):
    """kill -9 of a run between an epoch's log row and its checkpoint, then the same run again:
    log.jsonl must hold one row per epoch."""
    results = env.work / "killed"
    code = API_PRELUDE + f"""
import os
real = train.save_checkpoint
def dying(state, path):
    if state['step'] > 5:                   # the second epoch's checkpoint: die as kill -9 would
        os._exit(9)
    return real(state, path)
train.save_checkpoint = dying
experiments.run(cfg(**{{'train.epochs': 2}}), cache_dir={str(results)!r}, progress=False)
"""
    first = env.python(["-c", code])
    again = env.python(["-c", API_PRELUDE + f"experiments.run(cfg(**{{'train.epochs': 2}}), "
                                            f"cache_dir={str(results)!r}, progress=False)"])
    if first.returncode != 9 or again.returncode:
        return again, "broken"
    rows = [json.loads(line)["epoch"] for line in next(results.glob("runs/*/log.jsonl")).read_text().splitlines()]
    return again, ("works" if rows == [1, 2] else "broken")


def _communicate(procs, timeout):
    """(returncode, stdout, stderr) of each process; all of them killed if one outlives ``timeout``."""
    deadline = time.time() + timeout
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.time()))
            outs.append((p.returncode, out, err))
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def _api(code: str):
    def case(env):
        return env.api(code)
    return case


def _enospc(env):
    """A full disk during a checkpoint write: a clear OSError, and no partial temporary file left."""
    folder = env.work / "enospc"
    code = f"""
import builtins, errno, os, torch
from contrastlab import train
def full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
real_write, real_open = os.write, builtins.open
def write(fd, data):                        # 1000 bytes reach the disk, then it is full
    real_write(fd, bytes(data)[:1000])
    full()
class Full:
    def __init__(self, f): self.f = f
    def write(self, data): self.f.write(bytes(data)[:1000]); self.f.flush(); full()
    def __getattr__(self, name): return getattr(self.f, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self.f.close()
def opener(file, mode="r", *args, **kw):
    f = real_open(file, mode, *args, **kw)
    return Full(f) if "w" in mode and "b" in mode else f
os.write, builtins.open = write, opener
train.save_checkpoint({{'format': train.CHECKPOINT_FORMAT, 'w': torch.randn(1000, 1000)}}, {str(folder)!r} + '/checkpoint.pt')
"""
    done = env.python(["-c", code])
    left = [p.name for p in folder.iterdir()] if folder.exists() else []
    if done.returncode and left:
        return done, "raw"                  # whatever it said, the partial file holds the space
    return done


def _spawn(env, code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env.env, cwd=env.work)


def _first_failure(outs, what):
    failed = [o for o in outs if o[0]]
    return subprocess.CompletedProcess(what, failed[0][0], failed[0][1], failed[0][2]) if failed else None


def _barrier(folder: Path, i: int) -> str:
    """Code for process ``i`` to say it is ready (imports done) and wait for the others (`_go`)."""
    return (f"\nimport os, time\nopen({str(folder / f'ready-{i}')!r}, 'w').close()\n"
            f"while not os.path.exists({str(folder / 'go')!r}): time.sleep(0.02)\n")


def _go(folder: Path, procs, timeout=300) -> None:
    """Start the processes of `_barrier` together, once each one is ready (or has died)."""
    deadline = time.time() + timeout
    while (len(list(folder.glob("ready-*"))) < len(procs) and time.time() < deadline
           and all(p.poll() is None for p in procs)):
        time.sleep(0.05)
    (folder / "go").touch()


def _concurrent_runs(env):
    """Three processes start the same config in one results folder at the same moment: all succeed
    with one record."""
    results, sync = env.work / "concurrent", env.work / "concurrent-sync"
    sync.mkdir()
    procs = [_spawn(env, API_PRELUDE + _barrier(sync, i) + (
        f"r = experiments.run(cfg(**{{'train.epochs': 3}}), cache_dir={str(results)!r}, progress=False)\n"
        "print('KNN', r['metrics']['knn_acc'])")) for i in range(3)]
    _go(sync, procs)
    outs = _communicate(procs, timeout=400)
    failed = _first_failure(outs, "concurrent")
    if failed:
        return failed
    knns = {line for _, out, _ in outs for line in out.splitlines() if line.startswith("KNN")}
    return subprocess.CompletedProcess("concurrent", 0, "", ""), ("works" if len(knns) == 1 else "silent")


def _concurrent_writers(env, what: str):
    """Two writers rewrite one record (or checkpoint) while this process reads it through the library
    for 4 seconds: the reader never sees half a file, nor a mix of the two writers' bytes."""
    from contrastlab import train
    sync = env.work / f"writers-{what}"
    sync.mkdir()
    stop = sync / "stop"
    if what == "record":
        path = sync / "shared.json"
        write = f"experiments.write_json({str(path)!r}, {{'i': i, 'pad': 'x' * 20000}})"
    else:
        path = sync / "checkpoint.pt"
        write = (f"train.save_checkpoint({{'format': train.CHECKPOINT_FORMAT, 'i': i, "
                 f"'w': torch.full((20000,), float(i))}}, {str(path)!r})")
    writers = [_spawn(env, "import torch\nfrom contrastlab import experiments, train" + _barrier(sync, n) +
                      f"i = 0\nt = time.time()\nwhile not os.path.exists({str(stop)!r}) and time.time() - t < 60:\n"
                      f"    {write}\n    i += 1") for n in range(2)]
    _go(sync, writers)
    bad = mixed = reads = 0
    t = time.time()
    while time.time() - t < 4 and all(w.poll() is None for w in writers):
        try:
            if what == "record":
                json.loads(path.read_text())
            else:
                state = train.load_checkpoint(path)
                mixed += not bool((state["w"] == state["i"]).all())
            reads += 1
        except FileNotFoundError:
            pass
        except Exception:
            bad += 1
            reads += 1
    stop.touch()
    failed = _first_failure(_communicate(writers, timeout=120), "writers")
    if failed:
        return failed
    done = subprocess.CompletedProcess("writers", 0, "", f"{bad} damaged and {mixed} mixed of {reads} reads")
    return done, ("silent" if bad or mixed else "works")


def _flipped_load(env):
    results = env.copy_run("flipped-api")
    ckpt = next(results.glob("runs/*/checkpoint.pt"))
    _flip_tensor_byte(ckpt)
    return env.api(f"train.load_checkpoint({str(ckpt)!r})")


def _corrupt_record_api(env):
    results = env.copy_run("record-api")
    next(results.glob("simclr-*.json")).write_text("{}")
    return env.api(f"r = experiments.run(cfg(), cache_dir={str(results)!r}, progress=False)"
                   f"\nassert 'metrics' in r, 'the record returned is empty'")


def _error(name, kind, via, names, how):
    return name, kind, via, "error", names, how


def _ok(name, kind, via, how):
    return name, kind, via, "ok", None, how


_PATH = r"checkpoint\.pt"     # an error about a checkpoint names its file
CASES = [
    # command line and config values: refused before anything runs
    _error("unknown method", "cli", "cli", "simclrr", lambda env: env.cli(["train", "simclrr"])),
    _error("unknown dataset", "cli", "cli", "mnist", lambda env: env.cli(["train", "simclr", "--dataset", "mnist"])),
    _error("--epochs abc", "cli", "cli", "epochs", _train("--epochs", "abc")),
    _error("--epochs -1", "cli", "cli", "epochs", _train("--epochs", "-1")),
    _error("--batch-size 0", "cli", "cli", "batch", _train("--batch-size", "0")),
    _error("--warmup-epochs -3", "cli", "cli", "warmup", _train("--warmup-epochs", "-3")),
    _error("--test-size 0", "cli", "cli", "test.size", _train("--test-size", "0")),
    _error("--train-size above the dataset", "cli", "cli", "train.size", _train("--train-size", "99999")),
    _error("--knn-k 0", "cli", "cli", "knn", _train("--knn-k", "0")),
    _error("--linear-epochs 0", "cli", "cli", "linear", _train("--linear-epochs", "0")),
    _error("--temperature 0", "cli", "cli", "temperature", _train("--temperature", "0")),
    _error("--optimizer rmsprop", "cli", "cli", "optimizer", _train("--optimizer", "rmsprop")),
    _error("--results is a file", "cli", "cli", "results", _results_is_a_file),
    _error("--results is read-only", "cli", "cli", "results", _results_read_only),
    _error("--device cuda without a GPU", "cli", "cli", "device", _train("--device", "cuda")),
    _error("compare --set train.epochs=abc", "cli", "cli", "train.epochs", _compare("--set", "train.epochs=abc")),
    _error("compare --set train.batch_size=64.0", "cli", "cli", "train.batch_size",
           _compare("--set", "train.batch_size=64.0")),
    _error("compare --set train.nosuch=1", "cli", "cli", "train.nosuch", _compare("--set", "train.nosuch=1")),
    _error("compare --set without =", "cli", "cli", r"'train\.epochs'", _compare("--set", "train.epochs")),
    _error("diverging training (--lr 1e30)", "cli", "cli", r"step \d+", _diverge_cli),
    _ok("--label-fractions 0.1", "cli", "cli", _train("--label-fractions", "0.1")),
    _ok("eval DIRECTORY", "cli", "cli", _eval_directory),
    # library calls
    _error("nt_xent on (N, 0)", "api", "api", r"\(8, 0\)", _api("losses.nt_xent(torch.randn(8, 0), torch.randn(8, 0))")),
    _error("knn_accuracy on NaN features", "api", "api", "features", _api(
        "f = torch.full((50, 4), float('nan')); y = torch.arange(50) % 5\n"
        "print(metrics.knn_accuracy(f, y, f, y, k=5))")),
    _error("linear_probe on NaN features", "api", "api", "features", _api(
        "f = torch.randn(50, 4); f[3, 1] = float('inf'); y = torch.arange(50) % 5\n"
        "print(metrics.linear_probe(f, y, f, y, epochs=5))")),
    _error("override train.epochs='1'", "api", "api", "train.epochs", _api(
        "experiments.run(cfg(**{'train.epochs': '1'}), cache_dir='api-str', progress=False)")),
    _error("override train.batch_size=64.0", "api", "api", "train.batch_size",
           _api("experiments.resolve(cfg(**{'train.batch_size': 64.0}))")),
    _error("override dataset.test_size=0", "api", "api", "test_size",
           _api("experiments.resolve(cfg(**{'dataset.test_size': 0}))")),
    _error("override train.warmup_epochs=-3", "api", "api", "warmup_epochs",
           _api("experiments.resolve(cfg(**{'train.warmup_epochs': -3}))")),
    _error("override eval.knn_k=0", "api", "api", "knn_k", _api("experiments.resolve(cfg(**{'eval.knn_k': 0}))")),
    _error("override augment.crop_scale=0.5", "api", "api", "crop_scale",
           _api("experiments.resolve(cfg(**{'augment.crop_scale': 0.5}))")),
    _error("diverging fit (lr 1e30)", "api", "api", r"step \d+", _api(
        "experiments.run(cfg(**{'train.lr': 1e30, 'train.epochs': 3}), cache_dir='api-div', progress=False)")),
    # damaged, mismatched or unwritable files
    _error("eval a missing file", "files", "cli", r"nope\.pt", lambda env: env.cli(["eval", str(env.work / "nope.pt")])),
    _error("eval a garbage file", "files", "cli", r"garbage\.pt", _eval_garbage),
    _error("eval a checkpoint with a flipped bit", "files", "cli", _PATH, _eval_flipped),
    _error("resume a checkpoint with a flipped bit", "files", "cli", _PATH, _resume_flipped),
    _error("resume a checkpoint of another width", "files", "cli", _PATH, _other_checkpoint("simclr", 8)),
    _error("resume a checkpoint of another method", "files", "cli", _PATH, _other_checkpoint("byol", 4)),
    _error("garbage .gz dataset file", "files", "cli", r"\.gz", _garbage_gz),
    _error("load a checkpoint with a flipped bit", "files", "api", _PATH, _flipped_load),
    _error("full disk during a checkpoint write", "files", "api", _PATH, _enospc),
    _ok("record '{}' is recomputed", "files", "cli", _corrupt_record("{}")),
    _ok("truncated record is recomputed", "files", "cli", _corrupt_record('{"config": {"budget"')),
    _ok("empty record is recomputed", "files", "cli", _corrupt_record("")),
    _ok("run with a record '{}'", "files", "api", _corrupt_record_api),
    # processes: interrupted, killed, or several at once
    _error("Ctrl-C during training", "processes", "cli", "interrupted", _ctrl_c),
    _ok("log.jsonl after kill -9 and resume", "processes", "api", _kill_after_log_row),
    _ok("3 concurrent runs of one config", "processes", "api", _concurrent_runs),
    _ok("2 concurrent record writers + a reader", "processes", "api", lambda env: _concurrent_writers(env, "record")),
    _ok("2 concurrent checkpoint writers + a reader", "processes", "api",
        lambda env: _concurrent_writers(env, "checkpoint")),
]
KINDS = ("cli", "api", "files", "processes")
OUTCOMES = ("clear", "vague", "traceback", "raw", "silent", "hang", "works", "broken", "skipped", "harness")


def _last_frame_is_ours(stderr: str) -> bool:
    frames = re.findall(r'File "([^"]+)"', stderr)
    return bool(frames) and "contrastlab" in Path(frames[-1]).parts


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def classify(via: str, expect: str, names: str | None, done: subprocess.CompletedProcess) -> str:
    err = done.stderr or ""
    tb = "Traceback (most recent call last)" in err
    if expect == "ok":
        return "works" if done.returncode == 0 else "broken"
    if done.returncode == 0:
        return "silent"
    named = names is None or re.search(names, _last_line(err), re.IGNORECASE) is not None
    if via == "api":
        return ("clear" if named else "vague") if tb and _last_frame_is_ours(err) else "raw"
    if not tb:
        if re.match(r"(.*: )?(error|interrupted)\b", _last_line(err)):
            return "clear" if named else "vague"
        return "raw"
    return "traceback" if _last_frame_is_ours(err) else "raw"


def run_cases(root: Path, only=None, k=None, verbose=False) -> list[dict]:
    """Every case (of kind ``only``, whose name holds ``k``) against the contrastlab of ``root``, in
    this process: call it in a process of its own for each root."""
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="error-surface-") as work:
        env = Env(root.resolve(), Path(work))
        sys.path.insert(0, str(env.root))         # the cases run in-process import this contrastlab
        os.environ.update({k: env.env[k] for k in ("CONTRASTLAB_BUDGET", "CUDA_VISIBLE_DEVICES", "CONTRASTLAB_DEBUG")})
        here = os.getcwd()
        os.chdir(work)
        try:
            env.prepare()
            for name, kind, via, expect, names, how in CASES:
                if (only and kind != only) or (k and k not in name):
                    continue
                tic = time.perf_counter()
                try:
                    got = how(env)
                except subprocess.TimeoutExpired as e:      # a hang, not a crash of this script
                    got = subprocess.CompletedProcess(e.cmd, -9, "", "timed out"), "hang"
                except Exception:                           # the case itself failed: say so, go on
                    got = subprocess.CompletedProcess(name, 1, "", traceback.format_exc()), "harness"
                done, override = got if isinstance(got, tuple) else (got, None)
                outcome = override or classify(via, expect, names, done)
                message = _last_line(done.stderr)[:300]
                outcomes.append({"case": name, "kind": kind, "expect": expect, "outcome": outcome,
                                 "message": message})
                print(f"{kind:9}  {outcome:9}  {time.perf_counter() - tic:5.1f}s  {name}"
                      + (f"\n           {message[:200]}" if verbose and message else ""), flush=True)
        finally:
            os.chdir(here)
    return outcomes


def counts(outcomes: list[dict]) -> dict:
    """{kind: {outcome: n}} over the kinds and outcomes that occur."""
    table = {}
    for kind in KINDS:
        c = Counter(o["outcome"] for o in outcomes if o["kind"] == kind)
        if c:
            table[kind] = {name: c[name] for name in OUTCOMES if c[name]}
    return table


def _counts_line(c: dict) -> str:
    return ", ".join(f"{k} {n}" for k, n in c.items()) or "-"


def _git(*args, cwd) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _side(root: Path, args, label: str) -> list[dict]:
    """This script's cases against ``root`` in a child process (a fresh interpreter imports that
    contrastlab and no other); its outcomes."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, str(Path(__file__).resolve()), "--root", str(root), "--json", out.name,
                   *(["--only", args.only] if args.only else []), *(["-k", args.k] if args.k else []),
                   *(["-v"] if args.v else [])]
        print(f"--- {label}: {root}", flush=True)
        subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(root)})
        return json.loads(Path(out.name).read_text())["outcomes"]


def compare_before(args) -> dict:
    """The cases against commit ``args.before`` (a temporary git worktree) and against ``args.root``."""
    after_root = Path(args.root).resolve()
    repo = Path(_git("rev-parse", "--show-toplevel", cwd=after_root))
    before = _git("rev-parse", "--verify", f"{args.before}^{{commit}}", cwd=repo)
    with tempfile.TemporaryDirectory(prefix="error-surface-before-") as tmp:
        tree = Path(tmp) / "before"
        _git("worktree", "add", "--detach", str(tree), before, cwd=repo)
        try:
            old = _side(tree, args, f"before ({before[:7]})")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, capture_output=True)
    new = _side(after_root, args, "after")
    return {"before": {"commit": before, "outcomes": old}, "after": {**_describe(after_root), "outcomes": new}}


def _describe(root: Path) -> dict:
    try:
        return {"commit": _git("rev-parse", "HEAD", cwd=root),
                "modified": bool(_git("status", "--porcelain", "--untracked-files=no", cwd=root))}
    except (subprocess.CalledProcessError, OSError):
        return {"commit": None}


def print_side_by_side(result: dict) -> None:
    old = {o["case"]: o for o in result["before"]["outcomes"]}
    new = {o["case"]: o for o in result["after"]["outcomes"]}
    print(f"\n{'kind':9}  {'case':44}  {'before':9}  after")
    for name, o in new.items():
        print(f"{o['kind']:9}  {name[:44]:44}  {old.get(name, {}).get('outcome', '-'):9}  {o['outcome']}")
    before_c, after_c = counts(list(old.values())), counts(list(new.values()))
    print(f"\n{'kind':9}  {'n':>3}  {'before':52}  after")
    for kind in KINDS:
        if kind in before_c or kind in after_c:
            n = sum(after_c.get(kind, {}).values())
            print(f"{kind:9}  {n:3}  {_counts_line(before_c.get(kind, {})):52}  {_counts_line(after_c.get(kind, {}))}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]),
                        help="folder holding the contrastlab package to try (default: this checkout)")
    parser.add_argument("--before", metavar="COMMIT", default=None,
                        help="also run the cases against this commit of the repository (checked out in a "
                             "temporary git worktree) and print both sides' outcomes and counts")
    parser.add_argument("--only", choices=KINDS, help="only the cases of this kind")
    parser.add_argument("-k", default=None, help="only the cases whose name contains this")
    parser.add_argument("-v", action="store_true", help="print each case's last stderr line")
    parser.add_argument("--json", default=None, help="also write the outcomes to this JSON file")
    args = parser.parse_args(argv)
    command = "python benchmarks/error_surface.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]) if a != "-v")
    if args.before:
        result = compare_before(args)
        print_side_by_side(result)
        result = {"command": command.strip(), "outcomes_meaning": next(p for p in __doc__.split("\n\n") if "clear  " in p),
                  **result, "counts": {"before": counts(result["before"]["outcomes"]),
                                       "after": counts(result["after"]["outcomes"])}}
    else:
        outcomes = run_cases(Path(args.root), args.only, args.k, args.v)
        for kind, c in counts(outcomes).items():
            print(f"{kind}: {_counts_line(c)}")
        result = {"command": command.strip(), **_describe(Path(args.root)), "outcomes": outcomes,
                  "counts": counts(outcomes)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
