"""Camouflaged copy attack: fake accounts replay real users' profiles, perturbed and shifted in time,
and add the target rating.

Fake profiles that look like real users' ones evade detectors tuned to synthetic filler distributions
(Tang, Wen & Wang 2020, "Revisiting adversarially learned injection attacks in recommender systems",
NeurIPS; Huang et al. 2021, "Data poisoning attacks to deep learning based recommender systems", NDSS);
the simplest such profile is a perturbed copy of a real one. The obfuscation (noise, dropped items) is in
the spirit of Williams, Mobasher & Burke 2007, "Defending recommender systems: detection of profile
injection attacks" (SOCA).
"""

from __future__ import annotations

import numpy as np

from simulator.world import Attack, AttackSpec, World

DROP_SHARE = 0.1     # items of the source profile left out
NUDGE_SHARE = 0.2    # ratings moved one star up or down
MIN_SOURCE, MAX_SOURCE = 20, 200
MIN_SPARSE_SOURCE = 3


def camouflage_attack(world: World, spec: AttackSpec) -> Attack:
    """Copy `spec.size` real profiles (20-200 ratings), then rate the targets max (push) or min (nuke)."""
    intent = spec.intent or "push"
    rng = world.rng("attack", len(world.attacks))
    record = world.attack(spec, "user", intent, drop_share=DROP_SHARE, nudge_share=NUDGE_SHARE)
    targets = world.pick_targets(spec, intent, spec.targets, rng)
    base = world.base
    order = np.lexsort((base.ts, base.user))
    user, item, rating, ts = base.user[order], base.item[order], base.rating[order], base.ts[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(user)) + 1, len(user)]
    sizes = np.diff(bounds)
    eligible = np.flatnonzero((sizes >= MIN_SOURCE) & (sizes <= MAX_SOURCE))
    if len(eligible) == 0:  # a sparse review site has no profile that long: copy what profiles there are
        eligible = np.flatnonzero(sizes >= MIN_SPARSE_SOURCE)
    fakes = world.new_users(spec.count(spec.size, world.n_base_users))
    sources = rng.choice(eligible, len(fakes), replace=len(fakes) > len(eligible))
    start, end = world.window(spec.spread_seconds or spec.spread, rng)

    columns: dict[str, list[np.ndarray]] = {"user": [], "item": [], "rating": [], "ts": []}
    for fake, source in zip(fakes, sources):
        rows = slice(bounds[source], bounds[source + 1])
        keep = (rng.random(sizes[source]) >= DROP_SHARE) & ~np.isin(item[rows], targets)
        if not keep.any():  # a short source profile lost every item: keep one that is not a target
            keep[np.flatnonzero(~np.isin(item[rows], targets))[:1]] = True
        items, stars, times = item[rows][keep], rating[rows][keep].astype(int), ts[rows][keep]
        nudge = rng.random(len(stars)) < NUDGE_SHARE
        stars = np.clip(stars + nudge * rng.choice([-1, 1], len(stars)), 1, 5)
        # Same rhythm as the original, moved into the attack window (squeezed if it would overrun).
        begin = int(rng.integers(start, end + 1))
        offsets = times - times[0]
        room = max(world.t1 - begin, 1)
        if offsets[-1] > room:
            offsets = np.floor(offsets * (room / offsets[-1])).astype(np.int64)
        times = begin + offsets
        # Target ratings ride along with real-looking ones, in the same second as a random rating.
        target_times = times[rng.integers(0, len(times), len(targets))]
        columns["user"].append(np.full(len(items) + len(targets), fake))
        columns["item"].append(np.r_[items, targets])
        columns["rating"].append(np.r_[stars, [5 if intent == "push" else 1] * len(targets)])
        columns["ts"].append(np.r_[times, target_times])
    world.ratings.add(**{name: np.concatenate(chunks) for name, chunks in columns.items()},
                      label=record.index)
    record.entities, record.targets, record.window = fakes.tolist(), targets, (start, end)
    record.details = {"copied_users": [world.user_ids[base_user] for base_user in user[bounds[sources]]]}
    return record
