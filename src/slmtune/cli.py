"""Thin CLI: parse arguments, load the config, call one public function per subcommand."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from slmtune.errors import SlmtuneError


def _table(rows: list[tuple[str, str]], title: str = "") -> str:
    width = max(len(k) for k, _ in rows)
    lines = [title] if title else []
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


# ---------------------------------------------------------------------------------------------- commands


TRAIN_FLAGS = {  # --flag: (config field, help)
    "--model": ("model.name", "minilm-l6 (default), distilbert-base-uncased, a Hub id or a local folder"),
    "--data-dir": ("data.data_dir", "AG News CSV folder (default: $SLMTUNE_DATA_DIR, else the Hub)"),
    "--dataset": ("data.dataset", "ag_news, or a CSV/TSV/JSONL/Parquet training file"),
    "--test-file": ("data.test_file", "test rows for a custom dataset"),
    "--text-column": ("data.text_column", "the text column of a custom dataset"),
    "--label-column": ("data.label_column", "the label column of a custom dataset"),
    "--output-dir": ("output_dir", "run folder (default runs/<name>-<timestamp>); must be new or empty"),
    "--name": ("name", "run name"),
    "--seed": ("seed", "seed of the data draw, batch order and initialisation"),
}


def cmd_train(args: argparse.Namespace) -> int:
    from slmtune.config import load_config
    from slmtune.train import train

    given = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _) in TRAIN_FLAGS.items()}
    overrides = [f"{k}={v}" for k, v in given.items() if v is not None] + list(args.overrides)
    config = load_config(args.config, overrides, method=args.method)
    if args.method == "full" and config.name == "agnews-lora" and not args.name:
        config.name = "agnews-full"
    result = train(config, overwrite=args.overwrite)
    test, val, p, sec = result.metrics["test"], result.metrics["validation"], result.params, result.seconds
    print(_table([
        ("run folder", str(result.run_dir)), ("model / method", f"{config.model.name} / {config.model.method}"),
        ("trainable params", f"{p['trainable']:,} of {p['total']:,} ({p['percent']:.2f}%)"),
        ("validation accuracy", _pct(val["accuracy"])), ("test accuracy", f"{_pct(test['accuracy'])}  (n={test['n']})"),
        ("test macro-F1", _pct(test["macro_f1"])),
        ("seconds train / eval / total", f"{sec['train']:.0f} / {sec['eval']:.0f} / {sec['total']:.0f}"),
    ], title="\nslmtune train: done"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from slmtune.evaluate import classification_report_text
    from slmtune.serve.inference import evaluate_run

    m = evaluate_run(args.run_dir, args.split, args.backend, args.max_change)
    change = m.get("accuracy_change_vs_run")
    print(classification_report_text(m) + "\n" + _table([
        ("backend", f"{m['backend']} ({m['precision']})"), ("split", f"{args.split} (n={m['n']})"),
        ("accuracy", _pct(m["accuracy"])), ("macro-F1", _pct(m["macro_f1"])),
        ("samples/s", f"{m['samples_per_second']:.1f}"),
        ("accuracy change vs run", "-" if change is None else f"{change:+.4f}"),
        ("written to", str(Path(args.run_dir) / f"evaluation-{args.split}-{m['backend']}.json"))],
        title="\nslmtune evaluate"))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from slmtune.serve.inference import predict, predict_file

    if bool(args.text) == bool(args.input):
        raise SlmtuneError("give --text (one or more) or --input FILE")
    if args.input:
        output, rows = predict_file(args.run_dir, args.input, args.output, args.text_column, backend=args.backend,
                                    max_change=args.max_change)
        print(f"{rows} predictions written to {output}")
        return 0
    preds = predict(args.run_dir, args.text, backend=args.backend, max_change=args.max_change)
    if args.output:
        labels = list(preds[0]["probabilities"])
        try:
            with Path(args.output).open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["text", "predicted", "score", *[f"p_{n}" for n in labels]])
                for text, p in zip(args.text, preds):
                    writer.writerow([text, p["label"], f"{p['score']:.5f}",
                                     *[f"{p['probabilities'][n]:.5f}" for n in labels]])
        except OSError as exc:
            raise SlmtuneError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        print(f"{len(preds)} predictions written to {args.output}")
    for text, p in list(zip(args.text, preds))[:20]:
        probs = "  ".join(f"{n} {v:.3f}" for n, v in p["probabilities"].items())
        print(f"{p['label']:<12} {p['score']:.3f}  | {probs}  | {text[:60]}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from slmtune.serve.export import export_run

    out = export_run(args.run_dir, args.out_dir, onnx=args.onnx, int8=args.int8, overwrite=args.overwrite)
    print(f"exported to {out}: transformers.pipeline('text-classification', model='{out}') loads it")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from slmtune.data.clean import clean_file, clean_text

    if bool(args.text) == bool(args.input):
        raise SlmtuneError("give --text (one or more) or --input FILE")
    pairs = [(t, clean_text(t)) for t in args.text or []] or clean_file(args.input, args.output, args.text_column)
    changed = [(a, b) for a, b in pairs if a != b]
    print((f"{len(pairs)} texts cleaned into {args.output}\n" if args.output else "")
          + f"{len(changed)} of {len(pairs)} texts changed; preview:")
    for before, after in (changed or pairs)[: args.preview]:
        print(f"  before: {before[:200]}\n  after:  {after[:200]}\n")
    return 0


def _parse_flag(flag, value, option: str):
    """A study flag's text as its config value (see slmtune.experiments.registry.Flag.parse)."""
    if value is None or flag.parse in ("str", "int", "append", "switch"):
        return value
    items = [v.strip() for v in value.split(",") if v.strip()]
    if flag.parse == "words":
        return items
    kind = int if flag.parse == "ints" else float
    try:
        return [kind(v) for v in items]
    except ValueError:
        what = "integers" if kind is int else "numbers"
        raise SlmtuneError(f"{option} takes {what} separated by commas, got {value!r}") from None


