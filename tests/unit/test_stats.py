import numpy as np
import pytest
from scipy import stats as sps

from slmtune import stats

A = [0.891, 0.887, 0.895, 0.889, 0.893]
B = [0.901, 0.899, 0.897, 0.904, 0.900]


def test_summary_matches_scipy():
    s = stats.summarize(A)
    low, high = sps.t.interval(0.95, len(A) - 1, loc=np.mean(A), scale=sps.sem(A))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))
    assert s.std == pytest.approx(np.std(A, ddof=1)) and s.cv == pytest.approx(s.std / s.mean)
    assert s.boot_low <= s.mean <= s.boot_high and (s.min, s.max) == (min(A), max(A))


def test_paired_comparison_matches_scipy():
    c = stats.paired_comparison(A, B, names=("lora", "full"))
    assert c.t_pvalue == pytest.approx(sps.ttest_rel(A, B).pvalue)
    assert c.wilcoxon_pvalue == pytest.approx(sps.wilcoxon(A, B).pvalue)
    d = np.subtract(A, B)
    assert c.mean_difference == pytest.approx(d.mean())
    assert c.cohens_dz == pytest.approx(d.mean() / d.std(ddof=1))
    assert c.significant and c.boot_high < 0 and "lora is worse than full" in c.verdict


def test_no_difference_is_said_plainly():
    c = stats.paired_comparison(A, list(reversed(A)))
    assert not c.significant and c.verdict.startswith("no significant difference")


def test_mcnemar_exact():
    a = np.array([1] * 50 + [1] * 10 + [0] * 2 + [0] * 38, dtype=bool)
    b = np.array([1] * 50 + [0] * 10 + [1] * 2 + [0] * 38, dtype=bool)
    result = stats.mcnemar(a, b)
    assert (result["only_a_correct"], result["only_b_correct"]) == (10, 2)
    assert result["pvalue"] == pytest.approx(sps.binomtest(10, 12, 0.5).pvalue)


def test_bad_inputs():
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.paired_comparison([1.0], [2.0])


def test_power_law_fit_recovers_known_parameters():
    rng = np.random.default_rng(0)
    sizes = np.repeat([10, 50, 100, 200, 500, 1000, 2000, 5000, 10000], 3)
    errors = 2.0 * sizes ** -0.6 + 0.08 + rng.normal(0, 0.002, len(sizes))
    fit = stats.fit_power_law(sizes, errors)
    assert fit.a == pytest.approx(2.0, rel=0.15) and fit.b == pytest.approx(0.6, abs=0.05)
    assert fit.c == pytest.approx(0.08, abs=0.01) and fit.r2 > 0.99
    assert fit.b_ci[0] <= 0.6 <= fit.b_ci[1]
    pred = fit.predict(120_000)
    assert pred["low"] <= pred["accuracy"] <= pred["high"]
    assert pred["accuracy"] == pytest.approx(1 - (2.0 * 120_000 ** -0.6 + 0.08), abs=0.01)
    n_star = fit.diminishing_returns_size(0.005)
    assert fit.gain_per_doubling(n_star) == pytest.approx(0.005, rel=1e-6)
    with pytest.raises(ValueError):
        stats.fit_power_law([10, 10, 20], [0.5, 0.5, 0.4])


def test_power_law_band_stays_within_accuracy_range():
    sizes = np.array([50, 100, 200, 500, 1000, 2000, 5000])  # one noisy seed, as in a quick scaling run
    errors = np.array([0.268, 0.187, 0.199, 0.145, 0.135, 0.113, 0.100])
    pred = stats.fit_power_law(sizes, errors).predict(120_000)
    assert 0.0 <= pred["low"] <= pred["accuracy"] <= pred["high"] <= 1.0


