"""The statistics the book's conclusions rest on: monotone trends and correlations with p-values that mean
something for a handful of checkpoints, bootstrap intervals, and the spread over seeds."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from .errors import UserError

EXACT_UP_TO = 8  # below 9 points every permutation is enumerated; the t approximation means little there


@dataclass(frozen=True)
class Trend:
    """Spearman's rho of y against x with its p-values: two-sided, and one-sided for a decrease (rho < 0) and
    for an increase (rho > 0), the tests of a directional claim such as "entropy decreases"."""
    rho: float
    p: float
    n: int
    p_down: float = float("nan")
    p_up: float = float("nan")

    def direction(self, alpha: float = 0.05) -> str:
        """'decreases' / 'increases' when the one-sided test is significant at `alpha`, else 'no significant trend'."""
        if self.n >= 3 and self.p_down < alpha:
            return "decreases"
        if self.n >= 3 and self.p_up < alpha:
            return "increases"
        return "no significant trend"

    def describe(self) -> str:
        if self.n < 3:
            return f"too few points (n = {self.n})"
        one_sided = self.p_down if self.rho < 0 else self.p_up
        return (f"{self.direction()} (Spearman ρ = {self.rho:+.2f}, one-sided p = {one_sided:.2g}, n = {self.n})")


def _ranks(values) -> np.ndarray:
    from scipy import stats
    return stats.rankdata(np.asarray(values, dtype=float))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator else 0.0


def spearman(x, y) -> Trend:
    """Spearman's rho (Pearson's r of the ranks, ties averaged) with p-values: exact, over all permutations of y,
    for n <= 8; the usual t approximation above. Pairs with a None are dropped."""
    from scipy import stats

    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
    n = len(pairs)
    if n < 3:
        return Trend(float("nan"), float("nan"), n)
    rx, ry = _ranks([a for a, _ in pairs]), _ranks([b for _, b in pairs])
    if len(set(ry)) == 1 or len(set(rx)) == 1:
        return Trend(0.0, 1.0, n, 1.0, 1.0)
    rho = _pearson(rx, ry)
    if n > EXACT_UP_TO:
        p = float(stats.spearmanr(rx, ry).pvalue)
        toward = p / 2
        return Trend(rho, p, n, toward if rho < 0 else 1 - toward, toward if rho > 0 else 1 - toward)
    centred_x = rx - rx.mean()
    perms = np.array(list(itertools.permutations(ry)))
    centred = perms - perms.mean(axis=1, keepdims=True)
    r = centred @ centred_x / np.sqrt((centred ** 2).sum(1) * (centred_x ** 2).sum())
    tol = 1e-12
    return Trend(rho, float(np.mean(np.abs(r) >= abs(rho) - tol)), n, float(np.mean(r <= rho + tol)),
                 float(np.mean(r >= rho - tol)))


def pearson(x, y) -> tuple[float, float]:
    """Pearson's r and its two-sided p-value (t distribution with n - 2 degrees of freedom)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 3:
        raise UserError(f"a correlation needs two equally long series of at least 3 points; got {len(x)} and {len(y)}.")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")  # a constant series has no correlation
    result = stats.pearsonr(x, y)
    return float(result.statistic), float(result.pvalue)


def correlation(x, y) -> dict:
    """Pearson's r and Spearman's rho with their p-values (Spearman's exact for n <= 8)."""
    r, p = pearson(x, y)
    rank = spearman(x, y)
    return {"pearson_r": r, "pearson_p": p, "spearman_r": rank.rho, "spearman_p": rank.p, "n": len(x)}


def resampled_means(samples, draws: int, seed: int):
    """Bootstrap draws of the mean over the rows (e.g. documents) of `samples` [n, ...], float64 [draws, ...]: each
    draw reweights the rows by multinomial counts, so all draws together cost one matrix product."""
    import torch

    samples = torch.as_tensor(samples, dtype=torch.float64)
    n = samples.shape[0]
    if n < 2:
        raise UserError(f"a bootstrap needs at least 2 samples; got {n}.")
    generator = torch.Generator().manual_seed(seed)
    picks = torch.multinomial(torch.full((n,), 1.0 / n, dtype=torch.float64), n * draws, replacement=True,
                              generator=generator).reshape(draws, n)
    counts = torch.zeros(draws, n, dtype=torch.float64).scatter_add_(1, picks, torch.ones_like(picks,
                                                                                              dtype=torch.float64))
    return (counts @ samples.reshape(n, -1) / n).reshape(draws, *samples.shape[1:])


def interval(values, center, level: float = 0.95, method: str = "percentile"):
    """The interval (low, high) from a statistic's bootstrap draws `values` [draws] (floats), or [draws, k] with
    `center` [k] (k intervals: two lists). "percentile": the draws' quantiles; "normal": the full-sample value
    `center` +- z x the draws' standard deviation, for a statistic whose resampled values are biased (an entropy
    of a mean: concave, so resampling lowers it and the percentile interval can miss `center`)."""
    import torch

    values = torch.as_tensor(values, dtype=torch.float64)
    if method == "normal":
        from scipy import stats as scipy_stats
        half = float(scipy_stats.norm.ppf(0.5 + level / 2)) * values.std(0)
        center = torch.as_tensor(center, dtype=torch.float64)
        return (center - half).tolist(), (center + half).tolist()
    if method != "percentile":
        raise UserError(f"the bootstrap method must be percentile or normal; got {method!r}.")
    tail = (1 - level) / 2
    return np.quantile(values.numpy(), tail, axis=0).tolist(), np.quantile(values.numpy(), 1 - tail, axis=0).tolist()


def bootstrap_interval(samples: np.ndarray, statistic, *, draws: int = 1000, level: float = 0.95,
                       seed: int = 0, method: str = "percentile") -> tuple[float, float]:
    """Bootstrap interval of statistic(mean of resampled rows) over the rows of `samples` [n, ...] (numpy in, the
    statistic called on each draw's mean row)."""
    samples = np.asarray(samples, dtype=float)
    values = [statistic(m) for m in resampled_means(samples, draws, seed).numpy()]
    return interval(values, float(statistic(samples.mean(0))), level, method)


@dataclass(frozen=True)
class Spread:
    """A quantity over seeds: mean, sample standard deviation, extremes and a t interval of the mean."""
    mean: float
    sd: float
    low: float
    high: float
    n: int
    interval: tuple[float, float]

    def describe(self, digits: int = 2) -> str:
        if self.n == 1:
            return f"{self.mean:.{digits}f} (one seed)"
        return (f"{self.mean:.{digits}f} ± {self.sd:.{digits}f} (sd over {self.n} seeds; "
                f"range {self.low:.{digits}f} … {self.high:.{digits}f})")


def spread(values, level: float = 0.95) -> Spread:
    from scipy import stats

    values = [float(v) for v in values if v is not None]
    if not values:
        raise UserError("a spread needs at least one value.")
    n, mean = len(values), float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else float("nan")
    return Spread(mean, sd, min(values), max(values), n, (mean - half, mean + half))
