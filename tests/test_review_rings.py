"""review_rings: rings that promote the thin items only they rate, told apart from real fans of obscure items."""

from __future__ import annotations

import numpy as np

from detectors.events import RatingEvent
from detectors.review_rings import ReviewRingDetector

DAY = 86400.0


def _population(rng: np.random.Generator, users: int = 600, items: int = 900, start: float = 0.0,
                good_share: float = 0.0) -> list[RatingEvent]:
    """Real raters over 60 days: a few ratings each, popular items first (Zipf), ratings around each item's
    appeal; `good_share` of the items are obscure gems whose raters mostly give them 5s."""
    weight = 1.0 / np.arange(1, items + 1) ** 0.8
    appeal = rng.normal(3.3, 0.7, items)
    gems = rng.random(items) < good_share
    appeal[gems] = 4.8
    events = []
    for u in range(users):
        n = int(rng.integers(2, 12))
        for k, item in enumerate(rng.choice(items, n, replace=False, p=weight / weight.sum())):
            rating = int(np.clip(np.rint(appeal[item] + rng.normal(0, 0.9)), 1, 5))
            events.append(RatingEvent(event_id=f"r{u}-{k}", ts=start + float(rng.uniform(0, 60 * DAY)),
                                      user_id=f"u{u}", item_id=f"i{item}", rating=rating))
    return events


def _ring(rng: np.random.Generator, members: int = 8, products: int = 6, share: float = 0.5,
          start: float = 20 * DAY) -> list[RatingEvent]:
    """Fresh accounts that each rate about `share` of the ring's own new products with 5s, over a few days."""
    events = []
    for m in range(members):
        picks = rng.choice(products, max(1, int(round(share * products))), replace=False)
        for p in picks:
            events.append(RatingEvent(event_id=f"f{m}-{p}", ts=start + float(rng.uniform(0, 4 * DAY)),
                                      user_id=f"f{m}", item_id=f"p{p}", rating=5))
    return events


def _detector(**kwargs) -> ReviewRingDetector:
    """The defaults, but settled after 1,000 ratings of the stream: these streams hold a few thousand."""
    return ReviewRingDetector(**{"settle_ratings": 1000, **kwargs})


def _run(detector: ReviewRingDetector, events: list[RatingEvent], batch: int = 500) -> list:
    events = sorted(events, key=lambda e: e.ts)
    signals = []
    for at in range(0, len(events), batch):
        chunk = events[at:at + batch]
        signals += detector.observe(chunk, now=chunk[-1].ts)
    return signals + detector.observe([], now=events[-1].ts + 30 * DAY)


def _flagged(signals, kind: str = "user") -> set[str]:
    return {s.id for s in signals if s.kind == kind and s.score >= 0.5}


def test_a_ring_on_its_own_products_is_named_and_real_raters_are_not():
    rng = np.random.default_rng(1)
    signals = _run(_detector(), _population(rng) + _ring(rng))
    users = _flagged(signals)
    assert {f"f{m}" for m in range(8)} <= users
    assert not {u for u in users if u.startswith("u")}
    assert _flagged(signals, "item") and all(i.startswith("p") for i in _flagged(signals, "item"))


def test_small_rings_across_parameters_are_named_without_real_raters():
    named = planted = 0
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        members, products = int(rng.integers(3, 15)), int(rng.integers(3, 15))
        share = float(rng.uniform(0.3, 0.9))
        signals = _run(_detector(), _population(rng, good_share=0.05) + _ring(rng, members, products, share))
        users = _flagged(signals)
        assert not {u for u in users if u.startswith("u")}, seed
        named += sum(u.startswith("f") for u in users)
        planted += members
    assert named >= 0.8 * planted


