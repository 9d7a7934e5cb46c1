"""Honest statistics for small samples of runs: summaries with CIs, paired tests, McNemar, curve fits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats as sps


@dataclass
class Summary:
    n: int
    mean: float
    std: float
    min: float
    max: float
    ci_low: float
    """95% t interval of the mean (Student's t with n-1 degrees of freedom)."""
    ci_high: float
    boot_low: float
    """95% percentile bootstrap interval of the mean."""
    boot_high: float
    cv: float
    """Coefficient of variation: std / mean."""

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float(x.mean())
    half = sps.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (e.g. one run's test accuracy over its n rows)."""
    from scipy.stats import binomtest

    interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def bootstrap_interval(values, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0,
                       statistic=np.mean) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    if len(x) < 2 or np.all(x == x[0]):
        return float(statistic(x)), float(statistic(x))
    result = sps.bootstrap((x,), statistic, confidence_level=confidence, n_resamples=resamples,
                           method="percentile", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarize(values, confidence: float = 0.95) -> Summary:
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("no values to summarize")
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    low, high = t_interval(x, confidence)
    blow, bhigh = bootstrap_interval(x, confidence)
    mean = float(x.mean())
    return Summary(len(x), mean, std, float(x.min()), float(x.max()), low, high, blow, bhigh,
                   std / mean if mean else float("nan"))


@dataclass
class PairedComparison:
    n: int
    mean_difference: float
    """mean(a - b)."""
    t_statistic: float
    t_pvalue: float
    wilcoxon_pvalue: float
    boot_low: float
    """95% bootstrap interval of the mean difference."""
    boot_high: float
    cohens_dz: float
    """Effect size of paired differences: mean(d) / std(d)."""
    significant: bool
    """Both the paired t-test and the bootstrap interval agree at alpha."""
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def paired_comparison(a, b, alpha: float = 0.05, names: tuple[str, str] = ("a", "b")) -> PairedComparison:
    """Paired tests of a - b over matched runs (same seeds)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError("paired comparison needs two equal-length samples of at least 2")
    d = a - b
    if np.allclose(d, d[0]):
        t_stat, t_p = (float("inf") if d[0] else 0.0), (0.0 if d[0] else 1.0)
    else:
        t_stat, t_p = (float(v) for v in sps.ttest_rel(a, b))
    try:
        w_p = float(sps.wilcoxon(a, b).pvalue) if np.any(d != 0) else 1.0
    except ValueError:
        w_p = float("nan")
    low, high = bootstrap_interval(d)
    sd = d.std(ddof=1)
    dz = float(d.mean() / sd) if sd > 0 else float("inf") * np.sign(d.mean()) if d.mean() else 0.0
    significant = bool(t_p < alpha and (low > 0 or high < 0))
    first, second = names
    if significant:
        verdict = (f"{first} is {'better' if d.mean() > 0 else 'worse'} than {second} by {abs(d.mean()):.4f} "
                   f"(paired t p={t_p:.3g}, 95% bootstrap CI [{low:+.4f}, {high:+.4f}]): significant at {alpha}")
    else:
        verdict = (f"no significant difference between {first} and {second}: mean difference {d.mean():+.4f}, "
                   f"paired t p={t_p:.3g}, 95% bootstrap CI [{low:+.4f}, {high:+.4f}] (n={len(d)})")
    return PairedComparison(len(d), float(d.mean()), t_stat, t_p, w_p, low, high, dz, significant, verdict)


def adjust_pvalues(pvalues) -> dict[str, list[float]]:
    """Several tests at once: Holm's step-down adjustment (family-wise error) and Benjamini-Hochberg's
    (false discovery rate, scipy's `false_discovery_control`). NaNs stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=float)
    holm, bh = np.full(p.shape, np.nan), np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q = p[ok]
        order = np.argsort(q)
        stepped = np.maximum.accumulate((len(q) - np.arange(len(q))) * q[order])
        adjusted = np.empty_like(q)
        adjusted[order] = np.minimum(stepped, 1.0)
        holm[ok] = adjusted
        bh[ok] = sps.false_discovery_control(q, method="bh")
    return {"holm": holm.tolist(), "bh": bh.tolist()}


def mcnemar(correct_a, correct_b) -> dict[str, float]:
    """McNemar's exact test on paired per-example correctness (e.g. pooled test predictions)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    pvalue = float(sps.binomtest(only_a, n, 0.5).pvalue) if n else 1.0
    return {"only_a_correct": only_a, "only_b_correct": only_b, "pvalue": pvalue}


@dataclass
class PowerLawFit:
    """error(n) = a * n**(-b) + c, fitted to (training size, error) points."""

    a: float
    b: float
    c: float
    a_ci: tuple[float, float]
    b_ci: tuple[float, float]
    c_ci: tuple[float, float]
    r2: float
    covariance: list[list[float]]
    boot: list[list[float]] = field(default_factory=list, repr=False)
    """(a, b, c) refitted on residual-bootstrap resamples: the prediction band's source when present."""

    def error(self, n) -> np.ndarray:
        return self.a * np.power(np.asarray(n, dtype=float), -self.b) + self.c

    def predict(self, n, samples: int = 4000, seed: int = 0) -> dict[str, float]:
        """Predicted accuracy at size `n` with a 95% band: percentiles over the bootstrap refits, else over
        draws from the parameters' normal approximation."""
        if self.boot:
            draws = np.asarray(self.boot)
        else:
            draws = np.random.default_rng(seed).multivariate_normal([self.a, self.b, self.c], self.covariance,
                                                                    size=samples)
        errors = draws[:, 0] * np.power(float(n), -draws[:, 1]) + draws[:, 2]
        accuracy = np.clip(1 - errors, 0.0, 1.0)  # parameter draws can imply error < 0; accuracy stays in [0, 1]
        return {"n": int(n), "accuracy": float(1 - self.error(n)), "low": float(np.percentile(accuracy, 2.5)),
                "high": float(np.percentile(accuracy, 97.5))}

    def gain_per_doubling(self, n) -> float:
        """Accuracy gained by doubling the data from n."""
        return float(self.error(n) - self.error(2 * np.asarray(n, dtype=float)))

    def diminishing_returns_size(self, threshold: float = 0.005) -> float:
        """Smallest n at which one more doubling gains less than `threshold` accuracy."""
        if self.b <= 0 or self.a <= 0:
            return float("nan")
        # a * n^-b * (1 - 2^-b) = threshold
        return float((self.a * (1 - 2 ** -self.b) / threshold) ** (1 / self.b))

    def to_dict(self) -> dict:
        values = asdict(self)
        values.pop("boot")
        return values


def fit_power_law(sizes, errors, bootstrap: int = 400, seed: int = 0) -> PowerLawFit:
    """Least-squares fit of error = a * n^-b + c with 95% t intervals on a, b, c, and `bootstrap` refits on
    resampled residuals for prediction bands (the normal approximation is poor when b is uncertain: its
    draws include b < 0, error growing with data)."""
    from scipy.optimize import curve_fit

    n, e = np.asarray(sizes, dtype=float), np.asarray(errors, dtype=float)
    if len(np.unique(n)) < 3:
        raise ValueError("a power-law fit needs at least 3 distinct sizes")

    def model(x, a, b, c):
        return a * np.power(x, -b) + c

    start = (max(e[np.argmin(n)] - e.min(), 1e-3) * n.min() ** 0.5, 0.5, max(e.min() * 0.8, 0.0))
    params, cov = curve_fit(model, n, e, p0=start, bounds=([0, 0, 0], [np.inf, 3, 1]), maxfev=20000)
    residuals = e - model(n, *params)
    r2 = 1 - float(np.sum(residuals**2)) / float(np.sum((e - e.mean()) ** 2)) if np.ptp(e) > 0 else 1.0
    dof = max(1, len(n) - 3)
    half = sps.t.ppf(0.975, dof) * np.sqrt(np.clip(np.diag(cov), 0, None))
    cis = [(float(p - h), float(p + h)) for p, h in zip(params, half)]
    fitted, rng, boot = model(n, *params), np.random.default_rng(seed), []
    for _ in range(bootstrap):
        try:
            again, _ = curve_fit(model, n, fitted + rng.choice(residuals, len(n)), p0=params,
                                 bounds=([0, 0, 0], [np.inf, 3, 1]), maxfev=5000)
        except RuntimeError:  # a resample the optimiser cannot fit: left out
            continue
        boot.append([float(v) for v in again])
    return PowerLawFit(float(params[0]), float(params[1]), float(params[2]), cis[0], cis[1], cis[2], r2,
                       np.nan_to_num(cov).tolist(), boot)


# ------------------------------------------------------------------------------------ paired bootstrap of metrics
# A metric of classification decisions (accuracy, macro-F1, micro-F1) is a function of counts summed over rows:
# each row contributes its true positives, false positives and false negatives per class. A bootstrap resample
# weighs the rows, so every resample's counts are one matrix product, and two models compared on the same
# resamples give a paired test of any of these metrics.

BOOTSTRAP_METRICS = ("accuracy", "macro_f1", "micro_f1")


def row_counts(gold: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Per row: [correct, tp per class, fp per class, fn per class]. Single-label rows are class indices;
    multi-label rows are multi-hot (n_rows, n_classes) arrays, `correct` meaning the whole set is right."""
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    if gold.ndim == 1:
        gold = np.eye(n_classes, dtype=np.int8)[gold]
        predicted = np.eye(n_classes, dtype=np.int8)[predicted]
    gold, predicted = gold.astype(bool), predicted.astype(bool)
    correct = (gold == predicted).all(axis=1)
    return np.hstack([correct[:, None], gold & predicted, ~gold & predicted, gold & ~predicted]).astype(np.float32)


def metric_of_counts(sums: np.ndarray, metric: str, rows: np.ndarray | float,
                     full: np.ndarray | None = None) -> np.ndarray:
    """The metric from summed row_counts (one resample per row of `sums`); `rows` is each resample's row count.
    Macro-F1 averages every class (a class never seen nor predicted scores 0), as the run's own report does. With
    `full` (the summed counts of every row), a class that has gold rows there but none and no prediction in a
    resample is left out of that resample's average: its F1 is undefined there, and scoring it 0 pulled a
    bootstrap interval below its point estimate where rare classes drop out of resamples."""
    n_classes = (sums.shape[1] - 1) // 3
    tp, fp, fn = (sums[:, 1 + i * n_classes: 1 + (i + 1) * n_classes] for i in range(3))
    if metric == "accuracy":
        return sums[:, 0] / rows
    if metric == "micro_f1":
        tp, fp, fn = tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1)
        denominator = 2 * tp + fp + fn
        return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    if metric == "macro_f1":
        denominator = 2 * tp + fp + fn
        f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
        if full is None:
            return f1.mean(axis=1)
        full = np.asarray(full).reshape(-1)
        gold = full[1: 1 + n_classes] + full[1 + 2 * n_classes: 1 + 3 * n_classes]
        counted = (denominator > 0) | (gold == 0)[None, :]
        return (f1 * counted).sum(axis=1) / np.maximum(counted.sum(axis=1), 1)
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(BOOTSTRAP_METRICS)}")


def bootstrap_weights(rows: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(resamples, rows) multiplicities of rows drawn with replacement; the same weights pair two models."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, rows, rows), minlength=rows)
                     for _ in range(resamples)]).astype(np.float32)


@dataclass
class MetricEstimate:
    value: float
    low: float
    high: float
    """The value on every row and its percentile bootstrap interval."""


def metric_interval(counts: np.ndarray, metric: str, weights: np.ndarray, confidence: float = 0.95) -> MetricEstimate:
    """The metric of row_counts and its percentile bootstrap interval over `weights`."""
    full = counts.sum(axis=0, keepdims=True)
    value = float(metric_of_counts(full, metric, len(counts))[0])
    draws = metric_of_counts(weights @ counts, metric, len(counts), full)
    tail = (1 - confidence) / 2 * 100
    return MetricEstimate(value, float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail)))


def paired_test(counts_a: np.ndarray, counts_b: np.ndarray, metric: str, weights: np.ndarray,
                confidence: float = 0.95, permutations: int = 2000, seed: int = 0) -> dict[str, float]:
    """a minus b on the same rows: the difference with its paired bootstrap interval (over `weights`), and the
    one-sided p-value that a is not ahead of b from a paired permutation test (approximate randomization: each
    row's two predictions swapped at random, which is exact-like where few rows differ, unlike the bootstrap)."""
    def metric_of(sums: np.ndarray) -> np.ndarray:  # the gold rows are the same for a and b
        return metric_of_counts(sums, metric, len(counts_a), full=counts_a.sum(axis=0))

    diff = metric_of(weights @ counts_a) - metric_of(weights @ counts_b)
    sum_a, sum_b = counts_a.sum(axis=0, keepdims=True), counts_b.sum(axis=0, keepdims=True)
    observed = float(metric_of(sum_a)[0] - metric_of(sum_b)[0])
    differ = np.flatnonzero(np.any(counts_a != counts_b, axis=1))  # rows where a swap changes anything
    if len(differ) == 0:
        pvalue = 1.0
    else:
        delta = counts_b[differ] - counts_a[differ]
        swaps = np.random.default_rng(seed).integers(0, 2, (permutations, len(differ))).astype(np.float32)
        moved = swaps @ delta
        permuted = metric_of(sum_a + moved) - metric_of(sum_b - moved)
        pvalue = float((np.sum(permuted >= observed - 1e-12) + 1) / (permutations + 1))
    tail = (1 - confidence) / 2 * 100
    return {"difference": observed, "low": float(np.percentile(diff, tail)),
            "high": float(np.percentile(diff, 100 - tail)), "pvalue": pvalue}


@dataclass
class SequentialLook:
    """One look of a sequential comparison: the repeated confidence interval of the mean paired difference and
    what it decides."""

    n: int
    """Pairs (seeds) so far."""
    mean_difference: float
    low: float
    high: float
    confidence: float
    """Level of this look's interval: 1 - alpha / looks (Bonferroni over the planned looks)."""
    decision: str
    """different (the interval excludes 0), equivalent (it lies within +-margin), continue, or undecided
    (the last look, neither)."""

    def to_dict(self) -> dict:
        return asdict(self)


SEQUENTIAL_RULE = ("repeated confidence intervals (Jennison and Turnbull, JRSS B 1989) with a Bonferroni split of "
                   "alpha over the planned looks: every look's paired t interval has level 1 - alpha/looks, so all "
                   "of them hold at once with probability >= 1 - alpha, and a decision at any look keeps that error "
                   "rate; stop when the interval excludes 0 (different) or lies within +-margin (equivalent)")


def sequential_look(differences, looks: int, alpha: float = 0.05, margin: float = 0.005,
                    last: bool = False) -> SequentialLook:
    """Decide a paired comparison from the differences so far, at one of `looks` planned looks."""
    d = np.asarray(differences, dtype=float)
    confidence = 1 - alpha / max(1, looks)
    mean = float(d.mean())
    if len(d) < 2:
        low, high = -np.inf, np.inf
    elif np.allclose(d, d[0]):
        low = high = mean
    else:
        low, high = t_interval(d, confidence)
    if low > 0 or high < 0:
        decision = "different"
    elif -margin < low and high < margin:
        decision = "equivalent"
    else:
        decision = "undecided" if last else "continue"
    return SequentialLook(len(d), mean, float(low), float(high), confidence, decision)
