"""User rating profiles: the shilling literature's profile features, scored against the living population.

Each user's ratings are kept (bounded) with per-item running sums, and at every target test the users
who rated since the last one are re-described by the classic attack-detection features: RDMA, WDMA, WDA,
LengthVar, DegSim, FMTD, MeanVar, share of extreme ratings, rating entropy, target focus, account age,
activity intensity and the popularity of the items rated. Each feature becomes a one-sided robust z-score
against the current population of users (median and MAD, in log space for the heavy-tailed ones, so that a
minority of fakes cannot move the yardstick), and a user's anomaly is the Stouffer sum over one feature per
aspect, itself standardised against the population.

Anomaly alone rarely separates a fake from an eccentric real user. What a push or nuke attack cannot hide is
its *target*: many anomalous profiles giving one item the same extreme rating. So the second stage asks, per
item and direction, whether the item's extreme raters are as a group odder than the extreme raters of items
of the same popularity (a rank-sum test within the popularity stratum, with a floor on the effect size);
such items are flagged as targets, and a two-part mixture of the raters' anomalies (population versus
attack, fitted by EM) picks the members, who are flagged with the target as evidence. A user far out on
their own gets a signal below the flag threshold: heavy and eccentric real users are far out too, so a lone
profile anomaly is evidence that needs another detector's agreement, not a verdict.

Parameters: `min_ratings` before a user is scored; `max_profile` ratings kept per user; `suspect_z`, the
anomaly (robust z over the population) that makes a lone user worth a weak signal; `lone_max`, the score a
lone suspect reaches at `outlier_z`; `target_alpha`, the significance of the target test; `min_effect`, the
least probability that a rater of the target is odder than a comparable rater; `min_attack_share`, the
least share of the target's extreme raters that the attack component of the mixture must hold; `min_shift` and
`min_audience_share`: a target's members must move its mean rating by `min_shift` of the rating scale's width
or be `min_audience_share` of its raters (a push or nuke that neither moves its item's opinion nor makes much
of its audience is a taste some odd raters share, not a campaign); `min_group`, the fewest
raters that make a target; `group_every`, the new extreme ratings between two target tests (which also run
on every idle tick); `min_population` scored users before anything is emitted.

A test runs at the rating that makes it due, with the event time reached at that rating, wherever the
micro-batch boundaries fall: the same stream gives the same flags in `replay` and in a worker whose batches
are whatever the broker delivered.

References: Chirita, Nejdl, Zamfir, "Preventing shilling attacks in online recommender systems" (WIDM 2005):
RDMA, DegSim. Burke, Mobasher, Williams, Bhaumik, "Classification features for attack detection in
collaborative recommender systems" (KDD 2006): WDMA, WDA, LengthVar, FMTD, MeanVar. Mobasher et al.,
"Toward trustworthy recommender systems" (ACM TOIT 2007). Herlocker et al. (SIGIR 1999) for the
significance weighting of DegSim.

>>> import numpy as np
>>> from detectors.events import RatingEvent
>>> rng = np.random.default_rng(7)
>>> appeal = rng.normal(3.6, 0.6, 300)                      # each item's true appeal
>>> weight = 1 / np.arange(1, 301) ** 0.9                   # popularity follows Zipf's law
>>> events = []
>>> for u in range(400):                                    # real users favour popular items
...     for i in rng.choice(300, 40, replace=False, p=weight / weight.sum()):
...         r = int(np.clip(np.rint(appeal[i] + rng.normal(0, 0.9)), 1, 5))
...         events.append(RatingEvent(event_id=f"{u}-{i}", ts=u * 600.0, user_id=f"u{u}", item_id=f"i{i}", rating=r))
>>> for f in range(25):                                     # a random push attack on the obscure i299
...     for i in rng.choice(299, 30, replace=False):
...         r = int(np.clip(np.rint(rng.normal(3.6, 1.1)), 1, 5))
...         events.append(RatingEvent(event_id=f"f{f}-{i}", ts=240000.0 + f, user_id=f"f{f}", item_id=f"i{i}", rating=r))
...     events.append(RatingEvent(event_id=f"f{f}-t", ts=240000.0 + f, user_id=f"f{f}", item_id="i299", rating=5))
>>> detector = ProfileDetector()
>>> signals = detector.observe(events, now=240100.0) + detector.observe([], now=240100.0)  # a tick tests the rest
>>> flagged = {s.id for s in signals if s.kind == "user" and s.score >= 0.5}
>>> sum(u.startswith("f") for u in flagged), sum(u.startswith("u") for u in flagged)  # fakes, real users
(20, 1)
>>> [s.id for s in signals if s.kind == "item"]
['i299']
"""

