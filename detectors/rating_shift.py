"""Opinion campaigns: an item's ratings pile up at one end of the scale beyond its own established opinion,
and the accounts whose ratings put them there.

A push or a nuke works only by moving an item's opinion, however its accounts are built (fresh, aged sleepers,
copies) and however slowly it runs: it must add high ratings (4-5) to an item that does not usually get them,
or low ones (1-2) to an item that does not. A crowd that rates an item as it is usually rated (a premiere's
fans, a film in the news) adds nothing unusual at either end, and neither does the slow drift of a real
audience's taste, which moves ratings between neighbouring levels. So every item keeps its established rating
histogram (ratings decayed over `baseline_half_life`, joining it `baseline_lag` after they come; one at the end
of a chart that is up waits for the chart's verdict and stays out if it becomes a campaign, so that a
campaign cannot become its own baseline), and two Bernoulli CUSUM charts (Page 1954; Reynolds &
Stoumbos 1999), one per end of the scale, add up the log-likelihood ratio of each rating under "this end's
odds are `odds_ratio` times the item's usual" against "as usual". The usual share is an empirical-Bayes
estimate: a beta prior fitted to the population's items (method of moments, robustly), updated by the item's
own ratings, and taken at its upper `allowance` posterior sds, so that a young item may organically land
anywhere items land while a well-known item is held to its own habit. A chart that reaches `threshold` opens
a campaign dated from the chart's last zero (the change point), followed until the chart returns to zero.

An arrival wave (a crowd far above the item's usual rate) is a campaign when its ratings pile up at an end
beyond what an organic crowd on this item would give (a beta-binomial tail under the item's posterior); an
item with little history may organically land anywhere, so a wave that falls back without that verdict is
judged again, by the same test, as the item's later raters come: they are a sample of its opinion that no
attack chose (a sleeper cell's push on a film rated five times is p ~ 1e-3 at the time, and far beyond
once a dozen later raters have rated it as its first five did).

Attribution: of a campaign's n raters at its end of the scale, among N raters in all since the change point,
an organic wave at the item's usual share p explains p (N - A) where A = (n - p N) / (1 - p) are attackers;
each rater at that end is an attacker with probability A / n, provided that n is significant (binomial tail
below `alpha`) even against the upper bound of the usual share. Campaigns that share accounts explain each
other away: accounts already attributed to one campaign (a bandwagon's blockbusters and its target) are
taken out of another's excess before its remaining raters are scored. Members at or above `min_share` get a
user signal, whole-history when the account was first seen after the campaign began; the item gets one.

Parameters: `baseline_half_life` of item histograms; `odds_ratio` of the shift each chart looks for;
`allowance` (posterior sds) of organic latitude; `threshold` the CUSUM alarm; `alpha` of the attribution test; `min_members` raters at
the campaign's end before anyone is named (fewer say too little about any one of them); `min_organic` raters
at the other levels before the cohort is compared with them; `min_later` raters after a wave before it is
judged again by them; `thin_alpha` of the opinion test of a thin item's wave whose raters look alike
(`_alike`); `min_share` attributed share for a member signal; `max_pending` raters kept per chart;
`refresh_every` ratings between refits of the population prior; `max_score` caps a signal. Ratings are
1..5 stars; the ends are 4-5 (push) and 1-2 (nuke).

With no usable time (every rating at one timestamp, as in a ratings dump) or less than `baseline_lag` of
stream so far, there is no baseline and no wave: opinions are not judged, and only co-visitation ties are
looked for (each item's raters taken as one wave, on idle and flush ticks). The same scan runs on every
stream's ticks, since time may be there and carry nothing (a dump whose dates were drawn at random spreads
a push over the whole of it: no wave, and its target's habit formed by the push itself); it looks only at
items whose raters in the ring are piled at the push end, as a wave's must be for its ties to count.

Scaling: per item five floats of histogram, three charts and, while a chart is up, its raters (at most
`max_pending`); a wave that fell back keeps them until `max_history` later ratings or `baseline_half_life`
have judged it (one wave per item); work per rating is constant. Partitioned by item, each worker holds its items.

References: Page, "Continuous inspection schemes", Biometrika 1954 (CUSUM); Reynolds & Stoumbos, "A CUSUM
chart for monitoring a proportion when inspecting continuously", J. Quality Technology 1999; Efron & Morris
1975 (empirical Bayes); Ye, Kumar, Akoglu, "Temporal opinion spam detection by multivariate indicative
signals", ICWSM 2016 (per-product time series of ratings).

>>> import numpy as np
>>> from detectors.events import RatingEvent
>>> rng = np.random.default_rng(1)
>>> day, events = 86400.0, []
>>> for k in range(6000):                                      # 60 days of ordinary ratings on 40 films
...     item = int(rng.integers(40))
...     stars = int(np.clip(np.rint(rng.normal(2.5 + item / 20, 0.9)), 1, 5))
...     events.append(RatingEvent(event_id=f"e{k}", ts=k * 864.0, user_id=f"u{rng.integers(3000)}",
...                               item_id=f"film{item}", rating=stars))
>>> for k in range(40):                                        # then 40 accounts pull film39 down over a month
...     events.append(RatingEvent(event_id=f"n{k}", ts=60 * day + k * 0.75 * day, user_id=f"nuker{k}",
...                               item_id="film39", rating=int(rng.integers(1, 3))))
>>> events.sort(key=lambda e: e.ts)
>>> detector = RatingShiftDetector()
>>> signals = detector.observe(events, now=events[-1].ts)
>>> signals += detector.observe([], now=events[-1].ts)  # a tick attributes what has not settled yet
>>> flagged = {s.id for s in signals if s.kind == "user" and s.score >= 0.5}
>>> sum(u.startswith("nuker") for u in flagged), sum(u.startswith("u") for u in flagged)
(40, 0)
>>> sorted({s.id for s in signals if s.kind == "item"})
['film39']
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.special import bdtrc, pdtrc
from scipy.stats import chi2

from detectors._arrays import Interner, distinct, grown
from detectors.base import Detector, Signal
from detectors.events import Event, RatingEvent
from detectors.robust import betabinom_tail

_LEVELS = 5
# Each end of the scale as a wide set of levels (4-5, 1-2) and its extreme (5, 1): a push piles up at one
# or the other, and each has its own organic range (MovieLens' items reach 91% 4-5s but 62% 5s).
_ENDS = (np.array([False, False, False, True, True]), np.array([True, True, False, False, False]))
_EXTREMES = (np.array([False, False, False, False, True]), np.array([True, False, False, False, False]))
# The same as level numbers, for a chart's or an item's five numbers held as a plain list (numpy's per-call
# cost would be most of the work on five numbers); sums run left to right, as numpy's do on five values.
_END_LEVELS, _EXTREME_LEVELS = ((3, 4), (0, 1)), ((4,), (0,))
_DIRECTIONS = ("push", "nuke")
PUSH, NUKE, WAVE, LATE = 0, 1, 2, 3  # LATE: a wave found a campaign by the raters after it
_MIN_POPULATION = 1000.0  # ratings in the population profile before raters are compared with it
_LN2 = math.log(2.0)


class _Item:
    """One item's state: its established (decayed) rating histogram, the event time it was decayed to, the
    time of its latest rating, and its three charts (push, nuke, arrival rate). Plain floats: a rating
    touches a few of them, where numpy's per-call overhead would be most of the cost."""

    __slots__ = ("hist", "updated", "last", "cusum")

    def __init__(self) -> None:
        self.hist = [0.0] * _LEVELS
        self.updated = -math.inf
        self.last = math.nan
        self.cusum = [0.0, 0.0, 0.0]