def test_fans_of_obscure_gems_are_not_a_ring():
    # A fifth of the catalog is loved by everyone who finds it: pooled over everyone who rated them, a real
    # rater's thin items are 5s far beyond the share of thin items' ratings. A ring's members meet again on
    # their products; real raters seldom meet twice.
    rng = np.random.default_rng(2)
    events = _population(rng, good_share=0.2) + _ring(rng)
    users = _flagged(_run(_detector(), events))
    assert {f"f{m}" for m in range(8)} <= users and not {u for u in users if not u.startswith("f")}
    everyone = _flagged(_run(_detector(min_shared=1), events))
    assert {u for u in everyone if not u.startswith("f")}, "pooled over every co-rater, taste passes the test"


def _chain_ring(members: int, start: float = 20 * DAY) -> list[RatingEvent]:
    """A ring whose members each rate two of its products, member m products m and m+1: no two members meet
    twice, so no member has a pool."""
    return [RatingEvent(event_id=f"c{m}-{p}", ts=start + m * 3600.0, user_id=f"c{m}", item_id=f"q{p % members}",
                        rating=5) for m in range(members) for p in (m, m + 1)]


def test_a_ring_whose_members_never_meet_twice_is_an_island():
    rng = np.random.default_rng(7)
    signals = _run(_detector(), _population(rng, good_share=0.1) + _chain_ring(12))
    users = {s.id: s.evidence["test"] for s in signals if s.kind == "user"}
    assert users == {f"c{m}": "island" for m in range(12)}
    assert _flagged(signals, "item") == {f"q{p}" for p in range(12)}


def test_fans_of_obscure_gems_make_no_island():
    # Real raters whose few thin ratings are all 5s, on gems that only 5s reached, do touch one another;
    # such a patch is too small to be unlikely at the site's habit, and a ring of three is too.
    for seed in range(4):
        rng = np.random.default_rng(200 + seed)
        signals = _run(_detector(), _population(rng, users=900, good_share=0.3) + _chain_ring(3))
        assert not _flagged(signals), seed


def test_a_ring_pushing_films_that_heavy_real_raters_rate_is_still_found():
    # Six members rate 17 of 22 products (a quarter of them 4s): ten own products and twelve real obscure
    # films that 80 heavy real raters also rate. The real raters meet each member two or three times on
    # those films; counted as repeat co-raters, their ordinary ratings drag the members' pools under the
    # floor. A co-rater must share `min_shared_share` of the account's thin items.
    found = {0.0: 0, 0.15: 0}
    for seed in range(6):
        rng = np.random.default_rng(300 + seed)
        events = _population(rng)
        appeal = rng.normal(3.3, 0.7, 900)
        for h in range(80):
            for k, item in enumerate(rng.choice(np.arange(100, 400), 60, replace=False)):
                stars = int(np.clip(np.rint(appeal[item] + rng.normal(0, 0.9)), 1, 5))
                events.append(_rate(f"h{h}", f"i{item}", stars, float(rng.uniform(0, 60 * DAY))))
        products = [f"p{p}" for p in range(10)] + [f"i{i}" for i in rng.choice(np.arange(150, 400), 12, replace=False)]
        for m in range(6):
            for p in rng.choice(products, 17, replace=False):
                events.append(_rate(f"f{m}", str(p), 4 if rng.random() < 0.25 else 5,
                                    20 * DAY + float(rng.uniform(0, 5 * DAY))))
        for share in found:
            users = _flagged(_run(_detector(min_shared_share=share), events))
            assert not {u for u in users if not u.startswith("f")}, (seed, share)
            found[share] += sum(u.startswith("f") for u in users)
    assert found[0.15] >= 25 and found[0.0] <= 18, found  # of 36 (28 and 13 when written)


def test_a_premiere_is_not_judged_by_its_first_hour():
    # Two new films whose first raters (the same fans) give 5s within the hour; a week's audience follows.
    rng = np.random.default_rng(3)
    events = _population(rng)
    for film in ("n1", "n2"):
        for f in range(6):
            events.append(RatingEvent(event_id=f"{film}-fan{f}", ts=30 * DAY + f * 60.0, user_id=f"fan{f}",
                                      item_id=film, rating=5))
        for a in range(40):
            events.append(RatingEvent(event_id=f"{film}-a{a}", ts=30 * DAY + 3600.0 + a * 3600.0,
                                      user_id=f"a{film}{a}", item_id=film, rating=int(rng.integers(1, 6))))
    assert not _flagged(_run(_detector(), events))
    assert _flagged(_run(_detector(settle_seconds=0.0, settle_ratings=0, test_seconds=1800.0), events)) >= {
        f"fan{f}" for f in range(6)}, "judged before settling, the fans look like a ring"


