"""What the partitioned topology could gain: the CPU per event of the work that partitions by actor (stage A:
decode, dedupe, the decision stage) and of the work that needs the whole stream (stage B: every detector).

    python benchmarks/stage_split.py [--events FILE] [--n 60000] [--partitions 12] [--detectors a,b]

Runs the pipeline in one process (no offloaded detectors, so every figure is this process's CPU) over the
stream, the decision stage split into `--partitions` actor partitions (detectors.partitioned, which decides
what one stage decides), and reports each part's CPU microseconds per event. Stage A scales with workers;
stage B (one process, or one per detector group as `offload_detectors` runs them today) bounds the whole: N
stage-A workers and one stage B drain at most min(N / A, 1 / B) events/s, where A and B are CPU seconds per
event (publishing to Kafka, about what decode costs, is not included). Also the state each part would hold
at the end: the detectors' snapshot, and each actor partition's decision stage with its dedupe ids (what a
rebalance would move). Without --events: the demo stream
(`streams.demo.demo_events`, a synthetic base with the nine classic attack families).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


class Timed:
    """A detector or the decision stage, the CPU time of its calls counted (process time: on a loaded
    machine the pipeline's own wall-clock `detector_seconds` count time spent descheduled)."""

    def __init__(self, inner: object):
        self.inner = inner
        self.seconds = 0.0

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def timed(*args: object, **kwargs: object) -> object:
            started = time.process_time()
            try:
                return attribute(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - started

        return timed


def _accepted(lines: list[bytes]) -> list[tuple[str, str]]:
    """(event id, actor id) of each line that decodes (the demo stream has no duplicates)."""
    from detectors.events import ACTOR_FIELD, Rejection, decode_event

    out = []
    for line in lines:
        event = decode_event(line)
        if not isinstance(event, Rejection):
            out.append((event.event_id, getattr(event, ACTOR_FIELD[type(event)][1])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, default=None)
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--detectors", default=None, help="comma-separated (default: the configured set)")
    args = parser.parse_args()

    from detectors.decision import DecisionStage
    from detectors.state_pickle import dumps_state
    from detectors.events import decode_event
    from detectors.partitioned import PartitionedDecision
    from detectors.pipeline import SeenIds
    from streams.assembly import build_pipeline
    from streams.demo import demo_events
    from streams.settings import Settings

    lines = args.events.read_bytes().splitlines() if args.events else demo_events(args.n, seed=1)[0]
    lines = [line for line in lines if line.strip()]
    settings = Settings(offload_detectors="")
    if args.detectors:
        settings.detectors = args.detectors
    pipeline = build_pipeline(settings)

    def stage() -> DecisionStage:
        return DecisionStage(hold_seconds=settings.hold_seconds, flag_threshold=settings.flag_threshold,
                             retraction_horizon=settings.retraction_horizon_seconds,
                             recent_retraction=settings.recent_retraction_seconds)

    decision = Timed(PartitionedDecision.build(args.partitions, stage))
    pipeline.decision = decision  # type: ignore[assignment]
    detectors = [Timed(detector) for detector in pipeline.detectors]
    pipeline.detectors = detectors  # type: ignore[assignment]
    started = time.process_time()
    for start in range(0, len(lines), settings.batch_size):
        pipeline.process(lines[start:start + settings.batch_size])
    pipeline.flush()
    total = time.process_time() - started
    detector_bytes = sum(len(state) for state in pipeline.snapshot_detectors().values())
    pipeline.close()
    # The state that would follow each actor partition on a rebalance: its decision stage and its dedupe ids.
    ids_of: dict[int, list[str]] = {}
    for event_id, actor_id in _accepted(lines):
        ids_of.setdefault(decision.inner.partition_of(actor_id, args.partitions), []).append(event_id)
    partition_bytes = [len(dumps_state((decision.inner.stages[p], ids_of.get(p, []))))
                       for p in range(args.partitions)]

    started = time.process_time()  # decode and dedupe alone: both stages pay it
    seen = SeenIds(settings.dedupe_capacity)
    for line in lines:
        event = decode_event(line)
        seen.add(getattr(event, "event_id", ""))
    decode = time.process_time() - started

    n = len(lines)
    seconds_of = {timed.inner.name: timed.seconds for timed in detectors}
    detecting = sum(seconds_of.values())
    stage_a = decode + decision.seconds
    stage_b = decode + detecting
    us = 1e6 / n
    print(f"{n} events, decision split in {args.partitions} partitions; CPU microseconds per event:")
    print(f"  whole pipeline, one process   {total * us:8.1f}")
    print(f"  decode + dedupe               {decode * us:8.1f}   (both stages)")
    print(f"  decision stage                {decision.seconds * us:8.1f}")
    for name, seconds in sorted(seconds_of.items(), key=lambda item: -item[1]):
        print(f"    detector {name:<20} {seconds * us:8.1f}")
    print(f"  stage A (per actor partition) {stage_a * us:8.1f}   -> {1 / stage_a * n:9,.0f} events/s per worker core")
    print(f"  stage B (whole stream)        {stage_b * us:8.1f}   -> {1 / stage_b * n:9,.0f} events/s, one core")
    print(f"  stage B share of the work     {stage_b / (stage_a + stage_b):8.1%}   (the partitioned topology's "
          f"ceiling with one stage B is 1/B)")
    print(f"state after the stream (dumps_state): the detectors' {detector_bytes / 1e6:.1f} MB (stage B); per actor "
          f"partition (decision stage and dedupe ids) {min(partition_bytes) / 1e6:.2f}-{max(partition_bytes) / 1e6:.2f} MB, "
          f"{sum(partition_bytes) / 1e6:.1f} MB in all, {sum(partition_bytes) / n:.0f} bytes per event")


if __name__ == "__main__":
    main()
