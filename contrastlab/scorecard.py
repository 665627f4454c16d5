"""The book's measuring instrument and its scorecard: every claim the book tests, decided from records.

    python -m contrastlab scorecard             the claims, their values and verdicts, as a table
    python -m contrastlab scorecard --json      the same as JSON (the book's scorecard page reads it)
    python -m contrastlab scorecard --compute   train the cells whose records are missing (2 at a time)

**The instrument** is the ``bench`` budget (`contrastlab.experiments.PRESETS`) on the generated
``colour-shapes-p4`` set: 40,000 training and 16,000 test images of 8 shapes in colours from a
palette of 4, seen at 16 px by the cpu budget's small CNN, one CPU thread a run. Its primary metric is the
linear probe's test accuracy on h. Four references calibrate it, each over `Instrument.seeds`:
an untrained encoder, raw pixels, the supervised (cross-entropy) encoder and the SimCLR recipe.
Its *range* is SimCLR's mean minus the better of random init and raw pixels; its *resolution*
is the smallest difference the verdict rule resolves at n seeds (`contrastlab.stats.mdd`).

**A claim** is two arms, each a list of per-seed values (`Arm`), with arm ``a`` the one the
paper says is better; `contrastlab.stats.compare_arms` decides it. Arms whose runs share seed i
(initialisation, data order and augmentation draws) are compared paired. An arm may be a
difference of two runs (``minus``), e.g. the gain from colour distortion, and a few arms are
analyses that need no training (the InfoNCE bound on Gaussians, computed on the fly).

Nothing here trains unless asked (`compute`): `scorecard` reads the records under the results
folder and lists the claims whose records are missing as pending.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import experiments, stats

__all__ = ["CLAIMS", "INSTRUMENT", "Arm", "Claim", "Instrument", "arm_values", "calibration", "claims_of", "compute",
           "format_text", "missing_configs", "records_seconds", "scorecard"]


@dataclass(frozen=True)
class Arm:
    """One side of a claim: a run (method + overrides) at every seed of the instrument.

    ``value`` of a seed is the record's ``metric`` (the claim's when None); with ``minus`` it is
    that minus the other arm's value at the same seed; with ``analysis`` it is
    ``analysis(seed)`` and no run is involved.
    """

    name: str
    method: str = "simclr"
    overrides: dict = field(default_factory=dict)
    dataset: str | None = None        # None: the instrument's dataset
    budget: str | None = None         # None: the instrument's budget
    metric: str | None = None         # None: the claim's metric
    minus: Arm | None = None
    analysis: Callable[[int], float] | None = None

    def configs(self, instrument: Instrument, seed: int) -> list[experiments.ExperimentConfig]:
        """The experiments this arm's value at ``seed`` reads (none for an analysis)."""
        if self.analysis is not None:
            return []
        own = experiments.ExperimentConfig(method=self.method, dataset=self.dataset or instrument.dataset,
                                           budget=self.budget or instrument.budget, seed=seed,
                                           overrides=dict(self.overrides))
        return [own, *(self.minus.configs(instrument, seed) if self.minus else [])]


@dataclass(frozen=True)
class Claim:
    """A paper's claim as the book tests it: arm ``a`` is the one the paper says is better."""

    id: str
    seed_claim: int | None    # which of the seed documents' claims 1-14 it tests (None: the book's own)
    chapter: str              # two digits: the chapter that discusses it
    claim: str                # the claim in a sentence
    paper: str                # the paper's number and setting, labelled as the paper's
    a: Arm
    b: Arm
    metric: str = "linear_acc"
    paired: bool = True       # the arms share seed i (initialisation, data order, augmentation draws)
    kind: str = "claim"       # 'claim' (a learned-representation claim) or 'bookkeeping' (memory, time)


@dataclass(frozen=True)
class Instrument:
    name: str = "bench"
    budget: str = "bench"
    dataset: str = "colour-shapes-p4"
    metric: str = "linear_acc"
    seeds: tuple[int, ...] = (0, 1, 2)
    references: tuple[tuple[str, Arm], ...] = (
        ("random_init", Arm("untrained encoder", "random_init")),
        ("raw_pixels", Arm("raw pixels", "raw_pixels")),
        ("supervised", Arm("supervised (cross-entropy)", "supervised")),
        ("simclr", Arm("SimCLR", "simclr")),
    )

    def reference(self, name: str) -> Arm:
        return dict(self.references)[name]


