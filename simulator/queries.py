"""Recommendation queries: benign API clients, and catalogue sweeps by model-extraction clients.

Benign clients: several hundred light ones (heavy-tailed activity) that ask with a real user's latest
items, and heavy ones whose kinds, numbers, paces, k and reach are drawn at random per stream (`HEAVY`):
batch recommenders that run daily or weekly over the users active since the last run; "similar items"
widgets seeded with the item a visitor just clicked; partner/affiliate clients that fetch the trending and
the newly listed items every few days; search/SEO-like clients that crawl one genre or the most popular
items round after round; and cache warmers that fetch every popular item once per run, split over 1-4
shards (disjoint slices of one list, as a sharded job does). Between them they are heavy (thousands of
queries, k up to 500), broad (a batch run covers much of the catalogue; warmers and SEO crawls cover their
slice evenly, without repeats within a round) and sometimes blind to popularity (new items): a detector
that flags heavy, broad or flat clients fails on them.

Extraction: a `sweep` is one client per sweep, each listed item once, in id order or a random permutation,
fast and with a large k, to copy the model (Tramèr et al. 2016, "Stealing machine learning models via
prediction APIs", USENIX Security; for recommenders, Yue et al. 2021, "Black-box attacks on sequential
recommenders via data-free model extraction", RecSys). A `split_sweep` divides one sweep among 5-20
clients (disjoint contiguous or round-robin slices), each at a heavy benign client's pace and k, over hours
to weeks, some padded with popular seeds (Kesarwani et al. 2018, "Model extraction warning in MLaaS
paradigm", ACSAC, on colluding users).
"""

from __future__ import annotations

import math

import numpy as np

from simulator.world import BENIGN, DAY, Attack, AttackSpec, World

QUERY_SHARE = 0.15          # light and heavy benign queries per base rating, before the heavy kinds' own
LIGHT_CLIENTS = 300
SWEEP_SECONDS = {"burst": 1.5, "hours": 15.0, "days": 500.0}  # mean gap between a sweeper's queries
# Heavy benign clients per stream: how many of each kind (inclusive range) and their share of the
# benign query budget (QUERY_SHARE * ratings) each; every other parameter is drawn per client below.
HEAVY = {"batch": ((1, 3), 0.12), "widget": ((1, 2), 0.08), "partner": ((1, 2), 0.04),
         "seo": ((1, 2), 0.05), "warmer": ((0, 1), 0.06)}
HEAVY_QPS = (1 / 60, 4.0)   # a heavy client's pace while it works: a query a minute to several a second
HEAVY_K = [20, 50, 100, 200, 500]
# A split sweep's campaign length, by `spread`: hours to weeks.
SPLIT_SPREAD = {"burst": (2 * 3_600, 12 * 3_600), "hours": (12 * 3_600, 3 * DAY), "days": (3 * DAY, 21 * DAY)}


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _paced(rng: np.random.Generator, begin: int, n: int, qps: float) -> np.ndarray:
    """`n` integer times from `begin`, exponential gaps at `qps` on average."""
    return begin + np.floor(np.cumsum(rng.exponential(1.0 / qps, n))).astype(np.int64)


class _History:
    """The base's ratings by user and time, to seed queries with a user's latest items."""

    def __init__(self, world: World, rng: np.random.Generator):
        base = world.base
        order = np.lexsort((base.ts, base.user))
        self.user, self.item, self.ts = base.user[order], base.item[order], base.ts[order]
        user_start = np.r_[0, np.flatnonzero(np.diff(self.user)) + 1]
        self.start_of = np.repeat(user_start, np.diff(np.r_[user_start, len(self.user)]))
        self.world, self.rng = world, rng
        self.by_time = np.argsort(self.ts, kind="stable")

    def seeds(self, rows: np.ndarray) -> list[list[str]]:
        # The user's last 1-5 items up to this rating, newest first: what an app sends as context.
        depth = self.rng.integers(1, 6, len(rows))
        ids = self.world.item_ids
        return [[ids[i] for i in self.item[max(self.start_of[r], r - d + 1):r + 1][::-1]]
                for r, d in zip(rows.tolist(), depth.tolist())]

    def latest_rows(self, begin: int, since: int) -> np.ndarray:
        """Each user's latest rating row in [since, begin)."""
        lo, hi = np.searchsorted(self.ts[self.by_time], [since, begin])
        rows = np.sort(self.by_time[lo:hi])
        if len(rows) == 0:
            return rows
        last = np.r_[self.user[rows][1:] != self.user[rows][:-1], True]
        return rows[last]

    def counts(self, begin: int, since: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.ts[self.by_time], [since, begin])
        return np.bincount(self.item[self.by_time[lo:hi]], minlength=self.world.base.n_items)


