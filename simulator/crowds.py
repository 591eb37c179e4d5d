"""Benign crowds that real platforms have and MovieLens lacks: trending items, premieres, sign-up waves and
casual raters. Each population's parameters are drawn per stream from simulator.ranges.

- Trending crowds: a film in the news draws 20-300 fresh accounts within hours; each rates it with the
  film's usual opinion (its own rating histogram, with at most a small natural drift) and perhaps one or
  two popular films. Only the crowd's size and freshness are unusual: its opinion is the film's own.
- Premieres: a newly listed film rated in its first days by fresh and established users, with an opinion
  of its own, sometimes divisive (1-2 against 4-5 stars).
- Sign-up waves: a marketing campaign brings 100-600 new accounts within a day or two, each rating 3-20
  popular films in line with the consensus.
- Casual raters: many accounts with 1-8 ratings of popular films spread over weeks, near the consensus.

Their events are labelled benign; truth.json lists each population (`benign_groups`) so that an
evaluation can count how many of its members were flagged.

>>> from simulator.synthetic import synthetic_base
>>> world = World(synthetic_base(n_users=80, n_items=120, n_ratings=4_000, seed=1), seed=0)
>>> trending_crowds(world)
>>> crowd = world.benign_groups[0]
>>> crowd["kind"], 20 <= len(crowd["users"]) <= 300, len(crowd["items"])
('trending', True, 1)
"""

from __future__ import annotations

import numpy as np

from simulator.catalog import list_new_item
from simulator.text import benign_review
from simulator.world import DAY, WEEK, World, distinct_items, fit_sizes, profile_times, spread_times

MIN_HISTORY = 10      # ratings an item needs before its histogram is "its usual opinion"
EXTRA_RATINGS = ([0, 1, 2], [0.5, 0.3, 0.2])  # a fresh crowd account's other ratings, besides the item
REVIEW_SHARE = 0.15   # crowd ratings that come with a short review
MAX_CASUAL, MAX_WAVE = 8, 20


def _texts(world: World, rng: np.random.Generator, ratings: np.ndarray, items: np.ndarray,
           share: float) -> np.ndarray:
    titles = world.base.titles
    return np.array([benign_review(rng, int(r), titles[i] if i < len(titles) else "It")
                     if rng.random() < share else None for r, i in zip(ratings, items)], dtype=object)


def _record(world: World, kind: str, users: np.ndarray, items: list[int], window: tuple[int, int],
            **params: object) -> None:
    # Attacks pick their targets elsewhere: a crowd's flags must not be read as an attack's (or its
    # accounts' as the crowd's) when an evaluation links flags to families through their items.
    world.used_targets.update(int(i) for i in items)
    world.benign_groups.append({"kind": kind, "users": [int(u) for u in users], "items": [int(i) for i in items],
                                "window": (int(window[0]), int(window[1])), "params": params})


def _crowd_profiles(world: World, rng: np.random.Generator, accounts: np.ndarray, item: int,
                    item_ratings: np.ndarray, arrive: np.ndarray) -> None:
    """Each fresh account rates `item` (its given rating) and 0-2 popular items near their consensus, in one
    sitting that starts when it arrives; the item comes anywhere in the sitting."""
    extra = fit_sizes(rng.choice(EXTRA_RATINGS[0], len(accounts), p=EXTRA_RATINGS[1]), world.popularity(1.0), 1)
    others = distinct_items(rng, world.popularity(1.0), extra, exclude=np.full(len(accounts), item))
    sizes = 1 + extra
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    slot = first + rng.integers(0, sizes)  # where in its sitting the account rates the item
    is_item = np.zeros(int(sizes.sum()), bool)
    is_item[slot] = True
    items = np.empty(len(is_item), dtype=np.int64)
    items[is_item], items[~is_item] = item, others
    ratings = np.empty(len(is_item), dtype=np.int8)
    ratings[is_item], ratings[~is_item] = item_ratings, world.opinion(others, rng)
    ts = profile_times(rng, arrive, sizes, latest=world.t1)
    world.ratings.add(user=np.repeat(accounts, sizes), item=items, rating=ratings, ts=ts,
                      text=_texts(world, rng, ratings, items, REVIEW_SHARE))


def _start(world: World, rng: np.random.Generator, width: int) -> int:
    """Anywhere after the first fifth of the stream (items have a history by then), ending inside it."""
    span = world.t1 - world.t0
    earliest = world.t0 + span // 5
    return int(rng.integers(earliest, max(world.t1 - width, earliest + 1)))


def trending_crowds(world: World) -> None:
    rng = world.rng("benign", "trending")
    pool = np.flatnonzero(world.item_count >= MIN_HISTORY)
    if len(pool) == 0:
        return
    pool = pool[np.argsort(world.item_count[pool], kind="stable")]
    taken: set[int] = set()
    for _ in range(world.draw(rng, "trending.crowds")):
        size, hours = world.draw(rng, "trending.size"), world.draw(rng, "trending.hours")
        quantile = world.draw(rng, "trending.popularity_quantile")
        drift = world.draw(rng, "trending.drift") * float(rng.choice([-1.0, 1.0]))
        # The item at that popularity quantile among items with a history (the next free one if taken).
        rank = int(quantile * (len(pool) - 1))
        free = [r for r in range(rank, len(pool)) if int(pool[r]) not in taken] or \
               [r for r in range(len(pool)) if int(pool[r]) not in taken]
        if not free:
            return
        item = int(pool[free[0]])
        taken.add(item)
        width = max(int(hours * 3_600), 60)
        start = _start(world, rng, width)
        accounts = world.new_users(size)
        # News spreads fast, then fades: arrivals front-loaded within the window.
        arrive = start + np.floor(width * rng.beta(1.0, 2.0, size)).astype(np.int64)
        _crowd_profiles(world, rng, accounts, item, world.opinion(np.full(size, item), rng, drift), arrive)
        _record(world, "trending", accounts, [item], (start, start + width), size=size, hours=round(hours, 2),
                popularity_quantile=round(quantile, 3), drift=round(drift, 3))


