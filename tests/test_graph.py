"""Behaviour-graph detectors on small hand-built graphs whose right answer is known."""

from __future__ import annotations

import numpy as np
import orjson

from detectors.blocks import BlockGraph, EdgeWindow, grow, judge_block, peel
from detectors.decision import DecisionStage
from detectors.dense_block import DenseBlockDetector
from detectors.events import ClickEvent, RatingEvent
from detectors.lockstep import LockstepDetector
from detectors.pipeline import Pipeline
from state_equality import check_restore_carries_on

DAY = 86400.0


def _background(rng: np.random.Generator, n: int, users: int = 1500, items: int = 800, span: float = 3 * DAY,
                start: float = 0.0) -> list[RatingEvent]:
    """Benign ratings: Zipf-popular items, users of very different activity, spread over `span`."""
    weight = 1.0 / np.arange(1, items + 1) ** 0.8
    item = rng.choice(items, n, p=weight / weight.sum())
    user = rng.choice(users, n, p=(w := rng.pareto(1.5, users) + 1) / w.sum())
    ts = np.sort(start + rng.uniform(0, span, n)).astype(int)
    return [RatingEvent(event_id=f"b{k}", ts=float(ts[k]), user_id=f"u{user[k]}", item_id=f"i{item[k]}",
                        rating=int(rng.integers(1, 6))) for k in range(n)]


def _users(signals, kind="user", at_least=0.5) -> set[str]:
    return {s.id for s in signals if s.kind == kind and s.score >= at_least}


def test_peel_finds_a_planted_block_and_judge_accepts_it():
    rng = np.random.default_rng(0)
    users = np.r_[rng.integers(0, 3000, 9000), np.repeat(np.arange(5000, 5030), 10)]
    items = np.r_[rng.integers(0, 1500, 9000), np.tile(np.arange(9000, 9010), 30)]
    graph = BlockGraph.from_edges(users, items)
    rows, cols, density = peel(graph)
    assert set(graph.row_ids[rows]) == set(range(5000, 5030))
    assert set(graph.item_ids[graph.col_item[cols]]) == set(range(9000, 9010))
    block = judge_block(graph, grow(graph, rows))
    assert block is not None and block.lift > 100 and block.density == 1.0


def test_judge_rejects_a_random_graph():
    rng = np.random.default_rng(1)
    graph = BlockGraph.from_edges(rng.integers(0, 500, 5000), rng.integers(0, 300, 5000))
    for col in range(0, graph.A.shape[1], 7):
        seed = graph.AT.indices[graph.AT.indptr[col]:graph.AT.indptr[col + 1]]
        assert judge_block(graph, grow(graph, seed)) is None


def test_planted_dense_block_under_camouflage_is_flagged_with_its_targets():
    rng = np.random.default_rng(2)
    events = _background(rng, 12000)
    popular = [f"i{k}" for k in range(20)]
    fakes = [f"fake{k}" for k in range(25)]
    for n, fake in enumerate(fakes):
        # camouflage: each fake also rates popular items, as a real user would
        for k, item in enumerate(rng.choice(popular, 10, replace=False)):
            events.append(RatingEvent(event_id=f"c{n}-{k}", ts=float(DAY + 100 * n + k), user_id=fake,
                                      item_id=item, rating=int(rng.integers(3, 6))))
        for k in range(4):
            events.append(RatingEvent(event_id=f"f{n}-{k}", ts=float(DAY + 100 * n + 20 + k), user_id=fake,
                                      item_id=f"target{k}", rating=5))
    events.sort(key=lambda e: e.ts)
    detector = DenseBlockDetector()
    signals = detector.observe(events, events[-1].ts) + detector.observe([], events[-1].ts)
    assert _users(signals) == set(fakes)
    # The targets, and possibly a camouflage item the fakes over-use (twelve of them on one of twenty).
    assert _users(signals, "item") >= {f"target{k}" for k in range(4)}
    evidence = next(s.evidence for s in signals if s.kind == "user")
    assert evidence["users"] == 25 and evidence["n_items"] >= 4 and evidence["span"][0] >= DAY
    orjson.dumps(evidence)  # small and serialisable: it goes into alerts