INSTRUMENT = Instrument()


# ----------------------------------------------------------------------------------------------
# the claims


def _infonce_estimate(n: int, mi: float) -> Callable[[int], float]:
    """The InfoNCE estimate log N - L (optimal critic, true I = ``mi`` nats) at batch size ``n``."""
    def measure(seed: int) -> float:
        from .analysis import mi_bound_experiment
        out = mi_bound_experiment(batch_sizes=(n,), mis=(mi,), critic="optimal", eval_samples=4096, seed=seed)
        return out["runs"][0]["estimate"][0]
    return measure


def _constant(value: float) -> Callable[[int], float]:
    def measure(seed: int) -> float:
        return value
    return measure


SIMCLR = Arm("SimCLR (reference recipe)")
_SHORT = {"train.epochs": 4}                    # a quarter of the bench budget's 16 epochs
_WAVE = dict(dataset="waveforms", budget="cpu")   # CPC on sequences: chapter 3's setting

CLAIMS: tuple[Claim, ...] = (
    # 1: the contrastive loss and its temperature (SimCLR Table 2, Table 5)
    Claim("simclr-loss-ntxent-vs-logistic", 1, "05", "NT-Xent beats NT-Logistic",
          "63.9% vs 51.6% (ImageNet, ResNet-50, linear eval., Table 2)", SIMCLR,
          Arm("NT-Logistic", overrides={"method.loss": "nt_logistic"})),
    Claim("simclr-loss-ntxent-vs-margin", 1, "05", "NT-Xent beats the margin triplet loss",
          "63.9% vs 50.9% (ImageNet, Table 2)", SIMCLR,
          Arm("margin triplet", overrides={"method.loss": "margin_triplet"})),
    Claim("simclr-temperature", 1, "05", "a small temperature (tau = 0.2) beats tau = 1 with l2-normalised z",
          "tau = 0.1 beats tau = 1 by about 13 points (ImageNet, 100 epochs, Table 5)", SIMCLR,
          Arm("tau = 1", overrides={"method.temperature": 1.0})),
    # 2: the projection head, and h versus z (SimCLR section 4.2)
    Claim("simclr-head-mlp-vs-none", 2, "05", "a non-linear projection head beats none (probe of h)",
          "more than +10 points (ImageNet, Fig. 8)", SIMCLR,
          Arm("no head", overrides={"method.head": "none"})),
    Claim("simclr-h-vs-z", 2, "05", "h, before the head, is the better representation than z after it",
          "more than +10 points (ImageNet, section 4.2)", SIMCLR,
          Arm("z of the same runs", metric="linear_acc_z")),
    # 3: colour distortion, with and without supervision (SimCLR Table 1)
    Claim("simclr-colour-strength", 3, "05", "SimCLR gains from strong colour distortion (strength 1 vs 1/8)",
          "63.2% vs 59.6% (ImageNet, Table 1)", SIMCLR,
          Arm("strength 1/8", overrides={"augment.strength": 0.125})),
    Claim("colour-helps-contrastive-more", 3, "05",
          "colour distortion helps SimCLR more than supervised training (gain from strength 1/8 to 1)",
          "+3.6 points for SimCLR, -1.3 for supervised (ImageNet, Table 1)",
          Arm("SimCLR's gain", minus=Arm("strength 1/8", overrides={"augment.strength": 0.125})),
          Arm("supervised's gain", "supervised",
              minus=Arm("supervised, strength 1/8", "supervised", overrides={"augment.strength": 0.125}))),
    # 4: composing augmentations (SimCLR Fig. 5)
    Claim("augment-crop-colour-vs-crop", 4, "05", "crop + colour beats crop alone",
          "56.3% vs about 33% (ImageNet, Fig. 5, crop with itself)", SIMCLR,
          Arm("crop alone", overrides={"augment.color": False, "augment.grayscale": False})),
    Claim("augment-crop-colour-vs-colour", 4, "05", "crop + colour beats colour alone",
          "56.3% vs under 20% (ImageNet, Fig. 5, colour with itself)", SIMCLR,
          Arm("colour alone", overrides={"augment.crop": False})),
    # 5: batch size and training length (SimCLR Fig. 9)
    Claim("simclr-longer-training", 5, "05", "training longer helps (16 epochs vs 4)",
          "batch 256: about 57% after 100 epochs, 66% after 800 (ImageNet, Fig. 9)", SIMCLR,
          Arm("a quarter of the epochs", overrides=_SHORT)),
    # 6: instance discrimination's negatives and memory bank (Wu et al. 2018, Table 1)
    Claim("instdisc-vs-random", 6, "02", "instance discrimination with a memory bank learns (vs an untrained encoder)",
          "80.8% kNN (CIFAR-10, ResNet-18, Table 1); untrained not reported", Arm("InstDisc", "instdisc"),
          INSTRUMENT.reference("random_init"), paired=False),
    # 7: InfoNCE as a bound on mutual information (van den Oord et al. 2018; Poole et al. 2019)
    Claim("infonce-bound-grows-with-n", 7, "03",
          "the InfoNCE estimate of I = 4 nats rises with the batch size (N = 256 vs N = 8, optimal critic)",
          "I >= log N - L_N: more negatives give a tighter bound (CPC, section 2.3)",
          Arm("N = 256", analysis=_infonce_estimate(256, 4.0)), Arm("N = 8", analysis=_infonce_estimate(8, 4.0)),
          metric="infonce_estimate_nats"),
    Claim("infonce-ceiling-log-n", 7, "03",
          "the estimate cannot exceed log N: I = 8 nats read with N = 64 stays below log 64 = 4.16 nats",
          "log N - L_N <= log N for every critic (Poole et al. 2019)",
          Arm("log N", analysis=_constant(math.log(64))), Arm("estimate", analysis=_infonce_estimate(64, 8.0)),
          metric="infonce_estimate_nats"),
    # 8: CPC (van den Oord et al. 2018, Tables 1 and 2)
    Claim("cpc-vs-random-waveforms", 8, "03", "CPC learns a representation of sequences (vs an untrained encoder)",
          "64.6% vs 27.6% (LibriSpeech phone classification, Table 1)", Arm("CPC", "cpc", **_WAVE),
          Arm("untrained encoder", "random_init", **_WAVE), paired=False),
    Claim("cpc-steps-waveforms", 8, "03", "predicting further ahead helps (12 steps vs 2)",
          "64.6% vs 28.5% (LibriSpeech phones, Table 2)",
          Arm("12 steps", "cpc", overrides={"method.steps": 12}, **_WAVE),
          Arm("2 steps", "cpc", overrides={"method.steps": 2}, **_WAVE)),
    # computed last (the cells above decide seed claims 1-8 on their own)
    Claim("simclr-head-mlp-vs-linear", 2, "05", "a non-linear projection head beats a linear one (probe of h)",
          "about +3 points (ImageNet, Fig. 8)", SIMCLR,
          Arm("linear head", overrides={"method.head": "linear"})),
    Claim("simclr-bigger-batch-short", 5, "05", "a bigger batch helps in a short run (256 vs 64, 4 epochs)",
          "batch 4096 vs 256 after 100 epochs: about 64% vs 57% (ImageNet, Fig. 9)",
          Arm("batch 256", overrides=_SHORT), Arm("batch 64", overrides={**_SHORT, "train.batch_size": 64})),
    Claim("instdisc-more-noise-samples", 6, "02", "more noise samples help NCE (m = 4096 vs m = 16)",
          "80.4% vs 63.4% at m = 10 (CIFAR-10 kNN, Table 1)",
          Arm("m = 4096", "instdisc", overrides={"method.nce_k": 4096}),
          Arm("m = 16", "instdisc", overrides={"method.nce_k": 16})),
)


