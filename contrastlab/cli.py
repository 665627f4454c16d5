"""Command line: ``python -m contrastlab train|compare|eval|scorecard``.

    python -m contrastlab train simclr --dataset fashion-mnist --encoder resnet18 --epochs 50
    python -m contrastlab compare simclr moco byol:method.predictor=false --budget cpu
    python -m contrastlab eval results/runs/<run>/checkpoint.pt
    python -m contrastlab scorecard --json      every claim the book tests, from the records

``train`` goes through `contrastlab.experiments.run`, so its result is cached like a
chapter's, its checkpoint lives in results/runs/<run>/ and an interrupted run resumes when
the same command is given again. Its options are generated from the config dataclasses
(their field comments are the help text); only the options given on the command line
override the budget's preset.

On several processes, ``torchrun --nproc_per_node=N -m contrastlab train METHOD ...`` trains
with DDP (`contrastlab.distributed`); ``--batch-size`` is then the global batch, split equally
over the N processes, and rank 0 alone prints and writes the record and the checkpoint.

A mistake on the command line (a bad value, a missing or damaged file, a run that diverges) prints
one line ``error: ...`` and exits with status 2; ``--debug`` (or ``CONTRASTLAB_DEBUG=1``) shows the
traceback instead. Ctrl-C prints where training stopped and exits with status 130.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import sys
import typing
from pathlib import Path

from . import distributed, experiments
from .augment import AugmentConfig
from .methods import METHODS
from .train import TrainConfig

# Sections of the resolved config and the dataclass that describes each.
SECTIONS = [("dataset", experiments.DataConfig), ("encoder", experiments.EncoderConfig),
            ("augment", AugmentConfig), ("train", TrainConfig), ("eval", experiments.EvalConfig)]
# Flags with a name of their own; every other field is --field-name (--section-field on a clash).
RENAMED = {"encoder.name": "--encoder"}
SKIPPED = {"dataset.name", "train.seed"}  # given by --dataset and --seed


def _field_comments(cls) -> dict[str, str]:
    """The trailing ``# comment`` of each field in a dataclass's source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m[1]: m[2].strip() for m in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.*)$", source, re.MULTILINE)}


def _argument_kwargs(tp, default) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if args and type(None) in args:                       # Optional[X] -> X, 'none' allowed
        inner = next(a for a in args if a is not type(None))
        kw = _argument_kwargs(inner, default)
        convert = kw.get("type", str)
        kw["type"] = lambda s, convert=convert: None if s.lower() == "none" else convert(s)
        return kw
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if tp is list or origin is list:                      # a list of numbers: --label-fractions 0.01 0.1
        return {"type": args[0] if args else float, "nargs": "*"}
    if origin is tuple:
        return {"type": args[0], "nargs": len(args), "metavar": tuple(a.__name__.upper() for a in args)}
    return {"type": tp}


