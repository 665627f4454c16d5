"""The command line's errors as a user meets them: a subprocess, one line on stderr, no traceback."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_cli import TINY

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "CONTRASTLAB_DEBUG": "", "CONTRASTLAB_BUDGET": "smoke"}


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "contrastlab", *args], capture_output=True, text=True,
                          env={**ENV, **(env or {})}, timeout=600)


def assert_one_line_error(done, match):
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines()     # the progress bar's lines are not messages
             if line.strip() and not line.startswith("warning:") and "%|" not in line]
    assert lines[-1].startswith("error: ") and match in lines[-1], done.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained run: its results folder and checkpoint."""
    results = tmp_path_factory.mktemp("trained")
    done = cli("train", "simclr", *TINY, "--label-fractions", "0.1", "--results", str(results))
    assert done.returncode == 0, done.stderr
    return results, next(results.glob("runs/*/checkpoint.pt"))


@pytest.mark.parametrize("extra, match", [
    (["--warmup-epochs", "-3"], "train.warmup_epochs must be >= 0"),
    (["--test-size", "0"], "dataset.test_size must be >= 1; None keeps the whole split, got 0"),
    (["--train-size", "99999"], "dataset.train_size must be at most the 1438 images"),
    (["--knn-k", "0"], "eval.knn_k must be >= 1"),
    (["--linear-epochs", "0"], "eval.linear_epochs must be >= 1"),
    (["--epochs", "-1"], "train.epochs must be >= 0"),
    (["--temperature", "0"], "method.temperature must be > 0"),
])
def test_bad_values_are_refused_before_training(tmp_path, extra, match):
    assert_one_line_error(cli("train", "simclr", *TINY, *extra, "--results", str(tmp_path)), match)
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.glob("*.json"))


def test_a_results_path_that_is_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "file").write_text("")
    assert_one_line_error(cli("train", "simclr", *TINY, "--results", str(tmp_path / "file")),
                          "results folder must be a folder")


def test_a_read_only_results_folder_is_refused_before_training(tmp_path):
    """chmod for a user; root writes through permissions, so for root a read-only tmpfs (or a skip)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("root, and no read-only folder can be mounted here")
    else:
        folder.chmod(0o555)
    try:
        done = cli("train", "simclr", *TINY, "--results", str(folder))
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        folder.chmod(0o755)
    assert_one_line_error(done, "results folder must be writable")
    assert "%|" not in done.stderr                # refused before training: no progress bar was drawn


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu(tmp_path):
    assert_one_line_error(cli("train", "simclr", *TINY, "--device", "cuda", "--results", str(tmp_path)),
                          "train.device is 'cuda', but torch finds no CUDA GPU")


@pytest.mark.parametrize("setting, match", [("train.epochs=abc", "train.epochs must be an int, got 'abc'"),
                                            ("train.batch_size=64.0", "train.batch_size must be an int, got 64.0")])
def test_compare_overrides_of_the_wrong_type(tmp_path, setting, match):
    assert_one_line_error(cli("compare", "simclr", "--dataset", "digits", "--set", setting,
                              "--results", str(tmp_path)), match)


def test_a_compare_set_without_a_value_is_named_on_its_own(tmp_path):
    """Each --set is read on its own: one without '=' is not glued to the value of the one before."""
    done = cli("compare", "simclr", "--dataset", "digits", "--set", "eval.linear_epochs=5", "--set", "train.epochs",
               "--results", str(tmp_path))
    assert_one_line_error(done, "--set: expected overrides as key=value pairs separated by commas, got 'train.epochs'")


def test_a_garbage_gz_dataset_file_is_named(tmp_path):
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{stem}.gz").write_bytes(b"not gzip")
    done = cli("train", "simclr", *TINY[2:], "--results", str(tmp_path / "r"), env={"CONTRASTLAB_DATA": str(tmp_path)})
    assert_one_line_error(done, "train-images-idx3-ubyte.gz is not a readable gzip file")


def test_diverging_training_names_the_step_and_keeps_no_bad_checkpoint(tmp_path):
    done = cli("train", "simclr", *TINY, "--lr", "1e30", "--epochs", "3", "--results", str(tmp_path))
    assert_one_line_error(done, "training diverged at step")
    assert "learning rate" in done.stderr and not list(tmp_path.glob("*.json"))


def test_eval_errors(tmp_path, trained):
    assert_one_line_error(cli("eval", str(tmp_path / "nope.pt")), "does not exist")
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(trained[1].read_bytes())
    from tests.test_io import flip_tensor_bit
    flip_tensor_bit(flipped)
    assert_one_line_error(cli("eval", str(flipped)), "checksum")


def test_eval_a_run_folder_and_label_fractions_as_numbers(trained):
    results, checkpoint = trained
    done = cli("eval", str(checkpoint.parent))
    assert done.returncode == 0, done.stderr
    assert "linear probe accuracy" in done.stdout
    record = json.loads(next(results.glob("simclr-*.json")).read_text())
    assert record["config"]["eval"]["label_fractions"] == [0.1] and "linear_acc_10pct" in record["metrics"]


def test_debug_shows_the_traceback(tmp_path):
    done = cli("train", "simclr", *TINY, "--knn-k", "0", "--results", str(tmp_path), "--debug")
    assert done.returncode != 0 and "Traceback" in done.stderr and "eval.knn_k" in done.stderr


def test_ctrl_c_prints_where_it_stopped_without_a_traceback(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "contrastlab", "train", "simclr", *TINY, "--epochs", "200",
                             "--results", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob("runs/*/log.jsonl")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted: training interrupted at step" in err
    assert "run again to resume" in err


def test_no_help_text_shows_a_doubled_percent_sign(capsys):
    """argparse %-formats help strings but not descriptions: an escaped '%%' in a description shows."""
    from contrastlab import cli
    from contrastlab.methods import METHODS
    lines = [[], ["train"], ["compare"], ["eval"], ["scorecard"], *(["train", m] for m in METHODS)]
    for argv in lines:
        with pytest.raises(SystemExit):
            cli.build_parser(argv[1] if len(argv) > 1 else None).parse_args([*argv, "--help"])
        out = capsys.readouterr().out
        assert "usage:" in out and "%%" not in out, (argv, [line for line in out.splitlines() if "%%" in line])
