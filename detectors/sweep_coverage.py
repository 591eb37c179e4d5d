"""Split extraction sweeps: clients that divide one sweep of the catalogue between them.

Each client of a split sweep can look like a heavy benign client (its pace, its k), but together they ask
for every item once, so their seeds in the catalogue's less-demanded half (the tail) avoid each other far
beyond chance; the detector finds groups of clients with that complementary coverage and tests each member's
overlap with the rest of its group against what independent clients with the same popularity profile share.

How, in bounded state:
- Seeds per client: a hash sample (every seed whose 64-bit hash is below the client's threshold, which
  halves whenever more than `max_sampled_seeds` distinct seeds are kept), each seed's count and whether it
  was in the tail when first asked for, and a log of sampled occurrences that expire after
  `horizon_seconds`. Sampling by hash keeps overlaps measurable: clients agree on which items are sampled.
- Demand: ratings, clicks and query seeds, decayed with `demand_half_life`; the catalogue is ranked by it
  (ties by hash) into `strata` equal strata, the lower half being the tail. The test's strata rank ratings
  and clicks alone: query seeds would make candidates' overlaps leave the least-demanded strata. An item's age runs from its
  listing (its first catalogue edit), else from its first event.
- Screen, from counters kept per query: at least `min_tail_seeds` distinct sampled tail seeds, at least
  `min_tail_share` of the seed occurrences in the tail (padding with popular seeds lowers a sweep's share,
  hence a low bar) and at most `max_returns` PRADA-style returns (below).
- Test, every `search_seconds` of event time while screened clients add tail seeds, at the event that
  makes it due (micro-batches do not change the outcome), and only when a client joined the candidates or
  one grew by half since the last test (or a day later, if that test found some evidence). Each
  candidate's sampled tail seeds are split in two halves by a hash bit. On one half, groups are formed by
  greedy agglomeration of clients (then groups) whose overlap is unlikely under independence (Poisson
  lower tail at most `merge_alpha`). On the other half, each member of a group of at least `min_group` is
  tested: its overlap O with the union of the other members against E = sum over strata s of
  n_s * u_s / N_s (its tail seeds, the others' and the catalogue's in stratum s), counting only items
  listed before the group's first remembered query (a partner site that fetches new listings would
  otherwise look complementary to clients that came before them), over the whole tail and over its
  lower half alone (where a sweep's popular padding hardly falls). The p-value is P(O' <= O) for O' a sum
  over strata of Binomial(n_s, u_s / N_s): exact if the member's items were a uniform draw within each
  stratum made with replacement, conservative for one without (a Poisson of mean E, tried first, is far
  more so when the others cover most of the catalogue, as a split sweep's do). Independent clients that
  follow demand share more than E (both favour the same items within a stratum), so the test is
  conservative for them too; choosing groups on one half and testing on the other keeps the choice from
  making the deficit. Then the halves swap. Testing the whole catalogue, head included, was tried and
  dropped: the shards of a cache warmer of the best sellers are complementary there.
- Score: 1 - p * 4 * candidates * looks, floored at 0 (Bonferroni over both halves, both depths, every
  candidate, and `looks` = horizon / search interval tests in a horizon): the probability that the client
  belongs to a split sweep given this evidence alone. A member whose overlap exceeds `max_overlap_ratio`
  of its expectation scores 0 (an effect size: a huge client's slight deficit is not a sweep). Signals
  name the group (`evidence["group"]`) and carry an action for the client-actions topic: noise on the
  results (a member is paced like a benign client, so a throttle alone only slows the sweep) bounded by
  `max_noise_scale`, half its k, a tenth of its rate but at least `min_qps`.
- PRADA-style statistics per client (Juuti et al.): the minimum distance from each tail seed to the
  client's previous `prada_memory` tail seeds, items as orthogonal points (0 when the client returns to an
  item, else sqrt(2)); the share of returns over its latest 256 tail seeds screens (a sweep never returns,
  a client serving users does). The distance between successive queries' first seeds in item-embedding
  space (catalogue text embeddings where `item_vectors` is wired, else vectors hashed from the ids, as in
  `ExtractionDetector`) is reported with its Shapiro-Wilk W, not scored: a sweep's successive seeds are
  unrelated items, as are those of a client serving many users.

State is bounded: `max_clients` clients (the least recent tenth forgotten beyond), each with at most
`max_sampled_seeds` sampled seeds (about 150 bytes each), 4x as many logged occurrences and a few hundred
small values for PRADA; `max_items` catalogue items (hash, listing time, demand: about 300 bytes each).
Cost: a few dictionary operations per seed of a query and a demand count per rating and click; a test is
numpy work over the candidates' sampled tail seeds (milliseconds for tens of candidates) and ranks the
catalogue (one lookup per item), which also happens once eight times as many demand events as items came.

Parameters: `item_vectors` (as in `ExtractionDetector`; not pickled by `snapshot`), `horizon_seconds`,
`max_sampled_seeds`, `strata` (even), `min_tail_seeds`, `min_tail_share`, `max_returns`, `prada_memory`,
`search_seconds`, `min_group`, `merge_alpha`, `max_overlap_ratio`, `demand_half_life`, `query_demand`
(count query seeds as demand), `max_candidates` (tested at once: those with the largest share of tail
seeds, then the most), `max_clients`, `max_items`, `max_noise_scale`, `min_qps`, `vector_dim`.

References: Kesarwani et al. 2018, "Model extraction warning in MLaaS paradigm", ACSAC (coverage of the
union of colluding users' queries); Juuti et al. 2019, "PRADA: protecting against DNN model stealing
attacks", EuroS&P; Cohen & Kaplan 2007, "Summarizing data using bottom-k sketches", PODC (coordinated
samples by hash, so that samples of different sets can be compared).

>>> import numpy as np
>>> from detectors.events import RatingEvent, RecQueryEvent
>>> rng = np.random.default_rng(3)
>>> items = [f"item{n:04d}" for n in range(600)]
>>> popularity = 1.0 / np.arange(1, 601) ** 1.1
>>> popularity /= popularity.sum()
>>> ratings = [RatingEvent(event_id=f"r{n}", ts=float(n), user_id="u", item_id=items[i], rating=4)
...            for n, i in enumerate(rng.choice(600, 6000, p=popularity))]
>>> ratings += [RatingEvent(event_id=f"l{i}", ts=0.0, user_id="u", item_id=items[i], rating=3)
...             for i in range(600)]
>>> benign = [RecQueryEvent(event_id=f"q{c}-{t}", ts=6000.0 + 60 * t, client_id=f"app{c}", k=20,
...                         seed_items=[items[i] for i in rng.choice(600, 2, p=popularity)])
...           for t in range(200) for c in range(20)]
>>> sweep = rng.permutation(600)
>>> split = [RecQueryEvent(event_id=f"s{m}-{t}", ts=6000.0 + 60 * t + 7, client_id=f"part{m}", k=20,
...                        seed_items=[items[i] for i in sweep[m::10][t:t + 1]])
...          for m in range(10) for t in range(60)]
>>> detector = SweepCoverageDetector(search_seconds=3600)
>>> events = sorted(ratings, key=lambda e: e.ts) + sorted(benign + split, key=lambda e: e.ts)
>>> signals = detector.observe(events, now=events[-1].ts) + detector.observe([], now=events[-1].ts)
>>> sorted({s.id for s in signals if s.score >= 0.5})
['part0', 'part1', 'part2', 'part3', 'part4', 'part5', 'part6', 'part7', 'part8', 'part9']
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.special import pdtr
from scipy.stats import binom, shapiro

from detectors._arrays import distinct
from detectors.base import Detector, Signal, dumps_state
from detectors.demand import ItemDemand
from detectors.events import Event, RecQueryEvent
from detectors.extraction import hashed_vectors

DAY = 86_400.0
EMIT_FLOOR = 0.1
RETURNS_WINDOW = 256      # tail queries over which the share of PRADA returns is kept
STEPS_WINDOW = 128        # successive-seed distances kept for the reported Shapiro-Wilk W
MIN_RETURN_QUERIES = 20   # tail queries before the returns share screens a client
MAX_GROUP_EVIDENCE = 50   # member ids listed in a signal's evidence
RETEST_GROWTH = 1.5       # a candidate's growth in tail seeds that calls for a new test
_HASH_BITS = 64


@dataclass(slots=True)
class _Client:
    seeds: dict = field(default_factory=dict)  # sampled seed -> [count, in tail when first asked, hash]
    log: deque = field(default_factory=deque)  # (ts, seed) per sampled occurrence, oldest first
    level: int = 0                             # sampled when hash >> (64 - level) == 0
    occurrences: int = 0                       # sampled occurrences in the log
    tail_occurrences: int = 0
    tail_distinct: int = 0
    ring: deque = field(default_factory=deque)  # the latest `prada_memory` tail seeds
    ring_counts: dict = field(default_factory=dict)
    returns: deque = field(default_factory=lambda: deque(maxlen=RETURNS_WINDOW))
    returns_sum: int = 0
    steps: deque = field(default_factory=lambda: deque(maxlen=STEPS_WINDOW))
    previous_seed: str | None = None
    queries: int = 0
    k_sum: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    emitted: float = 0.0


class SweepCoverageDetector(Detector):
    name = "sweep_coverage"

    def __init__(self, item_vectors: Any = None, horizon_seconds: float = 30 * DAY,
                 max_sampled_seeds: int = 1024, strata: int = 8, min_tail_seeds: int = 12,
                 min_tail_share: float = 0.1, max_returns: float = 0.1, prada_memory: int = 64,
                 search_seconds: float = 6 * 3600.0, min_group: int = 3, merge_alpha: float = 0.5,
                 max_overlap_ratio: float = 0.5, demand_half_life: float = 30 * DAY, query_demand: bool = True,
                 max_candidates: int = 256, max_clients: int = 100_000, max_items: int = 500_000,
                 max_noise_scale: float = 0.2,
                 min_qps: float = 0.05, vector_dim: int = 64):
        self.item_vectors = item_vectors
        self.horizon_seconds = horizon_seconds
        self.max_sampled_seeds = max_sampled_seeds
        self.strata = strata
        self.min_tail_seeds = min_tail_seeds
        self.min_tail_share = min_tail_share
        self.max_returns = max_returns
        self.prada_memory = prada_memory
        self.search_seconds = search_seconds
        self.min_group = min_group
        self.merge_alpha = merge_alpha
        self.max_overlap_ratio = max_overlap_ratio
        self.query_demand = query_demand
        self.max_candidates = max_candidates
        self.max_clients = max_clients
        self.max_items = max_items
        self.max_noise_scale = max_noise_scale
        self.min_qps = min_qps
        self.vector_dim = vector_dim
        self._depths = (strata // 2, strata // 4)  # strata tested: the tail, its lower half
        self._demand = ItemDemand(demand_half_life, max_items)   # ratings, clicks and (query_demand) seeds
        self._organic = ItemDemand(demand_half_life, max_items)  # ratings and clicks alone: the test's strata
        self._catalog: dict[str, int] = {}   # item -> 64-bit hash, in order of first appearance
        self._listed: dict[str, float] = {}   # item -> when first listed (catalog edit), else first seen
        self._edited: set[str] = set()        # items whose listing was seen
        self._clients: dict[str, _Client] = {}
        self._watch: set[str] = set()         # clients with enough tail seeds to be screened at a search
        self._unranked: list[tuple[str, float]] = []  # (item, ts) of demand not yet in the table
        self._unranked_organic: list[tuple[str, float]] = []  # the same, ratings and clicks only
        self._demand_events = 0               # ratings, clicks and seeds counted so far
        self._head: set[str] = set()          # the more demanded half of the catalogue at the last ranking
        self._tail_ts = -math.inf             # when it was ranked
        self._tail_events = -1                # demand events then
        self._pending = 0                     # tail seeds added by watched clients since the last search
        self._tested: dict[str, int] = {}     # the candidates last tested, and their tail seeds then
        self._tested_at = -math.inf
        self._suspected = False               # whether the last test gave any candidate a score above 0
        self._last_search: float | None = None
        self._clock = 0.0

    # -- the interface ------------------------------------------------------------------------------
    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        signals: list[Signal] = []
        # Demand is counted in order but added to the table only before the catalogue is ranked (the
        # table gives the same counts however its additions are grouped): one call per batch, not per event.
        demand, organic = self._unranked, self._unranked_organic
        catalog = self._catalog
        queries = [event for event in events if event.type == "rec_query"]
        steps, first_seeds = self._step_distances(queries)
        distances = iter(steps)
        for event in events:
            kind = event.type
            if kind != "rec_query":
                item = event.item_id
                if item not in catalog:
                    self._see(item, event.ts)
                    catalog = self._catalog  # a new dict when the catalogue was trimmed
                if kind != "catalog_edit":
                    demand.append((item, event.ts))
                    organic.append((item, event.ts))
                elif item not in self._edited:  # an item's age runs from its listing, where there is one
                    self._edited.add(item)
                    self._listed[item] = event.ts
                continue
            self._clock = max(self._clock, event.ts)
            self._add(event, next(distances))
            if self._last_search is None:
                self._last_search = event.ts
            if self._pending and event.ts - self._last_search >= self.search_seconds:
                signals.extend(self._search(event.ts))  # due here, mid-batch or not
        self._count_demand()
        for client_id, seed in first_seeds.items():
            client = self._clients.get(client_id)
            if client is not None:  # else forgotten by a search in this batch
                client.previous_seed = seed
        if not events and self._pending:  # a tick (idle or flush): search what came since the last one
            signals.extend(self._search(max(now, self._clock)))
        return signals

    def snapshot(self) -> bytes:
        # The item-vector source is another detector, wired in again by whoever restores.
        state = {key: value for key, value in self.__dict__.items() if key != "item_vectors"}
        return dumps_state(state)

    def restore(self, state: bytes) -> None:
        source = self.item_vectors
        self.__dict__.update(pickle.loads(state))
        self.item_vectors = source

    # -- per event ------------------------------------------------------------------------------------
    def _see(self, item_id: str, ts: float) -> None:
        self._catalog[item_id] = _hash(item_id)
        self._listed[item_id] = ts
        if len(self._catalog) > self.max_items:  # forget the earliest-seen half
            kept = list(self._catalog)[len(self._catalog) // 2:]
            self._catalog = {item: self._catalog[item] for item in kept}
            self._listed = {item: self._listed[item] for item in kept}
            self._edited &= self._catalog.keys()

    def _count_demand(self) -> None:
        if self._unranked:
            self._demand_events += len(self._unranked)
            self._demand.add_many(self._unranked)
            self._unranked.clear()
            self._organic.add_many(self._unranked_organic)
            self._unranked_organic.clear()

    def _refresh_tail(self, ts: float) -> None:
        """Re-rank the catalogue once eight times as many demand events as it has items came since the
        last ranking and a day passed: demand moves only with events, and ranking costs a lookup per item,
        so this is at most an eighth of a lookup per event. Searches re-rank at every test besides."""
        needed = 8 * len(self._catalog) if self._tail_events >= 0 else len(self._catalog)  # the first: soon
        if ts - self._tail_ts >= DAY and self._demand_events + len(self._unranked) - self._tail_events >= needed:
            self._ranked(ts)

    def _add(self, query: RecQueryEvent, distance: float) -> None:
        client = self._clients.get(query.client_id)
        if client is None:
            if len(self._clients) >= self.max_clients:
                self._forget_clients(query.ts, crowded=True)
            client = self._clients[query.client_id] = _Client(first_ts=query.ts, last_ts=query.ts)
        client.queries += 1
        client.k_sum += query.k
        client.last_ts = max(client.last_ts, query.ts)
        if not math.isnan(distance):
            client.steps.append(distance)
        self._refresh_tail(query.ts)
        catalog, seeds, head = self._catalog, client.seeds, self._head
        shift = _HASH_BITS - client.level
        for seed in query.seed_items:
            value = catalog.get(seed)
            if value is None:
                continue  # not a catalogue item (never listed, rated or clicked): nothing to cover
            tail = seed not in head  # items new since the last ranking have no demand yet: tail
            if tail:
                self._prada_return(client, seed)
            if client.level and value >> shift:
                continue  # not in this client's sample
            entry = seeds.get(seed)
            if entry is None:
                entry = seeds[seed] = [0, tail, value]
                if tail:
                    client.tail_distinct += 1
                    if query.client_id in self._watch:
                        self._pending += 1
            entry[0] += 1
            client.occurrences += 1
            client.tail_occurrences += entry[1]
            client.log.append((query.ts, seed))
        if self.query_demand:
            self._unranked.extend([(seed, query.ts) for seed in query.seed_items])
        if len(client.log) > 4 * self.max_sampled_seeds:  # else expired when a search reads the client
            self._expire(client, query.ts)
        if len(seeds) > self.max_sampled_seeds:
            self._subsample(client)
        if client.tail_distinct >= self.min_tail_seeds and query.client_id not in self._watch:
            self._watch.add(query.client_id)
            self._pending += client.tail_distinct

    def _prada_return(self, client: _Client, seed: str) -> None:
        """PRADA's minimum distance to the client's earlier queries, with items as orthogonal points: zero
        (a return) when the seed is among its latest `prada_memory` tail seeds."""
        ring, counts = client.ring, client.ring_counts
        returned = int(seed in counts)
        if len(client.returns) == RETURNS_WINDOW:
            client.returns_sum -= client.returns[0]
        client.returns.append(returned)
        client.returns_sum += returned
        ring.append(seed)
        counts[seed] = counts.get(seed, 0) + 1
        if len(ring) > self.prada_memory:
            old = ring.popleft()
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]

    def _expire(self, client: _Client, now: float) -> None:
        horizon = now - self.horizon_seconds
        log, seeds = client.log, client.seeds
        limit = 4 * self.max_sampled_seeds
        while log and (log[0][0] < horizon or len(log) > limit):
            _, seed = log.popleft()
            entry = seeds.get(seed)
            if entry is None:
                continue  # dropped from the sample since
            entry[0] -= 1
            client.occurrences -= 1
            client.tail_occurrences -= entry[1]
            if not entry[0]:
                del seeds[seed]
                client.tail_distinct -= entry[1]

    def _subsample(self, client: _Client) -> None:
        """Halve the sampling threshold until the sample fits: the seeds kept are those a client with
        the lower threshold would have kept all along."""
        while len(client.seeds) > self.max_sampled_seeds:
            client.level += 1
            shift = _HASH_BITS - client.level
            for seed in [s for s, entry in client.seeds.items() if entry[2] >> shift]:
                count, tail, _ = client.seeds.pop(seed)
                client.occurrences -= count
                client.tail_occurrences -= count * tail
                client.tail_distinct -= tail

    def _forget_clients(self, now: float, crowded: bool = False) -> None:
        horizon = now - self.horizon_seconds
        idle = [c for c, state in self._clients.items() if state.last_ts < horizon]
        if crowded and len(self._clients) - len(idle) >= self.max_clients:  # the least recent tenth go
            idle = sorted(self._clients, key=lambda c: self._clients[c].last_ts)[: len(self._clients) // 10]
        for client_id in idle:
            del self._clients[client_id]
            self._watch.discard(client_id)

    # -- PRADA-style step distances (reported) ----------------------------------------------------------
    def _step_distances(self, queries: list[RecQueryEvent]) -> tuple[list[float], dict[str, str]]:
        """Distance from each query's first seed to its client's previous query's first seed (nan for a
        client's first query or an empty query), for the whole batch at once, as ExtractionDetector; and
        each client's latest first seed."""
        pairs, rows, latest = [], [], {}
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
        distances = [math.nan] * len(queries)
        if pairs:
            now = self._vectors_of([a for a, _ in pairs])
            before = self._vectors_of([b for _, b in pairs])
            for row, distance in zip(rows, np.linalg.norm(now - before, axis=1).tolist()):
                distances[row] = distance
        return distances, latest

    def _vectors_of(self, item_ids: list[str]) -> np.ndarray:
        if self.item_vectors is None:
            return hashed_vectors(item_ids, self.vector_dim)
        vectors, known = self.item_vectors.item_vectors(item_ids)
        if vectors.shape[1] == 0:
            return hashed_vectors(item_ids, self.vector_dim)
        unknown = np.flatnonzero(~known)
        if len(unknown):
            vectors[unknown] = hashed_vectors([item_ids[n] for n in unknown], vectors.shape[1])
        return vectors

    # -- strata ---------------------------------------------------------------------------------------
    def _ranked(self, ts: float) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Catalogue ids, their hashes and their stratum (0 = least demanded) by organic (demand, hash)
        rank; the upper half by all demand, query seeds included, is kept as the head until the next
        ranking."""
        self._count_demand()
        ids = list(self._catalog)
        hashes = np.fromiter(self._catalog.values(), dtype=np.uint64, count=len(ids))
        strata, order = self._strata(ids, hashes, self._demand.counts)
        self._head = {ids[n] for n in order[len(ids) // 2:].tolist()}
        self._tail_ts, self._tail_events = ts, self._demand_events
        if self.query_demand:
            # The test's strata leave query seeds out: two candidates asking for one item would lift it out
            # of the least-demanded strata, so the strata tested would hold their overlaps less often than
            # chance (a deficit made by the ranking itself, strongest while demand is sparse).
            strata, _ = self._strata(ids, hashes, self._organic.counts)
        return ids, hashes, strata

    def _strata(self, ids: list[str], hashes: np.ndarray,
                counts: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        demand = np.fromiter((counts.get(i, 0.0) for i in ids), dtype=np.float64, count=len(ids))
        order = np.lexsort((hashes, demand))
        strata = np.empty(len(ids), dtype=np.int64)
        strata[order] = np.arange(len(ids)) * self.strata // max(len(ids), 1)
        return strata, order

    # -- the search -----------------------------------------------------------------------------------
    def _search(self, now: float) -> list[Signal]:
        self._last_search, self._pending = now, 0
        self._forget_clients(now)
        for client_id in list(self._watch):
            client = self._clients[client_id]
            self._expire(client, now)
            if client.tail_distinct < self.min_tail_seeds:
                self._watch.discard(client_id)
        candidates = [c for c in sorted(self._watch) if self._screened(self._clients[c])]
        if len(candidates) > self.max_candidates:
            # A test costs candidates^2 x seeds: keep the most popularity-blind (a sweep's share of tail
            # seeds is about half, a popularity-driven client's a tenth or two), then the largest.
            clients = self._clients
            candidates = sorted(sorted(candidates, key=lambda c: (
                -clients[c].tail_occurrences / max(clients[c].occurrences, 1), -clients[c].tail_distinct))[
                    :self.max_candidates])
        if len(candidates) < self.min_group:
            return []
        # Test again when a client joined the candidates or one of them has half as many tail seeds again
        # as at the last test, or, if the last test found some evidence (a score above 0), a day later if any
        # grew: evidence that grows by less barely moves a p-value, clients that leave take evidence away,
        # and a test costs milliseconds.
        seeds = {c: self._clients[c].tail_distinct for c in candidates}
        tested = self._tested
        if not any(n >= RETEST_GROWTH * tested.get(c, 0) for c, n in seeds.items()):
            later = self._suspected and now - self._tested_at >= DAY
            if not (later and any(n > tested.get(c, 0) for c, n in seeds.items())):
                return []
        self._tested, self._tested_at = seeds, now
        return self._test(candidates, now)

    def _screened(self, client: _Client) -> bool:
        if client.tail_occurrences < self.min_tail_share * client.occurrences:
            return False
        measured = len(client.returns) >= MIN_RETURN_QUERIES
        return not measured or client.returns_sum <= self.max_returns * len(client.returns)

    def _test(self, candidates: list[str], now: float) -> list[Signal]:
        ids, hashes, strata = self._ranked(now)  # refreshes the tail for the queries to come as well
        listed = np.fromiter(map(self._listed.__getitem__, ids), dtype=np.float64, count=len(ids))
        stratum_of = dict(zip(ids, strata.tolist()))
        n_strata, half_strata = self.strata, self.strata // 2
        level = max(self._clients[c].level for c in candidates)
        shift = np.uint64(_HASH_BITS - level) if level else None
        # The catalogue's items in the common sample (their half, stratum, listing time): the N_s.
        sampled = (hashes >> shift) == 0 if level else np.ones(len(hashes), bool)
        catalog_half = (hashes[sampled] & np.uint64(1)).astype(np.int64)
        catalog_strata, catalog_listed = strata[sampled], listed[sampled]
        # Each candidate's sampled seeds as parallel arrays: its row, the seed's code, stratum, half, listing
        # time; and when each candidate's remembered seeds begin.
        codes: dict[str, int] = {}
        row_of, code_of, stratum_list, half_list, listed_list, starts = [], [], [], [], [], []
        for row, client_id in enumerate(candidates):
            client = self._clients[client_id]
            starts.append(client.log[0][0] if client.log else now)
            for seed, (_, _, value) in client.seeds.items():
                s = stratum_of.get(seed)
                if s is None or (level and value >> (_HASH_BITS - level)):
                    continue
                row_of.append(row)
                code_of.append(codes.setdefault(seed, len(codes)))
                stratum_list.append(s)
                half_list.append(value & 1)
                listed_list.append(self._listed[seed])
        row_of, code_of = np.array(row_of, dtype=np.int64), np.array(code_of, dtype=np.int64)
        seed_strata, seed_half = np.array(stratum_list, dtype=np.int64), np.array(half_list, dtype=np.int64)
        seed_listed, starts = np.array(listed_list, dtype=np.float64), np.array(starts, dtype=np.float64)
        code_strata = np.zeros(len(codes), dtype=np.int64)
        code_strata[code_of] = seed_strata
        k = len(candidates)

        def seeds_of(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            incidence = np.zeros((k, len(codes)), dtype=bool)
            incidence[row_of[keep], code_of[keep]] = True
            counts = np.bincount(row_of[keep] * n_strata + seed_strata[keep], minlength=k * n_strata)
            return incidence, counts.reshape(k, n_strata).astype(np.float64)

        def catalogue(keep: np.ndarray) -> np.ndarray:
            return np.bincount(catalog_strata[keep], minlength=n_strata).astype(np.float64)

        p_values = np.ones(k)
        details: dict[int, dict[str, Any]] = {}
        # Groups are chosen on one half of the sample (its tail); each member is tested on the other half
        # at three depths: the whole catalogue, the tail, and the tail's less-demanded half alone, where
        # the popular seeds a sweep may be padded with (drawn by demand) hardly fall, so that their chance
        # overlaps do not mask the slices (a client's popular seeds alone never make it a candidate).
        for select in (0, 1):
            chosen = seeds_of((seed_half == select) & (seed_strata < half_strata))
            sizes = catalogue((catalog_half == select) & (catalog_strata < half_strata))
            for group in self._groups(*chosen, code_strata, sizes):
                if len(group) < self.min_group:
                    continue
                # Only items listed before the group's first remembered query count: a group cannot have
                # asked for items that did not exist, and a client of new listings (a partner site) would
                # otherwise look complementary to clients that came before them.
                cutoff, test = float(starts[group].min()), 1 - select
                members = np.isin(row_of, group) & (seed_half == test) & (seed_listed <= cutoff)
                listed_then = (catalog_half == test) & (catalog_listed <= cutoff)
                for depth in self._depths:
                    tested = seeds_of(members & (seed_strata < depth))
                    sizes = catalogue(listed_then & (catalog_strata < depth))
                    observed, expected, p = _member_tests(group, *tested, code_strata, sizes,
                                                          self.max_overlap_ratio)
                    for row, p_row, o, e in zip(group, p.tolist(), observed.tolist(), expected.tolist()):
                        # An effect size besides: a huge client's slight deficit is not a sweep.
                        if p_row < p_values[row] and o <= self.max_overlap_ratio * e:
                            p_values[row] = p_row
                            details[row] = {"group": group, "observed": o, "expected": e,
                                            "depth": depth / self.strata}
        # Bonferroni: the depths, two halves, every candidate, every search within a horizon.
        tests = 2.0 * len(self._depths) * len(candidates) * max(1.0, self.horizon_seconds / self.search_seconds)
        signals = []
        self._suspected = False
        for row, detail in details.items():
            ratio = detail["observed"] / max(detail["expected"], 1e-12)
            score = 1.0 - min(1.0, float(p_values[row]) * tests)
            self._suspected |= score > 0.0
            client_id = candidates[row]
            client = self._clients[client_id]
            if score < EMIT_FLOOR or score < client.emitted + 0.05:
                continue
            client.emitted = score
            group_ids = [candidates[r] for r in detail["group"]]
            union = distinct(code_of[np.isin(row_of, detail["group"]) & (seed_strata < half_strata)])
            evidence = {
                "group": sorted(group_ids)[:MAX_GROUP_EVIDENCE], "group_size": len(group_ids),
                "union_tail_share": round(len(union) / max(float((catalog_strata < half_strata).sum()), 1.0), 4),
                # depth: the share of the catalogue tested, from the least demanded item (1: all of it)
                "overlap": {"observed": int(detail["observed"]), "expected": round(detail["expected"], 2),
                            "ratio": round(ratio, 3), "depth": detail["depth"]},
                "p_value": float(f"{p_values[row]:.3g}"), "tests": int(tests),
                "tail_seeds": client.tail_distinct, "sample_level": client.level,
                "tail_share": round(client.tail_occurrences / max(client.occurrences, 1), 3),
                "prada": self._prada(client),
                "queries": client.queries, "k": round(client.k_sum / max(client.queries, 1), 1),
            }
            evidence["action"] = self._action(score, client)
            signals.append(Signal("client", client_id, self.name, round(score, 4), evidence))
        return signals

    def _groups(self, incidence: np.ndarray, counts: np.ndarray, code_strata: np.ndarray,
                sizes: np.ndarray) -> list[list[int]]:
        """Greedy agglomeration on the selection half: repeatedly merge the two groups whose overlap is
        least likely under independence (Poisson lower tail at most `merge_alpha`, overlap at most
        `max_overlap_ratio` of its expectation)."""
        k = len(incidence)
        groups = [[row] for row in range(k)]
        alive = np.ones(k, bool)
        sets = incidence.copy()
        per = counts.astype(np.float64)
        inverse = np.divide(1.0, sizes, out=np.zeros_like(sizes), where=sizes > 0)
        overlap = (sets.astype(np.int32) @ sets.T.astype(np.int32)).astype(np.float64)
        expected = (per * inverse) @ per.T
        while True:
            allowed = np.triu(alive[:, None] & alive[None, :], 1)
            allowed &= (expected > 0) & (overlap <= self.max_overlap_ratio * expected)
            if not allowed.any():
                break
            scores = np.full((k, k), np.inf)
            scores[allowed] = pdtr(overlap[allowed], expected[allowed])
            a, b = np.unravel_index(int(np.argmin(scores)), scores.shape)
            if scores[a, b] > self.merge_alpha:
                break
            groups[a] += groups[b]
            alive[b] = False
            sets[a] |= sets[b]
            per[a] = np.bincount(code_strata[sets[a]], minlength=per.shape[1])
            overlap[a, :] = overlap[:, a] = sets.astype(np.int32) @ sets[a].astype(np.int32)
            expected[a, :] = expected[:, a] = (per * inverse) @ per[a]
        return [groups[row] for row in range(k) if alive[row]]

    def _prada(self, client: _Client) -> dict[str, Any]:
        steps = list(client.steps)
        w = None
        if len(steps) >= 20 and np.ptp(steps) > 0:
            w = round(float(shapiro(steps).statistic), 4)
        return {"returns": round(client.returns_sum / max(len(client.returns), 1), 3),
                "tail_queries": len(client.returns),
                "step_distance": round(float(np.mean(steps)), 3) if steps else None, "shapiro_w": w}

    def _action(self, score: float, client: _Client) -> dict[str, Any]:
        """Noise on the client's results (a member of a split sweep is paced like a benign client, so a
        throttle alone slows the sweep without spoiling it), a smaller k and a lower rate, bounded."""
        span = max(client.last_ts - client.first_ts, 1.0)
        qps = client.queries / span
        return {"type": "noise", "max_qps": round(max(self.min_qps, qps / 10.0), 4),
                "max_k": max(10, int(client.k_sum / max(client.queries, 1) / 2)),
                "noise_scale": round(min(self.max_noise_scale, self.max_noise_scale * score), 3),
                "ttl_seconds": int(self.horizon_seconds)}


def _hash(item_id: str) -> int:
    # A keyed-free cryptographic digest as a uniform 64-bit value: the same in every process, and with no
    # linear structure in the id (crc32 of ids of one length differ by a constant XOR).
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little")


def _member_tests(group: list[int], incidence: np.ndarray, counts: np.ndarray, code_strata: np.ndarray,
                  sizes: np.ndarray, max_ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per member (in the group's order): its overlap with the union of the group's other members, that
    overlap's expectation if its seeds were a uniform draw within each stratum, and its lower-tail p-value
    P(O <= observed) under that draw (1 where the overlap is above `max_ratio` of its expectation)."""
    rows = np.asarray(group)
    sets = incidence[rows]
    hits = sets.sum(axis=0)
    observed = (sets & (hits >= 2)).sum(axis=1)
    # The others' union per stratum: the group's union less the items only this member has.
    strata = np.eye(len(sizes), dtype=np.int64)[code_strata]           # items x strata
    union = (hits >= 1) @ strata
    alone = (sets & (hits == 1)).astype(np.int64) @ strata             # members x strata
    inverse = np.divide(1.0, sizes, out=np.zeros_like(sizes), where=sizes > 0)
    share = np.clip((union[None, :] - alone) * inverse, 0.0, 1.0)     # P(an item of stratum s is theirs)
    drawn = counts[rows]
    expected = (drawn * share).sum(axis=1)
    p_values = np.ones(len(rows))
    deficit = np.flatnonzero(observed <= max_ratio * expected)
    if len(deficit):
        p_values[deficit] = _binomial_sum_cdf(observed[deficit], drawn[deficit], share[deficit])
    return observed, expected, p_values


def _binomial_sum_cdf(observed: np.ndarray, n: np.ndarray, q: np.ndarray) -> np.ndarray:
    """P(sum_s Binomial(n_s, q_s) <= observed) per row, convolving the strata's probabilities up to the
    observed count. The exact null of a member's overlap when its n_s items in stratum s each fall among
    the others' with chance q_s (drawing without replacement concentrates it further, so this is
    conservative); a Poisson with the same mean is far more conservative when the others cover most of
    the catalogue (q near 1): P(0) = prod (1 - q_s)^n_s, not exp(-sum n_s q_s)."""
    top = int(observed.max())
    pmf = binom.pmf(np.arange(top + 1)[None, None, :], n[:, :, None], q[:, :, None])  # rows x strata x k
    result = np.empty(len(observed))
    for row, o in enumerate(observed.tolist()):
        total = np.zeros(o + 1)
        total[0] = 1.0
        for stratum in np.flatnonzero(n[row]):
            total = np.convolve(total, pmf[row, stratum, :o + 1])[:o + 1]
        result[row] = min(1.0, float(total.sum()))
    return result
