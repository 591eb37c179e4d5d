"""Item-side shifts: an item's recent rating distribution departs from its own history.

Every item keeps two exponentially decayed histograms of its ratings, a short memory and a long one. When
the short one is far from what the long one predicts (a G-test, with the global rating distribution as a
weak prior so that young items have a baseline), the item's ratings are being moved: a review bomb, a push,
a nuke. A shift alone is evidence about the item, not a verdict: a film can also divide its audience.

Parameters: `short_half_life` and `long_half_life` in event-time seconds; `alpha`, the significance of
the G-test; `min_recent`, the decayed count of recent ratings below which nothing is tested; `score`, the
signal an item gets (below the flag threshold by default, so it flags only with other evidence);
`prior_strength`, pseudo-ratings of the global distribution in each baseline.

References: Sokal & Rohlf, "Biometry" (the G-test of goodness of fit); Lim et al., "Detecting product
review spammers using rating behaviors" (CIKM 2010) on rating deviation bursts; the decayed counts are
the usual exponential-forgetting sketch (Cormode et al., "Forward decay", ICDE 2009).

>>> import numpy as np
>>> from detectors.events import RatingEvent
>>> rng = np.random.default_rng(1)
>>> history = [RatingEvent(event_id=f"h{k}", ts=float(k * 3600), user_id=f"u{k}", item_id="film",
...                        rating=int(rng.choice([3, 4, 5], p=[0.3, 0.4, 0.3]))) for k in range(300)]
>>> detector = RatingShiftDetector()
>>> detector.observe(history, now=300 * 3600.0)
[]
>>> bomb = [RatingEvent(event_id=f"b{k}", ts=300 * 3600.0 + k * 30, user_id=f"b{k}", item_id="film",
...                     rating=1) for k in range(40)]
>>> [(s.id, s.evidence["recent_mean"] < s.evidence["baseline_mean"]) for s in detector.observe(bomb, now=300 * 3600.0 + 1200)]
[('film', True)]
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import chi2

from detectors._arrays import Interner, grown
from detectors.base import Detector, Signal
from detectors.events import Event, RatingEvent

_LEVELS = 5


class RatingShiftDetector(Detector):
    name = "rating_shift"

    def __init__(self, short_half_life: float = 6 * 3600.0, long_half_life: float = 30 * 86400.0,
                 alpha: float = 1e-6, min_recent: float = 10.0, score: float = 0.45,
                 prior_strength: float = 5.0, rating_scale: tuple[float, float] = (1.0, 5.0)):
        self.short_half_life = short_half_life
        self.long_half_life = long_half_life
        self.alpha = alpha
        self.min_recent = min_recent
        self.score = score
        self.prior_strength = prior_strength
        self.rating_scale = rating_scale
        self._items = Interner()
        self._short = np.zeros((0, _LEVELS))
        self._long = np.zeros((0, _LEVELS))
        self._updated = np.zeros(0)
        self._global = np.ones(_LEVELS)
        self._announced: set[int] = set()

    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        ratings = [event for event in events if type(event) is RatingEvent]
        if not ratings:
            return []
        low, high = self.rating_scale
        rows = np.fromiter((self._items.row(e.item_id) for e in ratings), dtype=np.int64, count=len(ratings))
        levels = np.fromiter((e.rating for e in ratings), dtype=np.float64, count=len(ratings))
        levels = np.clip(np.rint((levels - low) / (high - low) * (_LEVELS - 1)), 0, _LEVELS - 1).astype(np.int64)
        n = len(self._items)
        self._short, self._long = grown(self._short, n), grown(self._long, n)
        self._updated = grown(self._updated, n, now)
        touched = np.unique(rows)
        elapsed = np.maximum(now - self._updated[touched], 0.0)[:, None]
        self._short[touched] *= np.exp2(-elapsed / self.short_half_life)
        self._long[touched] *= np.exp2(-elapsed / self.long_half_life)
        self._updated[touched] = now
        # Each rating enters already decayed from its own ts to `now`: a batch may span days.
        age = np.maximum(now - np.fromiter((e.ts for e in ratings), dtype=np.float64, count=len(ratings)), 0.0)
        np.add.at(self._short, (rows, levels), np.exp2(-age / self.short_half_life))
        np.add.at(self._long, (rows, levels), np.exp2(-age / self.long_half_life))
        np.add.at(self._global, levels, 1.0)
        return self._test(touched)

    def _test(self, touched: np.ndarray) -> list[Signal]:
        recent = self._short[touched]
        mass = recent.sum(axis=1)
        touched, recent, mass = touched[mass >= self.min_recent], recent[mass >= self.min_recent], mass[mass >= self.min_recent]
        if not len(touched):
            return []
        prior = self._global / self._global.sum()
        baseline = np.maximum(self._long[touched] - recent, 0.0) + self.prior_strength * prior
        expected = mass[:, None] * baseline / baseline.sum(axis=1, keepdims=True)
        g = 2.0 * np.sum(np.where(recent > 0, recent * np.log(np.maximum(recent, 1e-12) / expected), 0.0), axis=1)
        p = chi2.sf(g, _LEVELS - 1)
        signals = []
        scale = np.linspace(*self.rating_scale, _LEVELS)
        for k in np.flatnonzero(p < self.alpha):
            row = int(touched[k])
            if row in self._announced:
                continue
            self._announced.add(row)
            signals.append(Signal("item", self._items.ids[row], self.name, self.score, {
                "reason": "rating distribution shift", "g": round(float(g[k]), 1),
                "log10_p": round(max(math.log10(max(float(p[k]), 1e-300)), -300), 1),
                "recent_ratings": round(float(mass[k]), 1),
                "recent_mean": round(float(recent[k] @ scale / mass[k]), 2),
                "baseline_mean": round(float(expected[k] @ scale / mass[k]), 2)}))
        return signals
