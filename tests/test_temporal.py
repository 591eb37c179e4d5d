"""Temporal coordination detectors: bursts of many accounts on one item versus one user's own burst."""

from __future__ import annotations

import numpy as np

from detectors.coordination import CoordinationDetector
from detectors.events import RatingEvent
from detectors.midas import MidasDetector
from detectors.sketch import DecayingCountMin, stable_hash
from state_equality import check_restore_carries_on

DAY = 86400.0


def _history(rng: np.random.Generator, days: int = 20, per_day: int = 1500, users: int = 600,
             items: int = 200) -> list[list[RatingEvent]]:
    """Established users rating Zipf-popular items with item-specific taste, one batch per day."""
    weight = 1.0 / np.arange(1, items + 1) ** 0.9
    taste = rng.normal(3.8, 0.6, items)
    batches = []
    for day in range(days):
        item = rng.choice(items, per_day, p=weight / weight.sum())
        ts = np.sort(day * DAY + rng.uniform(0, DAY, per_day)).astype(int)
        rating = np.clip(np.round(taste[item] + rng.normal(0, 0.8, per_day)), 1, 5)
        batches.append([RatingEvent(event_id=f"d{day}-{k}", ts=float(ts[k]), user_id=f"u{rng.integers(users)}",
                                    item_id=f"i{item[k]}", rating=float(rating[k])) for k in range(per_day)])
    return batches


def _run(detector, batches, tick=False):
    """Batches in turn; with `tick`, then an empty batch, which tests what still waits for its quarter's end."""
    signals = []
    for batch in batches:
        signals += detector.observe(batch, batch[-1].ts)
    if tick:
        signals += detector.observe([], batches[-1][-1].ts)
    return signals


def _flagged(signals, kind="user", at_least=0.5):
    return {s.id for s in signals if s.kind == kind and s.score >= at_least}


def test_review_bomb_by_thin_accounts_is_caught():
    rng = np.random.default_rng(0)
    batches = _history(rng)
    start = 20 * DAY
    bomb = [RatingEvent(event_id=f"b{k}", ts=start + 60 * k, user_id=f"thin{k}", item_id="i1", rating=1.0)
            for k in range(40)]
    detector = CoordinationDetector()
    assert not _flagged(_run(detector, batches))
    signals = _run(detector, [bomb], tick=True)
    assert _flagged(signals) == {f"thin{k}" for k in range(40)}
    assert _flagged(signals, "item") == {"i1"}
    evidence = [s.evidence for s in signals if s.kind == "user"]
    assert {e["rating"] for e in evidence} == {"1"} and max(e["newcomers"] for e in evidence) == 40


def test_a_users_own_sign_up_burst_is_not_coordination():
    """MovieLens-style: a new user rates dozens of films within the hour. Each item gets one new rating."""
    rng = np.random.default_rng(1)
    batches = _history(rng)
    burst = [RatingEvent(event_id=f"s{k}", ts=20 * DAY + 30 * k, user_id="newcomer", item_id=f"i{k}",
                         rating=5.0) for k in range(80)]
    detector = CoordinationDetector()
    signals = _run(detector, batches + [burst], tick=True)
    assert not _flagged(signals) and not _flagged(signals, "item")


def test_many_newcomers_on_a_new_blockbuster_in_usual_proportion_are_not_flagged():
    rng = np.random.default_rng(2)
    batches = _history(rng)
    # A new release: established users and newcomers alike rate it 4-5 within the hour, newcomers no more
    # than their usual share of the traffic.
    release = []
    for k in range(60):
        newcomer = k % 10 == 0
        user = f"fresh{k}" if newcomer else f"u{rng.integers(600)}"
        release.append(RatingEvent(event_id=f"r{k}", ts=20 * DAY + 50 * k, user_id=user, item_id="premiere",
                                   rating=float(rng.integers(4, 6))))
    detector = CoordinationDetector()
    signals = _run(detector, batches + [release], tick=True)
    assert not _flagged(signals)


def test_one_timestamp_stream_stays_silent():
    rng = np.random.default_rng(3)
    events = [RatingEvent(event_id=f"e{k}", ts=1000.0, user_id=f"u{k % 50}", item_id="i1", rating=1.0)
              for k in range(500)]
    for detector in (CoordinationDetector(), MidasDetector()):
        assert detector.observe(events, 1000.0) == [] and detector.observe([], 1000.0) == []


def test_midas_scores_a_burst_and_not_steady_traffic():
    rng = np.random.default_rng(4)
    batches = _history(rng, days=10)
    detector = MidasDetector()
    steady = _run(detector, batches)
    # Steady traffic: MIDAS has no multiple-testing control (the anchor's known weakness), so a few of the
    # two hundred items may cross the line over ten days; never more than a handful.
    assert len(_flagged(steady, "item", 0.3)) <= 5
    burst = [RatingEvent(event_id=f"m{k}", ts=10 * DAY + 20 * k, user_id=f"x{k}", item_id="i150", rating=1.0)
             for k in range(30)]
    signals = detector.observe(burst, burst[-1].ts)
    assert "i150" in _flagged(signals, "item", 0.3)
    assert max(s.score for s in signals if s.kind == "user") < 0.5  # MIDAS alone never flags a user


