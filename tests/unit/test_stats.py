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
