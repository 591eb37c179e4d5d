"""The simulator's benign crowds, new attack families, contaminated population and stream shapes: each
plants what it says, in the ranges it declares, and nothing in ids or timestamps tells a fake."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from simulator import build, plan_attacks, synthetic_base
from simulator.build import Shape
from simulator.cli import simulate
from simulator.ranges import HALVES, RANGES, Ranges, describe

DAY, WEEK = 86_400, 7 * 86_400
ROOT = Path(__file__).resolve().parents[1]


def base(seed: int = 1):
    # 150 days, so that sleepers (up to 8 weeks of life) and slow nukes (up to 6 weeks) fit.
    return synthetic_base(n_users=300, n_items=400, n_ratings=24_000, days=150, seed=seed)


class Stream:
    """Events indexed for the checks below."""

    def __init__(self, simulation):
        self.events, self.truth = simulation.events, simulation.truth
        self.ratings = [e for e in self.events if e["type"] == "rating"]
        self.by_user: dict[str, list[dict]] = defaultdict(list)
        for event in self.events:
            if "user_id" in event:
                self.by_user[event["user_id"]].append(event)
        self.malicious_events = {e for a in self.truth["attacks"] for e in a["event_ids"]}
        self.malicious_users = {u for a in self.truth["attacks"] for u in a["entities"].get("user", [])}
        # Item statistics from the benign ratings: what "the consensus" and "popularity" mean here.
        self.item_ratings: dict[str, list[int]] = defaultdict(list)
        for e in self.ratings:
            if e["event_id"] not in self.malicious_events:
                self.item_ratings[e["item_id"]].append(e["rating"])

    def attacks(self, family):
        return [a for a in self.truth["attacks"] if a["family"] == family]

    def user_ratings(self, user):
        return [e for e in self.by_user[user] if e["type"] == "rating"]

    def count(self, item):
        return len(self.item_ratings[item])

    def median_count(self):
        return float(np.median([len(v) for v in self.item_ratings.values()]))


@pytest.fixture(scope="module")
def attacked():
    return Stream(build(base(), plan_attacks("covisit,sleeper,slow_nuke,collusion"), seed=4))


@pytest.fixture(scope="module")
def benign_only():
    return Stream(build(base(), [], seed=2))


def within(value, name, half="full"):
    low, high = RANGES[name].bounds(half)
    return low <= value <= high


# -- ranges ----------------------------------------------------------------------------------------------
def test_range_halves_are_disjoint_and_cover_the_range():
    for name, spec in RANGES.items():
        tune, report, full = spec.bounds("tune"), spec.bounds("report"), spec.bounds("full")
        assert full[0] == tune[0] and tune[1] <= report[0] and report[1] == full[1], name
        if spec.integer:
            assert tune[1] + 1 == report[0] and tune[0] <= tune[1], name
        rng = np.random.default_rng(0)
        low_draws = spec.draw(rng, "tune", 500)
        high_draws = spec.draw(rng, "report", 500)
        assert low_draws.max() < report[0] and high_draws.min() >= report[0], name
        assert low_draws.min() >= full[0] and high_draws.max() <= full[1], name
    with pytest.raises(ValueError, match="unknown ranges half"):
        Ranges("middle")


def test_readme_ranges_table_is_current():
    assert describe() in (ROOT / "README.md").read_text(), "README's ranges table: paste simulate --show-ranges"


def test_streams_drawn_from_each_half_record_parameters_in_that_half():
    for half in ("tune", "report"):
        sim = build(base(), plan_attacks("covisit,sleeper,slow_nuke,collusion"), seed=3,
                    shape=Shape(ranges=half))
        assert sim.truth["shape"]["ranges"] == half
        for attack in sim.truth["attacks"]:
            family, params = attack["family"], attack["params"]
            for key, value in params.items():
                name = f"{family}.{key}"
                if name in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
                    # Floats are rounded to 3 places in truth: allow that much at the split.
                    low, high = RANGES[name].bounds(half)
                    assert low - 1e-3 <= value <= high + 1e-3, (half, name, value)
            if family == "covisit":
                assert all(within(size, "covisit.group_size", half) for size in params["group_sizes"])
        for group in sim.truth["benign_groups"]:
            if group["kind"] == "trending":
                assert within(group["params"]["size"], "trending.size", half)
                assert within(group["params"]["hours"], "trending.hours", half) or half == "tune"


# -- benign crowds ---------------------------------------------------------------------------------------
def test_benign_crowds_are_in_every_stream_by_default_and_not_in_base_mode(benign_only):
    kinds = Counter(group["kind"] for group in benign_only.truth["benign_groups"])
    assert set(kinds) == {"casual", "trending", "premiere", "signup_wave"}
    assert within(kinds["trending"], "trending.crowds") and within(kinds["signup_wave"], "signup.waves")
    assert benign_only.truth["totals"]["malicious_events"] == 0
    plain = build(base(), [], seed=2, shape=Shape(benign="base"))
    assert plain.truth["benign_groups"] == []
    assert len(plain.events) < len(benign_only.events)


def test_trending_crowds_rate_with_the_items_usual_opinion(benign_only):
    crowds = [g for g in benign_only.truth["benign_groups"] if g["kind"] == "trending"]
    assert crowds
    crowd_items = {g["items"][0] for g in crowds}
    for group in crowds:
        (item,) = group["items"]
        members = set(group["users"])
        crowd = [e["rating"] for e in benign_only.ratings if e["item_id"] == item and e["user_id"] in members]
        others = [e["rating"] for e in benign_only.ratings if e["item_id"] == item and e["user_id"] not in members]
        assert len(crowd) == len(members) >= 20 and len(others) >= 10
        # In line with the item's opinion: close in mean, and a real spread of stars (not all 5s or 1s).
        assert abs(np.mean(crowd) - np.mean(others)) < 0.6, (group["params"], np.mean(crowd), np.mean(others))
        if len(crowd) >= 50:
            share = np.bincount(crowd, minlength=6)[1:] / len(crowd)
            reference = np.bincount(others, minlength=6)[1:] / len(others)
            assert 0.5 * np.abs(share - reference).sum() < 0.25
            assert share.max() < 0.8
        # Fresh accounts with 1-3 ratings each, arriving within the crowd's window (hours).
        start, end = group["window"]
        assert end - start <= 36 * 3_600
        for user in members:
            rated = benign_only.user_ratings(user)
            assert 1 <= len(rated) <= 3
            assert start <= min(e["ts"] for e in rated) <= end
        # The item is popular or mid-popular, never from the long tail.
        assert benign_only.count(item) >= benign_only.median_count()
    assert len(crowd_items) == len(crowds)


def test_attacks_never_target_a_benign_crowds_item():
    sim = build(base(), plan_attacks("all") + plan_attacks("slow_nuke,covisit,sleeper"), seed=8)
    crowd_items = {i for g in sim.truth["benign_groups"] for i in g["items"]}
    targets = {t for a in sim.truth["attacks"] for t in a["target_items"]}
    assert crowd_items and targets and not crowd_items & targets


def test_premieres_signup_waves_and_casual_raters_have_their_shapes(benign_only):
    groups = benign_only.truth["benign_groups"]
    for group in (g for g in groups if g["kind"] == "premiere"):
        (item,) = group["items"]
        start, end = group["window"]
        times = [e["ts"] for e in benign_only.ratings if e["item_id"] == item]
        # A new item: every rating of it is its premiere crowd's, within its first days (a sitting begun
        # on the last day may run a few minutes over).
        assert len(times) == len(group["users"]) and min(times) >= start and max(times) <= end + 3_600
        assert group["params"]["established"] > 0  # existing users among its raters, not only fresh ones
    for group in (g for g in groups if g["kind"] == "signup_wave"):
        assert 100 <= len(group["users"]) <= 600
        start, end = group["window"]
        assert end - start <= 2 * DAY
        for user in group["users"]:
            rated = benign_only.user_ratings(user)
            assert 3 <= len(rated) <= 20 and start <= min(e["ts"] for e in rated) <= end
            stars = [e["rating"] for e in rated]
            consensus = [np.mean(benign_only.item_ratings[e["item_id"]]) for e in rated]
            assert abs(np.mean(stars) - np.mean(consensus)) < 2.0
    (casual,) = [g for g in groups if g["kind"] == "casual"]
    sizes = [len(benign_only.user_ratings(user)) for user in casual["users"]]
    assert min(sizes) >= 1 and max(sizes) <= 8 and len(sizes) >= 0.2 * 300
    spans = [max(e["ts"] for e in benign_only.user_ratings(u)) - min(e["ts"] for e in benign_only.user_ratings(u))
             for u, n in zip(casual["users"], sizes) if n >= 3]
    assert np.median(spans) > DAY  # spread over days and weeks, not one sitting


# -- new attack families ---------------------------------------------------------------------------------
def test_covisit_groups_rate_best_sellers_and_one_obscure_target(attacked):
    (attack,) = attacked.attacks("covisit")
    params = attack["params"]
    assert len(attack["target_items"]) == params["groups"] == len(attack["details"]["groups"])
    top = set(attack["details"]["best_sellers"])
    counts = sorted((attacked.count(i) for i in attacked.item_ratings), reverse=True)
    assert len(top) >= params["top_items"] - 3 and min(attacked.count(i) for i in top) >= 0.5 * counts[100]
    for group in attack["details"]["groups"]:
        assert within(len(group["users"]), "covisit.group_size")
        target = group["target"]
        assert attacked.count(target) <= attacked.median_count()
        arrivals = []
        for user in group["users"]:
            rated = attacked.user_ratings(user)
            on_target = [e["rating"] for e in rated if e["item_id"] == target]
            assert on_target and set(on_target) <= {4, 5}
            best = [e for e in rated if e["item_id"] in top]
            assert 5 <= len(best) <= 25 and {e["rating"] for e in best} <= {4, 5}
            assert len(rated) - len(best) - 1 <= params["filler"]
            arrivals.append(min(e["ts"] for e in rated))
        # Arrivals spread over the attack's window (hours to weeks), not one burst.
        width = params["spread_hours"] * 3_600
        assert max(arrivals) - min(arrivals) >= 0.5 * width
        assert max(arrivals) - min(arrivals) <= width + 3_600


def test_sleepers_live_weeks_then_push_an_obscure_film(attacked):
    (attack,) = attacked.attacks("sleeper")
    (target,) = attack["target_items"]
    assert within(len(attack["entities"]["user"]), "sleeper.size")
    assert attacked.count(target) <= attacked.median_count()
    push_start, push_end = attack["details"]["push_window"]
    assert push_end - push_start <= 14 * DAY
    for user in attack["entities"]["user"]:
        rated = attacked.user_ratings(user)
        push = [e for e in rated if e["item_id"] == target]
        life = [e for e in rated if e["ts"] < push_start]
        assert len(push) == 1 and push[0]["rating"] in (4, 5) and push_start <= push[0]["ts"] <= push_end + 600
        assert 3 <= len(life) <= 15
        first = min(e["ts"] for e in attacked.by_user[user])
        assert push_start - first >= 2 * WEEK - 3_600 or attack["params"]["lead_seconds_used"] < 2 * WEEK
        assert push_start - first <= 8 * WEEK
        # Ordinary life: popular items near their consensus.
        gaps = [abs(e["rating"] - np.mean(attacked.item_ratings[e["item_id"]])) for e in life]
        assert np.mean(gaps) < 1.5


def test_slow_nukes_pull_a_popular_liked_film_over_weeks(attacked):
    (attack,) = attacked.attacks("slow_nuke")
    (target,) = attack["target_items"]
    counts = sorted(attacked.count(i) for i in attacked.item_ratings)
    assert attacked.count(target) >= counts[int(0.95 * (len(counts) - 1))] * 0.9
    assert np.mean(attacked.item_ratings[target]) >= 3.7  # >= 3.8 on the base the attacker saw
    nukes = [e for u in attack["entities"]["user"] for e in attacked.user_ratings(u) if e["item_id"] == target]
    assert len(nukes) == len(attack["entities"]["user"]) and {e["rating"] for e in nukes} <= {1, 2}
    assert within(len(nukes), "slow_nuke.size")
    times = [e["ts"] for e in nukes]
    assert max(times) - min(times) >= attack["params"]["weeks"] * WEEK / 4
    assert max(times) - min(times) <= 6 * WEEK + DAY


def test_collusive_rings_are_loose(attacked):
    (attack,) = attacked.attacks("collusion")
    groups = attack["details"]["groups"]
    assert all(2 <= len(g["members"]) <= 80 for g in groups)
    reviews = defaultdict(dict)
    for user in attack["entities"]["user"]:
        for e in attacked.user_ratings(user):
            reviews[user][e["item_id"]] = e["rating"]
    for group in groups:
        products = set(group["products"])
        assert 3 <= len(products) <= 60
        shares = [len(products & set(reviews[m])) / len(products) for m in group["members"]]
        assert min(shares) >= 0.1 and max(shares) <= 0.95  # each member reviews 15-90%, none all
        stars = [reviews[m][p] for m in group["members"] for p in products & set(reviews[m])]
        assert np.mean(np.array(stars) == 5) >= 0.6 and set(stars) <= {4, 5}
        for item in group["nuked"]:
            assert {reviews[m][item] for m in group["members"] if item in reviews[m]} <= {1, 2}
    memberships = Counter(m for g in groups for m in g["members"])
    if attack["params"]["multi_group_share"] >= 0.05 and len(groups) > 1:
        assert max(memberships.values()) >= 2
    # Camouflage: at most 15 ratings outside a member's groups' products.
    for user in attack["entities"]["user"]:
        own = {p for g in groups if user in g["members"] for p in g["products"] + g["nuked"]}
        assert len(set(reviews[user]) - own) <= 15


# -- contaminated population and shapes ------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.1, 0.35, 0.5])
def test_contamination_share_is_as_asked_with_mixed_families(share):
    sim = build(base(), [], seed=5, shape=Shape(contamination=share))
    users = sim.truth["totals"]["entities"]["user"]
    assert abs(users["malicious"] / users["total"] - share) < 0.002
    families = Counter(a["family"] for a in sim.truth["attacks"])
    assert "collusion" in families and len(families) >= 3
    assert len({t for a in sim.truth["attacks"] for t in a["target_items"]}) >= 10


def test_review_site_shape_without_time():
    sim = build(base(), [], seed=6, shape=Shape(contamination=0.35, sparse=True, timestamps="none"))
    stream = Stream(sim)
    assert {e["type"] for e in sim.events} == {"rating"}
    assert len({e["ts"] for e in sim.events}) == 1
    users = sim.truth["totals"]["entities"]["user"]
    assert abs(users["malicious"] / users["total"] - 0.35) < 0.002
    # Real (base) users keep 3-30 ratings (plus at most one per premiere).
    premieres = sum(1 for g in sim.truth["benign_groups"] if g["kind"] == "premiere")
    crowd_users = {u for g in sim.truth["benign_groups"] for u in g["users"]}
    base_counts = [len(stream.user_ratings(u)) for u in stream.by_user
                   if u not in stream.malicious_users and u not in crowd_users and len(stream.user_ratings(u)) > 3]
    assert base_counts and max(base_counts) <= 30 + premieres
    # The order carries no label either: spammers' events are spread through the file.
    positions = [n / len(sim.events) for n, e in enumerate(sim.events) if e["event_id"] in stream.malicious_events]
    assert 0.45 < float(np.mean(positions)) < 0.55
    with pytest.raises(ValueError, match="ratings only"):
        build(base(), plan_attacks("click_farm"), seed=6, shape=Shape(sparse=True))


def test_random_timestamps_are_spread_over_the_span_and_carry_no_label():
    sim = build(base(), [], seed=6, shape=Shape(contamination=0.35, sparse=True, timestamps="random"))
    stream = Stream(sim)
    ts = np.array([e["ts"] for e in sim.events], dtype=float)
    assert np.all(np.diff(ts) >= 0) and len(np.unique(ts)) > 0.9 * len(ts)
    # Every kind of account's events spread evenly over the span: no burst, no late arrivals.
    span = (ts - ts.min()) / (ts.max() - ts.min())
    spam = np.array([e["event_id"] in stream.malicious_events for e in sim.events])
    assert 0.45 < float(span[spam].mean()) < 0.55 and 0.45 < float(span[~spam].mean()) < 0.55
    assert sim.truth["shape"]["timestamps"] == "random"


def test_nothing_in_ids_timestamps_or_clicks_tells_a_fake(attacked):
    # Ids: one minter for all, so fakes are spread through the id order and look alike.
    users = sorted(attacked.by_user)
    ranks = [n / len(users) for n, u in enumerate(users) if u in attacked.malicious_users]
    assert 0.4 < float(np.mean(ranks)) < 0.6
    assert {len(u) for u in attacked.malicious_users} == {len(u) for u in users}
    # Timestamps: integer seconds for all, no rounder for fakes than for real users.
    fake_ts = [e["ts"] for e in attacked.events if e["event_id"] in attacked.malicious_events]
    real_ts = [e["ts"] for e in attacked.events if e["event_id"] not in attacked.malicious_events]
    assert all(type(t) is int for t in fake_ts + real_ts)
    assert abs(np.mean(np.array(fake_ts) % 60 == 0) - np.mean(np.array(real_ts) % 60 == 0)) < 0.05
    # Clicks: planted ratings come with views of the item as often as benign ones (about 75%).
    def viewed_share(users):
        hits = total = 0
        for user in users:
            clicked = {(e["item_id"]) for e in attacked.by_user[user] if e["type"] == "click"}
            for e in attacked.user_ratings(user):
                total += 1
                hits += e["item_id"] in clicked
        return hits / total
    sample = sorted(set(attacked.by_user) - attacked.malicious_users)[:400]
    benign_share = viewed_share([u for u in sample if attacked.user_ratings(u)])
    for family in ("sleeper", "slow_nuke", "collusion"):
        (attack,) = attacked.attacks(family)
        assert abs(viewed_share(attack["entities"]["user"]) - benign_share) < 0.1, family


def test_cli_contamination_defaults_to_no_other_attacks(tmp_path):
    result = CliRunner().invoke(simulate, ["--data", "synthetic", "--out", str(tmp_path), "--contamination", "0.3",
                                           "--sparse", "--timestamps", "none", "--ranges", "report",
                                           "--seed", "2"])
    assert result.exit_code == 0, result.output
    truth = orjson.loads((tmp_path / "truth.json").read_bytes())
    assert truth["shape"] == {"benign": "full", "ranges": "report", "contamination": 0.3, "timestamps": "none",
                              "sparse": True, "generous": 0.0}
    assert {a["family"] for a in truth["attacks"]} <= {"random", "average", "bandwagon", "segment", "camouflage",
                                                         "covisit", "collusion"}
    assert "spammers:" in result.output and "(30.0%)" in result.output
    bad = CliRunner().invoke(simulate, ["--data", "synthetic", "--out", str(tmp_path / "x"), "--sparse",
                                        "--attacks", "sweep"])
    assert bad.exit_code != 0 and "ratings only" in bad.output
    assert "full" in HALVES


def test_a_generous_site_lifts_each_raters_ratings_by_their_own_habit():
    from simulator.build import generous
    plain = base()
    lifted = generous(plain, seed=0, share=0.5)
    assert (lifted.user == plain.user).all() and (lifted.item == plain.item).all()
    assert (lifted.rating == 5).mean() > (plain.rating == 5).mean() + 0.1
    assert ((lifted.rating == plain.rating) | (lifted.rating == plain.rating + 1)
            | ((plain.rating == 2) & (lifted.rating == 1))).all()  # up a star, or a 2 down to 1
    movable = (plain.rating >= 2) & (plain.rating <= 4)
    moved = np.bincount(plain.user[movable], lifted.rating[movable] != plain.rating[movable], minlength=plain.n_users)
    share = moved / np.maximum(np.bincount(plain.user[movable], minlength=plain.n_users), 1)
    busy = np.bincount(plain.user[movable], minlength=plain.n_users) >= 30
    assert 0.4 < share[busy].mean() < 0.6 and share[busy].std() > 0.1  # habits differ between raters
    sim = build(plain, plan_attacks("none"), seed=1, shape=Shape(generous=0.5))
    assert sim.truth["shape"]["generous"] == 0.5
    with pytest.raises(ValueError, match="generous"):
        Shape(generous=1.5).check([])
