"""slmtune: fine-tune small encoders (LoRA or full) for text classification, and run studies around them."""

from __future__ import annotations

import argparse
import os
import sys

from slmtune.commands import (
    cmd_clean,
    cmd_config,
    cmd_env,
    cmd_evaluate,
    cmd_export,
    cmd_label,
    cmd_predict,
    cmd_report,
    cmd_serve,
    cmd_study,
    cmd_study_kind,
    cmd_train,
    cmd_tune,
)
from slmtune.errors import SlmtuneError
from slmtune.flags import (
    BACKEND,
    DATA_SHORTCUTS,
    LABEL_ACTIONS,
    MAX_CHANGE,
    OVERRIDES,
    RUN_DIR,
    TRAIN_SHORTCUTS,
    label_options,
    shortcut_kwargs,
)

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

def _command(sub, name: str, func, help_text: str, *options: tuple[str | tuple, dict]):
    """A subcommand from (flag or flags, argparse keywords) pairs."""
    p = sub.add_parser(name, help=help_text, description=help_text)
    for flags, kwargs in options:
        p.add_argument(*((flags,) if isinstance(flags, str) else flags), **kwargs)
    p.set_defaults(func=func)
    return p


def _study_options(config_help: str, recipe: bool = True, queue: bool = True) -> list[tuple[str, dict]]:
    return [("--config", {"help": f"study config ({config_help})"}),
            *[("--recipe", {"help": "base run recipe (configs/*.yaml)"})] * recipe,
            ("--name", {"help": "study name (default folder studies/<name>)"}),
            ("--study-dir", {"help": "study folder"}), *[(f, shortcut_kwargs(f)) for f in DATA_SHORTCUTS],
            ("overrides", OVERRIDES),
            ("--workers", {"type": int, "default": 1, "help": "train N runs at once (CPU threads divided)"}),
            *[("--storage", {"dest": "queue_storage", "help": "run queue URL shared by machines (default: SQLite "
                             "in the study folder), e.g. postgresql://host/db"}),
              ("--worker", {"dest": "queue_worker", "action": "store_true",
                            "help": "join a running study's queue (same folder and --storage)"})] * queue]


def _tune_parser(sub) -> None:
    """`slmtune tune`: the data flags of train, the budget, the portfolio, and how its rungs are trained."""
    _command(sub, "tune", cmd_tune, "the best classifier for the data in a time budget: TF-IDF, probes, LoRA and "
             "full fine-tuning raced on validation, blends; writes DIR/best and DIR/leaderboard.csv",
             ("--config", {"help": "YAML recipe the candidates start from (see configs/)"}),
             *[(f, shortcut_kwargs(f)) for f in (*DATA_SHORTCUTS, "--seed")],
             ("--time", {"default": "20m", "help": "budget, e.g. 90s, 20m, 1.5h (default 20m): the search ends "
                                                  "within it, testing included"}),
             ("--output-dir", {"required": True, "help": "search folder (new, or an earlier search to continue)"}),
             ("--models", {"help": "encoders to try, separated by commas (default: the config's model.name)"}),
             ("--lora-rates", {"help": "LoRA learning rates raced (default 5e-4,1e-3,2e-3)"}),
             ("--full-rates", {"help": "full fine-tuning learning rates raced (default 5e-5); empty: none"}),
             ("--alpha", {"type": float, "default": 0.05,
                          "help": "cut a candidate when a paired test on validation says it is behind at this "
                                  "level (default 0.05)"}),
             ("--no-cross-fit", {"dest": "cross_fit", "action": "store_false",
                                 "help": "choose on the validation rows alone, even where they are few (by default "
                                         "candidates tied there train again with the folds swapped)"}),
             ("--workers", {"type": int, "default": 1, "help": "candidates trained side by side at each rung, each "
                                                              "in a process of its own (CPU threads divided)"}),
             ("--storage", {"help": "run queue URL (e.g. sqlite:///DIR/queue.db, postgresql://host/db): each rung's "
                                    "candidates are trained by this process, its --workers and any --worker"}),
             ("--worker", {"action": "store_true", "help": "take jobs from a running search's queue (same "
                                                           "--storage, a machine that sees its --output-dir)"}),
             ("overrides", OVERRIDES))


