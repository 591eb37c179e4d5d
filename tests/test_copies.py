"""The camouflaged-copy detector: copies converging on a target are flagged with it; a lone near-duplicate
pair and copies without a common target are not; state survives a snapshot and stays bounded."""

from __future__ import annotations

import numpy as np

from detectors.copies import CopyDetector
from detectors.events import ClickEvent, RatingEvent
from streams.assembly import build_detectors

DAY = 86_400.0


def real_users(rng: np.random.Generator, n: int = 80, n_items: int = 400, start: float = 0.0
               ) -> dict[str, list[tuple[str, int]]]:
    """Real-looking profiles: 25-60 items each, popularity-skewed, ratings 1-5."""
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    weights /= weights.sum()
    profiles = {}
    for u in range(n):
        items = rng.choice(n_items, int(rng.integers(25, 61)), replace=False, p=weights)
        profiles[f"u{u}"] = [(f"i{i}", int(r)) for i, r in zip(items, rng.integers(1, 6, len(items)))]
    return profiles


def copy_of(rng: np.random.Generator, profile: list[tuple[str, int]], extra: list[tuple[str, int]]
            ) -> list[tuple[str, int]]:
    """The simulator's camouflage: 90% of the items kept, 20% of ratings nudged a star, then the extras."""
    kept = [(item, r) for item, r in profile if rng.random() >= 0.1]
    nudged = [(item, int(np.clip(r + (rng.choice([-1, 1]) if rng.random() < 0.2 else 0), 1, 5)))
              for item, r in kept]
    return nudged + extra


def events_of(profiles: dict[str, list[tuple[str, int]]], start: float, gap: float = 30.0
              ) -> list[RatingEvent]:
    out = []
    for k, (user, ratings) in enumerate(profiles.items()):
        t0 = start + k * 600.0
        out += [RatingEvent(event_id=f"{user}-{n}", ts=t0 + n * gap, user_id=user, item_id=item, rating=r)
                for n, (item, r) in enumerate(ratings)]
    return sorted(out, key=lambda e: e.ts)


def run(detector: CopyDetector, events: list, batch: int = 500) -> list:
    signals, now = [], 0.0
    for k in range(0, len(events), batch):
        chunk = events[k:k + batch]
        now = max(now, max(e.ts for e in chunk))
        signals += detector.observe(chunk, now)
    return signals + detector.observe([], now)


def flagged(signals: list, kind: str = "user") -> set[str]:
    return {s.id for s in signals if s.kind == kind and s.score >= 0.5}


def test_copies_converging_on_a_target_are_flagged_with_the_target():
    rng = np.random.default_rng(0)
    real = real_users(rng)
    copies = {f"c{k}": copy_of(rng, real[f"u{k}"], [("target", 5)]) for k in range(6)}
    signals = run(CopyDetector(), events_of(real, 0.0) + events_of(copies, 30 * DAY))
    assert flagged(signals) == set(copies)
    assert flagged(signals, "item") == {"target"}
    member = next(s for s in signals if s.id == "c0" and s.score >= 0.5)
    assert member.evidence["twin"] == "u0" and member.evidence["extra_item"] == "target"
    assert member.evidence["jaccard"] >= 0.6 and member.evidence["group_size"] == 6
    assert member.evidence["expected_by_chance"] < 1.0


def test_a_group_must_stand_min_lift_times_above_chance():
    # Beside its p-value, an effect size: on a generous review site, real near-duplicates' extras meet on
    # popular films at 5 stars twice as often as their extra shares predict, significant over dozens of
    # pairs; copies' extras meet on their target several times over. A bar above this group's lift drops it.
    rng = np.random.default_rng(0)
    real = real_users(rng)
    copies = {f"c{k}": copy_of(rng, real[f"u{k}"], [("target", 5)]) for k in range(6)}
    events = events_of(real, 0.0) + events_of(copies, 30 * DAY)
    member = next(s for s in run(CopyDetector(), events) if s.id == "c0" and s.score >= 0.5)
    lift = member.evidence["group_size"] / member.evidence["expected_by_chance"]
    assert lift >= CopyDetector().min_lift
    assert not flagged(run(CopyDetector(min_lift=lift * 1.01), events))


