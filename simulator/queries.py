"""Recommendation queries: benign API clients, and catalogue sweeps by model-extraction clients.

Benign clients (several hundred, heavy-tailed activity) ask for recommendations seeded with a real user's
latest items; among them two heavy batch clients (weekly runs, one query every second or two) and a
"similar items" widget seeded with the item a visitor just clicked. Extraction clients sweep the catalogue,
each item once, in id order or a random permutation, fast and with a large k, to copy the model
(Tramèr et al. 2016, "Stealing machine learning models via prediction APIs", USENIX Security; for
recommenders, Yue et al. 2021, "Black-box attacks on sequential recommenders via data-free model
extraction", RecSys).
"""

from __future__ import annotations

import numpy as np

from simulator.world import BENIGN, DAY, Attack, AttackSpec, World

QUERY_SHARE = 0.15          # benign queries per base rating
LIGHT_CLIENTS = 300
SWEEP_SECONDS = {"burst": 1.5, "hours": 15.0, "days": 500.0}  # mean gap between a sweeper's queries


def benign_queries(world: World) -> None:
    rng = world.rng("benign", "queries")
    base = world.base
    n = int(QUERY_SHARE * base.n_ratings)
    light, batch, widget = world.new_clients(LIGHT_CLIENTS), world.new_clients(2), world.new_clients(1)
    order = np.lexsort((base.ts, base.user))
    user, item, ts = base.user[order], base.item[order], base.ts[order]
    user_start = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    start_of = np.repeat(user_start, np.diff(np.r_[user_start, len(user)]))

    def seeds(rows: np.ndarray) -> list[list[str]]:
        # The user's last 1-5 items up to this rating, newest first: what an app sends as context.
        depth = rng.integers(1, 6, len(rows))
        return [[world.item_ids[i] for i in item[max(start_of[r], r - d + 1):r + 1][::-1]]
                for r, d in zip(rows.tolist(), depth.tolist())]

    # Light clients: Zipf-like activity, a query within the hour after a user's rating.
    n_light = int(0.6 * n)
    weights = 1.0 / np.arange(1, LIGHT_CLIENTS + 1) ** 1.1
    clients = rng.choice(light, n_light, p=weights / weights.sum())
    rows = rng.integers(0, len(ts), n_light)
    times = np.minimum(ts[rows] + rng.integers(0, 3_600, n_light), world.t1)
    ks = rng.choice([10, 20, 50], n_light, p=[0.5, 0.3, 0.2])
    with_user = rng.random(n_light) < 0.9
    for c, r, t, k, has_user, s in zip(clients, rows, times, ks, with_user, seeds(rows)):
        world.add_doc(t, BENIGN, "rec_query", client_id=world.client_ids[c],
                      user_id=world.user_ids[user[r]] if has_user else None, seed_items=s, k=int(k))

    # Heavy batch clients: a weekly run at about 02:00, one query every 1-3 s for the week's active users.
    per_client = int(0.25 * n) // 2
    for offset, client in enumerate(batch):
        days = np.arange(world.t0 // DAY + 1 + 3 * offset, world.t1 // DAY + 1, 7)
        per_run = max(1, per_client // max(len(days), 1))
        for day in days:
            begin = int(day * DAY + 2 * 3_600 + rng.integers(0, 600))
            when = np.minimum(begin + np.cumsum(rng.integers(1, 4, per_run)), world.t1)
            recent = np.flatnonzero((ts < begin) & (ts >= begin - 7 * DAY))
            if len(recent) == 0:
                continue
            picked = rng.choice(recent, per_run)
            for t, r, s in zip(when, picked, seeds(picked)):
                world.add_doc(t, BENIGN, "rec_query", client_id=world.client_ids[client],
                              user_id=world.user_ids[user[r]], seed_items=s, k=100)

    # A "similar items" widget: anonymous, seeded with the item just clicked (popular items repeat).
    clicks_ts, clicks_item, clicks_label = world.clicks["ts"], world.clicks["item"], world.clicks["label"]
    benign_clicks = np.flatnonzero(clicks_label == BENIGN)
    if len(benign_clicks):
        picked = rng.choice(benign_clicks, int(0.15 * n))
        for t, i, k in zip(clicks_ts[picked] + rng.integers(0, 3, len(picked)), clicks_item[picked],
                           rng.choice([10, 12], len(picked))):
            world.add_doc(t, BENIGN, "rec_query", client_id=world.client_ids[widget[0]],
                          seed_items=[world.item_ids[i]], k=int(k))


def sweep_attack(world: World, spec: AttackSpec) -> Attack:
    """Extraction clients (`spec.size` if >= 1, else 2) each sweep every listed item once: the first in
    id order, the next in a random permutation, alternating; 1-3 consecutive items per query, k 200-500."""
    rng = world.rng("attack", len(world.attacks))
    record = world.attack(spec, "client", None, mean_gap_seconds=SWEEP_SECONDS[spec.spread])
    n_clients = int(spec.size) if spec.size >= 1 else 2
    clients = world.new_clients(n_clients)
    first_ts, last_ts, orders = [], [], []
    for n, client in enumerate(clients):
        start, _ = world.window(spec.spread, rng)
        listed = np.flatnonzero(world.listed_ts <= start)
        if n % 2 == 0:
            items = listed[np.argsort(np.array(world.item_ids, dtype=object)[listed], kind="stable")]
        else:
            items = rng.permutation(listed)
        per_query = rng.choice([1, 2, 3], len(items), p=[0.7, 0.2, 0.1])
        bounds = np.r_[0, np.cumsum(per_query)]
        bounds = bounds[bounds < len(items)]
        gaps = rng.exponential(SWEEP_SECONDS[spec.spread], len(bounds))
        when = start + np.floor(np.cumsum(gaps)).astype(np.int64)
        when = np.minimum(when, world.t1)
        k = int(rng.choice([200, 300, 500]))
        for lo, hi, t in zip(bounds, np.r_[bounds[1:], len(items)], when):
            world.add_doc(t, record.index, "rec_query", client_id=world.client_ids[client],
                          seed_items=[world.item_ids[i] for i in items[lo:hi]], k=k)
        first_ts.append(start)
        last_ts.append(int(when[-1]))
        orders.append("id" if n % 2 == 0 else "permutation")
    record.entities, record.window = clients.tolist(), (min(first_ts), max(last_ts))
    record.details = {"orders": orders}
    return record
