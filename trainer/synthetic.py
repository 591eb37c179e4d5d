"""Small synthetic streams for tests and smoke runs: taste groups, and a planted push attack.

Users fall into `n_groups` taste groups, each preferring its own slice of the catalogue (with a popularity
skew), so a recommender has structure to find in a few hundred events. `push_attack` adds fake profiles in
the style of the average/bandwagon attacks (Lam & Riedl, WWW 2004; Mobasher et al., TOIT 2007): each rates
the target item top and a handful of popular filler items.

>>> events = synthetic_events(n_users=20, n_items=30, per_user=5, seed=1)
>>> len(events), sorted(events[0])
(100, ['event_id', 'item_id', 'rating', 'ts', 'type', 'user_id'])
>>> attacked, fake_ids = push_attack(events, targets=["i29"], n_fakes=3, filler=4, seed=1)
>>> len(attacked) - len(events), len(fake_ids)
(15, 15)
"""

from __future__ import annotations

import numpy as np


def synthetic_events(n_users: int = 200, n_items: int = 100, per_user: int = 20, n_groups: int = 5,
                     seed: int = 0, t0: float = 1_000_000.0) -> list[dict]:
    rng = np.random.default_rng(seed)
    group_of_item = np.arange(n_items) % n_groups
    popularity = 1.0 / (1 + np.arange(n_items)) ** 0.5
    events = []
    for u in range(n_users):
        group = u % n_groups
        weight = popularity * np.where(group_of_item == group, 8.0, 1.0)
        items = rng.choice(n_items, size=min(per_user, n_items), replace=False, p=weight / weight.sum())
        start = t0 + rng.uniform(0, 50_000)
        for k, item in enumerate(items):
            events.append({"type": "rating", "event_id": f"e{u}-{k}", "ts": float(start + 600 * k),
                           "user_id": f"u{u}", "item_id": f"i{item}", "rating": float(rng.integers(3, 6))})
    events.sort(key=lambda e: e["ts"])
    return events


def push_attack(events: list[dict], targets: list[str], n_fakes: int = 20, filler: int = 10,
                seed: int = 0, popular_pool: int = 50) -> tuple[list[dict], list[str]]:
    """`events` plus fake profiles pushing `targets`, fillers drawn from the `popular_pool` most rated
    items (a small pool is the bandwagon attack); returns (all events, the fake events' ids)."""
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for e in events:
        counts[e["item_id"]] = counts.get(e["item_id"], 0) + 1
    popular = [i for i, _ in sorted(counts.items(), key=lambda kv: -kv[1]) if i not in targets][:popular_pool]
    t_end = max(e["ts"] for e in events)
    fakes = []
    for f in range(n_fakes):
        picks = list(rng.choice(popular, size=min(filler, len(popular)), replace=False)) + list(targets)
        start = t_end - rng.uniform(0, 20_000)
        for k, item in enumerate(picks):
            fakes.append({"type": "rating", "event_id": f"x{f}-{k}", "ts": float(start + 60 * k),
                          "user_id": f"f{f}", "item_id": str(item),
                          "rating": 5.0 if item in targets else float(rng.integers(3, 6))})
    merged = sorted(events + fakes, key=lambda e: e["ts"])
    return merged, [e["event_id"] for e in fakes]
