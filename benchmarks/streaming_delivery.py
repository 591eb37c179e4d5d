"""Exactly one outcome per event through `shillguard up`, with and without a kill -9, against `replay`.

    python benchmarks/streaming_delivery.py --events FILE [--kill-at 0.4] [--idle-speedup 60]

What a user does: the worker (`shillguard up`, its own topics and state on the embedded broker), the file
published with `shillguard produce`, the output topics read back with `shillguard export`, then the export's
delivery check (missing, duplicated, undecided) and its flagged users beside `replay`'s on the same file.
With `--kill-at F` the worker is killed with SIGKILL once F of the stream has been consumed and started
again on the same state directory while `produce` carries on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import ROOT, Worker, free_port  # noqa: E402


def metric(worker: Worker, name: str) -> float:
    for attempt in range(12):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=10) as response:
                text = response.read().decode()
            break
        except OSError:  # a busy worker may answer late: a slow scrape is not a failure of delivery
            if attempt == 11:
                raise
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def cli(worker: Worker, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=worker.env, cwd=ROOT,
                          capture_output=True, text=True, check=True)


def flagged_users(directory: Path) -> set[str]:
    return {r["id"] for r in map(orjson.loads, (directory / "flags.jsonl").read_bytes().splitlines())
            if r["kind"] == "user"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--kill-at", type=float, default=None, help="kill -9 the worker at this share consumed")
    parser.add_argument("--idle-speedup", default="60", help="SHILLGUARD_IDLE_SPEEDUP for the worker")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the outputs")
    args = parser.parse_args()

    from streams.assembly import build_pipeline
    from streams.broker import EmbeddedBroker
    from streams.replay import replay
    from streams.settings import Settings

    total = sum(1 for line in args.events.open("rb") if line.strip())
    print(f"stream: {total:,} lines ({args.events}); load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) if args.keep is None else args.keep
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        pipeline = build_pipeline(Settings())
        replay(args.events, workdir / "replay", pipeline, final=False)  # compared with live workers
        pipeline.close()
        print(f"replay: {time.monotonic() - started:.0f} s", flush=True)
        with EmbeddedBroker(f"127.0.0.1:{free_port()}") as broker:
            worker = Worker(broker.listen, workdir, idle_speedup=args.idle_speedup)
            worker.create_topics()
            worker.start()
            started = time.monotonic()
            producer = subprocess.Popen([sys.executable, "-m", "streams.cli", "produce", str(args.events),
                                         "--no-progress"], env=worker.env, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                if args.kill_at is not None:
                    while metric(worker, "shillguard_events_in_total") < args.kill_at * total:
                        time.sleep(0.2)
                    consumed = metric(worker, "shillguard_events_in_total")
                    worker.process.kill()
                    worker.process.wait()
                    print(f"kill -9 at {consumed:,.0f} consumed messages; restarting", flush=True)
                    worker.start()
                if producer.wait(args.timeout) != 0:
                    raise RuntimeError("produce failed")
                # Done when the export finds every line decided (the restarted worker's own counters
                # cover only what it published itself), then once more after a quiet spell.
                deadline = time.monotonic() + args.timeout
                while True:
                    cli(worker, "export", "--out", str(workdir / "export"))
                    summary = json.loads((workdir / "export" / "summary.json").read_text())
                    if summary["delivery"]["missing"] == 0 and summary["undecided"] == 0:
                        break
                    if time.monotonic() > deadline:
                        break
                    time.sleep(5)
                seconds = time.monotonic() - started
                time.sleep(10)
                cli(worker, "export", "--out", str(workdir / "export"))
                summary = json.loads((workdir / "export" / "summary.json").read_text())
                suppressed = metric(worker, "shillguard_outcomes_suppressed_total")
                skipped = metric(worker, "shillguard_redelivered_skipped_total")
            finally:
                producer.kill()
                worker.stop()
        delivery = summary["delivery"]
        print(f"{summary['counts']['lines']:,} input lines in {seconds:.0f} s: missing {delivery['missing']}, "
              f"duplicated {delivery['duplicates']}, duplicate retractions {delivery['duplicate_retractions']}, "
              f"undecided {summary['undecided']}; counts {summary['counts']}")
        if args.kill_at is not None:
            print(f"after the restart: {suppressed:,.0f} outcomes suppressed as already published, "
                  f"{skipped:,.0f} redelivered messages skipped")
        ours, theirs = flagged_users(workdir / "export"), flagged_users(workdir / "replay")
        common = ours & theirs
        print(f"flagged users: replay {len(theirs)}, stream {len(ours)}, both {len(common)} "
              f"({len(common) / max(len(theirs), 1):.1%} of replay's; Jaccard "
              f"{len(common) / max(len(ours | theirs), 1):.3f})")
        ok = delivery["missing"] == 0 and delivery["duplicates"] == 0 and summary["undecided"] == 0 \
            and summary["counts"]["lines"] == total
        print("exactly one outcome per line:", "yes" if ok else "NO")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
