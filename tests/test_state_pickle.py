"""Detector snapshots sized to their data (detectors.state_pickle): arrays come back bit for bit, snapshots of
a young detector are a small part of the dense pickle, a restored detector carries on as the original, and a
snapshot written densely (before this) still restores."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detectors.coordination import CoordinationDetector
from detectors.events import ClickEvent, RatingEvent
from detectors.midas import MidasDetector
from detectors.rating_shift import RatingShiftDetector
from detectors.state_pickle import MIN_SIZE, dumps_state
from state_equality import same_state


def _bits(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).tobytes()


@pytest.mark.parametrize("dtype,fill", [(np.float64, 0.0), (np.float64, np.inf), (np.float64, -np.inf),
                                        (np.float32, -1.0), (np.int64, -1), (np.int64, 0), (np.uint64, 0),
                                        (np.int8, 0), (np.float16, 0.0), (np.bool_, False)])
def test_arrays_come_back_bit_for_bit(dtype, fill):
    rng = np.random.default_rng(3)
    array = np.full((4, 8192), fill, dtype=dtype)
    spots = rng.integers(0, array.size, 300)
    if dtype == np.bool_:
        array.reshape(-1)[spots] = True
    else:
        array.reshape(-1)[spots] = rng.integers(1, 100, 300).astype(dtype)
    if array.dtype.kind == "f":
        array.reshape(-1)[spots[:3]] = [-0.0, np.nan, np.inf if fill != np.inf else 5.0]  # bits, not values
    state = {"cells": array, "view": array[1]}
    packed = dumps_state(state)
    back = pickle.loads(packed)
    for name in state:
        assert back[name].dtype == state[name].dtype and back[name].shape == state[name].shape
        assert _bits(back[name]) == _bits(state[name])
    assert len(packed) < 0.2 * len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))


def test_rows_and_dense_arrays():
    vectors = np.zeros((4096, 384), np.float16)  # a vector matrix with room to grow, a tenth used
    vectors[:400] = np.random.default_rng(0).standard_normal((400, 384))
    packed = dumps_state(vectors)
    assert np.array_equal(pickle.loads(packed), vectors) and len(packed) < 0.12 * vectors.nbytes
    noise = np.random.default_rng(1).standard_normal(MIN_SIZE * 4)  # nothing to save: written as it is
    assert len(dumps_state(noise)) == len(pickle.dumps(noise, protocol=pickle.HIGHEST_PROTOCOL))
    small = np.zeros(MIN_SIZE - 1)
    assert len(dumps_state(small)) == len(pickle.dumps(small, protocol=pickle.HIGHEST_PROTOCOL))
    shared = pickle.loads(dumps_state({"a": vectors, "b": [vectors]}))  # one array in two places stays one
    assert shared["a"] is shared["b"][0]


def _events(n: int, start: int = 0, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    events = []
    for k in range(start, start + n):
        user, item = f"u{int(rng.integers(300))}", f"i{int(rng.zipf(1.6)) % 200}"
        ts = 880_000_000 + 60 * k
        if k % 3:
            events.append(RatingEvent(event_id=f"r{k}", ts=ts, user_id=user, item_id=item,
                                      rating=int(rng.integers(1, 6))))
        else:
            events.append(ClickEvent(event_id=f"c{k}", ts=ts, user_id=user, item_id=item))
    return events


@pytest.mark.parametrize("make", [CoordinationDetector, MidasDetector, RatingShiftDetector])
def test_sketch_detectors_snapshot_small_and_carry_on(make):
    first, later = _events(3000), _events(3000, start=3000, seed=1)
    original = make()
    for start in range(0, len(first), 500):
        original.observe(first[start:start + 500], first[start + 499].ts)
    state = original.snapshot()
    dense = pickle.dumps(original.__dict__, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(state) < 0.15 * len(dense), (len(state), len(dense))  # fixed-size sketches, mostly empty
    restored, from_dense = make(), make()
    restored.restore(state)
    from_dense.restore(dense)  # a snapshot written before compact arrays
    assert same_state(original, restored) and same_state(original, from_dense)
    said = [d.observe(later, later[-1].ts) for d in (original, restored, from_dense)]
    assert said[0] == said[1] == said[2]
    assert same_state(original, restored)
