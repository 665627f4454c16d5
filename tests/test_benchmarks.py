import subprocess
import sys
from pathlib import Path

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
