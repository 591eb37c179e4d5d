"""Assemble a labelled event stream: benign base plus planted attacks, written as events.jsonl + truth.json.

Order of work: the base's ratings, thin newcomers and the catalogue; the benign crowds (casual raters,
trending crowds, premieres, sign-up waves; not with `benign="base"`, the stream as it was before them);
then each attack, and the contaminated population's spammers; then the traffic that follows from
everything (clicks around every rating, browse-only visitors, benign queries). Rows carry
a label (-1 benign, else the attack's index) until the end, where events are sorted by time with actors
in random order within a second (so planted events are never grouped; an actor's own events keep their
order), and event ids are minted in that order from the same opaque space. Every event's label is its
actor's: an event is malicious exactly when the user, seller or client behind it is one of an attack's
entities.

Shapes: `sparse=True` is a review site's (each base user keeps 3-30 of their ratings, and the stream
has ratings only: no clicks, queries or listings, as a review data set has none); `timestamps="none"`
puts every event at one timestamp in a random order, so that neither time nor order carries a signal.
`ranges` picks the half of simulator.ranges that random parameters come from (full, tune or report).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import orjson

from simulator.base import Base
from simulator.benign import benign_ratings, browsers, clicks_from_ratings, newcomers
from simulator.camouflage import camouflage_attack
from simulator.catalog import benign_catalog, catalog_poison_attack
from simulator.click_farm import click_farm_attack
from simulator.collusion import collusion_attack
from simulator.contamination import MAX_SHARE, contaminate
from simulator.covisit import covisit_attack
from simulator.crowds import benign_crowds
from simulator.queries import benign_queries, split_sweep_attack, sweep_attack
from simulator.ranges import Ranges
from simulator.review_bomb import review_bomb_attack
from simulator.shilling import average_attack, bandwagon_attack, random_attack, segment_attack
from simulator.sleeper import sleeper_attack
from simulator.slow_nuke import slow_nuke_attack
from simulator.world import BENIGN, Attack, AttackSpec, World

FAMILIES: dict[str, Callable[[World, AttackSpec], Attack]] = {
    "random": random_attack, "average": average_attack, "bandwagon": bandwagon_attack,
    "segment": segment_attack, "review_bomb": review_bomb_attack, "camouflage": camouflage_attack,
    "click_farm": click_farm_attack, "catalog_poison": catalog_poison_attack, "sweep": sweep_attack,
    "covisit": covisit_attack, "sleeper": sleeper_attack, "slow_nuke": slow_nuke_attack,
    "collusion": collusion_attack,
    "split_sweep": split_sweep_attack,
}
# The nine families the project began with: `--attacks classic` (with `--benign base`, the streams that
# the README's older figures were measured on).
CLASSIC = ("random", "average", "bandwagon", "segment", "review_bomb", "camouflage", "click_farm",
           "catalog_poison", "sweep")
NO_RATINGS = {"click_farm", "catalog_poison", "sweep"}  # families that a ratings-only stream cannot hold
BENIGN_MODES = ("full", "base")
TIMESTAMP_MODES = ("real", "none", "random")
TRUTH_VERSION = 1
EVENTS_PER_RATING = 3.0  # about what a base rating brings along (clicks, queries, attacks) at defaults


@dataclass
class Simulation:
    events: list[dict[str, Any]]  # sorted by ts, each valid for detectors.events.decode_event
    truth: dict[str, Any]

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        events_path, truth_path = out / "events.jsonl", out / "truth.json"
        with events_path.open("wb") as sink:
            for start in range(0, len(self.events), 50_000):
                chunk = self.events[start:start + 50_000]
                sink.write(b"\n".join(orjson.dumps(event) for event in chunk) + b"\n")
        truth_path.write_bytes(orjson.dumps(self.truth, option=orjson.OPT_INDENT_2))
        return events_path, truth_path


def plan_attacks(names: str | Sequence[str], **common: Any) -> list[AttackSpec]:
    """Parse "random,average:nuke,sweep" (or "all", "classic" for the first nine families, or "none" for a
    benign-only stream) into specs sharing `common` settings.

    >>> [(s.family, s.intent) for s in plan_attacks("random,segment:nuke", size=10)]
    [('random', None), ('segment', 'nuke')]
    >>> plan_attacks("none")
    []
    """
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    if list(names) == ["all"]:
        names = list(FAMILIES)
    if list(names) == ["classic"]:
        names = list(CLASSIC)
    if list(names) == ["none"]:
        names = []
    specs = []
    for name in names:
        family, _, intent = name.partition(":")
        if family not in FAMILIES:
            raise ValueError(f"unknown attack family {family!r}: one of {', '.join(FAMILIES)}, all, classic "
                             f"or none")
        if intent and intent not in ("push", "nuke"):
            raise ValueError(f"unknown intent {intent!r} in {name!r}: push or nuke")
        specs.append(AttackSpec(family=family, intent=intent or None, **common))
    return specs


@dataclass(frozen=True)
class Shape:
    """How the stream looks beyond its attacks (see the module docstring)."""

    benign: str = "full"          # full: with the benign crowds; base: as before them
    ranges: str = "full"          # the half of simulator.ranges to draw from: full, tune or report
    contamination: float = 0.0    # share of all accounts that are spammers of mixed families
    timestamps: str = "real"      # none: every event at one timestamp, in random order; random: times drawn
                                  # at random over the span, in their order
    sparse: bool = False          # a review site: base users keep 3-30 ratings; ratings only
    generous: float = 0.0         # a generous site: each real 2-4 moves up a star by its rater's habit,
                                  # drawn around this mean

    def check(self, attacks: Sequence[AttackSpec]) -> None:
        if self.benign not in BENIGN_MODES:
            raise ValueError(f"unknown benign mode {self.benign!r}: one of {', '.join(BENIGN_MODES)}")
        if self.timestamps not in TIMESTAMP_MODES:
            raise ValueError(f"unknown timestamps mode {self.timestamps!r}: one of {', '.join(TIMESTAMP_MODES)}")
        Ranges(self.ranges)
        if not 0.0 <= self.generous <= 1.0:
            raise ValueError(f"generous must be between 0 and 1, not {self.generous}")
        if not 0.0 <= self.contamination <= MAX_SHARE:
            raise ValueError(f"contamination must be between 0 and {MAX_SHARE}, not {self.contamination}")
        wrong = sorted({spec.family for spec in attacks} & NO_RATINGS) if self.sparse else []
        if wrong:
            raise ValueError(f"a sparse (review-site) stream has ratings only; {', '.join(wrong)} "
                             f"make{'s' if len(wrong) == 1 else ''} none")


def build(base: Base, attacks: Sequence[AttackSpec] = (), seed: int = 0, max_events: int | None = None,
          shape: Shape = Shape()) -> Simulation:
    """The stream and its truth. With `max_events`, the base is cut to its earliest ratings so that the
    stream about fits, and any remainder is trimmed from random benign clicks and queries."""
    shape.check(attacks)
    if shape.sparse:
        base = sparsify(base, seed, Ranges(shape.ranges))
    if shape.generous:
        base = generous(base, seed, shape.generous)
    whole = base
    if max_events and max_events < EVENTS_PER_RATING * base.n_ratings:
        base = base.head(max(int(max_events / EVENTS_PER_RATING), 100))
    simulation = _build_once(base, attacks, seed, max_events, shape)
    generated = simulation.truth["totals"]["generated_events"]
    if (shape.benign == "full" and max_events and base.n_ratings < whole.n_ratings
            and not 0.95 * max_events <= generated <= 1.02 * max_events):
        # The benign crowds and the families drawn from ranges bring more or fewer events per base rating
        # than EVENTS_PER_RATING says: cut the base once more to fit, rather than trim many benign events
        # (trimming benign events only would make the attackers' clicks per rating a tell) or fall short.
        size = min(int(base.n_ratings * max_events / generated * 0.99), whole.n_ratings)
        simulation = _build_once(whole.head(max(size, 100)), attacks, seed, max_events, shape)
    return simulation


def sparsify(base: Base, seed: int, ranges: Ranges) -> Base:
    """A review site's shape: each user keeps a random `sparse.keep` of their ratings (all if fewer)."""
    rng = np.random.default_rng([seed, 5_001])
    keep_n = ranges.draw(rng, "sparse.keep", base.n_users)
    order = np.lexsort((rng.random(base.n_ratings), base.user))  # each user's ratings in random order
    user_sorted = base.user[order]
    first = np.searchsorted(user_sorted, user_sorted, side="left")
    rank = np.arange(base.n_ratings) - first
    keep = np.sort(order[rank < keep_n[user_sorted]])
    return replace(base, name=f"{base.name}-sparse", user=base.user[keep], item=base.item[keep],
                   rating=base.rating[keep], ts=base.ts[keep])


