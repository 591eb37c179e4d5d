"""Robust location and scale, and the ramp that turns a z-score into evidence in [0, 1].

Detectors compare an entity with the living population (of clients, sellers, catalogue items) by a robust
z-score: the median and the median absolute deviation (scaled by 1.4826 to match a normal's sigma) are not
moved by the handful of attackers the score is meant to find, unlike a mean and a standard deviation. A
floor on the scale keeps a population that happens to agree exactly (every client asks for k = 10) from
turning tiny differences into huge z-scores. Reference: Rousseeuw & Croux 1993, "Alternatives to the median
absolute deviation", JASA.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> centre, scale = location_scale(np.r_[rng.normal(5.0, 2.0, 500), [1e6] * 5], floor=0.1)
>>> round(centre, 1), round(scale, 1)
(4.9, 2.1)
>>> centre, scale = upper_tail_scale(np.r_[rng.exponential(0.01, 900), rng.exponential(0.2, 100)], 0.02)
>>> round(float(centre), 3), round(float(scale), 3)
(0.008, 0.025)
>>> ramp(3.0, 2.0, 4.0), ramp(9.0, 2.0, 4.0), ramp(-1.0, 2.0, 4.0)
(0.5, 1.0, 0.0)
>>> round(betabinom_tail(49, 49, 3.67, 6.5), 9)  # 49 of 49 at one end where the history says 36%
6.16e-07
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, gammaln

MAD_TO_SIGMA = 1.4826


def location_scale(values: np.ndarray, floor: float) -> tuple[float, float]:
    """Median and max(1.4826 * MAD, floor) of `values` (non-empty)."""
    values = np.asarray(values, dtype=np.float64)
    centre = float(np.median(values))
    return centre, max(MAD_TO_SIGMA * float(np.median(np.abs(values - centre))), floor)


def upper_tail_scale(values: np.ndarray, floor: float, axis: int | None = None):
    """Median and the spread of the upper tail, (q90 - q50) / 1.2816 (a normal's sigma from its 90th
    percentile), floored: for one-sided evidence from a heavy-tailed mixture (most catalogue edits touch
    a tag, some rewrite a title), where the MAD measures only the crowd of tiny changes."""
    median, q90 = np.percentile(np.asarray(values, dtype=np.float64), [50, 90], axis=axis)
    return median, np.maximum((q90 - median) / 1.2816, floor)


def ramp(x: float, low: float, high: float) -> float:
    """0 below `low`, 1 above `high`, linear between: a z-score as a degree of evidence."""
    return float(min(1.0, max(0.0, (x - low) / (high - low))))


def betabinom_tail(k: int, n: int, a: float, b: float) -> float:
    """P(X >= k) for X ~ BetaBinomial(n, a, b): how often a crowd of n raters of an item whose share at
    one end of the scale is only known as Beta(a, b) puts k or more there. Summed from the log pmf:
    scipy.stats' generic sf costs a few hundred microseconds a call in argument handling."""
    if k <= 0:
        return 1.0
    j = np.arange(k, n + 1)
    log_pmf = (gammaln(n + 1) - gammaln(j + 1) - gammaln(n - j + 1) + betaln(j + a, n - j + b) - betaln(a, b))
    return float(min(1.0, np.exp(log_pmf).sum()))
