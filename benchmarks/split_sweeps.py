"""Split extraction sweeps and heavy benign clients: who is flagged, over seeds and parameter ranges.

    python benchmarks/split_sweeps.py [--set tune|report|all] [--detectors extraction,sweep_coverage]

Each stream is `shillguard simulate` on MovieLens-100K (or the synthetic base) with a split sweep, two
single-client sweeps (`sweep`) and the benign heavy API clients the simulator draws per stream, or a
benign-only stream; the client detectors run over it (micro-batches of 2048, as replay) and their scores
are fused as the decision stage does (noisy-OR, flag at 0.5). Printed per stream and in total: split-sweep
clients flagged / total, single sweepers flagged / total, benign clients flagged (heavy ones by kind), and
each detector's CPU cost per event of the whole stream. The `tune` set is what the parameters were chosen
on; `report` holds other seeds and campaign lengths, never looked at while tuning. `handmade` streams are
built here, not by the simulator: MovieLens ratings in their own order, light apps and heavy clients of
this file's own making, and a sweep of MovieLens' numeric item ids (where id order follows popularity)
split among ten clients at a query every 30 s.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import orjson

from detectors.events import RecQueryEvent, RatingEvent, decode_event
from simulator.build import build, plan_attacks
from simulator.cli import load_base
from streams.assembly import detector_class

DAY = 86_400


@dataclass(frozen=True)
class Stream:
    name: str
    data: str            # movielens, synthetic, or handmade
    attacks: str         # simulate's --attacks
    spread: str
    seed: int


TUNE = ([Stream(f"ml-hours-{s}", "movielens", "split_sweep,sweep", "hours", s) for s in (1, 2, 3, 4)]
        + [Stream("ml-days-5", "movielens", "split_sweep", "days", 5)]
        + [Stream(f"ml-benign-{s}", "movielens", "none", "hours", s) for s in (1, 2, 3)]
        # A first report set, looked at while tuning (a partner site of new listings was flagged there):
        # it is tuning data now.
        + [Stream(f"ml-{spread}-{s}", "movielens", "split_sweep,sweep", spread, s)
           for spread, seeds in (("burst", (101, 102, 103)), ("days", (104, 105, 106, 107))) for s in seeds]
        + [Stream(f"synthetic-days-{s}", "synthetic", "split_sweep,sweep", "days", s) for s in (201, 202)]
        + [Stream(f"ml-benign-{s}", "movielens", "none", "hours", s) for s in (108, 109)]
        + [Stream("ml-all-110", "movielens", "all", "days", 110)]
        + [Stream(f"handmade-{s}", "handmade", "split_sweep", "-", s) for s in (301, 302)])
# Two more report sets were looked at and became tuning data: seeds 401-416 (sweeps split 19 ways in id
# order were found 15 of 19 times: the whole catalogue is tested as well as its tail since), then the same
# streams with seeds 901-916 (a sweep split 19 ways and padded with 41% popular seeds was found 3 of 19
# times: a member's p-value is the exact sum of binomials since, no longer a Poisson bound).
SECOND = ([Stream(f"ml-{spread}-{s}", "movielens", "split_sweep,sweep", spread, s)
           for spread, seeds in (("burst", (401, 402, 403)), ("days", (404, 405, 406, 407))) for s in seeds]
          + [Stream(f"synthetic-{spread}-{s}", "synthetic", "split_sweep,sweep", spread, s)
             for spread, s in (("burst", 408), ("days", 409))]
          + [Stream(f"ml-benign-{s}", "movielens", "none", "days", s) for s in (410, 411, 412)]
          + [Stream(f"synthetic-benign-{s}", "synthetic", "none", "days", s) for s in (413,)]
          + [Stream(f"ml-all-{s}", "movielens", "all", "days", s) for s in (414,)]
          + [Stream(f"handmade-{s}", "handmade", "split_sweep", "-", s) for s in (415, 416)])


def _shifted(streams: list[Stream], by: int) -> list[Stream]:
    return [Stream(stream.name.rsplit("-", 1)[0] + f"-{stream.seed + by}", stream.data, stream.attacks,
                   stream.spread, stream.seed + by) for stream in streams]


TUNE += SECOND + _shifted(SECOND, 500)
# Never looked at while tuning: other seeds, campaigns of 2-12 hours (burst) and 3-21 days (days) where
# the first tuning streams were mostly 12 hours to 3 days (hours), the synthetic catalogue, every family.
REPORT = _shifted(SECOND, 1000)


def simulated(stream: Stream) -> tuple[list, dict[str, str], dict[str, str]]:
    """Events (decoded), malicious clients -> family, benign heavy clients -> kind."""
    base = load_base(stream.data, stream.seed)
    sim = build(base, plan_attacks(stream.attacks, spread=stream.spread), seed=stream.seed)
    events = [decode_event(orjson.dumps(event)) for event in sim.events]
    malicious = {client: attack["family"] for attack in sim.truth["attacks"]
                 for client in attack["entities"].get("client", [])}
    return events, malicious, dict(sim.truth.get("heavy_clients", {}))


def handmade(seed: int) -> tuple[list, dict[str, str], dict[str, str]]:
    """MovieLens ratings as they are, with clients of this function's making (not the simulator's)."""
    from simulator.movielens import default_movielens_dir

    rng = np.random.default_rng(seed)
    raw = np.loadtxt(default_movielens_dir() / "u.data", dtype=np.int64)
    raw = raw[np.argsort(raw[:, 3], kind="stable")]
    user, item, ts = raw[:, 0], raw[:, 1], raw[:, 3]
    events: list = [RatingEvent(event_id=f"r{n}", ts=float(t), user_id=str(u), item_id=str(i), rating=float(r))
                    for n, (u, i, r, t) in enumerate(raw.tolist())]
    t0, t1 = int(ts[0]), int(ts[-1])
    by_user = defaultdict(list)
    for row, u in enumerate(user.tolist()):
        by_user[u].append(row)

    def latest(u: int, t: float, depth: int) -> list[str]:
        rows = [r for r in by_user[u] if ts[r] <= t][-depth:]
        return [str(item[r]) for r in reversed(rows)] or [str(item[by_user[u][0]])]

    queries: list[RecQueryEvent] = []
    n = 0

    def ask(t: float, client: str, seeds: list[str], k: int, u: int | None = None) -> None:
        nonlocal n
        queries.append(RecQueryEvent(event_id=f"q{n}", ts=float(min(t, t1)), client_id=client, k=k,
                                     user_id=None if u is None else str(u), seed_items=seeds))
        n += 1

    # 150 light apps: a query after some ratings, with that user's latest items.
    for row in rng.choice(len(raw), 12_000, replace=False):
        app = int(rng.zipf(1.3)) % 150
        ask(ts[row] + rng.integers(0, 7_200), f"app{app}", latest(int(user[row]), ts[row], int(rng.integers(1, 4))),
            int(rng.choice([10, 25])), int(user[row]))
    # A nightly batch: every user active in the last day, k 100, a query every 2 s.
    for day in range(t0 // DAY + 1, t1 // DAY + 1):
        active = np.unique(user[(ts >= (day - 1) * DAY) & (ts < day * DAY)])
        for j, u in enumerate(active.tolist()):
            ask(day * DAY + 3_600 + 2 * j, "nightly", latest(u, day * DAY, 3), 100, u)
    # A widget on 20% of ratings (the item just rated), a crawler of the 400 most rated items every
    # three days, a "new this week" partner (the newest 40 items first rated in the last 7 days, weekly).
    for row in np.flatnonzero(rng.random(len(raw)) < 0.2):
        ask(ts[row] + 1, "widget", [str(item[row])], 12)
    popular = [str(i) for i in np.argsort(-np.bincount(item))[:400]]
    first_rated = {}
    for i, t in zip(item.tolist(), ts.tolist()):
        first_rated.setdefault(i, t)
    for day in range(t0 // DAY + 2, t1 // DAY + 1, 3):
        for j, i in enumerate(rng.permutation(popular)):
            ask(day * DAY + 7_200 + j, "crawler", [i], 50)
    for day in range(t0 // DAY + 30, t1 // DAY + 1, 7):  # from its second month: the 40 newest each week
        fresh = [str(i) for i, t in first_rated.items() if day * DAY - 7 * DAY <= t < day * DAY][-40:]
        for j, i in enumerate(fresh):
            ask(day * DAY + 10_000 + 20 * j, "partner", [i], 20)
    # The split sweep: every item in numeric id order, contiguous slices to ten clients, a query (one or
    # two seeds) every ~30 s each, two hours' work a day, from the middle of the stream.
    ids = [str(i) for i in range(1, int(item.max()) + 1)]
    start = t0 + (t1 - t0) // 2
    sweepers = {}
    for m, part in enumerate(np.array_split(np.array(ids), 10)):
        client = f"sweeper{m}"
        sweepers[client] = "split_sweep"
        t, pos = start + int(rng.integers(0, 3_600)), 0
        while pos < len(part):
            step = int(rng.integers(1, 3))
            ask(t, client, part[pos:pos + step].tolist(), 50)
            pos += step
            t += int(rng.exponential(30))
            if (t - start) % DAY > 2 * 3_600:
                t = start + ((t - start) // DAY + 1) * DAY + int(rng.integers(0, 3_600))
    events += queries
    events.sort(key=lambda event: event.ts)
    heavy = {"nightly": "batch", "widget": "widget", "crawler": "seo", "partner": "partner"}
    return events, sweepers, heavy


def run(stream: Stream, names: list[str], verbose: bool = False) -> dict:
    events, malicious, heavy = handmade(stream.seed) if stream.data == "handmade" else simulated(stream)
    best: dict[str, dict[str, float]] = defaultdict(dict)
    evidence: dict[tuple[str, str], dict] = {}
    cost = {}
    for name in names:
        detector = detector_class(name)()
        started = time.process_time()
        for start in range(0, len(events), 2048):
            chunk = events[start:start + 2048]
            for signal in detector.observe(chunk, chunk[-1].ts):
                if signal.kind == "client" and signal.score > best[signal.id].get(name, 0.0):
                    best[signal.id][name] = signal.score
                    evidence[signal.id, name] = signal.evidence
        for signal in detector.observe([], events[-1].ts):
            if signal.kind == "client" and signal.score > best[signal.id].get(name, 0.0):
                best[signal.id][name] = signal.score
                evidence[signal.id, name] = signal.evidence
        cost[name] = (time.process_time() - started) / len(events) * 1e6

    def fused(client: str) -> float:
        clean = 1.0
        for score in best.get(client, {}).values():
            clean *= 1.0 - score
        return 1.0 - clean

    flagged = {client for client in best if fused(client) >= 0.5}
    clients = {event.client_id for event in events if event.type == "rec_query"}
    split = {c for c, family in malicious.items() if family == "split_sweep" and c in clients}
    single = {c for c, family in malicious.items() if family == "sweep" and c in clients}
    benign_flagged = sorted(flagged - set(malicious))
    if verbose:
        for client in benign_flagged + sorted(split - flagged):
            print("  ", client, heavy.get(client, malicious.get(client, "light")), dict(best.get(client, {})))
            for name in best.get(client, {}):
                print("     ", name, orjson.dumps(evidence[client, name]).decode()[:900])
    benign_best = max((fused(c) for c in best if c not in malicious), default=0.0)
    return {"stream": stream.name, "events": len(events), "benign_best": benign_best,
            "split": (len(split & flagged), len(split)), "single": (len(single & flagged), len(single)),
            "benign_clients": len(clients - set(malicious)), "benign_flagged": benign_flagged,
            "heavy_flagged": [heavy[c] for c in benign_flagged if c in heavy],
            "heavy": len([c for c in heavy if c in clients]), "cost": cost,
            "by_detector": {name: sum(1 for c in split if best.get(c, {}).get(name, 0) >= 0.5) for name in names}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=["tune", "report", "all"], default="report")
    parser.add_argument("--detectors", default="extraction,sweep_coverage")
    parser.add_argument("--only", default=None, help="comma-separated stream names")
    parser.add_argument("--verbose", action="store_true", help="evidence of benign flags and missed clients")
    args = parser.parse_args()
    streams = {"tune": TUNE, "report": REPORT, "all": TUNE + REPORT}[args.set]
    if args.only:
        streams = [s for s in streams if s.name in args.only.split(",")]
    names = [name.strip() for name in args.detectors.split(",") if name.strip()]
    totals = defaultdict(lambda: [0, 0])
    costs = defaultdict(list)
    print(f"{'stream':<20} {'events':>8} {'split flagged':>14} {'by detector':>28} {'single':>7} "
          f"{'benign flagged, top score':>26}  heavy flagged  " + "  ".join(f"{n} us/ev" for n in names))
    for stream in streams:
        row = run(stream, names, args.verbose)
        for key in ("split", "single"):
            totals[key][0] += row[key][0]
            totals[key][1] += row[key][1]
        totals["benign"][0] += len(row["benign_flagged"])
        totals["benign"][1] += row["benign_clients"]
        totals["heavy"][0] += len(row["heavy_flagged"])
        totals["heavy"][1] += row["heavy"]
        for name, value in row["cost"].items():
            costs[name].append(value)
        by = ", ".join(f"{name} {count}" for name, count in row["by_detector"].items())
        print(f"{row['stream']:<20} {row['events']:>8} {row['split'][0]:>6}/{row['split'][1]:<7} {by:>28} "
              f"{row['single'][0]:>3}/{row['single'][1]:<3} {len(row['benign_flagged']):>6}/{row['benign_clients']:<4} "
              f"{row['benign_best']:>5.2f} "
              f"{','.join(row['heavy_flagged']) or '-':>13}  "
              + "  ".join(f"{row['cost'][n]:>6.2f}" for n in names), flush=True)
    print(f"split-sweep clients flagged: {totals['split'][0]}/{totals['split'][1]}; single sweepers flagged: "
          f"{totals['single'][0]}/{totals['single'][1]}; benign clients flagged: {totals['benign'][0]}/"
          f"{totals['benign'][1]} (heavy API clients: {totals['heavy'][0]}/{totals['heavy'][1]})")
    print("cost per event (us, over whole streams): " + ", ".join(
        f"{name} {min(v):.2f}-{max(v):.2f}" for name, v in costs.items()))


if __name__ == "__main__":
    main()
