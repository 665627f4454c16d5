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

__all__ = ["CLAIMS", "INSTRUMENT", "RANK_CLAIMS", "Arm", "Claim", "Instrument", "RankClaim", "arm_seconds", "arm_values",
           "at_ceiling",
           "calibration", "claims_of", "compute", "encoder_points", "encoders", "format_text", "missing_configs",
           "records_seconds", "scorecard"]


@dataclass(frozen=True)
class Arm:
    """One side of a claim: a run (method + overrides) at every seed of the instrument.

    ``value`` of a seed is the record's ``metric`` (the claim's when None); with ``minus`` it is
    that minus the other arm's value at the same seed; with ``analysis`` it is
    ``analysis(seed, cache_dir)`` (the results folder the scorecard reads) and no run is involved.
    """

    name: str
    method: str = "simclr"
    overrides: dict = field(default_factory=dict)
    dataset: str | None = None        # None: the instrument's dataset
    budget: str | None = None         # None: the instrument's budget
    metric: str | None = None         # None: the claim's metric
    minus: Arm | None = None
    analysis: Callable[[int, Path], float] | None = None

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
class RankClaim:
    """A claim that a statistic of trained encoders predicts the probe: Spearman's rho over encoders.

    The encoders are every trained run of the claims (`encoders`), each read as its mean over the
    instrument's seeds; `contrastlab.stats.rank_correlation` decides it with a bootstrap interval.
    """

    id: str
    seed_claim: int | None
    chapter: str
    claim: str
    paper: str
    statistic: str            # e.g. 'final.alignment'
    direction: int            # the paper's sign of rho(statistic, metric): -1 or +1
    metric: str = "linear_acc"
    kind: str = "correlation"


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


def _infonce_estimate(n: int, mi: float) -> Callable[[int, Path], float]:
    """The InfoNCE estimate log N - L (optimal critic, true I = ``mi`` nats) at batch size ``n``."""
    def measure(seed: int, cache_dir: Path) -> float:
        from .analysis import mi_bound_experiment
        out = mi_bound_experiment(batch_sizes=(n,), mis=(mi,), critic="optimal", eval_samples=4096, seed=seed)
        return out["runs"][0]["estimate"][0]
    return measure


def _spread(method: str) -> Callable[[int, Path], float]:
    """The SD over `_SUPCON_SETTINGS` of ``method``'s probe at one seed (reads the settings' records)."""
    def measure(seed: int, cache_dir: Path) -> float:
        values = []
        for _, _, over in _SUPCON_SETTINGS:
            record = _record(Arm("", method, overrides=over).configs(INSTRUMENT, seed)[0], cache_dir)
            if record is None:
                raise LookupError(f"{method} {over} seed {seed}")
            values.append(record["metrics"]["linear_acc"])
        return statistics.stdev(values)
    return measure


def _benchmark(method: str, field: str) -> Callable[[int, Path], float]:
    """A figure of ``method`` in the methods benchmark (results/benchmarks/methods-cpu.json, one run
    of every method with the same encoder and batch); ``state_bytes`` is its buffers' size in bytes."""
    def measure(seed: int, cache_dir: Path) -> float:
        path = cache_dir / "benchmarks" / "methods-cpu.json"
        if not path.exists():
            raise LookupError(str(path))
        row = next(m for m in json.loads(path.read_text())["methods"] if m["method"] == method)
        return float(row["state"]["buffers"] if field == "state_bytes" else row[field])
    return measure


def _constant(value: float) -> Callable[[int, Path], float]:
    def measure(seed: int, cache_dir: Path) -> float:
        return value
    return measure