from __future__ import annotations

import math
from array import array
from typing import Sequence

import numpy as np
from scipy import sparse
from scipy.stats import norm, rankdata

from detectors._arrays import Interner, distinct, grown, robust_z
from detectors.base import Detector, Signal
from detectors.events import Event, RatingEvent

# Feature name -> which side is suspicious (+1 high, -1 low, 0 either). Directions follow the papers where
# they agree: generated filler deviates from item means (RDMA, WDMA, WDA, MeanVar), push profiles separate
# target from filler (FMTD) and favour extremes; fakes are young and fast, and pick filler uniformly from
# the catalog, hence unpopular items and few close neighbours among real users (low DegSim against the
# living population, where Chirita et al. measured high DegSim among the fakes themselves), with ratings
# drawn across the whole scale (high entropy) where real users mostly rate what they chose to watch.
FEATURES: dict[str, int] = {
    "rdma": +1, "wdma": +1, "wda": +1, "length_var": +1, "degsim": -1, "fmtd": +1, "mean_var": +1,
    "extreme_share": +1, "entropy": +1, "target_focus": +1, "account_age": -1, "intensity": +1,
    "popularity": -1,
}
# The anomaly score adds one feature per aspect, so that near-duplicates (WDMA and WDA restate RDMA,
# MeanVar restates both) do not count three times; the rest are kept as evidence for the analyst.
SCORED = ("rdma", "popularity", "degsim", "entropy", "fmtd", "intensity", "account_age")
_Z_CAP = 10.0  # one wild feature must not carry the whole score
_SCORED = np.array([name in SCORED for name in FEATURES])
_LOG_SCALED = np.array([name in ("rdma", "wdma", "wda", "length_var", "mean_var", "account_age", "intensity")
                        for name in FEATURES])