@dataclass(slots=True)
class _Chart:
    """One item's chart while it is above zero: the ratings since its last zero (the change point)."""

    start: float                                                  # event time of the change point
    levels: list = field(default_factory=lambda: [0] * _LEVELS)  # every rating since, per level
    raters: dict = field(default_factory=dict)                    # user -> (level, profile bins, ts)
    held: list = field(default_factory=list)                      # (level, ts, user) of its end's ratings, waiting
    tied: frozenset = frozenset()                                 # a co-visitation wave's tied items
    alike: bool = False                                           # a thin item's wave of look-alike raters
    last: float = -math.inf                                       # event time of its latest rating
    alarmed: int = -1                                             # the direction it alarmed in, -1 none yet
    alarmed_at: float = math.inf                                  # event time of the alarm
    usual: float = 0.0                                            # the item's usual share at that end then
    upper: float = 0.0                                            # and its upper bound
    rate: float = 0.0                                             # and its usual ratings per second
    closed: bool = False                                          # back at zero, to be attributed once more
    next_test: int = 0                                            # a wave's size at its next test
    before: tuple = ()                                            # a closed wave's item histogram then
    after: list = field(default_factory=lambda: [0] * _LEVELS)   # and the item's ratings since, per level
    whole: bool = False                                           # an item's raters taken whole (a scan)