def test_lockstep_group_under_camouflage_is_flagged_and_dense_block_of_sign_ups_is_not():
    rng = np.random.default_rng(3)
    events: list = _background(rng, 15000)
    bots = [f"bot{k}" for k in range(20)]
    for n, bot in enumerate(bots):
        for run in range(2):  # two scripted runs, each bot starting within 15 minutes of the run
            ts = DAY * (1 + run) + rng.integers(0, 900)
            clicks = [f"niche{k}" for k in range(6)] + [f"i{k}" for k in rng.choice(30, 4)]
            for item in rng.permutation(clicks):
                ts += int(rng.integers(5, 40))
                events.append(ClickEvent(event_id=f"k{n}-{run}-{ts}-{item}", ts=float(ts), user_id=bot,
                                         item_id=str(item), session_id=f"s{n}-{run}"))
    events.sort(key=lambda e: e.ts)
    detector = LockstepDetector()
    signals = detector.observe(events, events[-1].ts) + detector.observe([], events[-1].ts)
    assert _users(signals) == set(bots)
    assert _users(signals, "item") >= {f"niche{k}" for k in range(6)}


def test_benign_sign_up_burst_is_not_flagged():
    rng = np.random.default_rng(4)
    events: list = _background(rng, 15000)
    # Thirty real users sign up on the same afternoon and each rates dozens of the most popular items, as
    # MovieLens users do: their own bursts overlap on the head of the catalogue, not on a niche.
    for n in range(30):
        ts = DAY + n * 300
        for k, item in enumerate(rng.choice(60, 40, replace=False, p=(w := 1 / np.arange(1, 61)) / w.sum())):
            events.append(RatingEvent(event_id=f"s{n}-{k}", ts=float(ts + 20 * k), user_id=f"new{n}",
                                      item_id=f"i{item}", rating=int(rng.integers(1, 6))))
    events.sort(key=lambda e: e.ts)
    for detector in (DenseBlockDetector(), LockstepDetector()):
        signals = detector.observe(events, events[-1].ts) + detector.observe([], events[-1].ts)
        assert not _users(signals), detector.name


def _slow_ring(seed: int) -> tuple[list, set[str]]:
    """Benign ratings over half a year, and a ring of 20 accounts giving 6 products 5 stars, each rating at a
    random moment of those months: about one rating per member in any 30 days, never dense in one window."""
    rng = np.random.default_rng(seed)
    events: list = _background(rng, 30000, span=180 * DAY)
    ring = {f"ring{m}" for m in range(20)}
    for m in range(20):
        for p in range(6):
            events.append(RatingEvent(event_id=f"r{m}-{p}", ts=float(rng.uniform(0, 180 * DAY)), user_id=f"ring{m}",
                                      item_id=f"prod{p}", rating=5))
    events.sort(key=lambda e: e.ts)
    return events, ring


def _run(detector, events: list, batch: int = 2048, tick: bool = True) -> list:
    signals = []
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        signals += detector.observe(chunk, chunk[-1].ts)
    return signals + (detector.observe([], events[-1].ts) if tick else [])


def test_a_ring_spread_over_months_is_found_by_the_long_window():
    events, ring = _slow_ring(11)
    assert _users(_run(DenseBlockDetector(), events)) == ring
    # In stream, with no flush tick, once a long search is due (the last at 30,000 edges: a member or two
    # has not yet rated enough of the products then).
    found = _users(_run(DenseBlockDetector(long_search_every=10_000), events, tick=False))
    assert len(found & ring) >= 15 and not found - ring
    # The short window alone never sees it: the long window is what finds it.
    assert not _users(_run(DenseBlockDetector(long_window_seconds=None), events)) & ring


