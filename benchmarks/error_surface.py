"""How contrastlab answers a user's mistakes: bad command lines, bad API calls, damaged files.

Each case runs in a fresh Python process against the contrastlab of ``--root`` (this checkout by
default; point it at a copy of older code to compare) and is sorted into one outcome:

    clear      the command printed one line ``error: ...`` (or ``interrupted: ...``), no traceback;
               for an API call: an exception raised by contrastlab's own checks
    traceback  (command line only) a Python traceback whose last frame is contrastlab's own code
    raw        a traceback from torch or the standard library (a frame outside contrastlab last)
    silent     the bad input was accepted (exit status 0 / a value returned), or damage went unseen
    works      a case that should succeed did; ``broken`` one that should succeed did not

    python benchmarks/error_surface.py                   # this checkout
    python benchmarks/error_surface.py --root /tmp/old   # a copy of the code before a change
    python benchmarks/error_surface.py --only cli -v     # only the command lines, with each stderr tail

Every case is small (the digits dataset, a few hundred images, one epoch). The command lines and API
calls run in one worker process per ``--root`` (``cli.main(argv)`` with stderr captured, which is what
``python -m contrastlab`` runs); the cases about processes (Ctrl-C, kill -9, concurrent runs and
writers) start real ones.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
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


def _flip_tensor_byte(path: Path) -> None:
    """Flip one exponent bit of the first float stored in the checkpoint's first tensor record."""
    import zipfile
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = min((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.header_offset)
    # local header: 30 bytes, then the name and the extra field (lengths at offsets 26 and 28)
    start = info.header_offset
    name_len = int.from_bytes(data[start + 26:start + 28], "little")
    extra_len = int.from_bytes(data[start + 28:start + 30], "little")
    offset = start + 30 + name_len + extra_len + 3     # byte 3 of a little-endian float32: sign and exponent
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------- the cases
# (name, "cli" | "api", expect "error" | "ok", how) where how(env) returns a CompletedProcess, or a
# (CompletedProcess, override) pair where override is an outcome decided by the case itself.


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


def _other_width_checkpoint(env):
    """The base run's checkpoint (width 4) in the folder of the same run at width 8."""
    import shutil
    results = env.work / "width"
    from contrastlab import experiments
    c = experiments.ExperimentConfig("simclr", "digits", "smoke", overrides={**eval(TINY_API), "encoder.cnn_width": 8})
    folder = experiments.run_dir(experiments.resolve(c), results)
    folder.mkdir(parents=True)
    shutil.copy(env.checkpoint, folder / "checkpoint.pt")
    return env.cli(["train", "simclr", *TINY, "--cnn-width", "8", "--results", str(results)])


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
    deadline = time.time() + 60
    while time.time() < deadline and not list((env.work / "ctrl-c").glob("runs/*/log.jsonl")):
        time.sleep(0.2)                     # the first epoch is written: training is under way
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


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
    rows = [json.loads(line)["epoch"] for line in next(results.glob("runs/*/log.jsonl")).read_text().split()]
    return again, ("works" if rows == [1, 2] else "broken")


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


def _concurrent_runs(env):
    """Three processes run the same config in one results folder: all succeed with one record."""
    results = env.work / "concurrent"
    code = API_PRELUDE + (f"r = experiments.run(cfg(**{{'train.epochs': 3}}), cache_dir={str(results)!r}, "
                          f"progress=False); print('KNN', r['metrics']['knn_acc'])")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env.env, cwd=env.work) for _ in range(3)]
    outs = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    failed = [o for o in outs if o[0]]
    if failed:
        rc, out, err = failed[0]
        return subprocess.CompletedProcess("concurrent", rc, out, err)
    knns = {line for _, out, _ in outs for line in out.splitlines() if line.startswith("KNN")}
    return subprocess.CompletedProcess("concurrent", 0, "", ""), ("works" if len(knns) == 1 else "silent")


