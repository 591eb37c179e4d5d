"""The clean interaction log: every rating and click learned from, in arrival order, with retractions.

The trainer keeps the clean log it learned from (a few dozen bytes an event) rather than only the weights:
it is what makes a retraction repairable (the affected rows are rebuilt from what remains), what a restart
restores without re-reading the stream, and what a from-scratch rebuild would replay. Event ids dedupe
redelivered events, and a retraction that overtakes its event is remembered so the event is never learned.

>>> log = InteractionLog()
>>> ev = [{"type": "rating", "event_id": "e1", "ts": 1, "user_id": "u", "item_id": "a", "rating": 5},
...       {"type": "click", "event_id": "e2", "ts": 2, "user_id": "u", "item_id": "b"},
...       {"type": "click", "event_id": "e2", "ts": 2, "user_id": "u", "item_id": "b"}]
>>> len(log.add(ev)), log.n_active
(2, 2)
>>> log.retract(["e1", "e9"]).tolist(), log.n_active
([0], 1)
>>> len(log.add([{"type": "click", "event_id": "e9", "ts": 3, "user_id": "v", "item_id": "a"}]))
0
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from models.growable import IdIndex

LEARNABLE_TYPES = ("rating", "click")


def _getter(event: Any):
    # A plain dict check: isinstance against typing.Mapping costs more than the rest of `add` together.
    if type(event) is dict:
        return event.get
    return lambda name, default=None: getattr(event, name, default)


class InteractionLog:
    """Columns `user`, `item` (dense rows; items start at 1), `ts`, `rating` (NaN for clicks), `active`."""

    _COLUMNS = {"user": np.int64, "item": np.int64, "ts": np.float64, "rating": np.float32,
                "active": np.bool_}

    def __init__(self, capacity: int = 1024):
        self.users, self.items = IdIndex(first=0), IdIndex(first=1)
        self.n = 0
        self._cols = {name: np.zeros(capacity, dtype) for name, dtype in self._COLUMNS.items()}
        self.event_ids: list[str] = []
        self._row_of: dict[str, int] = {}
        self.pending_retractions: set[str] = set()
        self.changes = 0  # bumped on every change, so derived views know when to rebuild

    # -- columns ----------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> np.ndarray:
        cols = self.__dict__.get("_cols")
        if cols is not None and name in cols:
            return cols[name][: self.n]
        raise AttributeError(name)

    @property
    def n_active(self) -> int:
        return int(self.active.sum())

    def rows_of(self, event_ids: Iterable[str]) -> np.ndarray:
        return np.array([self._row_of[e] for e in event_ids if e in self._row_of], dtype=np.int64)

    # -- updates ----------------------------------------------------------------------------------
    def add(self, events: Iterable[Any]) -> np.ndarray:
        """Append the learnable events not seen or retracted before; returns their rows."""
        start = self.n
        for event in events:
            get = _getter(event)
            if get("type") not in LEARNABLE_TYPES:
                continue
            event_id = str(get("event_id"))
            if event_id in self._row_of:
                continue  # redelivered: at-least-once sources must not double count
            if event_id in self.pending_retractions:
                self.pending_retractions.discard(event_id)
                continue
            self._reserve(self.n + 1)
            rating = get("rating")
            row = self.n
            self._cols["user"][row] = self.users.add(str(get("user_id")))
            self._cols["item"][row] = self.items.add(str(get("item_id")))
            self._cols["ts"][row] = float(get("ts"))
            self._cols["rating"][row] = np.nan if rating is None else float(rating)
            self._cols["active"][row] = True
            self._row_of[event_id] = row
            self.event_ids.append(event_id)
            self.n += 1
        if self.n > start:
            self.changes += 1
        return np.arange(start, self.n, dtype=np.int64)

    def retract(self, event_ids: Iterable[str]) -> np.ndarray:
        """Deactivate the rows of these events; ids not learned yet are kept pending. Returns the rows."""
        rows = []
        for event_id in map(str, event_ids):
            row = self._row_of.get(event_id)
            if row is None:
                self.pending_retractions.add(event_id)
            elif self._cols["active"][row]:
                self._cols["active"][row] = False
                rows.append(row)
        if rows:
            self.changes += 1
        return np.array(rows, dtype=np.int64)

    def restore(self, event_ids: Iterable[str]) -> np.ndarray:
        """Undo retractions (an analyst released the entity): rows active again, pending ones forgotten."""
        rows = []
        for event_id in map(str, event_ids):
            self.pending_retractions.discard(event_id)
            row = self._row_of.get(event_id)
            if row is not None and not self._cols["active"][row]:
                self._cols["active"][row] = True
                rows.append(row)
        if rows:
            self.changes += 1
        return np.array(rows, dtype=np.int64)

    def _reserve(self, n: int) -> None:
        capacity = len(self._cols["user"])
        if n <= capacity:
            return
        new = max(n, 2 * capacity)
        for name, col in self._cols.items():
            grown = np.zeros(new, col.dtype)
            grown[:capacity] = col
            self._cols[name] = grown

    # -- derived views ----------------------------------------------------------------------------
    def sequences(self, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-user histories in time order (ties by arrival): CSR `indptr` over user rows, `items`, `rows`."""
        rows = np.flatnonzero(self.active if mask is None else mask)
        order = np.lexsort((rows, self.ts[rows], self.user[rows]))
        rows = rows[order]
        counts = np.bincount(self.user[rows], minlength=self.users.size)
        indptr = np.zeros(self.users.size + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return indptr, self.item[rows], rows

    def last_rows(self, mask: np.ndarray, users: np.ndarray, min_history: int = 1) -> np.ndarray:
        """For each user in `users`, the row of their latest event under `mask` (if they have enough)."""
        indptr, _, rows = self.sequences(mask)
        lengths = indptr[users + 1] - indptr[users]
        users = users[lengths >= min_history]
        return rows[indptr[users + 1] - 1]

    # -- persistence ------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
        """Columns as arrays and id lists as strings, for the checkpoint."""
        arrays = {name: np.ascontiguousarray(getattr(self, name)) for name in self._COLUMNS}
        strings = {"event_ids": self.event_ids, "user_ids": self.users.ids, "item_ids": self.items.ids,
                   "pending_retractions": sorted(self.pending_retractions)}
        return arrays, strings

    @classmethod
    def from_state(cls, arrays: Mapping[str, np.ndarray], strings: Mapping[str, list[str]]) -> "InteractionLog":
        n = len(arrays["user"])
        log = cls(capacity=max(n, 1024))
        for name, dtype in cls._COLUMNS.items():
            log._cols[name][:n] = np.asarray(arrays[name], dtype=dtype)
        log.n = n
        log.users = IdIndex.from_ids(list(strings["user_ids"]), first=0)
        log.items = IdIndex.from_ids(list(strings["item_ids"]), first=1)
        log.event_ids = list(strings["event_ids"])
        log._row_of = {e: i for i, e in enumerate(log.event_ids)}
        log.pending_retractions = set(strings["pending_retractions"])
        return log
