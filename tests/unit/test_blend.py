"""Blends with TF-IDF: the weight chosen on validation, the safe (non-pickle) TF-IDF format, a blended run served
by predict / evaluate / export alike, and the one-line errors for a missing or changed TF-IDF part."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import synthetic_rows, tiny_overrides, write_csv
from slmtune import runs
from slmtune.blend import GRID, choose_weight, mix
from slmtune.config import from_dict
from slmtune.errors import SlmtuneError
from slmtune.methods.tfidf import TfidfModel, fit_tfidf, tfidf_baseline

TEXTS = [t for t, _ in synthetic_rows(30, seed=5)]
LABELS = [["World", "Sports", "Business", "Sci/Tech"].index(label) for _, label in synthetic_rows(30, seed=5)]


def test_the_weight_follows_whichever_model_is_right():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 200)
    right = np.full((200, 3), 0.05)
    right[np.arange(200), gold] = 0.9
    noise = rng.dirichlet(np.ones(3), 200)
    assert choose_weight(right, noise, gold, False)["weight"] == 1.0  # the encoder right, TF-IDF noise
    chosen = choose_weight(noise, right, gold, False)
    assert chosen["weight"] < 0.2 and chosen["log_loss"]["blend"] <= chosen["log_loss"]["encoder"]
    assert chosen["weight"] in GRID
    assert np.allclose(mix(right, noise, 0.25), 0.25 * right + 0.75 * noise)


def test_multi_label_blends_get_a_weight_per_label():
    rng = np.random.default_rng(1)
    gold_sets = [sorted(set(rng.integers(0, 3, 2).tolist())) for _ in range(300)]
    hot = np.zeros((300, 3))
    for i, labels in enumerate(gold_sets):
        hot[i, labels] = 1
    good = np.clip(hot * 0.9 + 0.05, 0, 1)
    noise = rng.uniform(0.05, 0.95, (300, 3))
    encoder = np.column_stack([good[:, 0], noise[:, 1], good[:, 2]])  # right on labels 0 and 2
    tfidf = np.column_stack([noise[:, 0], good[:, 1], noise[:, 2]])  # right on label 1
    weight = np.asarray(choose_weight(encoder, tfidf, gold_sets, True)["weight"])
    assert weight.shape == (3,) and weight[0] > 0.8 and weight[2] > 0.8 and weight[1] < 0.2


@pytest.mark.parametrize("labels, kind", [
    (LABELS, "softmax"),
    ([label % 2 for label in LABELS], "binary"),
    ([[label, (label + 1) % 4] if i % 3 else [label] for i, label in enumerate(LABELS)], "sigmoid"),
])
def test_the_tfidf_model_saves_without_pickle_and_predicts_the_same(tmp_path, labels, kind):
    n_classes = 2 if kind == "binary" else 4
    model = fit_tfidf(TEXTS, labels, n_classes, seed=0)
    assert model.kind == kind
    probs = model.predict_proba(TEXTS[:10])
    assert probs.shape == (10, n_classes)
    if kind != "sigmoid":
        assert np.allclose(probs.sum(axis=1), 1)
    checksums = model.save(tmp_path / "tfidf")
    assert sorted(p.name for p in (tmp_path / "tfidf").iterdir()) == ["vocabulary.json", "weights.safetensors"]
    loaded = TfidfModel.load(tmp_path / "tfidf", checksums)
    assert np.allclose(loaded.predict_proba(TEXTS[:10]), probs, atol=1e-5)  # float32 on disk


def test_the_baseline_scores_what_scikit_learn_predicts():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    baseline = tfidf_baseline(TEXTS[:80], LABELS[:80], TEXTS[80:], LABELS[80:], 4, seed=0)
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
    fitted = LogisticRegression(C=10.0, max_iter=2000, random_state=0).fit(vectorizer.fit_transform(TEXTS[:80]),
                                                                         LABELS[:80])
    expected = (fitted.predict(vectorizer.transform(TEXTS[80:])) == np.asarray(LABELS[80:])).mean()
    assert baseline["accuracy"] == pytest.approx(expected)


@pytest.fixture(scope="module")
def blended_run(tiny_models, synthetic_files, tmp_path_factory):
    from slmtune.train import train

    folder = tmp_path_factory.mktemp("blend") / "run"
    cfg = from_dict(tiny_overrides(tiny_models["bert"], synthetic_files, **{"model.blend": "tfidf",
                                                                            "train.epochs": 1}))
    result = train(cfg, run_dir=folder)
    return folder, result


def test_a_blended_run_records_its_weight_and_both_scores(blended_run):
    folder, result = blended_run
    saved = runs.read_result(folder)
    blend = saved["blend"]
    assert blend["method"] == "tfidf" and 0.0 <= blend["weight"] <= 1.0 and result.blend == blend
    assert blend["test_blend"]["accuracy"] == pytest.approx(saved["metrics"]["test"]["accuracy"])
    assert set(blend["test_encoder"]) == {"accuracy", "macro_f1"}
    assert saved["resolved"]["model.blend"]["value"] == "tfidf"
    assert (folder / "model" / "blend.json").is_file() and (folder / "model" / "tfidf" / "vocabulary.json").is_file()


def test_predict_and_evaluate_serve_the_blend(blended_run):
    import pandas as pd

    from slmtune.serve.inference import evaluate_run, predict

    folder, _ = blended_run
    table = pd.read_csv(folder / "predictions.csv")
    predicted = predict(folder, list(table["text"][:12]), backend="torch")
    names = [c[2:] for c in table.columns if c.startswith("p_")]
    served = np.array([[p["probabilities"][n] for n in names] for p in predicted])
    assert np.allclose(served, table[[f"p_{n}" for n in names]].to_numpy()[:12], atol=2e-4)
    metrics = evaluate_run(folder, "test", backend="torch")
    assert metrics["accuracy_change_vs_run"] == pytest.approx(0.0, abs=1e-9)


def test_an_exported_blend_applies_with_the_model_cards_own_code(blended_run, tmp_path):
    from slmtune.serve.export import export_run
    from slmtune.serve.inference import predict

    folder, _ = blended_run
    out = export_run(folder, tmp_path / "export")
    card = (out / "README.md").read_text()
    assert "## Blend with TF-IDF" in card and "| encoder alone | blend |" in card
    code = re.search(r"## Blend with TF-IDF.*?```python\n(.*?)```", card, re.S).group(1)
    text = "stock market shares profit bank"
    namespace: dict = {}
    exec(code.replace("path/to/this/folder", str(out)).replace("Stocks slid as oil prices rose", text), namespace)
    expected = predict(folder, [text], backend="torch-fp32")[0]["probabilities"]
    labels = json.loads((out / "blend.json").read_text())["labels"]
    assert np.allclose(namespace["probabilities"][0], [expected[n] for n in labels], atol=2e-3)


def test_a_changed_or_missing_tfidf_part_is_one_line(blended_run, tmp_path):
    import shutil

    from slmtune.cli import main
    from slmtune.serve.inference import predict

    folder, _ = blended_run
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    weights = copy / "model" / "tfidf" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(SlmtuneError, match="changed since training"):
        predict(copy, ["a text"])
    (copy / "model" / "tfidf" / "vocabulary.json").unlink()
    with pytest.raises(SlmtuneError, match="missing"):
        predict(copy, ["another text"])
    (copy / "model" / "blend.json").unlink()
    assert main(["predict", str(copy), "--text", "a third text"]) == 2  # the config names a blend: refused


def test_advice_names_the_blend_when_tfidf_wins_on_validation():
    from slmtune.resolve import DataFacts, resolve
    from slmtune.train import advice

    run = resolve(from_dict({}), DataFacts(100, 4))
    seen = {"encoder": {"accuracy": 0.80, "macro_f1": 0.76}, "tfidf": {"accuracy": 0.81, "macro_f1": 0.79},
            "blend": {"accuracy": 0.85, "macro_f1": 0.82}, "n": 240}
    line = advice(run, {"blend_validation": seen})
    assert "--blend tfidf" in line and "0.8500" in line and "0.8000" in line
    one_row = {**seen, "tfidf": {"accuracy": 0.79, "macro_f1": 0.7},  # ahead by one validation row: noise
               "blend": {"accuracy": 0.80 + 1 / 240, "macro_f1": 0.8}}
    assert advice(run, {"blend_validation": one_row}) is None
    assert advice(run, {"blend_validation": {**seen, "encoder": {"accuracy": 0.9, "macro_f1": 0.9}}}) is None
    blending = resolve(from_dict({"model": {"blend": "tfidf"}}), DataFacts(100, 4))
    assert advice(blending, {"blend_validation": seen}) is None


def test_multi_label_on_single_label_rows_says_so(tmp_path):
    from slmtune.config import DataConfig
    from slmtune.data import load_splits

    rows = [(text, json.dumps([label])) for text, label in synthetic_rows(10, seed=1)]
    path = tmp_path / "one.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": json.loads(y)}) + "\n" for t, y in rows))
    with pytest.raises(SlmtuneError, match="exactly one label: this is single-label data"):
        load_splits(DataConfig(dataset=str(path), multi_label=True), seed=0)
    csv = write_csv(tmp_path / "one.csv", [(t, json.loads(y)[0]) for t, y in rows])
    with pytest.raises(SlmtuneError, match="splits no label cell"):
        load_splits(DataConfig(dataset=str(csv), multi_label=True), seed=0)
