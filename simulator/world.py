"""The simulation's shared state: the base, opaque ids, event tables, labels and attack records.

Generators (benign and malicious) append rows that hold dense indices and a label (-1 benign, else the
attack's index); `build` turns them into JSON events at the end. Base statistics are what an attacker is
assumed to know in the shilling literature (item means and deviations, popularity; Lam & Riedl 2004).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator.base import Base
from simulator.ids import IdMinter
from simulator.ranges import Ranges

DAY = 86_400
WEEK = 7 * DAY
SPREAD_SECONDS = {"burst": 3_600, "hours": 8 * 3_600, "days": 10 * DAY}
BENIGN = -1
UNSESSIONED = -2  # a click whose session is assigned with its user's ratings (benign.clicks_from_ratings)


@dataclass
class AttackSpec:
    """What to plant. `size` and `filler` are shares (< 1) or counts (>= 1): of base users for
    `size`, of items for `filler`. `target_pool` "auto" means unpopular items for push, popular for nuke."""

    family: str
    intent: str | None = None
    size: float = 0.05
    filler: float = 0.05
    targets: int = 1
    spread: str = "burst"
    target_pool: str = "auto"
    target_items: tuple[int, ...] = ()  # explicit base item indices, overriding the pool
    # Exactly this many accounts (the contaminated population sets it); families that draw their own
    # sizes from simulator.ranges split it among their groups.
    accounts: int | None = None
    spread_seconds: int | None = None  # an attack window of this width, in place of `spread`

    @staticmethod
    def count(value: float, total: int) -> int:
        return max(1, int(value) if value >= 1 else int(round(value * total)))


@dataclass
class Attack:
    """One planted attack: the record behind its entry in truth.json (indices until `build` maps them)."""

    index: int
    family: str
    intent: str | None
    kind: str  # the kind of its malicious entities: user, seller or client
    params: dict[str, Any]
    entities: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    window: tuple[int, int] = (0, 0)
    details: dict[str, Any] = field(default_factory=dict)


class Table:
    """Columns gathered in chunks and concatenated on read."""

    def __init__(self, **defaults: Any):
        self.defaults = defaults
        self._chunks: dict[str, list[np.ndarray]] = {name: [] for name in defaults}
        self._cache: dict[str, np.ndarray] = {}

    def add(self, **columns: Any) -> None:
        n = next(len(value) for value in columns.values() if np.ndim(value))
        for name, default in self.defaults.items():
            value = columns.get(name, default)
            if np.ndim(value):
                array = np.asarray(value)
            else:  # a scalar fills the column; None makes an object column (optional text)
                array = np.full(n, value, dtype=object if value is None else None)
            if len(array) != n:
                raise ValueError(f"column {name} has {len(array)} rows, expected {n}")
            self._chunks[name].append(array)
        self._cache.clear()

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            chunks = self._chunks[name]
            self._cache[name] = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        return self._cache[name]

    def __len__(self) -> int:
        return sum(len(chunk) for chunk in next(iter(self._chunks.values())))

    def assign(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Overwrite some rows of one column (the column becomes one chunk)."""
        column = self[name].copy()
        column[rows] = values
        self._chunks[name] = [column]
        self._cache.clear()