def cmd_study_kind(args: argparse.Namespace) -> int:
    """Any registered study: its flags onto its config, its `run`, its `report`."""
    from slmtune.experiments.common import load_study_config

    kind = args.study_kind
    module = kind.load()
    values, options = {"name": args.name, "recipe": args.recipe}, {}
    for flag in kind.flags:
        value = _parse_flag(flag, getattr(args, flag.field + "_flag"), flag.option)
        if value is not None and value is not False:
            (options if flag.to_run else values)[flag.field] = value
    values = {k: v for k, v in values.items() if v is not None}
    if hasattr(module, "from_cli"):
        values = module.from_cli(values, from_file=bool(args.config))
    cfg = load_study_config(module.CONFIG, args.config, **values)
    summary = module.run(cfg, args.study_dir, list(args.overrides), **options)
    print(f"\nslmtune {kind.cli} {getattr(cfg, 'name', '')}: done")
    print("\n".join(module.report(summary)))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from slmtune.experiments.common import format_duration
    from slmtune.experiments.reference import load_reference_config, run_reference

    if bool(args.config) == bool(args.config_file):
        raise SlmtuneError("give the study config once: slmtune study --config configs/studies/reference.yaml")
    cfg = load_reference_config(args.config or args.config_file, args.name)
    only = [p.strip() for p in args.only.split(",") if p.strip()] if args.only else None
    record = run_reference(cfg, args.study_dir, list(args.overrides), only=only, budget=args.budget,
                           dry_run=args.dry_run)
    print("slmtune study: dry run, nothing trained" if args.dry_run else
          f"\nslmtune study: done in {format_duration(record['total_seconds'])}; report {record['report']}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from slmtune.config import reference_markdown, reference_rows

    if args.markdown:
        print(reference_markdown(), end="")
        return 0
    for key, default, help_text in reference_rows():
        if args.field and not key.startswith(args.field):
            continue
        print(f"{key} = {default}\n    {help_text}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """What a bug report needs: versions, device, threads, CPU features, precision, the packaged model."""
    import json

    from slmtune.runs import diagnostics

    env = diagnostics()
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    print(json.dumps(env, indent=2, default=str) if args.json else
          "\n".join(f"{k:<16}{packages if k == 'packages' else v}" for k, v in env.items()))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from slmtune.report.html import build_report

    path = build_report(args.folder, args.output)
    print(f"slmtune report: wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained; open it in a browser)")
    return 0


# ---------------------------------------------------------------------------------------------- parser


def _study_parser(sub, name: str, help_text: str, config_file: str):
    """A study subcommand with the options every study shares."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--config", help=f"study config ({config_file})")
    p.add_argument("--recipe", help="base run recipe (configs/*.yaml)")
    p.add_argument("--name", help="study name (default folder studies/<name>)")
    p.add_argument("--study-dir", help="study folder")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="run-config overrides for every run")
    return p


USAGE_ERROR = 64  # EX_USAGE: the command line is wrong (input errors exit 2, unexpected failures 1, Ctrl-C 130)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: usage error: {message}\n")


EPILOG = """examples:
  slmtune train                                   LoRA on the packaged MiniLM, AG News reference sizes
  slmtune train --method full train.epochs=1      any config field as key=value (slmtune config lists them)
  slmtune predict RUN_DIR --input new.csv         stream a file of texts through a trained run
  slmtune sweep --space grid                      lr x weight decay, resumable, shareable by --worker processes
  slmtune study --config configs/studies/reference.yaml --dry-run

exit codes: 0 done, 2 bad input (one line says what), 64 usage error, 1 unexpected failure
(SLMTUNE_DEBUG=1 shows its traceback), 130 interrupted (finished work is kept)."""


