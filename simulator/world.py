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

DAY = 86_400
SPREAD_SECONDS = {"burst": 3_600, "hours": 8 * 3_600, "days": 10 * DAY}
BENIGN = -1


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


class World:
    def __init__(self, base: Base, seed: int = 0):
        self.base, self.seed = base, seed
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

        # Catalogue: the current listing of every item (base items first, new items appended).
        self.listing: list[dict[str, Any] | None] = [None] * base.n_items
        self.listed_ts = np.full(base.n_items, self.t0, dtype=np.int64)

        self.ratings = Table(user=0, item=0, rating=0, ts=0, label=BENIGN, text=None)
        self.clicks = Table(user=0, item=0, ts=0, session=-1, label=BENIGN)
        self.docs: list[tuple[int, int, dict[str, Any]]] = []  # (ts, label, catalog edit or rec query)
        self.n_sessions = 0
        self.attacks: list[Attack] = []
        self.used_targets: set[int] = set()
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

    def attack(self, spec: AttackSpec, kind: str, intent: str | None, **params: Any) -> Attack:
        record = Attack(len(self.attacks), spec.family, intent, kind,
                        {"size": spec.size, "filler": spec.filler, "targets": spec.targets,
                         "spread": spec.spread, "target_pool": spec.target_pool, **params})
        self.attacks.append(record)
        return record

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

    def window(self, spread: str, rng: np.random.Generator) -> tuple[int, int]:
        """When an attack runs: inside the real stream, after a warm-up third of it."""
        if spread not in SPREAD_SECONDS:
            raise ValueError(f"unknown spread {spread!r}: one of {sorted(SPREAD_SECONDS)}")
        span = self.t1 - self.t0
        width = min(SPREAD_SECONDS[spread], span // 2)
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
    gaps = np.where(rng.random(n) < 0.5, 0.0, rng.exponential(45.0, n))
    first = np.r_[0, np.cumsum(sizes)[:-1]].astype(int)
    offsets = np.floor(np.cumsum(gaps)).astype(np.int64)
    offsets -= np.repeat(offsets[first], sizes)
    starts = np.asarray(starts, dtype=np.int64)
    if latest is not None:
        last = np.maximum.reduceat(offsets, first) if n else offsets
        starts = np.minimum(starts, latest - last)
    return np.repeat(starts, sizes) + offsets


def clip_rating(values: np.ndarray) -> np.ndarray:
    """Round and clip to the 1..5 star scale."""
    return np.clip(np.rint(values), 1, 5).astype(np.int8)
