"""Export a run: a merged transformers folder with a model card that `pipeline()` loads, optional ONNX."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from slmtune import blend, runs
from slmtune.errors import SlmtuneError
from slmtune.serve.loading import load_run

ONNX_FILES = {False: "model.onnx", True: "model.int8.onnx"}


def export_run(run_dir: str | Path, out_dir: str | Path, onnx: bool = False, int8: bool = False,
               overwrite: bool = False, max_change: float = 0.005) -> Path:
    """Write the run's best model, LoRA merged, as a plain transformers folder (plus ONNX files if asked).

    `transformers.pipeline("text-classification", model=out_dir)` loads it without remote code and
    predicts what `slmtune predict` does (pass `truncation=True` for texts past the run's max_length).
    `out_dir` must be new or empty; an earlier export there is replaced only with `overwrite`. The int8 model
    keeps in fp32 the layers it needs to change at most `max_change` of the run's predictions (int8.json).
    """
    from slmtune.serve.int8 import check_budget

    check_budget(max_change)
    run = load_run(run_dir)
    out = Path(out_dir)
    if out.is_file():
        raise SlmtuneError(f"{out} is a file; give a folder to export into")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "slmtune.json").is_file():
            raise SlmtuneError(f"{out} is not empty and holds no slmtune export: choose an empty or new folder")
        if not overwrite:
            raise SlmtuneError(f"{out} already holds an export: pass --overwrite to replace it or choose another "
                               "folder")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SlmtuneError(f"cannot create {out}: {exc.strerror or exc}") from None
    if run.multi_label:  # pipeline() reads problem_type and applies a sigmoid; recorded plainly too
        run.model.config.function_to_apply = "sigmoid"
    run.model.save_pretrained(str(out), safe_serialization=True)
    tokenizer = run.tokenizer
    tokenizer.model_max_length = run.config.data.max_length
    if run.config.data.truncation == "tail":  # pipeline(truncation=True) then keeps the last tokens too
        tokenizer.truncation_side = "left"
    tokenizer.save_pretrained(str(out))
    (out / "slmtune.json").write_text(json.dumps({"source_run": str(Path(run_dir).resolve()),
                                                  "clean_text": run.config.data.clean,
                                                  "max_length": run.config.data.max_length,
                                                  **({"multi_label": True, "thresholds": dict(zip(
                                                      run.label_names, map(float, run.thresholds)))}
                                                     if run.multi_label else {})}, indent=2))
    result = runs.read_result(run_dir)
    if run.blend is not None:  # the TF-IDF part as it is saved in the run: JSON and safetensors, no pickle
        model_dir = Path(run_dir) / "model"
        shutil.copytree(model_dir / blend.FOLDER, out / blend.FOLDER)
        record = json.loads((model_dir / blend.FILE).read_text())
        (out / blend.FILE).write_text(json.dumps({**record, "labels": run.label_names, "kind": run.blend.tfidf.kind},
                                                 indent=2))
    (out / "README.md").write_text(model_card(run, result) + blend_card(run, result), encoding="utf-8")
    if onnx or int8:
        from slmtune.serve import int8 as int8_search

        export_onnx(copy.deepcopy(run.model), out, int8=int8,  # the export switches attention to eager
                    quantize_with=int8_search.for_run(run, max_change) if int8 else None)
    return out


HUB_IDS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
           "distilbert-base-uncased": "distilbert/distilbert-base-uncased"}


def model_card(run, result: dict) -> str:
    """The exported folder's README.md: the Hub's YAML metadata (license, base model, dataset, metrics with a
    95% interval), what was trained and how to load it with `pipeline()`. Pushing the folder needs nothing more."""
    import yaml

    from slmtune.stats import proportion_interval

    config = run.config
    base = HUB_IDS.get(config.model.name, config.model.name)
    dataset = config.data.dataset if config.data.dataset == "ag_news" else Path(config.data.dataset).stem
    test = result.get("metrics", {}).get("test", {})
    metrics, lines = [], []
    if test and run.multi_label:
        n = int(test["n"])
        metrics = [{"type": "f1", "value": round(test["micro_f1"], 4), "name": "Test micro-F1",
                    "args": {"average": "micro", "n": n}},
                   {"type": "f1", "value": round(test["macro_f1"], 4), "name": "Test macro-F1",
                    "args": {"average": "macro", "n": n}},
                   {"type": "accuracy", "value": round(test["subset_accuracy"], 4), "name": "Test subset accuracy",
                    "args": {"n": n}}]
        lines = [f"| test micro-F1 | {test['micro_f1']:.4f} | |", f"| test macro-F1 | {test['macro_f1']:.4f} | |",
                 f"| test subset accuracy | {test['subset_accuracy']:.4f} | |"]
    elif test:
        n = int(test["n"])
        low, high = proportion_interval(round(test["accuracy"] * n), n)
        metrics = [{"type": "accuracy", "value": round(test["accuracy"], 4), "name": "Test accuracy",
                    "args": {"n": n, "ci95": [round(low, 4), round(high, 4)]}},
                   {"type": "f1", "value": round(test["macro_f1"], 4), "name": "Test macro-F1",
                    "args": {"average": "macro", "n": n}}]
        lines = [f"| test accuracy | {test['accuracy']:.4f} | [{low:.4f}, {high:.4f}] (Wilson, n={n}) |",
                 f"| test macro-F1 | {test['macro_f1']:.4f} | |"]
    meta = {
        "license": "apache-2.0", "library_name": "transformers", "pipeline_tag": "text-classification",
        "base_model": base, "datasets": [dataset], "tags": ["slmtune", config.model.method, "text-classification"],
        "model-index": [{"name": Path(str(result.get("name") or "slmtune-model")).name, "results": [{
            "task": {"type": "text-classification", "name": "Text Classification"},
            "dataset": {"name": dataset, "type": dataset, "split": "test"}, "metrics": metrics}]}],
    }
    labels = ", ".join(run.label_names)
    if run.multi_label:
        use = ["classify = pipeline(\"text-classification\", model=\"path/to/this/folder\", top_k=None, "
               "truncation=True)",
               "scores = classify(\"Stocks slid as oil prices rose\")[0]  # a sigmoid score per label",
               "thresholds = json.load(open(\"path/to/this/folder/slmtune.json\"))[\"thresholds\"]",
               "labels = [s[\"label\"] for s in scores if s[\"score\"] >= thresholds[s[\"label\"]]]"]
        kind = ("A multi-label text classifier (a sigmoid score per label; each label has a decision threshold "
                "tuned on validation, in slmtune.json)")
    else:
        use = ["classify = pipeline(\"text-classification\", model=\"path/to/this/folder\", truncation=True)",
               "classify(\"Stocks slid as oil prices rose\")"]
        kind = "A text classifier"
    return "\n".join([
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# {result.get('name', 'slmtune model')}", "",
        f"{kind} fine-tuned from `{base}` with slmtune ({config.model.method}"
        f"{f', rank {config.lora.r}' if config.model.method == 'lora' else ''}, merged into plain weights) on "
        f"{dataset}: {result.get('sizes', {}).get('train', '?')} training rows, seed {config.seed}, "
        f"{config.train.epochs:g} epochs at learning rate {config.train.learning_rate:g}.", "",
        f"Labels: {labels}.", "",
        "| metric | value | 95% interval |", "|---|---|---|", *lines, "",
        "## Use", "", "```python", *(["import json"] if run.multi_label else []),
        "from transformers import pipeline", "", *use, "```", "",
        f"Texts were {'cleaned (HTML entities, whitespace) and ' if config.data.clean else ''}truncated to "
        f"{config.data.max_length} tokens ({config.data.truncation}) in training; `slmtune predict` applies the "
        "same cleaning" + (" and truncation (`pipeline()` keeps the head of a longer text)"
                           if config.data.truncation == "head+tail" else "") + ".", ""])


def blend_card(run, result: dict) -> str:
    """The model card's section on a blend: encoder-alone and blended test scores, and how to apply the TF-IDF
    part (tfidf/, blend.json) with scikit-learn, numpy and safetensors alone. Empty for a run without a blend."""
    if run.blend is None:
        return ""
    record = result.get("blend", {})
    first = "micro_f1" if run.multi_label else "accuracy"
    alone, blended = record.get("test_encoder", {}), record.get("test_blend", {})
    rows = [f"| {name} | {alone.get(k, float('nan')):.4f} | {blended.get(k, float('nan')):.4f} |"
            for k, name in ((first, f"test {first.replace('_', '-')}"), ("macro_f1", "test macro-F1"))]
    squash = {"softmax": "p_tfidf = np.exp(z - z.max(1, keepdims=True)); p_tfidf /= p_tfidf.sum(1, keepdims=True)",
              "binary": "p1 = 1 / (1 + np.exp(-z)); p_tfidf = np.hstack([1 - p1, p1])",
              "sigmoid": "p_tfidf = 1 / (1 + np.exp(-z))  # a score per label"}[run.blend.tfidf.kind]
    return "\n".join([
        "## Blend with TF-IDF", "",
        "This model's predictions average the encoder's probabilities with a TF-IDF + logistic regression model's "
        "(in `tfidf/`: the vocabulary as JSON, idf and weights as safetensors; no pickle), the encoder weighted "
        "by `weight` in `blend.json` (chosen on the validation rows' log-loss"
        f"{', one per label' if run.multi_label else ''}).", "",
        "| metric | encoder alone | blend |", "|---|---|---|", *rows, "",
        "```python", "import json", "", "import numpy as np", "from safetensors.numpy import load_file",
        "from sklearn.feature_extraction.text import TfidfVectorizer", "from transformers import pipeline", "",
        "folder = \"path/to/this/folder\"", "texts = [\"Stocks slid as oil prices rose\"]",
        "blend = json.load(open(f\"{folder}/blend.json\"))",
        "terms = json.load(open(f\"{folder}/tfidf/vocabulary.json\"))",
        "weights = load_file(f\"{folder}/tfidf/weights.safetensors\")",
        "vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), "
        "vocabulary={t: i for i, t in enumerate(terms)})",
        "vectorizer.idf_ = weights[\"idf\"].astype(\"float64\")",
        "z = vectorizer.transform(texts) @ weights[\"coef\"].T + weights[\"intercept\"]", squash,
        "classify = pipeline(\"text-classification\", model=folder, top_k=None, truncation=True)",
        "p_encoder = np.array([[{s[\"label\"]: s[\"score\"] for s in row}[name] for name in blend[\"labels\"]] "
        "for row in classify(texts)])",
        "w = np.asarray(blend[\"weight\"])", "probabilities = w * p_encoder + (1 - w) * p_tfidf", "```", ""])


def require_onnx():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SlmtuneError("the ONNX path needs the extra: pip install 'slmtune[fast]'") from None


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(model, out_dir: str | Path, int8: bool = False,
                quantize_with: Callable[[Path, Path], None] | None = None) -> Path:
    """model.onnx with ONNX Runtime's fused transformer ops (fp32); with `int8` also model.int8.onnx (dynamic int8,
    weights per channel: faster on CPU), made by `quantize_with(plain graph, int8 path)`: slmtune.serve.int8's
    search for a run, which keeps the layers int8 hurts most in fp32; every layer quantized without it."""
    require_onnx()
    out = Path(out_dir)
    fp32 = out / ONNX_FILES[False]
    model = model.float().eval().cpu()
    if hasattr(model, "set_attn_implementation"):  # eager attention exports to a graph ORT can fuse
        model.set_attn_implementation("eager")
    example = (torch.tensor([[101, 7592, 2088, 102]] * 2), torch.ones(2, 4, dtype=torch.long))
    raw = out / "model.raw.onnx"
    with torch.inference_mode():
        torch.onnx.export(
            _LogitsOnly(model), example, str(raw), input_names=["input_ids", "attention_mask"],
            output_names=["logits"], opset_version=17, dynamo=False,
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          "logits": {0: "batch"}},
        )
    if int8:  # quantize the plain graph: ORT's fused ops carry no shape information for the quantizer
        from slmtune.serve import int8 as int8_search

        (quantize_with or int8_search.quantize)(raw, out / ONNX_FILES[True])
    cfg = model.config
    model_type = {"distilbert": "bert", "roberta": "bert"}.get(cfg.model_type, cfg.model_type)
    try:
        from onnxruntime.transformers import optimizer

        heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_heads", 0)
        hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "dim", 0)
        optimized = optimizer.optimize_model(str(raw), model_type=model_type, num_heads=heads, hidden_size=hidden)
        optimized.save_model_to_file(str(fp32))
        raw.unlink()
    except Exception:  # an architecture the fuser does not know: keep the plain graph, still correct
        shutil.move(str(raw), str(fp32))
    return fp32
