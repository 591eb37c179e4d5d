"""Collusive review rings, found on the thin items that only they rate.

A ring that promotes its own products (new listings, obscure ones) is most of their audience: a product's
few ratings come from the ring's accounts, at the top of the scale. Nothing here shifts an opinion (a
product rated three times has none to shift), and one 5 on an obscure item proves nothing (its one fan
gives it a 5). What the ring cannot hide is that it rates together: its accounts meet again and again on
the same thin items (at most `thin_raters` raters) and give them top ratings.

An account's pool is the ratings that it and its repeat co-raters (accounts that rated at least `min_shared`
of the same thin items, and at least `min_shared_share` of the account's) gave the thin items it rated. (A
ring that pushes real obscure films meets their heavy real raters two or three times; counted as co-raters,
their ordinary ratings dragged the members' pools under the floor: on two full-range attacked streams 24 of 59
members were found with `min_shared` alone, 40 with a share of 0.15.) The account is a member when the pool
spans at least `min_items` items, holds at least `min_coraters` ratings by repeat co-raters and top ratings at
or above the floor (below), and its count of top ratings beats a binomial test against the share of top
ratings among the thin items' ratings by accounts not found so far, at `alpha` divided by the accounts that
rated a thin item (Bonferroni). A ring that owns many thin items raises that share (on a review site with a
third of its accounts fake, 0.38-0.40 where real raters give 0.18-0.19): the test grows conservative with
contamination instead of naming more. So the members found leave the baseline, and once it has fallen by
`retest_drop` every account is tested again against it (a forward search: the baseline moves toward the real
raters' share and stops there, since the real raters stay in it; at the end of the input, rounds run until it
stops falling). Why repeat co-raters: ratings of one item agree (a good obscure film gathers 5s from everyone
who finds it), so pooled over all their raters a heavy rater's obscure favourites passed the binomial by taste
alone (36 real raters on one MovieLens-based stream, pools 20% at the top against 13%); real raters seldom
meet twice on thin items, ring members do. Why the floor (an effect size): heavy real raters who meet on a
dozen good films pool 20-40% 5s, significant over a hundred ratings (21 of them on another stream); a ring's
pools are nearly all top ratings. The floor is `top_gap` of the way from the site's habit to all-top, and at
least `min_top_share`; the habit is the larger of the baseline and the share of top ratings on items past thin
(rings do not own those, so contamination does not move it). On a generous site (most ratings 5s) good obscure
items gather 5s from nearly everyone and heavy fans pool 80-90% of them: with the fixed 60% floor alone, a
MovieLens-based attack-free stream whose ratings were moved up one star at random (4 to 5, 3 to 4 or 5) had
283 real raters named, 18 with this floor.

Only the top of the scale is tested: an obscure item's 1s are its organic verdict (bad obscure films gather
1s from everyone; on MovieLens-based streams a test of the bottom end named heavy real raters), and a ring
that demotes aims at competitors with an audience, whose opinion `rating_shift` follows.

Then the ring's products: a thin item with at least `min_owners` members among its top raters and at least
the floor of its ratings at the top belongs to the ring and is signalled as a target. Accounts that
rated at least `min_items` thin items, all at the top, at least half of them the ring's products, join the
ring (a member with two or three products has too small a pool of its own; a real fan of one product rated
other thin items otherwise, and a casual rater of one product is not judged). So does a tested member's
repeat co-rater whose thin ratings are all at the top: its ratings made the member's pool significant.
Joined accounts do not recruit, so no chain runs from one to the next.

Islands: a ring whose members each rate one to three of its products has no pools (no two members meet
twice), but its accounts and products form a closed patch of the graph that only top ratings reach: accounts
whose every thin rating is at the top, joined by settled thin items that only top ratings reached. Such an
island's accounts are members when it holds at least `min_owners` accounts and `min_items` items and that
many top ratings in a row would come by chance at the site's habit less often than the pool test's level.
On the attacked tune streams (MovieLens-based) islands named 11 more ring members of 32 on one stream, no real
rater on nine streams of every kind, one on a generous review site (a real rater whose few thin ratings
were 5s, one of them a ring's product).

Time: an item is judged thin only once `settle_seconds` of event time and `settle_ratings` ratings of the
stream have passed since its first rating and it still has at most `thin_raters` raters: a premiere's
first raters are its whole audience for an hour, and in a stream's first weeks even popular films have a
handful of raters (by volume, a settled thin item holds at most `thin_raters` of `settle_ratings` ratings,
whatever the stream's rate). Tests run at the rating that makes them due (every `test_seconds` of event
time) and on empty ticks, so replay and a worker decide alike; a stream with no usable time (a ratings
dump at one timestamp) is judged on its empty ticks as if every item had settled, and so is every item at the
end of a replayed file (`finish`): nothing more will come to settle it.

What it cannot see: a ring large enough to push its products past `thin_raters` itself, and a ring whose
members rate one product each and camouflage with ratings below the top on other thin items (no pool, no
island); `dense_block` sees the first when its members rate most of the
products.

Parameters: `thin_raters`; `settle_seconds`, `settle_ratings`; `min_shared`, `min_shared_share`; `min_items`;
`min_coraters`; `alpha`; `retest_drop`, the fall of the baseline that has every account tested again;
`min_top_share`, `top_gap` and `min_habit_ratings` (ratings of items past thin before their share counts as
the habit); `min_owners`; `member_score` for a tested member and its ring's products,
`joined_score` for an account that joins through products; `test_seconds`; `top_rating`, the least rating
that counts as the top of the scale (1..5 stars); `max_user_items` thin items kept per account; `max_users`
and `max_items` kept (the oldest go first).

Scaling: per thin item at most `thin_raters` (account, top) pairs, per account at most `max_user_items` item
ids; an item past `thin_raters` keeps only its count. A round tests the accounts whose pools changed since
the last. Sharded by item, a ring's products would be judged apart: the pool spans items (issue 18).

References: Mukherjee, Liu & Glance, "Spotting fake reviewer groups in consumer reviews" (WWW 2012): a
group's share of a product's reviewers and its members' extreme ratings are its strongest indicators; Xu &
Zhang, "Towards collusive fraud detection in online reviews" (ICDM 2015).

>>> from detectors.events import RatingEvent
>>> events, t = [], 0.0
>>> for u in range(300):                                   # real users: a few ratings each, on any item
...     for k in range(4):
...         item = (u * 7 + k * 13) % 400
...         events.append(RatingEvent(event_id=f"r{u}-{k}", ts=t, user_id=f"u{u}", item_id=f"i{item}",
...                                   rating=1 + (u + k) % 5))
...         t += 60.0
>>> for m in range(6):                                     # a ring of six, three own products each
...     for p in range(3):
...         events.append(RatingEvent(event_id=f"f{m}-{p}", ts=t, user_id=f"f{m}", item_id=f"p{(m + p) % 6}",
...                                   rating=5))
>>> detector = ReviewRingDetector(settle_seconds=0.0, settle_ratings=0)
>>> signals = detector.observe(events, now=t) + detector.observe([], now=t)
>>> sorted(s.id for s in signals if s.kind == "user")
['f0', 'f1', 'f2', 'f3', 'f4', 'f5']
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Sequence

from scipy.stats import binom

from detectors.base import Detector, Signal
from detectors.events import Event, RatingEvent


class _Item:
    """One item: its raters' count, whether it has settled and, while thin, its raters (account -> top?)."""

    __slots__ = ("count", "top", "settled", "raters")

    def __init__(self):
        self.count, self.top, self.settled = 0, 0, False
        self.raters: dict[str, bool] | None = {}