SIMCLR = Arm("SimCLR (reference recipe)")
MOCO = Arm("MoCo (m = 0.99, K = 4096)", "moco")
SWAV = Arm("SwAV (2 views)", "swav")
BYOL = Arm("BYOL", "byol")
BYOL_NO_PREDICTOR = Arm("BYOL without predictor", "byol", overrides={"method.predictor": False})
BYOL_NO_EMA = Arm("BYOL without EMA target", "byol", overrides={"method.ema": False})
EPOCHS = experiments.PRESETS["bench"]["train.epochs"]   # the instrument's training length
SHORT_EPOCHS = EPOCHS // 4
# Where a chapter explains a miss by scale, the method is also trained 4x as long: LONG_EPOCHS.
LONG_EPOCHS = 4 * EPOCHS
_LONG = {"train.epochs": LONG_EPOCHS}
_SHORT = {"train.epochs": SHORT_EPOCHS}          # a quarter of the instrument's epochs
# multi-crop at about the compute of two 16 px views: 2 x 16 px + 4 x 9 px views cost
# (2 + 4 (9/16)^2) / 2 = 1.63 times as much a step, so they train for 1 / 1.63 of the epochs
MULTICROP_EPOCHS = round(EPOCHS * 2 / (2 + 4 * (9 / 16) ** 2))
_B64 = {"train.batch_size": 64}
# SupCon against cross-entropy at two learning rates and two colour strengths: the instrument's
# Adam rate and colour strength 1, and a quarter of each
_LR = experiments.PRESETS["bench"]["train.lr"]
_SUPCON_SETTINGS = (("", f"lr {_LR:g}, strength 1", {}),
                    ("-low-lr", f"lr {_LR / 4:g}, strength 1", {"train.lr": _LR / 4}),
                    ("-mild-colour", f"lr {_LR:g}, strength 0.25", {"augment.strength": 0.25}),
                    ("-low-lr-mild-colour", f"lr {_LR / 4:g}, strength 0.25", {"train.lr": _LR / 4, "augment.strength": 0.25}))
_WAVE = dict(dataset="waveforms", budget="cpu")   # CPC on sequences: chapter 3's setting



