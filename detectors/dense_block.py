"""Dense blocks in a windowed user-item graph: groups of accounts that rate or click the same items far more
often than their activity and the items' popularity outside the group predict.

FRAUDAR-style peeling (column weights 1/log(degree + 5), so camouflage on popular items does not hide a
block) and seeded local search propose blocks; `blocks.judge_block` keeps those at least `min_lift` times
denser than a leave-the-block-out null, so a ring stays visible when fakes are a large share of the graph.
Columns are (item, opinion) pairs - negative (1-2), neutral (3), positive (4-5), click - because a group
that promotes or demotes agrees on the direction; users who merely co-rate obscure items with mixed
opinions do not.

Two tiers. A ring must rate its products together to move them, but not at once: members spread over
months (or a stream whose dates carry nothing) are never dense in a month. So the window keeps
`long_window_seconds` of edges (bounded by `max_edges` like the rest), the frequent search reads its last
`window_seconds`, and a long search reads all of it every `long_search_every` edges and on an empty tick,
seeded by what was touched since the last long search. Its cost grows with the window (about 0.5 s per
search for 200,000 edges here), hence ten times rarer than the short one; None (or a span no longer than
`window_seconds`) turns it off, as `LockstepDetector` does (lockstep is about time).

Parameters: `window_seconds` of event time kept (with no usable time, as in a ratings dump with one
timestamp, nothing expires and the whole set is searched); `max_edges` bounds the window; `search_every`
events between searches, or half a window of event time if that comes first, at the edge that makes it due
whatever the micro-batches (so `replay` and a worker find the same blocks); a search also runs on an empty
flush or idle tick, so a replay with one timestamp is searched before it ends; `max_seeds` columns
grown per search among those touched since the last, the most promising first (`blocks.promising_seeds`;
on the flush tick, all of them); `peels` FRAUDAR blocks per search over the users touched since the last;
`max_seed_degree` skips seeds so popular that a group cannot stand out; `test` (a `blocks.BlockTest`) the
statistical bar; `max_score` caps a signal (structure is evidence, not proof); `copy_jaccard`, the
items' Jaccard of every pair that makes a block one of near-duplicate profiles, whose real profile (the one
camouflaged copies replay) is not named (`_replayed_profile`). Members score
1 - 1/lift of their own block edges, at least 0.9 with the default `min_lift` of 10.

Scaling: a bounded window per worker. The search is amortised - one per `search_every` events, over the
columns touched since the last, so its cost per event is (graph build + seeds x growth) / search_every;
measured by `benchmarks/groups.py`. At 10x traffic the same `max_edges` covers a tenth of the time; keep the
time span by partitioning events by item over workers, each searching its own items' blocks with a second
stage that merges blocks sharing users (rings span items on one worker only when their targets hash
together, so the join stage is needed from the first split). At 100x, also shorten `window_seconds`:
slow rings then fall to the lockstep and temporal families.

References: Hooi et al., "FRAUDAR: Bounding Graph Fraud in the Face of Camouflage", KDD 2016; Jiang et
al., "A General Suspiciousness Metric for Dense Blocks in Multimodal Data", ICDM 2015; Mukherjee, Liu,
Glance, "Spotting Fake Reviewer Groups in Consumer Reviews", WWW 2012 (group rating agreement).

>>> import random
>>> from detectors.events import RatingEvent
>>> rng = random.Random(7)
>>> events = [RatingEvent(event_id=f"b{k}", ts=1000.0, user_id=f"u{rng.randrange(2000)}",
...                       item_id=f"i{rng.randrange(1000)}", rating=rng.randint(1, 5)) for k in range(8000)]
>>> events += [RatingEvent(event_id=f"r{k}", ts=1000.0, user_id=f"ring{k // 6}",
...                        item_id=f"target{k % 6}", rating=5) for k in range(120)]
>>> detector = DenseBlockDetector()
>>> detector.observe(events, now=1000.0)  # fewer events than `search_every`: no search yet
[]
>>> signals = detector.observe([], now=1000.0)  # the flush tick searches
>>> sorted(s.id for s in signals if s.kind == "user") == sorted(f"ring{k}" for k in range(20))
True
>>> sorted(s.id for s in signals if s.kind == "item")
['target0', 'target1', 'target2', 'target3', 'target4', 'target5']
"""

from __future__ import annotations

import itertools
import time
from typing import Sequence

import numpy as np

