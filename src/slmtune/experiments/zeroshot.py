"""Zero-shot classification: an untrained head (the naive baseline), label-prompt embedding similarity, NLI.

Embedding similarity compares each text's mean-pooled, normalised embedding with the embedding of a
prompt per label (several templates are averaged); no training row is used. NLI runs transformers'
zero-shot pipeline when an NLI model is named.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slmtune.config import RunConfig
from slmtune.data import load_splits
from slmtune.errors import SlmtuneError
from slmtune.experiments.common import Clock, DataSizes, Study, load_run_config, single_label_only
from slmtune.experiments.protocol import keeps_runs, trains_to_the_end
from slmtune.methods.zeroshot import default_descriptions, label_prompts, nli_predict, prompt_classifier, templates_for
from slmtune.serve.logits import predict_logits
from slmtune.serve.metrics import classification_metrics

PROMPT_SETS = {
    "names": (["{}"], False),              # bare label names
    "descriptions": (["{}"], True),        # label descriptions
    "templates": (None, True),             # descriptions inside the dataset's sentence templates (the default)
}


@dataclass
class ZeroShotConfig:
    name: str = "zeroshot"
    recipe: str | None = None
    """Run recipe: its data section and model name are used (nothing is trained)."""
    run: dict[str, Any] = field(default_factory=dict)
    methods: list[str] = field(default_factory=lambda: ["untrained-head", "names", "descriptions", "templates"])
    """Any of untrained-head, names, descriptions, templates, custom, nli."""
    templates: list[str] | None = None
    """Templates for `custom` ("{}" is replaced by the label description)."""
    descriptions: dict[str, str] | None = None
    """Label -> description; default: AG News descriptions for its labels, else the label names made readable."""
    nli_model: str | None = None
    """An NLI model (Hub id or folder) for the `nli` method."""
    hypothesis_template: str = "This example is about {}."


def label_descriptions(cfg: ZeroShotConfig, label_names: list[str]) -> dict[str, str] | None:
    return cfg.descriptions or default_descriptions(label_names)


def kept_row(cfg: ZeroShotConfig, base: RunConfig, method: str,
             descriptions: dict[str, str] | None) -> tuple[str, dict[str, Any]]:
    """Name and key of the row a method's result is kept under (Study.row): its inputs, nothing else."""
    key = {"method": method, "model": base.model.name, "data": asdict(base.data), "seed": base.seed,
           "descriptions": descriptions, **({"templates": cfg.templates} if method == "custom" else {}),
           **({"nli_model": cfg.nli_model, "hypothesis": cfg.hypothesis_template} if method == "nli" else {})}
    return f"zeroshot-{method}", key


def run_zeroshot(cfg: ZeroShotConfig, study_dir: str | Path | None = None, cli_overrides: list[str] | None = None,
                 progress=print) -> dict[str, Any]:
    base = load_run_config(cfg.recipe, cfg.run, cli_overrides)
    single_label_only(base, "zero-shot", "its methods pick one label per text")
    unknown = [m for m in cfg.methods if m not in ("untrained-head", "custom", "nli", *PROMPT_SETS)]
    if unknown:
        raise SlmtuneError(f"unknown zero-shot method(s) {', '.join(unknown)}")
    if "nli" in cfg.methods and not cfg.nli_model:
        raise SlmtuneError("the nli method needs --nli-model (an NLI model id or folder)")
    if "custom" in cfg.methods and not cfg.templates:
        raise SlmtuneError("the custom method needs --template (one or more, with {} for the label)")
    study = Study(study_dir or Path("studies") / cfg.name)
    study.write_study_yaml({"study": "zeroshot", **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                            "cli_overrides": cli_overrides or []})
    test = load_splits(base.data, base.seed).test
    names = test.label_names
    descriptions = label_descriptions(cfg, names)
    rows, matrices = [], {}
    encoder = None

    def score(method: str) -> dict[str, Any]:
        nonlocal encoder
        clock = Clock()
        if method == "untrained-head":
            from transformers import set_seed

            from slmtune.models.build import load_classifier, load_tokenizer

            set_seed(base.seed)
            model, tokenizer = load_classifier(base.model.name, names), load_tokenizer(base.model.name)
            predicted = predict_logits(model, tokenizer, test.texts, batch_size=base.train.eval_batch_size,
                                       max_length=base.data.max_length, progress=True).argmax(axis=1)
            note = "pretrained encoder + random head: expect chance"
        elif method == "nli":
            predicted = nli_predict(cfg.nli_model, test.texts, names, cfg.hypothesis_template, descriptions)
            note = f"NLI model {cfg.nli_model}, hypothesis {cfg.hypothesis_template!r}"
        else:
            from slmtune.methods.embeddings import embed, load_encoder

            encoder = encoder or load_encoder(base.model.name)
            texts = embed(encoder, test.texts, batch_size=base.train.eval_batch_size,
                          max_length=base.data.max_length, cache_dir=study.root / "cache")
            templates, use_descriptions = (cfg.templates, True) if method == "custom" else PROMPT_SETS[method]
            templates = templates or templates_for(base.data.dataset)
            classifier = prompt_classifier(encoder, names, templates, descriptions if use_descriptions else None)
            predicted = (texts @ classifier.T).argmax(axis=1)
            note = "prompts: " + " | ".join(label_prompts(names, templates, descriptions if use_descriptions
                                                          else None)[0]) + " ..."
        metrics = classification_metrics(test.labels, predicted, names)
        return {"method": method, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                "n": metrics["n"], "seconds": round(clock.elapsed, 1), "note": note,
                "confusion_matrix": metrics["confusion_matrix"]}

    for method in cfg.methods:
        # kept per method and inputs, so a resumed study does not score the test set again
        row = study.row(*kept_row(cfg, base, method, descriptions), functools.partial(score, method))
        matrices[method] = row.pop("confusion_matrix")
        took = "reused" if row.pop("reused", False) else f"{row['seconds']:.0f}s"
        rows.append(row)
        progress(f"  {method:<15} accuracy {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}  "
                 f"({took})  {row['note']}")
    from slmtune.runs.figures import confusion_matrix_png

    for method, matrix in matrices.items():
        row = next(r for r in rows if r["method"] == method)
        confusion_matrix_png(matrix, names, study.root / "plots" / f"confusion_{method}.png",
                             title=f"Zero-shot {method} (n={row['n']}, accuracy {row['accuracy']:.3f})")
    summary = {"study": "zeroshot", "model": base.model.name, "chance": 1 / len(names),
               "confusion_matrices": matrices, "descriptions": descriptions}
    study.write_summary(rows, summary)
    return {**summary, "rows": rows}


