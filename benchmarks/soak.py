"""Soak: one worker for an hour at 80% of its measured peak, memory, state sizes and lag sampled each minute.

    python benchmarks/soak.py [--minutes 60] [--share 0.8] [--dedupe-capacity 1000000] [--seed 0]

First the peak: a backlog of one cycle of the stream (60,000 events, every attack family, streams.demo) is
produced at once and the worker's drain rate measured. Then the stream is produced without end at `share`
of that rate: the same population of users, items, sellers and clients cycle after cycle, each cycle with
fresh event ids and its event times moved on by the cycle's span (so state bounded by time or count must
level off, and state that grows with the event count shows). Every minute a row: the worker's resident
memory with its detector processes, the snapshot's size and each part of it, events held, the dedupe ids,
the consumer lag, and the rates in and out. Flat memory (and lag) over the last half is the pass.

The dedupe memory keeps `--dedupe-capacity` event ids (SHILLGUARD_DEDUPE_CAPACITY; the default 5,000,000 would
still be filling after an hour at this rate: the table shows what each id costs).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import threading
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import Worker, free_port, scrape  # noqa: E402


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its children (the detector processes), MiB."""
    total = 0
    for status in [Path(f"/proc/{pid}/status")] + [p.parent / "status" for p in Path("/proc").glob("[0-9]*/stat")
                                                   if _parent(p) == pid]:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _parent(stat: Path) -> int:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def endless(lines: list[bytes], span: float):
    """The stream again and again: fresh event ids, event times moved on by `span` per cycle."""
    events = [orjson.loads(line) for line in lines]
    cycle = 0
    while True:
        shift = cycle * span
        for event in events:
            yield orjson.dumps({**event, "event_id": f"{event['event_id']}.{cycle}", "ts": event["ts"] + shift})
        cycle += 1


def metric(metrics: dict, name: str) -> float:
    return sum(value for (sample, _), value in metrics.items() if sample == name)


