"""Constant-memory counting for the temporal detectors: stable 64-bit hashes of ids and a count-min sketch
whose counts decay exponentially in event time.

Count-min (Cormode and Muthukrishnan, 2005) never under-counts; with `depth` rows of `width` cells, a count is
over-estimated by more than 2N/width with probability at most 2^-depth, N being the (decayed) total. Decay is
kept as one global scale: an increment at time t is stored as w * exp((t - t0) / tau) and read back times
exp(-(now - t0) / tau), so ageing costs nothing per cell and a count equals the sum of w * exp(-(now - t) / tau).
Hashes are crc32-based, not Python's `hash`, so a snapshot restored in another process still addresses the
same cells.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> keys = stable_hash([f"item{k}" for k in rng.integers(0, 50, 5000)])
>>> sketch = DecayingCountMin(half_life=3600.0)
>>> sketch.add(keys, np.zeros(len(keys)))
>>> hot = stable_hash(["item7"])
>>> int((keys == hot[0]).sum()), int(sketch.query(hot, now=0.0)[0]), int(sketch.query(hot, now=3600.0)[0])
(86, 86, 43)
"""

from __future__ import annotations

import zlib

import numpy as np

from detectors.events import ClickEvent, RatingEvent

_MULTIPLIERS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                         0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53], dtype=np.uint64)


def _hash_one(value: str) -> int:
    data = value.encode("utf-8", "surrogatepass")
    return (zlib.crc32(data) << 32) | zlib.crc32(data, 0x5BD1E995)


def stable_hash(values: list[str], cache: dict[str, int] | None = None, cache_size: int = 200_000
                ) -> np.ndarray:
    """64-bit hashes of strings, the same in every process. A `cache` dict (bounded: cleared when full)
    saves rehashing the ids a stream repeats."""
    if cache is None:
        return np.fromiter(map(_hash_one, values), np.uint64, len(values))
    missing = set(values).difference(cache)
    if len(cache) + len(missing) > cache_size:
        cache.clear()
        missing = set(values)
    cache.update(zip(missing, map(_hash_one, missing)))
    return np.fromiter(map(cache.__getitem__, values), np.uint64, len(values))


def combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hash of a pair of hashed keys (e.g. item and rating)."""
    with np.errstate(over="ignore"):
        return (a * np.uint64(0x9E3779B97F4A7C15)) ^ (b + np.uint64(0x632BE59BD9B4E019))


class DecayingCountMin:
    """Parameters: `half_life` of a count in event-time seconds (None: no decay); `depth` hash rows;
    `width` cells per row (a power of two)."""

    def __init__(self, half_life: float | None, depth: int = 4, width: int = 1 << 16):
        self.half_life = half_life
        self.depth = depth
        self.width = width
        self.tau = half_life / np.log(2.0) if half_life else None
        self.cells = np.zeros((depth, width), np.float64)
        self.total = 0.0
        self.origin: float | None = None  # t0 of the stored scale

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        shift = np.uint64(65 - int(self.width).bit_length())  # 64 - log2(width)
        with np.errstate(over="ignore"):
            return ((keys[None, :] * _MULTIPLIERS[: self.depth, None]) >> shift).astype(np.int64)

    def _scale(self, ts: np.ndarray | float) -> np.ndarray | float:
        if self.tau is None:
            return np.ones_like(ts) if isinstance(ts, np.ndarray) else 1.0
        # Clipped: an event time centuries from the stored origin (valid input, if odd) must give a huge or
        # tiny scale, not inf or 0, which turn a query into inf/inf = NaN.
        # (np.minimum and np.maximum in place: np.clip's Python wrapper costs more than the clipping)
        scaled = (ts - self.origin) / self.tau
        if isinstance(scaled, np.ndarray):
            return np.exp(np.minimum(np.maximum(scaled, -700.0, out=scaled), 700.0, out=scaled), out=scaled)
        return np.exp(min(max(scaled, -700.0), 700.0))

    def add(self, keys: np.ndarray, ts: np.ndarray, weights: np.ndarray | None = None,
            rows: np.ndarray | None = None) -> None:
        """Add `keys` seen at times `ts`; `rows`, their cells from `_rows`, when already computed for
        another sketch of the same depth and width."""
        if len(keys) == 0:
            return
        if self.origin is None:
            self.origin = float(ts.min())
        if self.tau is not None and (float(ts.max()) - self.origin) / self.tau > 30.0:
            self._rebase(float(ts.max()))
        w = self._scale(ts) * (1.0 if weights is None else weights)
        rows = self._rows(keys) if rows is None else rows
        for d in range(self.depth):
            np.add.at(self.cells[d], rows[d], w)
        self.total += float(w.sum())

    def add_runs(self, keys: np.ndarray, ts: np.ndarray, ends: list[int]) -> None:
        """As `add(keys[a:b], ts[a:b])` for each run [a, b) that ends at `ends` in turn, bit for bit (each
        cell's additions in the same order, the total summed run by run), in one pass where no run moves
        the stored origin: a detector that adds many small runs between reads pays numpy's per-call cost
        once."""
        bounds = [(a, b) for a, b in zip([0, *ends[:-1]], ends) if b > a]  # an empty run adds nothing
        if not bounds:
            return
        if self.origin is None:
            self.origin = float(ts[bounds[0][0]:bounds[0][1]].min())
        if self.tau is not None and (float(ts.max()) - self.origin) / self.tau > 30.0:
            for a, b in bounds:  # a run would rebase: the runs one by one
                self.add(keys[a:b], ts[a:b])
            return
        w = self._scale(ts) * 1.0
        rows = self._rows(keys)
        for d in range(self.depth):
            np.add.at(self.cells[d], rows[d], w)
        total = self.total
        for a, b in bounds:
            total += float(w[a:b].sum())
        self.total = total

    def _rebase(self, origin: float) -> None:
        # Keep stored values in floating range: move t0 forward and shrink everything to match.
        factor = np.exp(-(origin - self.origin) / self.tau)
        self.cells *= factor
        self.total *= factor
        self.origin = origin

    def query(self, keys: np.ndarray, now: float) -> np.ndarray:
        if self.origin is None or len(keys) == 0:
            return np.zeros(len(keys))
        rows = self._rows(keys)
        stored = self.cells[np.arange(self.depth)[:, None], rows].min(axis=0)
        return stored / self._scale(now)

    def count(self, now: float) -> float:
        """The decayed total of everything added."""
        return 0.0 if self.origin is None else self.total / self._scale(now)


def interactions(events) -> tuple[list[str], list[str], list[str], list[float]]:
    """Users, items, opinions (the rounded rating, or "click") and timestamps of the ratings and clicks
    among `events`: the edge stream that the burst and coordination detectors share."""
    users, items, opinions, ts = [], [], [], []
    for event in events:
        kind = type(event)
        if kind is RatingEvent:
            opinions.append(str(int(event.rating + 0.5)))
        elif kind is ClickEvent:
            opinions.append("click")
        else:
            continue
        users.append(event.user_id)
        items.append(event.item_id)
        ts.append(event.ts)
    return users, items, opinions, ts
