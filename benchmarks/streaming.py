"""End-to-end throughput and latency of one streaming worker on the embedded broker, beside `replay`.

    python benchmarks/streaming.py [--events FILE] [--n 200000] [--rate 2000] [--latency-events 60000]

1. throughput: the whole stream is produced first; then one worker (`shillguard up`, hold 0 so that nothing
   waits for event time) drains it. Events/s = events / (last outcome - first outcome), from the outcome
   messages' broker timestamps; also the worker's CPU seconds per event, which a busy machine inflates less
   than wall time.
2. latency: a fresh worker, hold 0, and events produced at a steady `--rate`; latency = outcome message
   timestamp - input message timestamp (both stamped by their producers on this machine) per event: p50,
   p99, max; and the same after the first `--settle` seconds of produce: a simulated stream opens with the
   catalog's listings (hundreds of edits in a second, each embedded by MiniLM in ~7 ms on one core), a
   backlog the worker works off in its first seconds. With the hold window (600 s of event time by default)
   the outcome waits for the hold on top.
3. replay on the same file in-process: the ceiling.

Without --events it simulates a stream from MovieLens-100K (synthetic if absent) with the first nine attack
families and the benign traffic of the guide's figures (`--attacks classic --benign base`).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of the worker process, and of it with its children (the detector processes)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    own = cpu_seconds(pid)
    return own, own + sum(cpu_seconds(child) for child in children)


class Worker:
    def __init__(self, listen: str, workdir: Path, **settings: str):
        self.name = f"bench{uuid.uuid4().hex[:6]}"
        self.port = free_port()
        self.env = {**os.environ, "SHILLGUARD_EMBEDDED_LISTEN": listen, "SHILLGUARD_WEB_PORT": str(self.port),
                    "SHILLGUARD_STATE_DIR": str(workdir / self.name), "SHILLGUARD_APP_ID": self.name,
                    "SHILLGUARD_DB": f"sqlite:///{workdir}/{self.name}/q.db"}
        self.env.pop("SHILLGUARD_BROKER", None)
        for topic in ("ratings", "clicks", "catalog", "queries", "clean", "quarantined", "rejected", "retracted",
                      "flags", "alerts", "client_actions"):
            self.env[f"SHILLGUARD_TOPIC_{topic.upper()}"] = f"{self.name}.{topic}"
        self.env.update({f"SHILLGUARD_{key.upper()}": value for key, value in settings.items()})
        self.log = open(workdir / f"{self.name}.log", "wb")
        self.process: subprocess.Popen | None = None

    def settings(self):
        from streams.settings import Settings

        return Settings(**{key.removeprefix("SHILLGUARD_").lower(): value for key, value in self.env.items()
                           if key.startswith("SHILLGUARD_") and key != "SHILLGUARD_BROKER"})

    def create_topics(self) -> None:
        from streams.broker import create_topics
        from streams.topics import Topics

        settings = self.settings()
        create_topics(settings, Topics.from_settings(settings).all)

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "streams.cli", "up", "--loglevel", "warn"],
                                        env=self.env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: see {self.log.name}")
            time.sleep(0.2)
        raise TimeoutError("worker not ready")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def produce(settings, lines: list[bytes], rate: float | None = None) -> None:
    from streams.produce import make_producer, produce_lines
    from streams.topics import Topics

    producer = make_producer(settings)
    produce_lines(producer, lines, Topics.from_settings(settings), rate=rate)
    producer.flush()
    producer.close()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """The worker's /metrics as {(sample name, sorted labels): value}; empty if it does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def where_time_went(port: int) -> str:
    """Busy seconds, micro-batches and each detector's seconds, from the worker's /metrics."""
    metrics = scrape(port)
    busy = metrics.get(("shillguard_guard_busy_seconds_total", ()), 0.0)
    batches = metrics.get(("shillguard_batch_events_count", ()), 0.0)
    taken = metrics.get(("shillguard_batch_events_sum", ()), 0.0)
    detectors = {dict(labels)["detector"]: value for (name, labels), value in metrics.items()
                 if name == "shillguard_detector_batch_seconds_sum"}
    forced = metrics.get(("shillguard_align_forced_total", ()), 0.0)
    return (f"worker busy {busy:.1f} s in {batches:,.0f} batches of {taken / max(batches, 1):,.0f} messages, "
            f"aligner gave up {forced:.0f} times; "
            "detector seconds " + ", ".join(f"{name} {value:.1f}" for name, value in detectors.items()))


