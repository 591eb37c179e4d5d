"""Opinion campaigns: what moves an item's opinion is attributed, what rates it as usual is not."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detectors.events import RatingEvent
from detectors.rating_shift import RatingShiftDetector

DAY = 86400.0


def background(seed: int, days: int = 60, items: int = 40, per_day: int = 100) -> list[RatingEvent]:
    """Ordinary ratings: item k's opinion is centred on 2.5 + k / 20 (film39 is well liked)."""
    rng = np.random.default_rng(seed)
    events = []
    for k in range(days * per_day):
        item = int(rng.integers(items))
        stars = int(np.clip(np.rint(rng.normal(2.5 + item / 20, 0.9)), 1, 5))
        events.append(RatingEvent(event_id=f"e{seed}-{k}", ts=k * DAY / per_day,
                                  user_id=f"u{rng.integers(5000)}", item_id=f"film{item}", rating=stars))
    return events


def run(events: list[RatingEvent], detector: RatingShiftDetector | None = None, batch: int = 500):
    detector = detector or RatingShiftDetector()
    events = sorted(events, key=lambda e: e.ts)
    signals = []
    for k in range(0, len(events), batch):
        chunk = events[k:k + batch]
        signals += detector.observe(chunk, now=chunk[-1].ts)
    signals += detector.observe([], now=events[-1].ts)  # the flush tick attributes what has not settled
    return detector, signals


def flagged(signals, prefix: str) -> int:
    return len({s.id for s in signals if s.kind == "user" and s.score >= 0.5 and s.id.startswith(prefix)})


def crowd(item: str, stars, start: float, spread: float, prefix: str, seed: int = 0) -> list[RatingEvent]:
    rng = np.random.default_rng(seed)
    return [RatingEvent(event_id=f"{prefix}{k}", ts=start + float(rng.uniform(0, spread)),
                        user_id=f"{prefix}{k}", item_id=item, rating=int(s)) for k, s in enumerate(stars)]


def test_ordinary_traffic_raises_nothing():
    _, signals = run(background(1))
    assert signals == []


def test_a_slow_nuke_on_a_well_liked_item_is_attributed_and_its_organic_raters_are_not():
    rng = np.random.default_rng(2)
    nuke = crowd("film39", rng.integers(1, 3, 40), 60 * DAY, 30 * DAY, "nuker", seed=2)
    organic = background(3, days=30)  # the same films keep being rated during the campaign
    for event in organic:
        object.__setattr__(event, "ts", event.ts + 60 * DAY)
    _, signals = run(background(2) + organic + nuke)
    assert flagged(signals, "nuker") >= 36
    assert flagged(signals, "u") <= 2
    assert {s.id for s in signals if s.kind == "item"} == {"film39"}


def test_a_crowd_that_rates_an_item_as_it_is_usually_rated_is_not_an_attack():
    rng = np.random.default_rng(4)
    usual = np.clip(np.rint(rng.normal(2.5 + 30 / 20, 0.9, 150)), 1, 5)
    _, signals = run(background(4) + crowd("film30", usual, 61 * DAY, DAY / 2, "fan"))
    assert flagged(signals, "fan") == 0


def test_a_crowd_that_piles_onto_one_end_of_a_middling_item_is_a_push():
    rng = np.random.default_rng(5)
    _, signals = run(background(5) + crowd("film10", rng.integers(4, 6, 50), 61 * DAY, 3 * DAY, "sleeper"))
    assert flagged(signals, "sleeper") >= 45
    assert flagged(signals, "u") == 0


def test_a_heavy_regular_who_rates_the_pushed_item_amid_the_push_is_not_its_attacker():
    """Nobody but the push rates the item in its period, so the counts alone would name every rater at its
    end; the regular is told apart by profile (many ratings, an old account) against the raters of all
    ratings, among whom such regulars are common, while the push's accounts are fresh."""
    rng = np.random.default_rng(6)
    regulars = [RatingEvent(event_id=f"h{k}", ts=k * DAY / 40, user_id=f"regular{k % 20}",
                            item_id=f"film{int(rng.integers(40))}", rating=int(rng.integers(2, 6)))
                for k in range(60 * 40)]  # twenty regulars, some 120 ratings each over the 60 days
    push = crowd("film10", rng.integers(4, 6, 50), 61 * DAY, 3 * DAY, "pusher", seed=6)
    amid = RatingEvent(event_id="amid", ts=61 * DAY + DAY, user_id="regular3", item_id="film10", rating=5)
    _, signals = run(background(6) + regulars + push + [amid])
    assert flagged(signals, "pusher") >= 45
    assert flagged(signals, "regular") == 0


