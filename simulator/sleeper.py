"""Sleepers: accounts that live weeks as ordinary casual users, then push one obscure film together.

Aged accounts defeat the account-age and thin-profile signals that catch fresh shilling crowds; it is the
"sleeper cell" pattern of fake-account markets (Thomas et al. 2013, "Trafficking fraudulent accounts",
USENIX Security: aged accounts sell at a premium) applied to a rating push. Each of 20-100 accounts is
created 2-8 weeks before the push and gives 3-15 ratings of popular films near their consensus, in a few
sittings over those weeks (with the clicks every rating brings); then, within hours to two weeks, each
rates the target 5 (sometimes 4), in a sitting with 0-2 ordinary ratings. Parameters are drawn per attack
from simulator.ranges and kept in truth.json.

>>> from simulator.synthetic import synthetic_base
>>> world = World(synthetic_base(n_users=120, n_items=200, n_ratings=6_000, seed=1), seed=0)
>>> attack = sleeper_attack(world, AttackSpec("sleeper"))
>>> 20 <= len(attack.entities) <= 100, attack.intent
(True, 'push')
"""

from __future__ import annotations

import numpy as np

from simulator.world import (WEEK, Attack, AttackSpec, World, distinct_items, fit_sizes, profile_times,
                             spread_times)

MIN_LIFE, MAX_LIFE = 3, 15
MIN_LEAD = 2 * WEEK


def sleeper_attack(world: World, spec: AttackSpec) -> Attack:
    rng = world.rng("attack", len(world.attacks))
    size = spec.accounts if spec.accounts is not None else world.draw(rng, "sleeper.size")
    params = {"size": size, **{name: world.draw(rng, f"sleeper.{name}") for name in
                                   ("lead_weeks", "life_ratings", "push_hours", "four_share")}}
    params = {k: round(v, 3) if isinstance(v, float) else v for k, v in params.items()}
    record = world.attack(spec, "user", "push", drawn=True, **params)
    (target,) = world.pick_targets(spec, "push", 1, rng)

    # The push starts after a warm-up third of the stream and after the accounts' weeks of life; a short
    # stream squeezes the life (the lead actually used is recorded).
    span, width = world.t1 - world.t0, max(int(params["push_hours"] * 3_600), 60)
    lead = int(params["lead_weeks"] * WEEK)
    latest = max(world.t1 - width, world.t0 + 1)
    earliest = min(max(world.t0 + lead, world.t0 + span // 3), latest)
    push_start = int(rng.integers(earliest, latest + 1))
    lead = min(lead, push_start - world.t0)
    record.params["lead_seconds_used"] = lead

    accounts = world.new_users(size)
    # Each account's age at the push: between three quarters of the lead and the lead, never under two
    # weeks (unless the stream is too short for that).
    age = np.minimum(np.maximum(lead * rng.uniform(0.75, 1.0, size), MIN_LEAD), lead)
    created = push_start - age.astype(np.int64)
    life_end = np.maximum(push_start - 3_600, created + 1)
    n_life = np.clip(rng.poisson(params["life_ratings"], size), MIN_LIFE, MAX_LIFE)
    n_push_extra = rng.choice([0, 1, 2], size, p=[0.5, 0.3, 0.2])
    popular = world.popularity(1.0).copy()
    popular[target] = 0.0
    n_ordinary = fit_sizes(n_life + n_push_extra, popular)
    n_life = np.minimum(n_life, n_ordinary)
    n_push_extra = n_ordinary - n_life
    ordinary = distinct_items(rng, popular, n_ordinary)  # distinct per account, life and push together
    position = np.arange(len(ordinary)) - np.repeat(np.r_[0, np.cumsum(n_ordinary)[:-1]], n_ordinary)
    is_life = position < np.repeat(n_life, n_ordinary)
    life_items, push_items = ordinary[is_life], ordinary[~is_life]
    life_ts = spread_times(rng, created, life_end, n_life)
    world.ratings.add(user=np.repeat(accounts, n_life), item=life_items, rating=world.opinion(life_items, rng),
                      ts=np.minimum(life_ts, life_end.max()), label=record.index)

    # The push: the target in one sitting with 0-2 ordinary ratings, the target anywhere in it.
    sizes = 1 + n_push_extra
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    is_target = np.zeros(int(sizes.sum()), bool)
    is_target[first + rng.integers(0, sizes)] = True
    items = np.empty(len(is_target), dtype=np.int64)
    items[is_target], items[~is_target] = target, push_items
    ratings = np.empty(len(is_target), dtype=np.int8)
    ratings[is_target] = np.where(rng.random(size) < params["four_share"], 4, 5)
    ratings[~is_target] = world.opinion(push_items, rng)
    arrive = push_start + rng.integers(0, width, size)
    ts = profile_times(rng, arrive, sizes, latest=world.t1)
    world.ratings.add(user=np.repeat(accounts, sizes), item=items, rating=ratings, ts=ts, label=record.index)
    record.entities, record.targets = accounts.tolist(), [int(target)]
    record.window = (int(created.min()), push_start + width)
    record.details = {"push_window": [push_start, push_start + width],
                      "created": [int(created.min()), int(created.max())]}
    return record
