"""How far each detector's findings move when it runs on shards of the stream instead of the whole: the
question that decides which detectors a partitioned topology may split, and by what key.

    python benchmarks/detector_sharding.py [--events FILE [--truth TRUTH]] [--n 60000] [--shards 3] [--detectors a,b]

Each detector runs once on the whole stream and once as `--shards` independent instances, each fed the events
of its shard (by actor: the user, seller or client; by item: the rated, clicked or edited item, a query by
its client) with the whole stream's watermark, in the same micro-batches. Printed per detector and key: the
entities it signals at a score of at least 0.5 (the flag threshold's order) on the whole stream and on the
shards, how many both find, and the CPU per event of the whole run against the shards' summed. A detector whose
state is keyed by the shard key and whose baselines are robust to sampling finds the same entities; one that
needs a cross-key view (a user's newness seen from an item shard, ties between users across items) does not.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path
from typing import Any

KEYS = ("actor", "item")
SCORE = 0.5


def shard_key(event: Any, key: str) -> str:
    from detectors.events import ACTOR_FIELD

    if key == "item" and hasattr(event, "item_id"):
        return str(event.item_id)
    return str(getattr(event, ACTOR_FIELD[type(event)][1]))


def run(name: str, configs: dict, budget: float, batches: list[list[Any]], shards: int, key: str) -> tuple[set, float]:
    """The entities signalled at >= SCORE, and the CPU seconds, of `shards` instances fed by `key`."""
    from streams.assembly import build_detectors

    detectors = [build_detectors(name, configs, budget)[0] for _ in range(shards)]
    signalled: set[tuple[str, str]] = set()
    seconds = 0.0
    watermark = 0.0
    for batch in batches:
        if batch:
            watermark = max(watermark, max(event.ts for event in batch))
        parts: list[list[Any]] = [[] for _ in range(shards)]
        for event in batch:
            parts[zlib.crc32(shard_key(event, key).encode()) % shards if shards > 1 else 0].append(event)
        for detector, part in zip(detectors, parts):
            started = time.process_time()
            found = detector.observe(part, watermark)
            seconds += time.process_time() - started
            signalled.update((s.kind, s.id) for s in found if s.score >= SCORE)
    for detector in detectors:  # the end of the stream: periodic work runs on an empty tick
        started = time.process_time()
        found = detector.observe([], watermark)  # as the pipeline's flush tick
        seconds += time.process_time() - started
        signalled.update((s.kind, s.id) for s in found if s.score >= SCORE)
    return signalled, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, default=None)
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--truth", type=Path, default=None, help="the simulator's truth.json for --events")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--detectors", default="profile,rating_shift,coordination,extraction,dense_block,lockstep,"
                                                "copies,sweep_coverage")
    args = parser.parse_args()

    from detectors.events import Rejection, decode_event
    from streams.assembly import detector_configs
    from streams.demo import demo_events
    from streams.settings import Settings

    truth: dict = {}
    if args.events:
        lines = args.events.read_bytes().splitlines()
        if args.truth:
            truth = json.loads(args.truth.read_text())
    else:
        lines, truth = demo_events(args.n, seed=1)
    planted = {(kind, str(entity)) for attack in truth.get("attacks", [])
               for kind, ids in attack.get("entities", {}).items() for entity in ids}
    planted |= {("item", str(item)) for attack in truth.get("attacks", []) for item in attack.get("target_items", [])}
    events = [e for e in (decode_event(line) for line in lines if line.strip()) if not isinstance(e, Rejection)]
    settings = Settings()
    batches = [events[i:i + settings.batch_size] for i in range(0, len(events), settings.batch_size)]
    configs = detector_configs(settings)
    n = len(events)
    print(f"{n} events, {args.shards} shards; entities signalled at score >= {SCORE} (planted: of them, attackers "
          f"and target items by the simulator's truth):")
    print(f"{'detector':<15} {'key':<6} {'whole':>6} {'planted':>8} {'shards':>7} {'planted':>8} {'both':>6} "
          f"{'whole us/ev':>12} {'shards us/ev':>13}")
    for name in args.detectors.split(","):
        whole, whole_seconds = run(name, configs, settings.false_flag_budget, batches, 1, "actor")
        for key in KEYS:
            sharded, seconds = run(name, configs, settings.false_flag_budget, batches, args.shards, key)
            print(f"{name:<15} {key:<6} {len(whole):>6} {len(whole & planted):>8} {len(sharded):>7} "
                  f"{len(sharded & planted):>8} {len(whole & sharded):>6} "
                  f"{whole_seconds / n * 1e6:>12.1f} {seconds / n * 1e6:>13.1f}")


if __name__ == "__main__":
    main()