def _scale_tests(arm: Arm, seed_claim: int, chapter: str, paper: str) -> tuple[Claim, Claim]:
    """The two claims of a 4x-length run of ``arm``: longer vs the instrument's length, and vs random init."""
    long = Arm(f"{arm.name}, {LONG_EPOCHS} epochs", arm.method, overrides={**arm.overrides, **_LONG})
    short = Arm(f"{arm.name}, {EPOCHS} epochs", arm.method, overrides=dict(arm.overrides))
    return (Claim(f"{arm.method}-longer", seed_claim, chapter,
                  f"training 4x as long ({LONG_EPOCHS} epochs vs {EPOCHS}) moves {arm.name} toward the paper",
                  paper, long, short),
            Claim(f"{arm.method}-vs-random-4x", seed_claim, chapter,
                  f"{arm.name} trained {LONG_EPOCHS} epochs beats an untrained encoder",
                  paper, long, INSTRUMENT.reference("random_init"), paired=False))


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
    Claim("simclr-longer-training", 5, "05", f"training longer helps ({EPOCHS} epochs vs {SHORT_EPOCHS})",
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
    Claim("simclr-bigger-batch-short", 5, "05", f"a bigger batch helps in a short run (256 vs 64, {SHORT_EPOCHS} epochs)",
          "batch 4096 vs 256 after 100 epochs: about 64% vs 57% (ImageNet, Fig. 9)",
          Arm("batch 256", overrides=_SHORT), Arm("batch 64", overrides={**_SHORT, "train.batch_size": 64})),
    Claim("instdisc-more-noise-samples", 6, "02", "more noise samples help NCE (m = 4096 vs m = 16)",
          "80.4% vs 63.4% at m = 10 (CIFAR-10 kNN, Table 1)",
          Arm("m = 4096", "instdisc", overrides={"method.nce_k": 4096}),
          Arm("m = 16", "instdisc", overrides={"method.nce_k": 16})),
    # 9: MoCo (He et al. 2020): the momentum encoder, the queue, the symmetric loss, shuffling BN
    Claim("moco-vs-random", 9, "06", "MoCo learns (vs an untrained encoder)",
          "60.6% (ImageNet, ResNet-50, K = 65,536, Table 1); untrained not reported", MOCO,
          INSTRUMENT.reference("random_init"), paired=False),
    Claim("moco-momentum-vs-zero", 9, "06", "a slow key encoder (m = 0.99) beats a copy of the query encoder (m = 0)",
          "m = 0.99: 57.8%; m = 0: training fails (ImageNet, K = 4096, section 4.1)", MOCO,
          Arm("m = 0", "moco", overrides={"method.momentum": 0.0})),
    Claim("moco-momentum-zero-fails", 9, "06", "with m = 0 MoCo fails: no better than an untrained encoder",
          "m = 0: the training loss oscillates and fails to converge (ImageNet, section 4.1)",
          INSTRUMENT.reference("random_init"), Arm("m = 0", "moco", overrides={"method.momentum": 0.0}), paired=False),
    Claim("moco-queue-size", 9, "06", "a bigger queue helps (K = 4096 vs K = 256)",
          "accuracy rises with K from 256 to 65,536 (ImageNet, Fig. 3)", MOCO,
          Arm("K = 256", "moco", overrides={"method.queue_size": 256})),
    Claim("moco-symmetric", 9, "06", "the symmetric loss beats the one-sided loss at equal epochs",
          "85.3% vs 82.6% (the MoCo authors' CIFAR-10 demo, ResNet-18, 200 epochs, kNN)",
          Arm("symmetric", "moco", overrides={"method.symmetric": True}), MOCO),
    Claim("moco-shuffle-bn", 9, "06", "keys' BN over shuffled sub-batches beats full-batch BN (which leaks)",
          "without shuffling BN the pretext task is cheated and accuracy drops (ImageNet, Fig. 4)", MOCO,
          Arm("full-batch BN", "moco", overrides={"method.shuffle_bn": False})),
    # 10: SwAV (Caron et al. 2020): the equal partition, multi-crop, the queue at small batch
    Claim("swav-vs-random", 10, "07", "SwAV learns (vs an untrained encoder)",
          "75.3% (ImageNet, ResNet-50, 800 epochs, multi-crop)", SWAV, INSTRUMENT.reference("random_init"),
          paired=False),
    Claim("swav-equal-partition", 10, "07",
          "Sinkhorn's codes spread the test images more evenly over the prototypes than the raw scores do",
          "codes equipartition each batch by construction (section 3.1); no usage figure reported",
          Arm("Sinkhorn codes", "swav", metric="code_entropy"), Arm("highest score", "swav", metric="argmax_entropy"),
          metric="code_entropy"),
    Claim("swav-multicrop", 10, "07", f"multi-crop (2 x 16 px + 4 x 9 px, {MULTICROP_EPOCHS} epochs) beats 2 x 16 px "
          f"({EPOCHS} epochs) at about equal compute",
          "+2 to +4 points for every method tested (ImageNet, Fig. 3)",
          Arm("multi-crop", "swav", overrides={"method.n_small": 4, "train.epochs": MULTICROP_EPOCHS}), SWAV),
    Claim("swav-queue-small-batch", 10, "07", f"at batch 64 a queue of past features helps (1024 vs none, {SHORT_EPOCHS} epochs)",
          "a queue of 3,840 features for batches of 256 or less (ImageNet, section 4.3)",
          Arm("batch 64 + queue", "swav", overrides={**_SHORT, **_B64, "method.queue_size": 1024}),
          Arm("batch 64", "swav", overrides={**_SHORT, **_B64})),
    # 11: BYOL (Grill et al. 2020): the predictor and the EMA target prevent collapse; robust to the batch
    Claim("byol-vs-random", 11, "08", "BYOL learns (vs an untrained encoder)",
          "74.3% (ImageNet, ResNet-50, 1,000 epochs)", BYOL, INSTRUMENT.reference("random_init"), paired=False),
    Claim("byol-no-predictor-collapses", 11, "08", "without the predictor BYOL collapses: no better than an untrained encoder",
          "collapse: near-chance accuracy (Table 5)", INSTRUMENT.reference("random_init"), BYOL_NO_PREDICTOR,
          paired=False),
    Claim("byol-no-ema-collapses", 11, "08", "without the moving-average target BYOL collapses: no better than an untrained encoder",
          "collapse: near-chance accuracy (Table 5)", INSTRUMENT.reference("random_init"), BYOL_NO_EMA, paired=False),
    Claim("byol-no-predictor-sd", 11, "08", "without the predictor the per-dimension SD of z falls (collapse)",
          "collapse to a constant (section 3.2)", Arm("BYOL", "byol", metric="final.embed_std"),
          Arm("no predictor", "byol", overrides={"method.predictor": False}, metric="final.embed_std"),
          metric="final.embed_std"),
    Claim("byol-no-ema-sd", 11, "08", "without the moving-average target the per-dimension SD of z falls (collapse)",
          "collapse to a constant (section 3.2)", Arm("BYOL", "byol", metric="final.embed_std"),
          Arm("no EMA target", "byol", overrides={"method.ema": False}, metric="final.embed_std"),
          metric="final.embed_std"),
    Claim("byol-batch-robust", 11, "08", f"a smaller batch (64 vs 256, {SHORT_EPOCHS} epochs) costs BYOL less than SimCLR",
          "BYOL nearly flat from 4,096 down to 256, SimCLR falls steadily (ImageNet, Fig. 3a)",
          Arm("SimCLR's drop", overrides=_SHORT, minus=Arm("SimCLR, batch 64", overrides={**_SHORT, **_B64})),
          Arm("BYOL's drop", "byol", overrides=_SHORT, minus=Arm("BYOL, batch 64", "byol", overrides={**_SHORT, **_B64}))),
    # 12: SupCon (Khosla et al. 2020): against cross-entropy, stability across settings, L_out vs L_in
    *(Claim(f"supcon-vs-ce{suffix}", 12, "09", f"SupCon beats cross-entropy with the same encoder ({words})",
            "96.0% vs 95.0% (CIFAR-10, ResNet-50, SupContrast README)",
            Arm(f"SupCon ({words})", "supcon", overrides=over), Arm(f"cross-entropy ({words})", "supervised", overrides=over))
      for suffix, words, over in _SUPCON_SETTINGS),
    Claim("supcon-stability", 12, "09",
          "SupCon's accuracy varies less than cross-entropy's over the four settings (SD across settings)",
          "SupCon's accuracy varies less than cross-entropy's over hyperparameters (ImageNet, Fig. 4)",
          Arm("cross-entropy's SD over settings", analysis=_spread("supervised")),
          Arm("SupCon's SD over settings", analysis=_spread("supcon")), metric="linear_acc_sd_over_settings"),
    Claim("supcon-out-vs-in", 12, "09", "L_out (log-probabilities averaged over positives) beats L_in",
          "78.7% vs 67.4% top-1 (ImageNet, ResNet-50, Table 1)", Arm("L_out", "supcon"),
          Arm("L_in", "supcon", overrides={"method.variant": "in"})),
    # the scale tests: the methods that do not beat an untrained encoder at the instrument's length,
    # trained 4x as long. "-longer" says whether the gap moved toward the paper (the longer run
    # beats the instrument's length), "-vs-random-4x" whether the longer run beats an untrained encoder.
    *(claim for arm, seed_claim, chapter, paper in (
        (Arm("InstDisc", "instdisc"), 6, "02", "80.8% kNN after 200 epochs (CIFAR-10, ResNet-18, Table 1)"),
        (SWAV, 10, "07", "75.3% after 800 epochs, 72.1% after 100 (ImageNet, ResNet-50, multi-crop)"),
        (BYOL, 11, "08", "74.3% after 1,000 epochs; its ablations at 300 epochs start from 72.5% (ImageNet, ResNet-50)"))
      for claim in _scale_tests(arm, seed_claim, chapter, paper)),
    # 14: the three families (memory bank, end-to-end, clustering) at the same encoder and batch:
    # memory and speed are facts of one benchmark run (reported, not counted as reproductions)
    Claim("families-bank-negatives", 14, "11", "a memory bank offers more negatives per step than an end-to-end batch",
          "memory bank: every image a negative; end-to-end: the batch's 2N - 2 (background slides)",
          Arm("InstDisc's negatives", analysis=_benchmark("instdisc", "negatives")),
          Arm("SimCLR's negatives", analysis=_benchmark("simclr", "negatives")), metric="negatives", kind="bookkeeping"),
    Claim("families-bank-state", 14, "11", "the memory bank keeps a large state (bytes of buffers) beside the weights",
          "600 MB with 128 features per image (ImageNet, Wu et al. 2018)",
          Arm("InstDisc's buffers", analysis=_benchmark("instdisc", "state_bytes")),
          Arm("SimCLR's buffers", analysis=_benchmark("simclr", "state_bytes")), metric="bytes", kind="bookkeeping"),
    Claim("families-end-to-end-memory", 14, "11", "end-to-end training's step memory exceeds the memory bank's at the same batch",
          "end-to-end needs large batches and so high GPU memory (background slides)",
          Arm("SimCLR's step peak", analysis=_benchmark("simclr", "step_peak_bytes")),
          Arm("InstDisc's step peak", analysis=_benchmark("instdisc", "step_peak_bytes")), metric="bytes", kind="bookkeeping"),
)

