"""Lockstep groups (CopyCatch): many accounts acting on the same set of items, each item within the same
short time window, as click farms and scripted rings do.

The graph is the dense-block detector's with time folded into the columns: a column is (item, time bin), so a
block is a set of users who hit each of a set of items in the same bin. A cell's expected count is the user's
activity in that bin times the item's popularity outside the block, so a real user's sign-up burst (dozens
of popular items in one hour) is expected, while forty accounts clicking the same twelve niche items in the
same hour are not. Bins are laid on two grids half a bin apart, so a run that straddles a bin boundary is
whole on one of them.

Parameters: those of `DenseBlockDetector`, with `bin_seconds` (CopyCatch's 2 x delta-t) and a shorter
default window. With no usable time (every event at one timestamp) there is no synchrony to judge and the
detector stays silent; the dense-block detector covers that case.

Scaling: as `DenseBlockDetector` (bounded window, amortised search over touched columns); the window is a few
days, so at 10x traffic the edge bound still covers it; at 100x, partition by item with a join stage.

Reference: Beutel, Xu, Guruswami, Palow, Faloutsos, "CopyCatch: Stopping Group Attacks by Spotting Lockstep
Behavior in Social Networks", WWW 2013.

>>> import random
>>> from detectors.events import ClickEvent
>>> rng = random.Random(3)
>>> day = 86400.0
>>> events = [ClickEvent(event_id=f"b{k}", ts=float(rng.randrange(int(3 * day))), user_id=f"u{rng.randrange(3000)}",
...                      item_id=f"i{rng.randrange(2000)}") for k in range(20000)]
>>> events += [ClickEvent(event_id=f"f{k}", ts=day + 60 * (k % 5) + rng.randrange(900), user_id=f"bot{k // 5}",
...                       item_id=f"target{k % 5}") for k in range(150)]
>>> events.sort(key=lambda e: e.ts)
>>> detector = LockstepDetector()
>>> signals = detector.observe(events, now=3 * day) + detector.observe([], now=3 * day)
>>> sorted(s.id for s in signals if s.kind == "user") == sorted(f"bot{k}" for k in range(30))
True
"""

from __future__ import annotations

import numpy as np

from detectors.blocks import BlockTest
from detectors.dense_block import DenseBlockDetector


class LockstepDetector(DenseBlockDetector):
    name = "lockstep"

    def __init__(self, bin_seconds: float = 3600.0, window_seconds: float = 3 * 86400.0,
                 max_edges: int = 1_000_000, search_every: int = 40_000, max_seeds: int = 60,
                 peels: int = 2, max_seed_degree: int = 2_000, test: BlockTest = BlockTest(),
                 max_score: float = 0.95):
        super().__init__(window_seconds=window_seconds, max_edges=max_edges, search_every=search_every,
                         max_seeds=max_seeds, peels=peels, max_seed_degree=max_seed_degree, test=test,
                         max_score=max_score, long_window_seconds=None)  # lockstep is about time
        self.bin_seconds = bin_seconds

    def _bins(self, ts: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        # Grid A (even bin numbers); grid B, shifted by half a bin, gets the odd numbers in `_columns`.
        return 2 * np.floor(ts / self.bin_seconds).astype(np.int64)

    def _columns(self, u: np.ndarray, i: np.ndarray, t: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, ...]:
        shifted = 2 * np.floor(t / self.bin_seconds + 0.5).astype(np.int64) + 1
        return (np.concatenate([u, u]), np.concatenate([i, i]),
                np.concatenate([self._bins(t, r), shifted]), np.concatenate([t, t]))

    def _searchable(self, ts: np.ndarray) -> bool:
        # Synchrony needs time: with everything in one or two bins, co-timing says nothing.
        return float(ts.max() - ts.min()) >= 2 * self.bin_seconds
