"""The catalogue: benign listings and upkeep by many sellers, and catalog poisoning by a new seller.

Benign: every item is listed by one of many sellers (a few large, many small) shortly before its first
rating, with the MovieLens title, its genres as tags and a description in the seller's house style; later
some listings get ordinary upkeep (a typo fixed, "(Remastered)", the year re-bracketed, a tag changed), and
a few new sellers join mid-stream with new items. Poisoning: a new seller lists a few dull items and later
rewrites some of them to resemble the current best sellers' text, with keyword stuffing, so that a
content-based recommender retrieves them next to the best sellers (the term and boosting spam of
Gyöngyi & Garcia-Molina 2005, "Web spam taxonomy", AIRWeb, aimed at a catalogue instead of a search index).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from simulator.base import year_of
from simulator.text import make_title
from simulator.world import BENIGN, DAY, Attack, AttackSpec, World

UPKEEP_SHARE = 0.15
TYPO_SHARE = 0.04
LATE_SELLERS = 8
EXTRA_TAGS = ["classic", "family", "cult", "award winner", "dvd", "director's cut", "collector's edition"]
STUFFING = ["bestseller", "top rated", "must watch", "#1", "hit"]
_STOPWORDS = {"the", "a", "an", "of", "and", "in", "on", "to", "la", "le", "les", "el", "de"}


def split_title(title: str) -> tuple[str, str | None]:
    """("Toy Story", "1995") from "Toy Story (1995)"."""
    year = year_of(title)
    core = re.sub(r"\s*\(\d{4}\)\s*$", "", title) if year else title
    return core, year


def _describe(style: int, core: str, year: str | None, genres: list[str]) -> str | None:
    names = ", ".join(genres) or "Feature"
    when = year or "an unknown year"
    return [f"{core} ({when}). {names} film.", f"{names} | {when} | {core}", None,
            f"A {names.lower()} title from {when}: {core}."][style]


def _tags(genres: list[str], year: str | None, with_decade: bool) -> list[str]:
    tags = [genre.lower() for genre in genres]
    if with_decade and year:
        tags.append(f"{year[:3]}0s")
    return tags


def _genre_names(world: World, item: int) -> list[str]:
    if item >= len(world.base.genres):
        return []
    return [world.base.genre_names[g] for g in np.flatnonzero(world.base.genres[item]) if g > 0]


def _typo(rng: np.random.Generator, title: str) -> str:
    words = title.split(" ")
    long = [i for i, word in enumerate(words) if len(word) >= 4 and word.isalpha()]
    if not long:
        return title
    i = long[int(rng.integers(len(long)))]
    j = int(rng.integers(1, len(words[i]) - 1))
    word = words[i]
    words[i] = word[:j - 1] + word[j] + word[j - 1] + word[j + 1:]
    return " ".join(words)


def _list(world: World, ts: int, label: int, item: int, seller: int, **listing: Any) -> None:
    world.listing[item] = {"seller": seller, **listing}
    world.add_doc(ts, label, "catalog_edit", item_id=world.item_ids[item], seller_id=world.seller_ids[seller],
                  **listing)


def benign_catalog(world: World) -> None:
    """Initial listings of every base item, upkeep edits, and late sellers with new items."""
    rng = world.rng("catalog")
    base = world.base
    n_sellers = max(10, base.n_items // 12)
    sellers = world.new_sellers(n_sellers)
    weights = 1.0 / np.arange(1, n_sellers + 1) ** 0.9  # a few large sellers, a long tail of small ones
    owner = rng.choice(sellers, base.n_items, p=weights / weights.sum())
    style, decade = rng.integers(0, 4, n_sellers), rng.random(n_sellers) < 0.5
    first = np.full(base.n_items, world.t1, dtype=np.int64)
    np.minimum.at(first, base.item, base.ts)
    listed = np.maximum(first - rng.integers(3_600, 3 * DAY, base.n_items), world.t0 - 3 * DAY)
    world.listed_ts[:base.n_items] = listed
    typo = rng.random(base.n_items) < TYPO_SHARE

    for item in range(base.n_items):
        seller = int(owner[item])
        core, year = split_title(base.titles[item])
        genres = _genre_names(world, item)
        title = _typo(rng, base.titles[item]) if typo[item] else base.titles[item]
        _list(world, int(listed[item]), BENIGN, item, seller, title=title,
              description=_describe(int(style[seller]), core, year, genres),
              tags=_tags(genres, year, bool(decade[seller])))
        n_edits = int(typo[item]) + int(rng.random() < UPKEEP_SHARE) + int(rng.random() < 0.2 * UPKEEP_SHARE)
        times = np.sort(rng.integers(listed[item] + DAY, max(world.t1, listed[item] + DAY + 1), n_edits))
        for n, ts in enumerate(times):
            _upkeep(world, rng, item, int(ts), fix_typo=bool(typo[item]) and n == 0)
    _late_sellers(world, rng)


def _upkeep(world: World, rng: np.random.Generator, item: int, ts: int, fix_typo: bool) -> None:
    current = dict(world.listing[item])
    seller = current.pop("seller")
    title, tags = current["title"], list(current.get("tags") or [])
    if fix_typo and item < world.base.n_items:
        title = world.base.titles[item]
    else:
        change = int(rng.integers(3))
        core, year = split_title(title)
        if change == 0 and "Remastered" not in title:
            title = f"{title} (Remastered)"
        elif change == 1 and year:
            title = f"{core} [{year}]" if rng.random() < 0.5 else f"{core} - {year}"
        elif len(tags) > 1 and rng.random() < 0.4:
            tags.pop(int(rng.integers(len(tags))))
        else:
            tags.append(EXTRA_TAGS[int(rng.integers(len(EXTRA_TAGS)))])
    current.update(title=title, tags=list(dict.fromkeys(tags)))
    _list(world, ts, BENIGN, item, seller, **current)


def _late_sellers(world: World, rng: np.random.Generator) -> None:
    """New benign sellers join mid-stream, so a new seller is not suspicious in itself."""
    span = world.t1 - world.t0
    for seller in world.new_sellers(LATE_SELLERS):
        join = int(rng.integers(world.t0 + span // 5, max(world.t1 - 2 * DAY, world.t0 + span // 5 + 1)))
        n = int(rng.integers(2, 7))
        listed = join + np.sort(rng.integers(0, 2 * DAY, n))
        genre_names = world.base.genre_names[1:]
        for item, ts in zip(world.new_items(n, listed), listed):
            title = make_title(rng, int(rng.integers(1990, 1999)))
            core, year = split_title(title)
            genres = list(rng.choice(genre_names, int(rng.integers(1, 3)), replace=False))
            _list(world, int(ts), BENIGN, int(item), int(seller), title=title,
                  description=_describe(int(rng.integers(4)), core, year, genres), tags=_tags(genres, year, True))
            if rng.random() < 0.3:
                _upkeep(world, rng, int(item), int(ts + rng.integers(DAY, 10 * DAY)), fix_typo=False)


def list_new_item(world: World, rng: np.random.Generator, item: int, ts: int) -> None:
    """A newly released item (a premiere, a ring's own product) listed the ordinary way, by one of the
    established sellers: labelled data sets label reviewers, not the sellers behind the products."""
    # The seller of a random listed item: large sellers release more, as they list more.
    model = world.listing[int(rng.integers(world.base.n_items))]
    if model is None:
        return
    seller = int(model["seller"])
    title = make_title(rng, int(rng.integers(1990, 1999)))
    core, year = split_title(title)
    genres = list(rng.choice(world.base.genre_names[1:], int(rng.integers(1, 3)), replace=False))
    _list(world, int(ts), BENIGN, int(item), seller, title=title,
          description=_describe(int(rng.integers(4)), core, year, genres), tags=_tags(genres, year, True))


def catalog_poison_attack(world: World, spec: AttackSpec) -> Attack:
    """A new seller lists dull items, then rewrites max(`spec.targets`, 3) of them to imitate best sellers."""
    rng = world.rng("attack", len(world.attacks))
    record = world.attack(spec, "seller", "push")
    start, end = world.window(spec.spread, rng)
    seller = int(world.new_sellers(1)[0])
    join = max(world.t0, start - int(rng.integers(DAY, 5 * DAY)))
    n_rewrites = max(spec.targets, 3)
    listed = join + np.sort(rng.integers(0, DAY, n_rewrites + 3))
    items = world.new_items(len(listed), listed)
    genre_names = world.base.genre_names[1:]
    for item, ts in zip(items, listed):
        title = make_title(rng, int(rng.integers(1985, 1999)))
        core, year = split_title(title)
        genres = [str(rng.choice(genre_names))]
        _list(world, int(ts), record.index, int(item), seller, title=title,
              description=_describe(0, core, year, genres), tags=_tags(genres, year, False))

    best = _best_sellers(world, start)
    keywords = _keywords(world, best)
    rewritten = rng.choice(items, n_rewrites, replace=False)
    times = np.sort(rng.integers(start, end + 1, n_rewrites))
    for n, (item, ts) in enumerate(zip(rewritten, times)):
        model = world.listing[int(best[n % len(best)])]
        core, year = split_title(model["title"])
        own_core, _ = split_title(world.listing[int(item)]["title"])
        stuffing = " ".join(keywords[:6])
        title = (f"{core} ({year}) - {stuffing}" if n % 2 == 0 else
                 f"{core}: {own_core} Edition {stuffing}")[:300]
        fans = ", ".join(split_title(world.listing[int(b)]["title"])[0] for b in best[:3])
        description = (f"{model.get('description') or core + '.'} Best seller! Fans of {fans} will love it. "
                       + " ".join(keywords * 3))
        tags = list(dict.fromkeys(list(model.get("tags") or []) + keywords[:12] + STUFFING))[:50]
        _list(world, int(ts), record.index, int(item), seller, title=title, description=description,
              tags=tags)
    record.entities, record.targets, record.window = [seller], [int(i) for i in rewritten], (start, end)
    record.details = {"imitated_items": [world.item_ids[int(b)] for b in best[:n_rewrites]],
                      "listed_items": [world.item_ids[int(i)] for i in items]}
    return record


def _best_sellers(world: World, before: int, days: int = 14) -> np.ndarray:
    """The most-rated items in the last two weeks: what the poisoner sees on the front page."""
    base = world.base
    recent = (base.ts >= before - days * DAY) & (base.ts < before)
    counts = np.bincount(base.item[recent], minlength=base.n_items)
    if counts.sum() == 0:
        counts = world.item_count
    return np.argsort(-counts, kind="stable")[:10]


def _keywords(world: World, best: np.ndarray) -> list[str]:
    words: list[str] = []
    for item in best[:5]:
        core, _ = split_title(world.listing[int(item)]["title"])
        words += [w.strip(",.:!?'\"").lower() for w in core.split()]
        words += _genre_names(world, int(item))
    return list(dict.fromkeys(w.lower() for w in words if len(w) > 2 and w.lower() not in _STOPWORDS))
