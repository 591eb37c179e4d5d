"""Profile-injection (shilling) attacks: random, average, bandwagon and segment, each push or nuke.

A fake profile has selected items I_S (rated to borrow credibility), filler items I_F (rated to look
ordinary) and the target items I_T (rated max to push, min to nuke), following the taxonomy of
Mobasher, Burke, Bhaumik & Williams 2007, "Toward trustworthy recommender systems" (ACM TOIT 7(4)):

- random (Lam & Riedl 2004, "Shilling recommender systems for fun and profit"): filler ~ N(global mean, sd);
- average (Lam & Riedl 2004): filler ~ N(item mean, item sd), so the profile hugs the consensus;
- bandwagon (Burke, Mobasher & Bhaumik 2005): a few blockbusters rated max, random filler;
- segment (Burke et al. 2005, "Segment-based injection attacks"): popular items of the target's genre
  rated max, filler min, so the target reaches exactly the segment's fans.

Detection features for these are Burke et al. 2006, "Classification features for recommender attack
detection" (KDD); Gunes et al. 2014 (AI Review) survey the families. Profiles are entered in one sitting
at real users' rhythm, starting anywhere in the attack window.

>>> from simulator.synthetic import synthetic_base
>>> world = World(synthetic_base(n_users=60, n_items=100, n_ratings=2_000, seed=1), seed=0)
>>> attack = average_attack(world, AttackSpec("average", size=5, filler=10))
>>> len(attack.entities), len(world.ratings)  # 5 fakes x (10 filler + 1 target)
(5, 55)
>>> set(world.ratings["rating"][world.ratings["item"] == attack.targets[0]].tolist())
{5}
"""

from __future__ import annotations

import numpy as np

from simulator.world import Attack, AttackSpec, World, clip_rating, profile_times

N_SELECTED = 5  # "a few" selected items, as in Mobasher et al. 2007


def random_attack(world: World, spec: AttackSpec) -> Attack:
    """Random attack: filler ratings from the global rating distribution."""
    def filler(items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return clip_rating(rng.normal(world.global_mean, world.global_sd, items.shape))
    return _plant(world, spec, lambda targets, rng: np.zeros(0, dtype=int), filler)


def average_attack(world: World, spec: AttackSpec) -> Attack:
    """Average attack: filler ratings from each filler item's own mean and deviation."""
    def filler(items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return clip_rating(rng.normal(world.item_mean[items], world.item_sd[items]))
    return _plant(world, spec, lambda targets, rng: np.zeros(0, dtype=int), filler)


def bandwagon_attack(world: World, spec: AttackSpec) -> Attack:
    """Bandwagon attack: a few of the most popular items rated max, random filler."""
    def selected(targets: list[int], rng: np.random.Generator) -> np.ndarray:
        top = [i for i in np.argsort(-world.item_count)[:4 * N_SELECTED] if i not in targets]
        return rng.choice(top, N_SELECTED, replace=False)

    def filler(items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return clip_rating(rng.normal(world.global_mean, world.global_sd, items.shape))
    return _plant(world, spec, selected, filler)


def segment_attack(world: World, spec: AttackSpec) -> Attack:
    """Segment attack: the target's genre's popular items rated max, filler rated min."""
    genres = world.base.genres

    def selected(targets: list[int], rng: np.random.Generator) -> np.ndarray:
        own = np.flatnonzero(genres[targets[0]]) if targets[0] < len(genres) else np.zeros(0, dtype=int)
        own = own[own > 0] if (own > 0).any() else own  # genre 0 is MovieLens' "unknown"
        # The narrowest genre of the target is its segment (fans of film-noir, not of drama).
        segment = own[np.argmin(genres[:, own].sum(axis=0))] if len(own) else 0
        members = np.flatnonzero(genres[:, segment])
        members = members[~np.isin(members, targets)]
        return members[np.argsort(-world.item_count[members])[:N_SELECTED]]
    return _plant(world, spec, selected, lambda items, rng: np.ones(items.shape, dtype=np.int8))


def _plant(world: World, spec: AttackSpec, select, filler_ratings) -> Attack:
    intent = spec.intent or "push"
    if intent not in ("push", "nuke"):
        raise ValueError(f"{spec.family}: intent must be push or nuke, not {intent!r}")
    rng = world.rng("attack", len(world.attacks))
    record = world.attack(spec, "user", intent, n_selected=N_SELECTED)
    targets = world.pick_targets(spec, intent, spec.targets, rng)
    selected = np.asarray(select(targets, rng), dtype=int)
    fakes = world.new_users(spec.count(spec.size, world.n_base_users))
    pool = np.flatnonzero(world.item_count > 0)
    pool = pool[~np.isin(pool, np.r_[targets, selected])]
    n_filler = min(spec.count(spec.filler, len(pool)), len(pool))
    filler = pool[np.argsort(rng.random((len(fakes), len(pool))), axis=1)[:, :n_filler]]

    n_fake = len(fakes)
    items = np.hstack([np.broadcast_to(selected, (n_fake, len(selected))), filler,
                       np.broadcast_to(np.asarray(targets), (n_fake, len(targets)))])
    ratings = np.hstack([np.full((n_fake, len(selected)), 5, dtype=np.int8),
                         filler_ratings(filler, rng).reshape(n_fake, n_filler),
                         np.full((n_fake, len(targets)), 5 if intent == "push" else 1, dtype=np.int8)])
    order = np.argsort(rng.random(items.shape), axis=1)  # rated in no telltale order
    items, ratings = np.take_along_axis(items, order, 1), np.take_along_axis(ratings, order, 1)

    start, end = world.window(spec.spread_seconds or spec.spread, rng)
    sizes = np.full(n_fake, items.shape[1])
    ts = profile_times(rng, rng.integers(start, end + 1, n_fake), sizes, latest=world.t1)
    world.ratings.add(user=np.repeat(fakes, items.shape[1]), item=items.ravel(), rating=ratings.ravel(),
                      ts=ts, label=record.index)
    record.entities, record.targets, record.window = fakes.tolist(), targets, (start, end)
    record.details = {"n_filler": n_filler, "selected_items": [world.item_ids[i] for i in selected]}
    return record
