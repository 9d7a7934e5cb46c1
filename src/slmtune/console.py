"""What the commands print: short, aligned summaries of a run, an evaluation, predictions and cleaning.

Plain functions from results to text, so the CLI stays a parser and other front ends can print the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def table(rows: list[tuple[str, str]], title: str = "") -> str:
    """`rows` as two aligned columns under an optional title."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(([title] if title else []) + [f"  {k:<{width}}  {v}" for k, v in rows])


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def train_summary(result: Any, config: Any) -> str:
    """The end of `slmtune train`: folder, model, parameters, validation and test scores, the baseline and blend,
    seconds, and the advice line when TF-IDF did better on validation."""
    test, val, p, sec = result.metrics["test"], result.metrics["validation"], result.params, result.seconds
    multi = "micro_f1" in test
    first, name = ("micro_f1", "micro-F1") if multi else ("accuracy", "accuracy")
    rows = [("run folder", str(result.run_dir)), ("model / method", f"{config.model.name} / {config.model.method}"
                                                 f"{' + TF-IDF blend' if result.blend else ''}"),
            ("trainable params", f"{p['trainable']:,} of {p['total']:,} ({p['percent']:.2f}%)"),
            (f"validation {name}", _num(val[first])), (f"test {name}", f"{_num(test[first])}  (n={test['n']})"),
            ("test macro-F1", _num(test["macro_f1"]))]
    if multi:
        rows.append(("test subset accuracy", _num(test["subset_accuracy"])))
    short = "micro / macro-F1" if multi else "acc / F1"
    if blend := result.blend:
        weight = blend["weight"]
        alone = blend["test_encoder"]
        rows += [("blend: encoder weight", f"{weight:.2f}" if not isinstance(weight, list) else
                  f"{min(weight):.2f}-{max(weight):.2f} (per label)"),
                 (f"encoder alone {short}", f"{_num(alone[first])} / {_num(alone['macro_f1'])}")]
    if base := result.baseline:
        gap = base["model_minus_baseline"]
        rows.append((f"TF-IDF baseline {short}", f"{_num(base[first])} / {_num(base['macro_f1'])}  (model "
                     f"{gap[first]:+.4f} / {gap['macro_f1']:+.4f})"))
    rows.append(("seconds train / eval / total", f"{sec['train']:.0f} / {sec['eval']:.0f} / {sec['total']:.0f}"))
    advice = f"\n  note: {result.advice}" if result.advice else ""
    return table(rows, title="\nslmtune train: done") + advice


def evaluation_summary(metrics: dict, run_dir: str | Path, split: str) -> str:
    """The per-class report and the headline figures of `slmtune evaluate`."""
    from slmtune.serve.metrics import classification_report_text

    change = metrics.get("accuracy_change_vs_run")
    return classification_report_text(metrics) + "\n" + table([
        ("backend", f"{metrics['backend']} ({metrics['precision']})"), ("split", f"{split} (n={metrics['n']})"),
        *([("micro-F1", _num(metrics["micro_f1"]))] if "micro_f1" in metrics else []),
        ("subset accuracy" if "micro_f1" in metrics else "accuracy", _num(metrics["accuracy"])),
        ("macro-F1", _num(metrics["macro_f1"])),
        ("samples/s", f"{metrics['samples_per_second']:.1f}"),
        ("accuracy change vs run", "-" if change is None else f"{change:+.4f}"),
        ("written to", str(Path(run_dir) / f"evaluation-{split}-{metrics['backend']}.json"))],
        title="\nslmtune evaluate")


def prediction_lines(texts: list[str], predictions: list[dict], limit: int = 20) -> str:
    """One line per text (the first `limit`): label, score, every class probability, the text's start."""
    lines = []
    for text, p in list(zip(texts, predictions))[:limit]:
        probs = "  ".join(f"{n} {v:.3f}" for n, v in p["probabilities"].items())
        lines.append(f"{p['label']:<12} {p['score']:.3f}  | {probs}  | {text[:60]}")
    return "\n".join(lines)


def cleaning_preview(pairs: list[tuple[str, str]], output: str | None, preview: int) -> str:
    """How many texts cleaning changed, and the first `preview` of them before and after."""
    changed = [(a, b) for a, b in pairs if a != b]
    head = (f"{len(pairs)} texts cleaned into {output}\n" if output else "")
    lines = [head + f"{len(changed)} of {len(pairs)} texts changed; preview:"]
    lines += [f"  before: {before[:200]}\n  after:  {after[:200]}\n" for before, after in (changed or pairs)[:preview]]
    return "\n".join(lines)


def study_summary(record: dict) -> str:
    """The end of `slmtune study`: a dry run, a worker's share, or the whole study's time and report."""
    from slmtune.experiments.common import format_duration

    if "worker_trained" in record:
        return f"slmtune study: worker done, {record['worker_trained']} run(s) trained"
    if "total_seconds" not in record:
        return "slmtune study: dry run, nothing trained"
    return f"\nslmtune study: done in {format_duration(record['total_seconds'])}; report {record['report']}"