class World:
    def __init__(self, base: Base, seed: int = 0, ranges: str = "full"):
        self.base, self.seed = base, seed
        self.ranges = Ranges(ranges)
        self.ids = IdMinter(self.rng("ids"))
        self.user_ids = self.ids.mint("user", base.n_users)
        self.item_ids = self.ids.mint("item", base.n_items)
        self.seller_ids: list[str] = []
        self.client_ids: list[str] = []
        self.n_base_users = len(np.unique(base.user))
        self.t0, self.t1 = int(base.ts.min()), int(base.ts.max())

        counts = np.bincount(base.item, minlength=base.n_items)
        sums = np.bincount(base.item, base.rating.astype(float), minlength=base.n_items)
        squares = np.bincount(base.item, base.rating.astype(float) ** 2, minlength=base.n_items)
        self.global_mean, self.global_sd = float(base.rating.mean()), float(base.rating.std())
        self.item_count = counts
        self.item_mean = np.where(counts > 0, sums / np.maximum(counts, 1), self.global_mean)
        variance = squares / np.maximum(counts, 1) - self.item_mean ** 2
        self.item_sd = np.where(counts > 1, np.sqrt(np.maximum(variance, 0.0)), self.global_sd)
        # Each item's rating histogram (1..5 stars): a benign crowd rates with the item's own opinion.
        self.item_hist = np.zeros((base.n_items, 5))
        np.add.at(self.item_hist, (base.item, base.rating.astype(int) - 1), 1.0)

        # Catalogue: the current listing of every item (base items first, new items appended).
        self.listing: list[dict[str, Any] | None] = [None] * base.n_items
        self.listed_ts = np.full(base.n_items, self.t0, dtype=np.int64)

        self.ratings = Table(user=0, item=0, rating=0, ts=0, label=BENIGN, text=None)
        self.clicks = Table(user=0, item=0, ts=0, session=-1, label=BENIGN)
        self.docs: list[tuple[int, int, dict[str, Any]]] = []  # (ts, label, catalog edit or rec query)
        self.n_sessions = 0
        self.attacks: list[Attack] = []
        self.used_targets: set[int] = set()
        # Benign populations worth scoring apart (trending crowds, premieres, sign-up waves, casual raters):
        # their events stay labelled benign; truth.json lists them so an evaluation can count them.
        self.benign_groups: list[dict[str, Any]] = []
        self.review_site = False  # --sparse: ratings only, no clicks, queries or catalog
        self.heavy_clients: dict[int, str] = {}  # benign heavy API clients: index -> kind (batch, widget...)

    # Randomness: one independent, reproducible stream per named component.
    def rng(self, *key: str | int) -> np.random.Generator:
        parts = [part if isinstance(part, int) else zlib.crc32(part.encode()) for part in key]
        return np.random.default_rng([self.seed, *parts])

    # New entities get ids from the same minter as real ones.
    def add_doc(self, ts: int, label: int, kind: str, **fields: Any) -> None:
        """A catalog edit or rec query, built whole now; its event id is minted after sorting."""
        body = {name: value for name, value in fields.items() if value is not None}
        self.docs.append((int(ts), label, {"type": kind, "event_id": None, "ts": int(ts), **body}))

    def new_users(self, n: int) -> np.ndarray:
        start = len(self.user_ids)
        self.user_ids += self.ids.mint("user", n)
        return np.arange(start, start + n)

    def new_items(self, n: int, listed_ts: np.ndarray | int) -> np.ndarray:
        start = len(self.item_ids)
        self.item_ids += self.ids.mint("item", n)
        self.listing += [None] * n
        self.listed_ts = np.r_[self.listed_ts, np.broadcast_to(listed_ts, n).astype(np.int64)]
        return np.arange(start, start + n)

    def new_sellers(self, n: int) -> np.ndarray:
        start = len(self.seller_ids)
        self.seller_ids += self.ids.mint("seller", n)
        return np.arange(start, start + n)

    def new_clients(self, n: int) -> np.ndarray:
        start = len(self.client_ids)
        self.client_ids += self.ids.mint("client", n)
        return np.arange(start, start + n)

    def new_sessions(self, n: int) -> np.ndarray:
        self.n_sessions += n
        return np.arange(self.n_sessions - n, self.n_sessions)

    def attack(self, spec: AttackSpec, kind: str, intent: str | None, drawn: bool = False,
               **params: Any) -> Attack:
        """A new attack record. `drawn`: the family draws its parameters from simulator.ranges, and the
        spec's size, filler and spread (which it ignores) are left out of the record."""
        common = {"size": spec.size, "filler": spec.filler, "targets": spec.targets, "spread": spec.spread,
                  "target_pool": spec.target_pool}
        if drawn:
            common = {}
        if spec.accounts is not None:
            common["accounts"] = spec.accounts
        if spec.spread_seconds is not None:
            common["spread_seconds"] = spec.spread_seconds
        record = Attack(len(self.attacks), spec.family, intent, kind, {**common, **params})
        self.attacks.append(record)
        return record

    def draw(self, rng: np.random.Generator, name: str, size: int | None = None):
        """A parameter from simulator.ranges, in this stream's half (full, tune or report)."""
        return self.ranges.draw(rng, name, size)

    def opinion(self, items: np.ndarray, rng: np.random.Generator, drift: float = 0.0) -> np.ndarray:
        """Ratings drawn from each item's own histogram (add-half smoothed), tilted by `drift` log-odds per
        star (0: the item's usual opinion). Items with no history get the global histogram."""
        items = np.asarray(items, dtype=int)
        known = items < len(self.item_hist)
        hist = np.where(known[:, None], self.item_hist[np.minimum(items, len(self.item_hist) - 1)],
                        self.item_hist.sum(axis=0)) + 0.5
        hist = hist * np.exp(drift * np.arange(5))
        cdf = np.cumsum(hist, axis=1)
        draws = rng.random(len(items)) * cdf[:, -1]
        return (1 + (cdf < draws[:, None]).sum(axis=1)).astype(np.int8)

    def popularity(self, exponent: float = 1.0) -> np.ndarray:
        """Choice probabilities over base items, ~ count^exponent (unrated items never)."""
        weights = self.item_count.astype(float) ** exponent
        return weights / weights.sum()

    def pick_targets(self, spec: AttackSpec, intent: str | None, n: int,
                     rng: np.random.Generator) -> list[int]:
        """Distinct across attacks, so each target's flag is attributable to one attack."""
        if spec.target_items:
            chosen = [int(i) for i in spec.target_items]
        else:
            pool = spec.target_pool
            if pool == "auto":
                pool = "popular" if intent == "nuke" else "unpopular"
            counts = self.item_count
            rated = counts[counts > 0]
            if pool == "popular":
                candidates = np.flatnonzero(counts >= np.quantile(rated, 0.95))
            elif pool == "unpopular":
                candidates = np.flatnonzero((counts >= 2) & (counts <= np.median(rated)))
            elif pool == "any":
                candidates = np.flatnonzero(counts > 0)
            else:
                raise ValueError(f"unknown target pool {pool!r}: auto, unpopular, popular or any")
            candidates = np.array([i for i in candidates if i not in self.used_targets], dtype=int)
            if len(candidates) < n:  # a crowded run: fall back to any rated item not yet used
                candidates = np.array([i for i in np.flatnonzero(counts > 0) if i not in self.used_targets])
            chosen = rng.choice(candidates, min(n, len(candidates)), replace=False).tolist()
        self.used_targets.update(chosen)
        return chosen

    def window(self, spread: str | int, rng: np.random.Generator) -> tuple[int, int]:
        """When an attack runs: inside the real stream, after a warm-up third of it. `spread` is a name
        (burst, hours, days) or a width in seconds."""
        if not isinstance(spread, (int, np.integer)) and spread not in SPREAD_SECONDS:
            raise ValueError(f"unknown spread {spread!r}: one of {sorted(SPREAD_SECONDS)}")
        span = self.t1 - self.t0
        width = min(int(spread) if isinstance(spread, (int, np.integer)) else SPREAD_SECONDS[spread],
                    span // 2)
        start = int(rng.integers(self.t0 + span // 3, max(self.t1 - width, self.t0 + span // 3 + 1)))
        return start, start + width


def profile_times(rng: np.random.Generator, starts: np.ndarray, sizes: np.ndarray,
                  latest: int | None = None) -> np.ndarray:
    """Timestamps for profiles entered in one sitting, with real users' rhythm: about half the gaps are
    0 s (a page of ratings submitted together), the rest about 45 s. Integer seconds. A profile that
    would run past `latest` is moved earlier as a whole, so nothing lands outside the real stream.

    >>> profile_times(np.random.default_rng(0), np.array([100, 500]), np.array([3, 2])).tolist()
    [100, 100, 100, 500, 772]
    """
    sizes = np.asarray(sizes, dtype=int)
    n = int(sizes.sum())
    if n == 0:  # no profile to time (every account of a batch without ratings)
        return np.zeros(0, dtype=np.int64)
    gaps = np.where(rng.random(n) < 0.5, 0.0, rng.exponential(45.0, n))
    first = np.r_[0, np.cumsum(sizes)[:-1]].astype(int)
    offsets = np.floor(np.cumsum(gaps)).astype(np.int64)
    offsets -= np.repeat(offsets[first], sizes)
    starts = np.asarray(starts, dtype=np.int64)
    if latest is not None:
        last = np.maximum.reduceat(offsets, first) if n else offsets
        starts = np.minimum(starts, latest - last)
    return np.repeat(starts, sizes) + offsets


def spread_times(rng: np.random.Generator, starts: np.ndarray, ends: np.ndarray, sizes: np.ndarray,
                 sitting_rate: float = 0.35) -> np.ndarray:
    """Timestamps for profiles that grow over weeks: each account's `size` ratings fall into a few
    sittings (1 + Binomial(size - 1, `sitting_rate`)), the first at `start` (the account's first visit),
    the others at random times up to `end`, each sitting at a real user's rhythm (`profile_times`). Rows
    come account by account, sittings in time order; integer seconds.

    >>> ts = spread_times(np.random.default_rng(0), np.array([0, 1_000_000]), np.array([86_400 * 20,
    ...                   1_000_000 + 86_400]), np.array([6, 2]))
    >>> len(ts), int(ts[:6].max()) < 86_400 * 20, int(ts[6]) >= 1_000_000
    (8, True, True)
    >>> len(spread_times(np.random.default_rng(0), np.array([0, 5]), np.array([9, 9]), np.array([0, 0])))
    0
    """
    sizes = np.asarray(sizes, dtype=int)
    n_sittings = np.where(sizes > 0, 1 + rng.binomial(np.maximum(sizes - 1, 0), sitting_rate), 0)
    owner = np.repeat(np.arange(len(sizes)), n_sittings)
    begin = np.asarray(starts, dtype=np.int64)[owner]
    finish = np.maximum(np.asarray(ends, dtype=np.int64)[owner], begin + 1)
    sitting_start = rng.integers(begin, finish)
    # Ratings per sitting: each sitting at least one, the rest spread at random among the account's.
    per_sitting = np.ones(len(owner), dtype=int)
    first = np.r_[0, np.cumsum(n_sittings)[:-1]]
    for account in np.flatnonzero(sizes > n_sittings):
        rows = slice(first[account], first[account] + n_sittings[account])
        per_sitting[rows] += rng.multinomial(sizes[account] - n_sittings[account],
                                             np.full(n_sittings[account], 1.0 / n_sittings[account]))
    order = np.lexsort((sitting_start, owner))  # an account's sittings in time order
    sitting_start, per_sitting = sitting_start[order], per_sitting[order]
    sitting_start[first[sizes > 0]] = np.asarray(starts, dtype=np.int64)[sizes > 0]
    return profile_times(rng, sitting_start, per_sitting, latest=int(np.max(ends)) if len(sizes) else None)


def distinct_items(rng: np.random.Generator, weights: np.ndarray, sizes: np.ndarray,
                   exclude: np.ndarray | None = None) -> np.ndarray:
    """For each account, `sizes[a]` distinct items drawn with probability ~ `weights` without replacement
    (Gumbel top-k), concatenated account by account; `exclude[a]` (an item, or -1) is never drawn for a.

    >>> picks = distinct_items(np.random.default_rng(0), np.array([5.0, 1, 1, 0, 1]), np.array([3, 2]),
    ...                        exclude=np.array([0, -1]))
    >>> len(picks), len(set(picks[:3].tolist())), 0 in picks[:3], 3 in picks
    (5, 3, False, False)
    """
    sizes = np.asarray(sizes, dtype=int)
    support = np.flatnonzero(weights > 0)
    if len(sizes) and sizes.max() > len(support) - (exclude is not None):
        raise ValueError(f"{sizes.max()} distinct items wanted from {len(support)}: cap sizes with fit_sizes")
    log_weights = np.log(weights[support])
    position = np.full(len(weights), -1)
    position[support] = np.arange(len(support))
    chunks = []
    for lo in range(0, len(sizes), 512):  # bounded memory: 512 accounts x the catalogue at a time
        wanted = np.minimum(sizes[lo:lo + 512], len(support))
        keys = log_weights + rng.gumbel(size=(len(wanted), len(support)))
        if exclude is not None:
            rows = np.flatnonzero((exclude[lo:lo + 512] >= 0) & (exclude[lo:lo + 512] < len(weights)))
            columns = position[exclude[lo:lo + 512][rows]]
            keys[rows[columns >= 0], columns[columns >= 0]] = -np.inf
        top = np.argsort(-keys, axis=1)[:, :max(int(wanted.max(initial=0)), 0)]
        chunks.append(support[top[np.arange(top.shape[1]) < wanted[:, None]]])
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=int)


def fit_sizes(sizes: np.ndarray, weights: np.ndarray, excluded: int = 0) -> np.ndarray:
    """`sizes` capped at the number of items `distinct_items` can draw from (a small catalogue, or one whose
    items are mostly some attack's targets)."""
    return np.minimum(np.asarray(sizes, dtype=int), max(int(np.count_nonzero(weights)) - excluded, 0))


def clip_rating(values: np.ndarray) -> np.ndarray:
    """Round and clip to the 1..5 star scale."""
    return np.clip(np.rint(values), 1, 5).astype(np.int8)
