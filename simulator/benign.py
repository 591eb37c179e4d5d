"""Benign traffic: the base's ratings (a few with reviews), thin newcomers, clicks and browse-only visitors.

Clicks are generated around every rating, benign or planted alike (a view of the item shortly before
rating it, and some browsing of other items in the same session), so that "has no clicks" or "clicks
nothing but rates" does not separate fakes from real users. Browse-only visitors and thin newcomers exist
so that "no ratings" or "one rating" is not a tell either.
"""

from __future__ import annotations

import numpy as np

from simulator.text import benign_review
from simulator.world import BENIGN, UNSESSIONED, World, clip_rating, profile_times

REVIEW_SHARE = 0.03       # base ratings that come with a short review
NEWCOMER_SHARE = 0.05     # thin benign accounts, as a share of base users
VIEW_SHARE = 0.75         # ratings preceded by a click on the item
BROWSE_CLICKS = 0.5       # mean extra clicks per rating
BROWSER_SHARE = 0.3       # browse-only visitors, as a share of base users
SESSION_GAP = 1_800       # seconds of silence that end a session


def benign_ratings(world: World) -> None:
    rng = world.rng("benign", "ratings")
    base = world.base
    texts = np.full(base.n_ratings, None, dtype=object)
    for row in np.flatnonzero(rng.random(base.n_ratings) < REVIEW_SHARE):
        texts[row] = benign_review(rng, int(base.rating[row]), base.titles[base.item[row]])
    world.ratings.add(user=base.user, item=base.item, rating=base.rating, ts=base.ts, text=texts)


def newcomers(world: World) -> None:
    """Thin real accounts: 1-3 ratings of popular items, near the consensus, sometimes with a review."""
    rng = world.rng("benign", "newcomers")
    users = world.new_users(max(1, int(NEWCOMER_SHARE * world.n_base_users)))
    sizes = rng.choice([1, 2, 3], len(users), p=[0.5, 0.3, 0.2])
    popularity = world.item_count / world.item_count.sum()
    items = rng.choice(len(popularity), int(sizes.sum()), p=popularity)
    ratings = clip_rating(rng.normal(world.item_mean[items], world.item_sd[items]))
    ts = profile_times(rng, rng.integers(world.t0, world.t1 + 1, len(users)), sizes, latest=world.t1)
    texts = np.array([benign_review(rng, int(r), world.base.titles[i]) if rng.random() < 0.3 else None
                      for r, i in zip(ratings, items)], dtype=object)
    world.ratings.add(user=np.repeat(users, sizes), item=items, rating=ratings, ts=ts, text=texts)


def clicks_from_ratings(world: World) -> None:
    """Views before ratings and browsing around them, in sessions; each click keeps its rating's label.

    Clicks a generator made on its own (a co-visitation account clicking its items) wait unsessioned until
    here, and share sessions with their user's ratings by the same rule (silence of SESSION_GAP ends one),
    so no account has two sessions open at once."""
    rng = world.rng("benign", "clicks")
    user, item, ts, label = (world.ratings[name] for name in ("user", "item", "ts", "label"))
    pending = np.flatnonzero(world.clicks["session"] == UNSESSIONED)
    every_user, every_ts = np.r_[user, world.clicks["user"][pending]], np.r_[ts, world.clicks["ts"][pending]]
    in_order = np.lexsort((every_ts, every_user))
    new_session = np.r_[True, (np.diff(every_user[in_order]) != 0) | (np.diff(every_ts[in_order]) > SESSION_GAP)]
    every_session = np.empty(len(every_ts), dtype=np.int64)
    every_session[in_order] = world.new_sessions(int(new_session.sum()))[np.cumsum(new_session) - 1]
    if len(pending):
        world.clicks.assign("session", pending, every_session[len(ts):])
    order = np.lexsort((ts, user))
    user, item, ts, label = user[order], item[order], ts[order], label[order]
    session = every_session[:len(ts)][order]

    viewed = rng.random(len(ts)) < VIEW_SHARE
    extra = rng.poisson(BROWSE_CLICKS, len(ts))
    browse_rows = np.repeat(np.arange(len(ts)), extra)
    popularity = (world.item_count + 1.0) / (world.item_count + 1.0).sum()
    rows = np.r_[np.flatnonzero(viewed), browse_rows]
    items = np.r_[item[viewed], rng.choice(len(popularity), len(browse_rows), p=popularity)]
    lead = np.r_[rng.integers(5, 300, int(viewed.sum())), rng.integers(0, SESSION_GAP, len(browse_rows))]
    world.clicks.add(user=user[rows], item=items, ts=np.maximum(ts[rows] - lead, world.t0),
                     session=session[rows], label=label[rows])


def browsers(world: World) -> None:
    """Visitors who only browse: a few sessions of clicks on popular items, never a rating."""
    rng = world.rng("benign", "browsers")
    visitors = world.new_users(max(1, int(BROWSER_SHARE * world.n_base_users)))
    n_sessions = rng.geometric(0.4, len(visitors))
    session_user = np.repeat(visitors, n_sessions)
    sessions = world.new_sessions(len(session_user))
    sizes = 1 + rng.poisson(4, len(sessions))
    starts = rng.integers(world.t0, world.t1 + 1, len(sessions))
    popularity = (world.item_count + 1.0) ** 0.8
    items = rng.choice(len(popularity), int(sizes.sum()), p=popularity / popularity.sum())
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    steps = rng.integers(5, 120, int(sizes.sum()))
    steps[first] = 0
    offsets = np.cumsum(steps) - np.repeat(np.cumsum(steps)[first], sizes)
    ts = np.minimum(np.repeat(starts, sizes) + offsets, world.t1)
    world.clicks.add(user=np.repeat(session_user, sizes), item=items, ts=ts,
                     session=np.repeat(sessions, sizes), label=BENIGN)