def build_parser() -> argparse.ArgumentParser:
    from slmtune import __version__
    from slmtune.experiments.registry import STUDIES

    parser = _Parser(prog="slmtune", description=__doc__, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"slmtune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    text = ("--text", {"action": "append", "help": "a text (repeatable)"})
    text_column = ("--text-column", {"help": "the input's text column (default: found by name)"})
    _command(sub, "train", cmd_train, "fine-tune (LoRA by default) and evaluate; writes a run folder",
             ("--config", {"help": "YAML recipe (see configs/)"}),
             ("--method", {"choices": ["lora", "full"], "help": "lora (default) or full fine-tuning"}),
             *[(f, shortcut_kwargs(f)) for f in TRAIN_SHORTCUTS],
             ("--overwrite", {"action": "store_true", "help": "empty --output-dir first if it holds an earlier run"}),
             ("overrides", OVERRIDES))
    _tune_parser(sub)
    _command(sub, "evaluate", cmd_evaluate, "re-evaluate a run's best model on a split", ("run_dir", RUN_DIR),
             ("--split", {"default": "test", "choices": ["test", "validation", "train"], "help": "split to score"}),
             ("--backend", BACKEND), ("--max-change", MAX_CHANGE))
    _command(sub, "predict", cmd_predict, "labels and class probabilities for new text", ("run_dir", RUN_DIR),
             text, ("--input", {"help": "CSV/TSV/JSONL/Parquet file with a text column: streamed in chunks, its "
                                "columns kept; an interrupted call continues where it stopped"}),
             text_column, ("--output", {"help": "CSV to write (default with --input: <input>.predictions.csv)"}),
             ("--backend", BACKEND), ("--max-change", MAX_CHANGE))
    _command(sub, "serve", cmd_serve, "prediction server: POST /predict {\"texts\": [...]}, GET /health",
             ("run_dir", RUN_DIR), ("--host", {"default": "127.0.0.1", "help": "address (default 127.0.0.1)"}),
             ("--port", {"type": int, "default": 8000, "help": "port (default 8000)"}), ("--backend", BACKEND),
             ("--max-change", MAX_CHANGE),
             ("--max-texts", {"type": int, "default": 256, "help": "texts one request may hold (default 256)"}))
    _label_parser(sub)
    _command(sub, "export", cmd_export, "merged model folder that transformers.pipeline() loads", ("run_dir", RUN_DIR),
             ("out_dir", {"help": "folder to write (new, or an earlier export with --overwrite)"}),
             ("--onnx", {"action": "store_true", "help": "also write model.onnx (fused fp32)"}),
             ("--int8", {"action": "store_true", "help": "also write model.int8.onnx (dynamic int8, weights per "
                                                          "channel; the layers needed to change at most --max-change "
                                                          "of the run's predictions stay fp32, listed in int8.json)"}),
             ("--max-change", MAX_CHANGE),
             ("--overwrite", {"action": "store_true", "help": "replace an earlier export in OUT_DIR"}))
    for kind in (k for k in STUDIES.values() if k.cli):
        own_queue = any(f.option == "--storage" for f in kind.flags)  # the sweep's trials are its queue
        _command(sub, kind.cli, cmd_study_kind, kind.help, *_study_options(kind.config_file, queue=not own_queue),
                 *[(flag.option, flag.argparse_kwargs()) for flag in kind.flags]).set_defaults(study_kind=kind)
    _command(sub, "study", cmd_study, "the whole reference study (every part), resumable, with a plan first",
             ("config_file", {"nargs": "?", "metavar": "CONFIG", "help": "shortcut for --config"}),
             *_study_options("e.g. configs/studies/reference.yaml", recipe=False),
             ("--only", {"help": "parts or kinds to run, e.g. sweep,seeds"}),
             ("--budget", {"help": "fit the plan into this time (e.g. 2h): drops seeds and sizes, and says so"}),
             ("--exhaustive", {"action": "store_true", "help": "no racing and no early stop: every sweep point "
                                                               "trained to the end, every seed run"}),
             ("--dry-run", {"action": "store_true", "help": "print the plan and stop"}))
    _command(sub, "report", cmd_report, "one self-contained report.html for a run, a study or a folder of studies",
             ("folder", {"help": "run folder, study folder, or a folder of studies"}),
             ("--output", {"help": "where to write the page (default FOLDER/report.html)"}))
    _command(sub, "config", cmd_config, "every run-config field with its default and meaning",
             ("field", {"nargs": "?", "help": "only fields starting with this, e.g. train or lora.r"}),
             ("--markdown", {"action": "store_true", "help": "as the Markdown table of docs/config.md"}))
    _command(sub, "env", cmd_env, "versions, device, threads, CPU features, precision: what a bug report needs",
             ("--json", {"action": "store_true", "help": "as JSON"}))
    _command(sub, "clean", cmd_clean, "clean text (HTML entities, whitespace) with a before/after preview",
             ("--rules", {"choices": ["generic", "agnews"], "default": "generic",
                          "help": "generic (default), or agnews: also AG News scraping debris"}),
             text, ("--input", {"help": "CSV/TSV/JSONL/Parquet file with a text column"}), text_column,
             ("--output", {"help": "file to write the cleaned rows to (same format as --input)"}),
             ("--preview", {"type": int, "default": 5, "help": "changed texts to show (default 5)"}))
    return parser


def _label_parser(sub) -> None:
    """`slmtune label ACTION ...`: one sub-parser per action of the labelling loop."""
    label = sub.add_parser("label", help="from unlabelled texts to a classifier: a labelling loop with the model's "
                           "help", description="the labelling loop: " + ", ".join(LABEL_ACTIONS))
    actions = label.add_subparsers(dest="action", required=True, parser_class=_Parser)
    options = label_options()
    for action, help_text in LABEL_ACTIONS.items():
        _command(actions, action, cmd_label, help_text, *options[action])


def _exit_now(code: int) -> None:
    """End an interrupted process without waiting for threads a library left behind. The stop signal is raised
    as an exception wherever Python happens to be, and raised inside a thread pool's bookkeeping it can leave an
    idle worker that nobody tells to stop: the interpreter then waits for it forever at exit (seen once in a
    sweep stopped by SIGTERM). What the command computed is saved by now; exit handlers still run."""
    import atexit
    import logging

    getattr(atexit, "_run_exitfuncs", lambda: None)()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come after options too
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    args.argv = list(sys.argv[1:] if argv is None else argv)  # workers rerun the same command line
    from slmtune.runs.recorder import interrupt_seen, stop_on_signals

    try:
        with stop_on_signals():  # SIGINT, SIGTERM, SIGHUP: like Ctrl-C; SIGINT too, as a shell starts
            return args.func(args) or 0  # background jobs with it ignored; a command returns None when done
    except SlmtuneError as exc:
        print(f"slmtune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        interrupt_seen()
        print("slmtune: interrupted (finished work and the run folder's status are saved)", file=sys.stderr)
        if argv is None:  # the command line itself, not a caller in Python
            _exit_now(130)
        return 130
    except Exception as exc:  # never a traceback for the user; SLMTUNE_DEBUG=1 shows it
        if os.environ.get("SLMTUNE_DEBUG"):
            raise
        print(f"slmtune: error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(SLMTUNE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