def test_a_nuke_whose_copies_arrive_before_their_sources_is_found_too():
    rng = np.random.default_rng(1)
    real = real_users(rng)
    sources = {f"u{k}": real.pop(f"u{k}") for k in range(5)}
    copies = {f"c{k}": copy_of(rng, sources[f"u{k}"], [("film", 1)]) for k in range(5)}
    # copies first, their sources a month later
    stream = events_of(real, 0.0) + events_of(copies, 10 * DAY) + events_of(sources, 40 * DAY)
    signals = run(CopyDetector(), sorted(stream, key=lambda e: e.ts))
    assert flagged(signals) == set(copies)
    assert flagged(signals, "item") == {"film"}


def test_a_lone_near_duplicate_pair_is_weak_evidence_only():
    rng = np.random.default_rng(2)
    real = real_users(rng)
    # A household: the second account shares most of the first one's films and adds a favourite.
    real["partner"] = copy_of(rng, real["u3"], [("their_film", 5)])
    detector = CopyDetector()
    signals = run(detector, events_of(real, 0.0))
    signals += detector.observe([], 60 * DAY)  # both quiet for a while: the pair is judged alone
    assert flagged(signals) == set() and flagged(signals, "item") == set()
    [weak] = [s for s in signals if s.kind == "user"]
    assert weak.id == "partner" and 0 < weak.score < 0.5 and weak.evidence["twin"] == "u3"


def test_a_copy_whose_source_rated_the_target_joins_but_a_loose_real_pair_does_not():
    rng = np.random.default_rng(7)
    real = real_users(rng)
    for k in range(3):  # a popular film, rated 4 by some of the sources
        real[f"u{k}"].append(("film", 4))
    copies = {f"c{k}": copy_of(rng, [x for x in real[f"u{k}"] if x[0] != "film"], [("film", 1)])
              for k in range(8)}
    # A real pair, one account holding two thirds of the other's films, disagrees on the same film.
    big = next(user for user, ratings in real.items() if len(ratings) >= 40 and int(user[1:]) >= 10)
    real[big] = real[big][:39] + [("film", 3)]
    real["mate"] = real[big][:26] + [("film", 1)]
    detector = CopyDetector()
    signals = run(detector, events_of(real, 0.0) + events_of(copies, 30 * DAY))
    assert flagged(signals) == set(copies)  # five with the film as an extra, three whose twin rated it 4
    assert flagged(signals, "item") == {"film"}
    assert (min(detector._user_row[big], detector._user_row["mate"]),
            max(detector._user_row[big], detector._user_row["mate"])) in detector._pairs  # seen, not joined


def test_copies_without_a_common_target_are_not_flagged():
    rng = np.random.default_rng(3)
    real = real_users(rng)
    # Near-duplicates, each adding its own extreme rating: nothing converges.
    copies = {f"c{k}": copy_of(rng, real[f"u{k}"], [(f"own{k}", 5)]) for k in range(8)}
    signals = run(CopyDetector(), events_of(real, 0.0) + events_of(copies, 30 * DAY))
    assert flagged(signals) == set() and flagged(signals, "item") == set()


def test_items_that_copies_drop_by_chance_do_not_make_their_sources_a_group():
    rng = np.random.default_rng(4)
    real = real_users(rng)
    # Every source rated "hit" 5 and about a tenth of the copies drop it at random: those sources then
    # have "hit" among their extras, as often as dropping predicts, so only the copies' target converges.
    for k in range(40):
        real[f"u{k}"].append(("hit", 5))
    copies = {f"c{k}": copy_of(rng, real[f"u{k}"], [("target", 5)]) for k in range(40)}
    assert sum(("hit", 5) not in copies[f"c{k}"] for k in range(40)) >= 3  # the seed drops it often enough
    signals = run(CopyDetector(), events_of(real, 0.0) + events_of(copies, 30 * DAY))
    assert flagged(signals) == set(copies)
    assert flagged(signals, "item") == {"target"}


