"""A benign base that needs no external data, shaped like MovieLens-100K.

Latent-factor users and items (as in matrix factorisation, Koren et al. 2009): users choose items by
popularity (log-normal, so a long tail) tilted by taste, and rate them by bias plus taste, quantised to the
MovieLens rating shares. Users arrive uniformly or in sign-up bursts and rate most of their profile in a
first session, many ratings in the same second, as real MovieLens users do; timestamps are integer seconds.

>>> base = synthetic_base(n_users=50, n_items=80, n_ratings=2_000, seed=3)
>>> base.n_users, base.n_items, int(base.rating.min()) >= 1, int(base.rating.max()) <= 5
(50, 80, True, True)
>>> base.ts.dtype.kind, base.n_ratings > 1_500
('i', True)
"""

from __future__ import annotations

import numpy as np

from simulator.base import Base
from simulator.text import make_title

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]
# MovieLens-100K rating shares for 1..5 stars.
RATING_SHARES = np.array([0.061, 0.114, 0.271, 0.342, 0.212])
ML_START = 874_724_710  # 1997-09-20, so synthetic and real streams share a calendar
DAY = 86_400


def synthetic_base(n_users: int = 943, n_items: int = 1682, n_ratings: int = 100_000, n_factors: int = 8,
                   days: int = 215, start: int = ML_START, seed: int = 0) -> Base:
    """Parameters: sizes as MovieLens-100K by default; `days` of stream from `start`; `seed`."""
    rng = np.random.default_rng([seed, 7001])
    users = rng.normal(size=(n_users, n_factors))
    items = rng.normal(size=(n_items, n_factors))
    taste = users @ items.T / np.sqrt(n_factors)

    # Who rates what: Gumbel-top-k sampling without replacement from popularity x taste.
    popularity = rng.normal(0.0, 1.5, n_items)
    activity = rng.lognormal(0.0, 1.0, n_users)
    minimum = 20
    sizes = minimum + np.floor(activity / activity.sum() * max(n_ratings - minimum * n_users, 0))
    sizes = np.minimum(sizes, n_items // 2).astype(int)
    keys = popularity + 0.7 * taste + rng.gumbel(size=taste.shape)
    order = np.argsort(-keys, axis=1)
    user = np.repeat(np.arange(n_users), sizes)
    item = np.concatenate([order[u, :sizes[u]] for u in range(n_users)])

    # How they rate: biases plus taste, quantised so the star shares match MovieLens.
    score = (rng.normal(0, 0.5, n_users)[user] + 0.3 * popularity[item] + rng.normal(0, 0.6, n_items)[item]
             + taste[user, item] + rng.normal(0, 0.7, len(user)))
    cuts = np.quantile(score, np.cumsum(RATING_SHARES)[:-1])
    rating = (np.searchsorted(cuts, score) + 1).astype(np.int8)

    ts = _timestamps(rng, user, sizes, start, days * DAY)
    # Genres follow taste (so a segment is a group of fans), 1-3 per item.
    n_named = len(GENRES) - 1
    genre_affinity = items @ rng.normal(size=(n_factors, n_named)) + rng.gumbel(size=(n_items, n_named))
    n_genres = rng.choice([1, 2, 3], n_items, p=[0.5, 0.35, 0.15])
    ranks = np.argsort(np.argsort(-genre_affinity, axis=1), axis=1)
    genres = np.zeros((n_items, len(GENRES)), dtype=bool)
    genres[:, 1:] = ranks < n_genres[:, None]
    years = np.clip(np.round(1998 - rng.exponential(12, n_items)), 1922, 1998).astype(int)
    titles = [make_title(rng, int(year)) for year in years]
    return Base(name="synthetic", user=user.astype(np.int32), item=item.astype(np.int32), rating=rating,
                ts=ts, titles=titles, genres=genres, genre_names=GENRES, n_users=n_users)


def _timestamps(rng: np.random.Generator, user: np.ndarray, sizes: np.ndarray, start: int,
                span: int) -> np.ndarray:
    n_users = len(sizes)
    # Sign-ups: most uniform over the first 90% of the span, a third in a handful of bursts.
    bursts = rng.uniform(0.05, 0.85, 6) * span
    in_burst = rng.random(n_users) < 0.35
    signup = np.where(in_burst, rng.choice(bursts, n_users) + rng.normal(0, 0.5 * DAY, n_users),
                      rng.uniform(0, 0.9 * span, n_users))
    # Within a profile: half the gaps are 0 s (a page of ratings submitted at once), the rest about a
    # minute, and now and then the user comes back days later.
    n = len(user)
    gaps = np.where(rng.random(n) < 0.5, 0.0, rng.exponential(45.0, n))
    comeback = rng.random(n) < 0.015
    gaps[comeback] += rng.exponential(12 * DAY, int(comeback.sum()))
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    gaps[first] = 0.0
    offset = np.cumsum(gaps)
    offset -= np.repeat(offset[first], sizes)
    ts = start + np.clip(signup[user] + offset, 0, span)
    return np.floor(ts).astype(np.int64)