def claims_of(chapter: str) -> list[Claim]:
    """The claims a chapter ("05") discusses, in scorecard order."""
    return [c for c in CLAIMS if c.chapter == chapter]


# ----------------------------------------------------------------------------------------------
# values from records


def _record(config: experiments.ExperimentConfig, cache_dir: Path) -> dict | None:
    path = experiments.record_path(experiments.resolve(config), cache_dir)
    return json.loads(path.read_text()) if path.exists() else None


def arm_value(arm: Arm, metric: str, instrument: Instrument, seed: int, cache_dir: Path) -> float | None:
    """The arm's value at ``seed`` from the stored records; None when a record is missing."""
    if arm.analysis is not None:
        return float(arm.analysis(seed))
    record = _record(arm.configs(instrument, seed)[0], cache_dir)
    if record is None:
        return None
    value = record["metrics"][arm.metric or metric]
    if arm.minus is not None:
        other = arm_value(arm.minus, metric, instrument, seed, cache_dir)
        return None if other is None else value - other
    return value


def arm_values(arm: Arm, metric: str, instrument: Instrument | None = None,
               cache_dir: str | Path | None = None) -> list[float] | None:
    """The arm's per-seed values, in seed order; None unless every seed has its records."""
    instrument = instrument or INSTRUMENT
    cache_dir = _cache(cache_dir)
    values = [arm_value(arm, metric, instrument, s, cache_dir) for s in instrument.seeds]
    return None if any(v is None for v in values) else values


