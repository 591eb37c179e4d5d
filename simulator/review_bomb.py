"""Review bombing: a crowd of thin accounts gives one item the lowest (or highest) rating within an hour.

The group-spam pattern of Mukherjee, Liu & Glance 2012, "Spotting fake reviewer groups in consumer reviews"
(WWW) and the rating-behaviour signals of Lim et al. 2010, "Detecting product review spammers using rating
behaviors" (CIKM): accounts with 1-3 ratings each, a burst of extreme ratings on the target, short repetitive
texts. The extra ratings an account gives
go to popular items near their consensus, as a thin real account would.
"""

from __future__ import annotations

import numpy as np

from simulator.text import bomb_review
from simulator.world import Attack, AttackSpec, World, clip_rating

TEXT_SHARE = 0.8


def review_bomb_attack(world: World, spec: AttackSpec) -> Attack:
    """Bomb `spec.targets` items (popular ones by default for a nuke) with `spec.size` thin accounts."""
    intent = spec.intent or "nuke"
    rng = world.rng("attack", len(world.attacks))
    record = world.attack(spec, "user", intent)
    targets = world.pick_targets(spec, intent, spec.targets, rng)
    accounts = world.new_users(spec.count(spec.size, world.n_base_users))
    start, end = world.window(spec.spread, rng)
    popular = np.argsort(-world.item_count)[:50]
    popular = popular[~np.isin(popular, targets)]

    extra = rng.choice([0, 1, 2], len(accounts), p=[0.5, 0.3, 0.2])
    users = np.repeat(accounts, 1 + extra)
    first = np.r_[0, np.cumsum(1 + extra)[:-1]]
    is_target = np.zeros(len(users), bool)
    is_target[first] = True  # each account's first rating is the bomb
    items = np.where(is_target, np.asarray(targets)[rng.integers(0, len(targets), len(users))],
                     rng.choice(popular, len(users)))
    ratings = np.where(is_target, 5 if intent == "push" else 1,
                       clip_rating(rng.normal(world.item_mean[items], world.item_sd[items])))
    arrive = rng.integers(start, end + 1, len(accounts))
    ts = np.minimum(np.repeat(arrive, 1 + extra) + rng.integers(0, 240, len(users)) * ~is_target, world.t1)
    texts = np.array([bomb_review(rng, intent == "push") if bomb and rng.random() < TEXT_SHARE else None
                      for bomb in is_target], dtype=object)
    world.ratings.add(user=users, item=items, rating=ratings.astype(np.int8), ts=ts, label=record.index,
                      text=texts)
    record.entities, record.targets, record.window = accounts.tolist(), targets, (start, end)
    return record