def add_config_arguments(parser: argparse.ArgumentParser, method: str | None = None) -> None:
    """One flag per config field, with dest 'section.field' and no default (so unset = untouched).

    The method's own options (its config dataclass) are added when ``method`` is known.
    """
    names: dict[str, int] = {}
    fields = []
    sections = SECTIONS + ([("method", METHODS[method][1])] if method in METHODS else [])
    for section, cls in sections:
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            if key not in SKIPPED and key not in (k for k, _, _, _ in fields):
                fields.append((key, section, cls, f))
                names[f.name] = names.get(f.name, 0) + 1
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, section, cls, f in fields:
        flag = RENAMED.get(key) or ("--" + (f.name if names[f.name] == 1 else f"{section}_{f.name}")).replace("_", "-")
        hints = typing.get_type_hints(cls)
        comment = _field_comments(cls).get(f.name, "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        group = groups.setdefault(section, parser.add_argument_group(f"{section} options"))
        help_text = f"{comment} (default {default!r}; budgets may preset it)".replace("%", "%%")
        kwargs = _argument_kwargs(hints[f.name], default)
        if "action" not in kwargs:
            kwargs.setdefault("metavar", f.name.upper())
        group.add_argument(flag, dest=key, default=argparse.SUPPRESS, help=help_text, **kwargs)


def build_parser(method: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``method`` (the word after ``train``) adds that method's own options."""
    parser = argparse.ArgumentParser(prog="python -m contrastlab",
                                     description="Contrastive self-supervised learning: train and evaluate.")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also: CONTRASTLAB_DEBUG=1); "
                             "accepted anywhere on the line")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a method and evaluate it (kNN and linear probe)",
                           description="Train a method through experiments.run: cached by config, "
                                       "resumable, evaluated with kNN and a linear probe.")
    train.add_argument("method", help=f"one of: {', '.join(METHODS)}; "
                                       "`train METHOD --help` lists the method's own options")
    train.add_argument("--dataset", default="fashion-mnist", help="dataset name (default fashion-mnist)")
    train.add_argument("--budget", choices=experiments.BUDGETS, default=None,
                       help="preset size of the run (default: $CONTRASTLAB_BUDGET, else gpu with CUDA, else cpu)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--results", default=None, help="results folder (default: see experiments.default_cache_dir)")
    train.add_argument("--force", action="store_true", help="train again even if a cached record exists")
    add_config_arguments(train, method)

    cmp = sub.add_parser("compare", help="run (or load from the cache) several methods and print one table",
                         description="Run each RUN through experiments.run (cached records are loaded, "
                                     "not retrained) and print a Markdown table of test accuracy, the spread "
                                     "of z over the epochs, wall time and device.")
    cmp.add_argument("runs", nargs="*", metavar="RUN",
                     help="METHOD or METHOD:key=value,key=value with dotted override keys, e.g. "
                          "byol:method.predictor=false (default: the baselines and every method)")
    cmp.add_argument("--dataset", default="fashion-mnist", help="dataset name (default fashion-mnist)")
    cmp.add_argument("--budget", choices=experiments.BUDGETS, default=None, help="as for train")
    cmp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    cmp.add_argument("--results", default=None, help="results folder (default: see experiments.default_cache_dir)")
    cmp.add_argument("--force", action="store_true", help="train again even where a cached record exists")
    cmp.add_argument("--into", metavar="FILE", help="also write the table into FILE between the markers "
                                                    "<!-- compare:BLOCK --> and <!-- /compare:BLOCK -->")
    cmp.add_argument("--block", default="methods", help="marker name used with --into (default methods)")
    cmp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="common",
                     help="an override for every run (repeatable), under each run's own, e.g. "
                          "--set eval.label_fractions=[0.01,0.1] adds the 1%% and 10%% label probes")

    sc = sub.add_parser("scorecard", help="every claim the book tests, decided from the stored records",
                        description="The measuring instrument's calibration and every claim's per-seed values, "
                                    "difference, standard error and verdict (95% Welch or paired interval), "
                                    "read from the records without training; --compute trains the missing cells.")
    sc.add_argument("--json", action="store_true", help="print the scorecard as JSON")
    sc.add_argument("--compute", action="store_true", help="train the cells whose records are missing first")
    sc.add_argument("--jobs", type=int, default=2, help="cells trained at once with --compute, one thread each (default 2)")
    sc.add_argument("--chapter", default=None, help="with --compute: only the claims of this chapter, e.g. 05")
    sc.add_argument("--results", default=None, help="results folder (default: see experiments.default_cache_dir)")

    ev = sub.add_parser("eval", help="evaluate a checkpoint: kNN and linear-probe accuracy on the test split")
    ev.add_argument("checkpoint", help="path to a checkpoint.pt written by train, or the run folder holding it")
    return parser


def _print_metrics(m: dict) -> None:
    print(f"kNN accuracy (k={m.get('knn_k', 200)}): {m['knn_acc']:.4f}")
    print(f"linear probe accuracy: {m['linear_acc']:.4f}")


