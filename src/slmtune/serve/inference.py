"""Use a finished run: predict labels and probabilities (texts or whole files, streamed), re-evaluate a split."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from slmtune import runs
from slmtune.errors import SlmtuneError
from slmtune.multilabel import label_sets
from slmtune.serve.backends import Engine, engine
from slmtune.serve.loading import LoadedRun, load_run
from slmtune.serve.logits import predict_logits
from slmtune.serve.metrics import score_probs


def predict(run_dir: str | Path, texts: list[str] | str, clean: bool | None = None,
            backend: str = "auto", max_change: float = 0.005) -> list[dict[str, Any]]:
    """Label and class probabilities per text, cleaned as the run's training data was.

    Multi-label runs: `labels` is the predicted label set (each label whose sigmoid score reaches its tuned
    threshold), `label` the same joined by `|`, `score` the highest label score, `probabilities` every label's
    score (they do not sum to 1)."""
    if isinstance(texts, str):
        texts = [texts]
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise SlmtuneError("predict needs non-empty texts")
    run = load_run(run_dir)
    probs = _probabilities(run, engine(run_dir, backend, max_change, rows=len(texts)), texts, clean,
                           progress=len(texts) > 2000)
    if run.multi_label:
        return [{"labels": chosen, "label": "|".join(chosen), "score": float(np.max(p)),
                 "probabilities": {n: float(v) for n, v in zip(run.label_names, p)}}
                for p, chosen in zip(probs, label_sets(probs, run.thresholds, run.label_names))]
    return [
        {"label": run.label_names[int(np.argmax(p))], "score": float(np.max(p)),
         "probabilities": {n: float(v) for n, v in zip(run.label_names, p)}}
        for p in probs
    ]


def write_predictions(path: str | Path, texts: list[str], predictions: list[dict[str, Any]]) -> Path:
    """`predict`'s output for `texts` as a CSV: text, predicted label, its score, one probability column per class."""
    import csv

    labels = list(predictions[0]["probabilities"])
    try:
        with Path(path).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "predicted", "score", *[f"p_{n}" for n in labels]])
            for text, p in zip(texts, predictions):
                probabilities = [f"{p['probabilities'][n]:.5f}" for n in labels]
                writer.writerow([text, p["label"], f"{p['score']:.5f}", *probabilities])
    except OSError as exc:
        raise SlmtuneError(f"cannot write {path}: {exc.strerror or exc}") from None
    return Path(path)


def _probabilities(run: LoadedRun, used: Engine, texts: list[str], clean: bool | None, progress: bool = False,
                   cache: bool = True) -> np.ndarray:
    if clean if clean is not None else run.config.data.clean:
        from slmtune.data.clean import clean_texts

        texts = clean_texts(texts, run.config.data.clean_rules)
    logits = predict_logits(used.model, run.tokenizer, texts, batch_size=run.config.train.eval_batch_size,
                            max_length=run.config.data.max_length, progress=progress, precision=used.precision,
                            truncation=run.config.data.truncation, cache=cache)
    return run.probabilities(logits, texts)


