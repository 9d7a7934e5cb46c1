"""The first sanity check on any dataset: TF-IDF features and a logistic regression, fitted in seconds.

Every run reports it beside the fine-tuned model (`result.json` `baseline`), so a default that loses to it shows.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

_KEPT: dict[str, dict[str, float]] = {}


def tfidf_baseline(train_texts: list[str], train_labels: list[int], test_texts: list[str], test_labels: list[int],
                   n_classes: int, seed: int = 0) -> dict[str, float] | None:
    """Accuracy, macro-F1 and seconds of TF-IDF (word 1-2 grams, sublinear tf) + logistic regression (C=10);
    None where the texts hold no word of two or more characters to count.

    Kept per process for the same rows, so a study's runs on one split (a sweep's trials) fit it once."""
    rows = json.dumps([train_texts, train_labels, test_texts, test_labels, n_classes, seed])
    key = hashlib.sha1(rows.encode("utf-8")).hexdigest()
    if key not in _KEPT:
        if len(_KEPT) >= 8:
            _KEPT.pop(next(iter(_KEPT)))
        try:
            _KEPT[key] = _fit(train_texts, train_labels, test_texts, test_labels, n_classes, seed)
        except ValueError:  # "empty vocabulary"
            return None
    return dict(_KEPT[key])


def _fit(train_texts, train_labels, test_texts, test_labels, n_classes: int, seed: int) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2 if len(train_texts) >= 1000 else 1,
                                 max_features=500_000)
    features = vectorizer.fit_transform(train_texts)
    if train_labels and isinstance(train_labels[0], list):  # multi-label: one logistic regression per label
        return _fit_label_sets(vectorizer, features, train_labels, test_texts, test_labels, n_classes, seed, t0)
    if len(set(train_labels)) < 2:
        predicted = np.full(len(test_texts), train_labels[0])
    else:
        model = LogisticRegression(C=10.0, max_iter=2000, random_state=seed).fit(features, train_labels)
        predicted = model.predict(vectorizer.transform(test_texts))
    labels = list(range(n_classes))
    return {"method": "tfidf+logreg",
            "accuracy": float(accuracy_score(test_labels, predicted)),
            "macro_f1": float(f1_score(test_labels, predicted, labels=labels, average="macro", zero_division=0)),
            "seconds": round(time.perf_counter() - t0, 2)}


def _fit_label_sets(vectorizer, features, train_labels, test_texts, test_labels, n_labels, seed, t0) -> dict:
    """One-vs-rest logistic regressions, each label on when its probability reaches 0.5."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from slmtune.multilabel import multi_hot, multilabel_metrics

    with warnings.catch_warnings():  # a label no training row holds: sklearn warns and predicts it never
        warnings.simplefilter("ignore")
        model = OneVsRestClassifier(LogisticRegression(C=10.0, max_iter=2000, random_state=seed))
        model.fit(features, multi_hot(train_labels, n_labels))
        predicted = model.predict(vectorizer.transform(test_texts))
    scores = multilabel_metrics(multi_hot(test_labels, n_labels), np.asarray(predicted), [str(i) for i in
                                                                                         range(n_labels)])
    return {"method": "tfidf+logreg (one-vs-rest)",
            **{k: scores[k] for k in ("micro_f1", "macro_f1", "subset_accuracy", "accuracy")},
            "seconds": round(time.perf_counter() - t0, 2)}


def class_balance(labels: list[int], n_classes: int) -> dict[str, float]:
    """Rows per class and the imbalance ratio (largest class over smallest present one)."""
    counts = np.bincount(labels, minlength=n_classes)
    present = counts[counts > 0]
    return {"counts": counts.tolist(), "imbalance": float(present.max() / present.min()) if len(present) else 1.0}
