"""Co-visitation push: groups of accounts rate (and click) best sellers together with one obscure target, so
that item-to-item, implicit-feedback and sequential recommenders learn a tie between them.

Yang, Gong & Cai 2017, "Fake co-visitation injection attacks to recommender systems" (NDSS): fake users
visit the target together with popular items, which co-visitation recommenders then recommend it beside.
Here each account rates 5-25 best sellers (drawn from the top 20-100 items) with 4s and 5s, as an ordinary
fan would, and its group's target with a 5 (sometimes a 4); with a per-attack chance it also clicks its
items in the same session (implicit feedback); it may add 0-5 ordinary filler ratings near the consensus.
Arrivals spread over hours to four weeks. Parameters are drawn per attack from simulator.ranges and kept
in truth.json.

>>> from simulator.synthetic import synthetic_base
>>> world = World(synthetic_base(n_users=120, n_items=200, n_ratings=6_000, seed=1), seed=0)
>>> attack = covisit_attack(world, AttackSpec("covisit"))
>>> len(attack.targets) == attack.params["groups"], 30 <= len(attack.entities) <= 3 * 200
(True, True)
>>> bool(world.item_count[attack.targets].max() <= np.median(world.item_count[world.item_count > 0]))
True
"""

from __future__ import annotations

import numpy as np

from simulator.world import UNSESSIONED, Attack, AttackSpec, World, distinct_items, fit_sizes, profile_times

MIN_BEST, MAX_BEST = 5, 25


def split_accounts(total: int, parts: int) -> list[int]:
    """`total` accounts into at most `parts` groups of near-equal size (at least one each)."""
    parts = max(1, min(parts, total))
    return [total // parts + (k < total % parts) for k in range(parts)]


def covisit_attack(world: World, spec: AttackSpec) -> Attack:
    rng = world.rng("attack", len(world.attacks))
    n_groups = world.draw(rng, "covisit.groups")
    if spec.accounts is not None:
        sizes = split_accounts(spec.accounts, n_groups)
    else:
        sizes = [world.draw(rng, "covisit.group_size") for _ in range(n_groups)]
    params = {"groups": len(sizes), "group_sizes": sizes,
              **{name: world.draw(rng, f"covisit.{name}") for name in
                 ("best_sellers", "top_items", "five_share", "target_four_share", "click_chance", "spread_hours",
                  "filler")}}
    params = {k: round(v, 3) if isinstance(v, float) else v for k, v in params.items()}
    record = world.attack(spec, "user", "push", drawn=True, **params)
    targets = world.pick_targets(spec, "push", len(sizes), rng)
    top = np.argsort(-world.item_count, kind="stable")[:params["top_items"]]
    top = top[~np.isin(top, targets)]
    top_weights = np.zeros(len(world.item_count))
    top_weights[top] = world.item_count[top]
    start, end = world.window(max(int(params["spread_hours"] * 3_600), 60), rng)

    groups, all_accounts = [], []
    for target, size in zip(targets, sizes):
        accounts = world.new_users(size)
        n_best = fit_sizes(np.clip(np.rint(params["best_sellers"] * rng.uniform(0.7, 1.3, size)), MIN_BEST,
                                   MAX_BEST), top_weights)
        best = distinct_items(rng, top_weights, n_best)
        filler_weights = world.popularity(1.0).copy()
        filler_weights[np.r_[top, targets]] = 0.0
        n_filler = fit_sizes(rng.integers(0, params["filler"] + 1, size), filler_weights)
        filler = distinct_items(rng, filler_weights, n_filler)
        best_ratings = np.where(rng.random(len(best)) < params["five_share"], 5, 4)
        target_ratings = np.where(rng.random(size) < params["target_four_share"], 4, 5)
        # Per account: its best sellers, its filler, the target, in a random order within one sitting.
        best_split = np.split(best, np.cumsum(n_best)[:-1])
        best_rating_split = np.split(best_ratings, np.cumsum(n_best)[:-1])
        filler_split = np.split(filler, np.cumsum(n_filler)[:-1])
        items, ratings = [], []
        for k in range(size):
            own = np.r_[best_split[k], filler_split[k], target]
            stars = np.r_[best_rating_split[k], world.opinion(filler_split[k], rng), target_ratings[k]]
            order = rng.permutation(len(own))
            items.append(own[order])
            ratings.append(stars[order])
        per_account = np.array([len(i) for i in items])
        arrive = rng.integers(start, end + 1, size)
        ts = profile_times(rng, arrive, per_account, latest=world.t1)
        users = np.repeat(accounts, per_account)
        items_flat, ratings_flat = np.concatenate(items), np.concatenate(ratings).astype(np.int8)
        world.ratings.add(user=users, item=items_flat, rating=ratings_flat, ts=ts, label=record.index)
        if not world.review_site:
            _click_along(world, rng, record.index, accounts, per_account, users, items_flat, ts,
                         params["click_chance"], top)
        groups.append({"target": world.item_ids[int(target)], "accounts": int(size),
                       "users": [world.user_ids[a] for a in accounts]})
        all_accounts.extend(accounts.tolist())
    record.entities, record.targets, record.window = all_accounts, [int(t) for t in targets], (start, end)
    record.details = {"groups": groups, "best_sellers": [world.item_ids[int(i)] for i in top]}
    return record


def _click_along(world: World, rng: np.random.Generator, label: int, accounts: np.ndarray,
                 per_account: np.ndarray, users: np.ndarray, items: np.ndarray, ts: np.ndarray,
                 click_chance: float, top: np.ndarray) -> None:
    """Clicking accounts click each item they rate, and 0-5 more best sellers, in the session of their
    ratings (implicit feedback is what co-visitation recommenders learn from)."""
    clicking = rng.random(len(accounts)) < click_chance
    rows = np.flatnonzero(np.repeat(clicking, per_account))
    if len(rows) == 0:
        return
    extra = rng.integers(0, 6, int(clicking.sum()))
    extra_users = np.repeat(accounts[clicking], extra)
    first_ts = ts[np.r_[0, np.cumsum(per_account)[:-1]]][clicking]
    extra_ts = np.repeat(first_ts, extra) + rng.integers(0, 600, int(extra.sum()))
    click_ts = np.r_[ts[rows] - rng.integers(5, 120, len(rows)), extra_ts]
    world.clicks.add(user=np.r_[users[rows], extra_users], item=np.r_[items[rows], rng.choice(top, int(extra.sum()))],
                     ts=np.clip(click_ts, world.t0, world.t1), session=UNSESSIONED, label=label)