class ProfileDetector(Detector):
    name = "profile"

    def __init__(self, min_ratings: int = 5, max_profile: int = 2000, suspect_z: float = 1.0,
                 outlier_z: float = 6.0, lone_max: float = 0.15, target_alpha: float = 1e-6,
                 min_effect: float = 0.75, min_attack_share: float = 0.7, min_shift: float = 0.05,
                 min_audience_share: float = 0.1, min_group: int = 5, group_every: int = 1000,
                 min_population: int = 50, degsim_neighbours: int = 10, reference_size: int = 2000,
                 rating_scale: tuple[float, float] = (1.0, 5.0), max_score: float = 0.95, seed: int = 0):
        self.min_ratings = min_ratings
        self.max_profile = max_profile
        self.suspect_z = suspect_z
        self.outlier_z = outlier_z
        self.lone_max = lone_max
        self.target_alpha = target_alpha
        self.min_effect = min_effect
        self.min_attack_share = min_attack_share
        self.min_shift = min_shift
        self.min_audience_share = min_audience_share
        self.group_every = group_every
        self.min_group = min_group
        self.min_population = min_population
        self.degsim_neighbours = degsim_neighbours
        self.reference_size = reference_size
        self.rating_scale = rating_scale
        self.max_score = max_score
        self._rng = np.random.default_rng(seed)
        self._users, self._items = Interner(), Interner()
        self._profile_items: list[array] = []
        self._profile_ratings: list[array] = []
        self._length = np.zeros(0, dtype=np.int64)
        self._first_ts = np.zeros(0)
        self._last_ts = np.zeros(0)
        self._item_n = np.zeros(0)
        self._item_sum = np.zeros(0)
        self._features = np.zeros((0, len(FEATURES)))
        self._scored = np.zeros(0, dtype=bool)
        self._anomaly = np.zeros(0)
        self._members = np.zeros(0, dtype=bool)
        self._emitted: dict[str, float] = {}
        self._targets: set[tuple[int, int]] = set()
        self._dirty: set[int] = set()
        # Extreme ratings as an edge list (user, item, +1 max / -1 min), the input of the target test.
        self._edge_user, self._edge_item, self._edge_sign = array("i"), array("i"), array("b")
        self._reference: tuple[np.ndarray, sparse.csr_matrix] | None = None
        self._scorings = 0
        self._edges_scored = 0
        self._clock = -math.inf  # the latest event time seen

    # Defaults for snapshots taken before these existed.
    _scorings = 0
    _clock = -math.inf

    # -- learning -----------------------------------------------------------------------------
    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        low, high = self.rating_scale
        signals: list[Signal] = []
        due_at = self._edges_scored + self._test_every()
        for event in events:
            if type(event) is not RatingEvent:
                continue
            u, i = self._users.row(event.user_id), self._items.row(event.item_id)
            if u == len(self._profile_items):
                self._add_user(event.ts)
            if i >= len(self._item_n):
                self._item_n, self._item_sum = grown(self._item_n, i + 1), grown(self._item_sum, i + 1)
            self._item_n[i] += 1
            self._item_sum[i] += event.rating
            items, ratings = self._profile_items[u], self._profile_ratings[u]
            items.append(i)
            ratings.append(event.rating)
            if len(items) > self.max_profile:  # bounded: forget the oldest rating
                del items[0], ratings[0]
            else:
                self._length[u] += 1
            self._first_ts[u] = min(self._first_ts[u], event.ts)
            self._last_ts[u] = max(self._last_ts[u], event.ts)
            self._clock = max(self._clock, event.ts)
            self._dirty.add(u)
            if event.rating >= high or event.rating <= low:
                self._edge_user.append(u)
                self._edge_item.append(i)
                self._edge_sign.append(1 if event.rating >= high else -1)
                if len(self._edge_user) >= due_at:  # due here, mid-batch or not
                    signals.extend(self._score(self._clock))
                    due_at = self._edges_scored + self._test_every()
        if not events:  # a tick (idle or flush): test what came since the last test
            signals.extend(self._score(now))
        return signals

    def _test_every(self) -> int:
        # Scoring the population and testing targets touch every user and extreme rating, so they run
        # once enough new extreme ratings have come: amortised O(1) per event.
        return max(self.group_every, int(0.02 * len(self._edge_user)))

    def _add_user(self, ts: float) -> None:
        n = len(self._profile_items) + 1
        self._profile_items.append(array("i"))
        self._profile_ratings.append(array("f"))
        self._length = grown(self._length, n)
        self._first_ts = grown(self._first_ts, n, np.inf)
        self._last_ts = grown(self._last_ts, n, -np.inf)
        self._features = grown(self._features, n, np.nan)
        self._scored = grown(self._scored, n, False)
        self._anomaly = grown(self._anomaly, n)
        self._members = grown(self._members, n, False)

    # -- scoring --------------------------------------------------------------------------------
    def _score(self, now: float) -> list[Signal]:
        rows = np.fromiter(self._dirty, dtype=np.int64, count=len(self._dirty))
        rows = rows[self._length[rows] >= self.min_ratings]
        self._dirty.clear()
        fresh = len(self._edge_user) - self._edges_scored
        self._edges_scored = len(self._edge_user)
        if len(rows):
            self._scorings += 1
            self._features[rows] = self.describe(rows, now)
            self._scored[rows] = True
        population = np.flatnonzero(self._scored[: len(self._users)])
        if len(population) < self.min_population or fresh == 0 and not len(rows):
            return []
        reference = population
        if len(reference) > 20_000:  # a uniform sample is as good a yardstick and bounds the cost
            reference = self._rng.choice(population, 20_000, replace=False)
        directions = np.array(list(FEATURES.values()))
        # Ratio-scale features are heavy-tailed (a few users rate thousands of items): compare them in
        # log space, where a fake's "three times the usual deviation" stands out as it should.
        z = robust_z(_log_scaled(self._features[population]), _log_scaled(self._features[reference]))
        one_sided = np.where(directions == 0, np.abs(z), z * directions)
        # Stouffer's sum: features that agree add up, while noise in unrelated ones cancels out.
        strength = np.clip(np.nan_to_num(one_sided[:, _SCORED]), -_Z_CAP, _Z_CAP).sum(axis=1)
        self._anomaly[population] = robust_z(strength[:, None], strength[:, None])[:, 0]
        return self._signals(population, one_sided)

    def describe(self, rows: np.ndarray, now: float) -> np.ndarray:
        """The feature matrix (one row per user in `rows`, columns as in FEATURES)."""
        low, high = self.rating_scale
        lengths = self._length[rows]
        items = np.concatenate([np.frombuffer(self._profile_items[u], dtype=np.int32) for u in rows])
        ratings = np.concatenate([np.frombuffer(self._profile_ratings[u], dtype=np.float32)
                                  for u in rows]).astype(np.float64)
        seg = np.repeat(np.arange(len(rows)), lengths)
        per_user = lambda values: np.bincount(seg, values, minlength=len(rows))  # noqa: E731
        item_n = self._item_n[items]
        deviation = np.abs(ratings - self._item_sum[items] / item_n)
        top = ratings >= high
        extreme = top | (ratings <= low)
        n_top = per_user(top)
        n_filler = lengths - n_top
        filler_mean = per_user(np.where(top, 0.0, ratings)) / np.maximum(n_filler, 1)
        histogram = np.zeros((len(rows), 5))
        bins = np.clip(np.rint((ratings - low) / (high - low) * 4), 0, 4).astype(np.int64)
        np.add.at(histogram, (seg, bins), 1.0)
        share = histogram / lengths[:, None]
        all_lengths = self._length[: len(self._users)].astype(np.float64)
        spread = np.sum((all_lengths - all_lengths.mean()) ** 2) or 1.0
        focus = np.zeros(len(rows))
        if self._targets:
            on_target = np.zeros(len(items), dtype=bool)
            signs = np.where(top, 1, np.where(extreme, -1, 0))
            for item, sign in self._targets:
                on_target |= (items == item) & (signs == sign)
            focus = per_user(on_target) / np.maximum(per_user(extreme), 1)
        span = self._last_ts[rows] - self._first_ts[rows]
        return np.column_stack([
            per_user(deviation / item_n) / lengths,                               # rdma
            per_user(deviation / item_n ** 2) / lengths,                          # wdma
            per_user(deviation / item_n),                                         # wda
            np.abs(lengths - all_lengths.mean()) / spread,                        # length_var
            self._degsim(rows, items, ratings, seg),                              # degsim
            np.where((n_top > 0) & (n_filler > 0), np.abs(high - filler_mean), 0.0),  # fmtd
            per_user(np.where(top, 0.0, deviation ** 2)) / np.maximum(n_filler, 1),  # mean_var
            per_user(extreme) / lengths,                                          # extreme_share
            -np.sum(np.where(share > 0, share * np.log(np.where(share > 0, share, 1)), 0), axis=1) / math.log(5),
            focus,                                                                # target_focus
            np.maximum(now - self._first_ts[rows], 0.0),                          # account_age
            lengths / np.maximum(span, 3600.0),                                   # intensity (per hour floor)
            per_user(np.log1p(item_n)) / lengths,                                 # popularity
        ])

    def _degsim(self, rows: np.ndarray, items: np.ndarray, ratings: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """Mean similarity to the k most similar users of a reference sample (adjusted cosine with
        significance weighting); the sample is refreshed periodically to bound the cost."""
        if self._reference is None or self._scorings % 20 == 1:
            self._reference = self._reference_matrix()
        ref_rows, ref = self._reference
        if ref.shape[0] <= self.degsim_neighbours:
            return np.zeros(len(rows))
        n_items = max(len(self._items), ref.shape[1])
        mine = _centred_matrix(seg, items, ratings, len(rows), n_items)
        ref = _pad_columns(ref, n_items)
        similarity = (mine @ ref.T).toarray()
        norms = np.sqrt(np.asarray(mine.multiply(mine).sum(axis=1)).ravel())
        ref_norms = np.sqrt(np.asarray(ref.multiply(ref).sum(axis=1)).ravel())
        similarity /= np.maximum(np.outer(norms, ref_norms), 1e-9)
        overlap = ((mine != 0).astype(np.float64) @ (ref != 0).astype(np.float64).T).toarray()
        similarity *= np.minimum(overlap, 50.0) / 50.0
        similarity[rows[:, None] == ref_rows[None, :]] = -np.inf  # not oneself
        k = self.degsim_neighbours
        return np.partition(similarity, -k, axis=1)[:, -k:].mean(axis=1)

    def _reference_matrix(self) -> tuple[np.ndarray, sparse.csr_matrix]:
        candidates = np.flatnonzero(self._length[: len(self._users)] >= self.min_ratings)
        if len(candidates) > self.reference_size:
            candidates = self._rng.choice(candidates, self.reference_size, replace=False)
        lengths = self._length[candidates]
        if len(candidates) == 0:
            return candidates, sparse.csr_matrix((0, len(self._items)))
        items = np.concatenate([np.frombuffer(self._profile_items[u], dtype=np.int32) for u in candidates])
        ratings = np.concatenate([np.frombuffer(self._profile_ratings[u], dtype=np.float32)
                                  for u in candidates]).astype(np.float64)
        seg = np.repeat(np.arange(len(candidates)), lengths)
        return candidates, _centred_matrix(seg, items, ratings, len(candidates), len(self._items))

    # -- the target test and the signals --------------------------------------------------------
    def _signals(self, population: np.ndarray, one_sided: np.ndarray) -> list[Signal]:
        signals: list[Signal] = []
        members: dict[int, list[tuple[int, int]]] = {}
        belief: dict[int, float] = {}  # a member's posterior of belonging to an attack component
        for item, sign, group, posterior, evidence in self._targets_and_groups(population):
            self._members[group] = True
            for u, p in zip(group.tolist(), posterior.tolist()):
                members.setdefault(u, []).append((item, sign))
                belief[u] = max(belief.get(u, 0.0), p)
            if (item, sign) not in self._targets:
                self._targets.add((item, sign))
                signals.append(Signal("item", self._items.ids[item], self.name, 0.9, evidence))
        suspect = self._anomaly >= self.suspect_z
        names = list(FEATURES)
        in_group = np.zeros(len(population), dtype=bool)
        if members:
            in_group = np.isin(population, np.fromiter(members, dtype=np.int64))
        for position in np.flatnonzero(in_group | suspect[population]):
            u = int(population[position])
            anomaly = float(self._anomaly[u])
            if u in members:  # the mixture's posterior: calibrated under its two-part model
                score = min(self.max_score, belief[u])
            else:  # weak evidence: eccentric real users are far out too
                score = self.lone_max * min(1.0, (anomaly - self.suspect_z) / (self.outlier_z - self.suspect_z))
            user_id = self._users.ids[u]
            if score < 0.05 or score <= self._emitted.get(user_id, 0.0) + 0.02:
                continue
            self._emitted[user_id] = score
            z = one_sided[position]
            top = np.argsort(-np.nan_to_num(z))[:4]
            evidence = {"anomaly_z": round(anomaly, 2),
                        "features": {names[f]: round(float(z[f]), 2) for f in top},
                        "ratings": len(self._profile_items[u])}
            if u in members:
                evidence["targets"] = [{"item": self._items.ids[i], "direction": "push" if s > 0 else "nuke"}
                                       for i, s in members[u][:5]]
            signals.append(Signal("user", user_id, self.name, score, evidence))
        return signals


    def _targets_and_groups(self, population: np.ndarray):
        """Items whose extreme raters are, as a group, more anomalous than the extreme raters of items of
        the same popularity (a rank-sum test within the popularity stratum, with an effect-size floor so
        that a huge item's tiny shift is not a target), and the raters who make up the attack: a two-part
        mixture of anomalies (the population versus an attack component, fitted by EM) picks them."""
        if not len(self._edge_user):
            return
        users = np.frombuffer(self._edge_user, dtype=np.int32)
        items = np.frombuffer(self._edge_item, dtype=np.int32)
        signs = np.frombuffer(self._edge_sign, dtype=np.int8)
        scored = self._scored[users]
        users, key = users[scored], items[scored].astype(np.int64) * 2 + (signs[scored] > 0)
        anomaly = np.clip(self._anomaly, -_Z_CAP, _Z_CAP)
        reference = anomaly[population]
        mean0, sd0 = reference.mean(), max(reference.std(), 1e-6)
        # Users already explained by one target neither make another (a bandwagon attack's popular
        # items) nor weigh on the yardstick; a known target keeps counting all its raters.
        target_keys = np.fromiter((i * 2 + (s > 0) for i, s in self._targets), dtype=np.int64)
        counted = ~self._members[users] | np.isin(key, target_keys)
        users, key = users[counted], key[counted]
        # Raters of obscure items are eccentric by construction (rating them moves RDMA and popularity),
        # so each item is compared with items of its own popularity: strata of doubling rating counts.
        stratum = np.log2(self._item_n[key // 2] + 1).astype(np.int64)
        n_keys = 2 * len(self._items)
        raters = np.bincount(key, minlength=n_keys)
        ranks = np.empty(len(key))
        stratum_size = np.bincount(stratum)
        for s in np.flatnonzero(stratum_size):
            in_s = stratum == s
            ranks[in_s] = rankdata(anomaly[users[in_s]])
        busy = np.flatnonzero(raters >= self.min_group)
        m = raters[busy].astype(np.float64)
        n = stratum_size[np.log2(self._item_n[busy // 2] + 1).astype(np.int64)] - m
        u_stat = np.bincount(key, ranks, minlength=n_keys)[busy] - m * (m + 1) / 2
        effect = u_stat / np.maximum(m * n, 1)  # P(a rater of this item is odder than a comparable rater)
        z = (u_stat - m * n / 2) / np.sqrt(np.maximum(m * n * (m + n + 1) / 12, 1e-9))
        chosen = (z >= norm.isf(self.target_alpha)) & (effect >= self.min_effect) & (n >= m)
        # The most clear-cut targets first: accounts they explain explain the others' groups too.
        strongest = np.argsort(-effect[chosen], kind="stable")
        explained = self._members.copy()
        for k, item_z, item_effect in zip(busy[chosen][strongest], z[chosen][strongest], effect[chosen][strongest]):
            group = distinct(users[key == k])
            share, posterior = _attack_posterior(anomaly[group], mean0, sd0)
            if share < self.min_attack_share:
                # The odd part is a minority of the item's extreme raters: an odd audience (a wave of new
                # users who all rated one film), not a campaign, which must be most of them to move opinion.
                continue
            # Raters another target already explains are its attackers; the rest of this item's raters
            # share what is left of the attack component (a bandwagon's blockbusters are explained by the
            # fakes found on its target, and their real fans keep their innocence).
            known = explained[group]
            left = max(0.0, share * len(group) - known.sum()) / max((~known).sum(), 1)
            posterior = np.where(known, posterior, np.minimum(posterior, left))
            # A member is likelier attack than population, and at least as odd as a suspect: where a third
            # of the accounts are fakes, the attack component is wide, and organic raters of a real target
            # near the population's centre took its posterior (70 real raters named on three sparse review
            # sites at anomaly 0-1.5, against 65 of 2,192 attackers found there).
            chosen_members = (posterior >= 0.5) & (anomaly[group] >= max(mean0, self.suspect_z))
            group, posterior = group[chosen_members], posterior[chosen_members]
            item, sign = int(k // 2), 1 if k % 2 else -1
            shift = self._shift(item, sign, len(group))
            audience = len(group) / max(self._item_n[item], 1.0)
            if (abs(shift) < self.min_shift * (self.rating_scale[1] - self.rating_scale[0])
                    and audience < self.min_audience_share):
                # A campaign moves its target's opinion (its mean) or makes a large part of its audience (what
                # co-occurrence and implicit models learn from). Heavy raters who all disliked one film (on a
                # generous site its rare 1s stand out) do neither: 8 of 247 raters, 0.08-0.10 stars, on a tune
                # stream; 7 of 189, 0.125 stars, on a full-range one. Planted pushes found on tune streams:
                # 0.09-2.3 stars, 21-100% of the audience.
                continue
            explained[group] = True
            if len(group) < self.min_group:
                continue
            yield item, sign, group, posterior, {
                "reason": "push target" if sign > 0 else "nuke target", "extreme_raters": int(raters[k]),
                "effect": round(float(item_effect), 3), "z": round(float(item_z), 2),
                "mean_shift": round(float(shift), 3), "audience_share": round(float(audience), 3),
                "attack_share": round(float(share), 3),
                "sample_users": [self._users.ids[u] for u in group[:10]]}

    def _shift(self, item: int, sign: int, members: int) -> float:
        """How far `members` extreme ratings (the scale's top for a push, its bottom for a nuke) moved the
        item's mean from the mean of its other raters."""
        n, total = self._item_n[item], self._item_sum[item]
        extreme = self.rating_scale[1] if sign > 0 else self.rating_scale[0]
        if members <= 0:
            return 0.0
        if n <= members:  # the members are its whole audience: its opinion is theirs
            return extreme - (self.rating_scale[0] if sign > 0 else self.rating_scale[1])
        others = (total - members * extreme) / (n - members)
        return members * (extreme - others) / n


def _log_scaled(features: np.ndarray) -> np.ndarray:
    scaled = features.copy()
    scaled[:, _LOG_SCALED] = np.log(scaled[:, _LOG_SCALED] + 1e-9)
    return scaled


def _centred_matrix(seg: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_rows: int,
                    n_items: int) -> sparse.csr_matrix:
    means = np.bincount(seg, ratings, minlength=n_rows) / np.maximum(np.bincount(seg, minlength=n_rows), 1)
    centred = ratings - means[seg]
    centred[centred == 0] = 1e-6  # keep co-rating visible where a rating equals the user's mean
    return sparse.csr_matrix((centred, (seg, items)), shape=(n_rows, n_items))


def _attack_posterior(x: np.ndarray, mean0: float, sd0: float, iterations: int = 50):
    """EM for a two-part mixture whose first part is the population N(mean0, sd0): returns the attack
    part's share and each point's posterior of belonging to it."""
    share, mean1, sd1 = 0.5, max(float(np.median(x)), mean0 + sd0), max(float(x.std()), 0.25 * sd0)
    population = _normal_pdf(x, mean0, sd0)
    posterior = np.zeros(len(x))
    for _ in range(iterations):
        attack = share * _normal_pdf(x, mean1, sd1)
        posterior = attack / np.maximum(attack + (1 - share) * population, 1e-300)
        share = float(posterior.mean())
        if share <= 1e-6:
            return 0.0, posterior
        mean1 = max(float(np.sum(posterior * x) / posterior.sum()), mean0)
        sd1 = max(float(np.sqrt(np.sum(posterior * (x - mean1) ** 2) / posterior.sum())), 0.25 * sd0)
    return share, posterior


def _normal_pdf(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    # scipy.stats.norm.pdf costs ~70 us of argument checking per call; EM calls it fifty times per group.
    return np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def _pad_columns(matrix: sparse.csr_matrix, n_columns: int) -> sparse.csr_matrix:
    if matrix.shape[1] == n_columns:
        return matrix
    matrix = matrix.copy()
    matrix.resize((matrix.shape[0], n_columns))
    return matrix
