"""Snapshot size against the data: the worker's snapshot after N simulated events, whole and by part.

    python benchmarks/state_size.py [--sizes 2000,60000,200000] [--data movielens] [--seed 5]

For each size it simulates a stream (`shillguard simulate --attacks all --max-events N`, kept under
`--work`), runs the default pipeline over it the way a worker does (streams.assembly.build_pipeline, the
default detectors and processes, batches of `batch_size` lines), captures the snapshot the worker would
write (streams.state.capture and dumps: what SHILLGUARD_STATE_DIR holds, less its 64-byte signature) before
the final flush, and prints its size: whole, per detector, the largest attributes of each detector, the
decision stage and the dedupe ids, with bytes per event and per active user and item (entities with an event
in the stream). `--detectors` and `--offload` change the pipeline as in replay_throughput.py.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from detectors.base import dumps_state  # noqa: E402
from streams.assembly import build_pipeline  # noqa: E402
from streams.replay import iter_batches  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.state import capture, dumps  # noqa: E402


def simulate(work: Path, size: int, data: str, seed: int) -> Path:
    out = work / f"{data}-{size}-{seed}"
    events = out / "events.jsonl"
    if not events.is_file():
        subprocess.run([str(Path(sys.executable).parent / "shillguard"), "simulate", "--data", data, "--attacks",
                        "all", "--max-events", str(size), "--seed", str(seed), "--out", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
    return events


def active(events: Path) -> dict[str, int]:
    """Distinct users, items, sellers and clients with an event in the stream."""
    seen: dict[str, set] = {"user": set(), "item": set(), "seller": set(), "client": set()}
    lines = 0
    with open(events, "rb") as source:
        for line in source:
            lines += 1
            event = orjson.loads(line)
            for kind in seen:
                if event.get(f"{kind}_id") is not None:
                    seen[kind].add(event[f"{kind}_id"])
            for item in event.get("items", []) or []:  # a query's seeds
                seen["item"].add(item)
    return {"events": lines, **{f"{kind}s": len(ids) for kind, ids in seen.items()}}


def mb(n: float) -> str:
    return f"{n / 1e6:8.2f} MB"


def measure(events: Path, settings: Settings, top: int) -> dict:
    pipeline = build_pipeline(settings)
    try:
        started = time.perf_counter()
        with open(events, "rb") as source:
            for batch in iter_batches(source, settings.batch_size):
                pipeline.process(batch)
        seconds = time.perf_counter() - started
        clock = time.perf_counter()
        snapshot = capture(pipeline)
        total = len(dumps(snapshot))
        snapshot_seconds = time.perf_counter() - clock
    finally:
        pipeline.close()
    parts = {f"detector {name}": len(state) for name, state in snapshot.detectors.items()}
    parts["decision stage"] = len(pickle.dumps(snapshot.decision, protocol=pickle.HIGHEST_PROTOCOL))
    parts["dedupe ids"] = len(pickle.dumps(snapshot.seen, protocol=pickle.HIGHEST_PROTOCOL))
    attributes = {}
    for name, state in snapshot.detectors.items():
        values = pickle.loads(state)
        if isinstance(values, dict):
            sizes = {key: len(dumps_state(value)) for key, value in values.items()}
            attributes[name] = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    return {"total": total, "parts": parts, "attributes": attributes, "seconds": seconds,
            "snapshot_seconds": snapshot_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,60000,200000")
    parser.add_argument("--data", default="movielens")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--work", default=str(ROOT / "out" / "state_size"))
    parser.add_argument("--detectors", default=None, help="default: the service's (SHILLGUARD_DETECTORS)")
    parser.add_argument("--offload", default=None, help="default: the service's (SHILLGUARD_OFFLOAD_DETECTORS)")
    parser.add_argument("--top", type=int, default=4, help="largest attributes shown per detector")
    args = parser.parse_args()
    overrides = {key: value for key, value in (("detectors", args.detectors),
                                               ("offload_detectors", args.offload)) if value is not None}
    settings = Settings(**overrides)
    work = Path(args.work)
    rows = []
    for size in map(int, args.sizes.split(",")):
        events = simulate(work, size, args.data, args.seed)
        counts = active(events)
        result = measure(events, settings, args.top)
        rows.append((counts, result))
        print(f"\n== {counts['events']:,} events ({counts['users']:,} users, {counts['items']:,} items, "
              f"{counts['sellers']:,} sellers, {counts['clients']:,} clients; replayed in "
              f"{result['seconds']:.0f} s): snapshot {mb(result['total'])}, captured and pickled in "
              f"{result['snapshot_seconds']:.2f} s")
        for part, n in sorted(result["parts"].items(), key=lambda kv: -kv[1]):
            print(f"   {part:<28} {mb(n)}")
            for key, value in result["attributes"].get(part.removeprefix("detector "), []):
                print(f"      {key:<25} {mb(value)}")
    print("\nevents     snapshot    bytes/event  bytes/(user+item)")
    for counts, result in rows:
        entities = counts["users"] + counts["items"]
        print(f"{counts['events']:>9,}  {mb(result['total'])}  {result['total'] / counts['events']:>10,.0f}"
              f"  {result['total'] / max(entities, 1):>12,.0f}")
    if len(rows) >= 2:
        (c0, r0), (c1, r1) = rows[-2], rows[-1]
        slope = (r1["total"] - r0["total"]) / max(c1["events"] - c0["events"], 1)
        per_entity = (r1["total"] - r0["total"]) / max(c1["users"] + c1["items"] - c0["users"] - c0["items"], 1)
        print(f"\nbetween the last two sizes: {slope * 1e6 / 1e6:,.1f} MB per million events, "
              f"{per_entity:,.0f} bytes per further active user or item")


if __name__ == "__main__":
    main()