def test_decaying_count_min_halves_per_half_life_and_survives_rebase():
    sketch = DecayingCountMin(half_life=10.0, width=1 << 10)
    keys = stable_hash(["a"] * 8)
    sketch.add(keys, np.zeros(8))
    assert np.isclose(sketch.query(keys[:1], now=10.0)[0], 4.0)
    sketch.add(keys[:1], np.array([1000.0]))  # forces a rebase of the stored scale
    assert np.isclose(sketch.query(keys[:1], now=1000.0)[0], 1.0, atol=1e-6)


def test_snapshot_restore_carries_on():
    """Twenty days of history, snapshot, restore; then a review bomb: the clone holds the original's state
    and flags the same thin accounts, which a detector without the history (no baseline, no accounts known)
    does not (the test fails on a restore that does nothing)."""
    rng = np.random.default_rng(5)
    history = _history(rng)
    bomb = [RatingEvent(event_id=f"b{k}", ts=20 * DAY + 60 * k, user_id=f"thin{k}", item_id="i1", rating=1.0)
            for k in range(40)]
    said = check_restore_carries_on(CoordinationDetector, history, [bomb],
                                    lambda detector, batches: _run(detector, batches, tick=True))
    assert _flagged(said) == {f"thin{k}" for k in range(40)}


def _slow_push(rng: np.random.Generator, freeze: bool = True) -> tuple[set[str], set[str]]:
    """Five thin accounts a day push a niche item for ten days, inside ordinary traffic: who is flagged."""
    batches = _history(rng, days=30)
    fakes = []
    for day in range(20, 30):
        times = np.sort(day * DAY + rng.uniform(0, DAY, 5))
        bomb = [RatingEvent(event_id=f"p{day}-{k}", ts=float(t), user_id=f"fake{day}-{k}", item_id="i150",
                            rating=5.0) for k, t in enumerate(times)]
        fakes += [event.user_id for event in bomb]
        batches[day] = sorted(batches[day] + bomb, key=lambda event: event.ts)
    detector = CoordinationDetector()
    if not freeze:
        detector._freeze = lambda *args: None  # noqa: SLF001 - the campaign's baseline left to drift
    return _flagged(_run(detector, batches, tick=True)), set(fakes)


def test_a_slow_push_campaign_does_not_become_its_own_baseline():
    """Once the lagged baseline takes in the campaign's first days the target looks like an item newcomers
    always rate: the key keeps the baseline of its first detection while members keep coming."""
    flagged, fakes = _slow_push(np.random.default_rng(6))
    assert len(flagged & fakes) >= 0.9 * len(fakes)
    assert flagged <= fakes  # no established user
    drifted, _ = _slow_push(np.random.default_rng(6), freeze=False)
    assert len(drifted & fakes) < len(flagged & fakes)


def test_tests_fall_where_they_are_due_whatever_the_batches():
    """A window is tested at the first event past its quarter's end: a day in one batch or in batches of
    50 gives the same signals, as `replay` and a worker's micro-batches must."""
    rng = np.random.default_rng(7)
    days = _history(rng, days=21)
    bomb = [RatingEvent(event_id=f"b{k}", ts=20 * DAY + 1000 + 45 * k, user_id=f"thin{k}", item_id="i2",
                        rating=1.0) for k in range(30)]
    days[20] = sorted(days[20] + bomb, key=lambda event: event.ts)
    events = [event for day in days for event in day]
    key = lambda s: (s.kind, s.id, s.score, str(s.evidence))  # noqa: E731
    whole = _run(CoordinationDetector(), days, tick=True)
    pieces = _run(CoordinationDetector(), [events[k:k + 50] for k in range(0, len(events), 50)], tick=True)
    assert sorted(map(key, pieces)) == sorted(map(key, whole))
    assert {f"thin{k}" for k in range(30)} <= _flagged(whole)


def test_count_min_runs_add_bit_for_bit_as_one_add_per_run():
    """`add_runs` is the long-run counts' fast path: it must leave a sketch exactly (not nearly) as adding
    its runs one at a time does, empty runs and a run that forces a rebase included."""
    rng = np.random.default_rng(3)
    keys = stable_hash([f"k{k}" for k in rng.integers(0, 500, 3000)])
    ts = np.sort(rng.uniform(0.0, 5000.0, 3000))
    ends = sorted(rng.choice(np.arange(1, 3000), 60, replace=False).tolist()) + [3000]
    ends[5] = ends[4]  # an empty run
    for half_life in (3600.0, 10.0, None):  # 10 s: runs past 30 time constants rebase
        one, runs = (DecayingCountMin(half_life, width=1 << 10) for _ in range(2))
        for a, b in zip([0, *ends[:-1]], ends):
            one.add(keys[a:b], ts[a:b])
        runs.add_runs(keys, ts, ends)
        assert runs.origin == one.origin and runs.total == one.total
        assert np.array_equal(runs.cells, one.cells)
