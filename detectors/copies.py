"""Camouflaged copies: fake accounts that replay a real user's profile, slightly perturbed, and add the
attack's target rating.

Every account's set of rated items is summarised by a MinHash signature, kept incrementally, and indexed by
LSH banding, so that near-duplicate profiles (Jaccard at least `threshold`) are found without comparing all
pairs. A near-duplicate pair is not fraud by itself (households share an account's taste, people
re-register); what gives copies away is what they add. In each verified pair, the *extras* of a side are
the items it rated and its twin did not. A copy's extras are its targets, at the rating scale's extreme;
its source's extras are the copy's dropped items, a random sample of a real profile. When the extras of
several copy pairs converge on one (item, extreme rating) far more often than the pairs' own share of
extras predicts (a Poisson test against the sum, over accounts in pairs that rated that item at that
extreme, of the share of their profile that is extra, and at least `min_lift` times that sum), the accounts
whose extras hold it are copies and the item is their target. (Why the lift: extras are not a random share
of a profile, they lean to the films a twin has not reached yet; on a generous review site, where most
ratings are 5s, real near-duplicates' extras met on popular films at 5 stars 1.9-2.6 times the sum,
significant over dozens of pairs, and named 87 real raters on one full-range stream; planted copies met on
their targets 3.2-6.2 times over there, 14-48 times on MovieLens-based streams. A lift of 3 took that
stream's false flags from 269 to 240, its genuine events held from 25.6% to 21.3%, camouflage recall 0.97
to 0.93; on a full-range attacked stream false flags 10 to 8, recall the same.) A lone pair is at most weak
evidence (`pair_score`, below the flag threshold).

Parameters: `num_perm` MinHash values in `bands` bands; `threshold`, the exact Jaccard of a near-duplicate
pair (LSH proposes, the stored profiles verify); `min_items` ratings before an account is indexed (3: on
a review site most accounts rate a handful of items, and a copy of a five-rating profile is a copy; at 10,
copies of such users went unseen, 0 of 98 on a sparse site's tune stream. Small real profiles make real
near-duplicate pairs common, which the group test, not the pair, is there to absorb);
`max_items` ratings kept per account (later ones are ignored: copies of real profiles are far smaller);
`search_every` new ratings, or `search_seconds` of event time, between searches (and on every empty idle or
flush tick), each over the accounts whose profiles grew since the last; `min_group` accounts with distinct
twins, `alpha` and `min_lift` for a convergent group; `group_score` for its members and target (a member whose twin
also rated the target, otherwise, joins only from a pair at least `join_jaccard` tight in which it holds the
smaller share of extras); `pair_score` for the copy-like side (the smaller share of extras) of a pair that
no group explains, once both accounts have been quiet for `settle_seconds` (while one is still arriving it
looks like a subset of the other, whichever is the copy); `retention_seconds` without a rating before an
account is forgotten, `max_users` accounts kept at most (the least recently active go first),
`max_partners` near-duplicates per account; `max_bucket` accounts in one LSH bucket before it is too common
to tell anything. Ratings are 1..5 stars (the event schema's); `rating_scale` names the extremes.

Why numpy and not `datasketch`: its `MinHash.update` hashes one value with SHA-1 and then takes a
`num_perm` minimum, about 30 us per rating measured here (the budget is a few us per event), each MinHash
object carries its own arrays, and `MinHashLSH` must remove and re-insert a key (about 175 us) whenever a
profile grows. Here one signature matrix is updated for a whole micro-batch in a few vector operations
(a splitmix64 mix of the item's row, then `num_perm` multiply-shift hashes), and bands are re-keyed only
for the accounts that changed, on the search cadence.

Scaling: the state is global (a copy and its source can be any two accounts), kept bounded: per account
a signature of `num_perm` uint32, its band keys and bucket entries, and its item codes (8 bytes a rating),
about 4 KiB for an account of 100 ratings (measured on MovieLens-100K), so the default 100,000 accounts
take about 0.4 GiB; item ids are interned (bounded by the catalog). Work per rating is constant; a search costs per account that grew since the
last. At 10x the traffic one worker still holds it with a larger `max_users` or a shorter retention; at
100x shard the band tables by key over workers (each account sends its band keys to their owners, which
return candidate pairs) and verify pairs where both profiles are kept, by user partition.

References: Broder, "On the resemblance and containment of documents" (1997, MinHash); Indyk & Motwani
(1998) and Leskovec, Rajaraman & Ullman, "Mining of Massive Datasets", ch. 3 (LSH banding); Williams,
Mobasher & Burke, "Defending recommender systems: detection of profile injection attacks" (SOCA 2007) on
obfuscated profiles; Chirita, Nejdl & Zamfir, "Preventing shilling attacks in online recommender systems"
(WIDM 2005) on profile similarity among attackers.

>>> import numpy as np
>>> from detectors.events import RatingEvent
>>> rng = np.random.default_rng(3)
>>> def profile(user, items, ts, stars):
...     return [RatingEvent(event_id=f"{user}-{i}", ts=ts + k, user_id=user, item_id=f"i{i}", rating=s)
...             for k, (i, s) in enumerate(zip(items, stars))]
>>> events = []
>>> for u in range(60):  # real users: 40 ratings each out of 500 items
...     events += profile(f"real{u}", rng.choice(500, 40, replace=False), 0.0, rng.integers(1, 6, 40))
>>> for c in range(6):   # copies of real0..real5, 90% of the items, plus "target" at 5
...     source = [e for e in events if e.user_id == f"real{c}"][:36]
...     events += profile(f"copy{c}", [e.item_id[1:] for e in source] + ["target"], 1e6,
...                       [int(e.rating) for e in source] + [5])
>>> detector = CopyDetector()
>>> detector.observe(events, now=1e6 + 100)  # fewer ratings than `search_every`: no search yet
[]
>>> signals = detector.observe([], now=1e6 + 100)  # the flush tick searches
>>> sorted(s.id for s in signals if s.score >= 0.5)
['copy0', 'copy1', 'copy2', 'copy3', 'copy4', 'copy5', 'itarget']
"""

