"""Temporal coordination: many new or thin accounts converging on one item, with one rating, within a short
window - review bombing and its push-side twin - told apart from a single user's own sign-up burst.

For every (item, rating) that newcomers touch, two tests must both pass at `alpha`. Burst: the key's count
over the last `window` (a decayed count-min) against what its long-run share of traffic predicts (Poisson).
Newcomers: the share of those events coming from newcomers against the item's own long-run newcomer share,
smoothed towards the population's (binomial). A user's own burst adds at most one event to each item, so it
cannot make a key burst; a new blockbuster bursts, but its newcomers come in their usual proportion; forty
fresh accounts 1-starring a well-liked film in an hour pass both. Newcomer means `thin` (fewer than
`thin_events` events so far) or `new` (first seen within `new_seconds`), tested separately: copy-attack
fakes carry long copied profiles but are new, bombers are thin. Members of a passing key are its newcomers
in the window (distinct users, from a bounded buffer); each scores the share of the key's newcomers the null
does not explain, 1 - expected newcomers / newcomers. An established item whose extreme-rating share shifts without a crowd
of newcomers (aged accounts bombing it, or a real controversy) gets an item signal only: nothing there says
which raters are fake. An extreme-rating burst on an item the baseline knew, whose newcomers are no more
than usual (where everyone rates at sign-up, as in MovieLens, the newcomer test has no power), gives its
newcomers `burst_user_score`: evidence to combine with another detector's, never enough to flag alone.

The baseline is read from frozen copies of the long-run counts at least `baseline_lag` old, so a campaign
that runs for days cannot become its own null (fakes need not be rare); past that lag, a key found with a
crowd of thin accounts keeps the baseline of its first detection for as long as members keep arriving (and the
longest window after), so the tenth day of a slow push is judged as the first was. With no usable time (one timestamp
for everything) or less than twice `baseline_lag` of history there is no baseline, and the detector stays
silent rather than guess.

Parameters: `windows` (seconds: an hour, a day and a week, so that a bomb spread over ten days, a few
accounts a day, still adds up in one window), `history_half_life` of the long-run counts, `thin_events`, `new_seconds`,
`alpha` per key and window test (1e-6: some 10^4 keys tested a day at a family-wise error near 1%), `min_group`, `prior_events` (pseudo-events of smoothing towards the item's and the rating's overall
shares), `baseline_lag`, `burst_user_score`, `max_score`, `buffer_size`, sketch `depth` and `width`.

Scaling: constant memory - count-min sketches and a fixed buffer of recent newcomer events; O(1) per event.
Partitioned by item, each worker holds its items' keys; the population shares (newcomer share, rating shares)
are local estimates of global rates and need no join. At 100x traffic the buffer covers a shorter stretch of
newcomer events: size it to the newcomer rate times the longest window.

References: Bhatia et al., "MIDAS", AAAI 2020 (count-min burst tests on edge streams); Kulldorff, "A spatial
scan statistic", 1997 (Poisson excess over a baseline); Mukherjee, Liu, Glance, WWW 2012 (group rating
deviation).

>>> import random
>>> from detectors.events import RatingEvent
>>> rng = random.Random(5)
>>> events = [RatingEvent(event_id=f"e{k}", ts=float(k * 60), user_id=f"u{rng.randrange(300)}",
...                       item_id=f"i{rng.randrange(100)}", rating=rng.choice([3, 4, 4, 5, 5]))
...           for k in range(30000)]
>>> detector = CoordinationDetector()
>>> [s for day in range(21) for s in detector.observe(events[day * 1440:(day + 1) * 1440], now=(day + 1) * 86400.0)]
[]
>>> bomb = [RatingEvent(event_id=f"b{k}", ts=1800000.0 + 60 * k, user_id=f"fresh{k}", item_id="i3", rating=1)
...         for k in range(30)]
>>> signals = detector.observe(bomb, now=bomb[-1].ts)  # its first quarter hour is tested when the second begins
>>> signals += detector.observe([], now=bomb[-1].ts)    # the last waits for the next quarter, or a tick
>>> sorted({s.id for s in signals if s.kind == "user" and s.score >= 0.5}) == sorted(f"fresh{k}" for k in range(30))
True
>>> [s.id for s in signals if s.kind == "item"][:1]
['i3']
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
from scipy.special import bdtrc, pdtrc

from detectors.base import Detector, Signal
from detectors.events import Event
from detectors.robust import betabinom_tail
from detectors.sketch import DecayingCountMin, combine, interactions, stable_hash

KINDS = ("thin", "new")
_KIND_KEYS = np.array([0x7468696E, 0x6E6577], dtype=np.uint64)  # hashes of the kinds, to pair with items
_STARS = ("1", "2", "3", "4", "5")
_STAR_KEYS = stable_hash(list(_STARS))  # the rating keys, as `interactions` names them
# The end of the scale a rating belongs to: a push piles onto 4-5, a nuke onto 1-2.
_END_OF = {"1": (True, True, False, False, False), "2": (True, True, False, False, False),
           "4": (False, False, False, True, True), "5": (False, False, False, True, True)}
PRIOR_RATINGS = 2.0  # pseudo-ratings of the population's opinion in an item's reference


class CoordinationDetector(Detector):
    name = "coordination"

    def __init__(self, windows: tuple[float, ...] = (3600.0, 86400.0, 7 * 86400.0), history_half_life: float = 30 * 86400.0,
                 thin_events: int = 5, new_seconds: float = 86400.0, alpha: float = 1e-6, min_group: int = 5,
                 prior_events: float = 20.0, baseline_lag: float = 3 * 86400.0,
                 burst_user_score: float = 0.35, max_score: float = 0.95, buffer_size: int = 50_000,
                 depth: int = 4, width: int = 1 << 16, min_opinion_shift: float = 0.2,
                 min_opinion_baseline: float = 10.0, max_history: float = 30.0):
        self.windows = windows
        self.history_half_life = history_half_life
        self.thin_events = thin_events
        self.new_seconds = new_seconds
        self.alpha = alpha
        self.min_group = min_group
        self.prior_events = prior_events
        self.baseline_lag = baseline_lag
        self.burst_user_score = burst_user_score
        self.max_score = max_score
        self.buffer_size = buffer_size
        self.depth = depth
        self.width = width
        self.min_opinion_shift = min_opinion_shift
        self.min_opinion_baseline = min_opinion_baseline
        self.max_history = max_history
        self._seen = DecayingCountMin(None, depth, width)          # events per user, lifetime
        self._first = np.full((depth, width), np.inf)              # min-sketch: first ts per user
        self._slow = DecayingCountMin(history_half_life, depth, width)  # per item, per (item, rating)
        self._slow_kind = {kind: DecayingCountMin(history_half_life, 1, 2) for kind in KINDS}
        self._slow_item_kind = DecayingCountMin(history_half_life, depth, width)  # per (item, kind)
        self._ratings = DecayingCountMin(history_half_life, 1, 64)  # per rating value, for priors
        # per window: counts per (item, rating), and per (item, rating, newcomer kind) under salted keys
        self._fast = {w: DecayingCountMin(w * np.log(2.0), depth, 2 * width) for w in windows}
        self._fast_total = {w: DecayingCountMin(w * np.log(2.0), 1, 2) for w in windows}
        self._start: float | None = None
        # Frozen copies of the long-run counts, one per half lag; tests read the newest that is at least
        # `baseline_lag` old, so a campaign running for days does not become its own baseline.
        self._snapshots: list[tuple[float, dict]] = []
        # bounded buffer of newcomer events: ts, (item, rating) key, kind bits, user, item, rating
        self._buf_ts = np.full(buffer_size, -np.inf)
        self._buf_key = np.zeros(buffer_size, np.uint64)
        self._buf_bits = np.zeros(buffer_size, np.int8)
        self._buf_user: list[str] = [""] * buffer_size
        self._buf_pos = 0
        self._announced: dict[tuple[str, str], float] = {}
        self._hashes: dict[str, int] = {}
        # (item, rating) keys with a crowd of newcomers found: the baseline they were judged by, frozen, and
        # when a member last arrived (see _held_baseline)
        self._campaigns: dict[int, tuple] = {}  # share, thin share, last member, opinion baseline
        # per window, the (item, rating) keys newcomers touched since its last test: key -> (item key,
        # rating key, item, rating); and the latest event time seen, where the next tests are made
        self._pending: dict[float, dict[int, tuple[int, int, str, str]]] = {w: {} for w in windows}
        self._last_at = -np.inf

    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        users, items, ratings, ts = interactions(events)
        if not users:  # a tick (idle or flush) tests what waits; other events are not interactions
            return [] if events else self._test_due(list(self.windows))
        t = np.asarray(ts)
        if self._start is None:
            self._start = float(t.min())
        ukey, ikey, rkey = (stable_hash(ids, self._hashes) for ids in (users, items, ratings))
        pkey = combine(ikey, rkey)
        bits = self._newcomer_bits(ukey, t)
        kind_keys = [combine(pkey, _KIND_KEYS[b : b + 1]) for b in range(len(KINDS))]
        self._remember(np.flatnonzero(bits > 0), t, pkey, bits, users)
        # A window is tested once per quarter of itself, at the first event past that quarter's end (or on a
        # tick), on the newcomers who acted since its last test. So a micro-batch that spans hours of event
        # time is judged slice by slice, and the tests fall where they would whatever the batches.
        order = np.argsort(t, kind="stable")
        piece = np.floor(t[order] / (min(self.windows) / 4))
        signals: list[Signal] = []
        uncounted: list[np.ndarray] = []  # decayed counts add in any order: brought up to date only
        # before a test reads them, in one call rather than per slice
        long_run: list[np.ndarray] = []  # slices not yet in the long-run counts: read only through
        # snapshots, they are added (slice by slice, in one pass) before a test takes one, and at the end
        for chunk in np.split(order, np.flatnonzero(np.diff(piece)) + 1):
            begins = float(t[chunk[0]])
            due = [w for w in self.windows if self._pending[w]
                   and np.floor(begins / (w / 4)) > np.floor(self._last_at / (w / 4))]
            if due:
                if uncounted:
                    self._count(np.concatenate(uncounted), t, bits, pkey, kind_keys)
                    uncounted = []
                if long_run and self._snapshot_due(self._last_at):
                    self._count_long_run(long_run, t, bits, ikey, rkey, pkey)
                    long_run = []
                signals += self._test_due(due)
            long_run.append(chunk)
            uncounted.append(chunk)
            # a key's item and rating are the same whichever event names it: one entry per key serves all
            fresh = chunk[bits[chunk] > 0]
            touched = {p: (i, r, items[k], ratings[k]) for p, i, r, k in zip(
                pkey[fresh].tolist(), ikey[fresh].tolist(), rkey[fresh].tolist(), fresh.tolist())}
            for w in self.windows:
                self._pending[w].update(touched)
            self._last_at = max(self._last_at, float(t[chunk[-1]]))
        if uncounted:
            self._count(np.concatenate(uncounted), t, bits, pkey, kind_keys)
        if long_run:
            self._count_long_run(long_run, t, bits, ikey, rkey, pkey)
        # Bounded: a window whose waiting keys outgrow the newcomer buffer is tested now.
        overfull = [w for w in self.windows if len(self._pending[w]) > self.buffer_size]
        return signals + (self._test_due(overfull) if overfull else [])

    def _count_long_run(self, chunks: list[np.ndarray], t: np.ndarray, bits: np.ndarray, ikey: np.ndarray,
                        rkey: np.ndarray, pkey: np.ndarray) -> None:
        """Add the slices `chunks` (event rows, in turn) to the long-run counts, each sketch slice by slice as
        when they were added one at a time (read by tests only through a lagged snapshot)."""
        rows = np.concatenate(chunks)
        times = t[rows]
        ends = np.cumsum([len(chunk) for chunk in chunks]).tolist()
        # a slice's items, then its (item, rating) pairs
        self._slow.add_runs(np.concatenate([k for chunk in chunks for k in (ikey[chunk], pkey[chunk])]),
                            np.concatenate([times[a - len(chunk):a] for chunk, a in zip(chunks, ends)
                                            for _ in range(2)]), [2 * a for a in ends])
        self._ratings.add_runs(rkey[rows], times, ends)
        # Newcomers per kind; `_slow_item_kind` took a slice's thin ones, then its new ones
        slice_of = np.repeat(np.arange(len(chunks)), [len(chunk) for chunk in chunks])
        which = [np.flatnonzero((bits[rows] >> b) & 1 == 1) for b in range(len(KINDS))]
        for b, kind in enumerate(KINDS):
            runs = np.cumsum(np.bincount(slice_of[which[b]], minlength=len(chunks))).tolist()
            self._slow_kind[kind].add_runs(np.zeros(len(which[b]), np.uint64), times[which[b]], runs)
        kind_of = np.repeat(np.arange(len(KINDS)), [len(w) for w in which])
        at = np.concatenate(which)
        order = np.lexsort((at, kind_of, slice_of[at]))  # by slice, kind, then event
        at, kind_of = at[order], kind_of[order]
        runs = np.cumsum(np.bincount(slice_of[at] * len(KINDS) + kind_of, minlength=len(chunks) * len(KINDS)))
        self._slow_item_kind.add_runs(combine(ikey[rows][at], _KIND_KEYS[kind_of]), times[at], runs.tolist())

    def _test_due(self, windows: list[float]) -> list[Signal]:
        """Test `windows` at the latest event time seen, on the keys their newcomers touched since."""
        windows = [w for w in windows if self._pending[w]]
        if not windows:
            return []
        at = self._last_at
        baseline = self._baseline(at)
        signals: list[Signal] = []
        for w in windows:
            waiting, self._pending[w] = self._pending[w], {}
            if baseline is None:  # none yet, or no usable time at all
                continue
            keys = np.fromiter(waiting, np.uint64, len(waiting))
            order = np.argsort(keys)
            values = list(waiting.values())
            ordered = [values[k] for k in order.tolist()]  # Python ints index a list much faster
            signals += self._test(at, w, baseline, keys[order],
                                  np.array([value[0] for value in ordered], np.uint64),
                                  np.array([value[1] for value in ordered], np.uint64),
                                  [value[2] for value in ordered], [value[3] for value in ordered])
        return signals

    def _count(self, rows: np.ndarray, t: np.ndarray, bits: np.ndarray, pkey: np.ndarray,
               kind_keys: list[np.ndarray]) -> None:
        """Add events `rows` of the batch to the window counts."""
        thin, new = (bits[rows] & 1) > 0, (bits[rows] & 2) > 0
        keys = np.concatenate([pkey[rows], kind_keys[0][rows][thin], kind_keys[1][rows][new]])
        times = np.concatenate([t[rows], t[rows][thin], t[rows][new]])
        cells = self._fast[self.windows[0]]._rows(keys)  # every window's sketch has the same shape
        totals = np.zeros((1, len(rows)), np.int64)  # the totals' one cell
        for w in self.windows:
            self._fast[w].add(keys, times, rows=cells)
            self._fast_total[w].add(totals[0], t[rows], rows=totals)

    def _snapshot_due(self, now: float) -> bool:
        return not self._snapshots or now - self._snapshots[-1][0] >= self.baseline_lag / 2

    def _baseline(self, now: float) -> dict | None:
        if self._snapshot_due(now):
            self._snapshots.append((now, copy.deepcopy({
                "slow": self._slow, "item_kind": self._slow_item_kind, "kind": self._slow_kind,
                "ratings": self._ratings})))
        # Usable: at least `baseline_lag` old, and itself holding at least `baseline_lag` of history.
        ready = [snap for at, snap in self._snapshots
                 if now - at >= self.baseline_lag and at - self._start >= self.baseline_lag]
        if len(ready) > 1:  # bounded: older snapshots than the newest ready one are never read again
            self._snapshots = self._snapshots[len(ready) - 1:]
        return ready[-1] if ready else None

    def _newcomer_bits(self, ukey: np.ndarray, t: np.ndarray) -> np.ndarray:
        # Prior events: the sketch's count before this batch plus earlier occurrences within the batch.
        order = np.argsort(ukey, kind="stable")
        sorted_keys = ukey[order]
        starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
        group_start = np.maximum.accumulate(np.where(starts, np.arange(len(ukey)), 0))
        rank = np.empty(len(ukey))
        rank[order] = np.arange(len(ukey)) - group_start
        prior = self._seen.query(ukey, 0.0) + rank
        rows = self._seen._rows(ukey)
        for d in range(self.depth):
            np.minimum.at(self._first[d], rows[d], t)
        first = self._first[np.arange(self.depth)[:, None], rows].max(axis=0)
        self._seen.add(ukey, np.zeros(len(ukey)))
        thin = prior < self.thin_events
        new = (t - first) < self.new_seconds
        return thin.astype(np.int8) | (new.astype(np.int8) << 1)

    def _remember(self, idx: np.ndarray, t: np.ndarray, pkey: np.ndarray, bits: np.ndarray,
                  users: list[str]) -> None:
        idx = idx[-self.buffer_size:]  # a ring: the oldest newcomer events are overwritten
        at = (self._buf_pos + np.arange(len(idx))) % self.buffer_size
        self._buf_ts[at], self._buf_key[at], self._buf_bits[at] = t[idx], pkey[idx], bits[idx]
        for pos, k in zip(at.tolist(), idx.tolist()):
            self._buf_user[pos] = users[k]
        self._buf_pos = (self._buf_pos + len(idx)) % self.buffer_size

    def _test(self, now: float, w: float, base: dict, all_keys: np.ndarray, all_ikeys: np.ndarray,
              all_rkeys: np.ndarray, all_items: list[str], all_ratings: list[str]) -> list[Signal]:
        """Test window `w` at `now` on (item, rating) keys, each with its item and rating keys and names."""
        signals: list[Signal] = []
        count = self._fast[w].query(all_keys, now)
        big = count >= self.min_group  # most keys hold a rating or two: nothing more to compute
        if not big.any():
            return signals
        keys, count = all_keys[big], count[big]
        ikey, rkey = all_ikeys[big], all_rkeys[big]
        chosen = np.flatnonzero(big)
        items, ratings = [all_items[k] for k in chosen], [all_ratings[k] for k in chosen]
        slow_total = base["slow"].count(now) / 2.0  # items and pairs were both counted
        slow_pair = base["slow"].query(keys, now)
        slow_item = base["slow"].query(ikey, now)
        rating_share = base["ratings"].query(rkey, now) / max(base["ratings"].count(now), 1e-12)
        total = self._fast_total[w].count(now)
        starred = np.array([rating in _STARS for rating in ratings])  # clicks carry no opinion
        # Baseline share of the key, smoothed towards its item's share times its rating's share.
        prior = (slow_item / max(slow_total, 1e-12)) * rating_share
        share = (slow_pair + self.prior_events * prior) / (slow_total + self.prior_events)
        expected = np.maximum(total * share, 1e-9)
        burst = pdtrc(np.maximum(np.round(count) - 1, 0), expected) < self.alpha
        burst &= count >= self.min_group
        # Thin accounts on a key with a campaign under way are judged by the campaign's first baseline
        # (see _held_baseline). Only thin ones: a new account may go on to a long real history, and a benign
        # newcomer who joins a campaign's target would lose all of it.
        held_share, held_nu = self._held_baseline(keys, now)  # NaN where no campaign is under way
        held_expected, held_burst = expected, burst
        if not np.isnan(held_share).all():
            held_expected = np.maximum(total * np.fmin(share, held_share), 1e-9)
            held_burst = pdtrc(np.maximum(np.round(count) - 1, 0), held_expected) < self.alpha
            held_burst &= count >= self.min_group
        for b, kind in enumerate(KINDS):
            # The item's own newcomer share, smoothed towards the population's: old niche films are
            # rated by long-time users, new releases by newcomers, and each is judged by its own habit.
            nu_all = base["kind"][kind].count(now) / max(slow_total, 1e-12)
            item_kind = base["item_kind"].query(combine(ikey, _KIND_KEYS[b : b + 1]), now)
            from_kind = self._fast[w].query(combine(keys, _KIND_KEYS[b : b + 1]), now)
            nu = (item_kind + self.prior_events * nu_all) / (slow_item + self.prior_events)
            nu = np.clip(nu, 1e-9, 1 - 1e-9)
            kind_burst, kind_expected = burst, expected
            if kind == "thin":
                nu = np.fmin(nu, held_nu)
                kind_burst, kind_expected = held_burst, held_expected
            n, k = np.round(count), np.round(np.minimum(from_kind, count))
            crowded = kind_burst & (k >= self.min_group) & starred
            crowded[crowded] = bdtrc(k[crowded] - 1, n[crowded].astype(int), nu[crowded]) < self.alpha
            # An extreme-rating burst on an item the baseline already knew, where newcomers are no more
            # than usual: weak evidence for its newcomers (where everyone is new, as on a site whose
            # users rate at sign-up, the crowd test has no power), to combine with other detectors.
            extreme = np.array([rating in ("1", "5") for rating in ratings])
            weak = burst & ~crowded & extreme & (slow_item > 0) & (k >= self.min_group)
            # Either way the newcomers must move the item's opinion: a crowd that rates as the item is
            # usually rated (a premiere's fans, a film in the news) is a crowd, not an attack.
            tested = np.flatnonzero(crowded | weak)
            moved, attack_share, reference = self._opinion_shift(now, w, base, keys[tested], ikey[tested],
                                                                 [ratings[j] for j in tested], b)
            for j, shifted, excess, ref in zip(tested.tolist(), moved, attack_share, reference):
                if not shifted:
                    continue
                if crowded[j]:
                    if kind == "thin":
                        self._freeze(int(keys[j]), now, float(share[j]), float(nu[j]), ref)
                    signals.extend(self._members(now, w, kind, keys[j], items[j], ratings[j],
                                                 float(count[j]), float(kind_expected[j]), float(nu[j]),
                                                 excess=float(excess)))
                else:
                    signals.extend(self._members(now, w, kind, keys[j], items[j], ratings[j],
                                                 float(count[j]), float(expected[j]), float(nu[j]),
                                                 cap=self.burst_user_score, excess=float(excess)))
        # A shift on an established item without a crowd of newcomers: aged accounts, or a controversy.
        established = slow_item >= 10 * self.prior_events
        for j in np.flatnonzero(burst & established):
            if ratings[j] in ("1", "5"):
                signals.extend(self._shift(now, w, items[j], ratings[j], float(count[j]),
                                           float(expected[j])))
        return signals

    # A campaign that runs for days would become its own null once the lagged baseline takes in its first
    # days (the target's newcomer share climbs towards one): a key keeps the baseline of its first crowd
    # detection while members keep arriving, and for the longest window after the last.
    def _held_baseline(self, keys: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Per key, the share and thin share its campaign was first judged by; NaN where none is under way."""
        share, nu = np.full(len(keys), np.nan), np.full(len(keys), np.nan)
        if self._campaigns:
            horizon = now - max(self.windows)
            for j, key in enumerate(keys.tolist()):
                held = self._campaigns.get(key)
                if held is not None and held[2] >= horizon:
                    share[j], nu[j] = held[0], held[1]
        return share, nu

    def _opinion_shift(self, now: float, w: float, base: dict, keys: np.ndarray, ikey: np.ndarray,
                       ratings: list[str], b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For (item, rating) keys whose newcomers of kind `b` crowd in window `w`: do those newcomers pile
        up at the key's end of the scale (4-5 for a push, 1-2 for a nuke; a crowd at 3 moves nothing) far
        beyond the item's established opinion? The reference is the item's own share at that end in the
        lagged baseline (a campaign under way keeps the one of its first detection), as a beta posterior
        whose history weighs at most `max_history` ratings (a real audience's opinion drifts) on a weak
        prior at the population's share; the test is the beta-binomial tail of the newcomers' count at that
        end among all their ratings of the item, with an effect floor. An item with too little history has
        no opinion to shift, and the test abstains. Returns (shifted, the share of the key's newcomers that
        the reference does not explain, the reference histogram) per key."""
        n_keys = len(keys)
        shifted, excess = np.zeros(n_keys, bool), np.zeros(n_keys)
        if n_keys == 0:
            return shifted, excess, np.zeros((0, len(_STARS)))
        pairs = combine(np.repeat(ikey, len(_STARS)), np.tile(_STAR_KEYS, n_keys))
        history = base["slow"].query(pairs, now).reshape(n_keys, len(_STARS))
        held = self._held_opinion(keys, now)
        history = np.where(np.isnan(held), history, held)
        population = base["ratings"].query(_STAR_KEYS, now) + 1.0
        newcomers = np.round(self._fast[w].query(combine(pairs, _KIND_KEYS[b : b + 1]), now)).reshape(
            n_keys, len(_STARS))
        end = np.array([_END_OF.get(r, (False,) * len(_STARS)) for r in ratings])
        count = history.sum(axis=1)
        weight = np.minimum(count, self.max_history) / np.maximum(count, 1e-9)
        at_end, count = (history * end).sum(axis=1) * weight, count * weight
        prior_share = (population * end).sum(axis=1) / population.sum()
        a = PRIOR_RATINGS * prior_share + at_end
        b_ = PRIOR_RATINGS * (1 - prior_share) + count - at_end
        p = a / (a + b_)
        n = newcomers.sum(axis=1)
        k = np.minimum((newcomers * end).sum(axis=1), n)
        share = k / np.maximum(n, 1)
        candidates = (end.any(axis=1) & (history.sum(axis=1) >= self.min_opinion_baseline)
                      & (share - p >= self.min_opinion_shift) & (k >= self.min_group))
        for j in np.flatnonzero(candidates):
            shifted[j] = betabinom_tail(int(k[j]), int(n[j]), float(a[j]), float(b_[j])) < self.alpha
        # Of the key's newcomers at that end, those an in-line crowd would have brought: (n - attackers) * p.
        excess = np.clip((k - n * p) / np.maximum((1 - p) * k, 1e-9), 0.0, 1.0)
        return shifted, excess, history

    def _held_opinion(self, keys: np.ndarray, now: float) -> np.ndarray:
        """Per key, the item's rating histogram its campaign was first judged by; NaN where none."""
        held = np.full((len(keys), len(_STARS)), np.nan)
        if self._campaigns:
            horizon = now - max(self.windows)
            for j, key in enumerate(keys.tolist()):
                campaign = self._campaigns.get(key)
                if campaign is not None and campaign[2] >= horizon and len(campaign) > 3:
                    held[j] = campaign[3]
        return held

    def _freeze(self, key: int, now: float, share: float, nu: float, opinion: np.ndarray) -> None:
        held = self._campaigns.get(key)
        if held is not None and now - held[2] <= max(self.windows):  # under way: its first baseline stays
            share, nu = held[0], held[1]
            opinion = held[3] if len(held) > 3 else opinion
        self._campaigns[key] = (share, nu, now, opinion)
        if len(self._campaigns) > 100_000:  # bounded: forget the campaigns quiet the longest
            for old in sorted(self._campaigns, key=lambda k: self._campaigns[k][2])[:50_000]:
                del self._campaigns[old]

    def restore(self, state: bytes) -> None:
        # absent from snapshots taken before campaigns were kept and tests waited for their quarter's end
        self._campaigns, self._pending, self._last_at = {}, {w: {} for w in self.windows}, -np.inf
        super().restore(state)

    def _members(self, now: float, w: float, kind: str, key: np.uint64, item: str, rating: str, count: float,
                 expected: float, nu: float, cap: float | None = None, excess: float = 1.0) -> list[Signal]:
        bit = 1 << KINDS.index(kind)
        hit = ((self._buf_key == key) & (self._buf_ts >= now - w) & (self._buf_ts <= now)
               & ((self._buf_bits & bit) > 0))
        members = sorted({self._buf_user[k] for k in np.flatnonzero(hit)})
        if len(members) < self.min_group:  # events are not accounts: one user clicking five times is one
            return []
        # Of the key's newcomers, the null explains about nu * expected, and an in-line crowd the share
        # `1 - excess`; the rest is the attack.
        score = min(cap or self.max_score, max(0.0, 1.0 - nu * expected / len(members)), excess)
        evidence = {"item": item, "rating": rating, "window_s": w, "newcomer": kind, "count": round(count, 1),
                    "expected": round(expected, 3), "newcomers": len(members), "newcomer_share": round(nu, 3),
                    "unexplained_by_opinion": round(excess, 3), "crowd": cap is None}
        out = []
        if self._announce("item", item, min(self.max_score, 1.0 - expected / max(count, 1.0))):
            out.append(Signal("item", item, self.name, self._announced[("item", item)], evidence))
        for user in members:
            if self._announce("user", user, score):  # one of a crowd of fresh accounts: fake from the start
                out.append(Signal("user", user, self.name, score, evidence, whole_history=cap is None))
        return out

    def _shift(self, now: float, w: float, item: str, rating: str, count: float, expected: float
               ) -> list[Signal]:
        evidence = {"item": item, "rating": rating, "window_s": w, "count": round(count, 1),
                    "expected": round(expected, 3), "shift": True}
        score = min(0.6, 1.0 - expected / max(count, 1.0))
        return [Signal("item", item, self.name, score, evidence)] if self._announce("item", item, score) else []

    def _announce(self, kind: str, entity: str, score: float) -> bool:
        key = (kind, entity)
        if score <= self._announced.get(key, 0.0) + 0.01:
            return False
        self._announced[key] = score
        if len(self._announced) > 200_000:  # bounded: forget the oldest half
            for old in list(self._announced)[:100_000]:
                del self._announced[old]
        return True
