import subprocess
import sys

import pytest

from contrastlab.cli import build_parser, main

TINY = ["--dataset", "digits", "--budget", "smoke", "--train-size", "300", "--test-size", "100",
        "--cnn-width", "4", "--batch-size", "64", "--monitor-train", "100", "--monitor-test", "50",
        "--linear-epochs", "5"]


def test_help_lists_options_generated_from_the_configs():
    out = subprocess.run([sys.executable, "-m", "contrastlab", "train", "simclr", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for flag in ("--epochs", "--temperature", "--strength", "--encoder", "--optimizer", "--crop-scale",
                 "--no-flip", "--knn-k"):
        assert flag in out
    assert "tau in NT-Xent" in out          # help text comes from the dataclass field comment


def test_parser_keeps_only_the_options_given():
    args = build_parser("simclr").parse_args(["train", "simclr", "--epochs", "3", "--crop-scale", "0.3", "1",
                                      "--no-grayscale", "--hidden-dim", "none"])
    assert vars(args)["train.epochs"] == 3 and vars(args)["augment.crop_scale"] == [0.3, 1.0]
    assert vars(args)["augment.grayscale"] is False and vars(args)["method.hidden_dim"] is None
    assert "train.lr" not in vars(args)


def test_train_then_eval_a_checkpoint(tmp_path, capsys):
    assert main(["train", "simclr", *TINY, "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "kNN accuracy" in out and "linear probe accuracy" in out
    ckpt = next(tmp_path.glob("runs/*/checkpoint.pt"))
    assert main(["eval", str(ckpt)]) == 0
    assert "linear probe accuracy" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch reading the garbage file
def test_bad_input_gives_a_clear_message(tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown method 'simclrr'"):
        main(["train", "simclrr"])
    assert main(["train", "simclr", "--dataset", "mnist"]) == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"\x80garbage")
    assert main(["eval", str(bad)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_each_method_lists_only_its_own_options():
    swav = subprocess.run([sys.executable, "-m", "contrastlab", "train", "swav", "--help"], capture_output=True,
                          text=True, check=True).stdout
    assert "--n-prototypes" in swav and "--nce-k" not in swav and "prototype scores" in swav
    with pytest.raises(SystemExit):                 # an option of another method is refused by argparse
        build_parser("simclr").parse_args(["train", "simclr", "--n-prototypes", "10"])