def test_power_law_band_uses_only_curves_the_fit_allows():
    # the reference study's scaling points (2 seeds, a noisy 50-row pair): b's interval crosses 0, and
    # unbounded parameter draws gave a band down to accuracy 0 at 120k rows
    sizes = np.repeat([50, 100, 500, 1000, 2400, 5000], 2)
    accuracy = np.array([0.7303, 0.8307, 0.8101, 0.7924, 0.8542, 0.8514, 0.8671, 0.8726, 0.8897, 0.8884,
                         0.8933, 0.8947])
    fit = stats.fit_power_law(sizes, 1 - accuracy)
    assert fit.b_ci[0] < 0
    pred = fit.predict(120_000)
    assert 0.85 < pred["low"] <= pred["accuracy"] <= pred["high"] <= 1.0


def test_multiple_comparison_corrections():
    from slmtune.stats import adjust_pvalues

    adjusted = adjust_pvalues([0.01, 0.04, 0.03, float("nan")])
    assert adjusted["holm"][:3] == pytest.approx([0.03, 0.06, 0.06])  # 3 x 0.01; max(2 x 0.03, ...) step-down
    assert adjusted["bh"][:3] == pytest.approx([0.03, 0.04, 0.04])
    assert adjusted["holm"][3] != adjusted["holm"][3]  # NaN stays NaN and is not counted


@pytest.mark.parametrize("differences, last, decision", [
    ([0.02, 0.021, 0.019], False, "different"),          # far from 0, tight: decided at the first look
    ([0.0, 0.0, 0.0], False, "equivalent"),             # identical runs: within any margin
    ([0.001, -0.001, 0.0005, -0.0005], False, "equivalent"),
    ([0.01, -0.004, 0.006], False, "continue"),          # wide: neither yet
    ([0.01, -0.004, 0.006], True, "undecided"),          # ... and no seed left
])
def test_sequential_look_decides_only_when_its_repeated_interval_does(differences, last, decision):
    from slmtune.stats import sequential_look

    look = sequential_look(differences, looks=3, alpha=0.05, margin=0.005, last=last)
    assert look.decision == decision
    assert look.confidence == pytest.approx(1 - 0.05 / 3) and look.low <= look.mean_difference <= look.high


def test_the_sequential_rule_keeps_its_error_rate_under_no_difference():
    """Simulated seeds with no true difference: deciding `different` at any of the looks happens at most alpha."""
    from slmtune.stats import sequential_look

    rng = np.random.default_rng(0)
    wrong = 0
    for _ in range(2000):
        d = rng.normal(0, 0.004, size=5)
        for n in (3, 4, 5):
            look = sequential_look(d[:n], looks=3, alpha=0.05, margin=0.001, last=n == 5)
            if look.decision != "continue":
                wrong += look.decision == "different"
                break
    assert wrong / 2000 <= 0.05


def test_macro_f1_interval_holds_its_point_estimate_when_a_rare_class_drops_out_of_resamples():
    """A class with one validation row is absent from ~37% of resamples: there its F1 is undefined, not 0."""
    gold = np.array([0] * 60 + [1] * 60 + [2])  # class 2: one row, predicted right; class 3: never seen nor predicted
    predicted = gold.copy()
    predicted[:6] = 1  # a few mistakes between the common classes
    counts = stats.row_counts(gold, predicted, 4)
    weights = stats.bootstrap_weights(len(gold), 500, seed=1)
    estimate = stats.metric_interval(counts, "macro_f1", weights)
    from sklearn.metrics import f1_score

    assert estimate.value == pytest.approx(f1_score(gold, predicted, labels=[0, 1, 2, 3], average="macro"))
    assert estimate.low <= estimate.value <= estimate.high  # scored 0 when absent, low fell below 0.5
    dropped = weights[:, -1] == 0  # resamples without the rare row: the mean of classes 0, 1 and the unseen 3
    draws = stats.metric_of_counts(weights @ counts, "macro_f1", len(gold), counts.sum(axis=0))
    f1 = lambda w: f1_score(gold, predicted, labels=[0, 1], average=None, sample_weight=w)  # noqa: E731
    assert draws[dropped][0] == pytest.approx(f1(weights[dropped][0]).sum() / 3, abs=1e-6)
