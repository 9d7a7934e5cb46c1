"""The first sanity check on any dataset: TF-IDF features and a logistic regression, fitted in seconds.

Every run reports it beside the fine-tuned model (`result.json` `baseline`), so a default that loses to it shows;
`model.blend: tfidf` averages it with the encoder (slmtune.blend). A fitted model is saved without pickle: the
vocabulary as JSON, idf, coefficients and intercepts as safetensors, each file's SHA-256 in tfidf.json.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slmtune.errors import SlmtuneError

VECTORIZER = {"sublinear_tf": True, "ngram_range": (1, 2), "lowercase": True}
"""TfidfVectorizer settings (word 1-2 grams, sublinear tf); min_df is 2 from 1,000 training texts, else 1."""
C = 10.0
FILES = ("vocabulary.json", "weights.safetensors")
_KEPT: dict[str, TfidfModel | None] = {}


@dataclass
class TfidfModel:
    """A fitted TF-IDF + logistic regression: class probabilities (softmax), or one sigmoid per label."""

    terms: list[str]
    idf: np.ndarray
    coef: np.ndarray
    """(outputs, terms): one row per class (softmax), one per label (sigmoid), or one for two classes (binary)."""
    intercept: np.ndarray
    kind: str
    """`softmax`, `binary` or `sigmoid` (multi-label)."""
    n_classes: int
    seconds: float = 0.0

    def _features(self, texts: list[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(**VECTORIZER, vocabulary={t: i for i, t in enumerate(self.terms)})
        vectorizer.idf_ = self.idf.astype(np.float64)
        return vectorizer.transform(texts)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(texts, classes) probabilities; multi-label: each label's sigmoid score."""
        z = np.asarray(self._features(texts) @ self.coef.T.astype(np.float64)) + self.intercept
        if self.kind == "softmax":
            z = np.exp(z - z.max(axis=1, keepdims=True))
            return z / z.sum(axis=1, keepdims=True)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        return np.hstack([1 - p, p]) if self.kind == "binary" else p

    def save(self, folder: Path) -> dict[str, str]:
        """Write the model into `folder` (no pickle); returns each file's SHA-256."""
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        (folder / FILES[0]).write_text(json.dumps(self.terms, ensure_ascii=False), encoding="utf-8")
        save_file({"idf": self.idf.astype(np.float32), "coef": self.coef.astype(np.float32),
                   "intercept": self.intercept.astype(np.float32)}, str(folder / FILES[1]),
                  metadata={"kind": self.kind, "n_classes": str(self.n_classes)})
        return {name: _sha256(folder / name) for name in FILES}

    @classmethod
    def load(cls, folder: Path, checksums: dict[str, str] | None = None) -> TfidfModel:
        """The model saved in `folder`; a missing file, or one whose SHA-256 differs from `checksums`, is a
        one-line error."""
        from safetensors import safe_open

        for name in FILES:
            path = folder / name
            if not path.is_file():
                raise SlmtuneError(f"the TF-IDF part of the blend is missing: {path} not found; retrain the run")
            if checksums is not None and checksums.get(name) != _sha256(path):
                raise SlmtuneError(f"the TF-IDF part of the blend was changed since training ({path}: checksum "
                                   "differs); retrain the run or restore the file")
        try:
            terms = json.loads((folder / FILES[0]).read_text(encoding="utf-8"))
            with safe_open(str(folder / FILES[1]), "np") as f:
                meta = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in ("idf", "coef", "intercept")}
            model = cls(terms, arrays["idf"], arrays["coef"], arrays["intercept"], meta["kind"],
                        int(meta["n_classes"]))
        except (ValueError, KeyError, OSError, UnicodeDecodeError) as exc:
            raise SlmtuneError(f"the TF-IDF part of the blend in {folder} cannot be read ({exc}); retrain the "
                               "run") from None
        if len(terms) != len(model.idf) or model.coef.shape[1] != len(terms):
            raise SlmtuneError(f"the TF-IDF part of the blend in {folder} is inconsistent (vocabulary of "
                               f"{len(terms)} terms, weights for {model.coef.shape[1]}); retrain the run")
        return model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fit_tfidf(texts: list[str], labels: list, n_classes: int, seed: int = 0) -> TfidfModel | None:
    """TF-IDF + logistic regression (C=10) on the training rows; one-vs-rest on multi-label rows (lists of
    labels). None where the texts hold no word of two or more characters to count. Kept per process for the
    same rows, so a study's runs on one split (a sweep's trials) fit it once."""
    key = hashlib.sha1(json.dumps([texts, labels, n_classes, seed]).encode("utf-8")).hexdigest()
    if key not in _KEPT:
        if len(_KEPT) >= 8:
            _KEPT.pop(next(iter(_KEPT)))
        try:
            _KEPT[key] = _fit(texts, labels, n_classes, seed)
        except ValueError:  # "empty vocabulary"
            _KEPT[key] = None
    return _KEPT[key]


