"""The scorecard: claims read from records, decided by the book's one rule, and the published records
meeting the instrument's own requirements (range, resolution, cost)."""
import json
import math
import statistics

import pytest

from contrastlab import cli, experiments, scorecard, stats
from contrastlab.scorecard import Arm, Claim, Instrument

# A tiny instrument: digits at the smoke budget, three seeds (seconds a cell).
TINY = Instrument(name="tiny", budget="smoke", dataset="digits", seeds=(0, 1, 2))
TINY_CLAIMS = (
    Claim("tiny-simclr-vs-random", 1, "05", "SimCLR vs random init", "paper", Arm("SimCLR"),
          Arm("random", "random_init"), paired=False),
    Claim("tiny-gain", 3, "05", "a difference of runs", "paper", Arm("gain", minus=Arm("random", "random_init")),
          Arm("zero", "random_init", minus=Arm("random", "random_init"))),
)


# four trained encoders (SimCLR at four temperatures) for a rank claim; the references add two more
TINY_TEMPERATURES = (0.1, 0.3, 1.0, 3.0)
TINY_RANKED = TINY_CLAIMS + tuple(
    Claim(f"tiny-tau-{t}", None, "10", "temperatures", "paper", Arm(f"tau {t}", overrides={"method.temperature": t}),
          Arm("random", "random_init"), paired=False) for t in TINY_TEMPERATURES)
TINY_RANK = (scorecard.RankClaim("tiny-alignment", 13, "10", "aligned encoders probe better", "paper",
                                 "final.alignment", -1),)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("records")
    assert scorecard.compute(1, instrument=TINY, claims=TINY_RANKED, cache_dir=cache, log=lambda s: None) > 0
    return cache


def test_rank_claims_correlate_every_trained_encoder(tiny_cache):
    names = [arm.name for arm in scorecard.encoders(TINY_RANKED)]
    assert names == ["SimCLR"] + [f"tau {t}" for t in TINY_TEMPERATURES]   # baselines and differences' copies left out
    card = scorecard.scorecard(TINY, TINY_RANKED, cache_dir=tiny_cache, rank_claims=TINY_RANK)
    (corr,) = card["correlations"]
    assert corr["n"] == 5 and [p["name"] for p in corr["encoders"]] == names
    for point, arm in zip(corr["encoders"], scorecard.encoders(TINY_RANKED)):
        records = [json.loads(experiments.record_path(experiments.resolve(c), tiny_cache).read_text())
                   for s in TINY.seeds for c in arm.configs(TINY, s)]
        assert point["statistic"] == pytest.approx(statistics.mean(r["curves"]["alignment"][-1] for r in records))
        assert point["metric"] == pytest.approx(statistics.mean(r["metrics"]["linear_acc"] for r in records))
    again = stats.rank_correlation([p["statistic"] for p in corr["encoders"]],
                                   [p["metric"] for p in corr["encoders"]], direction=-1)
    assert (corr["rho"], corr["low"], corr["high"], corr["verdict"]) == (again.rho, again.low, again.high, again.verdict)
    short = scorecard.scorecard(TINY, TINY_CLAIMS, cache_dir=tiny_cache, rank_claims=TINY_RANK)
    assert short["correlations"] == [] and "tiny-alignment" in short["pending"]   # one encoder is too few


def test_missing_records_leave_claims_pending(tmp_path):
    card = scorecard.scorecard(TINY, TINY_CLAIMS, cache_dir=tmp_path)
    assert card["claims"] == [] and card["pending"] == ["tiny-simclr-vs-random", "tiny-gain"]
    assert card["instrument"]["references"]["simclr"] == []
    n = len(scorecard.missing_configs(TINY, TINY_CLAIMS, tmp_path))
    # 3 trained references x 3 seeds (SimCLR and random init are also the claims' arms), and raw pixels
    # once: nothing is trained and no seed enters its record
    assert n == 3 * 3 + 1