from __future__ import annotations

import math
import time
from array import array
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.stats import poisson

from detectors._arrays import Interner, grown
from detectors.base import Detector, Signal
from detectors.events import Event, RatingEvent

_MAX = np.uint32(0xFFFFFFFF)
_MASK64 = (1 << 64) - 1


@dataclass(slots=True)
class _Side:
    """One account's view of a near-duplicate pair: what it rated that its twin did not."""

    extras: int  # items rated that the twin did not, plus items rated at least 2 stars apart
    share: float  # extras / profile size: the chance an item of this account is extra, if copying is random
    extreme: dict[int, int]  # item row -> extreme rating (low or high) for every item rated at an extreme
    strong: list[tuple[int, int]]  # (item, extreme) the twin never rated
    weak: list[tuple[int, int]]  # (item, extreme) the twin rated otherwise


@dataclass(slots=True)
class _Pair:
    jaccard: float
    sides: tuple[_Side, _Side]
    checked: float  # event time of the last verification


@dataclass(slots=True)
class _Group:
    """A significant convergence of extras on (item, extreme)."""

    members: dict[int, int] = field(default_factory=dict)  # account -> twin
    observed: int = 0
    expected: float = 0.0
    log10_p: float = 0.0


class CopyDetector(Detector):
    name = "copies"

    def __init__(self, num_perm: int = 64, bands: int = 16, threshold: float = 0.6, min_items: int = 3,
                 max_items: int = 500, search_every: int = 5_000, search_seconds: float = 86_400.0,
                 min_group: int = 3, alpha: float = 1e-4, min_lift: float = 3.0, group_score: float = 0.9,
                 pair_score: float = 0.2,
                 settle_seconds: float = 86_400.0, join_jaccard: float = 0.75, max_partners: int = 50,
                 retention_seconds: float = 365 * 86_400.0, max_users: int = 100_000, max_bucket: int = 500,
                 rating_scale: tuple[float, float] = (1.0, 5.0), seed: int = 0):
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.num_perm = num_perm
        self.bands = bands
        self.threshold = threshold
        self.min_items = min_items
        self.max_items = max_items
        self.search_every = search_every
        self.search_seconds = search_seconds
        self.min_group = min_group
        self.alpha = alpha
        self.min_lift = min_lift
        self.group_score = group_score
        self.pair_score = pair_score
        self.settle_seconds = settle_seconds
        self.join_jaccard = join_jaccard
        self.max_partners = max_partners
        self.retention_seconds = retention_seconds
        self.max_users = max_users
        self.max_bucket = max_bucket
        self.rating_scale = rating_scale
        rng = np.random.default_rng(seed)
        self._mult = rng.integers(0, 1 << 63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._add = rng.integers(0, 1 << 63, num_perm, dtype=np.uint64)
        self._band_mult = rng.integers(0, 1 << 63, num_perm // bands, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        # accounts: rows are reused after expiry
        self._user_row: dict[str, int] = {}
        self._user_ids: list[str | None] = []
        self._free: list[int] = []
        self._codes: list[array] = []  # per account: item row * 8 + rating, in arrival order
        self._sig = np.zeros((0, num_perm), np.uint32)
        self._first_seen = np.zeros(0)
        self._last_seen = np.zeros(0)
        self._keys = np.zeros((0, bands), np.uint64)  # each account's band keys, valid where indexed
        self._indexed = np.zeros(0, bool)
        self._buckets: list[dict[int, int | set[int]]] = [{} for _ in range(bands)]
        self._items = Interner()
        self._dirty: set[int] = set()
        # near-duplicate pairs (low row, high row), each account's partners, and the groups they form
        self._pairs: dict[tuple[int, int], _Pair] = {}
        self._partners: dict[int, set[int]] = {}
        self._strong: dict[tuple[int, int], dict[int, set[int]]] = {}  # (item, extreme) -> account -> twins
        self._groups: dict[tuple[int, int], _Group] = {}
        self._touched: set[tuple[int, int]] = set()  # (item, extreme) keys whose votes changed
        self._unsettled: set[tuple[int, int]] = set()  # pairs not yet judged alone (a side still rating)
        self._since_search = 0
        self._last_search: float | None = None
        self._last_expiry = float("-inf")
        self._emitted: dict[tuple[str, str], float] = {}
        self.searches = 0
        self.search_seconds_spent = 0.0

    # -- streaming ---------------------------------------------------------------------------------------
    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        users, items = [], []
        user_row, item_index, codes, max_items = self._user_row, self._items.index, self._codes, self.max_items
        for event in events:
            if type(event) is not RatingEvent:
                continue
            row = user_row.get(event.user_id)
            if row is None:
                row = self._new_user(event.user_id, event.ts)
            kept = codes[row]
            if len(kept) >= max_items:
                continue
            item = item_index.get(event.item_id)
            if item is None:
                item = self._items.row(event.item_id)
            kept.append(item * 8 + int(event.rating + 0.5))  # validated 1..5 stars: three bits
            users.append(row)
            items.append(item)
        if users:
            self._absorb(np.array(users, np.int64), np.array(items, np.int64), now)
        if self._last_search is None:
            self._last_search = now
        due = self._since_search >= self.search_every or (
            self._since_search > 0 and now - self._last_search >= self.search_seconds)
        if due or (not events and (self._dirty or self._unsettled)):
            return self._search(now)
        return []

    def _new_user(self, user_id: str, ts: float) -> int:
        if self._free:
            row = self._free.pop()
            self._user_ids[row] = user_id
            self._codes[row] = array("q")
        else:
            row = len(self._user_ids)
            self._user_ids.append(user_id)
            self._codes.append(array("q"))
            self._sig = grown(self._sig, row + 1, 0)
            self._first_seen = grown(self._first_seen, row + 1)
            self._last_seen = grown(self._last_seen, row + 1)
            self._keys = grown(self._keys, row + 1)
            self._indexed = grown(self._indexed, row + 1)
        self._sig[row] = _MAX
        self._first_seen[row] = self._last_seen[row] = ts
        self._user_row[user_id] = row
        return row

    def _hashes(self, items: np.ndarray) -> np.ndarray:
        """`num_perm` 32-bit hashes per item: a splitmix64 finaliser of its row, then multiply-shift."""
        with np.errstate(over="ignore"):
            x = items.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x ^= x >> np.uint64(31)
            return ((x[:, None] * self._mult + self._add) >> np.uint64(32)).astype(np.uint32)

    def _absorb(self, users: np.ndarray, items: np.ndarray, now: float) -> None:
        order = np.argsort(users, kind="stable")
        users, hashes = users[order], self._hashes(items[order])
        starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
        touched = users[starts]
        self._sig[touched] = np.minimum(self._sig[touched], np.minimum.reduceat(hashes, starts, axis=0))
        self._last_seen[touched] = now
        self._dirty.update(touched.tolist())
        self._since_search += len(users)

    # -- search ------------------------------------------------------------------------------------------
    def _band_keys(self, rows: np.ndarray) -> np.ndarray:
        per = self.num_perm // self.bands
        sig = self._sig[rows].reshape(len(rows), self.bands, per).astype(np.uint64)
        with np.errstate(over="ignore"):
            keys = (sig * self._band_mult).sum(axis=2, dtype=np.uint64)
        return keys ^ np.arange(self.bands, dtype=np.uint64)  # distinct per band by construction anyway

    # A bucket is one account's row (most are) or a set of rows: a set per key would be most of the memory.
    def _index(self, row: int, keys: list[int]) -> None:
        self._indexed[row] = True
        for buckets, key in zip(self._buckets, keys):
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = row
            elif type(bucket) is int:
                if bucket != row:
                    buckets[key] = {bucket, row}
            else:
                bucket.add(row)

    def _unindex(self, row: int) -> None:
        if not self._indexed[row]:
            return
        self._indexed[row] = False
        for buckets, key in zip(self._buckets, self._keys[row].tolist()):
            bucket = buckets.get(key)
            if bucket is None:
                continue
            if type(bucket) is int:
                if bucket == row:
                    del buckets[key]
                continue
            bucket.discard(row)
            if len(bucket) == 1:
                buckets[key] = bucket.pop()

    def _search(self, now: float) -> list[Signal]:
        started = time.perf_counter()
        self._since_search = 0
        self._last_search = now
        self.searches += 1
        if now - self._last_expiry >= self.retention_seconds / 100 or len(self._user_row) > 1.1 * self.max_users:
            self._expire(now)
            self._last_expiry = now
        dirty = np.array(sorted(r for r in self._dirty if len(self._codes[r]) >= self.min_items), np.int64)
        self._dirty.clear()
        if not len(dirty):
            return self._judge(set(), {}, now)
        keys = self._band_keys(dirty)
        rows, keys_of = dirty.tolist(), keys.tolist()
        for row, row_keys in zip(rows, keys_of):
            self._unindex(row)
            self._index(row, row_keys)
        self._keys[dirty] = keys
        profiles: dict[int, dict[int, int]] = {}
        changed: set[tuple[int, int]] = set()
        for row, row_keys in zip(rows, keys_of):
            candidates: set[int] = set(self._partners.get(row, ()))
            for buckets, key in zip(self._buckets, row_keys):
                bucket = buckets[key]
                if type(bucket) is not int and len(bucket) <= self.max_bucket:
                    candidates |= bucket
            candidates.discard(row)
            if not candidates:
                continue
            others = np.fromiter(candidates, np.int64, len(candidates))
            estimate = (self._sig[others] == self._sig[row]).mean(axis=1)
            # The estimate has a standard error of about 0.06 at 64 values: verify generously.
            for other, est in zip(others.tolist(), estimate.tolist()):
                pair = (min(row, other), max(row, other))
                if est < self.threshold - 0.2 and pair not in self._pairs:
                    continue
                if self._verify(pair, profiles, now):
                    changed.add(pair)
        signals = self._judge(changed, profiles, now)
        self.search_seconds_spent += time.perf_counter() - started
        return signals

    def _profile(self, row: int, profiles: dict[int, dict[int, int]]) -> dict[int, int]:
        profile = profiles.get(row)
        if profile is None:  # last rating of an item wins
            profile = profiles[row] = {code >> 3: code & 7 for code in self._codes[row]}
        return profile

    def _verify(self, pair: tuple[int, int], profiles: dict[int, dict[int, int]], now: float) -> bool:
        """Exact Jaccard of the stored profiles; keep, update or drop the pair. True if it changed."""
        a, b = self._profile(pair[0], profiles), self._profile(pair[1], profiles)
        shared = a.keys() & b.keys()
        jaccard = len(shared) / (len(a) + len(b) - len(shared))
        known = pair in self._pairs
        if jaccard < self.threshold or not known and (
                len(self._partners.get(pair[0], ())) >= self.max_partners
                or len(self._partners.get(pair[1], ())) >= self.max_partners):
            if known:
                self._drop_pair(pair)
                return True
            return False
        self._drop_pair(pair)
        self._pairs[pair] = _Pair(jaccard, (self._side(a, b, shared), self._side(b, a, shared)), now)
        self._partners.setdefault(pair[0], set()).add(pair[1])
        self._partners.setdefault(pair[1], set()).add(pair[0])
        for side, (account, twin) in zip(self._pairs[pair].sides, (pair, pair[::-1])):
            for key in side.strong:
                self._strong.setdefault(key, {}).setdefault(account, set()).add(twin)
            self._touched.update(side.strong)
        return True

    def _side(self, own: dict[int, int], twin: dict[int, int], shared: set[int]) -> _Side:
        low, high = int(self.rating_scale[0] + 0.5), int(self.rating_scale[1] + 0.5)
        extreme = {item: r for item, r in own.items() if r == low or r == high}
        strong = [(item, r) for item, r in extreme.items() if item not in twin]
        weak = [(item, r) for item, r in extreme.items() if item in twin and twin[item] != r]
        apart = sum(1 for item in shared if abs(own[item] - twin[item]) >= 2)
        extras = len(own) - len(shared) + apart
        return _Side(extras, extras / len(own), extreme, strong, weak)

    def _drop_pair(self, pair: tuple[int, int]) -> None:
        old = self._pairs.pop(pair, None)
        if old is None:
            return
        for end in pair:
            partners = self._partners.get(end)
            if partners is not None:
                partners.discard(pair[0] if end == pair[1] else pair[1])
                if not partners:
                    del self._partners[end]
        for side, (account, twin) in zip(old.sides, (pair, pair[::-1])):
            self._touched.update(side.strong)
            for key in side.strong:
                voters = self._strong.get(key)
                if voters is None or account not in voters:
                    continue
                voters[account].discard(twin)
                if not voters[account]:
                    del voters[account]
                if not voters:
                    del self._strong[key]

    # -- judging -----------------------------------------------------------------------------------------
    def _judge(self, changed: set[tuple[int, int]], profiles: dict[int, dict[int, int]], now: float
               ) -> list[Signal]:
        # Re-test every (item, extreme) whose votes changed, and the standing groups (weak members may have
        # come or gone with any pair).
        touched = self._touched | (set(self._groups) if changed else set())
        self._touched = set()
        signals: list[Signal] = []
        for key in touched:
            group = self._test(key)
            if group is None:
                self._groups.pop(key, None)
            else:
                self._groups[key] = group
        # Members: strong voters, and weak ones (the twin rated the item otherwise) whose twin is not itself
        # a strong voter on the same item; each account is judged by its largest group.
        best: dict[int, tuple[_Group, tuple[int, int], int]] = {}
        for key, group in self._groups.items():
            for account, twin in group.members.items():
                if account not in best or group.observed > best[account][0].observed:
                    best[account] = (group, key, twin)
        for account, (group, key, twin) in best.items():
            signals.extend(self._emit_member(account, twin, key, group))
        for key, group in self._groups.items():
            item_id = self._items.ids[key[0]]
            if self._new_score("item", item_id, self.group_score):
                signals.append(Signal("item", item_id, self.name, self.group_score, {
                    "reason": "target of camouflaged copies: extra item of near-duplicate profiles",
                    "rating": key[1], "group_size": group.observed,
                    "expected_by_chance": round(group.expected, 3), "log10_p": group.log10_p,
                    "copies": [self._user_ids[a] for a in list(group.members)[:10]]}))
        if self.pair_score > 0:
            self._unsettled |= {pair for pair in changed if pair in self._pairs}
            signals.extend(self._emit_settled(now, best))
        return signals

    def _test(self, key: tuple[int, int]) -> _Group | None:
        voters = self._strong.get(key, {})
        twins = set().union(*voters.values()) if voters else set()
        if len(voters) < self.min_group or len(twins) < self.min_group:
            return None
        item, rating = key
        # Expected count of accounts with this (item, extreme) among their extras if extras were a random
        # share of each profile: every account in a pair that rated it so, by its largest extra share.
        shares: dict[int, float] = {}
        weak: dict[int, int] = {}
        for (a, b), pair in self._pairs.items():
            for side, other, account, twin in ((*pair.sides, a, b), (*pair.sides[::-1], b, a)):
                if side.extreme.get(item) == rating:
                    shares[account] = max(shares.get(account, 0.0), side.share)
                    # A weak member (its twin rated the target otherwise) must look like the copy on its own:
                    # a tight pair, and holding more of its twin than the twin holds of it. Real near-duplicates
                    # that merely disagree on a popular target are common enough to need that.
                    if (account not in voters and (item, rating) in side.weak
                            and pair.jaccard >= self.join_jaccard and side.share < other.share):
                        weak[account] = twin
        expected = max(sum(shares.values()), 1e-9)
        observed = len(voters)
        p = float(poisson.sf(observed - 1, expected))
        if p >= self.alpha or observed < self.min_lift * expected:
            return None
        members = {account: max(twins_of, key=lambda twin: self._jaccard(account, twin))
                   for account, twins_of in voters.items()}
        low, high = int(self.rating_scale[0] + 0.5), int(self.rating_scale[1] + 0.5)
        for account, twin in weak.items():  # unless the twin is the one adding this item, at either extreme
            if twin not in self._strong.get((item, low), ()) and twin not in self._strong.get((item, high), ()):
                members[account] = twin
        return _Group(members, observed, expected, round(max(math.log10(max(p, 1e-300)), -300), 1))

    def _jaccard(self, a: int, b: int) -> float:
        pair = self._pairs.get((min(a, b), max(a, b)))
        return pair.jaccard if pair is not None else 0.0

    def _emit_member(self, account: int, twin: int, key: tuple[int, int], group: _Group) -> list[Signal]:
        user_id = self._user_ids[account]
        if user_id is None or not self._new_score("user", user_id, self.group_score):
            return []
        return [Signal("user", user_id, self.name, self.group_score, {
            "reason": "near-duplicate of another profile, and its extra item converges with other copies'",
            "twin": self._user_ids[twin], "jaccard": round(self._jaccard(account, twin), 3),
            "extra_item": self._items.ids[key[0]], "extra_rating": key[1],
            "group_size": group.observed, "expected_by_chance": round(group.expected, 3),
            "log10_p": group.log10_p, "first_seen": float(self._first_seen[account]),
            "twin_first_seen": float(self._first_seen[twin])}, whole_history=True)]  # a copy from birth

    def _emit_settled(self, now: float, members: dict[int, object]) -> list[Signal]:
        """Weak evidence on lone pairs, once both profiles have been quiet for `settle_seconds`: while one
        is still arriving it looks like a subset of the other whichever is the copy."""
        signals = []
        quiet = now - self.settle_seconds
        for pair in list(self._unsettled):
            record = self._pairs.get(pair)
            if record is None:
                self._unsettled.discard(pair)
                continue
            a, b = pair
            if max(self._last_seen[a], self._last_seen[b]) > quiet:
                continue
            self._unsettled.discard(pair)
            if a in members or b in members:  # a group explains it better
                continue
            if any(side.extreme.get(item) == rating for item, rating in self._groups for side in record.sides):
                continue  # both rated a group's target its way: the copy cannot be told from its source

            # The copy-like side holds nearly all of its twin: the smaller share of extras. With equal shares
            # (identical sets, say) either could be the copy, and stream order does not tell: no signal.
            share_a, share_b = record.sides[0].share, record.sides[1].share
            if share_a == share_b:
                continue
            copy, twin, side = (a, b, record.sides[0]) if share_a < share_b else (b, a, record.sides[1])
            user_id = self._user_ids[copy]
            if user_id is None or not self._new_score("user", user_id, self.pair_score):
                continue
            signals.append(Signal("user", user_id, self.name, self.pair_score, {
                "reason": "near-duplicate of another profile (alone weak evidence: households, re-registrations)",
                "twin": self._user_ids[twin], "jaccard": round(record.jaccard, 3),
                "extra_share": round(side.share, 3),
                "extra_items": [self._items.ids[i] for i, _ in side.strong[:10]],
                "first_seen": float(self._first_seen[copy]), "twin_first_seen": float(self._first_seen[twin])}))
        return signals

    def _new_score(self, kind: str, entity: str, score: float) -> bool:
        key = (kind, entity)
        if score <= self._emitted.get(key, 0.0) + 0.01:
            return False
        self._emitted[key] = score
        if len(self._emitted) > 200_000:  # bounded: forget the oldest half
            for old in list(self._emitted)[:100_000]:
                del self._emitted[old]
        return True

    # -- bounded memory ----------------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        live = np.array([row for row, uid in enumerate(self._user_ids) if uid is not None], np.int64)
        if not len(live):
            return
        stale = live[self._last_seen[live] < now - self.retention_seconds]
        if len(live) - len(stale) > self.max_users:
            rest = np.setdiff1d(live, stale)
            order = np.argsort(self._last_seen[rest], kind="stable")
            stale = np.r_[stale, rest[order[: len(rest) - self.max_users]]]
        for row in stale.tolist():
            self._forget(row)

    def _forget(self, row: int) -> None:
        self._unindex(row)
        for other in list(self._partners.get(row, ())):
            self._drop_pair((min(row, other), max(row, other)))
        for group in self._groups.values():
            group.members.pop(row, None)
        del self._user_row[self._user_ids[row]]
        self._user_ids[row] = None
        self._codes[row] = array("q")
        self._dirty.discard(row)
        self._free.append(row)
