"""The shape of a benign base: real (MovieLens) or synthetic ratings plus an item catalogue.

Everything downstream (attacks, benign clicks, catalogue, queries) reads only this, so both sources give
the same simulation. Indices are dense integers here; opaque ids are minted later, per run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass(frozen=True)
class Base:
    """Ratings as columns (one row per rating) and the catalogue (one row per item)."""

    name: str
    user: np.ndarray    # int32 user index, 0..n_users-1
    item: np.ndarray    # int32 item index, 0..n_items-1
    rating: np.ndarray  # int8, 1..5
    ts: np.ndarray      # int64 epoch seconds
    titles: list[str]
    genres: np.ndarray  # bool (n_items, n_genres)
    genre_names: list[str]
    n_users: int

    @property
    def n_items(self) -> int:
        return len(self.titles)

    @property
    def n_ratings(self) -> int:
        return len(self.ts)

    def head(self, n: int) -> "Base":
        """The earliest `n` ratings: a shorter stream with the same users, items and time behaviour."""
        if n >= self.n_ratings:
            return self
        keep = np.sort(np.argsort(self.ts, kind="stable")[:n])
        return replace(self, user=self.user[keep], item=self.item[keep], rating=self.rating[keep],
                       ts=self.ts[keep])


def year_of(title: str) -> str | None:
    """The release year at the end of a MovieLens-style title, "Toy Story (1995)" -> "1995"."""
    match = _YEAR.search(title)
    return match.group(1) if match else None