def benign_queries(world: World) -> None:
    rng = world.rng("benign", "queries")
    history = _History(world, rng)
    n = int(QUERY_SHARE * world.base.n_ratings)
    light = world.new_clients(LIGHT_CLIENTS)

    # Light clients: Zipf-like activity, a query within the hour after a user's rating.
    n_light = int(0.6 * n)
    weights = 1.0 / np.arange(1, LIGHT_CLIENTS + 1) ** 1.1
    clients = rng.choice(light, n_light, p=weights / weights.sum())
    rows = rng.integers(0, len(history.ts), n_light)
    times = np.minimum(history.ts[rows] + rng.integers(0, 3_600, n_light), world.t1)
    ks = rng.choice([10, 20, 50], n_light, p=[0.5, 0.3, 0.2])
    with_user = rng.random(n_light) < 0.9
    for c, r, t, k, has_user, s in zip(clients, rows, times, ks, with_user, history.seeds(rows)):
        world.add_doc(t, BENIGN, "rec_query", client_id=world.client_ids[c],
                      user_id=world.user_ids[history.user[r]] if has_user else None, seed_items=s, k=int(k))

    makers = {"batch": _batch, "widget": _widget, "partner": _partner, "seo": _seo, "warmer": _warmer}
    for kind, ((low, high), share) in HEAVY.items():
        for j in range(int(rng.integers(low, high + 1))):
            kind_rng = world.rng("benign", "queries", kind, j)
            first = len(world.client_ids)
            makers[kind](world, kind_rng, history, max(1, int(share * n * kind_rng.uniform(0.5, 1.5))))
            world.heavy_clients.update({c: kind for c in range(first, len(world.client_ids))})


def _emit(world: World, client: int, when: np.ndarray, seeds: list[list[str]], k: int,
          users: list[str | None] | None = None) -> None:
    when = np.minimum(when, world.t1)
    for n, (t, s) in enumerate(zip(when.tolist(), seeds)):
        world.add_doc(t, BENIGN, "rec_query", client_id=world.client_ids[client],
                      user_id=users[n] if users is not None else None, seed_items=s, k=int(k))


