"""Recent demand per item: ratings and clicks counted with exponential decay, in bounded memory.

Decay is applied by weighting each new event by 2^(t / half_life) instead of shrinking every old count
(one multiply per event rather than one per item), rescaling all counts when the weights grow large; only
ratios between counts are meaningful. When the table outgrows `max_items`, the weaker half is forgotten.
Both the catalog and the extraction detectors read it: the first to know the best sellers, the second to
know how surprising a query's seed is for a popularity-driven client. Reference: Cormode et al. 2009,
"Forward decay: a practical time decay model for streaming systems", ICDE.

>>> demand = ItemDemand(half_life=10.0)
>>> for ts, item in [(0, "a"), (0, "a"), (10, "b"), (10, "b")]:
...     demand.add(item, ts)
>>> round(demand.get("b") / demand.get("a"), 2)
2.0
>>> demand.get("unseen")
0.0
"""

from __future__ import annotations


class ItemDemand:
    def __init__(self, half_life: float, max_items: int = 200_000):
        self.half_life = half_life
        self.max_items = max_items
        self.counts: dict[str, float] = {}
        self.events = 0
        self._origin: float | None = None
        self._weight_ts: float | None = None
        self._weight = 1.0

    def add(self, item_id: str, ts: float) -> None:
        self.add_many(((item_id, ts),))

    def add_many(self, pairs) -> None:
        """Count (item_id, ts) pairs; one loop with local names, as this runs for every rating and click."""
        counts, weight, weight_ts = self.counts, self._weight, self._weight_ts
        # The weight is recomputed only when time has moved by 1/1024 of a half-life (10 minutes for a
        # week): a 0.07% error in decay for one pow per ten minutes of stream instead of one per event.
        step = self.half_life / 1024
        n = 0
        for item_id, ts in pairs:
            if weight_ts is None or abs(ts - weight_ts) > step:
                weight_ts, weight = ts, self._weight_at(ts)
            counts[item_id] = counts.get(item_id, 0.0) + weight
            n += 1
        self._weight, self._weight_ts = weight, weight_ts
        self.events += n
        if len(counts) > 2 * self.max_items:
            keep = sorted(counts.items(), key=lambda pair: pair[1])[len(counts) // 2:]
            self.counts = dict(keep)

    def _weight_at(self, ts: float) -> float:
        if self._origin is None:
            self._origin = ts
        exponent = (ts - self._origin) / self.half_life
        if exponent > 40:  # rescale now and then so the weights never overflow (2^40 is about 1e12)
            # A jump of years is hundreds of half-lives: 2**exponent would overflow a float, so the counts
            # are scaled by its inverse, which is 0 for what is that old.
            factor = 2.0 ** -min(exponent, 1074.0)
            for key in self.counts:
                self.counts[key] *= factor
            self._origin, exponent = ts, 0.0
        # An event from long before the origin weighs next to nothing, never exactly 0 (a zero weight would
        # zero the smoothing that keeps readers' logarithms finite).
        return 2.0 ** max(exponent, -1000.0)

    def get(self, item_id: str) -> float:
        return self.counts.get(item_id, 0.0)

    def unit(self) -> float:
        """The weight of one event at the latest time seen: the scale of a count of one, now."""
        return self._weight