def premieres(world: World) -> None:
    rng = world.rng("benign", "premiere")
    first_seen = np.full(len(world.user_ids), np.iinfo(np.int64).max)
    np.minimum.at(first_seen, world.base.user, world.base.ts)
    for _ in range(world.draw(rng, "premiere.count")):
        size, days = world.draw(rng, "premiere.size"), world.draw(rng, "premiere.days")
        established_share = world.draw(rng, "premiere.established_share")
        bimodal = bool(rng.random() < world.draw(rng, "premiere.bimodal_chance"))
        mean = world.draw(rng, "premiere.mean")
        stars = np.arange(1, 6)
        if bimodal:  # a divisive film: a camp that hates it and one that loves it
            low = rng.uniform(0.3, 0.7)
            shares = low * np.array([0.6, 0.4, 0.0, 0.0, 0.0]) + (1 - low) * np.array([0.0, 0.0, 0.0, 0.4, 0.6])
            shares = shares + 0.03
        else:
            shares = np.exp(-0.5 * ((stars - mean) / 0.9) ** 2)
        shares = shares / shares.sum()
        width = int(days * DAY)
        start = _start(world, rng, width)
        item = int(world.new_items(1, start)[0])
        if not world.review_site:
            list_new_item(world, rng, item, start - int(rng.integers(600, 6 * 3_600)))
        # Existing users who were around before the premiere rate it once; fresh accounts come for it.
        regulars = np.flatnonzero(first_seen < start)
        n_established = min(int(round(size * established_share)), len(regulars))
        established = rng.choice(regulars, n_established, replace=False)
        fresh = world.new_users(size - n_established)
        arrive = start + np.minimum(rng.exponential(width / 3, size), width - 1).astype(np.int64)
        ratings = rng.choice(stars, size, p=shares).astype(np.int8)
        if n_established:
            world.ratings.add(user=established, item=np.full(n_established, item), rating=ratings[:n_established],
                              ts=np.minimum(arrive[:n_established], world.t1),
                              text=_texts(world, rng, ratings[:n_established], np.full(n_established, item),
                                          REVIEW_SHARE))
        _crowd_profiles(world, rng, fresh, item, ratings[n_established:], arrive[n_established:])
        _record(world, "premiere", np.r_[established, fresh], [item], (start, start + width), size=size,
                days=round(days, 2), established=int(n_established), bimodal=bimodal,
                shares=[round(float(x), 3) for x in shares])


def signup_waves(world: World) -> None:
    rng = world.rng("benign", "signup")
    for _ in range(world.draw(rng, "signup.waves")):
        size, days = world.draw(rng, "signup.size"), world.draw(rng, "signup.days")
        mean, exponent = world.draw(rng, "signup.mean_ratings"), world.draw(rng, "signup.popularity_exponent")
        width = int(days * DAY)
        start = _start(world, rng, width)
        accounts = world.new_users(size)
        sizes = fit_sizes(np.clip(3 + rng.poisson(mean - 3, size), 3, MAX_WAVE), world.popularity(exponent))
        items = distinct_items(rng, world.popularity(exponent), sizes)
        ratings = world.opinion(items, rng)
        arrive = start + rng.integers(0, width, size)
        ts = profile_times(rng, arrive, sizes, latest=world.t1)
        world.ratings.add(user=np.repeat(accounts, sizes), item=items, rating=ratings, ts=ts,
                          text=_texts(world, rng, ratings, items, 0.05))
        _record(world, "signup_wave", accounts, [], (start, start + width), size=size, days=round(days, 2),
                mean_ratings=round(mean, 2), popularity_exponent=round(exponent, 2))


def casual_raters(world: World) -> None:
    """Many thin accounts: 1-8 ratings (truncated geometric) of popular films, spread over weeks."""
    rng = world.rng("benign", "casual")
    share, mean = world.draw(rng, "casual.share"), world.draw(rng, "casual.mean_ratings")
    weeks, exponent = world.draw(rng, "casual.weeks"), world.draw(rng, "casual.popularity_exponent")
    n = max(1, int(share * world.n_base_users))
    accounts = world.new_users(n)
    sizes = fit_sizes(np.minimum(rng.geometric(1.0 / mean, n), MAX_CASUAL), world.popularity(exponent))
    items = distinct_items(rng, world.popularity(exponent), sizes)
    ratings = world.opinion(items, rng)
    first = rng.integers(world.t0, world.t1 + 1, n)
    last = np.minimum(first + (weeks * WEEK * rng.uniform(0.5, 1.5, n)).astype(np.int64), world.t1)
    ts = spread_times(rng, first, last, sizes)
    world.ratings.add(user=np.repeat(accounts, sizes), item=items, rating=ratings, ts=np.minimum(ts, world.t1),
                      text=_texts(world, rng, ratings, items, 0.1))
    _record(world, "casual", accounts, [], (world.t0, world.t1), accounts=n, mean_ratings=round(mean, 2),
            weeks=round(weeks, 2), popularity_exponent=round(exponent, 2))


def benign_crowds(world: World) -> None:
    """Every benign population of this module, in a fixed order (each has its own random stream)."""
    casual_raters(world)
    trending_crowds(world)
    premieres(world)
    signup_waves(world)
