"""Loose collusive review rings: groups of accounts that promote their groups' products, not tidy blocks.

The shapes follow what the literature finds of real rings. Mukherjee, Liu & Glance 2012, "Spotting fake
reviewer groups in consumer reviews" (WWW): candidate groups come from frequent-itemset mining of Amazon
reviewers (groups of two and more who reviewed the same products), and their spam indicators (group
size, how many of a group's products each member reviews, extreme and early ratings) describe groups
whose members review their products only in part and also review outside the group. Xu & Zhang 2015,
"Towards collusive fraud detection in online reviews" (ICDM): colluders rate their targets at the extreme
and groups overlap. Rayana & Akoglu 2015, "Collective opinion spam detection: bridging review networks
and metadata" (KDD): in their Yelp data sets some 10-14% of the reviews are filtered as spam, much of it by
reviewers with few reviews, i.e. activity is heavy-tailed.

So: group sizes 2-80 with P(size) ~ size^-a; 3-60 products per group, some its own (new, obscure) and some
real existing ones; each member reviews a random 15-90% of its group's products (a log-normal spread of
activity around a per-attack median); some members belong to 2-3 groups; ratings mostly 5 (some 4), and
some groups also 1-star competitors; 0-15 camouflage ratings of popular items near their consensus. In
timed streams a group's reviews arrive over 1-90 days, in a few sittings per member. Parameters are drawn
from simulator.ranges (per attack, or per group for products and days) and kept in truth.json.

>>> from simulator.synthetic import synthetic_base
>>> world = World(synthetic_base(n_users=120, n_items=200, n_ratings=6_000, seed=1), seed=0)
>>> attack = collusion_attack(world, AttackSpec("collusion", accounts=60))
>>> len(attack.entities), all(2 <= len(g["members"]) <= 80 for g in attack.details["groups"])
(60, True)
"""

from __future__ import annotations

import numpy as np

from simulator.catalog import list_new_item
from simulator.world import DAY, WEEK, Attack, AttackSpec, World, distinct_items, fit_sizes, spread_times

MIN_GROUP, MAX_GROUP = 2, 80
MIN_SHARE, MAX_SHARE = 0.15, 0.9


def group_sizes(rng: np.random.Generator, total: int, exponent: float) -> list[int]:
    """Heavy-tailed sizes (P(s) ~ s^-exponent on 2..80) summing to `total` (a lone remainder joins the
    smallest group).

    >>> sizes = group_sizes(np.random.default_rng(0), 500, 2.0)
    >>> sum(sizes), min(sizes) >= 2, max(sizes) <= 80
    (500, True, True)
    """
    support = np.arange(MIN_GROUP, MAX_GROUP + 1)
    weights = support.astype(float) ** -exponent
    sizes: list[int] = []
    left = total
    while left > 0:
        size = int(min(rng.choice(support, p=weights / weights.sum()), left))
        if size < MIN_GROUP:  # one account left over
            if sizes:
                sizes[int(np.argmin(sizes))] += size
            else:
                sizes.append(size)
            break
        sizes.append(size)
        left -= size
    return sizes


