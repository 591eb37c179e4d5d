"""Detector state pickled to the size of its data: numpy arrays that are mostly one fill value are written as
the entries (or rows) that differ from it, and rebuilt bit for bit on loading.

Detectors allocate fixed-size structures up front: count-min sketches of 4 x 65,536 cells, ring buffers of
the last 500,000 ratings, a vector matrix that doubles. Early in a stream, and for a shard of a partitioned
worker, most of those cells are still at their initial value (0, -1, inf); a snapshot that writes them all
costs the same after 2,000 events as after 2 million. Here each array of at least `MIN_SIZE` entries is
written in the smallest of three forms: dense; the flat positions and values of the entries that differ
from the most common of the usual fill values; or, for a matrix, the rows that differ and their numbers.
Comparison is on the bits (so -0.0, NaN payloads and the like round-trip exactly), and the loaded array is
equal to the pickled one in value, dtype and shape: detectors see no difference, only the bytes shrink. The
arrays stay dense in memory, where numpy's vector operations need them.

Snapshots written before this module (plain pickles of dense arrays) load as they always did.

>>> import numpy as np
>>> cells = np.zeros((4, 1 << 16))
>>> cells[:, [3, 99, 40_000]] = 2.5
>>> small, dense = dumps_state({"cells": cells}), pickle.dumps({"cells": cells}, pickle.HIGHEST_PROTOCOL)
>>> len(dense) > 2_000_000 > 1_000 > len(small)
True
>>> restored = pickle.loads(small)["cells"]
>>> restored.dtype == cells.dtype and restored.shape == cells.shape and np.array_equal(restored, cells)
True
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

MIN_SIZE = 4096  # smaller arrays are written as they are: the search would cost more than it saves
FILLS = (0, -1, np.inf, -np.inf)  # the initial values detectors allocate with
DENSE_ENOUGH = 0.8  # a compact form must save at least a fifth of the dense bytes


def dumps_state(state: Any) -> bytes:
    """`pickle.dumps(state)` with mostly-constant arrays written compactly; `pickle.loads` reads it."""
    buffer = io.BytesIO()
    _StatePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
    return buffer.getvalue()


class _StatePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray and obj.size >= MIN_SIZE and obj.dtype.kind in "biuf":
            packed = compact(obj)
            if packed is not None:
                return packed
        return NotImplemented


def compact(array: np.ndarray) -> tuple | None:
    """(rebuild function, its arguments) for the smallest compact form of `array`, or None if dense is as
    small."""
    width = array.dtype.itemsize
    if width not in (1, 2, 4, 8):
        return None
    bits = np.ascontiguousarray(array).reshape(-1).view(f"u{width}")
    best_fill, best_other = None, None
    kind = array.dtype.kind
    for fill in FILLS:
        if (kind != "f" and np.isinf(fill)) or (kind in "bu" and fill < 0):
            continue  # not a value of this dtype
        fill_bits = np.array(fill, dtype=array.dtype).reshape(1).view(f"u{width}")[0]
        other = bits != fill_bits
        if best_other is None or np.count_nonzero(other) < np.count_nonzero(best_other):
            best_fill, best_other = fill, other
    if best_other is None:
        return None
    dense_bytes = array.nbytes
    index_dtype = np.int32 if array.size < 2**31 else np.int64
    entries = int(np.count_nonzero(best_other))
    entry_bytes = entries * (width + np.dtype(index_dtype).itemsize)
    row_bytes = None
    if array.ndim >= 2 and array.shape[0] > 1:
        rows = best_other.reshape(array.shape[0], -1).any(axis=1)
        row_bytes = int(np.count_nonzero(rows)) * (array[0].nbytes + 4)
    if row_bytes is not None and row_bytes <= entry_bytes and row_bytes < DENSE_ENOUGH * dense_bytes:
        numbers = np.flatnonzero(rows).astype(np.int32)
        return _rows, (array.shape, array.dtype.str, best_fill, numbers, np.ascontiguousarray(array[numbers]))
    if entry_bytes < DENSE_ENOUGH * dense_bytes:
        positions = np.flatnonzero(best_other).astype(index_dtype)
        values = np.ascontiguousarray(array).reshape(-1)[positions]
        return _entries, (array.shape, array.dtype.str, best_fill, positions, values)
    return None


def _entries(shape: tuple, dtype: str, fill: Any, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(shape, fill, dtype=np.dtype(dtype))
    out.reshape(-1)[positions] = values
    return out


def _rows(shape: tuple, dtype: str, fill: Any, numbers: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(shape, fill, dtype=np.dtype(dtype))
    out[numbers] = values
    return out