def test_idle_ticks_run_the_long_search_at_most_once_per_half_window():
    """A worker with a trickle of events ticks every second or so: each tick must not cost a long search."""
    events, _ = _slow_ring(11)
    detector = DenseBlockDetector()
    _run(detector, events)  # its flush tick runs the first long search
    searches, last = detector.searches, events[-1].ts
    for k in range(5):  # one new rating and an idle tick, a minute apart
        late = RatingEvent(event_id=f"late{k}", ts=last + 60.0 * (k + 1), user_id="u1", item_id="i1", rating=4)
        detector.observe([late], late.ts)
        detector.observe([], late.ts)
    assert detector.searches == searches + 5  # the short searches of each tick, no long one
    detector.observe([RatingEvent(event_id="later", ts=last + 16 * DAY, user_id="u1", item_id="i2", rating=4)],
                     last + 16 * DAY)
    detector.observe([], last + 16 * DAY)
    assert detector.searches == searches + 7  # half a short window later: the short and the long one


def test_the_long_window_flags_no_benign_user_over_months():
    rng = np.random.default_rng(12)
    events = _background(rng, 40000, span=180 * DAY)
    assert not _users(_run(DenseBlockDetector(long_search_every=10_000), events))


def test_one_timestamp_replay_is_searched_at_flush_and_quarantined():
    """A ratings dump with no usable time: the flush tick must search it before the held events leave."""
    rng = np.random.default_rng(5)
    lines = []
    for k in range(6000):
        lines.append(orjson.dumps({"type": "rating", "event_id": f"b{k}", "ts": 1000, "user_id":
                                   f"u{rng.integers(1500)}", "item_id": f"i{rng.integers(800)}",
                                   "rating": int(rng.integers(1, 6))}))
    for k in range(150):
        lines.append(orjson.dumps({"type": "rating", "event_id": f"r{k}", "ts": 1000, "user_id": f"ring{k // 5}",
                                   "item_id": f"prod{k % 5}", "rating": 5}))
    pipeline = Pipeline([DenseBlockDetector(), LockstepDetector()], DecisionStage())
    outcomes = []
    for start in range(0, len(lines), 2000):
        outcomes += pipeline.process(lines[start:start + 2000]).outcomes
    outcomes += pipeline.flush().outcomes
    quarantined = {o.event.event_id for o in outcomes if o.verdict != "clean"}
    assert quarantined == {f"r{k}" for k in range(150)}


def test_edge_window_expires_and_renumbers():
    window = EdgeWindow(span=100.0, capacity=1000)
    window.add(["a", "b"], ["x", "y"], [0.0, 10.0], [5, 4])
    window.add(["c"], ["x"], [150.0], [3])
    window.compact(150.0)
    assert window.size == 1 and window.user_ids == ["c"] and window.item_ids == ["x"]


def test_snapshot_restore_carries_on():
    """Background and the first half of a planted block's edges, snapshot, restore; then the rest: the clone
    holds the original's state and finds the same block, which a detector that saw only the second half
    does not (the test fails on a restore that does nothing)."""
    rng = np.random.default_rng(6)
    events = _background(rng, 12000)
    for n in range(25):
        for k in range(6):
            events.append(RatingEvent(event_id=f"f{n}-{k}", ts=float(DAY + 100 * n + 10 * k), user_id=f"fake{n}",
                                      item_id=f"target{k}", rating=5))
    events.sort(key=lambda e: e.ts)
    cut = next(k for k, e in enumerate(events) if e.ts >= DAY + 1200)  # about half the block on each side

    def observe(detector, batch):
        return detector.observe(batch, batch[-1].ts) + detector.observe([], batch[-1].ts)

    for make in (DenseBlockDetector, LockstepDetector):
        said = check_restore_carries_on(make, events[:cut], events[cut:], observe)
        fakes = {f"fake{n}" for n in range(25)}
        assert _users(said) <= fakes and len(_users(said)) >= 10, (make.__name__, _users(said))


