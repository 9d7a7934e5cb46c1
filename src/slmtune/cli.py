"""Thin CLI: parse arguments, load the config, call one public function per subcommand."""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
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


def method_defaults(config_path: str | None, method: str | None, overrides: list[str]) -> list[str]:
    """`--method` that differs from the config file's: clear the file's per-method values (learning rate,
    pooling) so the new method's defaults apply, unless the user's overrides set them."""
    from slmtune.config import METHOD_DEFAULTED, load_config

    if not (config_path and method) or load_config(config_path).model.method == method:
        return []
    given = {item.partition("=")[0] for item in overrides}
    return [f"{key}=null" for key in METHOD_DEFAULTED if key not in given]


def cmd_train(args: argparse.Namespace) -> int:
    from slmtune.config import load_config
    from slmtune.train import train

    flags = {
        "model.name": args.model, "model.method": args.method, "data.data_dir": args.data_dir,
        "data.dataset": args.dataset, "data.test_file": args.test_file, "data.text_column": args.text_column,
        "data.label_column": args.label_column, "output_dir": args.output_dir, "name": args.name, "seed": args.seed,
    }
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(args.overrides)
    config = load_config(args.config, method_defaults(args.config, args.method, args.overrides) + overrides)
    if args.method and config.name == "agnews-lora" and args.method == "full" and not args.name:
        config.name = "agnews-full"
    result = train(config, overwrite=args.overwrite)
    test, val = result.metrics["test"], result.metrics["validation"]
    print(_table([
        ("run folder", str(result.run_dir)),
        ("model / method", f"{config.model.name} / {config.model.method}"),
        ("trainable params", f"{result.params['trainable']:,} of {result.params['total']:,} "
                             f"({result.params['percent']:.2f}%)"),
        ("validation accuracy", _pct(val["accuracy"])),
        ("test accuracy", f"{_pct(test['accuracy'])}  (n={test['n']})"),
        ("test macro-F1", _pct(test["macro_f1"])),
        ("seconds train / eval / total",
         f"{result.seconds['train']:.0f} / {result.seconds['eval']:.0f} / {result.seconds['total']:.0f}"),
    ], title="\nslmtune train: done"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from slmtune import runs
    from slmtune.evaluate import classification_report_text
    from slmtune.serve.inference import evaluate_run

    metrics = evaluate_run(args.run_dir, args.split, args.backend, args.max_change)
    print(classification_report_text(metrics))
    rows = [("backend", f"{metrics['backend']} ({metrics['precision']})"),
            ("split", f"{args.split} (n={metrics['n']})"),
            ("accuracy", _pct(metrics["accuracy"])), ("macro-F1", _pct(metrics["macro_f1"])),
            ("samples/s", f"{metrics['samples_per_second']:.1f}")]
    stored = runs.read_result(args.run_dir).get("metrics", {}).get(args.split)
    if stored:
        change = metrics["accuracy"] - stored["accuracy"]
        rows.append(("accuracy change vs run", f"{change:+.4f} (run: {stored['accuracy']:.4f})"))
        metrics["accuracy_change_vs_run"] = change
    print(_table(rows, title="\nslmtune evaluate"))
    path = Path(args.run_dir) / f"evaluation-{args.split}-{metrics['backend']}.json"
    runs.write_json(path, metrics)
    print(f"  written to {path}")
    return 0


def _read_input_texts(path: str, column: str | None) -> tuple[list[str], list[dict]]:
    import pandas as pd

    from slmtune.data.sources import _read_table

    frame: pd.DataFrame = _read_table(Path(path))
    column = column or ("text" if "text" in frame.columns else None)
    if column is None or column not in frame.columns:
        raise SlmtuneError(f"{path}: no text column {column or 'text'!r}; found {', '.join(map(str, frame.columns))} "
                           "(use --text-column)")
    texts = [str(t) for t in frame[column]]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise SlmtuneError(f"{path}: empty text at row {empty[0] + 1}")
    return texts, frame.to_dict("records")


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
    from slmtune.data.clean import clean_text

    if bool(args.text) == bool(args.input):
        raise SlmtuneError("give --text (one or more) or --input FILE")
    texts = args.text or _read_input_texts(args.input, args.text_column)[0]
    cleaned = [clean_text(t) for t in texts]
    if args.output:
        with Path(args.output).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "clean_text"])
            writer.writerows(zip(texts, cleaned))
        print(f"{len(texts)} texts cleaned into {args.output}")
    changed = [(a, b) for a, b in zip(texts, cleaned) if a != b]
    print(f"{len(changed)} of {len(texts)} texts changed; preview:")
    for before, after in (changed or list(zip(texts, cleaned)))[: args.preview]:
        print(f"  before: {before[:200]}\n  after:  {after[:200]}\n")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from slmtune.experiments.common import load_study_config
    from slmtune.experiments.sweep import SweepConfig, run_sweep

    cfg = load_study_config(SweepConfig, args.config, name=args.name, space=args.space, search=args.search,
                            storage=args.storage, recipe=args.recipe)
    if args.method:
        cfg.run = {**cfg.run, "model": {**cfg.run.get("model", {}), "method": args.method}}
        if not args.name and not args.config:
            cfg.name = f"sweep-{args.space or cfg.space}-{args.method}"
    summary = run_sweep(cfg, args.study_dir, list(args.overrides), worker=args.worker)
    best = summary["best"]
    print(_table([("trials", str(summary["trials"])), ("best params", str(best["params"])),
                  ("best validation accuracy", _pct(best["validation_accuracy"])),
                  ("its test accuracy", _pct(best["test_accuracy"])), ("best config", best["config"])],
                 title=f"\nslmtune sweep {summary['name']}: done"))
    return 0


