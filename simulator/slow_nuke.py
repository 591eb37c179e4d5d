"""Slow nuke: accounts pull a popular, well-liked film down with 1s and 2s over weeks, a few a day.

A campaign spread thin stays under burst and crowd detectors (the "low and slow" evasion that temporal
detectors are tested against, e.g. Lim et al. 2010, "Detecting product review spammers using rating
behaviors", CIKM; Ye & Akoglu 2015, "Discovering opinion spammer groups by network footprints", ECML PKDD).
20-100 accounts rate the target (mean >= 3.8, top 5% popularity) 1 or 2 over 2-6 weeks, arriving evenly or
in waves; some are fresh (the nuke and 0-2 ordinary ratings in one sitting), some aged (created weeks
before, with 0-15 filler ratings near the consensus before and during the campaign). Parameters are drawn
per attack from simulator.ranges and kept in truth.json.

>>> from simulator.synthetic import synthetic_base
>>> world = World(synthetic_base(n_users=120, n_items=200, n_ratings=6_000, seed=1), seed=0)
>>> attack = slow_nuke_attack(world, AttackSpec("slow_nuke"))
>>> target = attack.targets[0]
>>> bool(world.item_mean[target] >= 3.8), attack.intent
(True, 'nuke')
"""

from __future__ import annotations

import numpy as np

from simulator.world import (DAY, WEEK, Attack, AttackSpec, World, distinct_items, fit_sizes, profile_times,
                             spread_times)

WELL_LIKED = 3.8
POPULAR_QUANTILE = 0.95


def well_liked_popular(world: World) -> np.ndarray:
    """Items in the top 5% by popularity with a mean rating of at least 3.8 (the best-liked popular items
    if none reaches it)."""
    rated = world.item_count[world.item_count > 0]
    popular = np.flatnonzero(world.item_count >= np.quantile(rated, POPULAR_QUANTILE))
    liked = popular[world.item_mean[popular] >= WELL_LIKED]
    return liked if len(liked) else popular[np.argsort(-world.item_mean[popular])[:max(1, len(popular) // 4)]]


def slow_nuke_attack(world: World, spec: AttackSpec) -> Attack:
    rng = world.rng("attack", len(world.attacks))
    size = spec.accounts if spec.accounts is not None else world.draw(rng, "slow_nuke.size")
    params = {"size": size, **{name: world.draw(rng, f"slow_nuke.{name}") for name in
                                   ("weeks", "aged_share", "filler", "waves", "two_share")}}
    params = {k: round(v, 3) if isinstance(v, float) else v for k, v in params.items()}
    record = world.attack(spec, "user", "nuke", drawn=True, **params)
    if spec.target_items:
        (target,) = world.pick_targets(spec, "nuke", 1, rng)
    else:
        candidates = [int(i) for i in well_liked_popular(world) if int(i) not in world.used_targets]
        if not candidates:
            candidates = [int(i) for i in np.argsort(-world.item_count)[:50] if int(i) not in world.used_targets]
        target = int(rng.choice(candidates))
        world.used_targets.add(target)
    start, end = world.window(int(params["weeks"] * WEEK), rng)

    # Arrivals: evenly over the campaign (one wave), or in waves, one in each equal stretch of the
    # campaign, each wave's accounts within a day of its start.
    if params["waves"] == 1:
        arrive = rng.integers(start, end + 1, size)
    else:
        stretch = max(end - start - DAY, 1) / params["waves"]
        wave_starts = start + ((np.arange(params["waves"]) + rng.uniform(0.25, 0.75, params["waves"]))
                               * stretch).astype(np.int64)
        arrive = rng.choice(wave_starts, size) + rng.integers(0, DAY, size)
    arrive = np.minimum(arrive, world.t1)
    nukes = np.where(rng.random(size) < params["two_share"], 2, 1).astype(np.int8)
    accounts = world.new_users(size)
    aged = rng.random(size) < params["aged_share"]
    popular = world.popularity(1.0).copy()
    popular[target] = 0.0

    # Fresh accounts: the nuke and 0-2 ordinary ratings in one sitting, the nuke anywhere in it.
    fresh = np.flatnonzero(~aged)
    extra = fit_sizes(rng.choice([0, 1, 2], len(fresh), p=[0.5, 0.3, 0.2]), popular)
    sizes = 1 + extra
    is_target = np.zeros(int(sizes.sum()), bool)
    is_target[np.r_[0, np.cumsum(sizes)[:-1]].astype(int) + rng.integers(0, sizes)] = True
    others = distinct_items(rng, popular, extra)
    items = np.empty(len(is_target), dtype=np.int64)
    items[is_target], items[~is_target] = target, others
    ratings = np.empty(len(is_target), dtype=np.int8)
    ratings[is_target], ratings[~is_target] = nukes[fresh], world.opinion(others, rng)
    ts = profile_times(rng, arrive[fresh], sizes, latest=world.t1)
    world.ratings.add(user=np.repeat(accounts[fresh], sizes), item=items, rating=ratings, ts=ts,
                      label=record.index)

    # Aged accounts: created 1-8 weeks before the campaign, filler before and during it, the nuke alone.
    old = np.flatnonzero(aged)
    created = np.maximum(start - rng.integers(WEEK, 8 * WEEK, len(old)), world.t0)
    n_filler = fit_sizes(rng.integers(0, params["filler"] + 1, len(old)), popular)
    filler = distinct_items(rng, popular, n_filler)
    filler_ts = spread_times(rng, created, np.full(len(old), end), n_filler)
    world.ratings.add(user=np.r_[np.repeat(accounts[old], n_filler), accounts[old]],
                      item=np.r_[filler, np.full(len(old), target)],
                      rating=np.r_[world.opinion(filler, rng), nukes[old]].astype(np.int8),
                      ts=np.minimum(np.r_[filler_ts, arrive[old]], world.t1), label=record.index)
    record.entities, record.targets, record.window = accounts.tolist(), [target], (start, end)
    record.details = {"aged_accounts": int(aged.sum()), "fresh_accounts": int((~aged).sum())}
    return record