def test_same_signals_whatever_the_batches_and_across_a_restore():
    rng = np.random.default_rng(4)
    events = _population(rng) + _ring(rng)
    whole = [(s.kind, s.id, s.score) for s in _run(_detector(), events, batch=len(events))]
    ones = [(s.kind, s.id, s.score) for s in _run(_detector(), events, batch=1)]
    assert whole == ones and whole
    ordered = sorted(events, key=lambda e: e.ts)
    first = _detector()
    signals = first.observe(ordered[:2000], now=ordered[1999].ts)
    second = _detector()
    second.restore(first.snapshot())
    signals += _run(second, ordered[2000:], batch=333)
    assert [(s.kind, s.id, s.score) for s in signals] == whole


def test_a_ratings_dump_without_time_is_judged_on_the_flush_tick():
    rng = np.random.default_rng(5)
    events = [RatingEvent(event_id=e.event_id, ts=1.0, user_id=e.user_id, item_id=e.item_id, rating=e.rating)
              for e in _population(rng) + _ring(rng)]
    detector = _detector()
    assert not detector.observe(events, now=1.0)
    assert {f"f{m}" for m in range(8)} <= _flagged(detector.observe([], now=1.0))


def test_the_end_of_the_input_judges_items_still_settling():
    """A ring whose products were listed in the stream's last days (or a site smaller than the settling
    volume): a live worker waits for them to settle, the end of a replayed file judges them."""
    rng = np.random.default_rng(6)
    events = sorted(_population(rng) + _ring(rng, start=55 * DAY), key=lambda e: e.ts)
    ring = {f"f{m}" for m in range(8)}
    waiting = ReviewRingDetector()  # settles after 20,000 ratings: this stream holds a few thousand
    assert not _flagged(waiting.observe(events, now=events[-1].ts) + waiting.observe([], now=events[-1].ts))
    found = _flagged(waiting.finish(events[-1].ts))
    assert ring <= found and not any(user.startswith("u") for user in found)


def test_a_contaminated_site_is_judged_against_its_real_raters():
    """A fifth of the accounts in 40 rings of ten (each member rates half its ring's ten products, a 4 now
    and then): the rings own so many thin items that their 5s raise the share of top ratings the pools are
    tested against. Taking the members found out of that baseline (and testing again) finds over half of
    them (222 of 400 here; their 4s keep the rest below the floor), and still no real rater; against the
    share of all thin ratings, fewer than 150 (126)."""
    rng = np.random.default_rng(0)
    events = _population(rng, users=1500)
    for ring in range(40):
        for m in range(10):
            for p in rng.choice(10, 5, replace=False):
                events.append(RatingEvent(event_id=f"g{ring}-{m}-{p}", ts=20 * DAY + float(rng.uniform(0, 4 * DAY)),
                                          user_id=f"g{ring}-{m}", item_id=f"g{ring}p{p}",
                                          rating=4 if rng.random() < 0.3 else 5))
    found = {}
    for drop in (1.0, 0.05):  # 1.0: the baseline never falls far enough to test again
        detector = _detector(retest_drop=drop)
        signals = _run(detector, events)
        found[drop] = _flagged(signals + detector.finish(max(e.ts for e in events)))
        assert not any(user.startswith("u") for user in found[drop])
    assert len(found[1.0]) < 150 < 200 < len(found[0.05])