class RatingShiftDetector(Detector):
    name = "rating_shift"

    def __init__(self, baseline_half_life: float = 90 * 86400.0, baseline_lag: float = 7 * 86400.0,
                 min_history: float = 10.0, max_history: float = 30.0, odds_ratio: float = 4.0, allowance: float = 2.0,
                 threshold: float = 10.0, rate_ratio: float = 10.0,
                 quiet_days: float = 30.0, wave_threshold: float = 12.0, wave_alpha: float = 1e-5,
                 max_campaign_seconds: float = 45 * 86400.0, alpha: float = 1e-6, attribute_every: float = 6 * 3600.0, settle: float = 7 * 86400.0,
                 min_members: int = 10, min_organic: int = 10, min_later: int = 5, thin_alpha: float = 0.01,
                 cohort_alpha: float = 0.01,
                 min_share: float = 0.5, tie_lift: float = 2.0, min_ties: int = 5, tie_alpha: float = 1e-9,
                 recent_ratings: int = 500_000, max_pending: int = 5000,
                 refresh_every: int = 5000, max_score: float = 0.95):
        self.baseline_half_life = baseline_half_life
        self.baseline_lag = baseline_lag
        self.min_history = min_history
        self.max_history = max_history
        self.odds_ratio = odds_ratio
        self.allowance = allowance
        self.threshold = threshold
        self.rate_ratio = rate_ratio
        self.quiet_days = quiet_days
        self.wave_threshold = wave_threshold
        self.wave_alpha = wave_alpha
        self.max_campaign_seconds = max_campaign_seconds
        self.alpha = alpha
        self.attribute_every = attribute_every
        self.settle = settle
        self.min_members = min_members
        self.min_organic = min_organic
        self.min_later = min_later
        self.thin_alpha = thin_alpha
        self.cohort_alpha = cohort_alpha
        self.min_share = min_share
        self.tie_lift = tie_lift
        self.min_ties = min_ties
        self.tie_alpha = tie_alpha
        self.recent_ratings = recent_ratings
        self.max_pending = max_pending
        self.refresh_every = refresh_every
        self.max_score = max_score
        self._items = Interner()
        self._state: list[_Item] = []
        self._charts: dict[tuple[int, int], _Chart] = {}
        self._campaigns: dict[tuple[int, int], _Chart] = {}  # alarmed charts, open or awaiting attribution
        self._suspects: dict[int, _Chart] = {}  # item row -> its latest closed wave, awaiting the raters after it
        self._popularity_at: tuple[int, int] | None = None  # `_popularity`'s cache: its key and value,
        self._popularity_of = np.zeros(0)
        self._moved: set[int] = set()  # and the item rows whose histogram changed since
        self._round_at: float | None = None  # event time of the last attribution round
        self._first_ts: float | None = None  # event time of the first rating seen
        # Ratings younger than `baseline_lag`, on their way into their item's histogram: (ts, row, level,
        # user), in arrival order, which is event-time order up to the jitter of a stream.
        self._maturing: deque[tuple[float, int, int, str]] = deque()
        self._clock = -math.inf
        # Beta priors of an item's share at each end and at each extreme, fitted to the population's items;
        # until enough items have a history, centred on the share of all ratings so far (`_global`).
        self._priors: dict[str, list[tuple[float, float]]] | None = None
        self._global = [1.0] * _LEVELS
        self._accounts: dict[str, list] = {}  # user -> [first seen, ratings so far, code]
        # The latest `recent_ratings` ratings as (user code, item row, ts), in arrival order: what a wave's
        # raters rated around it, for the co-visitation test.
        self._recent_user = np.zeros(recent_ratings, np.int64)
        self._recent_item = np.zeros(recent_ratings, np.int64)
        self._recent_ts = np.zeros(recent_ratings)
        self._recent_index = np.full(recent_ratings, -1, np.int64)  # each slot's absolute position
        self._recent_level = np.zeros(recent_ratings, np.int8)  # each slot's rating level (0-4)
        self._scanned_at = -1  # ratings written at the last scan without time (`_scan_without_time`)
        self._recent_at = 0  # ratings written so far (the ring's position is this modulo its size)
        self._seen = 0  # absolute position of the rating being rated
        self._codes = 0
        # The raters of all ratings, by activity bin x account age bin (flat; plain floats: touched per
        # rating), halved now and then: what an organic rater of any item looks like, for a wave whose item
        # has too few raters of its own to say.
        self._population = [0.0] * _PROFILE_BINS ** 2
        self._population_count = 0.0
        self._attributed: dict[str, set[int]] = {}  # user -> item rows of the campaigns that named them
        self._emitted: dict[tuple[str, str], float] = {}
        self._since_refresh = 0

    # -- streaming ------------------------------------------------------------------------------------
    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        if not events:  # a tick (idle or flush): attribute every campaign, settled or not
            if self._first_ts is not None:
                self._scan_without_time()
            return self._attribute(self._clock, final=True)
        ratings = [event for event in events if type(event) is RatingEvent]
        if not ratings:
            return []
        rows = [self._items.row(event.item_id) for event in ratings]
        self._state.extend(_Item() for _ in range(len(self._items) - len(self._state)))
        signals: list[Signal] = []
        accounts, every = self._accounts, self.attribute_every
        codes = []
        for event in ratings:
            account = accounts.get(event.user_id)
            if account is None:
                account = accounts[event.user_id] = [event.ts, 0, self._codes]
                self._codes += 1
            codes.append(account)
        # The batch joins the ring of recent ratings at once; `_ties` reads only the ratings before the
        # one being rated (by absolute position), so the outcome is the same whatever the batches.
        size, start = len(self._recent_ts), self._recent_at
        positions = np.arange(start, start + len(ratings)) % size
        self._recent_user[positions] = [account[2] for account in codes]
        self._recent_item[positions] = rows
        self._recent_ts[positions] = [event.ts for event in ratings]
        self._recent_index[positions] = np.arange(start, start + len(ratings))
        levels = [min(_LEVELS, max(1, int(event.rating + 0.5))) - 1 for event in ratings]  # 0-4
        self._recent_level[positions] = levels
        self._recent_at = start + len(ratings)
        for position, (event, row, account, level) in enumerate(zip(ratings, rows, codes, levels)):
            self._seen = start + position
            if self._first_ts is None:
                self._first_ts = event.ts
            if event.ts > self._clock:
                self._clock = event.ts
                self._mature(self._clock - self.baseline_lag)
                # Attribution rounds fall at the rating that makes them due, whatever the batches.
                if self._campaigns and (self._round_at is None or event.ts // every > self._round_at // every):
                    signals += self._attribute(event.ts, final=False)
            self._rate(row, event, level, account)
            account[1] += 1
            self._since_refresh += 1
            if self._since_refresh >= max(self.refresh_every, len(self._state)):
                self._refresh()
        if len(accounts) > 2_000_000:  # bounded: forget the oldest accounts (codes keep counting up)
            for user in list(accounts)[:1_000_000]:
                del accounts[user]
        return signals

    def _rate(self, row: int, event: RatingEvent, level: int, account: list) -> None:
        """Update the item's charts and baseline with one rating, and open the campaigns it reveals."""
        ts = event.ts
        self._global[level] += 1.0
        rater = (event.user_id, level, _profile_bin(account[1], ts - account[0]))
        self._population[rater[2][0] * _PROFILE_BINS + rater[2][1]] += 1.0
        self._population_count += 1.0
        if self._population_count > 200_000.0:  # a sliding memory of some 100,000-200,000 ratings
            self._population = [c * 0.5 for c in self._population]
            self._population_count *= 0.5
        item = self._state[row]
        hist = item.hist
        elapsed = ts - item.updated
        if elapsed > 3600.0 or elapsed == math.inf:  # decayed hourly at most: a 90-day half-life barely moves
            if elapsed != math.inf:
                factor = 0.5 ** (elapsed / self.baseline_half_life)
                hist[:] = [h * factor for h in hist]
                self._moved.add(row)
            item.updated = ts
        if row in self._suspects:  # before the counts: its verdict may move held ratings into the histogram
            self._after(row, event.user_id, level, ts)
        count = hist[0] + hist[1] + hist[2] + hist[3] + hist[4]
        cusum = item.cusum
        if not self._has_baseline():
            # No usable time yet (or at all: a ratings dump at one timestamp): neither opinions nor waves
            # exist before a baseline has had `baseline_lag` to form.
            item.last = ts if item.last != item.last else max(ts, item.last)
            self._maturing.append((ts, row, level, event.user_id))
            return
        # Opinion charts, where the item has an established opinion to move.
        if count >= self.min_history:
            for direction in (PUSH, NUKE):
                at_end = hist[3] + hist[4] if direction == PUSH else hist[0] + hist[1]
                usual, upper = self._usual(direction, at_end, count)
                shifted = _shifted(upper, self.odds_ratio)
                hit = (level >= 3) if direction == PUSH else (level <= 1)
                step = math.log(shifted / upper) if hit else math.log((1 - shifted) / (1 - upper))
                chart = self._step(row, item, direction, step, ts, rater)
                if chart is not None and chart.alarmed < 0 and cusum[direction] >= self.threshold:
                    chart.alarmed, chart.alarmed_at, chart.usual, chart.upper = direction, ts, usual, upper
                    chart.rate = count * _LN2 / self.baseline_half_life
                    self._campaigns[(row, direction)] = chart
        # The arrival-rate chart: a wave of raters far above the item's usual rate (a Poisson CUSUM against
        # `rate_ratio` times it; a young item's usual rate is at least one rating per `quiet_days`).
        quiet = self.quiet_days * 86400.0
        rate = max(count * _LN2 / self.baseline_half_life, 1.0 / quiet)
        gap = quiet if item.last != item.last else max(ts - item.last, 0.0)
        item.last = ts if item.last != item.last else max(ts, item.last)
        step = math.log(self.rate_ratio) - (self.rate_ratio - 1.0) * rate * gap
        wave = self._step(row, item, WAVE, step, ts, rater)
        if (wave is not None and wave.alarmed < 0 and cusum[WAVE] >= self.wave_threshold and level != 2
                and self._wave_is_campaign(row, wave)):
            wave.alarmed_at, wave.rate = ts, count * _LN2 / self.baseline_half_life
            self._campaigns[(row, WAVE)] = wave
        self._maturing.append((ts, row, level, event.user_id))

    def _step(self, row: int, item: _Item, which: int, step: float, ts: float, rater: tuple
              ) -> _Chart | None:
        """Advance one chart (CUSUM: max(0, value + step)); its open record, None when back at zero."""
        key = (row, which)
        value = item.cusum[which] + step
        chart = self._charts.get(key)
        # A chart up for months follows a real audience's drift, not a campaign, and a wave of arrivals that
        # lasts beyond the baseline's lag is the item's new normal: either starts over. A wave found to be
        # a campaign is followed as long as a campaign may last: its ratings stay out of the item's habit,
        # and a campaign spread over weeks is one campaign, not a campaign's first week.
        if chart is not None and ts - chart.start > (self.baseline_lag if which == WAVE and chart.alarmed < 0
                                                     else self.max_campaign_seconds):
            value = 0.0
        if value <= 0.0:
            item.cusum[which] = 0.0
            if chart is not None:
                del self._charts[key]
                if chart.alarmed >= 0:
                    chart.closed = True  # attributed once more at the next round, then forgotten
                elif which == WAVE:  # not a campaign by what the item had: judged again by what comes
                    self._suspect(row, item, chart)
                else:  # a false alarm after all: what it held back joins the item's habit
                    self._release(row, chart.held)
            return None
        item.cusum[which] = value
        if chart is None:
            chart = self._charts[key] = _Chart(start=ts)
        user, level, profile = rater
        chart.levels[level] += 1
        chart.last = max(chart.last, ts)
        if len(chart.raters) < self.max_pending:
            chart.raters[user] = (level, profile, ts)
        return chart

    def _mature(self, before: float) -> None:
        """Ratings older than the lag join their item's histogram (decayed from their own time), unless
        the item's opinion chart has gone up since they came or their account was attributed to a campaign
        on the item: a campaign must not become its own baseline."""
        maturing, state, attributed = self._maturing, self._state, self._attributed
        while maturing and (maturing[0][0] <= before or len(maturing) > 5_000_000):
            ts, row, level, user = maturing.popleft()
            if row in attributed.get(user, ()):
                continue
            # A rating at the end of an open chart waits for the chart's verdict: kept out of the item's
            # habit if it turns into a campaign, let in if the chart falls back to zero.
            direction = PUSH if level >= 3 else NUKE if level <= 1 else -1
            waiting = None
            if direction >= 0:
                waiting = self._charts.get((row, direction))
                wave = self._charts.get((row, WAVE))
                if (waiting is None or waiting.start > ts) and wave is not None and wave.start <= ts:
                    waiting = wave
            if waiting is not None and waiting.start <= ts:
                if len(waiting.held) < self.max_pending:
                    waiting.held.append((level, ts, user))
                continue
            item = state[row]
            item.hist[level] += 0.5 ** (max(item.updated - ts, 0.0) / self.baseline_half_life)
            self._moved.add(row)

    def _posterior(self, kind: str, direction: int, hits: float, count: float) -> tuple[float, float]:
        """The beta posterior of the item's share, its history weighing at most `max_history` ratings: a real
        audience's opinion drifts (a film's early fans, its later public), so no history pins it tighter."""
        if self._priors is None:  # no population of items yet: the share of all ratings, worth 8 of them
            levels = (_ENDS if kind == "end" else _EXTREMES)[direction]
            share = sum(g for g, inside in zip(self._global, levels) if inside) / sum(self._global)
            a, b = 8.0 * share, 8.0 * (1.0 - share)
        else:
            a, b = self._priors[kind][direction]
        if count > self.max_history:
            hits, count = hits * self.max_history / count, self.max_history
        return a + hits, b + count - hits

    def _usual(self, direction: int, at_end: float, count: float) -> tuple[float, float]:
        """The item's usual share of ratings at one end (posterior mean under the population's beta prior),
        and its upper bound `allowance` posterior sds above."""
        a, b = self._posterior("end", direction, at_end, count)
        mean = a / (a + b)
        sd = math.sqrt(mean * (1 - mean) / (a + b + 1))
        return mean, min(mean + self.allowance * sd, 0.99)

    def _refresh(self) -> None:
        """Refit the beta priors to the items with some history (method of moments on the median share and
        on the spread between its 10th and 90th percentiles, so that a minority of attacked items moves
        neither, while the population's real range of opinions, bad films and beloved ones, is kept; the
        binomial noise of items' few ratings is taken out of that spread, so young streams fit too)."""
        self._since_refresh = 0
        hist = np.array([item.hist for item in self._state]).reshape(-1, _LEVELS)
        count = hist.sum(axis=1)
        known = count >= 5
        if known.sum() < 20:
            return
        noise = float(np.median(1.0 / count[known]))  # E[1/n]: a share over n ratings varies p(1-p)/n
        priors = {"end": [(0.0, 0.0)] * 2, "extreme": [(0.0, 0.0)] * 2}
        for kind, sets in (("end", _ENDS), ("extreme", _EXTREMES)):
            for direction, levels in enumerate(sets):
                shares = hist[known][:, levels].sum(axis=1) / count[known]
                q10, mean, q90 = np.clip(np.quantile(shares, [0.1, 0.5, 0.9]), 0.005, 0.995)
                spread = (q90 - q10) / 2.563
                variance = min(max(spread ** 2 - mean * (1 - mean) * noise, 0.02 ** 2), 0.9 * mean * (1 - mean))
                strength = mean * (1 - mean) / variance - 1  # a + b
                priors[kind][direction] = (mean * strength, (1 - mean) * strength)
        self._priors = priors

    # -- campaigns and attribution ---------------------------------------------------------------------
    def _attribute(self, clock: float, final: bool) -> list[Signal]:
        """An attribution round over the campaigns that ended or were alarmed at least `settle` ago, in
        clusters that share accounts (`_ready`; every campaign on a flush), the most clear-cut first (the largest share of raters unexplained by the organic wave): raters named
        by one campaign (now or in an earlier round) are attackers wherever else they appear, and the other
        raters of a campaign share only the excess that those do not explain. A bandwagon's blockbusters and
        a co-visitation push's best sellers are thus explained by the accounts found on the target, and the
        organic raters who rated a blockbuster meanwhile keep their innocence."""
        self._round_at = clock
        ready = self._ready(clock, final)
        found = []
        for key, chart in ready.items():
            end = _ENDS[chart.alarmed]
            raters = sorted(self._end_raters(chart))
            n, total = len(raters), max(sum(chart.levels), 1)
            if n < self.min_members:
                continue
            # Judged by the item's opinion when the campaign was found: its ratings since may have leaked in.
            if key[1] < WAVE and bdtrc(n - 1, total, chart.upper) >= self.alpha:
                continue  # not beyond what the item may organically do
            # Organic raters in the period: as many as the other levels imply, or as the item's usual rate
            # over the period brings, whichever is more (a few raters at the other levels say little).
            organic = max((total - n) / (1 - chart.usual), chart.rate * (chart.last - chart.start))
            attackers = min(float(n), max(0.0, n - chart.usual * organic))
            if self._one_cohort(chart):
                continue  # the item's own audience moved: its raters at the end are those at the other levels
            found.append((attackers / n, key, chart, raters, attackers))
        found.sort(key=lambda entry: -entry[0])
        for _, key, chart, _, _ in found:
            if chart.tied:
                # The ties again, with the whole wave in: found on its first raters, they miss best sellers
                # that only a larger cohort lifts above their popularity.
                chart.tied = frozenset(self._ties(key[0], chart)) or chart.tied
        signals: list[Signal] = []
        for _ in range(3):
            # Until the names settle: the accounts one campaign names are known to those judged before it
            # only on the next pass, and a round must say at once what it would say if run again (a
            # second idle tick, with nothing new, must not name anyone anew).
            named = [signal for _, key, chart, raters, attackers in found
                     for signal in self._members(key, chart, raters, attackers)]
            signals += named
            if not named:
                break
        for key in [key for key, chart in ready.items() if chart.closed]:
            # Its attackers' ratings stay out of the item's habit; the rest of what it held back joins it.
            chart = self._campaigns.pop(key)
            self._release(key[0], [(level, ts, user) for level, ts, user in chart.held
                                                if key[0] not in self._attributed.get(user, ())])
        return signals

    def _release(self, row: int, held: list[tuple[int, float, str]]) -> None:
        item = self._state[row]
        for level, ts, _ in held:
            item.hist[level] += 0.5 ** (max(item.updated - ts, 0.0) / self.baseline_half_life)
        self._moved.add(row)

    def _ready(self, clock: float, final: bool) -> dict[tuple[int, int], _Chart]:
        """The campaigns to attribute now: those that ended or were alarmed at least `settle` ago (all of
        them on a flush), taken together with every campaign they share accounts with (at least
        `min_members` and a fifth of the smaller): such a cluster waits until all of it is ready, so that
        echoes (a bandwagon's blockbusters, whose waves die down before the target's) are explained by the
        accounts its clearest campaign names."""
        keys = list(self._campaigns)
        due = [final or self._campaigns[k].closed or self._campaigns[k].alarmed_at <= clock - self.settle
               for k in keys]
        if final or all(due):
            return dict(self._campaigns)
        raters = [self._end_raters(self._campaigns[k]) for k in keys]
        cluster = list(range(len(keys)))  # union-find over overlapping campaigns

        def root(a: int) -> int:
            while cluster[a] != a:
                cluster[a] = cluster[cluster[a]]
                a = cluster[a]
            return a
        for a in range(len(keys)):
            for b in range(a + 1, len(keys)):
                shared = len(raters[a] & raters[b])
                if shared >= max(self.min_members, 0.2 * min(len(raters[a]), len(raters[b]))):
                    cluster[root(a)] = root(b)
        waiting = {root(a) for a in range(len(keys)) if not due[a]}
        return {keys[a]: self._campaigns[keys[a]] for a in range(len(keys)) if root(a) not in waiting}

    @staticmethod
    def _end_raters(chart: _Chart) -> set[str]:
        end = _ENDS[chart.alarmed]
        return {user for user, (level, _, _) in chart.raters.items() if end[level]}

    def _wave_is_campaign(self, row: int, chart: _Chart) -> bool:
        """A wave of raters is a campaign when its ratings pile up at one end (or its extreme) far beyond
        what an organic crowd on this item would give: a beta-binomial tail under the item's posterior
        (the population's prior updated by its own history), Bonferroni over the four tests."""
        if chart.alarmed >= 0:
            return True
        # Tested as the wave grows by a quarter, not at every rating: O(log n) looks per wave.
        total = sum(chart.levels)
        if total < chart.next_test:
            return False
        chart.next_test = max(total + 1, int(1.25 * total))
        hist, counts = list(self._state[row].hist), list(chart.levels)
        best, direction = self._opinion(counts, hist)
        if direction < 0 or 4 * best >= self.wave_alpha:
            # Not beyond opinion alone (a young item may organically land anywhere). On an item too thin
            # for its opinion to convict, a pile well beyond chance (`thin_alpha`) is a campaign where its
            # raters are all one kind of account; and a push may show in the ties it creates, its raters
            # all rating the same best sellers around it.
            def piled(d: int) -> bool:  # nearly the whole wave at that end
                return _sum_at(counts, _END_LEVELS[d]) >= max(self.min_members, 0.8 * total)
            if (direction >= 0 and 4 * best < self.thin_alpha and _total(hist) < self.min_history
                    and piled(direction) and self._alike(chart, direction)):
                chart.alike = True
            elif not piled(PUSH):
                return False
            else:
                tied = self._ties(row, chart)
                if not tied:
                    return False
                chart.tied, direction = frozenset(tied), PUSH
        a, b = self._posterior("end", direction, _sum_at(hist, _END_LEVELS[direction]), _total(hist))
        chart.alarmed, chart.usual = direction, a / (a + b)
        return True

    def _alike(self, chart: _Chart, direction: int, without: set[str] = frozenset()) -> bool:
        """Are a wave's raters at one end one kind of account? The most common (activity, account age) bin
        among them holds more of them than raters drawn from the population of all recent ratings would
        put there (binomial tail, Bonferroni over the bins, at `tie_alpha`): accounts made and warmed up by
        one operator's script look alike (a sleeper cell: weeks old, a handful of ratings each), where an
        organic crowd mixes the regulars in. Newcomers are alike in having no history, which says nothing:
        a premiere's sign-ups are not judged by it."""
        if self._population_count < _MIN_POPULATION:
            return False
        end = _ENDS[direction]
        cells = [activity * _PROFILE_BINS + age for user, (level, (activity, age), _) in chart.raters.items()
                 if end[level] and user not in without]
        if len(cells) < self.min_members:
            return False
        counts = np.bincount(cells, minlength=_PROFILE_BINS ** 2)
        cell = int(np.argmax(counts))
        if cell < _PROFILE_BINS:  # newcomers (no rating before): they have no history to look alike in
            return False
        share = (self._population[cell] + 0.5) / (self._population_count + 0.5 * len(counts))
        return len(counts) * bdtrc(int(counts[cell]) - 1, len(cells), share) < self.tie_alpha

    def _opinion(self, counts: list[int], hist: list[float]) -> tuple[float, int]:
        """The smallest beta-binomial tail of a wave's ratings (`counts` per level) at an end or an extreme,
        under the posterior of an item whose ratings are `hist`, and its direction (-1: no pile to test)."""
        total, count = _total(counts), _total(hist)
        best, direction = 1.0, -1
        for kind, sets in (("end", _END_LEVELS), ("extreme", _EXTREME_LEVELS)):
            for d, levels in enumerate(sets):
                k = _sum_at(counts, levels)
                if k < 5:  # too few to tell a pile from chance
                    continue
                a, b = self._posterior(kind, d, _sum_at(hist, levels), count)
                p = betabinom_tail(k, total, a, b)
                if p < best:
                    best, direction = p, d
        return best, direction

    # -- the second look: a wave judged again by the raters who come after it --------------------------
    def _suspect(self, row: int, item: _Item, chart: _Chart) -> None:
        """A wave that fell back without being found a campaign: an item with little history may have been
        anything to its crowd (a sleeper cell's push on a film rated five times is p ~ 1e-3 for a loved
        film's organic crowd). The raters who come after it, outside it, are a sample of the item's opinion
        that no attack chose: the wave is judged again, by the same test, against the item's history then
        and the ratings since (not the item's histogram, which its ratings join as any fallen wave's do); one
        wave per item is kept. A wave chart starts over after `baseline_lag`, so a push spread over weeks
        closes as a run of waves: one that follows the kept wave within that lag is the same campaign, and
        joins it (its raters, counted as later raters meanwhile, leave that count)."""
        before = tuple(item.hist)  # the history the wave met, without its own ratings
        self._release(row, chart.held)
        chart.held = []
        if max(_sum_at(chart.levels, _END_LEVELS[PUSH]), _sum_at(chart.levels, _END_LEVELS[NUKE])) < self.min_members:
            return
        previous = self._suspects.pop(row, None)
        if previous is not None and chart.start - previous.last <= self.baseline_lag:
            for user, (level, profile, ts) in chart.raters.items():
                if user not in previous.raters and ts > previous.last:
                    previous.after[level] = max(0, previous.after[level] - 1)
                if len(previous.raters) < self.max_pending:
                    previous.raters.setdefault(user, (level, profile, ts))
            previous.levels = [a + b for a, b in zip(previous.levels, chart.levels)]
            previous.last, previous.next_test = max(previous.last, chart.last), 0
            chart = previous
        else:
            chart.before, chart.next_test = before, 0
        self._suspects[row] = chart
        self._second_look(row, chart, final=False)

    def _after(self, row: int, user: str, level: int, ts: float) -> None:
        """One rating on an item with a suspect wave: a rater from outside the wave, after it, counts."""
        chart = self._suspects[row]
        if ts - chart.last > self.baseline_half_life:  # as long as its history keeps half its weight
            self._second_look(row, chart, final=True)
            return
        if ts <= chart.last or user in chart.raters:
            return
        chart.after[level] += 1
        later = sum(chart.after)
        done = later >= self.max_history
        if later >= chart.next_test or done:
            self._second_look(row, chart, final=done)

    def _second_look(self, row: int, chart: _Chart, final: bool) -> None:
        """Test the suspect wave against the item's history then and its ratings since (tested as they grow
        by a quarter); a campaign joins the others for attribution, else the wave is let go when `final`."""
        total_after = sum(chart.after)
        chart.next_test = max(total_after + 1, int(1.25 * total_after), 3)
        reference, counts = [b + a for b, a in zip(chart.before, chart.after)], list(chart.levels)
        # Beyond chance is not enough: a large crowd is significant at any drift (a film's early fans, its
        # later public). The wave's odds at an end must be `odds_ratio` times the usual, the shift the
        # opinion charts look for; checked first, as it is cheap and most waves fail it.
        usual = {}
        for d in (PUSH, NUKE):
            a, b = self._posterior("end", d, _sum_at(reference, _END_LEVELS[d]), _total(reference))
            if _sum_at(counts, _END_LEVELS[d]) >= _shifted(a / (a + b), self.odds_ratio) * _total(counts):
                usual[d] = a / (a + b)
        if usual and sum(chart.after) >= self.min_later:
            best, direction = self._opinion(counts, reference)
            if direction in usual and 4 * best < self.wave_alpha:
                chart.alarmed, chart.alarmed_at, chart.usual, chart.closed = (direction, self._clock,
                                                                              usual[direction], True)
                chart.rate = float(sum(chart.before)) * _LN2 / self.baseline_half_life
                del self._suspects[row]
                self._campaigns[(row, LATE)] = chart
                return
        if final:
            del self._suspects[row]

    def _ties(self, row: int, chart: _Chart) -> list[int]:
        """Co-visitation: the items that a wave's raters at its push end rated in the recent past (the ring),
        each counted once per rater, against what raters of the same activity choosing by the period's
        popularity outside the cohort would give. A push ties its target to best sellers: its accounts'
        other ratings pile into the head of the catalogue and onto the same few items there; a crowd of
        fans rates what fans rate, spread as popularity spreads it. Returns the tied items (none: no ties)."""
        end = _ENDS[PUSH]
        codes = [self._accounts[user][2] for user, (level, _, _) in chart.raters.items()
                 if end[level] and user in self._accounts]
        filled = min(self._recent_at, len(self._recent_ts))
        if chart.whole:  # an item's raters taken whole (a scan): the ring as it is
            users, items = self._recent_user[:filled], self._recent_item[:filled]
        else:  # the ratings before this one, within the ring, from a day before the wave began
            index = self._recent_index[:filled]
            valid = (index < self._seen) & (index >= self._seen - len(self._recent_ts))
            valid &= self._recent_ts[:filled] >= chart.start - 86400.0
            users, items = self._recent_user[:filled][valid], self._recent_item[:filled][valid]
        member = np.zeros(self._codes, bool)  # a lookup, not np.isin: a scan calls this for every item
        member[codes] = True
        cohort = member[users]
        mine = cohort & (items != row)
        if not mine.any():
            return []
        # Popularity as the items' established histograms hold it (the cohort's own recent ratings are not
        # in them yet, so they cannot make their ties, nor the target, look popular): the head of the
        # catalogue a push reaches for is the one of the recommender's training data, not a week's noise.
        # Without a baseline (no usable time), and for an item's raters taken whole (a scan, whose cohort's
        # ratings are spread over the histograms as the stream's time spread them), the ring's ratings
        # outside the cohort stand for it.
        if self._has_baseline() and not chart.whole:
            outside = self._popularity() + 0.5
        else:
            outside = np.bincount(items[~cohort], minlength=len(self._state)) + 0.5
        # The cohort's other ratings land in the head of the catalogue (the best sellers holding a quarter
        # of the ratings outside it) at least `tie_lift` times as often as raters choosing by popularity
        # would put them there (binomial, `tie_alpha`), and on at least `min_ties` of the same items each
        # `tie_lift` times over their popularity (Poisson, p < 0.01 each).
        by_popularity = np.argsort(-outside, kind="stable")
        cumulative = np.cumsum(outside[by_popularity]) / outside.sum()
        head = by_popularity[: int(np.searchsorted(cumulative, 0.25)) + 1]
        if np.any(by_popularity[: int(np.searchsorted(cumulative, 0.5)) + 1] == row):
            # A popular item gains nothing from ties to best sellers (the wave is an echo of a push
            # elsewhere, whose accounts rate best sellers too): ties are pushed onto the long tail.
            return []
        pairs = distinct(users[mine] * (len(self._state) + 1) + items[mine])
        tied_items = pairs % (len(self._state) + 1)
        observed = np.bincount(tied_items, minlength=len(self._state))
        expected = len(pairs) * outside / outside.sum()
        head_share = float(outside[head].sum() / outside.sum())
        in_head = int(observed[head].sum())
        if in_head < self.tie_lift * head_share * len(pairs):
            return []
        if bdtrc(in_head - 1, len(pairs), head_share) >= self.tie_alpha:
            return []
        candidates = np.flatnonzero(observed >= np.maximum(self.min_members, self.tie_lift * expected))
        tied = candidates[pdtrc(observed[candidates] - 1, np.maximum(expected[candidates], 1e-12)) < 0.01]
        return tied.tolist() if len(tied) >= self.min_ties else []

    def restore(self, state: bytes) -> None:
        del self._moved  # absent from snapshots taken before `_popularity` followed the moved items
        super().restore(state)
        if not hasattr(self, "_moved"):
            self._moved, self._popularity_at = set(), None

    def _has_baseline(self) -> bool:
        return self._clock - self._first_ts >= self.baseline_lag

    def _scan_without_time(self) -> None:
        """With no usable time (a ratings dump, or under `baseline_lag` of stream so far) there is neither a
        baseline nor a wave, and with time that carries no signal no wave shows, but a co-visitation push
        still shows in its ties: on a tick, every item with `min_members` raters at its push end in the
        ring, and at least four in five of its raters there, is tested as one wave of all its raters (the
        whole ring its cohort's other ratings, whenever they came), and a tied one becomes a campaign
        (attributed as a wave's: only its raters who rate the tied best sellers, less as many as its other
        raters do). Once per tick that finds new ratings; an item already a wave's campaign is left to it."""
        if self._scanned_at == self._recent_at:
            return
        self._scanned_at = self._recent_at
        filled = min(self._recent_at, len(self._recent_ts))
        users, items = self._recent_user[:filled], self._recent_item[:filled]
        levels, times = self._recent_level[:filled], self._recent_ts[:filled]
        at_end = np.bincount(items[levels >= 3], minlength=len(self._state))
        # Piled at the push end as a wave must be for its ties to be looked at (`_wave_is_campaign`).
        piled = at_end >= np.maximum(self.min_members, 0.8 * np.bincount(items, minlength=len(self._state)))
        candidates = [row for row in np.flatnonzero(piled).tolist() if (row, WAVE) not in self._campaigns]
        if not candidates:
            return
        by_code = {account[2]: (user, account) for user, account in self._accounts.items()}
        a, b = self._posterior("end", PUSH, 0.0, 0.0)
        by_item = np.argsort(items, kind="stable")  # each candidate's ratings in ring order, found once
        ordered = items[by_item]
        starts, stops = np.searchsorted(ordered, candidates, "left"), np.searchsorted(ordered, candidates, "right")
        for row, start, stop in zip(candidates, starts.tolist(), stops.tolist()):
            mine = by_item[start:stop]
            chart = _Chart(start=float(times[mine].min()), last=float(times[mine].max()), whole=True)
            for code, level, ts in zip(users[mine].tolist(), levels[mine].tolist(), times[mine].tolist()):
                if code in by_code:
                    user, account = by_code[code]
                    chart.levels[level] += 1
                    chart.raters[user] = (level, _profile_bin(account[1], ts - account[0]), ts)
            tied = self._ties(row, chart)
            if tied:
                chart.tied, chart.alarmed, chart.alarmed_at, chart.usual, chart.closed = (
                    frozenset(tied), PUSH, self._clock, a / (a + b), True)
                self._campaigns[(row, WAVE)] = chart

    def _popularity(self) -> np.ndarray:
        """Each item's established ratings (its histogram's mass), computed once per rating position: an
        attribution round tests many campaigns at one position. (Refreshed only every 1,000 ratings it
        moved which best sellers a push's ties name, and with them who was named on one stream: 39 benign
        users flagged instead of 5.)"""
        key = (self._seen, len(self._state))
        if self._popularity_at != key:
            if self._popularity_at is None:
                self._popularity_of = np.array([sum(item.hist) for item in self._state])
            else:  # only the items whose histogram moved since: a few hundred of thousands, typically
                self._popularity_of = np.concatenate([  # a new item's histogram is empty
                    self._popularity_of, np.zeros(len(self._state) - len(self._popularity_of))])
                state, popularity = self._state, self._popularity_of
                for row in self._moved:
                    popularity[row] = sum(state[row].hist)
            self._popularity_at = key
            self._moved.clear()
        return self._popularity_of

    def _tying(self, row: int, chart: _Chart, raters: list[str]) -> set[str]:
        """The raters who rated at least two of a co-visitation wave's tied items within a day of their
        rating of the item: a tie is made by rating them together (a fan's best sellers are of any time)."""
        codes = {self._accounts[user][2]: user for user in raters if user in self._accounts}
        filled = min(self._recent_at, len(self._recent_ts))
        users, items = self._recent_user[:filled], self._recent_item[:filled]
        hit = np.isin(users, np.fromiter(codes, np.int64, len(codes))) & np.isin(items, np.fromiter(
            chart.tied, np.int64, len(chart.tied)))
        if not chart.whole:  # a scan's raters rated the item whenever the stream's time says they did
            at = np.array([chart.raters[codes[code]][2] for code in users[hit].tolist()])
            hit[hit] = np.abs(self._recent_ts[:filled][hit] - at) <= 86400.0
        pairs = distinct(users[hit] * (len(self._state) + 1) + items[hit])
        per_user = np.bincount(np.searchsorted(np.fromiter(sorted(codes), np.int64, len(codes)),
                                               pairs // (len(self._state) + 1)), minlength=len(codes))
        return {codes[code] for code, n in zip(sorted(codes), per_user) if n >= 2}

    def _members(self, key: tuple[int, int], chart: _Chart, raters: list[str], attackers: float
                 ) -> list[Signal]:
        row, direction = key[0], chart.alarmed
        item = self._items.ids[row]
        if chart.tied:
            # A co-visitation wave: its cohort is the raters who rated the tied best sellers around it. Fans
            # rate best sellers too: the organic end raters tie as often as the raters at the other levels
            # do (Laplace-smoothed), and only the excess is the attack's.
            others = [user for user, (level, _, _) in chart.raters.items() if not _ENDS[direction][level]]
            tying = self._tying(row, chart, raters + others)
            organic_rate = (sum(user in tying for user in others) + 1) / (len(others) + 2)
            organic_end = len(raters) - attackers
            raters = [user for user in raters if user in tying]
            attackers = min(float(len(raters)), max(0.0, len(raters) - organic_rate * organic_end))
        known = {user for user in raters if self._attributed.get(user, {row}) - {row}}
        rest = len(raters) - len(known)
        # The others share what the organic wave does not explain, n - expected; and only while they are
        # themselves beyond it (Poisson tail below `alpha`): an echo whose excess the named accounts account
        # for leaves its remaining raters organic.
        expected = len(raters) - attackers
        share = 0.0
        if rest >= self.min_members and pdtrc(rest - 1, max(expected, 1e-9)) < self.alpha:
            share = min(1.0, max(0.0, rest - expected) / rest)
        if share > 0 and known and not chart.tied:
            # Without the accounts others named, the rest must still be a campaign by the test that found
            # it: an echo (a best seller the attack also rated, a loved young film whose wave it joined)
            # keeps its own audience.
            rest_total = max(sum(chart.levels) - len(known), rest)
            if key[1] >= WAVE:
                counts = list(chart.levels)
                for user in known & chart.raters.keys():
                    counts[chart.raters[user][0]] -= 1
                reference = ([b + a for b, a in zip(chart.before, chart.after)] if key[1] == LATE
                             else list(self._state[row].hist))
                best, found = self._opinion(counts, reference)
                if chart.alike:  # found by its raters' likeness, beyond chance on a thin history
                    still = (found == direction and 4 * best < self.thin_alpha
                             and self._alike(chart, direction, known))
                else:
                    still = found == direction and 4 * best < self.wave_alpha
            else:
                still = bdtrc(rest - 1, rest_total, chart.upper) < self.alpha
            if not still:
                share = 0.0
        posterior = self._cohort(chart, [user for user in raters if user not in known], share)
        evidence = {"item": item, "direction": _DIRECTIONS[direction], "since": chart.start,
                    "wave": key[1] >= WAVE, "judged_by_later_raters": key[1] == LATE,
                    "raters_alike": chart.alike,
                    "raters_at_end": len(raters), "raters": sum(chart.levels),
                    "usual_share": round(chart.usual, 3), "attackers": round(attackers, 1),
                    "named_by_other_campaigns": len(known)}
        signals = []
        top = min(self.max_score, attackers / max(len(raters), 1))
        best = 0.0
        for user in raters:
            score = top if user in known else min(self.max_score, posterior.get(user, share))
            if score < self.min_share:
                continue
            best = max(best, score)
            self._attributed.setdefault(user, set()).add(row)
            if self._new_score("user", user, score):
                # An account first seen after the campaign began was made for it.
                signals.append(Signal("user", user, self.name, score,
                                      {**evidence, "attributed_share": round(score, 3)},
                                      whole_history=self._accounts.get(user, (-np.inf,))[0] >= chart.start))
        if best > 0 and self._new_score("item", item, best):
            signals.append(Signal("item", item, self.name, best, evidence))
        if len(self._attributed) > 1_000_000:  # bounded: forget the oldest half
            for user in list(self._attributed)[:500_000]:
                del self._attributed[user]
        return signals

    def _features(self, chart: _Chart) -> tuple[list[tuple], list[tuple]]:
        """The binned (activity, account age, time within the period) of a chart's raters at its end and
        at the other levels."""
        end = _ENDS[chart.alarmed]
        at_end, other = [], []
        for level, profile, ts in chart.raters.values():
            (at_end if end[level] else other).append((*profile, _time_bin(chart, ts)))
        return at_end, other

    def _one_cohort(self, chart: _Chart) -> bool:
        """Are the raters at the campaign's end the same cohort as those at the other levels? A crowd whose
        opinion drifted (a film in the news draws a harsher public) piles some of its own members at an end;
        an attack brings accounts of its own, unlike the item's other raters in activity, age or timing.
        A G-test of homogeneity per binned feature, summed; with too few raters on either side to tell, the
        answer is no (and the campaign stands on its counts alone)."""
        at_end, other = self._features(chart)
        if min(len(at_end), len(other)) < self.min_organic:
            return False
        g, dof = 0.0, 0
        for feature in range(len(at_end[0])):
            table = np.array([np.bincount([row[feature] for row in side], minlength=_PROFILE_BINS)
                              for side in (at_end, other)], dtype=float)
            table = table[:, table.sum(axis=0) > 0]
            if table.shape[1] < 2:
                continue
            expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
            g += 2.0 * float(np.sum(table * np.log(np.where(table > 0, table / expected, 1.0))))
            dof += table.shape[1] - 1
        return dof > 0 and chi2.sf(g, dof) >= self.cohort_alpha

    def _cohort(self, chart: _Chart, raters: list[str], share: float) -> dict[str, float]:
        """Each rater's posterior of being an attacker, judged as a cohort against the item's organic raters
        of the same period (those at the other levels): the campaign's raters at its end are a mixture, with
        weight `share`, of attackers and organic raters, whose activity, account age and time within the
        period are distributed as the organic ones'; where an end rater's profile is rarer among organic
        raters than among the end's, the excess is the attackers' (a burst inside a long period, fresh
        accounts among established ones). Naive Bayes over the three features, binned; without a reference
        to compare with, every rater keeps `share`, and no one is raised above it. Where the
        item has too few organic raters in the period (a wave of nothing but end ratings), the organic profile
        is that of the raters of all ratings lately (activity and age), arriving evenly over the period: a
        heavy, established user who rated the item amid a crowd of fresh accounts, or a fan days after a
        burst, is then the organic rater that the counts allow for."""
        _, organic = self._features(chart)
        if share <= 0.0 or not raters:
            return {}
        # Counts that leave no organic rater (share 1) still allow for half of one: a prior, not a verdict.
        prior = min(share, 1.0 - 0.5 / len(raters))
        mine = [(*chart.raters[user][1], _time_bin(chart, chart.raters[user][2])) for user in raters]
        if len(organic) >= self.min_organic:
            references = [np.bincount([p[feature] for p in organic], minlength=_PROFILE_BINS)
                          for feature in range(len(mine[0]))]
        elif self._population_count >= _MIN_POPULATION:
            # Organic raters come at the item's usual rate, spread evenly over the period (a Poisson
            # process): a rater days after a burst is not the burst's.
            joint = np.array(self._population).reshape(_PROFILE_BINS, _PROFILE_BINS)
            references = [joint.sum(axis=1), joint.sum(axis=0), np.ones(_PROFILE_BINS)]
        else:
            return {}
        ratio = np.ones(len(raters))
        for feature, reference in enumerate(references):
            bins = np.array([p[feature] for p in mine])
            # The end's profile without the rater being judged (leave one out): their own profile is no
            # evidence that attackers have it.
            others = np.bincount(bins, minlength=_PROFILE_BINS)[bins] - 1.0
            at_end = (others + 0.5) / (len(bins) - 1 + 0.5 * _PROFILE_BINS)
            usual = (reference + 0.5) / (reference.sum() + 0.5 * _PROFILE_BINS)
            attack = np.maximum(at_end - (1 - prior) * usual[bins], 1e-3 * at_end) / prior
            ratio *= attack / usual[bins]
        # Only ever lowered: the comparison clears organic-looking raters, it does not convict on a profile.
        posterior = np.minimum(prior * ratio / (prior * ratio + 1 - prior), share)
        return dict(zip(raters, posterior.tolist()))

    def _new_score(self, kind: str, entity: str, score: float) -> bool:
        key = (kind, entity)
        if score <= self._emitted.get(key, 0.0) + 0.01:
            return False
        self._emitted[key] = score
        if len(self._emitted) > 1_000_000:  # bounded: forget the oldest half
            for old in list(self._emitted)[:500_000]:
                del self._emitted[old]
        return True


_PROFILE_BINS = 5


def _profile_bin(ratings_before: int, age_seconds: float) -> tuple[int, int]:
    """A rater's activity (ratings before this one: 0, 1-3, 4-15, 16-63, 64+) and account age (under a
    day, a week, a month, half a year, older), binned on log scales."""
    activity = min(4, (int(ratings_before).bit_length() + 1) // 2)
    days = age_seconds / 86400.0
    age = 0 if days < 1 else 1 if days < 7 else 2 if days < 30 else 3 if days < 180 else 4
    return activity, age


def _time_bin(chart: _Chart, ts: float) -> int:
    """When within the chart's period a rating came, in `_PROFILE_BINS` bins. A rating older than the
    chart's start (input arrives out of event-time order across partitions) falls in the first."""
    span = max(chart.last - chart.start, 1.0)
    return max(0, min(_PROFILE_BINS - 1, int(_PROFILE_BINS * (ts - chart.start) / span)))


def _total(values: list) -> float:
    return values[0] + values[1] + values[2] + values[3] + values[4]


def _sum_at(values: list, levels: tuple[int, ...]) -> float:
    return values[levels[0]] + values[levels[1]] if len(levels) == 2 else values[levels[0]]


def _shifted(share: float, odds_ratio: float) -> float:
    """The share whose odds are `odds_ratio` times those of `share`."""
    odds = share / (1 - share) * odds_ratio
    return odds / (1 + odds)
