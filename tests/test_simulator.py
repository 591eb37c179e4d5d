"""The attack simulator: deterministic, valid, opaque, and truthful about what it planted."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from detectors.events import Rejection, decode_event
from simulator import (AttackSpec, MovieLensNotFound, build, default_movielens_dir, load_movielens,
                       plan_attacks, synthetic_base)
from simulator.build import CLASSIC, FAMILIES
from simulator.cli import simulate

ID = re.compile(r"^[uiscex]-[0-9a-f]{12}$")


def small_base(seed: int = 1):
    return synthetic_base(n_users=150, n_items=240, n_ratings=8_000, days=60, seed=seed)


def small_plan():
    return plan_attacks("all", size=10, filler=0.05, targets=2) + [AttackSpec("average", "nuke", size=8)]


@pytest.fixture(scope="module")
def simulation():
    return build(small_base(), small_plan(), seed=5)


def actor(event):
    if event["type"] in ("rating", "click"):
        return "user", event["user_id"]
    if event["type"] == "catalog_edit":
        return "seller", event["seller_id"]
    return "client", event["client_id"]


def test_deterministic_per_seed(simulation):
    again = build(small_base(), small_plan(), seed=5)
    assert orjson.dumps(again.events) == orjson.dumps(simulation.events)
    assert orjson.dumps(again.truth) == orjson.dumps(simulation.truth)
    other = build(small_base(), small_plan(), seed=6)
    assert orjson.dumps(other.events) != orjson.dumps(simulation.events)


def test_every_event_validates(simulation):
    for event in simulation.events:
        decoded = decode_event(orjson.dumps(event))
        assert not isinstance(decoded, Rejection), (decoded.reason, event)
    ids = [event["event_id"] for event in simulation.events]
    assert len(set(ids)) == len(ids)
    assert {event["type"] for event in simulation.events} == {"rating", "click", "catalog_edit", "rec_query"}


def test_timestamps_integer_and_sorted(simulation):
    ts = [event["ts"] for event in simulation.events]
    assert all(type(t) is int for t in ts)
    assert ts == sorted(ts)


def test_ids_are_opaque_and_alike(simulation):
    truth = simulation.truth
    malicious = {e for attack in truth["attacks"] for ids in attack["entities"].values() for e in ids}
    malicious_events = {e for attack in truth["attacks"] for e in attack["event_ids"]}
    ids_by_label = defaultdict(set)
    for event in simulation.events:
        label = "fake" if event["event_id"] in malicious_events else "real"
        for field in ("event_id", "user_id", "item_id", "seller_id", "client_id", "session_id"):
            if field in event:
                assert ID.match(event[field]), event
                ids_by_label[label].add(event[field])
        for item in event.get("seed_items", []):
            assert ID.match(item)
    # Fake ids are not a block at the end (or start) of the id order.
    users = sorted({e["user_id"] for e in simulation.events if "user_id" in e})
    ranks = [i / len(users) for i, user in enumerate(users) if user in malicious]
    assert 0.3 < float(np.mean(ranks)) < 0.7
    assert {len(i) for i in ids_by_label["fake"]} == {len(i) for i in ids_by_label["real"]}


def test_fakes_inside_the_real_time_range(simulation):
    truth = simulation.truth
    malicious = {e for attack in truth["attacks"] for e in attack["event_ids"]}
    benign_ts = [e["ts"] for e in simulation.events if e["event_id"] not in malicious and e["type"] == "rating"]
    fake_ts = [e["ts"] for e in simulation.events if e["event_id"] in malicious]
    assert min(benign_ts) <= min(fake_ts) and max(fake_ts) <= max(benign_ts)


def test_same_second_ties_are_mixed(simulation):
    malicious = {e for attack in simulation.truth["attacks"] for e in attack["event_ids"]}
    firsts, seen = [], {}
    for event in simulation.events:
        seen.setdefault(event["ts"], []).append(event["event_id"] in malicious)
    for labels in seen.values():
        if any(labels) and not all(labels):
            firsts.append(labels[0])
    assert firsts and 0 < sum(firsts) < len(firsts)  # sometimes a fake opens the second, sometimes not


def test_truth_matches_events(simulation):
    truth = simulation.truth
    owner = {}
    for attack in truth["attacks"]:
        for kind, ids in attack["entities"].items():
            assert kind == attack["entity_kind"] and ids
            owner.update({(kind, i): attack["id"] for i in ids})
    by_event = {e: attack["id"] for attack in truth["attacks"] for e in attack["event_ids"]}
    assert sum(a["n_events"] for a in truth["attacks"]) == len(by_event) == truth["totals"]["malicious_events"]
    for event in simulation.events:
        assert owner.get(actor(event)) == by_event.get(event["event_id"])
    totals = truth["totals"]
    assert totals["lines"] == len(simulation.events) == totals["benign_events"] + totals["malicious_events"]
    assert sum(sum(c.values()) for c in totals["by_type"].values()) == totals["lines"]
    items = {e.get("item_id") for e in simulation.events}
    assert all(t in items for a in truth["attacks"] for t in a["target_items"])
    assert [a["family"] for a in truth["attacks"]] == [s.family for s in small_plan()]


def test_shilling_profiles_rate_targets_at_the_extreme(simulation):
    for attack in simulation.truth["attacks"]:
        if attack["family"] not in ("random", "average", "bandwagon", "segment", "camouflage", "review_bomb"):
            continue
        fakes, targets = set(attack["entities"]["user"]), set(attack["target_items"])
        extreme = 5 if attack["intent"] == "push" else 1
        on_target = [e["rating"] for e in simulation.events if e["type"] == "rating"
                     and e["user_id"] in fakes and e["item_id"] in targets]
        assert on_target and set(on_target) == {extreme}, attack["family"]


def test_family_shapes(simulation):
    events = simulation.events
    attacks = {a["family"]: a for a in simulation.truth["attacks"]}
    bomb = set(attacks["review_bomb"]["entities"]["user"])
    per_account = defaultdict(int)
    for e in events:
        if e["type"] == "rating" and e["user_id"] in bomb:
            per_account[e["user_id"]] += 1
    assert set(per_account.values()) <= {1, 2, 3}

    farm, farm_targets = set(attacks["click_farm"]["entities"]["user"]), set(attacks["click_farm"]["target_items"])
    clicked = defaultdict(set)
    for e in events:
        if e["type"] == "click" and e["user_id"] in farm:
            clicked[e["user_id"]].add(e["item_id"])
    assert len(farm_targets) >= 3 and all(farm_targets <= items for items in clicked.values())

    sweepers = set(attacks["sweep"]["entities"]["client"])
    swept = defaultdict(list)
    for e in events:
        if e["type"] == "rec_query" and e["client_id"] in sweepers:
            swept[e["client_id"]] += e["seed_items"]
            assert e["k"] >= 200
    for seeds in swept.values():
        assert len(seeds) == len(set(seeds)) > 200  # every listed item, never twice
    orders = dict(zip(attacks["sweep"]["entities"]["client"], attacks["sweep"]["details"]["orders"]))
    assert {orders[c] for c, seeds in swept.items() if seeds == sorted(seeds)} == {"id"}

    poison = attacks["catalog_poison"]
    rewrites = [e for e in events if e["type"] == "catalog_edit" and e["item_id"] in poison["target_items"]]
    titles = {e["item_id"]: e["title"] for e in rewrites}  # the last edit of each target
    imitated = {e["item_id"]: e["title"].split(" (")[0] for e in events if e["type"] == "catalog_edit"
                and e["item_id"] in poison["details"]["imitated_items"]}
    assert all(any(core in title for core in imitated.values()) for title in titles.values())


def test_benign_traffic_has_the_same_shapes():
    # Benign thin accounts, click-only visitors, new sellers, heavy clients: none of these is a tell.
    sim = build(small_base(), [], seed=2)
    assert sim.truth["totals"]["malicious_events"] == 0
    ratings, clicks, clients = defaultdict(int), set(), defaultdict(int)
    for e in sim.events:
        if e["type"] == "rating":
            ratings[e["user_id"]] += 1
        elif e["type"] == "click":
            clicks.add(e["user_id"])
        elif e["type"] == "rec_query":
            clients[e["client_id"]] += 1
    assert min(ratings.values()) <= 3
    assert clicks - set(ratings)
    assert len(clients) >= 100 and max(clients.values()) > 10 * np.median(list(clients.values()))
    assert any("text" in e for e in sim.events if e["type"] == "rating")


def test_max_events_caps_the_stream():
    sim = build(small_base(), plan_attacks("random,sweep", size=5), seed=3, max_events=6_000)
    assert len(sim.events) <= 6_000
    assert sim.truth["totals"]["lines"] == len(sim.events)
    assert all(a["entities"][a["entity_kind"]] for a in sim.truth["attacks"])


def test_split_sweep_divides_one_sweep_among_paced_clients():
    for seed in (0, 1, 2, 3):
        sim = build(small_base(), plan_attacks("split_sweep", spread="hours"), seed=seed)
        (attack,) = sim.truth["attacks"]
        clients, details = set(attack["entities"]["client"]), attack["details"]
        assert 5 <= len(clients) <= 20 and details["n_clients"] == len(clients)
        start = attack["window"][0]
        listed = {e["item_id"] for e in sim.events if e["type"] == "catalog_edit" and e["ts"] <= start}
        asked_by = defaultdict(set)
        times = defaultdict(list)
        for e in sim.events:
            if e["type"] == "rec_query" and e["client_id"] in clients:
                for item in e["seed_items"]:
                    asked_by[item].add(e["client_id"])
                times[e["client_id"]].append(e["ts"])
                assert e["k"] == attack["params"]["k"] <= 200
        assert listed <= set(asked_by)  # the whole listed catalogue is swept
        once = sum(len(asked_by[item]) == 1 for item in listed) / len(listed)
        # Slices are disjoint: only popular padding seeds are asked by two clients of the sweep.
        assert once == 1.0 if details["padding"] == 0 else once >= 0.6
        sizes = [len(t) for t in times.values()]
        assert max(sizes) <= 2 * min(sizes) + 5  # one sweep divided evenly


def test_heavy_benign_clients_are_varied_and_recorded():
    kinds = defaultdict(list)
    for seed in (0, 1, 2):
        sim = build(small_base(), [], seed=seed)
        queries = defaultdict(int)
        for e in sim.events:
            if e["type"] == "rec_query":
                queries[e["client_id"]] += 1
        for client, kind in sim.truth["heavy_clients"].items():
            kinds[kind].append(queries[client])
        # Heavy: the heaviest benign client asks far more than a typical one.
        assert max(queries[c] for c in sim.truth["heavy_clients"]) > 20 * np.median(list(queries.values()))
    assert set(kinds) == {"batch", "widget", "partner", "seo", "warmer"}


def test_plan_attacks_rejects_unknown_names():
    # "all" is every family; "classic" the nine the project began with (the README's older streams).
    assert [s.family for s in plan_attacks("all")] == list(FAMILIES) and len(FAMILIES) == 14
    assert [s.family for s in plan_attacks("classic")] == list(CLASSIC) and len(CLASSIC) == 9
    with pytest.raises(ValueError, match="unknown attack family"):
        plan_attacks("random,sybil")
    with pytest.raises(ValueError, match="unknown intent"):
        plan_attacks("random:boost")


def test_cli_writes_events_and_truth(tmp_path):
    result = CliRunner().invoke(simulate, ["--data", "synthetic", "--out", str(tmp_path), "--attacks",
                                           "bandwagon:nuke,review_bomb", "--max-events", "3000",
                                           "--seed", "4"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    truth = orjson.loads((tmp_path / "truth.json").read_bytes())
    assert len(lines) == truth["totals"]["lines"] <= 3000
    planted = [(a["family"], a["intent"]) for a in truth["attacks"]]
    assert planted == [("bandwagon", "nuke"), ("review_bomb", "nuke")]


def test_missing_movielens_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SHILLGUARD_MOVIELENS", str(tmp_path / "nowhere"))
    assert default_movielens_dir() == tmp_path / "nowhere"
    with pytest.raises(MovieLensNotFound, match="SHILLGUARD_MOVIELENS"):
        load_movielens()
    result = CliRunner().invoke(simulate, ["--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "MovieLens-100K not found" in result.output


@pytest.mark.movielens
def test_movielens_base(movielens_dir):
    base = load_movielens(movielens_dir)
    assert (base.n_users, base.n_items, base.n_ratings) == (943, 1682, 100_000)
    assert base.titles[0] == "Toy Story (1995)" and base.genres[0, base.genre_names.index("Animation")]
    sim = build(base, plan_attacks("segment,camouflage", size=20), seed=1, max_events=30_000)
    assert len(sim.events) <= 30_000
    assert all(not isinstance(decode_event(orjson.dumps(e)), Rejection) for e in sim.events[:2_000])