def obscure_film_story(item: str, history, wave, later, seed: int) -> list[RatingEvent]:
    """A film rated a few times over two months (`history`), a wave of 4s and 5s within three hours on day
    61 by accounts of a few weeks, then the film's later raters over the next month (`later`): regulars of
    the site, some 40 ratings each by then, amid the ordinary traffic of 90 days."""
    rng = np.random.default_rng(seed)
    organic = background(seed + 1, days=30)
    for event in organic:
        object.__setattr__(event, "ts", event.ts + 60 * DAY)
    regulars = [RatingEvent(event_id=f"h{k}", ts=k * DAY / 10, user_id=f"later{k % len(later)}",
                            item_id=f"film{int(rng.integers(40))}", rating=int(rng.integers(2, 6)))
                for k in range(60 * 10)]
    past = crowd(item, history, 5 * DAY, 50 * DAY, "early", seed=seed)
    burst = crowd(item, wave, 61 * DAY, 3 * 3600.0, "wave", seed=seed + 1)
    after = crowd(item, later, 63 * DAY, 28 * DAY, "later", seed=seed + 2)
    return background(seed) + organic + regulars + past + burst + after


def test_a_wave_on_a_film_with_little_history_is_judged_again_by_the_raters_after_it():
    """Five middling ratings say little about a film: twenty-two 4s and 5s within three hours could be a
    loved film's crowd (p ~ 1e-3, short of the wave test's level). Its later raters, whom no attack chose,
    rate it as its first five did: the wave was a push (a sleeper cell's), and its accounts are named."""
    rng = np.random.default_rng(7)
    story = obscure_film_story("obscure", [3, 2, 4, 3, 3], rng.choice([4, 5, 5, 5], 22),
                               rng.choice([2, 3, 3, 3, 4], 14), seed=7)
    _, signals = run(story)
    assert flagged(signals, "wave") >= 20
    # Two regulars rated it 4 within the wave's week, where the counts leave room for one or two organic
    # raters among 24 and the profile cannot place them for sure; no later or earlier rater is named.
    wave_week = {e.user_id for e in story if e.item_id == "obscure" and 61 * DAY <= e.ts <= 68 * DAY}
    named = {s.id for s in signals if s.kind == "user" and s.score >= 0.5}
    assert not {user for user in named if user.startswith(("later", "early", "u"))} - wave_week
    assert flagged(signals, "later") <= 2


def thin_film_push(raters: list[str], seed: int) -> list[RatingEvent]:
    """A film rated five times over two months, then 4s and 5s from `raters` within three hours on day
    61, and no one rates it after: all the evidence there will ever be is the wave itself."""
    rng = np.random.default_rng(seed)
    past = crowd("thin", [3, 2, 4, 3, 3], 5 * DAY, 50 * DAY, "early", seed=seed)
    stars = rng.choice([4, 5, 5, 5], len(raters))
    return past + [RatingEvent(event_id=f"push{k}", ts=61 * DAY + float(rng.uniform(0, 3 * 3600.0)),
                               user_id=user, item_id="thin", rating=int(s))
                   for k, (user, s) in enumerate(zip(raters, stars))]


def test_a_sleeper_cells_push_on_a_thin_film_that_no_one_rates_after_is_named_by_its_likeness():
    """Thirty accounts live three weeks as casual users (six ordinary ratings each), then push a film rated
    five times. Its opinion alone cannot convict (p ~ 1e-3: a loved film's crowd might do it) and no later
    rater ever comes; but its raters are all one kind of account, weeks old with a handful of ratings,
    where the site's raters mix every kind: the cell is named, no one else."""
    rng = np.random.default_rng(12)
    cell = [f"sleeper{k}" for k in range(30)]
    life = [RatingEvent(event_id=f"life{k}-{j}", ts=float(rng.uniform(35 * DAY, 55 * DAY)), user_id=user,
                        item_id=f"film{int(rng.integers(30, 40))}", rating=int(rng.integers(3, 6)))
            for k, user in enumerate(cell) for j in range(6)]
    _, signals = run(background(12) + life + thin_film_push(cell, seed=12))
    assert flagged(signals, "sleeper") >= 27
    assert flagged(signals, "u") + flagged(signals, "early") == 0
    assert all(s.evidence["raters_alike"] for s in signals if s.id.startswith("sleeper"))