def _cell_seconds(arm: Arm, instrument: Instrument, cache_dir: Path) -> list[float]:
    out = []
    for seed in instrument.seeds:
        record = _record(arm.configs(instrument, seed)[0], cache_dir)
        if record is not None:
            out.append(record["provenance"]["wall_time_s"])
    return out


def calibration(instrument: Instrument | None = None, cache_dir: str | Path | None = None) -> dict:
    """The instrument's references (per-seed values), range, seed SD of SimCLR and MDD at n = 3 and 5."""
    instrument = instrument or INSTRUMENT
    cache_dir = _cache(cache_dir)
    refs = {name: arm_values(arm, instrument.metric, instrument, cache_dir) for name, arm in instrument.references}
    out = {"name": instrument.name, "budget": instrument.budget, "dataset": instrument.dataset,
           "metric": instrument.metric, "seeds_per_cell": len(instrument.seeds),
           "cell_seconds": _cell_seconds(instrument.reference("simclr"), instrument, cache_dir),
           "references": {k: v or [] for k, v in refs.items()}}
    if all(refs.values()):
        floor = max(statistics.mean(refs["random_init"]), statistics.mean(refs["raw_pixels"]))
        sd = statistics.stdev(refs["simclr"])
        out.update(range=statistics.mean(refs["simclr"]) - floor, simclr_sd=sd,
                   mdd={str(n): stats.mdd(sd, n) for n in (3, 5)})
    return out


def _setting(arm: Arm, instrument: Instrument) -> str:
    """Where an arm's values come from: 'an analysis, no training', or 'DATASET, budget BUDGET'."""
    if arm.analysis is not None:
        return "an analysis, no training"
    return f"{arm.dataset or instrument.dataset}, budget {arm.budget or instrument.budget}"


def _cells(arms, instrument: Instrument, cache_dir: Path) -> list[tuple[experiments.ExperimentConfig, Path]]:
    """Every (config, record path) the ``arms`` read over the instrument's seeds, each path once, in
    order: arm by arm, every seed (a difference arm's other run follows its own)."""
    seen, out = set(), []
    for arm in arms:
        for seed in instrument.seeds:
            for config in arm.configs(instrument, seed):
                path = experiments.record_path(experiments.resolve(config), cache_dir)
                if path not in seen:
                    seen.add(path)
                    out.append((config, path))
    return out


def _arms(instrument: Instrument, claims, chapter: str | None = None) -> list[Arm]:
    """The references (unless one chapter is asked for), then both arms of each claim (of ``chapter``)."""
    arms = [arm for _, arm in instrument.references] if chapter is None else []
    return arms + [arm for c in claims if chapter is None or c.chapter == chapter for arm in (c.a, c.b)]


def _cache(cache_dir) -> Path:
    return Path(cache_dir) if cache_dir is not None else experiments.default_cache_dir()


def records_seconds(instrument: Instrument | None = None, claims=None, cache_dir: str | Path | None = None) -> list[float]:
    """The wall time of every stored record the scorecard reads (each counted once)."""
    instrument = instrument or INSTRUMENT
    claims = CLAIMS if claims is None else claims
    return [json.loads(path.read_text())["provenance"]["wall_time_s"]
            for _, path in _cells(_arms(instrument, claims), instrument, _cache(cache_dir)) if path.exists()]


