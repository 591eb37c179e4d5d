"""Every random parameter of the benign additions, the new attack families and the contaminated population,
declared in one place, each range split into two disjoint halves: `tune` and `report`.

A benchmark tunes detectors on streams drawn from the `tune` halves (and tune seeds) and reports on streams
drawn from the `report` halves (and other seeds), so that a figure it reports was never seen while tuning
(`shillguard simulate --ranges tune|report`, `benchmarks/generalisation.py`). `full` draws from the whole
range. `shillguard simulate --show-ranges` prints them all. A parameter is drawn once per stream (benign populations) or once per attack or group (attack
families) and recorded in truth.json; what varies per account inside a group is drawn from fixed shapes
given in each generator.

A range [low, high] with split s has halves [low, s) and [s, high] (for integers [low, s - 1] and
[s, high]); `log` ranges are drawn uniformly on a log scale (spreads from hours to weeks, group sizes).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> RANGES["covisit.group_size"].bounds("tune"), RANGES["covisit.group_size"].bounds("report")
((30, 89), (90, 200))
>>> sizes = Ranges("report").draw(rng, "covisit.group_size", 1000)
>>> int(sizes.min()) >= 90 and int(sizes.max()) <= 200
True
>>> Ranges("tune").draw(rng, "trending.hours") < 6.0
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HALVES = ("full", "tune", "report")
DAY_HOURS = 24.0


@dataclass(frozen=True)
class Range:
    """A parameter's range and the point that splits it into the `tune` and `report` halves."""

    low: float
    high: float
    split: float
    meaning: str
    integer: bool = False
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.split <= self.high or (self.integer and self.split - 1 < self.low):
            raise ValueError(f"range [{self.low}, {self.high}] cannot split at {self.split}")

    def bounds(self, half: str) -> tuple[float, float]:
        """Inclusive bounds for integers; for floats the tune half excludes `split`."""
        if half == "full":
            return self.low, self.high
        if half == "tune":
            return self.low, self.split - 1 if self.integer else self.split
        if half == "report":
            return self.split, self.high
        raise ValueError(f"unknown ranges half {half!r}: one of {', '.join(HALVES)}")

    def draw(self, rng: np.random.Generator, half: str, size: int | None = None):
        low, high = self.bounds(half)
        if self.integer:
            if self.log:  # uniform on a log scale over the integers low..high
                values = np.floor(np.exp(rng.uniform(np.log(low), np.log(high + 1), size)))
                values = np.clip(values, low, high).astype(np.int64)
            else:
                values = rng.integers(int(low), int(high) + 1, size)
            return values if size is not None else int(values)
        if self.log:
            values = np.exp(rng.uniform(np.log(low), np.log(high), size))
        else:
            values = rng.uniform(low, high, size)
        if half == "tune":  # [low, split): exp(log(split)) may round back up to split
            values = np.minimum(values, np.nextafter(high, low))
        return values if size is not None else float(values)


def _int(low: int, high: int, split: int, meaning: str, log: bool = False) -> Range:
    return Range(low, high, split, meaning, integer=True, log=log)


def _float(low: float, high: float, split: float, meaning: str, log: bool = False) -> Range:
    return Range(low, high, split, meaning, log=log)