# 13: alignment and uniformity (Wang & Isola 2020) over every encoder the claims above train
RANK_CLAIMS: tuple[RankClaim, ...] = (
    RankClaim("alignment-predicts-probe", 13, "10", "better-aligned encoders (lower alignment loss) probe better",
              "lower L_align goes with higher accuracy over 304 STL-10 encoders (Fig. 5)", "final.alignment", -1),
    RankClaim("uniformity-predicts-probe", 13, "10", "more uniform encoders (lower uniformity loss) probe better",
              "lower L_uniform goes with higher accuracy over 304 STL-10 encoders (Fig. 5)", "final.uniformity", -1),
)


def claims_of(chapter: str) -> list[Claim]:
    """The claims a chapter ("05") discusses, in scorecard order."""
    return [c for c in CLAIMS if c.chapter == chapter]


# ----------------------------------------------------------------------------------------------
# values from records


def _record(config: experiments.ExperimentConfig, cache_dir: Path) -> dict | None:
    path = experiments.record_path(experiments.resolve(config), cache_dir)
    return json.loads(path.read_text()) if path.exists() else None


def _metric(record: dict, metric: str) -> float:
    """A record's ``metric``; ``final.NAME`` is the last value of its training curve NAME (e.g. the
    end-of-training ``final.alignment`` of h, measured on a fixed batch of training images)."""
    if metric.startswith("final."):
        return record["curves"][metric.removeprefix("final.")][-1]
    return record["metrics"][metric]