def cmd_seeds(args: argparse.Namespace) -> int:
    from slmtune.experiments.common import load_study_config
    from slmtune.experiments.seeds import SeedsConfig, run_seeds

    cfg = load_study_config(SeedsConfig, args.config, name=args.name, seeds=_int_list(args.seeds, "--seeds"),
                            num_runs=args.num_runs,
                            compare=args.compare, recipe=args.recipe)
    summary = run_seeds(cfg, args.study_dir, list(args.overrides))
    print("\nslmtune seeds: done")
    print(f"  {'model':<28}{'accuracy':>20}{'macro-F1':>20}{'trainable':>14}{'train s':>10}")
    for row in summary["table"]:
        print(f"  {row['model']:<28}{row['accuracy']:>20}{row['macro_f1']:>20}"
              f"{row['trainable_percent']:>13.2f}%{row['train_seconds']:>10.1f}")
    if "comparison" in summary:
        print(f"  {summary['comparison']['verdict']}")
    return 0


def cmd_zeroshot(args: argparse.Namespace) -> int:
    from slmtune.experiments.common import load_study_config
    from slmtune.experiments.zeroshot import ZeroShotConfig, run_zeroshot

    methods = args.method
    if args.template and not methods:
        methods = ["untrained-head", "names", "descriptions", "templates", "custom"]
    if args.nli_model and not methods:
        methods = ["untrained-head", "templates", "nli"]
    cfg = load_study_config(ZeroShotConfig, args.config, name=args.name, methods=methods, templates=args.template,
                            nli_model=args.nli_model, recipe=args.recipe)
    summary = run_zeroshot(cfg, args.study_dir, list(args.overrides))
    print(f"\nslmtune zeroshot: done (n={summary['rows'][0]['n']} test rows, chance {summary['chance']:.2f})")
    for row in summary["rows"]:
        print(f"  {row['method']:<16}accuracy {row['accuracy']:.4f}   macro-F1 {row['macro_f1']:.4f}")
    return 0


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SlmtuneError(f"{flag} takes integers separated by commas, got {text!r}") from None


def cmd_fewshot(args: argparse.Namespace) -> int:
    from slmtune.experiments.common import load_study_config
    from slmtune.experiments.fewshot import FewShotConfig, run_fewshot

    cfg = load_study_config(FewShotConfig, args.config, name=args.name, shots=_int_list(args.shots, "--shots"),
                            draws=args.draws, methods=args.methods.split(",") if args.methods else None,
                            recipe=args.recipe)
    summary = run_fewshot(cfg, args.study_dir, list(args.overrides))
    print("\nslmtune fewshot: done (test accuracy, mean ± std over draws)")
    for method, points in summary["curves"].items():
        cells = "  ".join(f"{k}: {p['mean']:.3f}±{p['std']:.3f}" for k, p in points.items())
        print(f"  {method:<8}{cells}")
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    from slmtune.experiments.common import load_study_config
    from slmtune.experiments.scaling import ScalingConfig, run_scaling

    cfg = load_study_config(ScalingConfig, args.config, name=args.name, sizes=_int_list(args.sizes, "--sizes"),
                            seeds=_int_list(args.seeds, "--seeds"), recipe=args.recipe)
    summary = run_scaling(cfg, args.study_dir, list(args.overrides))
    fit = summary["fit"]
    print(f"\nslmtune scaling: error = {fit['a']:.3f} n^-{fit['b']:.3f} + {fit['c']:.4f}  (R² {fit['r2']:.3f})")
    for p in summary["predictions"]:
        print(f"  predicted accuracy at {p['n']:>7,} rows: {p['accuracy']:.4f} [{p['low']:.4f}, {p['high']:.4f}]")
    print(f"  diminishing returns (< {summary['diminishing_returns']['threshold_per_doubling']} per doubling) "
          f"from ~{summary['diminishing_returns']['size']:,.0f} rows")
    return 0


