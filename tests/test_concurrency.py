"""Several processes on one results folder (issue 18): real processes, not threads."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from contrastlab import _io, experiments

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CONFIG = ("experiments.ExperimentConfig('simclr', 'digits', 'smoke', overrides={'dataset.train_size': 300, "
          "'dataset.test_size': 100, 'encoder.cnn_width': 4, 'train.batch_size': 64, 'train.monitor_train': 100, "
          "'train.monitor_test': 50, 'eval.linear_epochs': 5})")


def spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)


def test_a_second_run_of_a_config_waits_for_the_first_and_reads_its_record(tmp_path):
    config = eval(CONFIG)
    folder = experiments.run_dir(experiments.resolve(config), tmp_path)
    code = ("import json; from contrastlab import experiments\n"
            f"r = experiments.run({CONFIG}, cache_dir={str(tmp_path)!r}, progress=False)\n"
            "print(json.dumps(r['metrics']))")
    with _io.folder_lock(folder):                 # this process plays the first run
        second = spawn(code)
        deadline = time.time() + 300
        err = ""
        while time.time() < deadline and second.poll() is None and "waiting" not in err:
            time.sleep(0.5)
            err = second.stderr.readline() if second.stderr else ""
        assert "waiting: another run" in err and str(folder) in err, err
        assert second.poll() is None              # still waiting while the lock is held
        record = {"config": experiments.resolve(config), "metrics": {"knn_acc": 0.5}}
        experiments.write_json(experiments.record_path(record["config"], tmp_path), record)
    out, rest = second.communicate(timeout=300)
    assert second.returncode == 0, rest
    assert json.loads(out.splitlines()[-1]) == {"knn_acc": 0.5}   # the first run's record, not trained again
    assert not (folder / "checkpoint.pt").exists()


def test_three_identical_runs_at_once_give_one_record(tmp_path):
    code = ("import json; from contrastlab import experiments\n"
            f"r = experiments.run({CONFIG}, cache_dir={str(tmp_path)!r}, progress=False)\n"
            "print(json.dumps(r['metrics']))")
    procs = [spawn(code) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    assert len({out.splitlines()[-1] for out, _ in outs}) == 1
    assert len(list(tmp_path.glob("*.json"))) == 1 and not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("kind", ["record", "checkpoint"])
def test_concurrent_writers_never_show_a_reader_half_a_file(tmp_path, kind):
    path = tmp_path / ("r.json" if kind == "record" else "checkpoint.pt")
    if kind == "record":
        write = f"experiments.write_json({str(path)!r}, {{'i': i, 'pad': 'x' * 50000}})"
    else:
        write = (f"train.save_checkpoint({{'format': train.CHECKPOINT_FORMAT, 'i': i, "
                 f"'w': torch.full((20000,), float(i))}}, {str(path)!r})")
    code = f"import torch\nfrom contrastlab import experiments, train\nfor i in range(150):\n    {write}"
    writers = [spawn(code) for _ in range(2)]
    bad = reads = 0
    while any(w.poll() is None for w in writers):
        try:
            if kind == "record":
                json.loads(path.read_text())
            else:
                state = torch.load(path, weights_only=True)   # torch's own reader: it checks no CRC
                assert bool((state["w"] == state["i"]).all())   # one writer's bytes, not a mix
            reads += 1
        except FileNotFoundError:
            pass
        except Exception:
            bad += 1
    errors = [w.communicate()[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], [e[-1500:] for e in errors]
    assert bad == 0 and reads > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
