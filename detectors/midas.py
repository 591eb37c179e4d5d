"""MIDAS-R burst scores per item and per (item, rating), in constant memory.

Each item (and each item-rating pair) is an edge stream; its count in the current tick, decayed by `decay`
per tick as in MIDAS-R, is compared with its mean count per tick so far by a chi-squared statistic, so a
sudden burst of activity on one item scores high whatever the item's usual volume. One change from the paper:
the mean is taken over the ticks since the item was first seen (kept in a min-sketch of first ticks), not
since the stream began, so a new item is not a burst merely for being new.

Alone this is the anchor the group detectors must beat (it cannot tell a ring from a popular release), so it
speaks softly: items get `item_score` when the statistic clears the chi-squared(1) quantile at `alpha` and the
current count is at least `min_count`; users whose rating sits in a bursting (item, rating) get `user_score`,
evidence to combine with other detectors, never enough to flag alone.

Parameters: `tick_seconds`, `decay` (MIDAS-R's alpha), `alpha`, `min_count`, `item_score`, `user_score`,
`depth` and `width` of the sketches (memory: 3 x depth x width cells, whatever the traffic).

Scaling: bounded sketches, O(1) per event; partition by item and each worker's sketches see only its items,
unchanged at 10x and 100x traffic except for count-min over-estimates, which grow with each sketch's total
and are held by `width`.

Reference: Bhatia, Hooi, Yoon, Shin, Faloutsos, "MIDAS: Microcluster-Based Detector of Anomalies in Edge
Streams", AAAI 2020.

>>> import random
>>> from detectors.events import RatingEvent
>>> rng = random.Random(1)
>>> events = [RatingEvent(event_id=f"e{k}", ts=float(k * 30), user_id=f"u{rng.randrange(500)}",
...                       item_id=f"i{rng.randrange(40)}", rating=rng.randint(3, 5)) for k in range(20000)]
>>> events += [RatingEvent(event_id=f"b{k}", ts=600000.0 + k, user_id=f"new{k}", item_id="i7", rating=1)
...            for k in range(40)]
>>> detector = MidasDetector()
>>> signals = detector.observe(events[:19000], now=570000.0)
>>> signals = detector.observe(events[19000:], now=600039.0)
>>> sorted({s.id for s in signals if s.kind == "item"})
['i7']
>>> sum(s.kind == "user" and s.id.startswith("new") for s in signals)
40
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import chi2

from detectors.base import Detector, Signal
from detectors.events import Event
from detectors.sketch import DecayingCountMin, combine, interactions, stable_hash


class MidasDetector(Detector):
    name = "midas"

    def __init__(self, tick_seconds: float = 3600.0, decay: float = 0.5, alpha: float = 1e-6,
                 min_count: float = 5.0, item_score: float = 0.4, user_score: float = 0.15,
                 depth: int = 4, width: int = 1 << 16):
        self.tick_seconds = tick_seconds
        self.decay = decay
        self.alpha = alpha
        self.min_count = min_count
        self.item_score = item_score
        self.user_score = user_score
        self.depth = depth
        self.width = width
        half_life = tick_seconds * np.log(2.0) / np.log(1.0 / decay)
        self._current = DecayingCountMin(half_life, depth, width)  # a: this tick's count, decayed
        self._total = DecayingCountMin(None, depth, width)         # s: all-time count
        self._first = np.full((depth, width), np.inf)              # min-sketch of first tick
        self._threshold = float(chi2.isf(alpha, 1))
        self._announced: dict[tuple[str, str], float] = {}         # (kind, id) -> tick last announced
        self._hashes: dict[str, int] = {}

    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        users, items, ratings, ts = interactions(events)
        if not users:
            return []
        # One tick at a time: a replay's micro-batch can span many ticks, and a burst is judged in its own.
        t = np.asarray(ts)
        tick = np.floor(t / self.tick_seconds)
        if (tick == tick[0]).all():
            return self._step(users, items, ratings, t, now)
        order = np.argsort(t, kind="stable")
        signals = []
        for chunk in np.split(order, np.flatnonzero(np.diff(tick[order])) + 1):
            signals += self._step([users[k] for k in chunk], [items[k] for k in chunk],
                                  [ratings[k] for k in chunk], t[chunk], min(now, float(t[chunk].max())))
        return signals

    def _step(self, users: list[str], items: list[str], ratings: list[str], t: np.ndarray, now: float
              ) -> list[Signal]:
        item_keys = stable_hash(items, self._hashes)
        pair_keys = combine(item_keys, stable_hash(ratings, self._hashes))
        keys = np.concatenate([item_keys, pair_keys])
        times = np.concatenate([t, t])
        ticks = np.floor(times / self.tick_seconds)
        self._current.add(keys, times)
        self._total.add(keys, times)
        rows = self._current._rows(keys)
        for d in range(self.depth):
            np.minimum.at(self._first[d], rows[d], ticks)
        # Scores after the batch is counted: one micro-batch is one step of the stream.
        a = self._current.query(keys, now)
        s = self._total.query(keys, now)
        first = self._first[np.arange(self.depth)[:, None], rows].max(axis=0)  # tightest lower bound
        n = len(users)
        first[n:] = first[:n]  # an (item, rating) pair is as old as its item: a new rating can burst
        age = np.floor(now / self.tick_seconds) - first + 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(age > 1, (a - s / age) ** 2 * age ** 2 / (s * (age - 1)), 0.0)
        burst = (score >= self._threshold) & (a >= self.min_count) & (a > s / np.maximum(age, 1))
        if not burst.any():
            return []
        tick = float(np.floor(now / self.tick_seconds))
        signals = []
        for k in np.flatnonzero(burst[:n]):
            if self._announce("item", items[k], tick):
                signals.append(Signal("item", items[k], self.name, self.item_score, {
                    "key": "item", "chi2": round(float(score[k]), 1), "count": round(float(a[k]), 1),
                    "mean_per_tick": round(float(s[k] / age[k]), 3)}))
        for k in np.flatnonzero(burst[n:]):
            if self._announce("user", users[k], tick):
                signals.append(Signal("user", users[k], self.name, self.user_score, {
                    "key": "item,rating", "item": items[k], "rating": ratings[k],
                    "chi2": round(float(score[n + k]), 1), "count": round(float(a[n + k]), 1)}))
        return signals

    def _announce(self, kind: str, entity: str, tick: float) -> bool:
        # Once per entity per tick: the decision stage keeps the maximum anyway.
        key = (kind, entity)
        if self._announced.get(key) == tick:
            return False
        self._announced[key] = tick
        if len(self._announced) > 100_000:  # bounded: forget the oldest half
            for old in list(self._announced)[:50_000]:
                del self._announced[old]
        return True
