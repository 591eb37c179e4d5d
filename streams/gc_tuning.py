"""Garbage collection for a process that keeps millions of long-lived objects (held events, detector
state, dedupe ids, the retraction index): Python's default thresholds run a full collection every few
hundred thousand allocations, each walking all of them, and cost a replay a third of its time."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

THRESHOLDS = (50_000, 20, 100)


def settle() -> None:
    """Collect once, move what survives out of the collector's sight, and collect rarely from now on."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


@contextmanager
def rare_collections() -> Iterator[None]:
    """Rare collections for the duration of a batch job; the previous thresholds afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