def _float_list(text: str | None, flag: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SlmtuneError(f"{flag} takes numbers separated by commas, got {text!r}") from None


def cmd_augment(args: argparse.Namespace) -> int:
    from slmtune.config import EDA_OPS
    from slmtune.experiments.augmentation import AugmentStudyConfig, run_augmentation
    from slmtune.experiments.common import load_study_config

    operations = None
    if args.ops:
        operations = {name: list(EDA_OPS) if name == "eda" else name.split("+") for name in args.ops.split(",") if name}
    cfg = load_study_config(AugmentStudyConfig, args.config, name=args.name, recipe=args.recipe,
                            ratios=_float_list(args.ratios, "--ratios"), sizes=_int_list(args.sizes, "--sizes"),
                            seeds=_int_list(args.seeds, "--seeds"), operations=operations,
                            back_translation=args.back_translation)
    summary = run_augmentation(cfg, args.study_dir, list(args.overrides))
    print("\nslmtune augment: done (test accuracy; difference to the ratio-0 control, paired by seed)")
    for size, ops in summary["curves"].items():
        for op, points in ops.items():
            cells = "  ".join(f"x{p['ratio']:g} {p['mean']:.4f}"
                              + (f" ({p['vs_control']['mean_difference']:+.4f}, p={p['vs_control']['t_pvalue']:.2g})"
                                 if p["vs_control"] else "") for p in points)
            print(f"  {size:>6} rows  {op:<23}{cells}")
    return 0


def cmd_active(args: argparse.Namespace) -> int:
    from slmtune.experiments.active import ActiveConfig, run_active
    from slmtune.experiments.common import load_study_config

    cfg = load_study_config(ActiveConfig, args.config, name=args.name, recipe=args.recipe,
                            strategies=args.strategies.split(",") if args.strategies else None,
                            checkpoints=_int_list(args.checkpoints, "--checkpoints"),
                            seeds=_int_list(args.seeds, "--seeds"), pool_size=args.pool_size, backend=args.backend)
    summary = run_active(cfg, args.study_dir, list(args.overrides))
    print("\nslmtune active: done (area under the learning curve = mean test accuracy over the budget)")
    for row in summary["aulc"]:
        versus = row["vs_random"]
        extra = (f"  vs random {versus['mean_difference']:+.4f} [{versus['boot_low']:+.4f}, {versus['boot_high']:+.4f}]"
                 f" p={versus['t_pvalue']:.2g}") if versus else ""
        print(f"  {row['strategy']:<18}AULC {row['aulc']['mean']:.4f} ± {row['aulc']['std']:.4f}{extra}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from slmtune.config import load_yaml
    from slmtune.experiments.reference import ReferenceConfig, run_reference

    if bool(args.config) == bool(args.config_file):
        raise SlmtuneError("give the study config once: slmtune study --config configs/studies/reference.yaml")
    args.config = args.config or args.config_file
    values = load_yaml(args.config)
    kind = values.pop("study", "reference")
    if kind != "reference":
        raise SlmtuneError(f"{args.config} is a {kind!r} study: run it with `slmtune {kind}` --config {args.config}")
    unknown = sorted(set(values) - {"name", "recipe", "parts"})
    if unknown:
        raise SlmtuneError(f"unknown field(s) {', '.join(unknown)} in {args.config}; known: name, recipe, parts")
    cfg = ReferenceConfig(**values)
    if args.name:
        cfg.name = args.name
    only = [p.strip() for p in args.only.split(",") if p.strip()] if args.only else None
    record = run_reference(cfg, args.study_dir, list(args.overrides), only=only, budget=args.budget,
                           dry_run=args.dry_run)
    if args.dry_run:
        print("slmtune study: dry run, nothing trained")
        return 0
    from slmtune.experiments.common import format_duration

    print(f"\nslmtune study: done in {format_duration(record['total_seconds'])}; report {record['report']}")
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

    from slmtune import runs
    from slmtune.precision import cpu_bf16_support, resolve

    env = runs.environment()
    try:
        from slmtune.models.build import resolve_model

        model = f"found and verified: {resolve_model('minilm-l6')}"
    except SlmtuneError as exc:
        model = f"missing: {exc}"
    env.update(cpu_bf16=cpu_bf16_support(), precision_auto=resolve("auto").as_dict(), packaged_model=model)
    if args.json:
        print(json.dumps(env, indent=2, default=str))
        return 0
    packages = ", ".join(f"{k} {v}" for k, v in env.pop("packages").items() if v)
    for key, value in env.items():
        print(f"{key:<16}{value}")
    print(f"{'packages':<16}{packages}")
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
    p.add_argument("--model", help="minilm-l6 (default), distilbert-base-uncased, a Hub id or a local folder")
    p.add_argument("--method", choices=["lora", "full"])
    p.add_argument("--data-dir", help="AG News CSV folder (default: $SLMTUNE_DATA_DIR, else the Hub)")
    p.add_argument("--dataset", help="ag_news, or a CSV/JSONL/Parquet training file")
    p.add_argument("--test-file", help="test rows for a custom dataset")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--output-dir", help="run folder (default runs/<name>-<timestamp>); must be new or empty")
    p.add_argument("--overwrite", action="store_true", help="empty --output-dir first if it holds an earlier run")
    p.add_argument("--name")
    p.add_argument("--seed", type=int)
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

    p = _study_parser(sub, "sweep", "hyperparameter sweep (Optuna; resumable; shareable by workers)",
                      "configs/studies/sweep-*.yaml")
    p.add_argument("--space", help="lr, wd, grid (5x5), rank, alpha, batch or epochs")
    p.add_argument("--method", choices=["lora", "full"])
    p.add_argument("--search", type=int, help="TPE search with N trials instead of a grid")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite in the study folder)")
    p.add_argument("--worker", action="store_true", help="join an existing sweep and take its open trials")
    p.set_defaults(func=cmd_sweep)

    p = _study_parser(sub, "seeds", "repeat a recipe over seeds; compare two recipes pairwise",
                      "configs/studies/seeds.yaml")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 42,123,456")
    p.add_argument("--num-runs", type=int, help="draw this many seeds instead")
    p.add_argument("--compare", help="second recipe run on the same seeds, e.g. configs/agnews-full.yaml")
    p.set_defaults(func=cmd_seeds)

    p = _study_parser(sub, "zeroshot", "zero-shot baselines: untrained head, label-prompt embeddings, NLI",
                      "configs/studies/zeroshot.yaml")
    p.add_argument("--method", action="append",
                   help="untrained-head, names, descriptions, templates, custom, nli (repeatable)")
    p.add_argument("--template", action="append", help='your own template, e.g. "A story on {}." (repeatable)')
    p.add_argument("--nli-model", help="an NLI model id or folder for the nli method")
    p.set_defaults(func=cmd_zeroshot)

    p = _study_parser(sub, "fewshot", "k rows per class, several draws: probe, prompt-initialised, LoRA, full",
                      "configs/studies/fewshot.yaml")
    p.add_argument("--shots", help="rows per class, e.g. 1,2,5,10,20,50,100")
    p.add_argument("--draws", type=int, help="random draws per size")
    p.add_argument("--methods", help="comma-separated: probe,prompt,lora,full,setfit")
    p.set_defaults(func=cmd_fewshot)

    p = _study_parser(sub, "scaling", "accuracy vs training rows with a power-law fit", "configs/studies/scaling.yaml")
    p.add_argument("--sizes", help="training rows, e.g. 10,50,100,200,500,1000,2000,5000,10000")
    p.add_argument("--seeds", help="e.g. 42,123,456")
    p.set_defaults(func=cmd_scaling)

    p = _study_parser(sub, "augment", "augmentation ratios x operations vs the no-augmentation control",
                      "configs/studies/augmentation.yaml")
    p.add_argument("--ratios", help="augmented rows per row, e.g. 0,0.25,0.5,0.75,1")
    p.add_argument("--ops", help="operation sets, comma-separated; join operations with +, e.g. eda,synonym+swap,"
                                 "backtranslate (eda = synonym+insert+delete+swap)")
    p.add_argument("--sizes", help="training rows, e.g. 200,2400")
    p.add_argument("--seeds", help="e.g. 42,123,456")
    p.add_argument("--back-translation", help="apertium[:eng-spa] or marian[:<forward>,<backward>]")
    p.set_defaults(func=cmd_augment)

    p = _study_parser(sub, "active", "active learning: random vs uncertainty sampling", "configs/studies/active.yaml")
    p.add_argument("--strategies", help="comma-separated: random,least_confidence,margin,entropy")
    p.add_argument("--checkpoints", help="labelled rows, e.g. 100,500,1000")
    p.add_argument("--seeds", help="e.g. 42,123,456")
    p.add_argument("--pool-size", type=int, help="unlabelled pool size")
    p.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], help="pool scoring backend")
    p.set_defaults(func=cmd_active)

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


@contextlib.contextmanager
def _stop_on_signals():
    """SIGINT, SIGTERM and SIGHUP end a command as Ctrl-C does: the run folder says `interrupted`, a sweep's trial
    comes back on the rerun, finished work stays. SIGINT too, since a shell starts background jobs with it
    ignored. The previous handlers come back afterwards."""

    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        try:
            previous[name] = signal.signal(getattr(signal, name), stop)
        except (AttributeError, ValueError):  # no such signal here, or not the main thread
            pass
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come after options too
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        with _stop_on_signals():
            return args.func(args)
    except SlmtuneError as exc:
        print(f"slmtune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
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
