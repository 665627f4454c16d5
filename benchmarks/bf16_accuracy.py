"""Does bf16 autocast on the CPU move accuracy? Measured on the book's instrument, by seed.

Issue 19 allows bf16 autocast on CPUs that compute bf16 natively only where accuracy holds. This
script trains, for each method whose speed issue 19 targets (SimCLR, MoCo, BYOL, SwAV), the
instrument's cell (`contrastlab.scorecard.INSTRUMENT`: the ``bench`` budget on colour-shapes-p4,
one CPU thread a run, seeds 0-2) with ``train.amp="bf16"``, beside the full-precision cells the
scorecard already holds (made with ``amp='auto'`` when that meant full precision on every CPU; the
script refuses an arm whose records say otherwise).
Both arms share seed i (initialisation, data order, augmentations), so each metric is compared
paired, by the book's one rule (`contrastlab.stats.compare_arms`), and its 95% interval is set
against the seed noise of the instrument in that metric, as the MDD at n = 3 (the smallest
difference the rule resolves between two arms of that spread):

- *inside its own MDD*: the whole interval of bf16 - fp32 lies inside +-MDD of the method's own fp32
  seed SD: seeds alone move the method more than bf16 can have moved it (the criterion for adopting
  bf16 under ``amp='auto'``);
- *inside SimCLR's MDD*: the same against the instrument's resolution (SimCLR's seed SD), which is
  stricter for methods whose seeds spread more than SimCLR's (all others at 16 epochs).

The cells are ordinary cached records under results/ (their config says ``train.amp: bf16``), so a
second call only reads them. Writes ``results/benchmarks/bf16-accuracy.json`` (or ``--out``).

    python benchmarks/bf16_accuracy.py --compute        # trains the missing bf16 cells, 2 at a time
    python benchmarks/bf16_accuracy.py                  # reads the records, prints the comparison
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from contrastlab import experiments, scorecard, stats

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("simclr", "moco", "byol", "swav")
METRICS = ("knn_acc", "linear_acc")


def arms(method: str) -> tuple[scorecard.Arm, scorecard.Arm]:
    """(bf16, fp32): the instrument's cell of ``method`` under bf16 autocast and as published."""
    return (scorecard.Arm(f"{method}-bf16", method=method, overrides={"train.amp": "bf16"}),
            scorecard.Arm(f"{method}-fp32", method=method))


def claims() -> list[scorecard.Claim]:
    """The pairs as scorecard claims (only so that `scorecard.compute` trains their missing cells)."""
    return [scorecard.Claim(f"{m}-bf16-vs-fp32", None, "11", f"bf16 autocast keeps {m}'s accuracy", "", *arms(m))
            for m in METHODS]


def precisions(arm: scorecard.Arm, cache_dir=None) -> list[str | None]:
    """What each seed's record of ``arm`` trained in (None where the record is missing). A record made
    before provenance held the precision is read from its config: ``amp`` 'bf16' or 'fp16' as named,
    'auto' or 'off' fp32 (the instrument's records were trained on CPUs, where 'auto' then meant fp32)."""
    out = []
    for seed in scorecard.INSTRUMENT.seeds:
        record = scorecard._record(arm.configs(scorecard.INSTRUMENT, seed)[0], cache_dir)
        if record is None:
            out.append(None)
            continue
        named = {"bf16": "bf16", "fp16": "fp16"}.get(record["config"]["train"]["amp"], "fp32")
        out.append(record["provenance"].get("precision", named))
    return out


def compare(cache_dir=None) -> dict:
    """Per method and metric: both arms' values, the paired difference with its 95% interval, the
    rule's verdict and whether the interval lies within the instrument's +-MDD; and each arm's
    CPU seconds a cell (one thread)."""
    n = len(scorecard.INSTRUMENT.seeds)
    mdd = {}
    for metric in METRICS:   # the instrument's resolution in each metric: the MDD of SimCLR's seed SD
        ref = scorecard.arm_values(arms("simclr")[1], metric, cache_dir=cache_dir)
        mdd[metric] = None if ref is None else stats.mdd(statistics.stdev(ref), n)
    out = {"instrument": scorecard.INSTRUMENT.name, "seeds": list(scorecard.INSTRUMENT.seeds), "mdd": mdd,
           "methods": {}}
    for m in METHODS:
        bf16, fp32 = arms(m)
        for arm, want in ((bf16, "bf16"), (fp32, "fp32")):
            got = [p for p in precisions(arm, cache_dir) if p is not None]
            if any(p != want for p in got):
                raise ValueError(f"the {arm.name} arm must hold records trained in {want}, got {got}")
        row = {"cpu_seconds": {arm.name: scorecard.arm_seconds(arm, cache_dir=cache_dir) for arm in (bf16, fp32)}}
        for metric in METRICS:
            a = scorecard.arm_values(bf16, metric, cache_dir=cache_dir)
            b = scorecard.arm_values(fp32, metric, cache_dir=cache_dir)
            if a is None or b is None:
                row[metric] = {"pending": True}
                continue
            c = stats.compare_arms(a, b, paired=True)
            low, high = c.diff - c.half_width, c.diff + c.half_width
            own = stats.mdd(statistics.stdev(b), n)
            row[metric] = {"bf16": a, "fp32": b, "diff": c.diff, "half_width": c.half_width, "verdict": c.verdict,
                           "own_mdd": own, "within_own_noise": bool(-own <= low and high <= own),
                           "within_simclr_mdd": None if mdd[metric] is None else bool(-mdd[metric] <= low and high <= mdd[metric])}
        out["methods"][m] = row
    return out


def format_text(res: dict) -> str:
    lines = [f"instrument {res['instrument']}, seeds {res['seeds']}: bf16 - fp32, paired, with its 95% interval, "
             f"against the instrument's MDD at n = {len(res['seeds'])} in that metric (from SimCLR's fp32 seed SD): "
             + ", ".join(f"{k} {'?' if v is None else f'{100 * v:.2f}'} points" for k, v in res["mdd"].items())]
    for m, row in res["methods"].items():
        for metric in METRICS:
            r = row[metric]
            if r.get("pending"):
                lines.append(f"  {m:6s} {metric:10s} pending (records missing: --compute)")
                continue
            lines.append(f"  {m:6s} {metric:10s} bf16 {_pct(r['bf16'])}  fp32 {_pct(r['fp32'])}  "
                         f"diff {100 * r['diff']:+.2f} +- {100 * r['half_width']:.2f} points: {r['verdict']}; "
                         f"{'inside' if r['within_own_noise'] else 'NOT inside'} its own MDD "
                         f"({100 * r['own_mdd']:.2f}), {'inside' if r['within_simclr_mdd'] else 'not inside'} SimCLR's")
    return "\n".join(lines)


def _pct(values) -> str:
    mean, se, n = stats.mean_se(values)
    return f"{100 * mean:.2f} +- {100 * se:.2f} (n = {n})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compute", action="store_true", help="train the missing cells first")
    p.add_argument("--jobs", type=int, default=2, help="cells trained at a time, one thread each (default 2)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "bf16-accuracy.json")
    args = p.parse_args(argv)
    if args.compute:
        scorecard.compute(args.jobs, claims=claims())
    res = compare()
    print(format_text(res))
    experiments.write_json(args.out, res)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