def generous(base: Base, seed: int, share: float) -> Base:
    """A site whose raters are generous (many review sites: most ratings 5s), from a base that is not: each
    real 2, 3 or 4 moves up a star with the probability of its rater's habit, a 2 down to 1 in half of those
    (the habit of such sites is to love or to hate). Habits are the raters' own: each rater's probability is
    drawn from a beta of mean `share` (concentration 4), so that a rater's 1s and 5s come from one habit, as
    on a real site, not from a coin per rating (which made some films' 1-raters, whose 2s the coin moved
    down and whose other ratings it moved up, look like a nuke's accounts). Item opinions, and so the
    attacks' camouflage, follow.

    >>> from simulator.synthetic import synthetic_base
    >>> base = synthetic_base(n_users=50, n_items=40, n_ratings=2_000, seed=1)
    >>> lifted = generous(base, seed=0, share=1.0)
    >>> bool((lifted.rating == 5).mean() > (base.rating == 5).mean()), set(lifted.rating[base.rating == 4].tolist())
    (True, {5})
    """
    rng = np.random.default_rng([seed, 5_002])
    rating = base.rating.astype(np.int16)
    if share >= 1.0:
        habit = np.ones(base.n_users)
    else:
        habit = rng.beta(4.0 * share, 4.0 * (1.0 - share), base.n_users)
    chance = habit[base.user]
    draw = rng.random(len(rating))
    moved = (rating >= 2) & (rating <= 4) & (draw < chance)
    down = moved & (rating == 2) & (draw < chance / 2)
    rating = np.where(down, 1, np.where(moved, rating + 1, rating)).astype(base.rating.dtype)
    return replace(base, name=f"{base.name}-generous", rating=rating)