def arm_value(arm: Arm, metric: str, instrument: Instrument, seed: int, cache_dir: Path) -> float | None:
    """The arm's value at ``seed`` from the stored records; None when a record is missing."""
    if arm.analysis is not None:
        try:
            return float(arm.analysis(seed, cache_dir))
        except LookupError:        # an analysis of records (or of a benchmark) that are not there yet
            return None
    record = _record(arm.configs(instrument, seed)[0], cache_dir)
    if record is None:
        return None
    value = _metric(record, arm.metric or metric)
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


def _thread_seconds(record: dict) -> float:
    """A cell's cost: its CPU time where the record has it (one thread a cell, so contention from
    other work on the machine does not inflate it), else its wall time."""
    p = record["provenance"]
    return p.get("cpu_time_s", p["wall_time_s"])


def _cell_seconds(arm: Arm, instrument: Instrument, cache_dir: Path) -> list[float]:
    out = []
    for seed in instrument.seeds:
        record = _record(arm.configs(instrument, seed)[0], cache_dir)
        if record is not None:
            out.append(_thread_seconds(record))
    return out


def arm_seconds(arm: Arm, instrument: Instrument | None = None, cache_dir: str | Path | None = None) -> list[float] | None:
    """What the arm's own run cost at each seed, in seed order: its record's CPU time (one thread a
    cell; its wall time where an older record lacks it); None unless every seed has its record or
    when the arm is an analysis (no run)."""
    instrument = instrument or INSTRUMENT
    if arm.analysis is not None:
        return None
    seconds = _cell_seconds(arm, instrument, _cache(cache_dir))
    return seconds if len(seconds) == len(instrument.seeds) else None


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
    """The cost (`_thread_seconds`) of every stored record the scorecard reads (each counted once)."""
    instrument = instrument or INSTRUMENT
    claims = CLAIMS if claims is None else claims
    return [_thread_seconds(json.loads(path.read_text()))
            for _, path in _cells(_arms(instrument, claims), instrument, _cache(cache_dir)) if path.exists()]