def test_a_crowd_of_every_kind_that_loves_a_thin_film_is_not_named_on_its_opinion_alone():
    """The same wave from the site's own mix of raters (regulars, occasional raters, newcomers): its pile
    of 4s and 5s is the same, but nothing says it was made; it stands unjudged."""
    rng = np.random.default_rng(13)
    events = background(13)
    regulars = [RatingEvent(event_id=f"h{k}", ts=k * DAY / 20, user_id=f"regular{k % 10}",
                            item_id=f"film{int(rng.integers(40))}", rating=int(rng.integers(2, 6)))
                for k in range(60 * 20)]
    fans = ([f"regular{k}" for k in range(10)] + [f"u{k}" for k in rng.choice(5000, 12, replace=False)]
            + [f"newcomer{k}" for k in range(8)])
    _, signals = run(events + regulars + thin_film_push(fans, seed=13))
    assert not {s.id for s in signals if s.kind == "user" and s.score >= 0.5}


def test_a_loved_films_crowd_whose_later_raters_love_it_too_is_not_an_attack():
    rng = np.random.default_rng(8)
    story = obscure_film_story("gem", [5, 4, 5, 4, 5], rng.choice([3, 4, 5, 5, 5], 22),
                               rng.choice([4, 4, 5, 5, 5], 14), seed=8)
    _, signals = run(story)
    assert flagged(signals, "wave") + flagged(signals, "later") == 0


def test_a_young_item_whose_first_raters_dislike_it_is_not_nuked():
    rng = np.random.default_rng(6)
    flop = crowd("flop", rng.choice([1, 1, 2, 2, 3], 60), 40 * DAY, 20 * DAY, "viewer")
    _, signals = run(background(6) + flop)
    assert flagged(signals, "viewer") == 0


def test_organic_raters_of_a_blockbuster_are_explained_away_by_the_accounts_found_on_the_target():
    # Bandwagon: 40 fakes rate the liked film39 five and push the middling film5, over two days, while
    # film39's real audience keeps rating it (the background runs on to day 70, 50 ratings a day).
    fakes = crowd("film39", [5] * 40, 61 * DAY, 2 * DAY, "fake", seed=7)
    fakes += crowd("film5", [5] * 40, 61 * DAY, 2 * DAY, "fake", seed=8)
    _, signals = run(background(7, days=70, per_day=50) + fakes)
    assert flagged(signals, "fake") == 40
    by_blockbuster = {s.id for s in signals if s.kind == "user" and s.evidence["item"] == "film39"}
    assert not any(user.startswith("u") for user in by_blockbuster)
    # On the target itself, an organic rater at its top end during the push is indistinguishable: about
    # the attributed share's complement of them (here 1 - 0.95) may be named.
    assert flagged(signals, "u") <= 3


def test_all_equal_timestamps_raise_nothing_by_themselves():
    rng = np.random.default_rng(3)
    events = [RatingEvent(event_id=f"e{k}", ts=0.0, user_id=f"u{k}", item_id=f"i{k % 20}",
                          rating=int(rng.choice([1, 2, 3, 4, 5]))) for k in range(3000)]
    _, signals = run(events)
    assert signals == []


def test_the_same_signals_whatever_the_micro_batches():
    rng = np.random.default_rng(10)
    events = background(10) + crowd("film39", rng.integers(1, 3, 40), 60 * DAY, 20 * DAY, "nuker")
    _, small = run(events, batch=97)
    _, large = run(events, batch=5000)
    assert sorted((s.kind, s.id, round(s.score, 6)) for s in small) == \
        sorted((s.kind, s.id, round(s.score, 6)) for s in large)
    assert flagged(small, "nuker") >= 30