def build_parser() -> argparse.ArgumentParser:
    from slmtune import __version__

    parser = _Parser(prog="slmtune", description=__doc__, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"slmtune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="fine-tune (LoRA by default) and evaluate; writes a run folder")
    p.add_argument("--config", help="YAML recipe (see configs/)")
    p.add_argument("--method", choices=["lora", "full"], help="lora (default) or full fine-tuning")
    for flag, (_, help_text) in TRAIN_FLAGS.items():
        p.add_argument(flag, help=help_text, **({"type": int} if flag == "--seed" else {}))
    p.add_argument("--overwrite", action="store_true", help="empty --output-dir first if it holds an earlier run")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=1")
    p.set_defaults(func=cmd_train)

    backend = {"choices": ["auto", "torch", "torch-fp32", "onnx", "onnx-int8"], "default": "torch",
               "help": "inference engine: torch (default: the run's precision, bf16 on CPUs that have it), torch-fp32, "
                       "onnx (ONNX Runtime, fused fp32), onnx-int8 (quantized), or auto: the fastest of these whose "
                       "predictions stay within --max-change of fp32 torch's (measured once, kept in the run folder)"}
    max_change = {"type": float, "default": 0.005,
                  "help": "auto: the largest share of predictions allowed to differ from fp32 torch's, on the run's "
                          "own validation and training rows (default 0.005)"}
    p = sub.add_parser("evaluate", help="re-evaluate a run's best model on a split")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=["test", "validation", "train"])
    p.add_argument("--backend", **backend)
    p.add_argument("--max-change", **max_change)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="labels and class probabilities for new text")
    p.add_argument("run_dir")
    p.add_argument("--text", action="append", help="a text to classify (repeatable)")
    p.add_argument("--input", help="CSV/TSV/JSONL/Parquet file with a text column: streamed in chunks, its columns "
                                    "kept; an interrupted call continues where it stopped when rerun")
    p.add_argument("--text-column")
    p.add_argument("--output", help="CSV to write (default with --input: <input>.predictions.csv)")
    p.add_argument("--backend", **backend)
    p.add_argument("--max-change", **max_change)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="merged model folder that transformers.pipeline() loads")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (fused fp32)")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic int8)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT_DIR")
    p.set_defaults(func=cmd_export)

    from slmtune.experiments.registry import STUDIES

    for kind in STUDIES.values():
        if not kind.cli:
            continue
        p = _study_parser(sub, kind.cli, kind.help, kind.config_file)
        for flag in kind.flags:
            extra = {"switch": {"action": "store_true"}, "append": {"action": "append"}, "int": {"type": int}}
            extra = extra.get(flag.parse, {}) | ({"choices": flag.choices} if flag.choices else {})
            if flag.parse != "switch" and not flag.choices:
                extra["metavar"] = flag.option.lstrip("-").upper().replace("-", "_")
            p.add_argument(flag.option, dest=flag.field + "_flag", help=flag.help, **extra)
        p.set_defaults(func=cmd_study_kind, study_kind=kind)

    p = sub.add_parser("study", help="the whole reference study (every part), resumable, with a plan first")
    p.add_argument("config_file", nargs="?", metavar="CONFIG", help="shortcut for --config")
    p.add_argument("--config", help="study config, e.g. configs/studies/reference.yaml")
    p.add_argument("--only", help="parts or kinds to run, e.g. sweep,seeds")
    p.add_argument("--budget", help="fit the plan into this time (e.g. 2h): drops seeds and sizes, and says so")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--name", help="study name (default folder studies/<name>)")
    p.add_argument("--study-dir", help="study folder")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="run-config overrides for every run")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="one self-contained report.html for a run, a study or a folder of studies")
    p.add_argument("folder", help="run folder, study folder, or a folder of studies")
    p.add_argument("--output", help="where to write the page (default FOLDER/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("config", help="every run-config field with its default and meaning")
    p.add_argument("field", nargs="?", help="only fields starting with this, e.g. train or lora.r")
    p.add_argument("--markdown", action="store_true", help="as the Markdown table of docs/config.md")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("env", help="versions, device, threads, CPU features, precision: what a bug report needs")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("clean", help="clean text (HTML entities, AG News debris) with a before/after preview")
    p.add_argument("--text", action="append")
    p.add_argument("--input")
    p.add_argument("--text-column")
    p.add_argument("--output")
    p.add_argument("--preview", type=int, default=5)
    p.set_defaults(func=cmd_clean)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come after options too
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    from slmtune.runs.recorder import interrupt_seen, stop_on_signals

    try:
        with stop_on_signals():  # SIGINT, SIGTERM, SIGHUP: like Ctrl-C; SIGINT too, as a shell starts
            return args.func(args)  # background jobs with it ignored
    except SlmtuneError as exc:
        print(f"slmtune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        interrupt_seen()
        print("slmtune: interrupted (finished work and the run folder's status are saved)", file=sys.stderr)
        return 130
    except Exception as exc:  # never a traceback for the user; SLMTUNE_DEBUG=1 shows it
        if os.environ.get("SLMTUNE_DEBUG"):
            raise
        print(f"slmtune: error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(SLMTUNE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