# ---------------------------------------------------------------------------------------- study protocol

CONFIG = ZeroShotConfig
run = run_zeroshot
shares_runs = keeps_runs
planned_share = trains_to_the_end
OWN_QUEUE = False
REDUCTIONS: tuple = ()


def from_cli(values: dict[str, Any], from_file: bool) -> dict[str, Any]:
    if values.get("templates") and not values.get("methods"):
        values["methods"] = ["untrained-head", "names", "descriptions", "templates", "custom"]
    if values.get("nli_model") and not values.get("methods"):
        values["methods"] = ["untrained-head", "templates", "nli"]
    return values


def plan(cfg: ZeroShotConfig, base: RunConfig, cli_overrides: list[str] | None, data: DataSizes,
         root: Path):
    """No training run: one pass over the test set for the untrained head, one for the embeddings (kept results
    count as done)."""
    from slmtune.experiments.common import EVAL_RATE, row_file

    left = set(cfg.methods) - {"nli"}
    if root is not None and (root / "rows").is_dir():
        descriptions = label_descriptions(cfg, load_splits(base.data, base.seed).test.label_names)
        left = {m for m in left if not row_file(root, *kept_row(cfg, base, m, descriptions)).exists()}
    return [], data.test / EVAL_RATE * (("untrained-head" in left) + bool(left - {"untrained-head"}))


def report(summary: dict[str, Any]) -> list[str]:
    lines = [f"  n={summary['rows'][0]['n']} test rows, chance {summary['chance']:.2f}"]
    lines += [f"  {row['method']:<16}accuracy {row['accuracy']:.4f}   macro-F1 {row['macro_f1']:.4f}"
              for row in summary["rows"]]
    return lines


def report_section(page, folder: Path, summary: dict) -> str:
    """This study's section of report.html (`page`: slmtune.report.html.Report, whose key findings it adds to)."""
    from slmtune.report.cells import escape, num, pct, table

    rows = [[escape(r["method"]), num(r["accuracy"]), num(r["macro_f1"]), r["n"], escape(r.get("note", ""))]
            for r in summary["rows"]]
    best = max(summary["rows"], key=lambda r: r["accuracy"])
    page.findings.append([f"zero-shot, best method ({escape(best['method'])})", pct(best["accuracy"]),
                          str(best["n"]), "no training"])
    return f"<p class='muted'>chance = {summary.get('chance', 0):.2f}</p>" + table(
        ["method", "accuracy", "macro-F1", "n", "note"], rows)


def figure_caption(summary: dict) -> str:
    """What the captions of this study's figures in report.html say."""
    return f"n={summary['rows'][0]['n'] if summary.get('rows') else '?'} test rows"
