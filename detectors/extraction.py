"""Model extraction: a client sweeping the catalogue through the recommender to clone it.

Per client, over a sliding window, the detector tests two systematic patterns against chance and against
the living population of clients: a sweep in some order of the items (a sign test on successive seeds),
and a sweep without repeats (far fewer repeated seeds than a popularity-driven client of the same volume
would make); either counts only as far as the client reaches the catalogue's tail. Sweeps split among
many clients are `SweepCoverageDetector`'s.

Features, per client over its window (`window_seconds`, at most `max_window_queries` queries):
- order: each second's queries are one step, represented by their smallest seed, in three orders of the
  opaque ids: as strings, as numbers (when numeric) and by first appearance in the stream. Under a benign
  (exchangeable) order z = |ups - downs| / sqrt(steps) is standard normal; a sweep in id order scores
  sqrt(steps).
- repeats: collisions (pairs of equal seeds) against those expected if seeds were drawn by recent demand,
  n (n - 1) / 2 * sum(p^2) (the birthday problem): the smaller of a robust z of the log ratio against the
  population and a Poisson lower tail of the count. A permutation sweep has none.
- reach: the share of the catalogue's tail (items at or below the median recent demand) among the
  client's distinct seeds: a sweep of the catalogue reaches most of it, while heavy benign clients that
  repeat nothing within a round (a crawler of one genre, a cache warmer of the best sellers, a partner
  paging through ids in order) reach a slice of it at most.
- coverage, reported: distinct seeds and their share of the known catalogue, and the mean surprise -log p
  of the seeds under recent demand (a sweep reaches the long tail as often as the head).
- PRADA-style distances between successive queries' first seeds in item-embedding space (the catalogue
  text embeddings from `CatalogDriftDetector.item_vectors`; an item without text gets a unit vector hashed
  from its id, nearly orthogonal to all others, so for such items the distance only says "same seed or
  not"). Their mean as a robust z and the Shapiro-Wilk W of PRADA are reported, not scored: successive
  seeds of a sweep are unrelated catalogue items, whose distances look as normal as those of a client
  serving many users.
- rate and k: queries in the window and mean k, as robust z against the population; they shape the action
  for the serving side. (Breadth as z-scores against the population, of the surprise, of the distinct
  seeds with a large k, was scored before and flagged heavy benign clients: it is reported only.)
- chain (where the serving path logs each query's answer, `RecQueryEvent.answer_items`): the share of the
  client's queries that extend one of its own queries of the last `chain_seconds` by an item that query was
  answered (the newest seed is from the answer, the other seeds are that query's, newest first). A
  data-free extractor grows its synthetic sequences this way, query after query (Yue et al. 2021): nearly
  every query is such a chain. An app's users follow a recommendation now and then; that share is tested
  against `benign_chain_share` (a one-sided binomial test), the most of its queries an honest client's
  users are assumed to build on the list it was just served. Autoplay-style clients, which by design send
  the answer they were given, would pass it: exempt them at the serving side or raise the bound.
Score: max(min(max(order, no repeats), reach), chain), each through a ramp (reach from `min_tail_reach` to
`full_tail_reach`). A flagged client's
signal carries `evidence["action"]` for the `client-actions` topic: throttle a fast or greedy client, add
noise to a slow one's results, with bounds (`min_qps`, `max_noise_scale`, a cap on k).

Parameters: `chunk_events`, the events taken together (see `observe`); `item_vectors` (an object with `item_vectors(ids) -> (vectors, known)`, usually the catalog
detector; None hashes every id; not pickled by `snapshot`); the window; `min_queries` before a client is
scored; `population_seconds`, `min_population_queries` and `min_population` define the living population;
`max_seeds_per_query` counted; `refresh_seconds` between population refreshes; `demand_half_life` of the
popularity a benign client follows; `vector_dim` of the hashed vectors when there is no catalogue text;
`max_clients`, `max_items` bound the state; `min_tail_reach`, `full_tail_reach`; the chain test's
`chain_seconds`, `benign_chain_share`, `context_seeds` (the seeds that identify the query extended), and
its state bounds per client, `max_chain_contexts` queries remembered with their first `max_answer_items`
answers.

References: Juuti et al. 2019, "PRADA: protecting against DNN model stealing attacks", EuroS&P; Tramèr et
al. 2016, "Stealing machine learning models via prediction APIs", USENIX Security; Yue et al. 2021,
"Black-box attacks on sequential recommenders via data-free model extraction", RecSys.

>>> import numpy as np
>>> from detectors.events import RatingEvent, RecQueryEvent
>>> rng = np.random.default_rng(3)
>>> items = [f"item{n:04d}" for n in range(400)]
>>> popularity = 1.0 / np.arange(1, 401) ** 1.1
>>> popularity /= popularity.sum()
>>> detector = ExtractionDetector(min_population=10, refresh_seconds=0)
>>> demand = [RatingEvent(event_id=f"r{n}", ts=0, user_id="u", item_id=items[i], rating=4)
...           for n, i in enumerate(rng.choice(400, 3000, p=popularity))]
>>> _ = detector.observe(demand, now=0.0)
>>> queries = [RecQueryEvent(event_id=f"q{c}-{t}", ts=t * 60.0 + c, client_id=f"c{c}", k=10,
...                          seed_items=[items[i] for i in rng.choice(400, 2, p=popularity)])
...            for t in range(60) for c in range(30)]
>>> queries += [RecQueryEvent(event_id=f"s{t}", ts=t * 9.0 + 45, client_id="sweeper", k=200,
...                           seed_items=[items[i]]) for t, i in enumerate(rng.permutation(400))]
>>> queries.sort(key=lambda q: q.ts)
>>> signals = detector.observe(queries, now=queries[-1].ts)
>>> sorted({s.id for s in signals if s.score >= 0.5})
['sweeper']
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections import deque
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Sequence

import numpy as np
from scipy.stats import binom, norm, poisson, shapiro

from detectors.base import Detector, Signal, dumps_state
from detectors.demand import ItemDemand
from detectors.events import Event, RecQueryEvent
from detectors.robust import location_scale, ramp

DAY = 86_400.0
EMIT_FLOOR = 0.1
MIN_ORDER_STEPS = 20
# Expected collisions below this say nothing either way: a light client repeats nothing by chance alone.
MIN_EXPECTED_COLLISIONS = 5.0
# Scale floors: log-ratios below a factor of ~1.5, surprise below ~0.3 nats and distances below 0.05 are
# differences too small to call any client unusual, however tightly the population agrees.
FLOORS = {"log_rate": 0.4, "log_k": 0.4, "log_distinct": 0.4, "repeat": 0.4, "surprise": 0.3,
          "distance": 0.05}
# Until enough clients have a measurable repeat rate: a client drawing seeds by popularity repeats about
# as often as expected (log ratio 0), within a factor of e.
PRIORS = {"repeat": (0.0, 1.0)}


@dataclass(slots=True)
class _Query:
    ts: float
    seeds: tuple[str, ...]
    k: int
    surprise: float   # summed over the seeds
    distance: float   # to the previous query's seed centroid; nan for a client's first query
    chained: int = -1  # 1: extends an earlier query by an item of its answer; 0: does not; -1: no answer logged

    def __getstate__(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]

    def __setstate__(self, state) -> None:  # snapshots from before the chain test lack `chained`
        _set_fields(self, state)


@dataclass(slots=True)
class _Client:
    queries: deque = field(default_factory=deque)
    counts: dict[str, int] = field(default_factory=dict)  # seed -> occurrences in the window
    n_seeds: int = 0
    collisions: int = 0
    surprise: float = 0.0
    k_sum: int = 0
    distance_sum: float = 0.0
    distance_n: int = 0
    steps: deque = field(default_factory=deque)  # (ts, sign in string, numeric, first-seen order)
    ups: list[int] = field(default_factory=lambda: [0, 0, 0])
    moves: list[int] = field(default_factory=lambda: [0, 0, 0])
    group_ts: float = -math.inf
    group_keys: tuple | None = None
    previous_keys: tuple | None = None
    previous_seed: str | None = None  # the latest query's first seed, for the PRADA-style distance
    last_ts: float = 0.0
    emitted: float = 0.0
    features: dict | None = None  # as of its latest query: what the population statistics read
    # The chain test: the client's recent queries, by their first seeds, with (ts, their answer items); and
    # in the window, the queries with an answer logged and those among them that chain on an answer.
    contexts: dict = field(default_factory=dict)
    answered: int = 0
    chained: int = 0

    def __getstate__(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]

    def __setstate__(self, state) -> None:  # snapshots from before the chain test lack its fields
        _set_fields(self, state)


class ExtractionDetector(Detector):
    name = "extraction"

    def __init__(self, item_vectors: Any = None, window_seconds: float = 7 * DAY,
                 max_window_queries: int = 2000, min_queries: int = 20, max_seeds_per_query: int = 16,
                 population_seconds: float = 30 * DAY, min_population_queries: int = 3,
                 refresh_seconds: float = 300.0, min_population: int = 10, demand_half_life: float = 7 * DAY,
                 vector_dim: int = 64, max_clients: int = 100_000, max_items: int = 500_000,
                 max_noise_scale: float = 0.2, min_qps: float = 0.05, min_tail_reach: float = 0.4,
                 full_tail_reach: float = 0.6, chunk_events: int = 256, chain_seconds: float = 3_600.0,
                 benign_chain_share: float = 0.5, context_seeds: int = 3, max_chain_contexts: int = 512,
                 max_answer_items: int = 20):
        self.item_vectors = item_vectors
        self.window_seconds = window_seconds
        self.max_window_queries = max_window_queries
        self.min_queries = min_queries
        self.max_seeds_per_query = max_seeds_per_query
        self.population_seconds = population_seconds
        self.min_population_queries = min_population_queries
        self.refresh_seconds = refresh_seconds
        self.min_population = min_population
        self.vector_dim = vector_dim
        self.max_clients = max_clients
        self.max_items = max_items
        self.max_noise_scale = max_noise_scale
        self.min_qps = min_qps
        self.min_tail_reach = min_tail_reach
        self.full_tail_reach = full_tail_reach
        self.chunk_events = chunk_events
        self.chain_seconds = chain_seconds
        self.benign_chain_share = benign_chain_share
        self.context_seeds = context_seeds
        self.max_chain_contexts = max_chain_contexts
        self.max_answer_items = max_answer_items
        self._pending: list[Event] = []  # the events of the chunk under way
        self._clock = -math.inf          # the latest event time of the chunks taken
        self._demand = ItemDemand(demand_half_life, max_items)
        self._first_seen: dict[str, int] = {}  # item -> order of first appearance in any event
        self._next_seen = 0
        self._clients: dict[str, _Client] = {}
        self._refreshed_at = -math.inf
        self._population: dict[str, tuple[float, float]] = {}
        self._population_size = 0
        self._log_total = 0.0       # log of total smoothed demand, as of the last refresh
        self._sum_p2 = 0.0          # sum of squared demand shares, as of the last refresh
        self._half_event = 0.5      # half an event's weight: the smoothing of the demand shares
        self._tail_demand = 0.0     # the median item's demand, and how many items have at most that
        self._tail_size = 0

    # -- the interface ------------------------------------------------------------------------------
    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        """The events are taken in chunks of `chunk_events` counted from the stream's start, each at its own
        latest event time, so that clients are scored and the population refreshed at the same events
        whatever the batches; the rest of a chunk waits for the next batch or a tick (which takes it as it
        is, as every driver ticks at the same points of a replay)."""
        if not events:
            chunk, self._pending = self._pending, []
            return self._observe_chunk(chunk, max([now, *(event.ts for event in chunk)]))
        signals: list[Signal] = []
        pending, size = self._pending, self.chunk_events
        for event in events:
            pending.append(event)
            if len(pending) >= size:
                self._clock = max(self._clock, max(event.ts for event in pending))
                signals += self._observe_chunk(pending, self._clock)
                pending = self._pending = []
        return signals

    def _observe_chunk(self, events: Sequence[Event], now: float) -> list[Signal]:
        queries: list[RecQueryEvent] = []
        demand: list[tuple[str, float]] = []
        first_seen = self._first_seen
        for event in events:
            kind = event.type
            if kind == "rec_query":
                queries.append(event)
                continue
            if kind == "rating" or kind == "click":
                demand.append((event.item_id, event.ts))
            if event.item_id not in first_seen:
                self._see(event.item_id)
                first_seen = self._first_seen  # a new dict when the oldest half was forgotten
        self._demand.add_many(demand)
        due = now - self._refreshed_at >= self.refresh_seconds
        if due:
            self._refresh_demand()
        touched: dict[str, _Client] = {}
        if queries:
            for query, distance in zip(queries, self._distances(queries)):
                touched[query.client_id] = self._add(query, distance)
        for client in touched.values():
            client.features = self._features(client)
        if due:
            self._refresh_population(now)
        signals = []
        if self._population_size >= self.min_population:
            for client_id, client in touched.items():
                signal = self._score(client_id, client, now)
                if signal is not None:
                    signals.append(signal)
        return signals

    def snapshot(self) -> bytes:
        # The item-vector source is another detector, wired in again by whoever restores.
        state = {key: value for key, value in self.__dict__.items() if key != "item_vectors"}
        return dumps_state(state)

    def restore(self, state: bytes) -> None:
        source = self.item_vectors
        self.__dict__.update({"_pending": [], "_clock": -math.inf, "chunk_events": 256, "chain_seconds": 3_600.0,
                              "benign_chain_share": 0.5, "context_seeds": 3, "max_chain_contexts": 512,
                              "max_answer_items": 20})  # older snapshots
        self.__dict__.update(pickle.loads(state))
        self.item_vectors = source

    # -- per query ----------------------------------------------------------------------------------------
    def _see(self, item_id: str) -> int:
        seen = self._first_seen.get(item_id)
        if seen is None:
            seen = self._first_seen[item_id] = self._next_seen
            self._next_seen += 1
            if len(self._first_seen) > self.max_items:
                self._forget_items()
        return seen

    def _forget_items(self) -> None:
        # Keep the most recently first-seen half; their order among themselves is unchanged.
        ranked = sorted(self._first_seen.items(), key=lambda pair: pair[1])[len(self._first_seen) // 2:]
        self._first_seen = dict(ranked)

    def _client(self, client_id: str, ts: float) -> _Client:
        client = self._clients.get(client_id)
        if client is None:
            if len(self._clients) >= self.max_clients:
                self._forget_clients(ts)
            client = self._clients[client_id] = _Client(last_ts=ts)
        return client

    def _add(self, query: RecQueryEvent, distance: float) -> _Client:
        client = self._client(query.client_id, query.ts)
        client.last_ts = max(client.last_ts, query.ts)
        seeds = tuple(query.seed_items[: self.max_seeds_per_query])
        counts, demand, floor, log = client.counts, self._demand.counts, self._half_event, math.log
        # -log of each seed's share of recent demand, smoothed by half an event per item so that an item
        # nobody rated lately is very surprising but not infinitely so.
        surprise = len(seeds) * self._log_total
        collisions = 0
        for seed in seeds:
            surprise -= log(demand.get(seed, 0.0) + floor)
            seen = counts.get(seed, 0)
            collisions += seen
            counts[seed] = seen + 1
        client.collisions += collisions
        client.n_seeds += len(seeds)
        client.surprise += surprise
        client.k_sum += query.k
        if not math.isnan(distance):
            client.distance_sum += distance
            client.distance_n += 1
        chained = self._chain(client, query)
        if chained >= 0:
            client.answered += 1
            client.chained += chained
        client.queries.append(_Query(query.ts, seeds, query.k, surprise, distance, chained))
        self._order_step(client, query.ts, seeds)
        self._expire(client, query.ts)
        return client

    def _chain(self, client: _Client, query: RecQueryEvent) -> int:
        """1 when the query extends one of the client's recent queries by an item that query was answered
        (newest seed from the answer, the others that query's seeds), 0 when not, -1 when no answer is
        logged; then the query itself is remembered with its answer."""
        if query.answer_items is None:
            return -1
        seeds, width, contexts = query.seed_items, self.context_seeds, client.contexts
        horizon = query.ts - self.chain_seconds
        while contexts:  # oldest first: insertion order, and a key asked again is moved to the end
            oldest = next(iter(contexts))
            if contexts[oldest][0] >= horizon and len(contexts) < self.max_chain_contexts:
                break
            del contexts[oldest]
        chained = 0
        if len(seeds) >= 2:
            before = contexts.get(tuple(seeds[1:1 + width]))
            chained = int(before is not None and seeds[0] in before[1])
        key = tuple(seeds[:width])
        contexts.pop(key, None)
        contexts[key] = (query.ts, frozenset(query.answer_items[: self.max_answer_items]))
        return chained

    def _order_step(self, client: _Client, ts: float, seeds: tuple[str, ...]) -> None:
        if not seeds:
            return
        # First appearance is the catalogue's order (listings, ratings, clicks), never the queries' own:
        # a client that is first to mention items would otherwise manufacture its own ascending order.
        seen = [self._first_seen[seed] for seed in seeds if seed in self._first_seen]
        keys = (min(seeds), _numeric_min(seeds), min(seen) if seen else None)
        if ts == client.group_ts and client.group_keys is not None:
            # Queries in one second are one step: ties in time carry no order of their own.
            client.group_keys = tuple(_min_none(a, b) for a, b in zip(client.group_keys, keys))
            return
        if client.group_keys is not None and client.previous_keys is not None:
            signs = tuple(_sign(now, before) for now, before in zip(client.group_keys, client.previous_keys))
            client.steps.append((client.group_ts, signs))
            for j, sign in enumerate(signs):
                client.moves[j] += sign != 0
                client.ups[j] += sign > 0
        if client.group_keys is not None:
            client.previous_keys = client.group_keys
        client.group_ts, client.group_keys = ts, keys

    def _expire(self, client: _Client, now: float) -> None:
        horizon = now - self.window_seconds
        queries = client.queries
        while queries and (queries[0].ts < horizon or len(queries) > self.max_window_queries):
            old = queries.popleft()
            for seed in old.seeds:
                left = client.counts[seed] - 1
                client.collisions -= left
                if left:
                    client.counts[seed] = left
                else:
                    del client.counts[seed]
            client.n_seeds -= len(old.seeds)
            client.surprise -= old.surprise
            client.k_sum -= old.k
            if old.chained >= 0:
                client.answered -= 1
                client.chained -= old.chained
            if not math.isnan(old.distance):
                client.distance_sum -= old.distance
                client.distance_n -= 1
        steps = client.steps
        while steps and (steps[0][0] < horizon or len(steps) > self.max_window_queries):
            for j, sign in enumerate(steps.popleft()[1]):
                client.moves[j] -= sign != 0
                client.ups[j] -= sign > 0

    def _forget_clients(self, now: float) -> None:
        horizon = now - self.population_seconds
        idle = [c for c, state in self._clients.items() if state.last_ts < horizon]
        if len(self._clients) - len(idle) >= self.max_clients:  # still too many: the least recent go
            idle = sorted(self._clients, key=lambda c: self._clients[c].last_ts)[: len(self._clients) // 10]
        for client_id in idle:
            del self._clients[client_id]

    # -- item vectors (for the PRADA-style distances) -----------------------------------------------------
    def _distances(self, queries: list[RecQueryEvent]) -> list[float]:
        """Distance from each query's first seed to its client's previous query's first seed (nan for a
        first query), for the whole batch at once. The first seed, not the centroid: a centroid of five
        items sits nearer every other centroid than one item does, so the number of seeds per query would
        masquerade as breadth. A client keeps only the id of its latest first seed; vectors are gathered
        when needed (no per-client vectors, no matrix products: small BLAS calls stall on a busy CPU)."""
        pairs: list[tuple[str, str]] = []
        rows: list[int] = []
        latest: dict[str, str] = {}
        for row, query in enumerate(queries):
            if not query.seed_items:
                continue
            seed = query.seed_items[0]
            before = latest.get(query.client_id)
            if before is None:
                client = self._clients.get(query.client_id)
                before = client.previous_seed if client is not None else None
            if before is not None:
                pairs.append((seed, before))
                rows.append(row)
            latest[query.client_id] = seed
        for client_id, seed in latest.items():
            self._client(client_id, queries[0].ts).previous_seed = seed
        distances = [math.nan] * len(queries)
        if pairs:
            now, before = self._vectors_of([a for a, _ in pairs]), self._vectors_of([b for _, b in pairs])
            for row, distance in zip(rows, np.linalg.norm(now - before, axis=1).tolist()):
                distances[row] = distance
        return distances

    def _vectors_of(self, item_ids: list[str]) -> np.ndarray:
        """Catalogue text embeddings where known, else vectors hashed from the ids (unit rows)."""
        if self.item_vectors is None:
            return hashed_vectors(item_ids, self.vector_dim)
        vectors, known = self.item_vectors.item_vectors(item_ids)
        if vectors.shape[1] == 0:  # the catalogue has no text yet
            return hashed_vectors(item_ids, self.vector_dim)
        unknown = np.flatnonzero(~known)
        if len(unknown):
            vectors[unknown] = hashed_vectors([item_ids[n] for n in unknown], vectors.shape[1])
        return vectors

    # -- the population -----------------------------------------------------------------------------------
    def _refresh_demand(self) -> None:
        counts = self._demand.counts
        unit = self._demand.unit()
        n_items = max(len(self._first_seen), len(counts), 1)
        smoothed = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) + 0.5 * unit
        total = float(smoothed.sum()) + 0.5 * unit * max(n_items - len(counts), 0)
        self._log_total = math.log(total) if total > 0 else 0.0
        self._half_event = 0.5 * unit
        unseen = max(n_items - len(counts), 0) * (0.5 * unit) ** 2
        self._sum_p2 = float((smoothed ** 2).sum() + unseen) / total ** 2 if total > 0 else 0.0
        # The tail: items at or below the median demand (items never rated or clicked have none).
        raw = np.r_[smoothed - 0.5 * unit, np.zeros(max(n_items - len(counts), 0))]
        self._tail_demand = float(np.partition(raw, len(raw) // 2)[len(raw) // 2]) if len(raw) else 0.0
        self._tail_size = int((raw <= self._tail_demand).sum())

    def _refresh_population(self, now: float) -> None:
        self._refreshed_at = now
        # The living population: every client active lately with a few queries, as of its latest query.
        # Light clients are most of it and are what a benign client looks like.
        horizon = now - self.population_seconds
        rows = [client.features for client in self._clients.values()
                if client.last_ts >= horizon and client.features is not None
                and client.features["queries"] >= self.min_population_queries]
        self._population_size = len(rows)
        for client_id in [c for c, state in self._clients.items() if state.last_ts < horizon]:
            del self._clients[client_id]  # idle past the population horizon: forgotten
        if len(rows) < self.min_population:
            return
        for name, floor in FLOORS.items():
            values = [row[name] for row in rows if row.get(name) is not None]
            if len(values) >= self.min_population:
                self._population[name] = location_scale(np.asarray(values), floor)

    def _features(self, client: _Client) -> dict[str, Any]:
        n = len(client.queries)
        expected = client.n_seeds * (client.n_seeds - 1) / 2 * self._sum_p2
        return {
            "queries": n,
            "log_rate": math.log(n),
            "log_k": math.log(client.k_sum / n),
            "log_distinct": math.log(max(len(client.counts), 1)),
            # How many fewer repeats than popularity predicts: log of observed over expected collisions.
            "repeat": (math.log((client.collisions + 0.5) / (expected + 0.5))
                       if expected >= MIN_EXPECTED_COLLISIONS else None),
            "surprise": client.surprise / max(client.n_seeds, 1),
            "distance": client.distance_sum / client.distance_n if client.distance_n else None,
            "expected_collisions": expected,
        }

    def _z(self, name: str, value: float | None) -> float:
        if value is None:
            return 0.0
        centre, scale = self._population.get(name, PRIORS.get(name, (value, 1.0)))
        return (value - centre) / scale

    # -- scoring ------------------------------------------------------------------------------------------
    def _no_repeat_z(self, client: _Client, features: dict[str, Any], z_repeat: float) -> float:
        """Evidence of fewer repeated seeds than chance allows, as a z-score: the smaller of two views.
        Against the population, the log ratio of observed to expected collisions (sign flipped: fewer is
        the evidence), which absorbs how benign clients really repeat; and a Poisson lower tail on the count
        itself, with the expectation scaled by the population's typical ratio, which knows that 3 where 10
        were expected happens to one client in a hundred while 0 where 50 were expected never does."""
        if features["repeat"] is None or -z_repeat < 2.0:
            return max(0.0, -z_repeat) if features["repeat"] is not None else 0.0
        typical = math.exp(self._population.get("repeat", PRIORS["repeat"])[0])
        tail = float(poisson.cdf(client.collisions, features["expected_collisions"] * typical))
        return min(-z_repeat, float(norm.isf(max(tail, 1e-300))))

    def _chain_z(self, client: _Client) -> float:
        """How far the client's share of chained queries lies above `benign_chain_share`, as the z-score of
        a one-sided binomial tail (0 below the bound or with too few answered queries)."""
        n, chained = client.answered, client.chained
        if n < self.min_queries or chained <= n * self.benign_chain_share:
            return 0.0
        tail = float(binom.sf(chained - 1, n, self.benign_chain_share))  # P(at least this many | benign)
        return float(norm.isf(max(tail, 1e-300)))

    def _score(self, client_id: str, client: _Client, now: float) -> Signal | None:
        if len(client.queries) < self.min_queries:
            return None
        features = client.features
        z_order, order_name = 0.0, None
        for j, name in enumerate(("string", "numeric", "first_seen")):
            if client.moves[j] >= MIN_ORDER_STEPS:
                z = abs(2 * client.ups[j] - client.moves[j]) / math.sqrt(client.moves[j])
                if z > z_order:
                    z_order, order_name = z, name
        z = {name: self._z(name, features[name]) for name in FLOORS}
        z_no_repeat = self._no_repeat_z(client, features, z["repeat"])
        z_even = max(z["surprise"], z["distance"])
        # The sign test is calibrated on its own (standard normal under benign order); checked after every
        # batch for months, it needs a high bar: 5 sigma is 3e-7 per look.
        ordered = ramp(z_order, 4.0, 6.0)
        permutation = ramp(z_no_repeat, 2.0, 4.0)
        z_chain = self._chain_z(client)
        chain = ramp(z_chain, 4.0, 6.0)  # a binomial tail, calibrated on its own: the sign test's bar
        score = max(ordered, permutation, chain)
        if score < EMIT_FLOOR or score < client.emitted + 0.05:
            return None
        # Reach: the share of the catalogue's tail among the client's seeds in the window. Without it, a
        # crawler of one genre, a cache warmer of the best sellers (both without repeats within a round)
        # or a partner paging through ids in order would be flagged like a sweep of the whole catalogue;
        # z-scores of breadth against the population (the surprise of the seeds, their number and k) were
        # used here and flagged such heavy benign clients.
        reach = self._tail_reach(client)
        # The chain needs no reach: an extractor that follows the answers stays where the model leads it.
        score = max(min(max(ordered, permutation), ramp(reach, self.min_tail_reach, self.full_tail_reach)), chain)
        if score < EMIT_FLOOR or score < client.emitted + 0.05:
            return None
        client.emitted = score
        distances = [q.distance for q in list(client.queries)[-500:] if not math.isnan(q.distance)]
        prada_w = None
        if len(distances) >= 20 and np.ptp(distances) > 0:
            prada_w = float(shapiro(distances).statistic)
        span = max(client.queries[-1].ts - client.queries[0].ts, 1.0)
        evidence = {
            "queries": len(client.queries), "seeds": client.n_seeds, "distinct_seeds": len(client.counts),
            "catalog_share": round(len(client.counts) / max(len(self._first_seen), 1), 4),
            "order": {"z": round(z_order, 2), "by": order_name},
            "repeats": {"observed": client.collisions, "expected": round(features["expected_collisions"], 1),
                        "z": round(z_no_repeat, 2)},
            "coverage": {"surprise_z": round(z["surprise"], 2), "distance_z": round(z["distance"], 2)},
            "prada": {"mean_distance": round(features["distance"] or 0.0, 3),
                      "shapiro_w": None if prada_w is None else round(prada_w, 4)},
            "rate": {"queries_per_second": round(len(client.queries) / span, 4),
                     "z": round(z["log_rate"], 2)},
            "k": {"mean": round(client.k_sum / len(client.queries), 1), "z": round(z["log_k"], 2)},
            "distinct_z": round(z["log_distinct"], 2),
            "tail_reach": round(reach, 3),
            "chain": {"answered": client.answered, "chained": client.chained,
                      "share": round(client.chained / client.answered, 3) if client.answered else None,
                      "z": round(z_chain, 2)},
            "breadth": {"even_z": round(z_even, 2), "greedy_z": round(min(z["log_distinct"], z["log_k"]), 2)},
        }
        evidence["action"] = self._action(score, z, len(client.queries) / span)
        return Signal("client", client_id, self.name, round(score, 4), evidence)

    def _tail_reach(self, client: _Client) -> float:
        if self._tail_size <= 0:
            return 0.0
        demand, threshold = self._demand.counts, self._tail_demand
        known = self._first_seen
        reached = sum(1 for seed in client.counts if seed in known and demand.get(seed, 0.0) <= threshold)
        return reached / self._tail_size

    def _action(self, score: float, z: dict[str, float], qps: float) -> dict[str, Any]:
        """What the serving side should do: throttle a fast or greedy client, blur a slow one's answers.
        Bounded: the rate never goes below `min_qps`, the noise never above `max_noise_scale`."""
        greedy = z["log_rate"] >= 2.0 or z["log_k"] >= 2.0
        k_cap = None
        if "log_k" in self._population:
            k_cap = max(10, int(math.exp(self._population["log_k"][0]) * 2))
        return {"type": "throttle" if greedy else "noise",
                "max_qps": round(max(self.min_qps, qps / 10.0), 4),
                "max_k": k_cap,
                "noise_scale": round(min(self.max_noise_scale, self.max_noise_scale * score), 3),
                "ttl_seconds": int(self.window_seconds)}


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def hashed_vectors(item_ids: list[str], dim: int) -> np.ndarray:
    # Bytes of a digest as a random direction: stable across processes, different for every id.
    raw = b"".join(hashlib.shake_128(item_id.encode()).digest(dim) for item_id in item_ids)
    return _unit(np.frombuffer(raw, dtype=np.int8).reshape(len(item_ids), dim).astype(np.float32))


def _set_fields(obj: Any, state: Any) -> None:
    """A slotted dataclass's pickled field values, with the defaults of fields added since."""
    values = dict(zip([f.name for f in fields(obj)], state))
    for f in fields(obj):
        if f.name in values:
            value = values[f.name]
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            value = f.default
        object.__setattr__(obj, f.name, value)


def _numeric_min(seeds: tuple[str, ...]) -> int | None:
    numbers = [int(seed) for seed in seeds if seed.isdecimal()]
    return min(numbers) if numbers else None


def _min_none(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _sign(now, before) -> int:
    if now is None or before is None or now == before:
        return 0
    return 1 if now > before else -1
