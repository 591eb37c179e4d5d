"""The split topology with 1, 2 and 3 actor workers beside one detection worker, against one broker.

    python benchmarks/scaling.py [--events FILE] [--n 60000] [--actors 1,2,3] [--kill-after N] [--json F]

For each count: a fresh embedded broker (Tansu, memory storage), the stream produced first (keyed by actor,
as `shillguard produce` does), then one `SHILLGUARD_ROLE=detect` worker and N `SHILLGUARD_ROLE=actors`
workers (one consumer group; each its own state directory and web port) drain it. Printed per count:
- events/s end to end (events / the span of the outcome messages' broker timestamps);
- CPU per event summed over every worker process and its detector processes, split into the detection
  worker's and the actors';
- bytes moved between the stages per event (the accepted and points topics);
- delivery, from `shillguard export`: input messages without an outcome (`missing`) and events with more
  than one (`duplicates`), both 0 when every event got exactly one;
- agreement with `replay` of the same file: the users flagged by both over those flagged by either.
With `--kill-after N`, the last actor worker is killed with SIGKILL once N outcomes are out and not
restarted (the others take its partitions over), and, with `--rejoin`, started again later.

Without --events it simulates a stream from MovieLens-100K (synthetic if absent) with the first nine attack
families (`--attacks classic --benign base`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.streaming import free_port, scrape, tree_cpu_seconds  # noqa: E402


class Process:
    def __init__(self, name: str, env: dict[str, str], workdir: Path):
        self.name, self.port = name, free_port()
        self.env = {**env, "SHILLGUARD_WEB_PORT": str(self.port), "SHILLGUARD_STATE_DIR": str(workdir / name),
                    "SHILLGUARD_DB": f"sqlite:///{workdir}/{name}.db"}
        self.log = open(workdir / f"{name}.log", "ab")
        self.process: subprocess.Popen | None = None
        self.cpu = 0.0  # CPU seconds of earlier incarnations

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "streams.cli", "up", "--loglevel", "warn"],
                                        env=self.env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def state(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def cpu_seconds(self) -> float:
        if self.process is None or self.process.poll() is not None:
            return self.cpu
        return self.cpu + tree_cpu_seconds(self.process.pid)[1]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.cpu = self.cpu_seconds()
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.cpu = self.cpu_seconds()
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def topic_bytes(settings, names: list[str]) -> int:
    from streams.broker import kafka_python_config
    from streams.reader import read

    return sum(len(record.value or b"") + len(record.key or b"")
               for record in read(kafka_python_config(settings), names))


def snapshot_bytes(settings, name: str) -> dict[str, int]:
    """The actor state topic's bytes by kind of record (streams.partition_state: bases, deltas, and
    tombstones, which carry none), and how many bases and deltas were written."""
    from streams.broker import kafka_python_config
    from streams.reader import read

    out = {"base": 0, "delta": 0, "bases": 0, "deltas": 0, "tombstones": 0}
    for record in read(kafka_python_config(settings), [name]):
        key = record.key or b""
        kind = "base" if key.startswith(b"base:") else "delta" if key.startswith(b"delta:") else "other"
        if record.value is None:
            out["tombstones"] += 1
            continue
        out[kind] = out.get(kind, 0) + len(record.value) + len(key)
        if key.count(b":") == (1 if kind == "base" else 2):  # a head
            out[kind + "s"] += 1
    return out


def wait_ready(processes: list[Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        while not (process.state() or {}).get("ready"):
            if process.process.poll() is not None:
                raise RuntimeError(f"{process.name} exited: see {process.log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{process.name} not ready")
            time.sleep(0.5)


def flagged_users(path: Path) -> set[str]:
    users = set()
    with open(path, "rb") as f:
        for line in f:
            record = json.loads(line)
            if record["kind"] == "user":
                users.add(record["id"])
    return users


def run(count: int, events: Path, workdir: Path, base_env: dict[str, str], kill_after: int | None,
        rejoin: bool, n_lines: int, timeout: float) -> dict:
    from streams.export import export
    from streams.settings import Settings
    from streams.topics import Topics

    listen = f"127.0.0.1:{free_port()}"
    env = {**base_env, "SHILLGUARD_EMBEDDED_LISTEN": listen}
    env.pop("SHILLGUARD_BROKER", None)
    broker = subprocess.Popen([sys.executable, "-m", "streams.cli", "broker", "--listen", listen], env=env,
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        settings = Settings(**{k.removeprefix("SHILLGUARD_").lower(): v for k, v in env.items()
                               if k.startswith("SHILLGUARD_")})
        time.sleep(3)
        if count == 0:  # the baseline: one worker that detects and decides (SHILLGUARD_ROLE=all)
            detect = Process("single", {**env, "SHILLGUARD_ROLE": "all"}, workdir)
            actors = [detect]
        else:
            detect = Process(f"detect-{count}", {**env, "SHILLGUARD_ROLE": "detect"}, workdir)
            actors = [Process(f"actor-{count}-{k}", {**env, "SHILLGUARD_ROLE": "actors"}, workdir)
                      for k in range(count)]
        processes = list(dict.fromkeys([detect, *actors]))
        for process in processes:
            process.start()
        # Start-up (model loading, joining the group) is not the stream's cost: measured from here.
        wait_ready(processes, timeout)
        cpu_start = {process.name: process.cpu_seconds() for process in processes}
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "streams.cli", "produce", str(events)], env=env, cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed = rejoined = False
        done, finished, cpu_end = 0, None, {}
        deadline = started + timeout
        while time.monotonic() < deadline:
            if count == 0:
                done = sum(value for (name, labels), value in scrape(detect.port).items()
                           if name == "shillguard_events_out_total" and dict(labels).get("outcome") != "retracted")
            else:
                states = [a.state() for a in actors if a.process.poll() is None]
                counts = [s["counts"] for s in states if s]
                done = max(done, sum(c.get("clean", 0) + c.get("quarantined", 0) + c.get("rejected", 0)
                                     for c in counts))
            if done >= n_lines and finished is None:
                finished = time.monotonic()
                cpu_end = {process.name: process.cpu_seconds() for process in processes}
            if kill_after is not None and not killed and done >= kill_after and count > 1:
                actors[-1].kill()
                killed, killed_at = True, time.monotonic()
            if killed and rejoin and not rejoined and time.monotonic() - killed_at > 20:
                actors[-1].start()
                rejoined = True
            for process in processes:
                if process.process.poll() is not None and not (killed and process is actors[-1]):
                    raise RuntimeError(f"{process.name} exited: see {process.log.name}")
            summary = None
            if done >= n_lines or (killed and time.monotonic() - killed_at > 30):
                summary = export(settings, workdir / f"export-{count}")
                if summary["delivery"]["missing"] == 0:
                    break
            time.sleep(1.0)
        if finished is None:  # a worker killed: its own counts went with it; the export said all are out
            finished = time.monotonic()
            cpu_end = {process.name: process.cpu_seconds() for process in processes}
        wall = finished - started
        cpu_detect = cpu_end[detect.name] - cpu_start[detect.name]
        cpu_actors = sum(cpu_end[a.name] - cpu_start[a.name] for a in actors) if count else 0.0
        for process in reversed(processes):
            process.stop()
        summary = export(settings, workdir / f"export-{count}")
        topics = Topics.from_settings(settings)
        moved = {name: topic_bytes(settings, [name]) for name in topics.internal}
        snapshots = snapshot_bytes(settings, topics.actor_state) if count else None
        span = summary.get("outcome_span_seconds")
        return {"actors": count, "summary": summary, "wall_s": round(wall, 1), "cpu_detect": cpu_detect,
                "cpu_actors": cpu_actors, "internal_bytes": moved, "snapshots": snapshots, "span": span, "killed": killed,
                "rejoined": rejoined, "flags": workdir / f"export-{count}" / "flags.jsonl"}
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path)
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--actors", default="0,1,2,3", help="actor worker counts; 0: one worker that does all")
    parser.add_argument("--detectors", default=None, help="SHILLGUARD_DETECTORS (default: the settings')")
    parser.add_argument("--kill-after", type=int, default=None)
    parser.add_argument("--rejoin", action="store_true")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from streams.assembly import build_pipeline
    from streams.replay import replay
    from streams.settings import Settings

    workdir = Path(tempfile.mkdtemp(prefix="shillguard-scaling-"))
    events = args.events
    if events is None:
        events = workdir / "events.jsonl"
        subprocess.run([sys.executable, "-m", "streams.cli", "simulate", "--attacks", "classic", "--benign", "base",
                        "--max-events", str(args.n), "--seed", "11", "--out", str(workdir / "sim")], check=True,
                       cwd=ROOT, stdout=subprocess.DEVNULL)
        events = workdir / "sim" / "events.jsonl"
    n_lines = sum(1 for _ in open(events, "rb"))
    # The split topology cannot carry a learning fusion (detectors.stages): replay without one too.
    # A fast idle clock: once the input ends, the held events leave in seconds (replay flushes them).
    base_env = {**os.environ, "SHILLGUARD_LEARN_FROM_ANALYSTS": "false", "SHILLGUARD_APP_ID": "scaling",
                "SHILLGUARD_IDLE_SPEEDUP": "600"}
    if args.detectors:
        base_env["SHILLGUARD_DETECTORS"] = args.detectors
    settings = Settings(learn_from_analysts=False, **({"detectors": args.detectors} if args.detectors else {}))
    pipeline = build_pipeline(settings)
    replayed = replay(events, workdir / "replay", pipeline, batch_size=settings.batch_size,
                      final=False)  # compared with live workers, whose input does not end
    pipeline.close()
    replay_users = flagged_users(workdir / "replay" / "flags.jsonl")
    print(f"stream: {n_lines:,} lines ({events}); replay: {replayed['counts']}, {len(replay_users)} users flagged")
    results = []
    for count in [int(c) for c in args.actors.split(",")]:
        result = run(count, events, workdir, base_env, args.kill_after, args.rejoin, n_lines, args.timeout)
        summary = result["summary"]
        users = flagged_users(result["flags"])
        agreement = len(users & replay_users) / max(len(users | replay_users), 1)
        cpu = result["cpu_detect"] + result["cpu_actors"]
        killed = " (one killed -9" + (", rejoined" if result["rejoined"] else "") + ")" if result["killed"] else ""
        moved = ", ".join(f"{name} {size / n_lines:.0f}" for name, size in result["internal_bytes"].items())
        if result.get("snapshots"):
            snaps = result["snapshots"]
            moved += (f" (bases {snaps['base'] / n_lines:.0f} in {snaps['bases']}, deltas {snaps['delta'] / n_lines:.0f}"
                      f" in {snaps['deltas']}, {snaps['tombstones']} tombstones)")
        who = f"{count} actor worker(s)" if count else "one worker (SHILLGUARD_ROLE=all)"
        line = (f"{who}{killed}: {n_lines / result['wall_s']:,.0f} events/s ({result['wall_s']} s "
                f"from the first produced to the last outcome); CPU {1e6 * cpu / n_lines:.0f} us/event (detection "
                f"{1e6 * result['cpu_detect'] / n_lines:.0f}, actors {1e6 * result['cpu_actors'] / n_lines:.0f}); "
                f"between stages (bytes/event) {moved}; missing {summary['delivery']['missing']}, duplicates "
                f"{summary['delivery']['duplicates']}; users flagged {len(users)} vs replay {len(replay_users)}, "
                f"agreement {agreement:.3f}")
        print(line, flush=True)
        results.append({**{k: v for k, v in result.items() if k != "flags"}, "agreement": agreement,
                        "users_flagged": len(users), "cpu_us_per_event": 1e6 * cpu / n_lines})
    by_count = {result["actors"]: result["cpu_us_per_event"] for result in results}
    for base in (1, 0):  # the partitioning's overhead (against one actor worker), and the split's (one worker)
        if base in by_count:
            for count, cpu in by_count.items():
                if count > max(base, 1) or (base == 0 and count == 1):
                    print(f"CPU per event, {count} actor workers / {'one worker' if base == 0 else '1 actor worker'}"
                          f": {cpu / by_count[base]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
