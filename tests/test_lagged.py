"""Lagged detectors: their signals reach the decision stage a fixed number of decision points late, at the
same place whatever the batches, and a lagged process is not waited for until its answer is due."""

from __future__ import annotations

from typing import Sequence

import orjson
import pytest

from detectors.base import Detector, Signal
from detectors.decision import DecisionStage
from detectors.events import Event
from detectors.pipeline import Pipeline
from streams.assembly import build_pipeline
from streams.settings import Settings
from streams.state import capture, restore_into
from test_parallel import lines  # noqa: F401 - its stream fixture


class FlagAt(Detector):
    """Flags user `user` when it sees event `event_id`."""

    def __init__(self, name: str, event_id: str, user: str):
        self.name, self.event_id, self.user = name, event_id, user

    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        return [Signal("user", self.user, self.name, 0.9, {}) for e in events if e.event_id == self.event_id]


def stream(n: int = 100) -> list[bytes]:
    return [orjson.dumps({"type": "rating", "event_id": f"e{k}", "ts": float(k), "user_id": f"u{k % 7}",
                          "item_id": "i1", "rating": 4}) for k in range(n)]


def flagged_at(pipeline: Pipeline, lines: list[bytes], batch: int) -> dict[str, int]:
    """For each flagged user, the input lines decided when its flag was raised (line k has event time k - 1,
    and a flag carries the event time of the decision that raised it)."""
    at: dict[str, int] = {}
    for k in range(0, len(lines), batch):
        for flag in pipeline.process(lines[k:k + batch]).flags:
            at.setdefault(flag.id, int(flag.first_ts) + 1)
    return at


@pytest.mark.parametrize("batch", [1, 7, 33, 100])
def test_a_lagged_flag_lands_lag_decision_points_later_wherever_batches_end(batch):
    def build(lag: int) -> Pipeline:
        return Pipeline([FlagAt("now", "e12", "u5"), FlagAt("late", "e45", "u3")], DecisionStage(hold_seconds=5),
                        decide_every=10, lagged=["late"], lag=lag)

    # e45 is in the lines up to the decision point at 50: with a lag of two it is applied at 70
    assert flagged_at(build(2), stream(), batch) == {"u5": 20, "u3": 70}
    assert flagged_at(build(0), stream(), batch) == {"u5": 20, "u3": 50}


def test_a_lagged_flag_still_quarantines_or_retracts_and_flush_applies_what_is_in_hand():
    pipeline = Pipeline([FlagAt("late", "e95", "u4")], DecisionStage(hold_seconds=5), decide_every=10,
                        lagged=["late"], lag=3)
    steps = [pipeline.process(stream()[k:k + 10]) for k in range(0, 100, 10)]
    assert not any(step.flags for step in steps)  # due at 120, after the input's end
    final = pipeline.flush()
    assert [flag.id for flag in final.flags] == ["u4"]
    retracted = {o.event.event_id for o in final.outcomes if o.verdict == "retracted"}
    assert "e4" in retracted  # an early event of u4, released before the flag: taken back


def test_an_idle_tick_applies_the_lagged_signals_in_hand():
    pipeline = Pipeline([FlagAt("late", "e35", "u0")], DecisionStage(hold_seconds=500), decide_every=10,
                        lagged=["late"], lag=16)
    assert not any(pipeline.process(stream(40)[k:k + 10]).flags for k in range(0, 40, 10))
    idle = pipeline.idle(1.0)  # no input to hold up: the flag comes now, while u0's events are still held
    assert [flag.id for flag in idle.flags] == ["u0"]
    assert not [o for o in idle.outcomes if o.verdict == "retracted"]


class Recorder:
    """An offloaded group that answers at once, recording when it was asked."""

    def __init__(self, names: list[str]):
        self.names, self.submitted, self.collected = names, 0, 0

    def submit(self, lines: list, now: float, final: bool = False) -> None:
        self.submitted += 1

    def collect(self) -> list[tuple[str, list[Signal], float]]:
        assert self.collected < self.submitted
        self.collected += 1
        return [(name, [], 0.0) for name in self.names]

    def snapshot(self) -> dict[str, bytes]:
        assert self.collected == self.submitted, "a snapshot with answers in flight"
        return {name: b"" for name in self.names}

    def restore(self, states: dict[str, bytes]) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_lagged_process_is_collected_only_when_its_answer_is_due():
    slow, fast = Recorder(["catalog"]), Recorder(["graph"])
    pipeline = Pipeline([], DecisionStage(hold_seconds=5), offloaded=[slow, fast], decide_every=10,
                        lagged=["catalog"], lag=2)
    for k in range(0, 60, 10):
        pipeline.process(stream()[k:k + 10])
        assert fast.collected == fast.submitted == k // 10 + 1  # waited for at every batch
        assert slow.submitted == k // 10 + 1
        assert slow.collected == max(0, k // 10 - 1)  # the parts up to two decision points back
    pipeline.snapshot_detectors()  # takes the answers in flight first
    assert slow.collected == slow.submitted
    with pytest.raises(ValueError, match="share a process"):
        Pipeline([], DecisionStage(), offloaded=[Recorder(["catalog", "graph"])], decide_every=10,
                 lagged=["catalog"], lag=2)


def _raised(pipeline: Pipeline, lines: list[bytes], batch: int = 1000) -> tuple[dict[str, str], list[tuple]]:
    """The last word on each event, and every flag as raised: entity, detectors, and the event time at which
    it was raised (which the lag moves)."""
    steps = [pipeline.process(lines[k:k + batch]) for k in range(0, len(lines), batch)] + [pipeline.flush()]
    return _outcomes(steps)


def _outcomes(steps: list) -> tuple[dict[str, str], list[tuple]]:
    verdicts = {o.event.event_id: o.verdict for step in steps for o in step.outcomes}
    raised = [(f.kind, f.id, tuple(sorted(f.detectors)), f.first_ts) for step in steps for f in step.flags]
    return verdicts, raised


def test_lagged_detectors_decide_alike_in_process_offloaded_and_across_a_snapshot(lines):  # noqa: F811
    group = "dense_block,lockstep,coordination"
    settings = dict(detectors=f"profile,rating_shift,{group}", decide_every=500, lagged_detectors=group,
                    detector_lag=3)
    inline = build_pipeline(Settings(**settings, offload_detectors=""))
    assert inline.lag_lines == 1500
    expected = _raised(inline, lines)
    not_lagged = _raised(build_pipeline(Settings(**{**settings, "detector_lag": 0}, offload_detectors="")), lines)
    assert expected[1] != not_lagged[1]  # the lag moves when flags are raised: the comparisons below can fail
    offloaded = build_pipeline(Settings(**settings, offload_detectors=group))
    try:
        assert _raised(offloaded, lines) == expected
    finally:
        offloaded.close()
    # Snapshot while lagged signals are in hand, restore into a pipeline that runs them in another process,
    # go on: as one uninterrupted run
    first = build_pipeline(Settings(**settings, offload_detectors=""))
    early, done = [], 0
    while not first.late and done < len(lines):
        early.append(first.process(lines[done:done + 250]))
        done += 250
    snapshot = capture(first)
    assert snapshot.extra["late"] and done < len(lines)
    second = build_pipeline(Settings(**settings, offload_detectors=group))
    try:
        restore_into(second, snapshot)
        later = [second.process(lines[k:k + 1000]) for k in range(done, len(lines), 1000)] + [second.flush()]
    finally:
        second.close()
    assert _outcomes(early + later) == expected
