"""Replay throughput on a mixed stream, beside a bare JSON read-and-write of the same file.

    python benchmarks/replay_throughput.py [--events FILE] [--n 200000] [--detectors profile,rating_shift]

Without --events it simulates a 200k-event stream from MovieLens-100K with the first nine attack families
(`simulate --attacks classic --benign base --max-events 200000 --seed 11`, the stream of the README's figures). Each
measurement runs in a fresh process so that its peak memory (max RSS) is its own; machines here are
noisy, so compare the ratio of the two figures measured in one run rather than absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE = """
import sys, time, orjson
start = time.perf_counter()
n = 0
with open(sys.argv[1], "rb") as source, open(sys.argv[2], "wb") as sink:
    for line in source:
        sink.write(orjson.dumps(orjson.loads(line)) + b"\\n")
        n += 1
rate = n / (time.perf_counter() - start)
import resource; print(rate, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

REPLAY = """
import sys, time
from streams.assembly import build_pipeline
from streams.replay import replay
from streams.settings import Settings
settings = Settings(detectors=sys.argv[3], offload_detectors=sys.argv[4])
pipeline = build_pipeline(settings)
summary = replay(sys.argv[1], sys.argv[2], pipeline, batch_size=settings.batch_size)
pipeline.close()
import json, resource
# peak RSS: the replay's process plus its detector process (streams.parallel), if any
print(json.dumps(summary), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
      + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _run(code: str, *args: str) -> tuple[str, float]:
    """Run `code` in a fresh interpreter; return its result and its own peak RSS in MiB."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    result, rss_kib = done.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    return result, int(rss_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, help="JSON-lines stream (default: simulate one)")
    parser.add_argument("--n", type=int, default=200_000, help="events to simulate")
    parser.add_argument("--detectors", default=None, help="detector names (default: the settings')")
    parser.add_argument("--offload", default=None,
                        help="detectors run in a second process (default: the settings'; '' for none)")
    args = parser.parse_args()
    from streams.settings import Settings

    detectors = args.detectors or Settings().detectors
    offload = Settings().offload_detectors if args.offload is None else args.offload
    with tempfile.TemporaryDirectory() as tmp:
        events = args.events
        if events is None:
            events = Path(tmp) / "events.jsonl"
            started = time.perf_counter()
            # The stream every throughput figure in the README was measured on: the first nine families
            # and the benign traffic as it was then (benign crowds and new families change the mix).
            subprocess.run([sys.executable, "-m", "streams.cli", "simulate", "--out", tmp, "--attacks", "classic",
                            "--benign", "base", "--max-events", str(args.n), "--seed", "11"], check=True,
                           capture_output=True)
            print(f"simulated {args.n:,} events in {time.perf_counter() - started:.1f} s")
        lines = sum(1 for _ in open(events, "rb"))
        bare_rate, bare_rss = _run(BARE, str(events), str(Path(tmp) / "bare.jsonl"))
        summary, replay_rss = _run(REPLAY, str(events), str(Path(tmp) / "out"), detectors, offload)
        summary = json.loads(summary)
    bare_rate, rate = float(bare_rate), summary["events_per_second"]
    print(f"stream: {lines:,} lines ({events})")
    print(f"bare JSON read+write: {bare_rate:>10,.0f} events/s  peak RSS {bare_rss:,.0f} MiB")
    print(f"replay [{detectors}] (in a second process: {offload or 'none'}): {rate:>10,.0f} events/s  "
          f"peak RSS {replay_rss:,.0f} MiB")
    print(f"replay / bare: {rate / bare_rate:.3f}")
    print("detector cost (us/event): " + ", ".join(
        f"{name} {cost:.1f}" for name, cost in summary["detector_us_per_event"].items()))
    counts = summary["counts"]
    print(f"outcomes: {counts['clean']:,} clean, {counts['quarantined'] + counts['retracted']:,} quarantined "
          f"({counts['retracted']:,} retracted), {counts['rejected']:,} rejected, undecided {summary['undecided']}")


if __name__ == "__main__":
    main()