class ReviewRingDetector(Detector):
    name = "review_rings"

    def __init__(self, thin_raters: int = 25, settle_seconds: float = 7 * 86400.0, settle_ratings: int = 20_000,
                 min_shared: int = 2, min_shared_share: float = 0.15, min_items: int = 2, min_coraters: int = 2,
                 min_top_share: float = 0.6,
                 alpha: float = 0.01, min_owners: int = 2, retest_drop: float = 0.05, top_gap: float = 0.5,
                 min_habit_ratings: int = 1000, member_score: float = 0.95,
                 joined_score: float = 0.9, test_seconds: float = 6 * 3600.0, top_rating: float = 5.0,
                 max_user_items: int = 100,
                 max_users: int = 500_000, max_items: int = 500_000):
        self.thin_raters = thin_raters
        self.settle_seconds = settle_seconds
        self.settle_ratings = settle_ratings
        self.min_coraters = min_coraters
        self.alpha = alpha
        self.min_shared = min_shared
        self.min_shared_share = min_shared_share
        self.min_top_share = min_top_share
        self.min_items = min_items
        self.min_owners = min_owners
        self.retest_drop = retest_drop
        self.top_gap = top_gap
        self.min_habit_ratings = min_habit_ratings
        self.member_score = member_score
        self.joined_score = joined_score
        self.test_seconds = test_seconds
        self.top_rating = top_rating
        self.max_user_items = max_user_items
        self.max_users = max_users
        self.max_items = max_items
        self._items: dict[str, _Item] = {}
        # account -> the thin items it rated, (id, item), while they are thin
        self._users: dict[str, list[tuple[str, _Item]]] = {}
        self._thin_ratings = 0  # ratings on items thin now, and how many of them at the top
        self._thin_top = 0
        self._wide_ratings = 0  # ratings of items past thin (with an audience), and how many at the top
        self._wide_top = 0
        self._floor_now = min_top_share  # the least top share of a pool or product, as of the last round
        self._dirty: set[str] = set()  # accounts whose pool changed since the last round
        self._settling: deque[tuple[float, int, str]] = deque()  # (first rating's time and number, item)
        self._ratings = 0  # ratings seen
        self._members: set[str] = set()
        self._tested: set[str] = set()  # the members that passed the pool test themselves
        self._owned: set[str] = set()
        self._first_ts: float | None = None
        self._clock = float("-inf")
        self._round_at: float | None = None
        self._share_tested = 0.0  # the highest baseline an account was tested against since all last were

    def __setstate__(self, state: dict) -> None:  # older snapshots lack what came later: its starting value
        for key, value in (("_tested", set(state["_members"])), ("_share_tested", 0.0), ("retest_drop", 0.05),
                           ("top_gap", 0.5), ("min_habit_ratings", 1000), ("_wide_ratings", 0), ("_wide_top", 0),
                           ("_floor_now", state["min_top_share"]), ("min_shared_share", 0.0)):
            state.setdefault(key, value)
        self.__dict__.update(state)

    # -- streaming ------------------------------------------------------------------------------------
    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        if not events:
            untimed = self._first_ts is not None and self._clock == self._first_ts
            return self._round(float("inf") if untimed else self._clock)
        signals: list[Signal] = []
        for event in events:
            if type(event) is not RatingEvent:
                continue
            ts = event.ts
            if self._first_ts is None:
                self._first_ts = ts
            if ts > self._clock:
                self._clock = ts
                # A round falls at the rating that makes it due, before it: the same whatever the batches.
                if self._round_at is None:
                    self._round_at = ts
                elif ts // self.test_seconds > self._round_at // self.test_seconds:
                    signals += self._round(ts)
            self._rate(event.user_id, event.item_id, event.rating >= self.top_rating, ts)
        return signals

    def finish(self, now: float) -> list[Signal]:
        """The end of the input: every thin item has the whole audience it will get, settled or not (a
        replay of a review site's dump whose last weeks, or whole span, fall inside the settling wait)."""
        signals = self._round(float("inf"))
        while more := self._round(float("inf")):  # until the baseline stops falling
            signals += more
        return signals

    def _rate(self, user: str, item_id: str, top: bool, ts: float) -> None:
        self._ratings += 1
        item = self._items.get(item_id)
        if item is None:
            if len(self._items) >= self.max_items:
                self._forget_items()
            item = self._items[item_id] = _Item()
            if len(self._settling) >= self.max_items:  # a stream without usable time never settles any
                self._settling.popleft()
            self._settling.append((ts, self._ratings, item_id))
        raters = item.raters
        if raters is None:  # long past thin: only counted, and into the site's habit
            item.count += 1
            self._wide_ratings += 1
            self._wide_top += top
            return
        before = raters.get(user)
        if before is not None:  # a rating changed: the last one counts
            if before != top:
                raters[user] = top
                delta = 1 if top else -1
                item.top += delta
                self._thin_top += delta
                self._dirty.update(raters)
            return
        item.count += 1
        if item.count > self.thin_raters:  # no longer thin: its ratings leave the pools and the baseline
            self._thin_ratings -= len(raters)
            self._thin_top -= item.top
            self._dirty.update(raters)
            for rater in raters:  # and its raters' lists, which then hold only thin items
                mine = self._users.get(rater)
                if mine is not None:
                    mine[:] = [entry for entry in mine if entry[1] is not item]
            item.raters = None
            self._wide_ratings += len(raters) + 1
            self._wide_top += item.top + top
            return
        raters[user] = top
        item.top += top
        self._thin_ratings += 1
        self._thin_top += top
        mine = self._users.get(user)
        if mine is None:
            if len(self._users) >= self.max_users:
                self._forget_users()
            mine = self._users[user] = []
        if len(mine) < self.max_user_items:
            mine.append((item_id, item))
        self._dirty.update(raters)

    # -- rounds ---------------------------------------------------------------------------------------
    def _round(self, now: float) -> list[Signal]:
        """Test the accounts whose pools changed (or whose items settled) since the last round; then the
        products the members carry."""
        untimed = now == float("inf")
        if not untimed:
            self._round_at = now
        while self._settling and (untimed or (self._settling[0][0] <= now - self.settle_seconds and
                                              self._settling[0][1] <= self._ratings - self.settle_ratings)):
            item = self._items.get(self._settling.popleft()[2])
            if item is not None:
                item.settled = True
                if item.raters:
                    self._dirty.update(item.raters)
        share = self._baseline()
        if share is not None:
            if share < self._share_tested * (1.0 - self.retest_drop):
                # The baseline fell (found members' ratings left it): every account is tested again against it.
                self._share_tested = share
                self._dirty.update(user for user, mine in self._users.items() if len(mine) >= self.min_items)
            self._share_tested = max(self._share_tested, share)
        dirty, self._dirty = self._dirty, set()
        if not dirty or share is None:
            return []
        floor = self._floor_now = self._floor(share)
        level = self.alpha / max(len(self._users), 1)
        signals: list[Signal] = []
        found: list[str] = []
        for user in sorted(dirty - self._members):
            evidence = self._pool(user, floor)
            if evidence is None:
                continue
            top, ratings, items = evidence
            if top < floor * ratings:
                continue
            p = float(binom.sf(top - 1, ratings, share))
            if p < level:
                self._members.add(user)
                self._tested.add(user)
                found.append(user)
                signals.append(Signal("user", user, self.name, self.member_score, {
                    "test": "pool", "items": items[:20], "top_ratings": top, "ratings": ratings,
                    "top_share_expected": round(share, 4), "p_value": p, "level": level}, whole_history=True))
        signals += self._islands(dirty, share, level, found)
        # Products are looked at again wherever a member's items changed or settled, not only at a new member.
        signals += self._products(found + sorted(dirty & self._members))
        signals += self._joiners(sorted(dirty & self._tested))
        return signals

    def _baseline(self) -> float | None:
        """The share of top ratings among the thin items' ratings by accounts not found to be members (None
        without any): the found members' own ratings leave the baseline they are tested against."""
        ratings, top = self._thin_ratings, self._thin_top
        for user in self._members:
            for _, item in self._users.get(user, ()):
                at_top = item.raters.get(user) if item.raters else None
                if at_top is not None:
                    ratings -= 1
                    top -= at_top
        return top / ratings if ratings > 0 else None

    def _thin_of(self, user: str) -> list[tuple[str, _Item]]:
        """The settled items, thin now, that the account rated (its list holds only items it rated while they
        were thin; one that stops being thin, or is forgotten, has no raters)."""
        return [(item_id, item) for item_id, item in self._users.get(user, ()) if item.settled and item.raters]

    def _islands(self, dirty: set[str], share: float, level: float, found: list[str]) -> list[Signal]:
        """Islands: accounts whose every thin rating is at the top, joined by settled thin items that only
        top ratings reached (two raters or more). A ring whose members each rate one to three of its
        products makes no pool (no two of them meet twice), but its products and accounts still form such a
        closed all-top patch of the graph; real raters rarely do (an obscure item's audience disagrees, and
        a real rater's thin ratings are not all at the top). An island's accounts are members when it holds
        at least `min_owners` accounts and `min_items` items, and its ratings, all at the top, would be that
        many top ratings in a row at the site's habit with a chance below the pool test's level. Appends
        the members found to `found`."""
        habit = self._habit(share)
        signals: list[Signal] = []
        seen: set[str] = set()
        for start in sorted(dirty - self._members):
            if start in seen or not self._all_top(start):
                continue
            accounts, items, ratings = self._island(start)
            seen |= accounts
            p = habit ** ratings
            if len(accounts) < self.min_owners or len(items) < self.min_items or p >= level:
                continue
            for user in sorted(accounts - self._members):
                self._members.add(user)
                found.append(user)
                signals.append(Signal("user", user, self.name, self.member_score, {
                    "test": "island", "accounts": len(accounts), "items": sorted(items)[:20], "ratings": ratings,
                    "top_share_expected": round(habit, 4), "p_value": p, "level": level}, whole_history=True))
        return signals

    def _island(self, start: str, cap: int = 10_000) -> tuple[set[str], set[str], int]:
        """The all-top accounts and all-top items reachable from `start`, and the ratings joining them (a
        breadth-first search, stopped at `cap` accounts: a patch that large is no ring's)."""
        accounts, items, ratings = {start}, set(), 0
        queue = deque([start])
        while queue and len(accounts) < cap:
            user = queue.popleft()
            for item_id, item in self._users.get(user, ()):
                if not self._all_top_item(item):
                    continue
                ratings += 1
                if item_id in items:
                    continue
                items.add(item_id)
                for rater in item.raters:
                    if rater not in accounts and self._all_top(rater):
                        accounts.add(rater)
                        queue.append(rater)
        return accounts, items, ratings

    @staticmethod
    def _all_top_item(item: _Item) -> bool:
        return bool(item.settled and item.raters and len(item.raters) >= 2 and item.top == len(item.raters))

    def _all_top(self, user: str) -> bool:
        """Whether every thin item the account rated got its top rating, and one of them is an all-top item."""
        joined = False
        for _, item in self._users.get(user, ()):
            raters = item.raters
            if raters:
                if not raters[user]:
                    return False  # most accounts stop here, at their first rating below the top
                joined = joined or self._all_top_item(item)
        return joined

    def _habit(self, share: float) -> float:
        """The site's habit: the larger of the baseline and the share of top ratings on items with an
        audience (past thin; rings do not own them, so contamination does not move it)."""
        if self._wide_ratings >= self.min_habit_ratings:
            return max(share, self._wide_top / self._wide_ratings)
        return share

    def _floor(self, share: float) -> float:
        """The least share of top ratings a pool (and a product) must hold: `top_gap` of the way from the
        site's habit (`_habit`) to all-top, and at least `min_top_share`: on a site where most ratings are 5s,
        fans of good obscure items pool 5s as a ring does, and only pools far above the habit say anything."""
        habit = self._habit(share)
        return max(self.min_top_share, habit + self.top_gap * (1.0 - habit))

    def _pool(self, user: str, floor: float) -> tuple[int, int, list[str]] | None:
        """(top ratings, ratings, items): the ratings that the account and its repeat co-raters (accounts
        that rated at least `min_shared` of the same thin items) gave the settled thin items it rated;
        None without `min_items` items, `floor` of its own ratings of them at the top, or
        `min_coraters` ratings by repeat co-raters."""
        thin = self._thin_of(user)
        # A member gives its products top ratings itself: checked first, on its own ratings (cheap), before
        # its co-raters are counted (a heavy rater meets hundreds of them on its thin items).
        if len(thin) < self.min_items or sum(item.raters[user] for _, item in thin) < floor * len(thin):
            return None
        seen = self._shared(thin, user)
        least = self._least_shared(len(thin))
        pool = {other for other, n in seen.items() if n >= least}
        if sum(seen[other] for other in pool) < self.min_coraters:
            return None
        pool.add(user)
        top = ratings = 0
        for _, item in thin:
            for rater, at_top in item.raters.items():
                if rater in pool:
                    ratings += 1
                    top += at_top
        return top, ratings, [item_id for item_id, _ in thin]

    @staticmethod
    def _shared(thin: list[tuple[str, _Item]], user: str) -> Counter:
        """How many of these thin items each other account rated."""
        return Counter(other for _, item in thin for other in item.raters if other != user)

    def _coraters(self, user: str) -> list[str]:
        """The account's repeat co-raters: accounts that rated `min_shared` or more of its settled thin items."""
        thin = self._thin_of(user)
        least = self._least_shared(len(thin))
        return [other for other, n in self._shared(thin, user).items() if n >= least]

    def _least_shared(self, items: int) -> int:
        """Thin items a repeat co-rater shares with an account of `items` thin items: `min_shared`, and
        `min_shared_share` of them. A heavy account meets real heavy raters twice or thrice on the obscure
        films it rated (a ring that pushes real products rates films that have an audience), its ring
        mates on a good part of its products."""
        return max(self.min_shared, math.ceil(self.min_shared_share * items))

    def _joiners(self, tested: list[str]) -> list[Signal]:
        """A tested member's repeat co-rater that gave every thin item it rated the top rating is one of the
        accounts that made the member's pool significant: it joins (by pool), then the products it carries.
        Only tested members recruit so, and no chain runs from one joined account to the next. (Accounts
        that rate the ring's products after they were found are not joined by product then: on streams
        with dates drawn at random, real fans who found the products later were 12 of 29 such joins.)"""
        joined: list[Signal] = []
        for member in tested:
            for user in self._coraters(member):
                if user not in self._members and self._carries(user, owned=False):
                    self._members.add(user)
                    joined.append(Signal("user", user, self.name, self.joined_score, {
                        "test": "joined", "via": "pool", "member": member}, whole_history=True))
        return joined + self._products([signal.id for signal in joined])

    def _products(self, found: list[str]) -> list[Signal]:
        """The thin items the new members carry, and the accounts that join through them (until none)."""
        signals: list[Signal] = []
        while found:
            joined: list[str] = []
            carried = {item_id: item for user in found for item_id, item in self._users.get(user, ())}
            for item_id in sorted(set(carried) - self._owned):
                item = carried[item_id]
                if not item.raters or not item.settled:
                    continue
                owners = [u for u, top in item.raters.items() if top and u in self._members]
                if len(owners) < self.min_owners or item.top < self._floor_now * len(item.raters):
                    continue
                self._owned.add(item_id)
                signals.append(Signal("item", item_id, self.name, self.member_score, {
                    "test": "owned", "members": sorted(owners)[:20], "raters": len(item.raters)}))
                for user, top in sorted(item.raters.items()):
                    if top and user not in self._members and self._carries(user):
                        self._members.add(user)
                        joined.append(user)
                        signals.append(Signal("user", user, self.name, self.joined_score, {
                            "test": "joined", "via": "product", "item": item_id, "members": len(owners)},
                            whole_history=True))
            found = joined
        return signals

    def _carries(self, user: str, owned: bool = True) -> bool:
        """Whether the account rated `min_items` thin items or more, all at the top, (where `owned`) half of
        them or more the ring's products."""
        # Every thin item it rated counts toward "all at the top", settled or not: a low rating judged later
        # is as much its own opinion.
        if not all(item.raters[user] for _, item in self._users.get(user, ()) if item.raters):
            return False
        thin = self._thin_of(user)
        return (len(thin) >= self.min_items
                and (not owned or 2 * sum(item_id in self._owned for item_id, _ in thin) >= len(thin)))

    # -- bounds ---------------------------------------------------------------------------------------
    def _forget_users(self) -> None:
        for user in list(self._users)[: len(self._users) // 2]:
            del self._users[user]
            self._members.discard(user)
            self._tested.discard(user)

    def _forget_items(self) -> None:
        for item_id in list(self._items)[: len(self._items) // 2]:
            item = self._items.pop(item_id)
            if item.raters is not None:
                self._thin_ratings -= len(item.raters)
                self._thin_top -= item.top
                item.raters = None  # its raters' lists skip it from now on
            self._owned.discard(item_id)
