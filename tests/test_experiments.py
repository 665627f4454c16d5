import json
from pathlib import Path

import pytest

from contrastlab import experiments as E


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASTLAB_RESULTS", str(tmp_path))
    return tmp_path


TINY = {"dataset.train_size": 300, "dataset.test_size": 100, "encoder.cnn_width": 4, "train.batch_size": 64,
        "train.monitor_train": 100, "train.monitor_test": 50, "eval.linear_epochs": 5}


def test_resolve_applies_budget_dataset_and_overrides_in_order():
    r = E.resolve(E.ExperimentConfig(method="simclr", budget="gpu", overrides={"train.epochs": 3}))
    assert r["encoder"]["name"] == "resnet18" and r["train"]["batch_size"] == 512   # gpu preset
    assert r["augment"]["size"] == 28 and r["augment"]["crop_scale"] == [0.4, 1.0]  # dataset preset
    assert r["train"]["epochs"] == 3                                                 # override wins
    assert r["method"] == {"name": "simclr", "temperature": 0.5, "head": "mlp", "proj_dim": 128,
                           "hidden_dim": None, "loss": "nt_xent", "normalize": True, "semi_hard": False,
                           "margin": 1.0}


def test_default_budget_follows_the_environment(monkeypatch):
    monkeypatch.setenv("CONTRASTLAB_BUDGET", "smoke")
    assert E.default_budget() == "smoke"
    assert E.resolve(E.ExperimentConfig())["budget"] == "smoke"
    monkeypatch.setenv("CONTRASTLAB_BUDGET", "huge")
    with pytest.raises(ValueError, match="unknown CONTRASTLAB_BUDGET 'huge'"):
        E.default_budget()


def test_bad_names_and_overrides_are_reported():
    with pytest.raises(ValueError, match="unknown method 'simclrr'; expected one of 'simclr'"):
        E.resolve(E.ExperimentConfig(method="simclrr"))
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        E.resolve(E.ExperimentConfig(dataset="mnist"))
    with pytest.raises(KeyError, match="unknown override 'train.epoch'.*train.epochs"):
        E.resolve(E.ExperimentConfig(overrides={"train.epoch": 3}))
    with pytest.raises(KeyError, match="unknown override 'method.name'"):
        E.resolve(E.ExperimentConfig(overrides={"method.name": "byol"}))


def test_hash_depends_on_every_setting():
    base = E.resolve(E.ExperimentConfig(budget="cpu"))
    other = E.resolve(E.ExperimentConfig(budget="cpu", overrides={"method.temperature": 0.3}))
    assert E.config_hash(base) == E.config_hash(E.resolve(E.ExperimentConfig(budget="cpu")))
    assert E.config_hash(base) != E.config_hash(other)


def test_run_records_provenance_and_is_cached(results):
    config = E.ExperimentConfig(method="simclr", dataset="digits", budget="smoke", overrides=TINY)
    record = E.run(config, progress=False)
    path = E.record_path(E.resolve(config))
    assert path.parent == results and path.exists()
    assert json.loads(path.read_text()) == record
    assert 0 <= record["metrics"]["knn_acc"] <= 1 and 0 <= record["metrics"]["linear_acc"] <= 1
    assert record["curves"]["epoch"] == [1] and len(record["curves"]["loss"]) == 1
    prov = record["provenance"]
    assert prov["budget"] == "smoke" and prov["device"].startswith("cpu") and prov["wall_time_s"] > 0
    assert {"contrastlab", "commit", "torch", "date"} <= prov.keys()
    assert prov["precision"] == E.resolved_precision(E.resolve(config))   # 'auto': bf16 on CPUs that compute it
    assert (E.run_dir(E.resolve(config)) / "checkpoint.pt").exists()
    # a second call loads the record instead of training: poison the file to prove it
    record["metrics"]["knn_acc"] = -1.0
    path.write_text(json.dumps(record))
    assert E.run(config, progress=False)["metrics"]["knn_acc"] == -1.0
    assert E.run(config, progress=False, force=True)["metrics"]["knn_acc"] >= 0


def test_baselines_run_without_training(results):
    over = {k: v for k, v in TINY.items() if k.startswith(("dataset", "eval"))}
    raw = E.run(E.ExperimentConfig(method="raw_pixels", dataset="digits", budget="smoke", overrides=over),
                progress=False)
    assert raw["curves"] == {} and "encoder" not in raw["config"]
    assert raw["metrics"]["linear_acc"] > 0.8          # digits are nearly linearly separable in pixels
    rnd = E.run(E.ExperimentConfig(method="random_init", dataset="digits", budget="smoke",
                                   overrides={**over, "encoder.cnn_width": 4}), progress=False)
    assert rnd["curves"] == {} and rnd["metrics"]["knn_acc"] > 0.2


def test_probe_z_adds_projection_metrics(results):
    rec = E.run(E.ExperimentConfig(method="simclr", dataset="digits", budget="smoke",
                                   overrides={**TINY, "eval.probe_z": True}), progress=False)
    assert {"knn_acc_z", "linear_acc_z"} <= rec["metrics"].keys()