def scorecard(instrument: Instrument | None = None, claims=None, cache_dir: str | Path | None = None) -> dict:
    """The scorecard as a JSON-able dict: ``instrument`` (calibration) and ``claims``, each with its
    arms' per-seed values, ``diff``, ``se``, ``df``, ``half_width`` and ``verdict``
    (`contrastlab.stats.compare_arms`); claims whose records are missing are listed in ``pending``."""
    instrument = instrument or INSTRUMENT
    claims = CLAIMS if claims is None else claims
    cache_dir = _cache(cache_dir)
    done, pending = [], []
    for c in claims:
        a, b = (arm_values(arm, c.metric, instrument, cache_dir) for arm in (c.a, c.b))
        if a is None or b is None:
            pending.append(c.id)
            continue
        result = stats.compare_arms(a, b, paired=c.paired)
        done.append({"id": c.id, "seed_claim": c.seed_claim, "chapter": c.chapter, "claim": c.claim,
                     "paper": c.paper, "metric": c.metric, "kind": c.kind,
                     "setting": _setting(c.a, instrument),
                     "arms": [{"name": arm.name, "values": v, "difference": arm.minus is not None}
                              for arm, v in ((c.a, a), (c.b, b))],
                     "paired": c.paired, "diff": result.diff, "se": result.se, "df": result.df,
                     "half_width": result.half_width, "verdict": result.verdict})
    return {"instrument": calibration(instrument, cache_dir), "claims": done, "pending": pending}


# ----------------------------------------------------------------------------------------------
# computing the missing records


def missing_configs(instrument: Instrument | None = None, claims=None, cache_dir: str | Path | None = None,
                    chapter: str | None = None) -> list[experiments.ExperimentConfig]:
    """The experiments whose records the references and ``claims`` (of ``chapter``) still lack, in order."""
    instrument = instrument or INSTRUMENT
    claims = CLAIMS if claims is None else claims
    cells = _cells(_arms(instrument, claims, chapter), instrument, _cache(cache_dir))
    return [config for config, path in cells if not path.exists()]


def _one_cell(config: experiments.ExperimentConfig, cache_dir: str) -> str:
    import torch
    torch.set_num_threads(1)       # the instrument's cells are measured on one thread each
    record = experiments.run(config, cache_dir=cache_dir, progress=False)
    return f"{config.method} seed {config.seed} {config.overrides}: {record['metrics'].get('linear_acc', float('nan')):.4f} " \
           f"({record['provenance']['wall_time_s']:.0f} s)"


def compute(jobs: int = 2, *, instrument: Instrument | None = None, claims=None, cache_dir: str | Path | None = None,
            chapter: str | None = None, log=print) -> int:
    """Train every missing cell, ``jobs`` processes at a time (one thread each); returns the count.

    Each record is written atomically as its cell finishes, so an interrupted compute resumes
    where it stopped (and a cell cut off mid-training resumes from its checkpoint)."""
    instrument = instrument or INSTRUMENT
    claims = CLAIMS if claims is None else claims
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing
    cache_dir = str(_cache(cache_dir))
    todo = missing_configs(instrument, claims, cache_dir, chapter)
    log(f"{len(todo)} cells to train, {jobs} at a time")
    if not todo:
        return 0
    # the workers read these when they start (before torch is imported there); restored afterwards
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(dict.fromkeys(saved, "1"))
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_one_cell, config, cache_dir) for config in todo]
            for i, future in enumerate(as_completed(futures), 1):
                log(f"[{i}/{len(todo)}] {future.result()}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return len(todo)


def format_text(card: dict) -> str:
    """The scorecard as plain text: the instrument's calibration, then one line a claim."""
    ins = card["instrument"]
    lines = [f"instrument {ins['name']}: {ins['dataset']}, metric {ins['metric']}, "
             f"{ins['seeds_per_cell']} seeds a cell"]
    for name, values in ins["references"].items():
        lines.append(f"  {name:12s} " + (_mean_se_text(values) if len(values) >= 2 else "(no records)"))
    if "range" in ins:
        lines.append(f"  range {ins['range']:.3f}, SimCLR seed SD {ins['simclr_sd']:.4f}, "
                     f"MDD {ins['mdd']['3']:.4f} at n = 3, {ins['mdd']['5']:.4f} at n = 5")
    for c in card["claims"]:
        lines.append(f"[{c['verdict']}] {c['id']} (seed claim {c['seed_claim']}, chapter {c['chapter']}): "
                     f"diff {c['diff']:+.4f} +- {c['half_width']:.4f}{' paired' if c['paired'] else ''}")
    if card["pending"]:
        lines.append(f"pending (records missing; --compute trains them): {', '.join(card['pending'])}")
    return "\n".join(lines)


def _mean_se_text(values) -> str:
    mean, se, n = stats.mean_se(values)
    return f"{mean:.4f} (n = {n}, all equal)" if se == 0 else f"{mean:.4f} +- {se:.4f} (n = {n})"
