"""Click farm: a group of accounts clicks the same items in lockstep, session after session.

Lockstep behaviour, the same group acting on the same targets within the same minutes, is the signature
that CopyCatch (Beutel et al. 2013, "CopyCatch: stopping group attacks by spotting lockstep behavior in
social networks", WWW) and CatchSync (Jiang et al. 2014, KDD) look for. Each round every account (most of
them: 10% sit a round out) opens a session, clicks all target items within four minutes, and clicks a
popular item or two as camouflage.

>>> from simulator.synthetic import synthetic_base
>>> from simulator.world import AttackSpec
>>> world = World(synthetic_base(n_users=60, n_items=100, n_ratings=2_000, seed=1), seed=0)
>>> attack = click_farm_attack(world, AttackSpec("click_farm", size=8))
>>> len(attack.entities), len(attack.targets), len(set(world.clicks["session"].tolist()))  # 6 rounds
(8, 3, 43)
"""

from __future__ import annotations

import numpy as np

from simulator.world import Attack, AttackSpec, World

ROUNDS = 6
MIN_TARGETS = 3
LOCKSTEP_SECONDS = 240
CAMOUFLAGE_CLICKS = 1.5  # mean per account and round


def click_farm_attack(world: World, spec: AttackSpec) -> Attack:
    """`spec.size` accounts push max(`spec.targets`, 3) unpopular items over six rounds in the window."""
    intent = spec.intent or "push"
    rng = world.rng("attack", len(world.attacks))
    record = world.attack(spec, "user", intent, rounds=ROUNDS, lockstep_seconds=LOCKSTEP_SECONDS)
    targets = world.pick_targets(spec, intent, max(spec.targets, MIN_TARGETS), rng)
    accounts = world.new_users(spec.count(spec.size, world.n_base_users))
    start, end = world.window(spec.spread, rng)
    rounds = np.sort(rng.integers(start, max(end - LOCKSTEP_SECONDS, start + 1), ROUNDS))
    popular = np.argsort(-world.item_count)[:100]

    users, items, times, sessions = [], [], [], []
    for begin in rounds:
        present = accounts[rng.random(len(accounts)) >= 0.1]
        session = world.new_sessions(len(present))
        n_camouflage = rng.poisson(CAMOUFLAGE_CLICKS, len(present))
        for account, sid, extra in zip(present, session, n_camouflage):
            picks = np.r_[rng.permutation(targets), rng.choice(popular, extra)].astype(int)
            users.append(np.full(len(picks), account))
            items.append(picks)
            sessions.append(np.full(len(picks), sid))
            lock = np.sort(rng.integers(0, LOCKSTEP_SECONDS, len(targets)))
            times.append(begin + np.r_[lock, rng.integers(0, 4 * LOCKSTEP_SECONDS, extra)])
    world.clicks.add(user=np.concatenate(users), item=np.concatenate(items),
                     ts=np.minimum(np.concatenate(times), world.t1), session=np.concatenate(sessions),
                     label=record.index)
    record.entities, record.targets, record.window = accounts.tolist(), targets, (start, end)
    record.details = {"round_starts": rounds.tolist()}
    return record
