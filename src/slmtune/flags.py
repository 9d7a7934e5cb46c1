"""The command line's flag tables: the shortcuts that stand for config fields (`--dataset X` is
`data.dataset=X`), the options several commands share, and the labelling loop's actions. Plain data with no
parser in it, so that slmtune.cli builds the parser from it and slmtune.commands reads the shortcuts back
without importing the parser."""

from __future__ import annotations

import argparse
from typing import Any

from slmtune.serve import ENGINES

# `slmtune train` flags that set the most used fields (`--model X` is `model.name=X`): flag -> (field, help).
TRAIN_SHORTCUTS = {  # --flag: (config field, help)
    "--model": ("model.name", "minilm-l6 (default), distilbert-base-uncased, a Hub id or a local folder"),
    "--data-dir": ("data.data_dir", "AG News CSV folder (default: $SLMTUNE_DATA_DIR, else the Hub)"),
    "--dataset": ("data.dataset", "ag_news, a CSV/TSV/JSONL/Parquet training file, a folder of train/validation/"
                                  "test files, or a Hugging Face dataset id"),
    "--dataset-config": ("data.dataset_config", "the Hugging Face dataset's configuration, e.g. sst2 of glue"),
    "--test-file": ("data.test_file", "test rows for a dataset file (default: its own test split, else 20%)"),
    "--text-column": ("data.text_column", "the text column of a custom dataset"),
    "--label-column": ("data.label_column", "the label column of a custom dataset"),
    "--output-dir": ("output_dir", "run folder (default runs/<name>-<timestamp>); must be new or empty"),
    "--multi-label": ("data.multi_label", "each row holds a set of labels, separated by --label-separator"),
    "--label-separator": ("data.label_separator", "multi-label: what separates a row's labels (default ,)"),
    "--blend": ("model.blend", "tfidf: average the encoder with TF-IDF + logistic regression, weight chosen on "
                               "validation; predict, evaluate and export serve the blend"),
    "--name": ("name", "run name"),
    "--seed": ("seed", "seed of the data draw, batch order and initialisation"),
}


# The TRAIN_SHORTCUTS that every study command takes too: which data a study runs on.
DATA_SHORTCUTS = ("--dataset", "--dataset-config", "--test-file", "--text-column", "--label-column", "--multi-label",
                  "--label-separator")


def shortcut_kwargs(flag: str) -> dict[str, Any]:
    """argparse settings of a TRAIN_SHORTCUTS flag: a switch for a boolean field, else a typed value."""
    help_text = TRAIN_SHORTCUTS[flag][1].replace("%", "%%")  # argparse formats help with %
    if flag == "--multi-label":
        return {"action": "store_const", "const": "true", "help": help_text}
    return {"help": help_text, "type": int if flag == "--seed" else str}


def with_shortcuts(args: argparse.Namespace, flags) -> list[str]:
    """The `key=value` overrides of the command line, after those its shortcut flags (`--dataset X`) stand for."""
    given = {TRAIN_SHORTCUTS[flag][0]: getattr(args, flag[2:].replace("-", "_")) for flag in flags}
    return [f"{k}={v}" for k, v in given.items() if v is not None] + list(args.overrides)


OVERRIDES = {"nargs": "*", "metavar": "key=value", "help": "run-config overrides, e.g. train.epochs=1"}
BACKEND = {"choices": ["auto", *ENGINES], "default": "auto",
           "help": "inference engine: auto (default): of the others whose predictions stay within --max-change of "
                   "fp32 torch's, measured once on the run's own rows and kept in the run folder, the one that "
                   "finishes the job soonest (a job under 5,000 texts uses torch unless a choice is kept; "
                   "the compiled engines are measured for jobs of 50,000 or more); torch: the run's precision, bf16 "
                   "on CPUs that have it; torch-fp32; torch-compiled (torch's precision, compiled by Inductor with "
                   "frozen weights); torch-int8 (torchao int8 per token, compiled); onnx (ONNX Runtime, "
                   "fused fp32); onnx-int8 (ONNX Runtime int8); both int8 engines keep in fp32 the layers needed "
                   "to stay within --max-change"}