RANGES: dict[str, Range] = {
    # Benign: trending crowds (a film in the news; fresh accounts rate it with its usual opinion).
    "trending.crowds": _int(2, 6, 4, "trending crowds per stream"),
    "trending.size": _int(20, 300, 80, "fresh accounts per crowd", log=True),
    "trending.hours": _float(1, 36, 6, "hours in which a crowd arrives", log=True),
    "trending.popularity_quantile": _float(0.5, 0.99, 0.9, "popularity quantile of the crowd's item"),
    "trending.drift": _float(0.0, 0.3, 0.15, "natural drift of the crowd's opinion: log-odds per star, "
                                              "random sign, 0 = the item's own histogram"),
    # Benign: premieres (a newly listed item rated in its first days, with an opinion of its own).
    "premiere.count": _int(1, 3, 2, "premieres per stream"),
    "premiere.size": _int(30, 300, 100, "raters of a premiere", log=True),
    "premiere.days": _float(1, 7, 3, "days over which a premiere's ratings arrive"),
    "premiere.established_share": _float(0.2, 0.8, 0.5, "share of a premiere's raters who are existing users"),
    "premiere.mean": _float(1.8, 4.6, 3.4, "a unimodal premiere's mean rating"),
    "premiere.bimodal_chance": _float(0.0, 0.6, 0.3, "chance that a premiere divides opinion (1-2 vs 4-5)"),
    # Benign: casual raters (1-8 ratings over weeks, popular items, near consensus).
    "casual.share": _float(0.2, 1.0, 0.5, "casual accounts per base user"),
    "casual.mean_ratings": _float(1.5, 4.0, 2.5, "mean ratings per casual account (1-8)"),
    "casual.weeks": _float(1, 8, 3, "weeks over which a casual account's ratings spread"),
    "casual.popularity_exponent": _float(0.7, 1.3, 1.0, "items chosen with probability ~ count^x"),
    # Benign: sign-up waves (a burst of new accounts after a marketing campaign).
    "signup.waves": _int(1, 3, 2, "sign-up waves per stream"),
    "signup.size": _int(100, 600, 250, "accounts in a wave", log=True),
    "signup.days": _float(1, 2, 1.5, "days a wave lasts"),
    "signup.mean_ratings": _float(5, 12, 8, "mean ratings per wave account (3-20)"),
    "signup.popularity_exponent": _float(1.0, 2.0, 1.5, "items chosen with probability ~ count^x"),
    # Attack: co-visitation push (Yang, Gong & Cai, NDSS 2017).
    "covisit.groups": _int(1, 3, 2, "groups per attack, one target each"),
    "covisit.group_size": _int(30, 200, 90, "accounts per group", log=True),
    "covisit.best_sellers": _int(5, 25, 12, "best sellers each account rates (per-account jitter +-30%)"),
    "covisit.top_items": _int(20, 100, 50, "the best sellers are drawn from the top this many items"),
    "covisit.five_share": _float(0.3, 0.8, 0.55, "share of 5s (else 4s) on the best sellers"),
    "covisit.target_four_share": _float(0.0, 0.3, 0.15, "share of accounts that give the target a 4, not a 5"),
    "covisit.click_chance": _float(0.0, 1.0, 0.5, "share of accounts that also click their items in a session"),
    "covisit.spread_hours": _float(2, 672, 72, "hours over which the accounts arrive", log=True),
    "covisit.filler": _int(0, 5, 3, "most ordinary filler ratings per account (near consensus)"),
    # Attack: sleepers.
    "sleeper.size": _int(20, 100, 45, "accounts", log=True),
    "sleeper.lead_weeks": _float(2, 8, 4, "weeks between the accounts' creation and the push"),
    "sleeper.life_ratings": _int(3, 15, 8, "mean ordinary ratings before the push (3-15 per account)"),
    "sleeper.push_hours": _float(2, 336, 36, "hours the push takes", log=True),
    "sleeper.four_share": _float(0.0, 0.5, 0.25, "share of 4s (else 5s) on the target"),
    # Attack: slow nukes.
    "slow_nuke.size": _int(20, 100, 45, "accounts", log=True),
    "slow_nuke.weeks": _float(2, 6, 4, "weeks the campaign lasts"),
    "slow_nuke.aged_share": _float(0.0, 1.0, 0.5, "share of accounts that are aged (filler before and during)"),
    "slow_nuke.filler": _int(0, 15, 7, "most filler ratings of an aged account (near consensus)"),
    "slow_nuke.waves": _int(1, 6, 4, "arrival waves (1: evenly over the campaign)"),
    "slow_nuke.two_share": _float(0.0, 0.5, 0.25, "share of 2s (else 1s) on the target"),
    # Attack: loose collusive rings (Mukherjee, Liu & Glance, WWW 2012; Xu & Zhang 2015; Rayana & Akoglu,
    # KDD 2015).
    "collusion.size_exponent": _float(1.5, 2.5, 2.0, "group sizes 2-80 with P(size) ~ size^-x"),
    "collusion.products": _int(3, 60, 12, "products per group", log=True),
    "collusion.member_share": _float(0.15, 0.9, 0.5, "median share of its group's products a member reviews"),
    "collusion.activity_sigma": _float(0.3, 1.2, 0.7, "spread (log-normal sigma) of members' activity"),
    "collusion.real_product_share": _float(0.0, 1.0, 0.5, "share of a group's products that already exist"),
    "collusion.multi_group_share": _float(0.0, 0.3, 0.15, "share of members in 2-3 groups"),
    "collusion.nuke_chance": _float(0.0, 0.4, 0.2, "chance that a group also 1-stars competitors"),
    "collusion.four_share": _float(0.0, 0.3, 0.15, "share of 4s (else 5s) on the group's products"),
    "collusion.camouflage": _int(0, 15, 7, "most camouflage ratings per member, on popular items"),
    "collusion.days": _float(1, 90, 10, "days over which a group's reviews arrive", log=True),
    # The contaminated population (`--contamination F`): how the spammers divide among families.
    "contamination.ring_share": _float(0.3, 0.7, 0.5, "share of spam accounts in collusive rings"),
    "contamination.attack_size": _int(5, 60, 20, "accounts per shilling or camouflage attack", log=True),
    "contamination.filler": _int(2, 40, 10, "filler ratings per shilling profile", log=True),
    "contamination.spread_hours": _float(1, 720, 24, "hours a shilling or camouflage attack takes", log=True),
    # The sparse review-site shape (`--sparse`).
    "sparse.keep": _int(3, 30, 12, "ratings each real user keeps (per user, in this range)", log=True),
    "generous.share": _float(0.3, 1.0, 0.65, "mean chance a real 2-4 moves up a star on a generous site"),
}


class Ranges:
    """Draws from one half (`full`, `tune` or `report`) of the declared ranges."""

    def __init__(self, half: str = "full"):
        if half not in HALVES:
            raise ValueError(f"unknown ranges half {half!r}: one of {', '.join(HALVES)}")
        self.half = half

    def draw(self, rng: np.random.Generator, name: str, size: int | None = None):
        return RANGES[name].draw(rng, self.half, size)

    def bounds(self, name: str) -> tuple[float, float]:
        return RANGES[name].bounds(self.half)


def describe() -> str:
    """The ranges as a Markdown table (the README's, `shillguard simulate --show-ranges`)."""
    rows = ["| parameter | meaning | full | tune | report |", "|---|---|---|---|---|"]
    for name, spec in RANGES.items():
        def show(half: str) -> str:
            low, high = spec.bounds(half)
            if spec.integer:
                return f"{int(low)}-{int(high)}"
            closing = ")" if half == "tune" else "]"
            return f"[{low:g}, {high:g}{closing}"
        rows.append(f"| `{name}` | {spec.meaning}{' (log scale)' if spec.log else ''} | {show('full')} | "
                    f"{show('tune')} | {show('report')} |")
    return "\n".join(rows)

