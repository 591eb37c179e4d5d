"""Group detectors on MovieLens-100K with planted attacks: recall, precision, benign quarantine, cost.

    python benchmarks/groups.py                      # all scenarios, group detectors + FRAUDAR reference
    python benchmarks/groups.py --scenario streams   # only the timed streams
    python benchmarks/groups.py --scenario no_time   # only the one-timestamp collusion set
    python benchmarks/groups.py --scenario simulator # only the project simulator's streams

Until `shillguard simulate` exists this plants its own labelled attacks into the real MovieLens stream
(found via $SHILLGUARD_MOVIELENS, default <project root>/../shared/data/movielens-100k; never copied):
review bombing by thin new accounts, a click farm acting in lockstep, camouflaged copy attacks (fake profiles
copied from real users, one and three targets), a slow sparse ring (the case FRAUDAR misses), and a
collusive-spammer set with no usable time (every event at one timestamp, a third of the reviewers in
groups), the stand-in for the held-out Amazon set, and a harder variant of it (smaller groups on real
products). Ids are opaque random tokens for real and fake alike, and
all timestamps are integer seconds. Benign clicks are synthesised around real ratings (a click on the item
before rating it, browsing of popular items), so that clicks alone do not betray the farm.

Everything runs through `detectors.pipeline.Pipeline` with `DecisionStage`, in micro-batches of 2,000
events, then `flush` (whose empty tick makes the graph detectors search what is left). Costs are CPU time
per detector (the machine is shared; wall time is printed for the whole pipeline beside it). The
project's simulator, when present, adds its own streams (`sim_*`): review bombing, click farms and
camouflaged copy attacks at its defaults.

FRAUDAR, batch, via `rgmining-fraudar` (`pip install rgmining-fraudar`; a benchmark-only dependency), runs on
the same events as one static graph: users of its top `--fraudar-blocks` blocks are its flags.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.decision import DecisionStage  # noqa: E402
from detectors.pipeline import Pipeline  # noqa: E402


def movielens_dir() -> Path:
    return Path(os.environ.get("SHILLGUARD_MOVIELENS", ROOT.parent / "shared" / "data" / "movielens-100k"))


def load_movielens() -> np.ndarray:
    """(user, item, rating, ts) rows of u.data, sorted by time."""
    path = movielens_dir() / "u.data"
    if not path.exists():
        raise SystemExit(f"MovieLens-100K not found at {path}: set SHILLGUARD_MOVIELENS")
    data = np.loadtxt(path, dtype=np.int64)
    return data[np.argsort(data[:, 3], kind="stable")]


@dataclass
class Stream:
    events: list[dict] = field(default_factory=list)
    fake_users: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # family -> users
    targets: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))     # family -> items

    def lines(self) -> list[bytes]:
        self.events.sort(key=lambda e: e["ts"])
        return [orjson.dumps(e) for e in self.events]

    @property
    def all_fakes(self) -> set[str]:
        return set().union(*self.fake_users.values()) if self.fake_users else set()


class Opaque:
    """Random tokens for every id, real or fake, so that ids carry no label."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.map: dict[tuple[str, object], str] = {}

    def __call__(self, kind: str, key: object) -> str:
        token = self.map.get((kind, key))
        if token is None:
            token = self.map[(kind, key)] = kind[0] + self.rng.bytes(6).hex()
        return token

    def new(self, kind: str) -> str:
        return self(kind, ("new", len(self.map)))


def _rating(stream: Stream, user: str, item: str, rating: int, ts: float) -> None:
    stream.events.append({"type": "rating", "event_id": secrets.token_hex(8), "ts": int(ts),
                          "user_id": user, "item_id": item, "rating": int(rating)})


def _click(stream: Stream, user: str, item: str, ts: float, session: str) -> None:
    stream.events.append({"type": "click", "event_id": secrets.token_hex(8), "ts": int(ts),
                          "user_id": user, "item_id": item, "session_id": session})


