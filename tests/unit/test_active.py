"""Active learning: strategies on hand-made probabilities, the area under the curve, a tiny study end to end."""

import json

import numpy as np
import pytest

from conftest import tiny_overrides
from slmtune.data import TextDataset
from slmtune.experiments.active import ActiveConfig, area_under_curve, run_active
from slmtune.methods.query import STRATEGIES, entropy, least_confidence, margin

PROBS = np.array([
    [0.97, 0.01, 0.01, 0.01],  # 0 confident
    [0.40, 0.38, 0.11, 0.11],  # 1 small margin, low max
    [0.25, 0.25, 0.25, 0.25],  # 2 uniform: most uncertain by every score
    [0.50, 0.47, 0.02, 0.01],  # 3 small margin (0.03), higher max, low entropy
    [0.30, 0.30, 0.20, 0.20],  # 4 zero margin, high entropy
    [0.55, 0.15, 0.15, 0.15],  # 5 large margin, high entropy
])
POOL = TextDataset([f"text {i}" for i in range(6)], [0, 1, 2, 3, 0, 1], ["a", "b", "c", "d"])


class Fixed:
    """A model whose probabilities are the table above, looked up by text."""

    def predict_proba(self, texts):
        return PROBS[[int(t.split()[1]) for t in texts]]


def test_scores_rank_uncertainty():
    assert np.argmax(least_confidence(PROBS)) == 2 and np.argmin(least_confidence(PROBS)) == 0
    assert np.argmin(entropy(PROBS)) == 0 and np.argmax(entropy(PROBS)) == 2
    assert margin(PROBS)[1] > margin(PROBS)[3] > margin(PROBS)[5]


@pytest.mark.parametrize("strategy, labeled, n, expected", [
    ("least_confidence", [], 2, [2, 4]),
    ("least_confidence", [2], 2, [1, 4]),
    ("entropy", [], 3, [1, 2, 4]),
    ("margin", [], 2, [2, 4]),      # margin 0 for both; tie goes to the higher entropy (uniform first)
    ("margin", [2, 4], 1, [1]),     # then the smallest gap, 0.02
    ("margin", [2, 4, 1], 1, [3]),  # then 0.03
])
def test_strategies_pick_the_right_rows(strategy, labeled, n, expected):
    picked = STRATEGIES[strategy].query(Fixed(), POOL, labeled, n, np.random.default_rng(0))
    assert picked == expected


def test_margin_ties_break_by_entropy_then_at_random():
    probs = np.array([[0.5, 0.5, 0.0, 0.0], [0.4, 0.4, 0.1, 0.1], [0.4, 0.4, 0.1, 0.1]])

    class Tied:
        def predict_proba(self, texts):
            return probs[[int(t.split()[1]) for t in texts]]

    pool = TextDataset(["t 0", "t 1", "t 2"], [0, 1, 2], ["a", "b", "c", "d"])
    first = {STRATEGIES["margin"].query(Tied(), pool, [], 1, np.random.default_rng(s))[0] for s in range(20)}
    assert first == {1, 2}  # the higher-entropy pair first, and between those two at random


def test_random_strategy_is_seeded_and_skips_labeled():
    a = STRATEGIES["random"].query(None, POOL, [0, 1], 3, np.random.default_rng(5))
    b = STRATEGIES["random"].query(None, POOL, [0, 1], 3, np.random.default_rng(5))
    assert a == b and len(a) == 3 and not {0, 1} & set(a)


def test_area_under_curve():
    assert area_under_curve([100, 500, 1000], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert area_under_curve([0, 1], [0.0, 1.0]) == pytest.approx(0.5)
    assert area_under_curve([100], [0.7]) == 0.7


def test_active_study(tiny_models, synthetic_files, tmp_path):
    values = tiny_overrides(tiny_models["bert"], synthetic_files, **{"train.epochs": 1, "data.val_size": 12})
    cfg = ActiveConfig(run=values, strategies=["random", "margin"], checkpoints=[8, 16, 24], pool_size=60,
                       seeds=[1, 2], min_steps=5)
    messages = []
    summary = run_active(cfg, tmp_path / "al", progress=messages.append)
    rows = json.loads((tmp_path / "al" / "summary.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * 3 and {r["labels"] for r in rows} == {8, 16, 24}
    seed_runs = {r["run_dir"] for r in rows if r["labels"] == 8 and r["seed"] == 1}
    assert len(seed_runs) == 1  # both strategies start from the same seed set, trained once
    assert set(summary["curves"]) == {"random", "margin"} and summary["curves"]["margin"][24]["n"] == 2
    margin_row = next(r for r in summary["aulc"] if r["strategy"] == "margin")
    assert margin_row["vs_random"]["n"] == 2
    record = json.loads((tmp_path / "al" / "active" / "margin-1.json").read_text())
    sizes = [len(r["labeled"]) for r in record["rounds"]]
    assert sizes == [8, 16, 24] and set(record["rounds"][0]["labeled"]) < set(record["rounds"][2]["labeled"])
    assert "scoring_seconds" in record["rounds"][0]
    assert (tmp_path / "al" / "plots" / "active.png").stat().st_size > 5000
    messages.clear()
    again = run_active(cfg, tmp_path / "al", progress=messages.append)  # resumes from the records, retrains nothing
    assert again["curves"] == summary["curves"]
    assert sum("(reused)" in m for m in messages) == 12


def test_class_balanced_takes_the_most_uncertain_row_of_each_predicted_class_in_turn():
    probs = np.array([[0.51, 0.49], [0.52, 0.48], [0.53, 0.47], [0.10, 0.90], [0.30, 0.70], [0.45, 0.55]])

    class Model:
        def predict_proba(self, texts):
            return probs[[int(t.split()[1]) for t in texts]]

    pool = TextDataset([f"text {i}" for i in range(6)], [0, 0, 0, 1, 1, 1], ["a", "b"])
    rng = np.random.default_rng(0)
    assert STRATEGIES["margin"].query(Model(), pool, [], 2, rng) == [0, 1]  # both from class a
    assert STRATEGIES["class_balanced"].query(Model(), pool, [], 2, rng) == [0, 5]  # a's and b's most uncertain
    assert STRATEGIES["class_balanced"].query(Model(), pool, [0, 5], 3, rng) == [1, 2, 4]
