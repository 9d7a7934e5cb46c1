"""The commands behind `slmtune`: each a plain function of its parsed arguments that calls the library and
prints what the library returns (slmtune.console formats it). The parser is slmtune.cli."""

from __future__ import annotations

import argparse

from slmtune.errors import SlmtuneError


def one_of_text_or_input(args: argparse.Namespace) -> None:
    if bool(args.text) == bool(args.input):
        raise SlmtuneError("give --text (one or more) or --input FILE")


def cmd_train(args: argparse.Namespace) -> None:
    from slmtune.cli import TRAIN_SHORTCUTS, with_shortcuts
    from slmtune.config import load_config
    from slmtune.console import train_summary
    from slmtune.train import train

    config = load_config(args.config, with_shortcuts(args, TRAIN_SHORTCUTS), method=args.method)
    print(train_summary(train(config, overwrite=args.overwrite), config))


def cmd_tune(args: argparse.Namespace) -> None:
    from slmtune.cli import DATA_SHORTCUTS, with_shortcuts
    from slmtune.config import load_config
    from slmtune.experiments.tune import TuneConfig, run_tune

    base = load_config(args.config, with_shortcuts(args, DATA_SHORTCUTS + ("--seed",)))
    values = {"time": args.time, "models": _names(args.models), "alpha": args.alpha}
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

    out = export_run(args.run_dir, args.out_dir, onnx=args.onnx, int8=args.int8, overwrite=args.overwrite)
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
    from slmtune.cli import DATA_SHORTCUTS, with_shortcuts
    from slmtune.experiments.workers import Execution

    kind = args.study_kind
    flag_text = {flag.field: getattr(args, flag.field + "_flag") for flag in kind.flags}
    overrides = with_shortcuts(args, DATA_SHORTCUTS)
    execution = Execution(args.workers, getattr(args, "queue_storage", None), getattr(args, "queue_worker", False),
                          tuple(args.argv))
    print(kind.run_from_cli(flag_text, args.config, args.study_dir, overrides, execution, name=args.name,
                            recipe=args.recipe))


def cmd_study(args: argparse.Namespace) -> None:
    from slmtune.cli import DATA_SHORTCUTS, with_shortcuts
    from slmtune.console import study_summary
    from slmtune.experiments.reference import load_reference_config, run_reference
    from slmtune.experiments.workers import Execution

    if bool(args.config) == bool(args.config_file):
        raise SlmtuneError("give the study config once: slmtune study --config configs/studies/reference.yaml")
    cfg = load_reference_config(args.config or args.config_file, args.name)
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