def scorecard(instrument: Instrument | None = None, claims=None, cache_dir: str | Path | None = None,
              rank_claims=None) -> dict:
    """The scorecard as a JSON-able dict: ``instrument`` (calibration) and ``claims``, each with its
    arms' per-seed values, ``diff``, ``se``, ``df``, ``half_width`` and ``verdict``
    (`contrastlab.stats.compare_arms`), and ``correlations``: the ``rank_claims`` (`RANK_CLAIMS` by
    default, with the default claims) over the encoders of ``claims``. Claims whose records are
    missing are listed in ``pending``."""
    instrument = instrument or INSTRUMENT
    if rank_claims is None:
        rank_claims = RANK_CLAIMS if claims is None else ()
    claims = CLAIMS if claims is None else claims
    cache_dir = _cache(cache_dir)
    card_instrument = calibration(instrument, cache_dir)
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
                     "half_width": result.half_width, "verdict": result.verdict,
                     "at_ceiling": at_ceiling(c.metric, a, b, card_instrument)})
    correlations = []
    for c in rank_claims:
        points = encoder_points(c, instrument, claims, cache_dir)
        if len(points) < 4:
            pending.append(c.id)
            continue
        result = stats.rank_correlation([p["statistic"] for p in points], [p["metric"] for p in points],
                                        direction=c.direction)
        correlations.append({"id": c.id, "seed_claim": c.seed_claim, "chapter": c.chapter, "claim": c.claim,
                             "paper": c.paper, "statistic": c.statistic, "metric": c.metric, "kind": c.kind,
                             "encoders": points, **result.as_dict()})
    return {"instrument": card_instrument, "claims": done, "correlations": correlations,
            "pending": pending}


def at_ceiling(metric: str, a: list[float], b: list[float], instrument: dict) -> bool:
    """Whether both arms of an accuracy claim lie within the instrument's resolution (its MDD at its
    seeds per cell) of 100%: there the ceiling leaves no room for an effect of the paper's size,
    and whichever verdict the rule gives rests on a handful of test images."""
    mdd = instrument.get("mdd", {}).get(str(instrument["seeds_per_cell"]))
    if mdd is None or not metric.endswith("_acc"):
        return False
    return min(statistics.mean(a), statistics.mean(b)) >= 1 - mdd


def encoders(claims=None) -> list[Arm]:
    """Every trained run the ``claims`` read on the instrument (once each, in claim order): the
    encoders a `RankClaim` ranks."""
    claims = CLAIMS if claims is None else claims
    out, seen = [], set()

    def visit(arm: Arm | None) -> None:
        if arm is None or arm.analysis is not None:
            return
        key = (arm.method, json.dumps(arm.overrides, sort_keys=True))
        if arm.dataset is None and arm.budget is None and arm.method not in experiments.BASELINES and key not in seen:
            seen.add(key)
            out.append(Arm(arm.name, arm.method, dict(arm.overrides)))
        visit(arm.minus)
    for c in claims:
        visit(c.a)
        visit(c.b)
    return out


def encoder_points(claim: RankClaim, instrument: Instrument | None = None, claims=None,
                   cache_dir: str | Path | None = None) -> list[dict]:
    """One point per encoder whose every seed has a record: its name, method, overrides and the
    means over seeds of the claim's statistic and metric."""
    instrument = instrument or INSTRUMENT
    cache_dir = _cache(cache_dir)
    points = []
    for arm in encoders(claims):
        x = arm_values(Arm(arm.name, arm.method, arm.overrides, metric=claim.statistic), claim.statistic,
                       instrument, cache_dir)
        y = arm_values(arm, claim.metric, instrument, cache_dir)
        if x is not None and y is not None:
            points.append({"name": arm.name, "method": arm.method, "overrides": arm.overrides,
                           "statistic": statistics.mean(x), "metric": statistics.mean(y)})
    return points


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
    if ins["cell_seconds"]:
        lines.append(f"  one SimCLR run: {statistics.median(ins['cell_seconds']):.0f} s of one thread (median)")
    for c in card["claims"]:
        lines.append(f"[{c['verdict']}] {c['id']} (seed claim {c['seed_claim']}, chapter {c['chapter']}): "
                     f"diff {c['diff']:+.4f} +- {c['half_width']:.4f}{' paired' if c['paired'] else ''}")
    for c in card.get("correlations", []):
        lines.append(f"[{c['verdict']}] {c['id']} (seed claim {c['seed_claim']}, chapter {c['chapter']}): "
                     f"Spearman rho {c['rho']:+.3f}, 95% bootstrap interval [{c['low']:+.3f}, {c['high']:+.3f}] "
                     f"over {c['n']} encoders")
    if card["pending"]:
        lines.append(f"pending (records missing; --compute trains them): {', '.join(card['pending'])}")
    return "\n".join(lines)


def _mean_se_text(values) -> str:
    mean, se, n = stats.mean_se(values)
    return f"{mean:.4f} (n = {n}, all equal)" if se == 0 else f"{mean:.4f} +- {se:.4f} (n = {n})"