def test_a_restored_detector_carries_on_where_the_original_was():
    rng = np.random.default_rng(11)
    events = sorted(background(11) + crowd("film39", rng.integers(1, 3, 40), 55 * DAY, 20 * DAY, "nuker"),
                    key=lambda e: e.ts)
    half = next(k for k, e in enumerate(events) if e.ts >= 58 * DAY)  # in the middle of the campaign
    original, _ = run(events[:half])
    restored = RatingShiftDetector()
    restored.restore(original.snapshot())
    fresh = RatingShiftDetector()  # a restore that does nothing behaves like this one
    _, after_original = run(events[half:], original)
    _, after_restored = run(events[half:], restored)
    _, after_fresh = run(events[half:], fresh)
    key = lambda signals: sorted((s.kind, s.id, round(s.score, 6), repr(s.evidence)) for s in signals)  # noqa
    assert key(after_restored) == key(after_original)
    assert flagged(after_original, "nuker") >= 30
    assert key(after_fresh) != key(after_original)
    assert pickle.loads(restored.snapshot()).keys() == pickle.loads(original.snapshot()).keys()


@pytest.mark.parametrize("direction", ["push", "nuke"])
def test_signals_name_the_direction_and_the_item(direction):
    rng = np.random.default_rng(12)
    stars = rng.integers(4, 6, 50) if direction == "push" else rng.integers(1, 3, 50)
    item = "film10" if direction == "push" else "film39"
    _, signals = run(background(12) + crowd(item, stars, 61 * DAY, 2 * DAY, "x"))
    users = [s for s in signals if s.kind == "user" and s.id.startswith("x")]
    assert users and all(s.evidence["direction"] == direction and s.evidence["item"] == item for s in users)


def ratings_dump(seed: int, extra: list[tuple[str, str, int]], spread: float = 0.0) -> list[RatingEvent]:
    """A dump with no usable time: 3,000 users rate 5 of 200 films each, chosen by a Zipf-like popularity,
    plus the `extra` (user, film, stars) ratings; every rating at one timestamp, or (`spread` seconds) at
    times drawn at random, which carry no signal either."""
    rng = np.random.default_rng(seed)
    clock = np.random.default_rng(seed + 1)
    weight = 1 / np.arange(1, 201) ** 0.6

    def ts() -> float:
        return float(clock.uniform(0.0, spread)) if spread else 0.0
    events = [RatingEvent(event_id=f"d{u}-{i}", ts=ts(), user_id=f"u{u}", item_id=f"film{i}",
                          rating=int(rng.integers(2, 6)))
              for u in range(3000) for i in rng.choice(200, 5, replace=False, p=weight / weight.sum())]
    return events + [RatingEvent(event_id=f"x{k}", ts=ts(), user_id=user, item_id=item, rating=stars)
                     for k, (user, item, stars) in enumerate(extra)]


@pytest.mark.parametrize("spread", [0.0, 200 * DAY], ids=["one timestamp", "random timestamps"])
def test_a_co_visitation_push_in_a_dump_without_time_is_found_by_its_ties(spread):
    """No waves without time, but a push that ties an obscure film to the best sellers still shows: its
    forty accounts each rate the film 5 and four of the eight best sellers; forty real fans of another
    obscure film rate other films as popularity has it, and are left alone. Random timestamps hide it from
    the waves as well as one timestamp does (the push is spread over the whole dump): the item's raters are
    taken whole on the flush tick in either case."""
    rng = np.random.default_rng(9)
    weight = 1 / np.arange(1, 201) ** 0.6
    extra = []
    for k in range(40):
        extra.append((f"pusher{k}", "obscure", 5))
        extra += [(f"pusher{k}", f"film{i}", int(rng.integers(4, 6))) for i in rng.choice(8, 4, replace=False)]
        extra.append((f"fan{k}", "niche", int(rng.integers(4, 6))))
        extra += [(f"fan{k}", f"film{i}", int(rng.integers(2, 6)))
                  for i in rng.choice(200, 4, replace=False, p=weight / weight.sum())]
    _, signals = run(ratings_dump(9, extra, spread))
    assert flagged(signals, "pusher") >= 36
    assert flagged(signals, "fan") + flagged(signals, "u") == 0


def test_a_push_spread_over_two_weeks_on_a_film_with_little_history_is_one_campaign():
    """A wave chart starts over after a week, so a slow push on an obscure film closes as two waves; the
    second must not be judged against a history that the first has filled with 4s and 5s, nor counted among
    the first's later raters: the two are one campaign, judged by the raters who come after it."""
    rng = np.random.default_rng(10)
    organic = background(11, days=30)
    for event in organic:
        object.__setattr__(event, "ts", event.ts + 60 * DAY)
    regulars = [RatingEvent(event_id=f"h{k}", ts=k * DAY / 10, user_id=f"later{k % 14}",
                            item_id=f"film{int(rng.integers(40))}", rating=int(rng.integers(2, 6)))
                for k in range(60 * 10)]
    past = crowd("slow", [3, 2, 4, 3, 3, 2], 5 * DAY, 50 * DAY, "early", seed=10)
    push = crowd("slow", rng.choice([4, 5, 5], 40), 61 * DAY, 14 * DAY, "sleeper", seed=11)
    after = crowd("slow", rng.choice([2, 3, 3, 3, 4], 14), 76 * DAY, 14 * DAY, "later", seed=12)
    _, signals = run(background(10) + organic + regulars + past + push + after)
    assert flagged(signals, "sleeper") >= 36
    assert flagged(signals, "later") + flagged(signals, "early") + flagged(signals, "u") == 0