def casual_users(rng: np.random.Generator, n: int, n_items: int = 300) -> dict[str, list[tuple[str, int]]]:
    """A review site's users: 3-8 ratings each over a popularity-skewed catalog, so that many small profiles
    are near-duplicates by chance (the same few hits); each item has its own opinion."""
    weights = 1.0 / np.arange(1, n_items + 1) ** 1.1
    weights /= weights.sum()
    opinion = rng.uniform(2.0, 4.6, n_items)
    profiles = {}
    for u in range(n):
        items = rng.choice(n_items, int(rng.integers(3, 9)), replace=False, p=weights)
        stars = np.clip(np.rint(opinion[items] + rng.normal(0, 0.8, len(items))), 1, 5).astype(int)
        profiles[f"u{u}"] = [(f"i{i}", int(r)) for i, r in zip(items, stars)]
    return profiles


def test_copies_of_casual_users_are_found_and_chance_twins_among_them_are_not():
    rng = np.random.default_rng(8)
    real = casual_users(rng, 1500)
    sources = [user for user, ratings in real.items() if len(ratings) >= 4][:8]
    copies = {f"c{k}": copy_of(rng, real[user], [("target", 5)]) for k, user in enumerate(sources)}
    signals = run(CopyDetector(), events_of(real, 0.0) + events_of(copies, 30 * DAY))
    assert len(flagged(signals) & set(copies)) >= 6
    assert flagged(signals) <= set(copies)  # no real user, though small profiles pair up by chance
    assert flagged(signals, "item") == {"target"}


def test_snapshot_and_restore_carry_on_where_they_left_off():
    rng = np.random.default_rng(5)
    real = real_users(rng)
    copies = {f"c{k}": copy_of(rng, real[f"u{k}"], [("target", 5)]) for k in range(5)}
    stream = events_of(real, 0.0) + events_of(copies, 30 * DAY)
    half = len(stream) - 80  # the copies are half-way in
    whole = run(CopyDetector(), stream)

    first = CopyDetector()
    before = run(first, stream[:half])
    restored = CopyDetector(seed=99)  # parameters come back with the state
    restored.restore(first.snapshot())
    after = run(restored, stream[half:])
    key = lambda signals: sorted((s.kind, s.id, s.score) for s in signals)  # noqa: E731
    assert key(before + after) == key(whole)
    assert flagged(after) | flagged(before) == set(copies)


def test_state_is_bounded_and_clicks_are_ignored():
    rng = np.random.default_rng(6)
    detector = CopyDetector(max_items=50, max_users=100, retention_seconds=10 * DAY)
    real = real_users(rng, n=150)
    real["busy"] = [(f"i{i}", 4) for i in range(300)]
    stream = events_of(real, 0.0, gap=1.0)
    stream += [ClickEvent(event_id=f"k{n}", ts=stream[-1].ts, user_id="clicker", item_id="i1") for n in range(50)]
    run(detector, stream)
    assert len(detector._codes[detector._user_row["busy"]]) == 50
    assert "clicker" not in detector._user_row
    detector.observe([RatingEvent(event_id="late", ts=40 * DAY, user_id="late", item_id="i1", rating=3)], 40 * DAY)
    detector.observe([], 40 * DAY + 10 * DAY)
    assert sum(uid is not None for uid in detector._user_ids) <= 100
    assert "u0" not in detector._user_row  # quiet for longer than the retention


def test_registered_under_its_name():
    [detector] = build_detectors("copies")
    assert isinstance(detector, CopyDetector) and detector.name == "copies"