def _generous_site(rng: np.random.Generator, users: int = 1500, items: int = 900) -> list[RatingEvent]:
    """A site whose raters are generous (two ratings in five are 5s, as on many review sites), a tenth of
    them heavy raters (40-120 ratings), who meet on good obscure items."""
    weight = 1.0 / np.arange(1, items + 1) ** 0.8
    appeal = rng.normal(4.3, 0.6, items)
    events = []
    for u in range(users):
        n = int(rng.integers(40, 120)) if rng.random() < 0.1 else int(rng.integers(2, 12))
        for k, item in enumerate(rng.choice(items, n, replace=False, p=weight / weight.sum())):
            rating = int(np.clip(np.rint(appeal[item] + rng.normal(0, 0.7)), 1, 5))
            events.append(RatingEvent(event_id=f"r{u}-{k}", ts=float(rng.uniform(0, 60 * DAY)), user_id=f"u{u}",
                                      item_id=f"i{item}", rating=rating))
    return events


def test_on_a_generous_site_only_pools_far_above_its_habit_count():
    """Heavy real raters on a generous site pool 5s from the good obscure items they meet on; a pool must go
    half of the way from the site's habit to all-top (`top_gap`), so they are not a ring, and a ring that
    gives only 5s still is. With the fixed floor of 60% alone (`top_gap=0`), and every account that met one
    twice counted as a repeat co-rater (`min_shared_share=0`), 9 real raters were named."""
    rng = np.random.default_rng(2)
    events = _generous_site(rng) + _ring(rng, members=12, products=8, share=0.6)
    ring = {f"f{m}" for m in range(12)}
    found = {}
    for gap in (0.0, 0.5):
        detector = _detector(top_gap=gap, min_shared_share=0.15 if gap else 0.0)
        found[gap] = _flagged(_run(detector, events) + detector.finish(max(e.ts for e in events)))
        assert ring <= found[gap]
    assert not any(user.startswith("u") for user in found[0.5])
    assert sum(user.startswith("u") for user in found[0.0]) >= 5


def test_state_is_bounded():
    rng = np.random.default_rng(6)
    detector = _detector(max_users=200, max_items=300, max_user_items=3)
    _run(detector, _population(rng))
    assert len(detector._users) <= 200 and len(detector._items) <= 300
    assert max(len(items) for items in detector._users.values()) <= 3
    assert detector._thin_ratings == sum(len(i.raters) for i in detector._items.values() if i.raters is not None)


def _rate(user: str, item: str, rating: int, ts: float) -> RatingEvent:
    return RatingEvent(event_id=f"{user}-{item}", ts=ts, user_id=user, item_id=item, rating=rating)


def test_a_members_all_top_co_rater_joins_by_pool_and_a_mixed_one_does_not():
    # A ring of six on products p0-p5 (each member rates all of them: a significant pool). Member f0 also
    # 5-stars x0 and x1, which only an accomplice rates besides: the accomplice's own pool (two accounts,
    # four ratings) is too small to test, but it is in f0's pool and gave every thin item it rated a 5.
    # A real rater who met f0 on y0 and y1 the same way but rated another thin item low is not named. (f0
    # gives one thin item a 2, so it and the accomplice are no all-top island: the join alone names it.)
    rng = np.random.default_rng(7)
    ring = [_rate(f"f{m}", f"p{p}", 5, 20 * DAY + 3600.0 * (6 * m + p)) for m in range(6) for p in range(6)]
    at = 22 * DAY
    extra = [_rate(user, item, rating, at + 60.0 * k) for k, (user, item, rating) in enumerate([
        ("f0", "x0", 5), ("f0", "x1", 5), ("accomplice", "x0", 5), ("accomplice", "x1", 5),
        ("f0", "y0", 5), ("f0", "y1", 5), ("fan", "y0", 5), ("fan", "y1", 5), ("fan", "q9", 2), ("f0", "z0", 2)])]
    signals = _run(_detector(), _population(rng) + ring + extra)
    joined = {s.id: s.evidence for s in signals if s.kind == "user" and s.evidence.get("test") == "joined"}
    assert joined.get("accomplice", {}).get("via") == "pool"
    assert "fan" not in _flagged(signals)