def state_sizes(worker: Worker) -> dict[str, float]:
    """MiB of each part of the last snapshot (read as a restarted worker reads it)."""
    from streams.state import StateDir, snapshot_key

    settings = worker.settings()
    try:
        snapshot = StateDir(settings.state_dir, settings.app_id, snapshot_key(settings)).load()
    except (OSError, ValueError, EOFError, pickle.UnpicklingError):  # being replaced just now
        return {}
    if snapshot is None:
        return {}
    sizes = {name: len(state) / 2**20 for name, state in snapshot.detectors.items()}
    sizes["decision"] = len(pickle.dumps(snapshot.decision, protocol=5)) / 2**20
    sizes["dedupe"] = len(pickle.dumps(snapshot.seen, protocol=5)) / 2**20
    sizes["dedupe ids"] = len(snapshot.seen[1])
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--share", type=float, default=0.8, help="of the measured peak")
    parser.add_argument("--dedupe-capacity", default="1000000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/shillguard-soak"))
    args = parser.parse_args()

    from streams.broker import EmbeddedBroker
    from streams.demo import demo_events
    from streams.produce import make_producer, produce_lines
    from streams.topics import Topics

    lines, _ = demo_events(60_000, seed=args.seed + 1)
    first, last = orjson.loads(lines[0])["ts"], orjson.loads(lines[-1])["ts"]
    span = last - first + 86_400.0
    args.workdir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(f"127.0.0.1:{free_port()}", args.workdir / "broker") as broker:
        worker = Worker(broker.listen, args.workdir, dedupe_capacity=args.dedupe_capacity)
        worker.create_topics()
        worker.start()
        settings = worker.settings()
        topics = Topics.from_settings(settings)
        source = endless(lines, span)
        producer = make_producer(settings)

        # The peak: one cycle produced at once, drained
        started = time.monotonic()
        produce_lines(producer, (next(source) for _ in range(len(lines))), topics)
        producer.flush()
        while metric(scrape(worker.port), "shillguard_events_in_total") < len(lines) or \
                metric(scrape(worker.port), "shillguard_consumer_lag") > 0:
            time.sleep(0.5)
        peak = len(lines) / (time.monotonic() - started)
        rate = args.share * peak
        print(f"peak: {len(lines):,} events drained at {peak:,.0f} events/s; soak at {rate:,.0f} events/s "
              f"({args.share:.0%}) for {args.minutes:.0f} min; load average {os.getloadavg()[0]:.1f}", flush=True)

        stop = threading.Event()

        def feed() -> None:
            def until_stopped():
                for line in source:
                    if stop.is_set():
                        return
                    yield line
            produce_lines(producer, until_stopped(), topics, rate=rate)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        header = (f"{'min':>4} {'RSS MiB':>8} {'snapshot':>9} {'profile':>8} {'groups':>8} {'copies':>7} "
                  f"{'catalog':>8} {'extract':>8} {'decision':>9} {'dedupe':>7} {'ids':>9} {'held':>7} "
                  f"{'lag':>8} {'in/s':>6} {'out/s':>6} {'load':>5}")
        print(header, flush=True)
        rows = []
        before = scrape(worker.port)
        soak_started = time.monotonic()
        for minute in range(1, int(args.minutes) + 1):
            time.sleep(max(0.0, soak_started + 60 * minute - time.monotonic()))
            metrics = scrape(worker.port)
            sizes = state_sizes(worker)
            groups = sum(sizes.get(name, 0.0) for name in ("dense_block", "lockstep", "coordination", "midas"))
            row = (minute, rss_mib(worker.process.pid), metric(metrics, "shillguard_snapshot_bytes") / 2**20,
                   sizes.get("profile", 0.0) + sizes.get("rating_shift", 0.0), groups, sizes.get("copies", 0.0),
                   sizes.get("catalog_drift", 0.0), sizes.get("extraction", 0.0), sizes.get("decision", 0.0),
                   sizes.get("dedupe", 0.0), sizes.get("dedupe ids", 0), metric(metrics, "shillguard_hold_buffer_events"),
                   metric(metrics, "shillguard_consumer_lag"),
                   (metric(metrics, "shillguard_events_in_total") - metric(before, "shillguard_events_in_total")) / 60,
                   (metric(metrics, "shillguard_events_out_total") - metric(before, "shillguard_events_out_total")) / 60,
                   os.getloadavg()[0])
            before = metrics
            rows.append(row)
            print(f"{row[0]:>4} {row[1]:>8,.0f} {row[2]:>9,.1f} {row[3]:>8,.1f} {row[4]:>8,.1f} {row[5]:>7,.1f} "
                  f"{row[6]:>8,.1f} {row[7]:>8,.1f} {row[8]:>9,.1f} {row[9]:>7,.1f} {row[10]:>9,} {row[11]:>7,.0f} "
                  f"{row[12]:>8,.0f} {row[13]:>6,.0f} {row[14]:>6,.0f} {row[15]:>5.1f}", flush=True)
            if worker.process.poll() is not None:
                print(f"the worker exited with {worker.process.returncode}", flush=True)
                break
        stop.set()
        feeder.join(30)
        producer.close()
        worker.stop()
    half = rows[len(rows) // 2:]
    if half:
        low, high = min(r[1] for r in half), max(r[1] for r in half)
        lag_low, lag_high = min(r[12] for r in half), max(r[12] for r in half)
        print(f"second half: RSS {low:,.0f}-{high:,.0f} MiB ({(high - low) / max(low, 1):.1%} spread), lag "
              f"{lag_low:,.0f}-{lag_high:,.0f}; mean in {sum(r[13] for r in half) / len(half):,.0f}/s, "
              f"out {sum(r[14] for r in half) / len(half):,.0f}/s")


if __name__ == "__main__":
    main()