def cmd_train(args: argparse.Namespace) -> int:
    if args.method not in METHODS:
        raise SystemExit(f"error: unknown method {args.method!r}; expected one of {', '.join(METHODS)}")
    reserved = {"command", "method", "dataset", "budget", "seed", "results", "force", "debug"}
    overrides = {k: v for k, v in vars(args).items() if k not in reserved}
    config = experiments.ExperimentConfig(method=args.method, dataset=args.dataset, budget=args.budget,
                                          seed=args.seed, overrides=overrides)
    resolved = experiments.resolve(config)   # a bad value stops here, before anything is trained
    path = experiments.record_path(resolved, args.results)
    distributed.init_from_env(device=resolved["train"]["device"])   # under torchrun (run loads data rank 0 first)
    main = distributed.is_main()
    if main:
        world = distributed.world_size()
        ranks = f"; {world} processes, {resolved['train']['batch_size'] // world} images each per step" \
            if world > 1 else ""
        print(f"{args.method} on {args.dataset}, budget {resolved['budget']}{ranks}; record {path}")
    record = experiments.run(config, cache_dir=args.results, force=args.force)
    distributed.cleanup()
    if not main:
        return 0
    _print_metrics(record["metrics"])
    ckpt = experiments.run_dir(resolved, args.results) / "checkpoint.pt"
    if ckpt.exists():
        print(f"checkpoint: {ckpt}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from . import report
    runs = args.runs or list(report.DEFAULT_RUNS)
    common = {}                # each --set on its own, so a malformed one is named as it was given
    for item in args.common:
        common.update(report.parse_overrides(item, where="--set"))
    results = report.compare(runs, dataset=args.dataset, budget=args.budget, seed=args.seed,
                             cache_dir=args.results, force=args.force, common=common)
    budget = results[0][1]["config"]["budget"] if results else args.budget
    command = " ".join(["python -m contrastlab compare", *runs, f"--dataset {args.dataset}",
                        f"--budget {budget}", *([f"--seed {args.seed}"] if args.seed else []),
                        *(f"--set {item}" for item in args.common)])
    text = (f"{args.dataset}, budget `{budget}`, seed {args.seed}; test accuracy of h. "
            f"Regenerate with `{command}`.\n\n{report.markdown_table(results)}")
    print(text)
    if args.into:
        report.write_block(args.into, args.block, text)
        print(f"written into {args.into} (block {args.block})")
    return 0


def cmd_scorecard(args: argparse.Namespace) -> int:
    import json
    from . import scorecard
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs must be >= 1 (cells trained at once), got {args.jobs}")
    if args.chapter is not None and not any(c.chapter == args.chapter for c in scorecard.CLAIMS):
        chapters = sorted({c.chapter for c in scorecard.CLAIMS})
        raise SystemExit(f"error: --chapter must be one of {', '.join(chapters)} (chapters with claims), "
                         f"got {args.chapter!r}")
    if args.compute:
        scorecard.compute(args.jobs, instrument=scorecard.INSTRUMENT, claims=scorecard.CLAIMS,
                          cache_dir=args.results, chapter=args.chapter,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
    card = scorecard.scorecard(scorecard.INSTRUMENT, scorecard.CLAIMS, cache_dir=args.results,
                               rank_claims=scorecard.RANK_CLAIMS)
    print(json.dumps(card, indent=1) if args.json else scorecard.format_text(card))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from . import train
    if Path(args.checkpoint).is_dir():          # a run folder: its checkpoint
        args.checkpoint = str(Path(args.checkpoint) / "checkpoint.pt")
    state = train.load_checkpoint(args.checkpoint)
    resolved = state.get("meta", {}).get("experiment")
    if resolved is None:
        raise train.CheckpointError(f"checkpoint {args.checkpoint!r} holds no experiment config: "
                                    "it was not written by `python -m contrastlab train` or experiments.run")
    x_tr, y_tr, x_te, y_te = experiments.load_data(resolved["dataset"], resolved["train"]["seed"])
    _, method = experiments.build_method(resolved, x_tr.shape[1], num_samples=len(x_tr))
    train._load_model_state(method, state["model"], args.checkpoint)
    encoder = method.encoder
    device = train.resolve_device(resolved["train"]["device"])
    encoder.to(device)
    transform = train.eval_transform(resolved["augment"]["size"])
    from . import metrics
    f_tr = metrics.extract_features(encoder, x_tr, transform=transform)
    f_te = metrics.extract_features(encoder, x_te, transform=transform)
    result = experiments.evaluate(f_tr, y_tr.to(f_tr.device), f_te, y_te.to(f_te.device), resolved["eval"],
                                  resolved["train"]["seed"])
    print(f"{Path(args.checkpoint)}: {resolved['method']['name']} on {resolved['dataset']['name']}, "
          f"step {state['step']}")
    _print_metrics(result)
    return 0


def _message(e: BaseException) -> str:
    """The text of an exception, without the quotes a KeyError puts around it."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


# What a user's mistake raises: printed as one line. Anything else is a bug, also one line, saying so.
_USER_ERRORS = (ValueError, TypeError, KeyError, OSError, RuntimeError, FloatingPointError)


def _close_progress_bars() -> None:
    """End any progress bar an error interrupted, so the message starts on a line of its own."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("CONTRASTLAB_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    method = argv[1] if len(argv) > 1 and argv[0] == "train" and not argv[1].startswith("-") else None
    args = build_parser(method).parse_args(argv)
    try:
        return {"train": cmd_train, "compare": cmd_compare, "eval": cmd_eval,
                "scorecard": cmd_scorecard}[args.command](args)
    except KeyboardInterrupt as e:
        if debug:
            raise
        _close_progress_bars()
        print(f"interrupted: {_message(e) or 'stopped by Ctrl-C'}", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        known = isinstance(e, _USER_ERRORS)
        text = _message(e) if known else f"unexpected {type(e).__name__}: {_message(e)}"
        _close_progress_bars()
        print(f"error: {text}" + ("" if known else " (rerun with --debug for the traceback)"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