def _concurrent_json(env):
    """Two writers rewrite one record while a reader parses it: the reader never sees half a file."""
    path = env.work / "shared.json"
    writer = ("from contrastlab import experiments\n"
              f"for i in range(300): experiments.write_json({str(path)!r}, {{'i': i, 'pad': 'x' * 20000}})")
    reader = (f"import json, time\nbad = 0\nn = 0\nt = time.time()\n"
              f"while time.time() - t < 4:\n"
              f"    try: json.loads(open({str(path)!r}).read()); n += 1\n"
              f"    except FileNotFoundError: pass\n"
              f"    except ValueError: bad += 1; n += 1\n"
              f"print(bad, n)")
    procs = [subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env.env) for _ in range(2)]
    read = env.python(["-c", reader])
    outs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    bad, n = map(int, read.stdout.split())
    failed = [o for o in outs if o[0]]
    if failed:
        return subprocess.CompletedProcess("writers", failed[0][0], failed[0][1], failed[0][2])
    return read, ("silent" if bad else "works")


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


CASES = [
    # command line: refused before anything runs
    ("unknown method", "cli", "error", lambda env: env.cli(["train", "simclrr"])),
    ("unknown dataset", "cli", "error", lambda env: env.cli(["train", "simclr", "--dataset", "mnist"])),
    ("--epochs abc", "cli", "error", _train("--epochs", "abc")),
    ("--epochs -1", "cli", "error", _train("--epochs", "-1")),
    ("--batch-size 0", "cli", "error", _train("--batch-size", "0")),
    ("--warmup-epochs -3", "cli", "error", _train("--warmup-epochs", "-3")),
    ("--test-size 0", "cli", "error", _train("--test-size", "0")),
    ("--train-size above the dataset", "cli", "error", _train("--train-size", "99999")),
    ("--knn-k 0", "cli", "error", _train("--knn-k", "0")),
    ("--linear-epochs 0", "cli", "error", _train("--linear-epochs", "0")),
    ("--temperature 0", "cli", "error", _train("--temperature", "0")),
    ("--optimizer rmsprop", "cli", "error", _train("--optimizer", "rmsprop")),
    ("--results is a file", "cli", "error", _results_is_a_file),
    ("--device cuda without a GPU", "cli", "error", _train("--device", "cuda")),
    ("compare --set train.epochs=abc", "cli", "error", _compare("--set", "train.epochs=abc")),
    ("compare --set train.batch_size=64.0", "cli", "error", _compare("--set", "train.batch_size=64.0")),
    ("compare --set train.nosuch=1", "cli", "error", _compare("--set", "train.nosuch=1")),
    ("compare --set without =", "cli", "error", _compare("--set", "train.epochs")),
    ("eval a missing file", "cli", "error", lambda env: env.cli(["eval", str(env.work / "nope.pt")])),
    ("eval a garbage file", "cli", "error", _eval_garbage),
    ("eval a checkpoint with a flipped bit", "cli", "error", _eval_flipped),
    ("resume a checkpoint of another width", "cli", "error", _other_width_checkpoint),
    ("garbage .gz dataset file", "cli", "error", _garbage_gz),
    ("diverging training (--lr 1e30)", "cli", "error", _diverge_cli),
    ("Ctrl-C during training", "cli", "error", _ctrl_c),
    # command line: should work
    ("--label-fractions 0.1", "cli", "ok", _train("--label-fractions", "0.1")),
    ("eval DIRECTORY", "cli", "ok", _eval_directory),
    ("record '{}' is recomputed", "cli", "ok", _corrupt_record("{}")),
    ("truncated record is recomputed", "cli", "ok", _corrupt_record('{"config": {"budget"')),
    ("empty record is recomputed", "cli", "ok", _corrupt_record("")),
    # API
    ("nt_xent on (N, 0)", "api", "error", _api("losses.nt_xent(torch.randn(8, 0), torch.randn(8, 0))")),
    ("knn_accuracy on NaN features", "api", "error", _api(
        "f = torch.full((50, 4), float('nan')); y = torch.arange(50) % 5\n"
        "print(metrics.knn_accuracy(f, y, f, y, k=5))")),
    ("linear_probe on NaN features", "api", "error", _api(
        "f = torch.randn(50, 4); f[3, 1] = float('inf'); y = torch.arange(50) % 5\n"
        "print(metrics.linear_probe(f, y, f, y, epochs=5))")),
    ("override train.epochs='1'", "api", "error", _api("experiments.run(cfg(**{'train.epochs': '1'}), "
                                                      "cache_dir='api-str', progress=False)")),
    ("override train.batch_size=64.0", "api", "error", _api("experiments.resolve(cfg(**{'train.batch_size': 64.0}))")),
    ("override dataset.test_size=0", "api", "error", _api("experiments.resolve(cfg(**{'dataset.test_size': 0}))")),
    ("override train.warmup_epochs=-3", "api", "error", _api("experiments.resolve(cfg(**{'train.warmup_epochs': -3}))")),
    ("override eval.knn_k=0", "api", "error", _api("experiments.resolve(cfg(**{'eval.knn_k': 0}))")),
    ("override augment.crop_scale=0.5", "api", "error", _api("experiments.resolve(cfg(**{'augment.crop_scale': 0.5}))")),
    ("full disk during a checkpoint write", "api", "error", _enospc),
    ("load a checkpoint with a flipped bit", "api", "error", _flipped_load),
    ("diverging fit (lr 1e30)", "api", "error", _api(
        "experiments.run(cfg(**{'train.lr': 1e30, 'train.epochs': 3}), cache_dir='api-div', progress=False)")),
    ("run with a record '{}'", "api", "ok", _corrupt_record_api),
    ("log.jsonl after kill -9 and resume", "api", "ok", _kill_after_log_row),
    ("3 concurrent runs of one config", "api", "ok", _concurrent_runs),
    ("2 concurrent record writers + a reader", "api", "ok", _concurrent_json),
]