def wait_for_outcomes(port: int, expected: int, timeout: float) -> None:
    """Until the worker's /metrics count `expected` outcomes (clean, quarantined, rejected). Asking the
    worker costs nothing; reading the output topics while it works would take a core from it on a small
    machine. The timestamps are read afterwards: they are stamped when published, not when read."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(value for (name, labels), value in scrape(port).items()
                   if name == "shillguard_events_out_total" and dict(labels).get("outcome") != "retracted")
        if done >= expected:
            return
        time.sleep(1.0)


def outcome_times(settings, expected: int, timeout: float) -> dict[str, float]:
    """event_id -> broker timestamp (s) of its clean or quarantined message, once all `expected` are there."""
    import orjson

    from streams.broker import kafka_python_config
    from streams.reader import read
    from streams.topics import Topics

    topics = Topics.from_settings(settings)
    config = kafka_python_config(settings)
    times: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    start: dict = {}
    while len(times) < expected and time.monotonic() < deadline:
        for record in read(config, [topics.clean, topics.quarantined, topics.rejected], start):
            start[(record.topic, record.partition)] = record.offset + 1
            value = orjson.loads(record.value)
            event_id = value.get("event_id") or f"{record.topic}:{record.partition}:{record.offset}"
            times.setdefault(str(event_id), record.timestamp / 1000.0)
        if len(times) < expected:
            time.sleep(1.0)
    return times


def input_times(settings) -> dict[str, float]:
    import orjson

    from streams.broker import kafka_python_config
    from streams.reader import read
    from streams.topics import Topics

    out = {}
    for record in read(kafka_python_config(settings), Topics.from_settings(settings).inputs):
        try:
            out[str(orjson.loads(record.value)["event_id"])] = record.timestamp / 1000.0
        except Exception:  # noqa: BLE001 - malformed lines have no id
            pass
    return out


def describe(latencies: list[float]) -> str:
    if not latencies:
        return "no events"
    return (f"p50 {1000 * percentile(latencies, 0.5):.0f} ms, p99 {1000 * percentile(latencies, 0.99):.0f} ms, "
            f"max {1000 * max(latencies):.0f} ms")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, help="JSON-lines stream (default: simulate one)")
    parser.add_argument("--n", type=int, default=200_000, help="events to simulate")
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s for the latency run")
    parser.add_argument("--latency-events", type=int, default=60_000, help="events in the latency run")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds of the latency run before the steady-state figures")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()

    from streams.broker import EmbeddedBroker

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        events = args.events
        if events is None:
            events = workdir / "sim" / "events.jsonl"
            data = "movielens" if (ROOT.parent / "shared/data/movielens-100k/u.data").is_file() else "synthetic"
            subprocess.run([sys.executable, "-m", "streams.cli", "simulate", "--data", data, "--out",
                            str(events.parent), "--attacks", "classic", "--benign", "base", "--max-events",
                            str(args.n)],
                           check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        lines = [line.rstrip(b"\r\n") for line in events.open("rb") if line.strip()]
        print(f"stream: {len(lines):,} events from {events}; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs")

        from streams.assembly import build_pipeline
        from streams.replay import replay
        from streams.settings import Settings

        summary = replay(events, workdir / "replay", build_pipeline(Settings()))
        print(f"replay (in-process ceiling): {summary['events_per_second']:,.0f} events/s")

        with EmbeddedBroker(f"127.0.0.1:{free_port()}") as broker:
            if not args.skip_throughput:
                worker = Worker(broker.listen, workdir, hold_seconds="0", idle_speedup="1000000")
                worker.create_topics()
                started = time.monotonic()
                produce(worker.settings(), lines)
                print(f"produced {len(lines):,} events in {time.monotonic() - started:.1f} s (before the worker)")
                worker.start()
                own_before, all_before = tree_cpu_seconds(worker.process.pid)
                wait_for_outcomes(worker.port, len(lines), timeout=1800)
                own, every = tree_cpu_seconds(worker.process.pid)
                cpu, cpu_all = own - own_before, every - all_before
                spent = where_time_went(worker.port)
                times = outcome_times(worker.settings(), len(lines), timeout=600)
                worker.stop()
                first, last = min(times.values()), max(times.values())
                print(f"throughput: {len(times):,} outcomes in {last - first:.1f} s = "
                      f"{len(times) / max(last - first, 1e-9):,.0f} events/s end to end with one worker; "
                      f"worker CPU {cpu:.1f} s = {1e6 * cpu / len(times):.0f} us/event "
                      f"(= {len(times) / max(cpu, 1e-9):,.0f} events/s per busy core); with its detector "
                      f"processes {cpu_all:.1f} s = {1e6 * cpu_all / len(times):.0f} us/event")
                print(spent)
            if not args.skip_latency:
                worker = Worker(broker.listen, workdir, hold_seconds="0", idle_speedup="1000000")
                worker.create_topics()
                worker.start()
                sample = lines[: args.latency_events]
                produce(worker.settings(), sample, rate=args.rate)
                wait_for_outcomes(worker.port, len(sample), timeout=600)
                times = outcome_times(worker.settings(), len(sample), timeout=600)
                sent = input_times(worker.settings())
                worker.stop()
                begin = min(sent.values())
                latencies = [(sent[event_id] - begin, times[event_id] - sent[event_id]) for event_id in sent
                             if event_id in times]
                print(f"latency at {args.rate:,.0f} events/s (hold 0, so without the hold window), "
                      f"{len(latencies):,} events: {describe([latency for _, latency in latencies])}; "
                      f"after the first {args.settle:.0f} s: "
                      f"{describe([latency for at, latency in latencies if at >= args.settle])}")


if __name__ == "__main__":
    main()
