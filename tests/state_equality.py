"""Snapshot tests' yardstick: two detectors hold the same state (not only: they said the same so far).

Generic on purpose: it compares what `snapshot()` returns, and where those bytes differ only in the order a
rebuilt set or dict happens to iterate, the objects they decode to, compared by value (numpy arrays by
content). No private attribute is named, so a detector may change its internals and keep these tests. Wall-clock
bookkeeping (a key that ends in `_seconds` holding a float: time spent searching, say) is no state.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np


def same_state(a: Any, b: Any) -> bool:
    first, second = a.snapshot(), b.snapshot()
    if first == second:
        return True
    try:
        return _equal(pickle.loads(first), pickle.loads(second))
    except (pickle.UnpicklingError, TypeError, ValueError):  # not a pickle: the bytes had to match
        return False


def _equal(x: Any, y: Any) -> bool:
    if type(x) is not type(y):
        return False
    if isinstance(x, np.ndarray):
        return x.shape == y.shape and x.dtype == y.dtype and bool(np.array_equal(x, y, equal_nan=x.dtype.kind == "f"))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_is_timing(k, x[k]) or _equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(_equal(i, j) for i, j in zip(x, y))
    if isinstance(x, (set, frozenset)):
        return x == y
    if isinstance(x, float) and x != x:
        return y != y
    if hasattr(x, "__dict__") and not isinstance(x, type):
        return _equal(vars(x), vars(y))
    if hasattr(type(x), "__slots__"):
        return all(_equal(getattr(x, s, None), getattr(y, s, None)) for s in type(x).__slots__)
    return x == y


def check_restore_carries_on(make, before, after, observe) -> list:
    """`make()` builds a detector, `observe(detector, events)` feeds it and returns its signals. The
    original sees `before`, a clone is restored from its snapshot: both must hold the same state, then say
    the same about `after` and still hold the same state; a detector that saw only `after` must not (so a
    restore that does nothing fails). Returns the signals on `after`."""
    original = make()
    observe(original, before)
    clone = make()
    clone.restore(original.snapshot())
    assert same_state(original, clone), "the restored detector's state differs from the original's"
    said, said_by_clone = observe(original, after), observe(clone, after)
    assert said == said_by_clone
    assert same_state(original, clone), "after the same events the restored detector's state differs"
    assert [s for s in said if s.score >= 0.5], "the continuation raises no signal: the test could not fail"
    forgetful = make()
    assert observe(forgetful, after) != said or not same_state(forgetful, original), \
        "a detector that never saw the first part says the same: the test cannot tell a restore from none"
    return said


def _is_timing(key: Any, value: Any) -> bool:
    return isinstance(key, str) and key.endswith("_seconds") and isinstance(value, float)
