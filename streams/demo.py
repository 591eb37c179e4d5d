"""`shillguard up --demo`: built-in traffic with attacks, so that a new user sees detections within a minute.

A synthetic MovieLens-like base (simulator.synthetic) with every attack family planted (simulator.build),
generated in memory and produced to the input topics at a steady rate (SHILLGUARD_DEMO_RATE events/s)
once the worker is ready. The attacks sit in the second third of the stream: at the default rate the first
flags, quarantines and OCSF alerts appear some 20 seconds in. Event time runs far faster than wall time
here (seven months of traffic in a few minutes), so the idle clock is sped up to match, and the last held
events leave seconds after the feed ends.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson

log = logging.getLogger(__name__)


def demo_events(n_events: int = 60_000, seed: int = 1, after: float = 0.0) -> tuple[list[bytes], dict[str, Any]]:
    """The demo stream as JSON lines, and its truth; its event time starts a day after `after` when that is
    later than the simulation's own start (a restarted worker's watermark: older events would pass unheld)."""
    from simulator.build import build, plan_attacks
    from simulator.synthetic import synthetic_base

    # The nine classic families: on a synthetic base of a few tens of thousands of events they plant attacks
    # of a visible size (with all fourteen, each gets a handful of accounts).
    simulation = build(synthetic_base(seed=seed), plan_attacks("classic", size=20), seed=seed, max_events=n_events)
    events = simulation.events
    shift = int(after + 86_400 - events[0]["ts"]) if events and after else 0
    if shift > 0:
        events = [{**event, "ts": event["ts"] + shift} for event in events]
    return [orjson.dumps(event) for event in events], simulation.truth


class DemoFeeder(threading.Thread):
    def __init__(self, settings: Any, guard: Any, n_events: int = 60_000, seed: int = 1):
        super().__init__(name="demo-feeder", daemon=True)
        self.settings, self.guard, self.n_events, self.seed = settings, guard, n_events, seed
        self._stop_event = threading.Event()
        # Seven months of event time in a few minutes of wall time: the quiet-stream clock keeps pace.
        settings.idle_speedup = max(settings.idle_speedup, 600.0)

    def run(self) -> None:
        from streams.produce import make_producer, produce_lines
        from streams.topics import Topics

        lines, truth = demo_events(self.n_events, self.seed)
        seen = self.guard.pipeline.seen._ids  # noqa: SLF001 - the dedupe memory restored with the state
        while lines and orjson.loads(lines[0])["event_id"] in seen:
            # A restart on a new embedded broker keeps what the detectors learned, dedupe ids included: the
            # same stream again would be all duplicates, so the demo goes on with another one, later in event
            # time than what the state has seen.
            self.seed += 1
            log.info("demo: the state has seen this stream already; simulating another (seed %d)", self.seed)
            lines, truth = demo_events(self.n_events, self.seed, after=self.guard.pipeline.watermark)
        attacks = ", ".join(f"{a['family']} ({len(a['entities'][a['entity_kind']])} {a['entity_kind']}s)"
                            for a in truth["attacks"])
        while not self.guard.ready and not self._stop_event.is_set():
            time.sleep(0.2)
        if self._stop_event.is_set():
            return
        rate = self.settings.demo_rate
        log.info("demo: producing %d events at %.0f/s with planted attacks: %s", len(lines), rate, attacks)
        producer = make_producer(self.settings)
        started = time.monotonic()
        try:
            sent = produce_lines(producer, self._until_stopped(lines), Topics.from_settings(self.settings),
                                 rate=rate)
            producer.flush()
        finally:
            producer.close()
        log.info("demo: %d events produced in %.0f s; flags, quarantine and alerts: see the log above, "
                 "`shillguard quarantine list`, and http://%s:%d/metrics", sent, time.monotonic() - started,
                 self.settings.web_host, self.settings.web_port)

    def _until_stopped(self, lines: list[bytes]):
        for line in lines:
            if self._stop_event.is_set():
                return
            yield line

    def stop(self) -> None:
        self._stop_event.set()
