"""The item rating-shift detector: a bombed item is caught, a steady or merely busy item is not."""

from __future__ import annotations

import numpy as np

from detectors.events import RatingEvent
from detectors.rating_shift import RatingShiftDetector


def ratings(item: str, stars: list[int], start: float, gap: float, prefix: str) -> list[RatingEvent]:
    return [RatingEvent(event_id=f"{prefix}{k}", ts=start + k * gap, user_id=f"{prefix}u{k}", item_id=item,
                        rating=s) for k, s in enumerate(stars)]


def test_steady_item_is_not_flagged_even_when_busy():
    rng = np.random.default_rng(0)
    detector = RatingShiftDetector()
    history = ratings("film", list(rng.choice([3, 4, 5], 500, p=[0.3, 0.4, 0.3])), 0, 3600, "h")
    busy = ratings("film", list(rng.choice([3, 4, 5], 200, p=[0.3, 0.4, 0.3])), 500 * 3600, 20, "b")
    assert detector.observe(history, now=history[-1].ts) == []
    assert detector.observe(busy, now=busy[-1].ts) == []


def test_review_bomb_on_an_established_item_is_an_item_signal_below_the_flag():
    rng = np.random.default_rng(1)
    detector = RatingShiftDetector()
    history = ratings("film", list(rng.choice([3, 4, 5], 300, p=[0.3, 0.4, 0.3])), 0, 3600, "h")
    detector.observe(history, now=history[-1].ts)
    bomb = ratings("film", [1] * 30, 300 * 3600, 60, "b")
    [signal] = detector.observe(bomb, now=bomb[-1].ts)
    assert (signal.kind, signal.id, signal.detector) == ("item", "film", "rating_shift")
    assert signal.score < 0.5  # evidence for fusion, not a verdict on its own
    assert signal.evidence["recent_mean"] < 2 < signal.evidence["baseline_mean"]
    assert detector.observe(ratings("film", [1] * 5, 301 * 3600, 60, "c"), now=301 * 3600 + 300) == []


def test_young_item_is_compared_with_the_global_distribution():
    rng = np.random.default_rng(2)
    detector = RatingShiftDetector()
    others = [RatingEvent(event_id=f"o{k}", ts=float(k), user_id=f"o{k}", item_id=f"i{k % 50}",
                          rating=int(rng.choice([2, 3, 4, 5]))) for k in range(2000)]
    detector.observe(others, now=2000.0)
    pushed = ratings("new", [5] * 40, 2000, 30, "p")
    assert [s.id for s in detector.observe(pushed, now=pushed[-1].ts)] == ["new"]


def test_all_equal_timestamps_raise_nothing_by_themselves():
    rng = np.random.default_rng(3)
    detector = RatingShiftDetector()
    events = [RatingEvent(event_id=f"e{k}", ts=0.0, user_id=f"u{k}", item_id=f"i{k % 20}",
                          rating=int(rng.choice([1, 2, 3, 4, 5]))) for k in range(3000)]
    assert detector.observe(events, now=0.0) == []