def test_compute_fills_every_cell_and_the_verdicts_follow_the_rule(tiny_cache):
    assert scorecard.missing_configs(TINY, TINY_CLAIMS, tiny_cache) == []
    assert scorecard.compute(1, instrument=TINY, claims=TINY_CLAIMS, cache_dir=tiny_cache, log=lambda s: None) == 0
    card = scorecard.scorecard(TINY, TINY_CLAIMS, cache_dir=tiny_cache)
    assert card["pending"] == []
    by_id = {c["id"]: c for c in card["claims"]}
    first = by_id["tiny-simclr-vs-random"]
    a, b = (arm["values"] for arm in first["arms"])
    # the values are the records' metrics, seed by seed
    for seed, value in zip(TINY.seeds, a):
        config = experiments.ExperimentConfig("simclr", "digits", "smoke", seed)
        record = json.loads(experiments.record_path(experiments.resolve(config), tiny_cache).read_text())
        assert record["metrics"]["linear_acc"] == value
    assert first["verdict"] == stats.compare_arms(a, b).verdict
    # a difference of a run with itself is exactly zero at every seed: not resolved
    zero = by_id["tiny-gain"]["arms"][1]["values"]
    assert zero == [0.0, 0.0, 0.0] and by_id["tiny-gain"]["paired"]
    ins = card["instrument"]
    assert set(ins["references"]) == {"random_init", "raw_pixels", "supervised", "simclr"}
    assert all(len(v) == 3 for v in ins["references"].values())
    assert len(ins["cell_seconds"]) == 3
    assert ins["mdd"]["3"] == pytest.approx(stats.mdd(statistics.stdev(ins["references"]["simclr"]), 3))


def test_cli_prints_json_and_rejects_bad_arguments(tiny_cache, capsys, monkeypatch):
    monkeypatch.setattr(scorecard, "INSTRUMENT", TINY)
    monkeypatch.setattr(scorecard, "CLAIMS", TINY_RANKED)
    monkeypatch.setattr(scorecard, "RANK_CLAIMS", TINY_RANK)
    assert cli.main(["scorecard", "--json", "--results", str(tiny_cache)]) == 0
    card = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in card["claims"]] == [c.id for c in TINY_RANKED]
    assert [c["id"] for c in card["correlations"]] == [c.id for c in TINY_RANK]     # the rank claims too
    with pytest.raises(SystemExit, match="--jobs must be >= 1"):
        cli.main(["scorecard", "--compute", "--jobs", "0"])
    with pytest.raises(SystemExit, match="--chapter must be one of"):
        cli.main(["scorecard", "--compute", "--chapter", "99"])


# ------------------------------------------------------------------------------------------
# the published records: what the book says rests on them


def _welch_by_hand(a, b, paired):
    """The rule written again from its statement, independently of contrastlab.stats."""
    from scipy.stats import t
    if paired:
        d = [x - y for x, y in zip(a, b)]
        diff, se, df = statistics.mean(d), statistics.stdev(d) / math.sqrt(len(d)), len(d) - 1
    else:
        va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
        diff, se = statistics.mean(a) - statistics.mean(b), math.sqrt(va + vb)
        df = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1)) + (vb ** 2 / (len(b) - 1))) if se else 1
    if se == 0:
        return "reproduced" if diff > 0 else "reversed" if diff < 0 else "not resolved"
    h = t.ppf(0.975, df) * se
    return "reproduced" if diff > h else "reversed" if diff < -h else "not resolved"


@pytest.fixture(scope="module")
def published():
    return scorecard.scorecard()


def test_published_verdicts_are_the_rule_recomputed(published):
    assert published["claims"], "no claim has its records in results/"
    for claim in published["claims"]:
        a, b = (arm["values"] for arm in claim["arms"])
        assert min(len(a), len(b)) >= 3, claim["id"]
        assert claim["verdict"] == _welch_by_hand(a, b, claim["paired"]), claim["id"]


def _range(ins):
    refs = ins["references"]
    assert all(len(refs[k]) >= 3 for k in ("random_init", "raw_pixels", "supervised", "simclr")), refs
    floor = max(statistics.mean(refs["random_init"]), statistics.mean(refs["raw_pixels"]))
    return statistics.mean(refs["simclr"]) - floor


def test_published_instrument_has_range_and_cost(published):
    ins = published["instrument"]
    assert _range(ins) >= 0.15, f"range {_range(ins):.3f}"
    assert ins["seeds_per_cell"] >= 3
    assert ins["seeds_per_cell"] * statistics.median(ins["cell_seconds"]) <= 720
    assert ins["range"] == pytest.approx(_range(ins))