MAX_CHANGE = {"type": float, "default": 0.005,
              "help": "the largest share of predictions allowed to differ from fp32 torch's, on the run's own "
                      "rows (never test rows; rows it never trained on first), for auto's choice and the int8 "
                      "engines' search (default 0.005)"}
RUN_DIR = {"help": "a run folder written by slmtune train"}


LABEL_ACTIONS = {
    "init": "make a project from a file of texts: PROJECT --data pool.csv --labels A,B,C",
    "serve": "the labelling page on http://127.0.0.1:PORT (keys 1-9 label, Enter accepts, s skips, u undoes)",
    "export": "write N texts to label elsewhere (CSV: id, text, suggested, confidence, label)",
    "import": "take the labels of a filled-in export back (checked whole; nothing written on an error)",
    "status": "labels per class, the estimated accuracy from audit items, the stopping signal",
    "train": "a run folder from the labels (audit items as its test split); predict and serve take it",
    "simulate": "the loop against random labelling on a labelled file, an oracle answering: curves, summary",
}


def label_options() -> dict[str, list[tuple[str | tuple, dict]]]:
    """Each `slmtune label` action's (flag or flags, argparse keywords) pairs."""
    project = ("project", {"metavar": "PROJECT", "help": "the project folder"})
    port = ("--port", {"type": int, "default": 8080, "help": "port (default 8080)"})
    return {
        "init": [project, ("--data", {"required": True, "help": "CSV/TSV/JSONL/Parquet file of the texts to label"}),
                 ("--labels", {"required": True, "help": "label names separated by commas (at least two)"}),
                 ("--text-column", {"help": "the file's text column (default text)"}),
                 ("--id-column", {"help": "a column of unique row ids (default: the row number)"}),
                 ("--describe", {"help": "YAML file of `label: short description` for a better cold start"}),
                 ("--model", {"default": "minilm-l6", "help": "encoder of the embeddings (default minilm-l6)"}),
                 ("--audit-share", {"type": float, "default": 0.1,
                                    "help": "share of items drawn at random to estimate accuracy (default 0.1)"}),
                 ("--seed", {"type": int, "default": 0, "help": "seed of the audit draw"})],
        "serve": [project, ("--host", {"default": "127.0.0.1", "help": "address (default 127.0.0.1)"}), port],
        "export": [project, ("-n", {"type": int, "default": 50, "help": "texts to write (default 50)"}),
                   (("-o", "--output"), {"required": True, "help": "CSV file to write"})],
        "import": [project, ("file", {"help": "a filled-in export (columns id and label; text is checked)"})],
        "status": [project, ("--json", {"action": "store_true", "help": "as JSON"})],
        "train": [project, ("--method", {"choices": ["lora", "full", "tune"], "default": "lora",
                                         "help": "lora (default), full, or tune (the best in --time)"}),
                  ("--config", {"help": "YAML recipe (see configs/)"}),
                  ("--output-dir", {"help": "run folder (tune: the search folder)"}),
                  ("--time", {"default": "10m", "help": "--method tune: the budget (default 10m)"}),
                  ("overrides", OVERRIDES)],
        "simulate": [("--data", {"required": True, "help": "a labelled file: its rows are the pool, an oracle "
                                 "answers from its labels"}),
                     ("--test-file", {"help": "labelled rows to measure accuracy on (default: a fixed 20%)"}),
                     ("--text-column", {"help": "text column (default text)"}),
                     ("--label-column", {"default": "label", "help": "label column (default label)"}),
                     ("--describe", {"help": "YAML file of `label: short description`"}),
                     ("--model", {"default": "minilm-l6", "help": "encoder (default minilm-l6)"}),
                     ("--budget", {"type": int, "default": 500, "help": "labels per simulated person (default 500)"}),
                     ("--seeds", {"type": int, "default": 5, "help": "repetitions (default 5)"}),
                     ("--step", {"type": int, "default": 10, "help": "labels between measurements (default 10)"}),
                     ("--pool", {"type": int, "default": 0, "help": "pool rows drawn from --data (default all)"}),
                     ("--audit-share", {"type": float, "default": 0.1, "help": "the loop's audit share"}),
                     ("--output-dir", {"help": "where curve.csv and summary.json go"})],
    }