from detectors.base import Detector, Signal
from detectors.blocks import (Block, BlockGraph, BlockTest, EdgeWindow, grow, judge_block, peel,
                              promising_seeds)
from detectors.events import ClickEvent, Event, RatingEvent

CLICK = 0  # rating code of a click in the edge window


_last_edges: tuple[Sequence[Event], tuple[list, list, list, list]] | None = None


def _edges(events: Sequence[Event]) -> tuple[list[str], list[str], list[float], list[int]]:
    """Users, items, timestamps and rating codes (CLICK for a click) of a batch's ratings and clicks. The
    last batch's answer is kept, so that the dense-block and lockstep detectors, which see the same batch
    one after the other, extract it once (a batch is never changed once handed to the detectors)."""
    global _last_edges
    if _last_edges is not None and _last_edges[0] is events:
        return _last_edges[1]
    users, items, ts, ratings = [], [], [], []
    for event in events:
        kind = type(event)
        if kind is RatingEvent:
            ratings.append(int(event.rating + 0.5))
        elif kind is ClickEvent:
            ratings.append(CLICK)
        else:
            continue
        users.append(event.user_id)
        items.append(event.item_id)
        ts.append(event.ts)
    _last_edges = (events, (users, items, ts, ratings))
    return users, items, ts, ratings