def test_published_instrument_resolves_5_percent_of_its_range(published):
    ins = published["instrument"]
    sd = statistics.stdev(ins["references"]["simclr"])
    assert stats.mdd(sd, ins["seeds_per_cell"]) <= 0.05 * _range(ins)


def test_every_seed_claim_1_to_14_is_decided_from_the_records(published):
    assert published["pending"] == [], f"claims whose records are missing: {published['pending']}"
    decided = {c["seed_claim"] for c in published["claims"] if c["kind"] == "claim"} | \
        {c["seed_claim"] for c in published["correlations"]}          # claim 13: rank correlations over encoders
    assert set(range(1, 15)) - {14} <= decided        # 14 is the families' trade-off: bookkeeping facts below
    assert {c["kind"] for c in published["claims"]} == {"claim", "bookkeeping"}
    facts = [c for c in published["claims"] if c["kind"] == "bookkeeping"]
    assert facts and {c["seed_claim"] for c in facts} == {14}


def test_book_counts_rank_claims_and_reports_bookkeeping_apart(tiny_cache):
    from contrastlab import book
    facts = (Claim("tiny-fact", 14, "11", "a fact", "paper", Arm("a", analysis=lambda s, cache: 2e6),
                   Arm("b", analysis=lambda s, cache: 1e6), metric="bytes", kind="bookkeeping"),)
    card = scorecard.scorecard(TINY, TINY_RANKED + facts, cache_dir=tiny_cache, rank_claims=TINY_RANK)
    (fact,) = [c for c in card["claims"] if c["kind"] == "bookkeeping"]
    assert fact["arms"][0]["values"] == [2e6] * 3
    counts = book.verdict_counts(card, "10")
    rank_verdict = card["correlations"][0]["verdict"]
    tau_verdicts = [c["verdict"] for c in card["claims"] if c["id"].startswith("tiny-tau")]
    assert sum(counts.values()) == len(tau_verdicts) + 1
    assert counts[rank_verdict] == tau_verdicts.count(rank_verdict) + 1
    assert sum(book.verdict_counts(card, "11").values()) == 0          # the fact is not counted
    assert "2.0 MB" in str(book.facts_table(card, "11")) and "| a fact |" not in str(book.claims_table(card, "11"))
    assert "Spearman's rho" in book.verdict_sentence(card, "tiny-alignment")
    assert f"{card['correlations'][0]['rho']:+.2f}" in str(book.correlations_table(card, "10"))


def test_a_claim_is_at_the_ceiling_only_when_both_arms_sit_within_the_resolution_of_100_percent():
    ins = {"seeds_per_cell": 3, "mdd": {"3": 0.015, "5": 0.01}}
    assert scorecard.at_ceiling("linear_acc", [0.999, 0.998, 0.997], [0.990, 0.991, 0.989], ins)
    assert not scorecard.at_ceiling("linear_acc", [0.999, 0.998, 0.997], [0.97, 0.98, 0.975], ins)   # b has room
    assert not scorecard.at_ceiling("embed_std", [0.999] * 3, [0.999] * 3, ins)      # not an accuracy
    assert not scorecard.at_ceiling("linear_acc", [0.999] * 3, [0.999] * 3, {"seeds_per_cell": 3})   # no MDD yet


def test_published_ceiling_flags_follow_the_instrument(published):
    mdd = published["instrument"]["mdd"][str(published["instrument"]["seeds_per_cell"])]
    for claim in published["claims"]:
        a, b = (statistics.mean(arm["values"]) for arm in claim["arms"])
        expected = claim["metric"].endswith("_acc") and min(a, b) >= 1 - mdd
        assert claim["at_ceiling"] == expected, claim["id"]


def test_arm_seconds_are_each_seed_records_cpu_time(tiny_cache, tmp_path):
    arm = TINY_CLAIMS[0].a
    seconds = scorecard.arm_seconds(arm, TINY, tiny_cache)
    records = [json.loads(experiments.record_path(experiments.resolve(arm.configs(TINY, s)[0]), tiny_cache).read_text())
               for s in TINY.seeds]
    assert seconds == [r["provenance"].get("cpu_time_s", r["provenance"]["wall_time_s"]) for r in records]
    assert all(x > 0 for x in seconds)
    assert scorecard.arm_seconds(arm, TINY, tmp_path) is None                # no records: no cost
    assert scorecard.arm_seconds(Arm("x", analysis=lambda s, c: 1.0), TINY, tiny_cache) is None