def _fit(texts: list[str], labels: list, n_classes: int, seed: int) -> TfidfModel:
    import warnings

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(**VECTORIZER, min_df=2 if len(texts) >= 1000 else 1, max_features=500_000)
    features = vectorizer.fit_transform(texts)
    terms = [t for t, _ in sorted(vectorizer.vocabulary_.items(), key=lambda kv: kv[1])]
    n_terms = len(terms)
    if labels and isinstance(labels[0], list):  # multi-label: one logistic regression per label
        from slmtune.multilabel import multi_hot

        targets = multi_hot(labels, n_classes)
        coef, intercept = np.zeros((n_classes, n_terms)), np.zeros(n_classes)
        for j in range(n_classes):
            column = targets[:, j]
            if column.min() == column.max():  # a label no row (or every row) holds: a constant score
                intercept[j] = 30.0 if column[0] else -30.0
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(features, column)
            coef[j], intercept[j] = fitted.coef_[0], fitted.intercept_[0]
        kind = "sigmoid"
    else:
        present = sorted(set(labels))
        if len(present) < 2:  # one class: it always wins
            coef, intercept, kind = np.zeros((n_classes, n_terms)), np.full(n_classes, -30.0), "softmax"
            intercept[present[0]] = 30.0
        else:
            fitted = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(features, labels)
            if len(present) == 2 and n_classes == 2:
                coef, intercept, kind = fitted.coef_, fitted.intercept_, "binary"
            else:  # classes missing from the training rows get no probability
                coef, intercept, kind = np.zeros((n_classes, n_terms)), np.full(n_classes, -30.0), "softmax"
                if len(present) == 2:  # sklearn's binary form: class 1's logit minus class 0's
                    coef[present[1]], intercept[present[1]] = fitted.coef_[0], fitted.intercept_[0]
                    intercept[present[0]] = 0.0
                else:
                    coef[present], intercept[present] = fitted.coef_, fitted.intercept_
    return TfidfModel(terms, vectorizer.idf_, np.asarray(coef), np.asarray(intercept), kind, n_classes,
                      round(time.perf_counter() - t0, 2))


def tfidf_scores(model: TfidfModel, texts: list[str], labels: list) -> dict[str, Any]:
    """Accuracy and macro-F1 (multi-label: micro / macro-F1 and subset accuracy, labels on at 0.5) on rows."""
    from sklearn.metrics import accuracy_score, f1_score

    probs = model.predict_proba(texts)
    if model.kind == "sigmoid":
        from slmtune.multilabel import multi_hot, multilabel_metrics

        scores = multilabel_metrics(multi_hot(labels, model.n_classes), (probs >= 0.5).astype(np.int64),
                                    [str(i) for i in range(model.n_classes)])
        return {"method": "tfidf+logreg (one-vs-rest)",
                **{k: scores[k] for k in ("micro_f1", "macro_f1", "subset_accuracy", "accuracy")}}
    predicted = probs.argmax(axis=1)
    return {"method": "tfidf+logreg", "accuracy": float(accuracy_score(labels, predicted)),
            "macro_f1": float(f1_score(labels, predicted, labels=list(range(model.n_classes)), average="macro",
                                       zero_division=0))}


def tfidf_baseline(train_texts: list[str], train_labels: list, test_texts: list[str], test_labels: list,
                   n_classes: int, seed: int = 0) -> dict[str, float] | None:
    """Accuracy, macro-F1 and seconds of TF-IDF + logistic regression fitted on the training rows and scored on
    the test rows; None where the texts hold no word to count."""
    model = fit_tfidf(train_texts, train_labels, n_classes, seed)
    if model is None:
        return None
    return {**tfidf_scores(model, test_texts, test_labels), "seconds": model.seconds}


def class_balance(labels: list[int], n_classes: int) -> dict[str, float]:
    """Rows per class and the imbalance ratio (largest class over smallest present one)."""
    counts = np.bincount(labels, minlength=n_classes)
    present = counts[counts > 0]
    return {"counts": counts.tolist(), "imbalance": float(present.max() / present.min()) if len(present) else 1.0}
