"""The commands behind `slmtune`: each a plain function of its parsed arguments that calls the library and
prints what the library returns (slmtune.console formats it). The parser is slmtune.cli, its flag tables
slmtune.flags."""

from __future__ import annotations

import argparse
import sys

from slmtune.errors import SlmtuneError
from slmtune.flags import DATA_SHORTCUTS, TRAIN_SHORTCUTS, with_shortcuts


def one_of_text_or_input(args: argparse.Namespace) -> None:
    if bool(args.text) == bool(args.input):
        raise SlmtuneError("give --text (one or more) or --input FILE")


def cmd_train(args: argparse.Namespace) -> None:
    from slmtune.config import load_config
    from slmtune.console import train_summary
    from slmtune.train import train

    config = load_config(args.config, with_shortcuts(args, TRAIN_SHORTCUTS), method=args.method)
    print(train_summary(train(config, overwrite=args.overwrite), config))


def cmd_tune(args: argparse.Namespace) -> None:
    from slmtune.config import load_config
    from slmtune.experiments.tune import TuneConfig, run_tune

    if args.worker:
        from slmtune.experiments.tune_workers import serve_queue

        if not args.storage:
            raise SlmtuneError("--worker takes jobs from a search's queue: give the search's --storage URL")
        print(f"tune worker: trained {serve_queue(args.storage)} job(s)")
        return
    base = load_config(args.config, with_shortcuts(args, DATA_SHORTCUTS + ("--seed",)))
    values = {"time": args.time, "models": _names(args.models), "alpha": args.alpha, "workers": args.workers,
              "storage": args.storage, "cross_fit": args.cross_fit}
    for key in ("lora_rates", "full_rates"):
        if getattr(args, key) is not None:
            values[key] = [_rate(r, f"--{key.replace('_', '-')}") for r in _names(getattr(args, key))]
    run_tune(base, TuneConfig(**values), args.output_dir)


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _rate(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SlmtuneError(f"{flag} takes learning rates separated by commas, e.g. 5e-4,1e-3; got {text!r}") from None


def cmd_evaluate(args: argparse.Namespace) -> None:
    from slmtune.console import evaluation_summary
    from slmtune.serve.inference import evaluate_run

    metrics = evaluate_run(args.run_dir, args.split, args.backend, args.max_change)
    print(evaluation_summary(metrics, args.run_dir, args.split))


def cmd_predict(args: argparse.Namespace) -> None:
    from slmtune.console import prediction_lines
    from slmtune.serve.inference import predict, predict_file, write_predictions

    one_of_text_or_input(args)
    if args.input:
        output, rows = predict_file(args.run_dir, args.input, args.output, args.text_column, backend=args.backend,
                                    max_change=args.max_change)
        print(f"{rows} predictions written to {output}")
    else:
        predictions = predict(args.run_dir, args.text, backend=args.backend, max_change=args.max_change)
        if args.output:
            print(f"{len(predictions)} predictions written to {write_predictions(args.output, args.text, predictions)}")
        print(prediction_lines(args.text, predictions))


def cmd_export(args: argparse.Namespace) -> None:
    from slmtune.serve.export import export_run

    out = export_run(args.run_dir, args.out_dir, onnx=args.onnx, int8=args.int8, overwrite=args.overwrite,
                     max_change=args.max_change)
    print(f"exported to {out}: transformers.pipeline('text-classification', model='{out}') loads it")


def cmd_clean(args: argparse.Namespace) -> None:
    from slmtune.console import cleaning_preview
    from slmtune.data.clean import clean_file, clean_text

    one_of_text_or_input(args)
    pairs = ([(t, clean_text(t, args.rules)) for t in args.text or []]
             or clean_file(args.input, args.output, args.text_column, args.rules))
    print(cleaning_preview(pairs, args.output, args.preview))


def cmd_study_kind(args: argparse.Namespace) -> None:
    """Any registered study: its flags onto its config, its `run`, its report."""
    from slmtune.experiments.workers import Execution

    kind = args.study_kind
    flag_text = {flag.field: getattr(args, flag.field + "_flag") for flag in kind.flags}
    overrides = with_shortcuts(args, DATA_SHORTCUTS)
    execution = Execution(args.workers, getattr(args, "queue_storage", None), getattr(args, "queue_worker", False),
                          tuple(args.argv))
    print(kind.run_from_cli(flag_text, args.config, args.study_dir, overrides, execution, name=args.name,
                            recipe=args.recipe))


def cmd_study(args: argparse.Namespace) -> None:
    from slmtune.console import study_summary
    from slmtune.experiments.reference import exhaustive, load_reference_config, run_reference
    from slmtune.experiments.workers import Execution

    if bool(args.config) == bool(args.config_file):
        raise SlmtuneError("give the study config once: slmtune study --config configs/studies/reference.yaml")
    cfg = load_reference_config(args.config or args.config_file, args.name)
    cfg = exhaustive(cfg) if args.exhaustive else cfg
    only = [p.strip() for p in args.only.split(",") if p.strip()] if args.only else None
    print(study_summary(run_reference(
        cfg, args.study_dir, with_shortcuts(args, DATA_SHORTCUTS), only=only, budget=args.budget,
        dry_run=args.dry_run,
        execution=Execution(args.workers, args.queue_storage, args.queue_worker, tuple(args.argv)))))


def cmd_config(args: argparse.Namespace) -> None:
    from slmtune.config import reference_markdown, reference_text

    print(reference_markdown() if args.markdown else reference_text(args.field or ""), end="")


def cmd_env(args: argparse.Namespace) -> None:
    from slmtune.diagnostics import diagnostics, diagnostics_text

    print(diagnostics_text(diagnostics(), as_json=args.json))


def cmd_report(args: argparse.Namespace) -> None:
    from slmtune.report.html import build_report

    path = build_report(args.folder, args.output)
    print(f"slmtune report: wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained; open it in a browser)")


def cmd_serve(args: argparse.Namespace) -> None:
    from slmtune.serve.http import ServerConfig, serve

    serve(args.run_dir, args.host, args.port, ServerConfig(args.backend, args.max_change, args.max_texts),
          ready=lambda line: print(line, flush=True))


def cmd_label(args: argparse.Namespace) -> None:
    """`slmtune label ACTION PROJECT`: the labelling loop (slmtune.label)."""
    import json

    from slmtune.label.session import Session, status_lines

    say = lambda line: print(line, flush=True)  # noqa: E731
    if args.action == "init":
        from slmtune.label.project import init_project, parse_descriptions

        project = init_project(args.project, args.data, _names(args.labels), args.text_column, args.id_column,
                               parse_descriptions(args.describe), args.model, args.audit_share, args.seed)
        print(f"slmtune label: {args.project}: {len(project.ids):,} texts to label as {', '.join(project.labels)}; "
              f"next: slmtune label serve {args.project}")
    elif args.action == "serve":
        from slmtune.label.page import serve_project

        serve_project(args.project, args.host, args.port, ready=say)
    elif args.action == "export":
        from slmtune.label.transfer import export_batch

        written = export_batch(Session(args.project, say=say), args.n, args.output)
        print(f"{written} texts to label written to {args.output}; fill in the label column, then: "
              f"slmtune label import {args.project} {args.output}")
    elif args.action == "import":
        from slmtune.label.transfer import import_batch

        counts = import_batch(Session(args.project, say=say), args.file)
        print(f"imported {counts['labelled']} labels ({counts['unchanged']} already given, {counts['empty']} rows "
              "without a label)")
    elif args.action == "status":
        status = Session(args.project, say=lambda line: print(line, file=sys.stderr)).status()
        print(json.dumps(status, indent=2) if args.json else "\n".join(status_lines(status)))
    elif args.action == "train":
        _label_train(args)
    elif args.action == "simulate":
        _label_simulate(args)


def _label_train(args: argparse.Namespace) -> None:
    from slmtune.config import load_config
    from slmtune.label.project import Project
    from slmtune.label.train import data_overrides

    overrides, what = data_overrides(Project(args.project))
    print(f"slmtune label train: {what}", flush=True)
    if args.method == "tune":
        from slmtune.experiments.tune import TuneConfig, run_tune

        if not args.output_dir:
            raise SlmtuneError("--method tune needs --output-dir (the search folder)")
        run_tune(load_config(args.config, overrides + list(args.overrides)), TuneConfig(time=args.time),
                 args.output_dir)
        return
    from slmtune.console import train_summary
    from slmtune.train import train

    extra = [f"output_dir={args.output_dir}"] if args.output_dir else []
    config = load_config(args.config, overrides + extra + list(args.overrides), method=args.method)
    print(train_summary(train(config), config))


def _label_simulate(args: argparse.Namespace) -> None:
    from slmtune.label.project import parse_descriptions
    from slmtune.label.simulate import SimulateConfig, simulate_data

    if not args.data:
        raise SlmtuneError("label simulate needs --data (a labelled file)")
    sim = SimulateConfig(budget=args.budget, seeds=args.seeds, step=args.step, pool=args.pool,
                         audit_share=args.audit_share)
    summary = simulate_data(args.data, args.text_column or "text", args.label_column, args.test_file, args.model,
                            parse_descriptions(args.describe), sim, out_dir=args.output_dir)
    loop, random = summary["labels_to_target"]["loop"], summary["labels_to_target"]["random"]
    print(f"labels to {sim.target:.0%} of the full-data probe ({summary['target_accuracy']:.4f}): loop {loop}, "
          f"random {random} (paired t-test, loop fewer: p={summary['labels_to_target_p']})")
    print(f"time per answer: p50 {summary['answer_seconds_p50'] * 1000:.0f} ms, "
          f"p95 {summary['answer_seconds_p95'] * 1000:.0f} ms on a pool of {summary['pool_rows']:,}")