def predict_file(run_dir: str | Path, input_path: str | Path, output_path: str | Path | None = None,
                 text_column: str | None = None, backend: str = "auto", clean: bool | None = None,
                 max_change: float = 0.005, chunk_rows: int = 5000, progress: bool = True) -> tuple[Path, int]:
    """Predict every row of a CSV / TSV / JSONL / Parquet file into a CSV, streaming: memory stays bounded
    whatever the file's size, rows are written as they are done, and the input's own columns are kept, with
    `predicted`, `score` and one `p_<label>` column per class after them.

    Rows go to OUTPUT.partial (its progress in OUTPUT.partial.json) and the file is renamed to OUTPUT at the
    end; an interrupted call, rerun the same way, continues after the last finished chunk. `backend` and
    `max_change` as in slmtune.serve.backends.engine. Returns (path, rows)."""
    import csv
    import io
    import os

    from tqdm.auto import tqdm

    from slmtune.data.sources import iter_table, text_column_of

    input_path = Path(input_path)
    output = Path(output_path) if output_path else input_path.with_suffix(".predictions.csv")
    if output.resolve() == input_path.resolve():
        raise SlmtuneError(f"--output {output} is the input file; choose another name")
    run = load_run(run_dir)
    used = engine(run_dir, backend, max_change)
    partial, state_file = output.with_name(output.name + ".partial"), output.with_name(output.name + ".partial.json")
    done_rows, done_bytes = 0, 0
    key = {"run": str(Path(run_dir).resolve()), "input": str(input_path.resolve()),
           "input_bytes": input_path.stat().st_size if input_path.is_file() else None, "backend": backend,
           "chunk_rows": chunk_rows}
    if partial.is_file() and state_file.is_file():
        state = runs.read_json(state_file)
        if state.get("key") == key:  # the same call, interrupted: continue after its last finished chunk
            done_rows, done_bytes = int(state["rows"]), int(state["bytes"])
    try:
        handle = partial.open("r+b" if done_bytes else "wb")
    except OSError as exc:
        raise SlmtuneError(f"cannot write {partial}: {exc.strerror or exc}") from None
    rows = 0
    with handle, tqdm(desc="predict", unit="row", disable=not progress, initial=done_rows) as bar:
        handle.truncate(done_bytes)
        handle.seek(done_bytes)
        column = text_column
        for frame in iter_table(input_path, chunk_rows):
            column = text_column_of(frame, column, input_path)
            first = rows
            rows += len(frame)
            if rows <= done_rows:
                continue
            frame = frame.iloc[max(0, done_rows - first):]
            texts = ["" if v is None else str(v) for v in frame[column]]
            empty = next((i for i, t in enumerate(texts) if not t.strip()), None)
            if empty is not None:
                raise SlmtuneError(f"{input_path}: empty text at row {rows - len(texts) + empty + 1}; "
                                   f"{rows - len(texts)} rows before it are in {partial}")
            probs = _probabilities(run, used, texts, clean, cache=False)
            out = frame.copy()
            names = _output_names(list(map(str, frame.columns)), run.label_names)
            if run.multi_label:  # the label set, joined by |
                out[names[0]] = ["|".join(chosen) for chosen in label_sets(probs, run.thresholds, run.label_names)]
            else:
                out[names[0]] = [run.label_names[i] for i in probs.argmax(axis=1)]
            out[names[1]] = np.round(probs.max(axis=1), 5)
            for j, name in enumerate(names[2:]):
                out[name] = np.round(probs[:, j], 5)
            buffer = io.StringIO()
            out.to_csv(buffer, index=False, header=handle.tell() == 0, quoting=csv.QUOTE_MINIMAL)
            handle.write(buffer.getvalue().encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
            runs.write_json(state_file, {"key": key, "rows": rows, "bytes": handle.tell()})
            bar.update(len(texts))
    if rows == 0:
        raise SlmtuneError(f"{input_path}: no rows")
    os.replace(partial, output)
    state_file.unlink(missing_ok=True)
    return output, rows


def _output_names(columns: list[str], label_names: list[str]) -> list[str]:
    """`predicted`, `score`, `p_<label>`...; a name the input already uses gets a `slmtune_` prefix."""
    names = ["predicted", "score", *[f"p_{n}" for n in label_names]]
    return [f"slmtune_{n}" if n in columns else n for n in names]


def evaluate_run(run_dir: str | Path, split: str = "test", backend: str = "auto",
                 max_change: float = 0.005) -> dict[str, Any]:
    """Re-evaluate the run's best model on its own split (the same rows the run drew), with `backend`. The
    metrics, with the accuracy change against the run's own figure, also go to RUN/evaluation-<split>-<backend>.json."""
    from slmtune.data import load_splits

    if split not in ("test", "validation", "train"):
        raise SlmtuneError(f"unknown split {split!r}: use test, validation or train")
    run = load_run(run_dir)
    data = getattr(load_splits(run.config.data, run.config.seed), split)
    used = engine(run_dir, backend, max_change, rows=len(data))
    start = time.perf_counter()
    logits = predict_logits(used.model, run.tokenizer, data.texts, batch_size=run.config.train.eval_batch_size,
                            max_length=run.config.data.max_length, progress=True, precision=used.precision,
                            truncation=run.config.data.truncation)
    seconds = time.perf_counter() - start
    metrics, _ = score_probs(run.probabilities(logits, data.texts), data, run.thresholds)
    metrics.update(backend=used.name, split=split, seconds=round(seconds, 2),
                   precision="int8" if used.name == "onnx-int8" else used.precision.name,
                   samples_per_second=round(len(data) / seconds, 2))
    stored = runs.read_result(run_dir).get("metrics", {}).get(split)
    if stored:  # what this backend and precision change against the run's own figure
        metrics["accuracy_change_vs_run"] = metrics["accuracy"] - stored["accuracy"]
    runs.write_json(Path(run_dir) / f"evaluation-{split}-{used.name}.json", metrics)
    return metrics