def collusion_attack(world: World, spec: AttackSpec) -> Attack:
    rng = world.rng("attack", len(world.attacks))
    n_accounts = spec.accounts if spec.accounts is not None else spec.count(spec.size, world.n_base_users)
    params = {"accounts": n_accounts, **{name: world.draw(rng, f"collusion.{name}") for name in
                                         ("size_exponent", "member_share", "activity_sigma", "real_product_share",
                                          "multi_group_share", "nuke_chance", "four_share", "camouflage")}}
    params = {k: round(v, 3) if isinstance(v, float) else v for k, v in params.items()}
    record = world.attack(spec, "user", "push", drawn=True, **params)
    sizes = group_sizes(rng, n_accounts, params["size_exponent"])
    accounts = world.new_users(n_accounts)
    order = rng.permutation(accounts)
    members = np.split(order, np.cumsum(sizes)[:-1])
    # Some members work for 2-3 groups.
    if len(sizes) > 1:
        for account in rng.choice(accounts, int(round(params["multi_group_share"] * n_accounts)), replace=False):
            for group in rng.choice(len(sizes), int(rng.integers(1, 3)), replace=False):
                if account not in members[group]:
                    members[group] = np.r_[members[group], account]

    rated = np.flatnonzero(world.item_count > 0)
    promoted_pool = rated[world.item_count[rated] <= np.quantile(world.item_count[rated], 0.75)]
    competitor_pool = rated[world.item_count[rated] >= np.quantile(world.item_count[rated], 0.7)]
    span = world.t1 - world.t0
    rows = {"user": [], "item": [], "rating": [], "ts": []}
    groups, targets = [], []
    first_active = np.full(len(world.user_ids), world.t1, dtype=np.int64)
    last_active = np.full(len(world.user_ids), world.t0, dtype=np.int64)
    for group_members in members:
        n_products = world.draw(rng, "collusion.products")
        days = world.draw(rng, "collusion.days")
        width = min(int(days * DAY), span // 2)
        start = int(rng.integers(world.t0 + span // 5, max(world.t1 - width, world.t0 + span // 5 + 1)))
        n_real = int(rng.binomial(n_products, params["real_product_share"]))
        free = np.array([i for i in promoted_pool if int(i) not in world.used_targets], dtype=int)
        real = rng.choice(free, min(n_real, len(free)), replace=False) if len(free) else np.zeros(0, int)
        own = world.new_items(n_products - len(real), start)
        if not world.review_site:
            for item in own:
                list_new_item(world, rng, int(item), start - int(rng.integers(3_600, 5 * DAY)))
        products = np.r_[real, own].astype(int)
        world.used_targets.update(int(i) for i in real)
        nuked = np.zeros(0, dtype=int)
        if rng.random() < params["nuke_chance"]:
            free = np.array([i for i in competitor_pool if int(i) not in world.used_targets], dtype=int)
            if len(free):
                nuked = rng.choice(free, min(int(rng.integers(1, 4)), len(free)), replace=False)
                world.used_targets.update(int(i) for i in nuked)
        # Each member reviews a share of the group's products: log-normal activity around the median.
        share = np.clip(params["member_share"] * rng.lognormal(0.0, params["activity_sigma"], len(group_members)),
                        MIN_SHARE, MAX_SHARE)
        picks = np.minimum(np.maximum(1, np.rint(share * len(products))).astype(int), len(products))
        chosen = distinct_items(rng, _weights_over(products, len(world.item_ids)), picks)
        hits = [rng.random(len(nuked)) < s for s in share]
        n_nuked = np.array([int(h.sum()) for h in hits])
        per_member = picks + n_nuked
        items = np.concatenate([np.r_[c, nuked[h]] for c, h in
                                zip(np.split(chosen, np.cumsum(picks)[:-1]), hits)]).astype(int)
        is_nuke = np.isin(items, nuked)
        stars = np.where(is_nuke, np.where(rng.random(len(items)) < 0.2, 2, 1),
                         np.where(rng.random(len(items)) < params["four_share"], 4, 5))
        arrive = rng.integers(start, start + width + 1, len(group_members))
        finish = np.minimum(arrive + rng.integers(DAY, max(width, DAY) + 1, len(group_members)), world.t1)
        ts = spread_times(rng, arrive, finish, per_member)
        rows["user"].append(np.repeat(group_members, per_member))
        rows["item"].append(items)
        rows["rating"].append(stars)
        rows["ts"].append(ts)
        np.minimum.at(first_active, group_members, arrive)
        np.maximum.at(last_active, group_members, finish)
        groups.append({"members": [world.user_ids[m] for m in group_members],
                       "products": [world.item_ids[i] for i in products],
                       "own_products": len(own), "nuked": [world.item_ids[i] for i in nuked],
                       "window": [start, start + width]})
        targets += [int(i) for i in np.r_[products, nuked]]

    # Camouflage: 0-15 ratings of popular items near their consensus, over the member's active time
    # and a few weeks before it.
    popular = world.popularity(1.0).copy()
    popular[[t for t in targets if t < len(popular)]] = 0.0
    n_camouflage = fit_sizes(rng.integers(0, params["camouflage"] + 1, n_accounts), popular)
    camouflage = distinct_items(rng, popular, n_camouflage)
    begin = np.maximum(first_active[accounts] - rng.integers(0, 4 * WEEK, n_accounts), world.t0)
    rows["user"].append(np.repeat(accounts, n_camouflage))
    rows["item"].append(camouflage)
    rows["rating"].append(world.opinion(camouflage, rng))
    rows["ts"].append(spread_times(rng, begin, np.maximum(last_active[accounts], begin + 1), n_camouflage))

    user, item = np.concatenate(rows["user"]), np.concatenate(rows["item"])
    rating, ts = np.concatenate(rows["rating"]).astype(np.int8), np.concatenate(rows["ts"])
    # A member of two groups rates a shared product once (its first review stands).
    _, keep = np.unique(user.astype(np.int64) * (1 << 32) + item, return_index=True)
    keep = np.sort(keep)
    world.ratings.add(user=user[keep], item=item[keep], rating=rating[keep],
                      ts=np.clip(ts[keep], world.t0, world.t1), label=record.index)
    record.entities, record.targets = accounts.tolist(), list(dict.fromkeys(targets))
    record.window = (int(first_active[accounts].min()), int(last_active[accounts].max()))
    record.details = {"groups": groups, "group_sizes": [len(g["members"]) for g in groups]}
    return record


def _weights_over(products: np.ndarray, n: int) -> np.ndarray:
    """Equal weights on a group's products (index space of every item id minted so far)."""
    weights = np.zeros(n)
    weights[products] = 1.0
    return weights
