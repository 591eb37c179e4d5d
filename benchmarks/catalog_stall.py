"""How long ratings and clicks wait behind a catalogue burst, with the catalog path's signals lagged or not.

    python benchmarks/catalog_stall.py --events FILE [--lines 60000] [--lags 0,16] [--rounds 2]

Replays the first `--lines` lines of FILE (the README's throughput stream opens with some 740 catalog edits)
through the service's pipeline with every default detector, `catalog_drift` (MiniLM) included, batches of
`batch_size` started ahead as `replay` and the worker start them, once per `SHILLGUARD_DETECTOR_LAG` value,
alternating, each in a fresh process. Prints, per run, events/s, and the gaps between consecutive finished
batches (what an event behind a batch waits for the next one to be decided): median, p99, longest, and
the seconds until the first 20,000 lines were finished. Wall clock: compare runs of one sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RUN = """
import itertools, json, sys, time
import numpy as np
from streams.assembly import build_pipeline
from streams.settings import Settings
settings = Settings()
with open(sys.argv[1], "rb") as source:
    lines = list(itertools.islice(source, int(sys.argv[2])))
pipeline = build_pipeline(settings)
size = settings.batch_size
start = time.perf_counter()
finished, pending, done, first_20k = [], None, 0, None
for k in range(0, len(lines), size):
    started = pipeline.start(lines[k:k + size])
    if pending is not None:
        pipeline.finish(pending[0])
        finished.append(time.perf_counter())
        done = pending[1]
        if first_20k is None and done >= 20_000:
            first_20k = finished[-1] - start
    pending = (started, k + len(lines[k:k + size]))
pipeline.finish(pending[0])
pipeline.flush()
finished.append(time.perf_counter())
pipeline.close()
gaps = np.diff([start] + finished)
print(json.dumps({"events_per_second": round(len(lines) / (finished[-1] - start)),
                  "gap_median_s": round(float(np.median(gaps)), 3), "gap_p99_s": round(float(np.quantile(gaps, 0.99)), 3),
                  "gap_max_s": round(float(gaps.max()), 3), "first_20k_s": round(first_20k or 0.0, 2)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--lines", type=int, default=60_000)
    parser.add_argument("--lags", default="0,16", help="SHILLGUARD_DETECTOR_LAG values, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    for round_ in range(args.rounds):
        for lag in args.lags.split(","):
            env = {**os.environ, "SHILLGUARD_DETECTOR_LAG": lag, "PYTHONPATH": str(root)}
            done = subprocess.run([sys.executable, "-c", RUN, str(args.events), str(args.lines)], env=env,
                                  capture_output=True, text=True, check=True, cwd=root)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"round {round_ + 1} lag {lag:>3}: " + ", ".join(f"{k} {v}" for k, v in result.items()),
                  flush=True)


if __name__ == "__main__":
    main()