def test_an_eval_only_change_reuses_the_finished_checkpoint(results):
    base = E.run(E.ExperimentConfig(method="simclr", dataset="digits", budget="smoke", overrides=TINY),
                 progress=False)
    config = E.ExperimentConfig(method="simclr", dataset="digits", budget="smoke",
                                overrides={**TINY, "eval.label_fractions": [0.1, 0.5], "eval.save_z": 7})
    rec = E.run(config, progress=False)
    assert rec["key"] != base["key"] and rec["provenance"]["resumed"] and not base["provenance"]["resumed"]
    assert rec["curves"] == base["curves"]                       # not trained again: the same history
    assert rec["metrics"]["knn_acc"] == base["metrics"]["knn_acc"]
    assert {"linear_acc_10pct", "linear_acc_50pct"} <= rec["metrics"].keys()
    assert len(rec["z_test"]) == 7 and len(rec["z_test_labels"]) == 7
    assert all(abs(sum(v * v for v in row) - 1) < 1e-3 for row in rec["z_test"])   # unit rows
    assert len(rec["z_test"][0]) == rec["config"]["method"]["proj_dim"]


def test_bad_eval_options_are_reported_before_training():
    with pytest.raises(ValueError, match=r"eval.label_fractions must be a list of shares in \(0, 1\].*got \[0.0\]"):
        E.resolve(E.ExperimentConfig(overrides={"eval.label_fractions": [0.0]}))
    with pytest.raises(ValueError, match="eval.save_z must be an int >= 0.*got -1"):
        E.resolve(E.ExperimentConfig(overrides={"eval.save_z": -1}))


def test_zero_epochs_evaluates_the_method_at_init(results):
    rec = E.run(E.ExperimentConfig(method="simclr", dataset="digits", budget="smoke",
                                   overrides={**TINY, "train.epochs": 0}), progress=False)
    assert all(v == [] for v in rec["curves"].values()) and 0 < rec["metrics"]["knn_acc"] <= 1


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "results").glob("*.json")),
                         ids=lambda p: p.name)
def test_published_records_are_still_found_by_their_config(path):
    """A record in results/ must keep its name when it is asked for again: re-resolving its method,
    dataset, budget and seed with the overrides that differ from today's defaults must give its key.
    A new option changes every key unless it is listed, with its "off" value, in _KEY_SKIPS_AT."""
    rec = json.loads(path.read_text())
    cfg = rec["config"]
    seed = cfg.get("train", {}).get("seed", 0)
    fresh = E.resolve(E.ExperimentConfig(method=cfg["method"]["name"], dataset=cfg["dataset"]["name"],
                                         budget=cfg["budget"], seed=seed))
    overrides, gone = {}, []
    for section, body in cfg.items():
        if not isinstance(body, dict):
            continue
        for k, v in body.items():
            if k not in fresh.get(section, {}):
                gone.append(f"{section}.{k}")
            elif fresh[section][k] != v and f"{section}.{k}" not in ("method.name", "dataset.name"):
                overrides[f"{section}.{k}"] = v
    assert not gone, f"{path.name}: options removed since it was made: {gone}"
    again = E.resolve(E.ExperimentConfig(method=cfg["method"]["name"], dataset=cfg["dataset"]["name"],
                                         budget=cfg["budget"], seed=seed, overrides=overrides))
    added = sorted(f"{s}.{k}" for s, b in again.items() if isinstance(b, dict) for k in b
                   if k not in cfg.get(s, {}))
    assert E.config_hash(again) == rec["key"], (
        f"{path.name} is no longer found: options added since it was made: {added}; list them with "
        f"their 'off' value in experiments._KEY_SKIPS_AT, or re-run the record")


def test_every_preset_key_names_a_real_field():
    full = E.resolve(E.ExperimentConfig(method="simclr", budget="cpu"))
    for preset in [*E.PRESETS.values(), *E.DATASET_AUGMENT.values()]:
        for key in preset:
            section, _, name = key.partition(".")
            assert name in full[section], key


def test_presets_skip_fields_a_baseline_does_not_have():
    r = E.resolve(E.ExperimentConfig(method="random_init", budget="cpu"))
    assert r["method"] == {"name": "random_init"} and r["encoder"]["cnn_width"] == 16


def test_choosing_resnet18_keeps_its_own_width():
    r = E.resolve(E.ExperimentConfig(budget="cpu", overrides={"encoder.name": "resnet18"}))
    encoder, _ = E.build_method(r, in_channels=1)
    assert encoder.out_dim == 512              # the cpu preset's small-CNN width does not leak in


# Small settings that make each method's own machinery run on 200 digits.
METHOD_EXTRAS = {"instdisc": {"method.nce_k": 64}, "swav": {"method.n_small": 2, "method.n_prototypes": 10}}


@pytest.mark.parametrize("method", sorted(E.METHODS))
def test_every_registered_method_runs_through_experiments(method, results):
    over = {**TINY, "dataset.train_size": 200, **METHOD_EXTRAS.get(method, {})}
    rec = E.run(E.ExperimentConfig(method=method, dataset="digits", budget="smoke", overrides=over), progress=False)
    assert rec["config"]["method"]["name"] == method
    assert 0 <= rec["metrics"]["knn_acc"] <= 1 and len(rec["curves"]["loss"]) == 1
    assert all(k in rec["curves"] for k in ("feature_std", "effective_rank", "alignment", "uniformity"))


def test_supervised_takes_the_number_of_classes_from_the_dataset():
    assert E.resolve(E.ExperimentConfig(method="supervised", dataset="cifar100"))["method"]["num_classes"] == 100