def _build_once(base: Base, attacks: Sequence[AttackSpec], seed: int, cap: int | None,
                shape: Shape = Shape()) -> Simulation:
    world = World(base, seed, shape.ranges)
    world.review_site = shape.sparse
    benign_ratings(world)
    newcomers(world)
    if not world.review_site:
        benign_catalog(world)
    if shape.benign == "full":
        benign_crowds(world)
    for spec in attacks:
        FAMILIES[spec.family](world, spec)
    contaminate(world, shape.contamination)
    if not world.review_site:
        clicks_from_ratings(world)
        browsers(world)
        benign_queries(world)
    return _finalize(world, cap, shape)


def _finalize(world: World, cap: int | None, shape: Shape = Shape()) -> Simulation:
    rng = world.rng("finalize")
    events, ts, labels = _rows_as_events(world)
    generated = len(events)
    if cap and len(events) > cap:
        # Trim what matters least: benign clicks and queries first, anything but listings if need be.
        movable = np.array([event["type"] != "catalog_edit" for event in events])
        benign = movable & (labels == BENIGN)
        pool = np.flatnonzero(benign) if benign.sum() >= len(events) - cap else np.flatnonzero(movable)
        drop = rng.choice(pool, min(len(pool), len(events) - cap), replace=False)
        keep = np.ones(len(events), bool)
        keep[drop] = False
        events, ts, labels = [e for e, k in zip(events, keep) if k], ts[keep], labels[keep]
    # Within a second, actors come in random order (never grouped by label) while each actor's own events
    # keep the order they were made in, as a log with sub-second order would show them.
    codes: dict[tuple[str, str], int] = {}
    actor_code = np.array([codes.setdefault(_actor(event), len(codes)) for event in events], dtype=np.uint64)
    salt = rng.integers(1, 1 << 62, dtype=np.uint64)
    with np.errstate(over="ignore"):
        shuffle = (actor_code + salt) * np.uint64(0x9E3779B97F4A7C15) ^ ts.astype(np.uint64) * np.uint64(
            0xC2B2AE3D27D4EB4F)
        shuffle = (shuffle ^ (shuffle >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
    order = np.lexsort((np.arange(len(ts)), shuffle, ts))
    if shape.timestamps == "none":
        # One timestamp for all, and a random order: the order of a file must not stand in for time.
        order = world.rng("finalize", "no time").permutation(len(ts))
        for event in events:
            event["ts"] = world.t0
    elif shape.timestamps == "random":
        # Dates that carry nothing (a data set whose dates were lost or scrambled): each event at a time drawn
        # uniformly over the span, in time order; no burst, no order of arrival, no account age survives.
        drawn = world.rng("finalize", "random time").integers(world.t0, world.t1 + 1, len(ts))
        order = np.argsort(drawn, kind="stable")
        for event, at in zip(events, drawn.tolist()):
            event["ts"] = at
    events, labels = [events[i] for i in order], labels[order]
    for event, event_id in zip(events, world.ids.mint("event", len(events))):
        event["event_id"] = event_id
    return Simulation(events, _truth(world, events, labels, generated, shape))


def _rows_as_events(world: World) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    users, items = np.array(world.user_ids, dtype=object), np.array(world.item_ids, dtype=object)
    r, c = world.ratings, world.clicks
    events: list[dict[str, Any]] = []
    for t, u, i, stars, text in zip(r["ts"].tolist(), users[r["user"]].tolist(), items[r["item"]].tolist(),
                                    r["rating"].tolist(), r["text"].tolist()):
        event = {"type": "rating", "event_id": None, "ts": t, "user_id": u, "item_id": i, "rating": stars}
        if text is not None:
            event["text"] = text
        events.append(event)
    sessions = np.array(world.ids.mint("session", world.n_sessions) + [None], dtype=object)
    for t, u, i, s in zip(c["ts"].tolist(), users[c["user"]].tolist(), items[c["item"]].tolist(),
                          sessions[c["session"]].tolist()):  # session -1 picks the trailing None
        event = {"type": "click", "event_id": None, "ts": t, "user_id": u, "item_id": i}
        if s is not None:
            event["session_id"] = s
        events.append(event)
    events += [doc for _, _, doc in world.docs]
    ts = np.r_[r["ts"], c["ts"], [t for t, _, _ in world.docs]].astype(np.int64)
    labels = np.r_[r["label"], c["label"], [label for _, label, _ in world.docs]].astype(np.int64)
    return events, ts, labels


def _actor(event: dict[str, Any]) -> tuple[str, str]:
    kind = event["type"]
    if kind in ("rating", "click"):
        return "user", event["user_id"]
    return ("seller", event["seller_id"]) if kind == "catalog_edit" else ("client", event["client_id"])


def _truth(world: World, events: list[dict[str, Any]], labels: np.ndarray, generated: int,
           shape: Shape = Shape()) -> dict[str, Any]:
    ids_of = {"user": world.user_ids, "seller": world.seller_ids, "client": world.client_ids}
    by_type: dict[str, Counter] = defaultdict(Counter)
    actors: dict[str, set[str]] = {"user": set(), "seller": set(), "client": set()}
    items: set[str] = set()
    active: dict[int, set[str]] = {record.index: set() for record in world.attacks}
    for event, label in zip(events, labels.tolist()):
        by_type[event["type"]]["benign" if label == BENIGN else "malicious"] += 1
        kind, actor = _actor(event)
        actors[kind].add(actor)
        if "item_id" in event:
            items.add(event["item_id"])
        if label != BENIGN:
            active[label].add(actor)

    attacks = []
    for record in world.attacks:
        # Entities that ended up with no event (trimmed by --max-events) cannot be caught: leave them out.
        ids = [ids_of[record.kind][i] for i in record.entities]
        entities = [entity for entity in ids if entity in active[record.index]]
        event_ids = [events[i]["event_id"] for i in np.flatnonzero(labels == record.index)]
        attacks.append({
            "id": f"a{record.index}", "family": record.family, "intent": record.intent,
            "entity_kind": record.kind, "entities": {record.kind: entities},
            "target_items": [world.item_ids[i] for i in record.targets],
            "window": list(record.window), "params": record.params, "details": record.details,
            "n_events": len(event_ids), "event_ids": event_ids})

    malicious = {kind: set() for kind in actors}
    for attack in attacks:
        malicious[attack["entity_kind"]].update(attack["entities"][attack["entity_kind"]])
    targets = {item for attack in attacks for item in attack["target_items"]}
    n_malicious = int((labels != BENIGN).sum())
    benign_groups = []
    for group in world.benign_groups:
        users = [world.user_ids[u] for u in group["users"]]
        benign_groups.append({"kind": group["kind"], "users": [u for u in users if u in actors["user"]],
                              "items": [world.item_ids[i] for i in group["items"]],
                              "window": list(group["window"]), "params": group["params"]})
    return {
        "version": TRUTH_VERSION, "base": world.base.name, "seed": world.seed, "events_file": "events.jsonl",
        "shape": {"benign": shape.benign, "ranges": shape.ranges, "contamination": shape.contamination,
                  "timestamps": shape.timestamps, "sparse": shape.sparse, "generous": shape.generous},
        "time_range": [int(events[0]["ts"]), int(events[-1]["ts"])] if events else [0, 0],
        "totals": {
            "lines": len(events), "events": len(events), "generated_events": generated,
            "benign_events": len(events) - n_malicious, "malicious_events": n_malicious,
            "by_type": {kind: {"benign": counts["benign"], "malicious": counts["malicious"]}
                        for kind, counts in sorted(by_type.items())},
            "entities": {**{kind: {"total": len(ids), "malicious": len(malicious[kind])}
                            for kind, ids in actors.items()},
                         "item": {"total": len(items), "targets": len(targets)}},
        },
        "attacks": attacks,
        "benign_groups": benign_groups,
        # Benign heavy API clients and their kind, for figures per kind (none of them is malicious).
        "heavy_clients": {world.client_ids[c]: kind for c, kind in world.heavy_clients.items()},
    }