def _last_frame_is_ours(stderr: str) -> bool:
    frames = re.findall(r'File "([^"]+)"', stderr)
    return bool(frames) and "contrastlab" in Path(frames[-1]).parts


def classify(kind: str, expect: str, done: subprocess.CompletedProcess) -> str:
    err = done.stderr or ""
    tb = "Traceback (most recent call last)" in err
    if expect == "ok":
        return "works" if done.returncode == 0 else "broken"
    if done.returncode == 0:
        return "silent"
    if kind == "api":
        return "clear" if tb and _last_frame_is_ours(err) else "raw"
    if not tb:
        lines = [line for line in err.splitlines() if line.strip()]
        return "clear" if lines and re.match(r"(.*: )?(error|interrupted)\b", lines[-1]) else "raw"
    return "traceback" if _last_frame_is_ours(err) else "raw"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]),
                        help="folder holding the contrastlab package to try (default: this checkout)")
    parser.add_argument("--only", choices=("cli", "api"), help="only these cases")
    parser.add_argument("-k", default=None, help="only the cases whose name contains this")
    parser.add_argument("-v", action="store_true", help="print each case's last stderr line")
    parser.add_argument("--json", default=None, help="also write the outcomes to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="error-surface-") as work:
        env = Env(Path(args.root).resolve(), Path(work))
        sys.path.insert(0, str(env.root))         # the cases run in-process import this contrastlab
        os.environ.update({k: env.env[k] for k in ("CONTRASTLAB_BUDGET", "CUDA_VISIBLE_DEVICES", "CONTRASTLAB_DEBUG")})
        os.chdir(work)
        env.prepare()
        outcomes = []
        for name, kind, expect, how in CASES:
            if (args.only and kind != args.only) or (args.k and args.k not in name):
                continue
            tic = time.perf_counter()
            try:
                got = how(env)
            except subprocess.TimeoutExpired as e:      # counted as a hang, not a crash of this script
                got = subprocess.CompletedProcess(e.cmd, -9, "", "timed out"), "hang"
            done, override = got if isinstance(got, tuple) else (got, None)
            outcome = override or classify(kind, expect, done)
            outcomes.append({"case": name, "kind": kind, "expect": expect, "outcome": outcome})
            tail = [line for line in (done.stderr or "").splitlines() if line.strip()][-1:]
            print(f"{kind:3}  {outcome:9}  {time.perf_counter() - tic:5.1f}s  {name}"
                  + (f"\n      {tail[0][:200]}" if args.v and tail else ""), flush=True)
    for kind in ("cli", "api"):
        counts = Counter(o["outcome"] for o in outcomes if o["kind"] == kind)
        if counts:
            print(f"{kind}: " + ", ".join(f"{k} {counts[k]}" for k in
                                         ("clear", "traceback", "raw", "silent", "hang", "works", "broken") if counts[k]))
    if args.json:
        Path(args.json).write_text(json.dumps(outcomes, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