def test_a_second_tick_with_nothing_new_names_no_one_anew():
    """Campaigns that share accounts are attributed together in a round; a round must say at once what it
    would say if run again, or an idle tick with nothing new raises scores (and re-flags an account an
    analyst released meanwhile). On the demo stream, two campaigns named the same accounts one tick apart."""
    import orjson

    from streams.demo import demo_events

    lines, _ = demo_events(60_000, seed=1)
    ratings = [RatingEvent(event_id=e["event_id"], ts=float(e["ts"]), user_id=e["user_id"], item_id=e["item_id"],
                           rating=int(e["rating"])) for e in map(orjson.loads, lines) if e.get("type") == "rating"]
    detector, signals = run(ratings, batch=2048)
    assert flagged(signals, "u-") > 0
    assert detector.observe([], now=ratings[-1].ts) == []


def test_popularity_kept_up_to_date_item_by_item_equals_a_full_recount():
    """The co-visitation test's popularity is updated only for the items whose histogram moved since it was
    last read (decay, maturing ratings, a chart's held ratings let in): it must equal a full recount. Ten
    days on one film only: the other films' last ratings mature into their histograms meanwhile."""
    events = sorted(background(7, days=70, per_day=50) + crowd("film5", [5] * 40, 61 * DAY, 2 * DAY, "fake"),
                    key=lambda e: e.ts)
    detector, _ = run(events)
    first = detector._popularity().copy()  # read once: later reads update it
    run([RatingEvent(event_id=f"late{k}", ts=70 * DAY + k * 3600.0, user_id=f"late{k}", item_id="film0",
                     rating=3) for k in range(240)], detector)
    assert not np.array_equal(detector._popularity()[1:], first[1:])
    assert np.array_equal(detector._popularity(), [sum(item.hist) for item in detector._state])


def test_five_level_sums_are_numpys_bit_for_bit():
    """Charts' and items' five numbers are summed in plain Python, left to right, where they were numpy
    arrays: the sums (and every outcome after them) are unchanged only while numpy sums five values in
    that order."""
    from detectors.rating_shift import _END_LEVELS, _EXTREME_LEVELS, _sum_at, _total
    rng = np.random.default_rng(4)
    for values in rng.uniform(0, 1, (2000, 5)) * 10.0 ** rng.integers(-3, 4, (2000, 5)):
        assert _total(values.tolist()) == float(values.sum())
        for levels in _END_LEVELS + _EXTREME_LEVELS:
            assert _sum_at(values.tolist(), levels) == float(values[list(levels)].sum())


def test_a_rating_older_than_its_charts_start_is_binned_not_a_crash():
    """Input from several partitions arrives out of event-time order: a rating can join a chart that opened
    after it. The split topology's detection worker once died on exactly this (np.bincount of a negative
    time bin in the cohort test)."""
    from detectors.rating_shift import _Chart

    detector = RatingShiftDetector()
    chart = _Chart(start=10_000.0, last=20_000.0, alarmed=0)
    n = detector.min_organic + 2
    for k in range(n):  # at the top end (4, 5) and elsewhere, some before the chart's start
        chart.raters[f"top{k}"] = (4, (1, 2), 5_000.0 + 2_000.0 * k)
        chart.raters[f"low{k}"] = (1, (2, 3), 9_000.0 + 1_000.0 * k)
    at_end, other = detector._features(chart)  # noqa: SLF001
    assert {row[2] for row in at_end + other} <= set(range(5))
    assert min(row[2] for row in at_end + other) == 0
    assert detector._one_cohort(chart) in (True, False)  # noqa: SLF001
    assert detector._cohort(chart, [f"top{k}" for k in range(n)], 0.5)  # noqa: SLF001
