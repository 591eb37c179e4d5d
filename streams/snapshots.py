"""When a worker snapshots its state, what the guard's snapshot holds, and the acknowledgement that follows
it: input is acknowledged (so committed) only once a snapshot covers it."""

from __future__ import annotations

from typing import Any, Iterable

from streams import state as state_module


def interval(settings: Any, cost: float) -> float:
    """Seconds between snapshots: the setting, stretched to 30x the last snapshot's cost (its share of the
    CPU stays small as the state grows)."""
    return max(settings.snapshot_interval_seconds, 30 * cost)


def capture(guard: Any) -> bytes:
    """The guard's pipeline, offsets and what a restart must know (streams.recovery.restore reads it back)."""
    snapshot = state_module.capture(
        guard.pipeline, guard.input_offsets, guard.output_offsets,
        extra={"published": guard.published, "counts": dict(guard.counts), "epoch": guard.epoch,
               "control_offsets": dict(guard.control_offsets), **guard.snapshot_extra()})
    return state_module.dumps(snapshot)


def acknowledge(app: Any, messages: Iterable[Any]) -> None:
    """Acknowledge messages a written snapshot covers (none without a consumer: a unit test's guard)."""
    consumer = app.consumer if app is not None else None
    if consumer is not None:
        for message in messages:
            message.ack(consumer)