def test_searches_fall_where_they_are_due_whatever_the_batches():
    """A search runs at the edge that makes it due (every `search_every` edges, or half a window of event
    time): one batch or batches of 37 find the same blocks, as `replay` and a worker's micro-batches must."""
    rng = np.random.default_rng(4)
    events = _background(rng, 9000, span=8 * DAY)
    for n in range(15):
        for k in range(4):
            events.append(RatingEvent(event_id=f"f{n}-{k}", ts=float(3 * DAY + 100 * n + k), user_id=f"fake{n}",
                                      item_id=f"target{k}", rating=5))
    events.sort(key=lambda e: e.ts)
    def key(signal):  # a block lists its items in the order they were grown: the same set either way
        evidence = {k: sorted(v) if k == "items" else v for k, v in signal.evidence.items()}
        return signal.kind, signal.id, signal.score, str(evidence)

    for make in (lambda: DenseBlockDetector(search_every=2500, window_seconds=6 * DAY),
                 lambda: LockstepDetector(search_every=2500)):
        whole = make()
        at_once = whole.observe(events, events[-1].ts) + whole.observe([], events[-1].ts)
        split = make()
        pieces = [s for k in range(0, len(events), 37)
                  for s in split.observe(events[k:k + 37], events[min(k + 36, len(events) - 1)].ts)]
        pieces += split.observe([], events[-1].ts)
        assert whole.searches == split.searches >= 4
        assert sorted(map(key, pieces)) == sorted(map(key, at_once))
        if type(whole) is DenseBlockDetector:
            assert _users(at_once) == {f"fake{n}" for n in range(15)}


def test_edge_window_numbers_ids_in_order_of_first_appearance():
    """Not in hash order: string hashes differ between processes, and a graph's row and column order (so a
    block's listed items) must not depend on which process built it."""
    window = EdgeWindow(span=DAY, capacity=100)
    window.add(["u3", "u1", "u3", "u2"], ["i9", "i2", "i9", "i5"], [1.0, 2.0, 3.0, 4.0], [5, 4, 5, 3])
    window.add(["u0", "u1"], ["i2", "i0"], [5.0, 6.0], [1, 2])
    assert window.user_ids == ["u3", "u1", "u2", "u0"]
    assert window.item_ids == ["i9", "i2", "i5", "i0"]
    assert window.u[: window.size].tolist() == [0, 1, 0, 2, 3, 1]


def test_copies_of_a_real_profile_are_a_block_and_the_profile_is_spared():
    # A real user's 20 ratings of rarely rated items, replayed by four camouflaged copies that each drop two
    # and add the target: five near-identical profiles make one dense block, one of them innocent. A tight
    # ring's members share products as copies do, but none of them replays the others: all are named.
    rng = np.random.default_rng(8)
    events = _background(rng, 12000)
    real = [(f"i{k}", int(rng.integers(1, 6))) for k in rng.choice(np.arange(300, 800), 20, replace=False)]
    events += [RatingEvent(event_id=f"r{k}", ts=float(DAY + k), user_id="real", item_id=item, rating=stars)
               for k, (item, stars) in enumerate(real)]
    for c in range(4):
        kept = [real[k] for k in sorted(rng.choice(20, 18, replace=False))] + [("target", 5)]
        events += [RatingEvent(event_id=f"c{c}-{k}", ts=float(2 * DAY + 100 * c + k), user_id=f"copy{c}",
                               item_id=item, rating=stars) for k, (item, stars) in enumerate(kept)]
    events.sort(key=lambda e: e.ts)
    detector = DenseBlockDetector()
    signals = detector.observe(events, events[-1].ts) + detector.observe([], events[-1].ts)
    assert _users(signals) == {f"copy{c}" for c in range(4)}
    every = DenseBlockDetector(copy_jaccard=1.01)  # no block counts as copies of one profile
    signals = every.observe(events, events[-1].ts) + every.observe([], events[-1].ts)
    assert _users(signals) == {f"copy{c}" for c in range(4)} | {"real"}


def test_distinct_is_np_unique_of_integers():
    from detectors._arrays import distinct
    rng = np.random.default_rng(2)
    for values in (rng.integers(0, 50, 1000), rng.integers(-10**12, 10**12, 300), rng.integers(0, 9, (4, 6)),
                   np.zeros(0, np.int64), np.array([7], np.int32)):
        got, want = distinct(values), np.unique(values)
        assert got.dtype == want.dtype and np.array_equal(got, want)