def _batch(world: World, rng: np.random.Generator, history: _History, budget: int) -> None:
    """A batch recommender: every day or week at its hour, one query per user active since its last run,
    seeded with that user's latest items, at a steady pace, with a large k."""
    client = world.new_clients(1)[0]
    cadence = int(rng.choice([1, 7]))
    k, qps, hour = int(rng.choice(HEAVY_K[1:])), _log_uniform(rng, 0.3, HEAVY_QPS[1]), int(rng.integers(0, 24))
    days = np.arange(world.t0 // DAY + 1 + int(rng.integers(0, cadence)), world.t1 // DAY + 1, cadence)
    per_run = max(1, budget // max(len(days), 1))
    for day in days:
        begin = int(day * DAY + hour * 3_600 + rng.integers(0, 600))
        rows = history.latest_rows(begin, begin - cadence * DAY)
        if len(rows) == 0:
            continue
        rows = rng.permutation(rows)[:per_run]
        _emit(world, client, _paced(rng, begin, len(rows), qps), history.seeds(rows), k,
              [world.user_ids[history.user[r]] for r in rows])


def _widget(world: World, rng: np.random.Generator, history: _History, budget: int) -> None:
    """A "similar items" widget: anonymous, seeded with the item just clicked (popular items repeat)."""
    client = world.new_clients(1)[0]
    clicks_ts, clicks_item, clicks_label = world.clicks["ts"], world.clicks["item"], world.clicks["label"]
    benign_clicks = np.flatnonzero(clicks_label == BENIGN)
    if len(benign_clicks) == 0:
        return
    picked = rng.choice(benign_clicks, min(budget, len(benign_clicks)), replace=False)
    k = int(rng.choice([6, 10, 12, 20]))
    _emit(world, client, clicks_ts[picked] + rng.integers(0, 3, len(picked)),
          [[world.item_ids[i]] for i in clicks_item[picked]], k)


def _partner(world: World, rng: np.random.Generator, history: _History, budget: int) -> None:
    """A partner or affiliate site: every few days, the trending items (most rated lately) and the newest
    items listed since its last visit (up to 20-60), each once, in random order. New items have no demand
    yet: this client's seeds ignore popularity."""
    client = world.new_clients(1)[0]
    cadence, trending, newest = int(rng.choice([1, 2, 3, 7])), int(rng.integers(10, 41)), int(rng.integers(20, 61))
    k, qps, hour = int(rng.choice(HEAVY_K[:3])), _log_uniform(rng, *HEAVY_QPS), int(rng.integers(0, 24))
    days = np.arange(world.t0 // DAY + 1 + int(rng.integers(0, cadence)), world.t1 // DAY + 1, cadence)
    visits = []
    for day in days:
        begin = int(day * DAY + hour * 3_600 + rng.integers(0, 1_800))
        hot = np.argsort(-history.counts(begin, begin - 3 * DAY), kind="stable")[:trending]
        new = np.flatnonzero((world.listed_ts > begin - cadence * DAY) & (world.listed_ts <= begin))
        new = new[np.argsort(-world.listed_ts[new], kind="stable")][:newest]  # a "new" feed: the newest
        items = rng.permutation(np.unique(np.r_[hot, new]))
        visits.append((begin, items))
    total = sum(len(items) for _, items in visits)
    if total > budget:  # a partner active for part of the stream: a run of consecutive visits
        sizes = np.cumsum([len(items) for _, items in visits])
        first = int(rng.integers(0, max(1, int(np.searchsorted(sizes, total - budget)) + 1)))
        kept, count = [], 0
        for visit in visits[first:]:
            if count >= budget:
                break
            kept.append(visit)
            count += len(visit[1])
        visits = kept
    for begin, items in visits:
        _emit(world, client, _paced(rng, begin, len(items), qps), [[world.item_ids[i]] for i in items], k)


def _seo(world: World, rng: np.random.Generator, history: _History, budget: int) -> None:
    """A search/SEO-like client: crawls one genre, or the most popular items, round after round (each
    round a fresh random order of the slice: even coverage, no repeat within a round)."""
    client = world.new_clients(1)[0]
    base = world.base
    counts = np.bincount(base.item, minlength=base.n_items)
    genres = [g for g in range(base.genres.shape[1]) if 30 <= base.genres[:, g].sum() <= 0.4 * base.n_items]
    if genres and rng.random() < 0.5:
        items = np.flatnonzero(base.genres[:, int(rng.choice(genres))])
    else:
        items = np.argsort(-counts, kind="stable")[:int(rng.integers(50, 301))]
    k, qps = int(rng.choice(HEAVY_K[:4])), _log_uniform(rng, *HEAVY_QPS)
    rounds = max(2, budget // len(items))
    gap = int(rng.choice([1, 2, 3, 7])) * DAY
    span = world.t1 - world.t0
    start = int(rng.integers(world.t0, max(world.t0 + 1, world.t1 - min(rounds * gap, span))))
    for r in range(rounds):
        order = rng.permutation(items)
        begin = start + r * gap + int(rng.integers(0, 3_600))
        if begin > world.t1:
            break
        _emit(world, client, _paced(rng, begin, len(order), qps), [[world.item_ids[i]] for i in order], k)


def _warmer(world: World, rng: np.random.Generator, history: _History, budget: int) -> None:
    """A cache warmer: every day or week, each of the most popular items (as of the run) once, split
    over 1-4 shards, each a client of its own with a disjoint slice (contiguous or round-robin) of the
    list, in order of popularity, of id or at random: near-uniform coverage of the popular items, no
    repeat within a run."""
    shards = world.new_clients(int(rng.integers(1, 5)))
    size, cadence = int(rng.integers(100, 601)), int(rng.choice([1, 7]))
    k, qps, hour = int(rng.choice(HEAVY_K[:4])), _log_uniform(rng, 0.5, HEAVY_QPS[1]), int(rng.integers(0, 24))
    contiguous, order = rng.random() < 0.5, str(rng.choice(["popularity", "shuffled", "id"]))
    runs = max(2, budget // size)
    days = np.arange(world.t0 // DAY + 1, world.t1 // DAY + 1, cadence)
    first = int(rng.integers(0, max(1, len(days) - runs)))
    for day in days[first:first + runs]:
        begin = int(day * DAY + hour * 3_600 + rng.integers(0, 600))
        popular = np.argsort(-history.counts(begin, begin - 30 * DAY), kind="stable")[:size]
        if order == "shuffled":
            popular = rng.permutation(popular)
        elif order == "id":  # a job that sorts its list by id: an ordered sweep of the head
            popular = popular[np.argsort(np.array(world.item_ids, dtype=object)[popular], kind="stable")]
        for j, client in enumerate(shards):
            items = np.array_split(popular, len(shards))[j] if contiguous else popular[j::len(shards)]
            _emit(world, client, _paced(rng, begin, len(items), qps), [[world.item_ids[i]] for i in items], k)


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


def split_sweep_attack(world: World, spec: AttackSpec) -> Attack:
    """One sweep of the listed catalogue (id order or a random permutation) divided among `spec.size`
    clients (if >= 2, else 5-20 drawn at random), each with a disjoint slice (contiguous, or round-robin),
    each at a heavy benign client's pace and k. The campaign lasts hours to weeks (`SPLIT_SPREAD` by
    `spec.spread`): a client that cannot finish in one sitting works in daily sessions. Half the
    campaigns pad each client's queries with 10-50% popular seeds (drawn by popularity) as camouflage, and
    half send a real user's id with each query."""
    rng = world.rng("attack", len(world.attacks))
    n_clients = int(spec.size) if spec.size >= 2 else int(rng.integers(5, 21))
    order = str(rng.choice(["id", "permutation"]))
    split = str(rng.choice(["contiguous", "interleaved"]))
    k, qps = int(rng.choice(HEAVY_K[:4])), _log_uniform(rng, *HEAVY_QPS)
    padding = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.1, 0.5))
    with_users = bool(rng.random() < 0.5)
    duration = _log_uniform(rng, *SPLIT_SPREAD[spec.spread])
    span = world.t1 - world.t0
    start = int(rng.integers(world.t0 + span // 3, max(world.t1 - int(duration), world.t0 + span // 3 + 1)))
    record = world.attack(spec, "client", None, n_clients=n_clients, order=order, split=split, k=k,
                          qps=round(qps, 4), padding=round(padding, 3), duration_seconds=int(duration))
    listed = np.flatnonzero(world.listed_ts <= start)
    if order == "id":
        sequence = listed[np.argsort(np.array(world.item_ids, dtype=object)[listed], kind="stable")]
    else:
        sequence = rng.permutation(listed)
    slices = (np.array_split(sequence, n_clients) if split == "contiguous"
              else [sequence[j::n_clients] for j in range(n_clients)])
    popularity = (world.item_count + 1.0) / (world.item_count + 1.0).sum()
    clients = world.new_clients(n_clients)
    last = start
    for client, items in zip(clients, slices):
        per_query = rng.choice([1, 2, 3], len(items), p=[0.6, 0.3, 0.1])
        bounds = np.r_[0, np.cumsum(per_query)]
        queries = [items[lo:hi].tolist() for lo, hi in zip(bounds[:-1], bounds[1:]) if lo < len(items)]
        n_pad = int(round(len(queries) * padding / max(1e-9, 1 - padding)))
        for _ in range(n_pad):  # camouflage: popular seeds, at random places in the sequence
            pad = rng.choice(len(popularity), int(rng.integers(1, 3)), replace=False, p=popularity).tolist()
            queries.insert(int(rng.integers(0, len(queries) + 1)), pad)
        when = _sessions(rng, start, duration, len(queries), qps)
        last = max(last, int(when[-1]))
        users = (rng.choice(world.n_base_users, len(queries)) if with_users else [None] * len(queries))
        for t, seeds, u in zip(np.minimum(when, world.t1).tolist(), queries, users):
            world.add_doc(t, record.index, "rec_query", client_id=world.client_ids[client],
                          user_id=None if u is None else world.user_ids[int(u)],
                          seed_items=[world.item_ids[i] for i in seeds], k=k)
    record.entities, record.window = clients.tolist(), (start, min(last, world.t1))
    record.details = {"n_clients": n_clients, "order": order, "split": split, "padding": round(padding, 3),
                      "with_user_ids": with_users}
    return record


def _sessions(rng: np.random.Generator, start: int, duration: float, n: int, qps: float) -> np.ndarray:
    """Times for `n` queries at `qps` spread over `duration` from `start`: one sitting if it fits in a
    day (or the campaign is shorter than a day), else daily sessions of equal size at random hours."""
    days = int(duration // DAY)
    needed = n / qps
    if days < 2 or needed / days > DAY:
        begin = start + int(rng.integers(0, max(1, int(duration - needed)))) if needed < duration else start
        return _paced(rng, begin, n, qps)
    times = []
    for day, size in enumerate(np.array_split(np.arange(n), days)):
        length = len(size) / qps
        begin = start + day * DAY + int(rng.integers(0, max(1, int(DAY - length))))
        times.append(_paced(rng, begin, len(size), qps))
    return np.concatenate(times)