class DenseBlockDetector(Detector):
    name = "dense_block"

    def __init__(self, window_seconds: float = 30 * 86400.0, max_edges: int = 1_000_000,
                 search_every: int = 40_000, max_seeds: int = 60, peels: int = 2,
                 max_seed_degree: int = 2_000, test: BlockTest = BlockTest(), max_score: float = 0.95,
                 copy_jaccard: float = 0.6, long_window_seconds: float | None = 365 * 86400.0,
                 long_search_every: int = 400_000):
        self.window_seconds = window_seconds
        # The long tier: a ring whose ratings are spread over months is never dense in one window.
        self.long_window_seconds = (long_window_seconds if long_window_seconds and
                                    long_window_seconds > window_seconds else None)
        self.long_search_every = long_search_every
        self.copy_jaccard = copy_jaccard
        self.max_edges = max_edges
        self.search_every = search_every
        self.max_seeds = max_seeds
        self.peels = peels
        self.max_seed_degree = max_seed_degree
        self.test = test
        self.max_score = max_score
        self._window = EdgeWindow(self.long_window_seconds or window_seconds, max_edges)
        self._dirty: set[str] = set()  # items touched since their columns were last seeded
        self._recent_users: set[str] = set()
        self._since_search = 0
        self._last_search: float | None = None  # event time of the last search (or of the first event)
        self._clock = -np.inf  # the latest event time seen
        self._emitted: dict[tuple[str, str], float] = {}
        self._long_dirty: set[str] = set()  # the same, since the last long search
        self._long_users: set[str] = set()
        self._since_long = 0
        self._last_long: float | None = None  # event time of the last long search
        self.blocks_found = 0
        self.searches = 0
        self.search_seconds = 0.0

    _clock = -np.inf  # default for snapshots taken before it existed

    # -- what a column is: overridden by LockstepDetector -----------------------------------------
    def _bins(self, ts: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        # 0 negative, 1 neutral, 2 positive, 3 click
        return np.select([ratings == CLICK, ratings <= 2, ratings == 3], [3, 0, 1], 2)

    def _searchable(self, ts: np.ndarray) -> bool:
        return True

    def _columns(self, u: np.ndarray, i: np.ndarray, t: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, ...]:
        """(users, items, bins, ts) of the graph to search. One opinion per (user, item): a click on an item
        the user also rated (browsing before rating) repeats the rating's evidence, so it is dropped rather
        than counted as a second column."""
        pair = u.astype(np.int64) * (int(i.max()) + 1) + i
        rated = r != CLICK
        keep = rated | ~np.isin(pair, pair[rated])
        return u[keep], i[keep], self._bins(t[keep], r[keep]), t[keep]

    # -- streaming ---------------------------------------------------------------------------------------
    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        users, items, ts, ratings = _edges(events)
        signals: list[Signal] = []
        start, n = 0, len(users)
        if n and self._last_search is None:
            self._last_search = ts[0]
        while start < n:  # a search runs at the edge that makes it due, wherever the batch ends
            end = self._due_at(ts, start)
            self._window.add(users[start:end], items[start:end], ts[start:end], ratings[start:end])
            self._dirty.update(items[start:end])
            self._recent_users.update(users[start:end])
            self._since_search += end - start
            if self.long_window_seconds:
                self._long_dirty.update(items[start:end])
                self._long_users.update(users[start:end])
                self._since_long += end - start
            self._clock = max(self._clock, max(ts[start:end]))
            start = end
            half_window = self._clock - self._last_search >= self.window_seconds / 2
            if self._since_search >= self.search_every or half_window:
                signals.extend(self._search(self._clock, final=False))
            if self.long_window_seconds and self._since_long >= self.long_search_every:
                signals.extend(self._search(self._clock, final=False, long=True))
        # An empty batch is a flush or idle tick: search whatever arrived since the last search, so a
        # replay whose timestamps never advance is still searched before it ends.
        if not events and self._since_search > 0:
            signals.extend(self._search(now, final=True))
        if not events and self.long_window_seconds and self._since_long > 0 and (
                self._last_long is None or now - self._last_long >= self.window_seconds / 2):
            # On a tick at most once per half a short window of event time: a worker with a trickle of
            # events ticks every second or so, and a long search costs a second of CPU per 200,000 edges.
            # The most promising `max_seeds` seeds, as in stream: growing every seed over months of edges
            # costs seconds, and the short search's flush already grows all of a one-timestamp dump's.
            signals.extend(self._search(now, final=False, long=True))
        return signals

    def _due_at(self, ts: list[float], start: int) -> int:
        """The end of the slice from `start` after which a search is due: `search_every` edges since the
        last, or half a window of event time (or a slow stream's groups would expire before the count)."""
        end = min(len(ts), start + max(self.search_every - self._since_search, 1))
        clock = np.maximum.accumulate(np.maximum(np.asarray(ts[start:end]), self._clock))
        late = np.flatnonzero(clock - self._last_search >= self.window_seconds / 2)
        return start + int(late[0]) + 1 if len(late) else end

    def _search(self, now: float, final: bool, long: bool = False) -> list[Signal]:
        """One search: over the last `window_seconds` of edges and what was touched since the last search,
        or (`long`) over the whole long window and what was touched since the last long search."""
        started = time.perf_counter()
        if long:
            self._since_long, self._last_long = 0, now
            dirty, recent_users = self._long_dirty, self._long_users
        else:
            self._since_search = 0
            self._last_search = now
            dirty, recent_users = self._dirty, self._recent_users
        window = self._window
        live = window.live(now)
        if len(live) < window.size // 2:
            window.compact(now)
            live = window.live(now)
        if not long and self.long_window_seconds:  # the window holds the long tier's span
            live = live[window.t[live] >= now - self.window_seconds]
        if len(live) == 0 or not self._searchable(window.t[live]):
            dirty.clear()
            recent_users.clear()
            return []
        u, i, bins, t = self._columns(window.u[live], window.i[live], window.t[live], window.r[live])
        graph = BlockGraph.from_edges(u, i, bins)
        signals: list[Signal] = []
        covered = np.zeros(graph.A.shape[0], bool)

        def consider(seed_users: np.ndarray) -> None:
            block = judge_block(graph, grow(graph, seed_users, self.test), self.test)
            if block is not None and not covered[block.users].all():
                covered[block.users] = True
                signals.extend(self._emit(graph, block, u, i, t))

        # FRAUDAR peels over the users touched since the last search: finds the densest blocks first.
        recent = np.array([window.user_index[x] for x in recent_users if x in window.user_index], np.int64)
        rows = np.flatnonzero(np.isin(graph.row_ids, recent))
        for _ in range(self.peels):
            if len(rows) < self.test.min_users:
                break
            peeled, _, _ = peel(graph, rows)
            consider(peeled)
            rows = np.setdiff1d(rows, peeled)
        # Seeds: touched columns, most promising first; each grows from the users of that column.
        for col in self._seeds(graph, window, final, dirty):
            seed_users = graph.AT.indices[graph.AT.indptr[col]:graph.AT.indptr[col + 1]]
            if not covered[seed_users].all():
                consider(seed_users)
        recent_users.clear()
        self.searches += 1
        self.search_seconds += time.perf_counter() - started
        return signals

    def _seeds(self, graph: BlockGraph, window: EdgeWindow, final: bool, dirty: set[str]) -> np.ndarray:
        touched = np.array([window.item_index[k] for k in dirty if k in window.item_index], np.int64)
        dirty.clear()
        cols = np.flatnonzero(np.isin(graph.item_ids[graph.col_item], touched))
        degree = graph.AT.getnnz(axis=1)[cols]
        usable = np.flatnonzero((degree >= self.test.min_users) & (degree <= self.max_seed_degree))
        # Only seeds whose users already share significant partner items are grown, strongest first.
        seeds, strength = promising_seeds(graph, cols[usable], self.test)
        order = np.argsort(-strength, kind="stable")
        return seeds[order if final else order[: self.max_seeds]]

    def _emit(self, graph: BlockGraph, block: Block, u: np.ndarray, i: np.ndarray, t: np.ndarray
              ) -> list[Signal]:
        self.blocks_found += 1
        window = self._window
        user_ids = [window.user_ids[k] for k in graph.row_ids[block.users]]
        item_rows = graph.item_ids[block.items]
        item_ids = [window.item_ids[k] for k in item_rows]
        in_block = np.isin(u, graph.row_ids[block.users]) & np.isin(i, item_rows)
        evidence = {"block": f"{self.name}-{self.blocks_found}", "users": len(user_ids),
                    "items": item_ids[:10], "n_items": len(item_ids), "density": round(block.density, 3),
                    "lift": round(block.lift, 1), "span": [float(t[in_block].min()), float(t[in_block].max())]}
        signals = []
        # Score: the share of a member's block edges that the null does not explain (1 - 1/lift), which
        # the test already holds at >= 1 - 1/min_lift; capped, since no structure is proof.
        user_lift = block.user_edges / np.maximum(block.user_expected, 1e-12)
        source = _replayed_profile(graph, block.users, self.copy_jaccard)
        for k, (uid, lift, edges) in enumerate(zip(user_ids, user_lift, block.user_edges)):
            if k == source:
                continue
            score = float(min(self.max_score, 1.0 - 1.0 / lift))
            if self._new_score("user", uid, score):
                signals.append(Signal("user", uid, self.name, score,
                                      {**evidence, "member_edges": int(edges)}))
        col_lift = block.col_edges / np.maximum(block.col_expected, 1e-12)
        item_score: dict[str, float] = {}
        for col, lift in zip(block.cols, col_lift):
            iid = window.item_ids[graph.item_ids[graph.col_item[col]]]
            item_score[iid] = max(item_score.get(iid, 0.0), float(min(self.max_score, 1.0 - 1.0 / lift)))
        for iid, score in item_score.items():
            if self._new_score("item", iid, score):
                signals.append(Signal("item", iid, self.name, score, evidence))
        return signals

    def _new_score(self, kind: str, entity: str, score: float) -> bool:
        # Re-announce only stronger evidence; the decision stage keeps the maximum anyway.
        key = (kind, entity)
        if score <= self._emitted.get(key, 0.0) + 0.01:
            return False
        self._emitted[key] = score
        if len(self._emitted) > 200_000:  # bounded: forget the oldest half
            for old in list(self._emitted)[:100_000]:
                del self._emitted[old]
        return True


def _replayed_profile(graph: BlockGraph, users: np.ndarray, near: float) -> int:
    """In a block of near-duplicate profiles (every pair's items at Jaccard `near` or more), the member whose
    profile the others replay, else -1. Camouflaged copies replay a real user's profile, each dropping a
    few of its items and adding its target: each copy's items lie within the real profile but for the
    target, while any copy misses the items the others kept. So the real profile is the member that holds
    the others' items best (the least share of any other member's items outside it), alone: in a ring whose
    members rate the very same products no member stands out, and all are named (a ring whose members rate
    most of the same products may lose the one that rated the most). The real profile lands in its copies'
    block, innocent; `copies` tells the copies from it by what they add."""
    rows = graph.A[users]
    items = [set(graph.col_item[rows.indices[rows.indptr[k]:rows.indptr[k + 1]]].tolist())
             for k in range(len(users))]
    n = len(items)
    if n < 3 or any(len(items[a] & items[b]) < near * len(items[a] | items[b])
                    for a, b in itertools.combinations(range(n), 2)):
        return -1
    # per member: the largest share of another member's items outside its own
    outside = [max(len(items[v] - items[s]) / max(len(items[v]), 1) for v in range(n) if v != s)
               for s in range(n)]
    first, second = sorted(outside)[:2]
    return outside.index(first) if first < second else -1
