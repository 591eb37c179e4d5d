"""A contaminated population: a share F of all accounts are spammers of mixed families, many targets.

Real review sites are not a clean population around a few attackers: in the labelled Yelp sets of Rayana
& Akoglu 2015 (KDD) some 10-14% of the reviews are filtered as spam, and the held-out review set this
project is measured on has labelled spammers for over a third of its accounts. Detectors whose baselines assume a clean population
(robust z-scores, degree statistics, "crowds of fresh accounts are attackers") break there, and
`--contamination F` builds that case: after the benign population is made, spammers are added until they
are a share F of the accounts (every user with an event, browse-only visitors included; planted attacks
count towards F). A share of them, drawn per stream (`contamination.ring_share`), sits in loose collusive
rings (simulator.collusion); the rest is split by a Dirichlet(2, 2, 2) draw among profile-injection attacks
(random, average, bandwagon, segment; a quarter of them nukes), camouflaged copies of real profiles and
co-visitation groups, each attack of 5-60 accounts with one target of its own.

>>> from simulator.synthetic import synthetic_base
>>> from simulator.benign import benign_ratings
>>> world = World(synthetic_base(n_users=150, n_items=200, n_ratings=6_000, seed=1), seed=0)
>>> world.review_site = True
>>> benign_ratings(world)
>>> contaminate(world, 0.35)
>>> spam = {u for a in world.attacks for u in a.entities}
>>> round(len(spam) / (len(spam) + 150), 2)
0.35
"""

from __future__ import annotations

import numpy as np

from simulator.benign import BROWSER_SHARE
from simulator.camouflage import camouflage_attack
from simulator.collusion import collusion_attack
from simulator.covisit import covisit_attack
from simulator.shilling import average_attack, bandwagon_attack, random_attack, segment_attack
from simulator.world import BENIGN, AttackSpec, World

MAX_SHARE = 0.5
SHILLING = {"random": random_attack, "average": average_attack, "bandwagon": bandwagon_attack,
            "segment": segment_attack}
NUKE_SHARE = 0.25
MIN_ATTACK = 5


def benign_accounts(world: World) -> int:
    """Benign users with an event so far, and the browse-only visitors still to come."""
    users = np.r_[world.ratings["user"][world.ratings["label"] == BENIGN],
                  world.clicks["user"][world.clicks["label"] == BENIGN]]
    visitors = 0 if world.review_site else max(1, int(BROWSER_SHARE * world.n_base_users))
    return len(np.unique(users)) + visitors


def contaminate(world: World, share: float) -> None:
    if not 0.0 <= share <= MAX_SHARE:
        raise ValueError(f"contamination must be between 0 and {MAX_SHARE}, not {share}")
    if share == 0.0:
        return
    rng = world.rng("contamination")
    planted = {u for attack in world.attacks if attack.kind == "user" for u in attack.entities}
    budget = int(round(share / (1.0 - share) * benign_accounts(world))) - len(planted)
    if budget <= 0:
        return
    ring_share = world.draw(rng, "contamination.ring_share")
    rest = rng.dirichlet([2.0, 2.0, 2.0]) * (1.0 - ring_share)
    shares = {"collusion": ring_share, "shilling": rest[0], "camouflage": rest[1], "covisit": rest[2]}
    counts = {name: int(np.floor(budget * value)) for name, value in shares.items()}
    counts["collusion"] += budget - sum(counts.values())  # the rounding remainder

    for kind in ("shilling", "camouflage"):
        left = counts[kind]
        while left > 0:
            size = min(world.draw(rng, "contamination.attack_size"), left)
            if left - size < MIN_ATTACK:
                size = left
            left -= size
            family = str(rng.choice(list(SHILLING))) if kind == "shilling" else "camouflage"
            intent = "nuke" if rng.random() < NUKE_SHARE else "push"
            spec = AttackSpec(family, intent, size=size, accounts=size,
                              filler=world.draw(rng, "contamination.filler"),
                              spread_seconds=int(world.draw(rng, "contamination.spread_hours") * 3_600))
            (SHILLING[family] if kind == "shilling" else camouflage_attack)(world, spec)
    if counts["covisit"]:
        covisit_attack(world, AttackSpec("covisit", accounts=counts["covisit"]))
    if counts["collusion"]:
        collusion_attack(world, AttackSpec("collusion", accounts=counts["collusion"]))
