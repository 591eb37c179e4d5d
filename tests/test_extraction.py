"""Model-extraction detector: sweeps in id order and in random permutation are flagged; benign clients,
an ordinary heavy user among them, are not.

The fixture is a small labelled world built here: items with popularity-skewed demand, users with histories,
three hundred light API clients that ask with some user's latest items (as apps do), one heavy user's own
client, one batch client, and the sweepers planted among them.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import orjson
import pytest

from detectors.decision import DecisionStage
from detectors.events import RatingEvent, RecQueryEvent
from detectors.extraction import ExtractionDetector
from detectors.pipeline import Pipeline

DAY = 86_400


def _ids(rng: np.random.Generator, n: int, style: str) -> list[str]:
    if style == "numeric":  # string order differs from numeric order ("10" < "9")
        return [str(i) for i in rng.permutation(np.arange(1, 5 * n))[:n]]
    return [f"i-{token:012x}" for token in rng.integers(0, 1 << 48, n)]


def _world(seed: int = 0, n_items: int = 600, days: int = 10, sweepers: tuple[str, ...] = (),
           id_style: str = "opaque", sweep_gap: float = 20.0):
    """(events sorted by time, ids of the sweeping clients, id of the heavy benign user's client)."""
    rng = np.random.default_rng(seed)
    items = _ids(rng, n_items, id_style)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity = popularity[rng.permutation(n_items)]  # popularity unrelated to id order
    popularity /= popularity.sum()
    start = 880_000_000
    events: list = []

    # Users rate items by popularity: their histories, and the demand the detector sees.
    histories = []
    for user in range(400):
        size = int(rng.integers(5, 150))
        picks = rng.choice(n_items, size, replace=False, p=popularity)
        times = np.sort(rng.integers(start, start + days * DAY, size))
        histories.append((picks, times))
        events += [RatingEvent(event_id=f"r{user}-{n}", ts=float(t), user_id=f"u{user}", item_id=items[i],
                               rating=4) for n, (i, t) in enumerate(zip(picks, times))]

    def latest(user: int, ts: float) -> list[str]:
        picks, times = histories[user]
        known = picks[times <= ts]
        depth = int(rng.integers(1, 6))
        return [items[i] for i in known[::-1][:depth]] or [items[picks[0]]]

    # Light clients: Zipf-like activity, each query seeded with some user's latest items.
    weights = 1.0 / np.arange(1, 301) ** 1.1
    for n in range(6000):
        client = int(rng.choice(300, p=weights / weights.sum()))
        ts = float(rng.integers(start, start + days * DAY))
        events.append(RecQueryEvent(event_id=f"q{n}", ts=ts, client_id=f"app{client}",
                                    user_id=f"u{int(rng.integers(400))}",
                                    seed_items=latest(int(rng.integers(400)), ts),
                                    k=int(rng.choice([10, 20, 50]))))
    # An ordinary heavy user: their own client, hundreds of queries in two days, seeded by their own
    # latest items as they rate more and more (with the long-tail taste of a heavy user).
    heavy_user = int(np.argmax([len(h[0]) for h in histories]))
    for n, ts in enumerate(np.sort(rng.integers(start + 3 * DAY, start + 5 * DAY, 500))):
        events.append(RecQueryEvent(event_id=f"h{n}", ts=float(ts), client_id="heavy-user",
                                    user_id=f"u{heavy_user}", seed_items=latest(heavy_user, float(ts)), k=20))
    # A batch client: a nightly run, one query every 1-3 s for recent users, k = 100.
    for night in range(days):
        begin = start + night * DAY + 7_200
        for n, ts in enumerate(begin + np.cumsum(rng.integers(1, 4, 80))):
            events.append(RecQueryEvent(event_id=f"b{night}-{n}", ts=float(ts), client_id="batch",
                                        seed_items=latest(int(rng.integers(400)), float(ts)), k=100))
    # Sweepers: every item once, 1-3 consecutive items a query, k 200.
    sweeping = []
    for n, order in enumerate(sweepers):
        if order == "id":
            sequence = sorted(items)
        elif order == "numeric":
            sequence = sorted(items, key=int)
        else:
            sequence = [items[i] for i in rng.permutation(n_items)]
        ts, position, client = float(start + (4 + n) * DAY), 0, f"sweeper-{order}-{n}"
        while position < len(sequence):
            step = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
            ts += math.floor(rng.exponential(sweep_gap))
            events.append(RecQueryEvent(event_id=f"s{n}-{position}", ts=ts, client_id=client,
                                        seed_items=sequence[position:position + step], k=200))
            position += step
        sweeping.append(client)
    events.sort(key=lambda event: event.ts)
    return events, sweeping, "heavy-user"


def _run(detector: ExtractionDetector, events: list, batch: int = 512) -> dict[str, tuple[float, dict]]:
    """Each client's strongest signal over the stream."""
    best: dict[str, tuple[float, dict]] = {}
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        for signal in detector.observe(chunk, chunk[-1].ts):
            assert 0.0 <= signal.score <= 1.0 and len(orjson.dumps(signal.evidence)) < 2000  # alert-sized
            if signal.score > best.get(signal.id, (0.0, {}))[0]:
                best[signal.id] = (signal.score, signal.evidence)
    return best


def _flagged(best: dict[str, tuple[float, dict]]) -> set[str]:
    return {client for client, (score, _) in best.items() if score >= 0.5}


@pytest.fixture(scope="module")
def mixed_world():
    events, sweepers, heavy = _world(seed=11, sweepers=("id", "permutation", "permutation"))
    return events, sweepers, heavy, _run(ExtractionDetector(), events)


def test_sweep_in_id_order_is_flagged_with_a_bounded_action(mixed_world):
    _, sweepers, _, best = mixed_world
    score, evidence = best[sweepers[0]]
    assert score >= 0.5
    assert evidence["order"]["by"] in ("string", "first_seen") and evidence["order"]["z"] >= 5
    action = evidence["action"]
    assert action["type"] in ("throttle", "noise")
    assert 0 < action["noise_scale"] <= 0.2 and action["max_qps"] >= 0.05


def test_random_permutation_sweeps_are_flagged(mixed_world):
    _, sweepers, _, best = mixed_world
    for client in sweepers[1:]:
        score, evidence = best[client]
        assert score >= 0.5, evidence
        assert evidence["repeats"]["observed"] == 0 and evidence["repeats"]["expected"] > 5


def test_ordinary_heavy_user_and_benign_clients_are_not_flagged(mixed_world):
    _, sweepers, heavy, best = mixed_world
    benign_flagged = _flagged(best) - set(sweepers)
    assert heavy not in benign_flagged and "batch" not in benign_flagged
    assert len(benign_flagged) <= 3, benign_flagged


def test_sweep_in_numeric_id_order_is_flagged():
    events, sweepers, _ = _world(seed=5, sweepers=("numeric",), id_style="numeric", n_items=400, days=8)
    best = _run(ExtractionDetector(), events)
    score, evidence = best[sweepers[0]]
    assert score >= 0.5 and evidence["order"]["by"] == "numeric"
    assert _flagged(best) - set(sweepers) <= {"batch"} and len(_flagged(best) - set(sweepers)) == 0


def test_slow_sweep_over_days_is_flagged():
    # One query every ~10 minutes: the rate is ordinary; the absence of repeats and the order are not.
    events, sweepers, _ = _world(seed=7, sweepers=("id", "permutation"), sweep_gap=600.0, days=16)
    best = _run(ExtractionDetector(), events)
    assert {c for c in sweepers if best.get(c, (0,))[0] >= 0.5} == set(sweepers)
    assert len(_flagged(best) - set(sweepers)) <= 3


def test_snapshot_and_restore_carry_on_identically():
    events, _, _ = _world(seed=3, sweepers=("permutation",), n_items=300, days=6)
    half = len(events) // 2
    original = ExtractionDetector()
    _run(original, events[:half])
    restored = ExtractionDetector()
    restored.restore(original.snapshot())
    assert _run(original, events[half:]) == _run(restored, events[half:])


def test_state_is_bounded_and_idle_clients_expire():
    detector = ExtractionDetector(window_seconds=DAY, max_window_queries=50, population_seconds=2 * DAY)
    queries = [RecQueryEvent(event_id=f"q{n}", ts=float(n), client_id="c", seed_items=[f"i{n}"], k=10)
               for n in range(200)]
    detector.observe(queries, now=199.0)
    detector.observe([], now=199.0)  # a tick takes the part of a chunk that waits
    client = detector._clients["c"]
    assert len(client.queries) == 50 and client.n_seeds == 50 and len(client.counts) == 50
    later = RatingEvent(event_id="r", ts=10 * DAY, user_id="u", item_id="i0", rating=3)
    detector.observe([later], now=10 * DAY)
    detector.observe([], now=10 * DAY)
    assert "c" not in detector._clients
    crowded = ExtractionDetector(max_clients=10)
    crowded.observe([RecQueryEvent(event_id=f"q{n}", ts=float(n), client_id=f"c{n}", seed_items=["i"], k=10)
                     for n in range(30)], now=29.0)
    crowded.observe([], now=29.0)
    assert len(crowded._clients) <= 10 and "c29" in crowded._clients


def test_pipeline_quarantines_a_flagged_sweeper():
    events, sweepers, _ = _world(seed=2, sweepers=("id",), n_items=300, days=6)
    pipeline = Pipeline([ExtractionDetector()], DecisionStage(hold_seconds=600))
    lines = [event.model_dump_json() for event in events]
    verdicts: dict[str, str] = {}
    for start in range(0, len(lines), 512):
        for outcome in pipeline.process(lines[start:start + 512]).outcomes:
            verdicts[outcome.event.event_id] = outcome.verdict
    for outcome in pipeline.flush().outcomes:
        verdicts[outcome.event.event_id] = outcome.verdict
    sweep_ids = [e.event_id for e in events if getattr(e, "client_id", None) == sweepers[0]]
    held = sum(verdicts[e] in ("quarantined", "retracted") for e in sweep_ids)
    assert held / len(sweep_ids) >= 0.9
    assert pipeline.decision.is_flagged("client", sweepers[0])


def test_the_same_stream_in_other_batches_scores_alike():
    """Clients are scored at fixed points of the stream (chunks of `chunk_events`), so a worker whose batches
    fall elsewhere (a restart, another fetch size) emits what replay emits."""
    events, _, _ = _world(seed=2, sweepers=("id",), n_items=300, days=6)

    def signals(batch: int) -> list[tuple]:
        detector, out = ExtractionDetector(), []
        for start in range(0, len(events), batch):
            chunk = events[start:start + batch]
            out += detector.observe(chunk, chunk[-1].ts)
        out += detector.observe([], events[-1].ts)
        return [(s.id, round(s.score, 9)) for s in out]

    whole = signals(512)
    assert whole and signals(97) == whole and signals(1000) == whole


def _chain_world(seed: int = 0, follow_share: float = 0.4, log_answers: bool = True):
    """A service that answers each query with 10 items (a pure function of the seeds, popularity-led), light
    apps asking with users' latest items, a heavy honest app whose users take one of the answers they were
    just served as their next item at `follow_share` of the steps, and an autoregressive extractor: 32
    synthetic sequences from random items, each query the sequence so far, the next item one of its answers."""
    rng = np.random.default_rng(seed)
    n_items = 500
    items = [f"i-{token:012x}" for token in rng.integers(0, 1 << 48, n_items)]
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity /= popularity.sum()
    start = 880_000_000.0

    def answer(sequence: list[str]) -> list[str]:
        local = np.random.default_rng(zlib.crc32("/".join(sequence).encode()))
        picks = [items[i] for i in local.choice(n_items, 30, replace=False, p=popularity)]
        return [item for item in picks if item not in sequence][:10]

    def query(event_id: str, ts: float, client: str, sequence: list[str]) -> RecQueryEvent:
        return RecQueryEvent(event_id=event_id, ts=ts, client_id=client, seed_items=sequence[::-1][:20], k=10,
                             answer_items=answer(sequence) if log_answers else None)

    events: list = [RatingEvent(event_id=f"r{n}", ts=start + n, user_id=f"u{n % 300}", item_id=items[i], rating=4)
                    for n, i in enumerate(rng.choice(n_items, 20_000, p=popularity))]
    own = [list(rng.choice(items, 40, replace=False, p=popularity)) for _ in range(300)]
    for n in range(4000):  # light apps
        user, depth = own[int(rng.integers(300))], int(rng.integers(1, 6))
        cut = int(rng.integers(depth, 40))
        events.append(query(f"q{n}", start + 30_000 + float(rng.integers(0, 2 * DAY)),
                            f"app{int(rng.integers(40))}", user[cut - depth:cut]))

    def sessions(client: str, first: list[list[str]], paths: list[list[str]] | None, follow: float, steps: int,
                 begin: float, gap: float) -> None:
        ts = begin
        live = [list(s) for s in first]
        for step in range(steps):
            for b, sequence in enumerate(live):
                ts += gap
                got = query(f"{client}-{b}-{step}", ts, client, sequence)
                events.append(got)
                reply = answer(sequence)
                follows = paths is None or rng.random() < follow
                sequence.append(reply[int(rng.integers(len(reply)))] if follows else paths[b][step])

    # The heavy honest app: 100 sessions of 20 steps from real histories, one query every 10 s.
    heavy = [own[int(u)] for u in rng.integers(0, 300, 100)]
    sessions("honest-app", [h[:3] for h in heavy], [h[3:] for h in heavy], follow_share, 20, start + DAY, 10.0)
    # The extractor: 32 sequences of 20 from random catalogue items, one query every 2 s.
    sessions("extractor", [[items[i]] for i in rng.integers(0, n_items, 32)], None, 1.0, 20, start + DAY, 2.0)
    events.sort(key=lambda e: e.ts)
    return events


def _max_scores(events) -> dict[str, tuple[float, dict]]:
    detector = ExtractionDetector(refresh_seconds=60.0)
    best: dict[str, tuple[float, dict]] = {}
    for at in range(0, len(events), 500):
        batch = events[at:at + 500]
        for signal in detector.observe(batch, now=batch[-1].ts):
            if signal.score > best.get(signal.id, (0.0, {}))[0]:
                best[signal.id] = (signal.score, signal.evidence)
    return best


def test_a_client_chaining_on_its_own_answers_is_flagged_and_a_heavy_honest_app_is_not():
    best = _max_scores(_chain_world())
    score, evidence = best["extractor"]
    assert score >= 0.5
    # Flagged on the chain (its first queries of each sequence are not chains: the share climbs to 19/20).
    assert evidence["chain"]["share"] >= 0.7 and evidence["chain"]["z"] >= 5.0
    assert evidence["chain"]["answered"] <= 200  # within the first 200 of its 640 queries
    # The honest app follows its answers at 40% of the steps, 2,000 queries: below the benign bound.
    assert best.get("honest-app", (0.0, {}))[0] < 0.5
    assert all(s < 0.5 for client, (s, _) in best.items() if client.startswith("app"))


def test_the_chain_is_what_catches_the_extractor():
    # Without the answers logged the same extractor passes (it repeats seeds and sweeps nothing), and an
    # app whose users follow nearly every recommendation is flagged like it.
    assert best_score(_chain_world(log_answers=False), "extractor") < 0.5
    assert best_score(_chain_world(follow_share=0.95), "honest-app") >= 0.5


def best_score(events, client: str) -> float:
    return _max_scores(events).get(client, (0.0, {}))[0]