def benign(data: np.ndarray, ids: Opaque, rng: np.random.Generator, clicks: bool = True) -> Stream:
    stream = Stream()
    popular = _popular_items(data, 300)
    for user, item, rating, ts in data:
        uid, iid = ids("user", user), ids("item", item)
        session = ids("session", (user, ts // 3600))
        if clicks:
            _click(stream, uid, iid, ts - rng.integers(10, 300), session)
            if rng.random() < 0.5:
                _click(stream, uid, ids("item", rng.choice(popular)), ts - rng.integers(10, 600), session)
        _rating(stream, uid, iid, rating, ts)
    return stream


def _popular_items(data: np.ndarray, n: int) -> np.ndarray:
    items, counts = np.unique(data[:, 1], return_counts=True)
    return items[np.argsort(-counts)[:n]]


def _niche_items(data: np.ndarray, low: int, high: int, rng: np.random.Generator, n: int) -> np.ndarray:
    items, counts = np.unique(data[:, 1], return_counts=True)
    pool = items[(counts >= low) & (counts <= high)]
    return rng.choice(pool, n, replace=False)


def plant_review_bomb(stream: Stream, data: np.ndarray, ids: Opaque, rng: np.random.Generator,
                      at: float, accounts: int = 50) -> None:
    """Thin new accounts 1-star a popular, well-liked item within one hour."""
    items, counts = np.unique(data[:, 1], return_counts=True)
    means = np.array([data[data[:, 1] == i, 2].mean() for i in items[np.argsort(-counts)[:100]]])
    candidates = items[np.argsort(-counts)[:100]][means >= 3.8]
    target = ids("item", rng.choice(candidates))
    popular = _popular_items(data, 200)
    stream.targets["review_bomb"].add(target)
    for _ in range(accounts):
        user = ids.new("user")
        stream.fake_users["review_bomb"].add(user)
        start = at + rng.integers(0, 3600)
        for k in range(rng.integers(0, 4)):  # a little filler, as thin accounts have
            _rating(stream, user, ids("item", rng.choice(popular)), rng.integers(3, 6), start + 30 * k)
        _rating(stream, user, target, 1, start + rng.integers(60, 600))


def plant_click_farm(stream: Stream, data: np.ndarray, ids: Opaque, rng: np.random.Generator,
                     at: float, bots: int = 40, targets: int = 12) -> None:
    """Aged bot accounts (a few ratings over the previous month) click the same niche items in scheduled
    runs: three runs over two days, each bot's session starting within 20 minutes of the run."""
    target_ids = [ids("item", i) for i in _niche_items(data, 5, 40, rng, targets)]
    stream.targets["click_farm"].update(target_ids)
    popular = _popular_items(data, 200)
    runs = [at + k * 16 * 3600 for k in range(3)]
    for _ in range(bots):
        user = ids.new("user")
        stream.fake_users["click_farm"].add(user)
        for k in range(rng.integers(3, 12)):
            _rating(stream, user, ids("item", rng.choice(popular)), rng.integers(3, 6),
                    at - rng.integers(1, 30 * 86400))
        for run in runs:
            ts = run + rng.integers(0, 1200)
            session = ids.new("session")
            clicks = list(target_ids) + [ids("item", i) for i in rng.choice(popular, rng.integers(0, 5))]
            for item in rng.permutation(clicks):
                ts += rng.integers(5, 60)
                _click(stream, user, item, ts, session)


def plant_copy_attack(stream: Stream, data: np.ndarray, ids: Opaque, rng: np.random.Generator,
                      at: float, family: str, fakes: int = 50, targets: int = 3) -> None:
    """Fake profiles copied from real users (30-60 of a real user's ratings, with that user's ratings),
    each signing up within a three-day campaign and rating the targets 5 at random places in its burst."""
    target_ids = [ids("item", i) for i in _niche_items(data, 3, 25, rng, targets)]
    stream.targets[family].update(target_ids)
    by_user = defaultdict(list)
    for user, item, rating, _ in data:
        by_user[user].append((item, rating))
    donors = [u for u, rows in by_user.items() if len(rows) >= 30]
    for _ in range(fakes):
        user = ids.new("user")
        stream.fake_users[family].add(user)
        donor = by_user[rng.choice(donors)]
        copied = [donor[k] for k in rng.choice(len(donor), min(len(donor), rng.integers(30, 61)),
                                                  replace=False)]
        profile = [(ids("item", i), r) for i, r in copied] + [(t, 5) for t in target_ids]
        ts = at + rng.integers(0, 3 * 86400)
        session = ids.new("session")
        for item, rating in rng.permutation(np.array(profile, dtype=object)):
            ts += rng.integers(20, 120)
            _click(stream, user, item, ts - 5, session)
            _rating(stream, user, item, rating, ts)


def plant_sparse_ring(stream: Stream, data: np.ndarray, ids: Opaque, rng: np.random.Generator,
                      at: float, accounts: int = 50, items: int = 50, density: float = 0.1) -> None:
    """A slow ring: a 50 x 50 block at density 0.1 spread over 30 days, members camouflaged with copied
    ratings (the case where FRAUDAR's F1 is near 0)."""
    target_ids = [ids("item", i) for i in _niche_items(data, 3, 40, rng, items)]
    stream.targets["sparse_ring"].update(target_ids)
    popular = _popular_items(data, 300)
    for _ in range(accounts):
        user = ids.new("user")
        stream.fake_users["sparse_ring"].add(user)
        for item in rng.choice(popular, 20, replace=False):
            _rating(stream, user, ids("item", item), rng.integers(2, 6), at + rng.integers(0, 30 * 86400))
        for item in np.array(target_ids)[rng.random(items) < density]:
            _rating(stream, user, item, 5, at + rng.integers(0, 30 * 86400))


def timed_streams(rng: np.random.Generator) -> dict[str, Stream]:
    data = load_movielens()
    span = data[-1, 3] - data[0, 3]
    out = {}
    for name in ("review_bomb", "click_farm", "camouflage", "camouflage_1", "sparse_ring"):
        ids = Opaque(rng)
        stream = benign(data, ids, rng)
        at = float(data[0, 3] + span * rng.uniform(0.3, 0.7))
        if name == "review_bomb":
            plant_review_bomb(stream, data, ids, rng, at)
        elif name == "click_farm":
            plant_click_farm(stream, data, ids, rng, at)
        elif name == "camouflage":
            plant_copy_attack(stream, data, ids, rng, at, name, targets=3)
        elif name == "camouflage_1":
            plant_copy_attack(stream, data, ids, rng, at, name, targets=1)
        else:
            plant_sparse_ring(stream, data, ids, rng, at)
        out[name] = stream
    return out


def simulator_streams(seed: int) -> dict[str, Stream]:
    """The project's own labelled generator (`shillguard simulate`), when present: one stream per family,
    its defaults (about 5% of users per attack, one target, an hour's burst) and a ten-day spread."""
    try:
        from simulator.build import Shape, build, plan_attacks
        from simulator.movielens import load_movielens as load_base
    except ImportError:
        return {}
    base = load_base(movielens_dir())
    out = {}
    for family in ("review_bomb", "click_farm", "camouflage"):
        for spread in ("burst", "days"):
            # The benign traffic these figures were first measured on (no benign crowds): the crowds have
            # benchmarks/generalisation.py.
            sim = build(base, plan_attacks(family, spread=spread), seed=seed, shape=Shape(benign="base"))
            stream = Stream(events=sim.events)
            for attack in sim.truth["attacks"]:
                stream.fake_users[attack["family"]].update(attack["entities"].get("user", []))
                stream.targets[attack["family"]].update(attack["target_items"])
            out[f"sim_{family}_{spread}"] = stream
    return out


def no_time_collusion(rng: np.random.Generator, keep_per_user: int = 15, spam_share: float = 0.35
                      ) -> Stream:
    """The Amazon stand-in: a sparse benign review graph (each MovieLens user keeps `keep_per_user` random
    ratings) plus collusive groups, a third of all reviewers, each group rating its own products 4-5
    stars (each member most of them) with a few camouflage reviews; some spammers join two groups. Every
    event carries the same timestamp, so only the graph can tell."""
    data = load_movielens()
    ids = Opaque(rng)
    stream = Stream()
    ts = 1_300_000_000
    for user in np.unique(data[:, 0]):
        rows = data[data[:, 0] == user]
        for item, rating in rows[rng.choice(len(rows), min(keep_per_user, len(rows)), replace=False)][:, 1:3]:
            _rating(stream, ids("user", user), ids("item", item), rating, ts)
    n_benign = len(np.unique(data[:, 0]))
    n_spam = int(spam_share / (1 - spam_share) * n_benign)
    popular = _popular_items(data, 500)
    spammers = [ids.new("user") for _ in range(n_spam)]
    stream.fake_users["collusion"].update(spammers)
    pool = list(rng.permutation(spammers))
    while pool:
        size = int(min(len(pool), max(3, rng.geometric(1 / 12))))
        members, pool = pool[:size], pool[size:]
        if rng.random() < 0.2 and spammers:  # a few spammers work for two groups
            members += list(rng.choice(spammers, max(1, size // 5), replace=False))
        products = [ids.new("item") for _ in range(rng.integers(3, 12))]
        products += [ids("item", i) for i in rng.choice(popular, rng.integers(0, 3))]  # real products too
        stream.targets["collusion"].update(products)
        for member in members:
            for product in products:
                if rng.random() < 0.75:
                    _rating(stream, member, product, rng.integers(4, 6), ts)
    for member in spammers:  # camouflage
        for item in rng.choice(popular, rng.integers(0, 6), replace=False):
            _rating(stream, member, ids("item", item), rng.integers(1, 6), ts)
    return stream


def no_time_real_products(rng: np.random.Generator, keep_per_user: int = 8, spam_share: float = 0.38,
                          mean_size: int = 6) -> Stream:
    """A harder Amazon stand-in: sparser benign reviewers (8 ratings each), 38% spammers in smaller groups
    (two members and up, six on average), each group rating 3-11 *real* products (which benign reviewers
    rate too) 4-5 stars, plus camouflage. Pairs and triples sit below what a scan statistic can separate
    from chance in a graph this size, so this bounds what the graph alone can do."""
    data = load_movielens()
    ids = Opaque(rng)
    stream = Stream()
    ts = 1_300_000_000
    for user in np.unique(data[:, 0]):
        rows = data[data[:, 0] == user]
        for item, rating in rows[rng.choice(len(rows), min(keep_per_user, len(rows)), replace=False)][:, 1:3]:
            _rating(stream, ids("user", user), ids("item", item), rating, ts)
    n_benign = len(np.unique(data[:, 0]))
    n_spam = int(spam_share / (1 - spam_share) * n_benign)
    items, popular = np.unique(data[:, 1]), _popular_items(data, 500)
    spammers = [ids.new("user") for _ in range(n_spam)]
    stream.fake_users["collusion"].update(spammers)
    pool = list(rng.permutation(spammers))
    while pool:
        size = int(min(len(pool), max(2, rng.geometric(1 / mean_size))))
        members, pool = pool[:size], pool[size:]
        products = [ids("item", i) for i in rng.choice(items, rng.integers(3, 12), replace=False)]
        stream.targets["collusion"].update(products)
        for member in members:
            for product in products:
                if rng.random() < 0.75:
                    _rating(stream, member, product, rng.integers(4, 6), ts)
    for member in spammers:  # camouflage
        for item in rng.choice(popular, rng.integers(0, 6), replace=False):
            _rating(stream, member, ids("item", item), rng.integers(1, 6), ts)
    return stream


# -- running ---------------------------------------------------------------------------------------------
def group_detectors() -> list:
    from detectors.dense_block import DenseBlockDetector
    found = [DenseBlockDetector()]
    for module, cls in (("detectors.lockstep", "LockstepDetector"), ("detectors.midas", "MidasDetector"),
                        ("detectors.coordination", "CoordinationDetector"), ("detectors.copies", "CopyDetector")):
        try:
            found.append(getattr(__import__(module, fromlist=[cls]), cls)())
        except ImportError:
            pass
    return found


def profile_detectors() -> list:
    try:
        from detectors.profiles import ProfileDetector  # being written concurrently
    except ImportError:
        return []
    return [ProfileDetector()]


class _Timed:
    """A detector whose CPU time is counted: the machine is shared, so wall time overstates a detector's
    own cost (the whole pipeline's wall-clock rate is printed beside the CPU one)."""

    def __init__(self, detector):
        self.detector, self.name, self.cpu, self.per_batch = detector, detector.name, 0.0, []

    def observe(self, events, now):
        started = time.process_time()
        signals = self.detector.observe(events, now)
        spent = time.process_time() - started
        self.cpu += spent
        if events:
            self.per_batch.append(spent / len(events))
        return signals


@dataclass
class Result:
    flagged_users: set[str]
    flagged_items: set[str]
    quarantined: set[str]      # event ids quarantined or retracted
    seconds: float
    cpu_seconds: float
    detector_cpu: dict[str, float]
    batch_cost_p99: dict[str, float]  # CPU per event of a batch, 99th percentile over batches


def run(stream: Stream, detectors: list, batch: int = 2000) -> Result:
    lines = stream.lines()
    timed = [_Timed(d) for d in detectors]
    pipeline = Pipeline(timed, DecisionStage())
    bad: set[str] = set()
    started, cpu = time.perf_counter(), time.process_time()
    for k in range(0, len(lines), batch):
        step = pipeline.process(lines[k:k + batch])
        bad.update(o.event.event_id for o in step.outcomes if o.verdict != "clean")
    # End of input: the pipeline's flush gives each detector its empty tick, then releases what is held.
    bad.update(o.event.event_id for o in pipeline.flush().outcomes if o.verdict != "clean")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    flags = pipeline.decision.flags()
    return Result({f.id for f in flags if f.kind == "user"}, {f.id for f in flags if f.kind == "item"}, bad,
                  seconds, cpu, {t.name: t.cpu for t in timed},
                  {t.name: float(np.percentile(t.per_batch, 99)) if t.per_batch else 0.0 for t in timed})


def fraudar_reference(stream: Stream, blocks: int) -> set[str]:
    try:
        from fraudar.export.greedy import detectMultiple, logWeightedAveDegree
    except ImportError:
        return set()
    from scipy import sparse
    edges = [e for e in stream.events if e["type"] in ("rating", "click")]
    users = sorted({e["user_id"] for e in edges})
    items = sorted({e["item_id"] for e in edges})
    uix = {u: k for k, u in enumerate(users)}
    iix = {i: k for k, i in enumerate(items)}
    pairs = {(uix[e["user_id"]], iix[e["item_id"]]) for e in edges}
    rows, cols = zip(*pairs)
    M = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(users), len(items))).tocsc()
    import io
    import contextlib
    with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
        found = detectMultiple(M, logWeightedAveDegree, blocks)
    return {users[r] for (row_set, _), _ in found for r in row_set}


def metrics(stream: Stream, flagged: set[str], result: Result | None = None) -> dict:
    fakes = stream.all_fakes
    tp = len(flagged & fakes)
    out = {"precision": tp / len(flagged) if flagged else 1.0, "recall": tp / len(fakes) if fakes else 1.0,
           "flagged": len(flagged)}
    out["f1"] = 2 * out["precision"] * out["recall"] / max(out["precision"] + out["recall"], 1e-12)
    if result is not None:
        targets = set().union(*stream.targets.values())
        out["targets"] = len(result.flagged_items & targets) / len(targets)
        benign_events = [e["event_id"] for e in stream.events if e.get("user_id") not in fakes]
        out["benign_quarantined"] = sum(e in result.quarantined for e in benign_events) / len(benign_events)
        out["events_per_s"] = len(stream.events) / result.seconds
        out["events_per_cpu_s"] = len(stream.events) / result.cpu_seconds
        out["events"] = len(stream.events)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=["all", "streams", "simulator", "no_time"], default="all")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fraudar-blocks", type=int, default=5)
    parser.add_argument("--no-fraudar", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    scenarios: dict[str, Stream] = {}
    if args.scenario in ("all", "streams"):
        scenarios.update(timed_streams(rng))
    if args.scenario in ("all", "simulator"):
        scenarios.update(simulator_streams(args.seed))
    if args.scenario in ("all", "no_time"):
        scenarios["no_time_collusion"] = no_time_collusion(rng)
        scenarios["no_time_real_products"] = no_time_real_products(rng)
    rows = []
    for name, stream in scenarios.items():
        configs = {"groups": group_detectors()}
        if profile_detectors():
            configs["profile"] = profile_detectors()
            configs["profile+groups"] = profile_detectors() + group_detectors()
        for config, detectors in configs.items():
            result = run(stream, detectors)
            m = metrics(stream, result.flagged_users, result)
            rows.append((name, config, m))
            print(f"{name:18s} {config:15s} recall {m['recall']:.3f} precision {m['precision']:.3f} "
                  f"f1 {m['f1']:.3f} targets {m['targets']:.2f} benign_q {m['benign_quarantined']:.4f} "
                  f"flagged {m['flagged']} events {m['events']} {m['events_per_s']:.0f} ev/s wall, "
                  f"{m['events_per_cpu_s']:.0f} ev/s cpu (whole pipeline)", flush=True)
            for det, spent in result.detector_cpu.items():
                print(f"    {det:14s} {1e6 * spent / m['events']:7.1f} us/event cpu mean, "
                      f"p99 batch {1e6 * result.batch_cost_p99.get(det, 0):7.1f} us/event", flush=True)
        if not args.no_fraudar:
            started = time.perf_counter()
            flagged = fraudar_reference(stream, args.fraudar_blocks)
            m = metrics(stream, flagged)
            rows.append((name, "fraudar(batch)", m))
            print(f"{name:18s} {'fraudar(batch)':15s} recall {m['recall']:.3f} precision {m['precision']:.3f} "
                  f"f1 {m['f1']:.3f} flagged {m['flagged']} ({time.perf_counter() - started:.1f}s)", flush=True)
    print("\n| scenario | configuration | user recall | user precision | user F1 | targets flagged | "
          "benign quarantined |\n|---|---|---|---|---|---|---|")
    for name, config, m in rows:
        print(f"| {name} | {config} | {m['recall']:.2f} | {m['precision']:.2f} | {m['f1']:.2f} | "
              f"{m.get('targets', float('nan')):.2f} | {m.get('benign_quarantined', float('nan')):.4f} |")


if __name__ == "__main__":
    main()
