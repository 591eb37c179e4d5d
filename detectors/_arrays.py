"""Small helpers for the vectorised detectors: interning opaque ids to dense rows, and growable columns.

Per-entity River statistics would cost one Python call per entity per update; detectors keep the same
sufficient statistics in numpy columns instead, so that a micro-batch updates them in a few vector operations.
"""

from __future__ import annotations

import numpy as np


class Interner:
    """Maps opaque string ids to dense row numbers, and back."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, entity_id: str) -> int:
        row = self.index.get(entity_id)
        if row is None:
            row = self.index[entity_id] = len(self.ids)
            self.ids.append(entity_id)
        return row


def distinct(values: np.ndarray) -> np.ndarray:
    """`np.unique(values)` of an integer array, by sorting: numpy 2.x's hash-table path for a bare
    `np.unique` is some ten times slower than this on the thousands of ints detectors deduplicate."""
    ordered = np.sort(values, axis=None)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if len(ordered) else ordered


def grown(column: np.ndarray, size: int, fill: float = 0) -> np.ndarray:
    """`column` with at least `size` rows, doubling capacity so that growth is amortised O(1)."""
    if len(column) >= size:
        return column
    bigger = np.full((max(size, 2 * len(column), 64),) + column.shape[1:], fill, dtype=column.dtype)
    bigger[: len(column)] = column
    return bigger


def robust_z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Column-wise robust z-scores of `values` against `reference` rows: (x - median) / (1.4826 MAD).

    Where more than half the population shares one value (MAD 0) the standard deviation stands in.
    """
    median = np.nanmedian(reference, axis=0)
    mad = np.nanmedian(np.abs(reference - median), axis=0) * 1.4826
    std = np.nanstd(reference, axis=0)
    scale = np.where(mad > 1e-12, mad, np.where(std > 1e-12, std, 1.0))
    return (values - median) / scale
