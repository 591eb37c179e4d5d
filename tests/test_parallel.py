"""Detectors offloaded to a second process: the same outcomes as in process, state that travels, loud failure."""

from __future__ import annotations

import orjson
import pytest

from simulator.build import build, plan_attacks
from simulator.synthetic import synthetic_base
from streams.assembly import build_pipeline
from streams.parallel import DetectorProcess
from streams.settings import Settings
from streams.state import capture, restore_into

GROUPS = "dense_block,lockstep,coordination"
DETECTORS = f"profile,rating_shift,{GROUPS}"


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    simulation = build(synthetic_base(seed=3), plan_attacks("click_farm,review_bomb,average", size=30), seed=3,
                       max_events=30_000)
    return [orjson.dumps(event) for event in simulation.events]


def _run(pipeline, lines: list[bytes], batch: int = 1000) -> tuple[dict[str, str], list[tuple]]:
    steps = [pipeline.process(lines[k:k + batch]) for k in range(0, len(lines), batch)] + [pipeline.flush()]
    return _verdicts_and_flags(pipeline, steps)


def _verdicts_and_flags(pipeline, steps: list) -> tuple[dict[str, str], list[tuple]]:
    """The last word on each event, and the flags raised."""
    verdicts: dict[str, str] = {}
    for step in steps:
        for outcome in step.outcomes:
            verdicts[outcome.event.event_id] = outcome.verdict
    flags = sorted((f.kind, f.id, round(f.score, 6), tuple(sorted(f.detectors.items())))
                   for f in pipeline.decision.flags())
    return verdicts, flags


def test_offloaded_detectors_decide_exactly_as_in_process(lines):
    inline = build_pipeline(Settings(detectors=DETECTORS, offload_detectors=""))
    offloaded = build_pipeline(Settings(detectors=DETECTORS, offload_detectors=GROUPS))
    try:
        assert [d.name for d in inline.detectors] == DETECTORS.split(",")
        assert [d.name for d in offloaded.detectors] == ["profile", "rating_shift"]
        assert offloaded.offloaded[0].names == GROUPS.split(",")
        expected, got = _run(inline, lines), _run(offloaded, lines)
        assert got == expected
        assert any("dense_block" in dict(scores) for *_, scores in got[1])  # the groups were really found
        assert set(offloaded.detector_seconds) == set(DETECTORS.split(","))
        assert offloaded.detector_seconds["dense_block"] > 0
    finally:
        offloaded.close()


def _run_started_ahead(pipeline, lines: list[bytes], batch: int = 1000) -> tuple[dict[str, str], list[tuple]]:
    """As `_run`, each batch started before the one before it is finished (as replay and the worker do)."""
    steps, last = [], None
    for k in range(0, len(lines), batch):
        begun = pipeline.start(lines[k:k + batch])
        assert pipeline.pending == (1 if last is None else 2)
        if last is not None:
            steps.append(pipeline.finish(last))
        last = begun
    steps += [pipeline.finish(last), pipeline.flush()]
    return _verdicts_and_flags(pipeline, steps)


def test_starting_the_next_batch_early_changes_no_outcome(lines):
    """Offloaded detectors working on batch n+1 while batch n is decided: the outcomes of one batch at a time."""
    expected = _run(build_pipeline(Settings(detectors=DETECTORS, offload_detectors="")), lines)
    ahead = build_pipeline(Settings(detectors=DETECTORS, offload_detectors=GROUPS))
    try:
        got = _run_started_ahead(ahead, lines)
        assert got == expected
        assert any("dense_block" in dict(scores) for *_, scores in got[1])
    finally:
        ahead.close()


def test_started_batches_finish_in_order_and_before_a_snapshot(lines):
    pipeline = build_pipeline(Settings(detectors=DETECTORS, offload_detectors=GROUPS))
    try:
        first, second = pipeline.start(lines[:500]), pipeline.start(lines[500:1000])
        with pytest.raises(RuntimeError, match="order"):
            pipeline.finish(second)
        with pytest.raises(RuntimeError, match="before a snapshot"):
            pipeline.snapshot_detectors()
        with pytest.raises(RuntimeError, match="finish the started batches before idle"):
            pipeline.idle(1.0)
        pipeline.finish(first)
        pipeline.finish(second)
        assert pipeline.pending == 0
        assert set(pipeline.snapshot_detectors()) == set(DETECTORS.split(","))
    finally:
        pipeline.close()


def test_detector_state_travels_between_processes(lines):
    """Half the stream offloaded, its state restored into an in-process pipeline for the other half: the same
    outcomes as one uninterrupted run."""
    expected = _run(build_pipeline(Settings(detectors=DETECTORS, offload_detectors="")), lines)
    half = len(lines) // 2
    first = build_pipeline(Settings(detectors=DETECTORS, offload_detectors=GROUPS))
    try:
        early = [first.process(lines[k:min(k + 1000, half)]) for k in range(0, half, 1000)]
        snapshot = capture(first)  # as the worker takes it: detectors, decision stage, position, waiting signals
    finally:
        first.close()
    assert set(snapshot.detectors) == set(DETECTORS.split(","))
    second = build_pipeline(Settings(detectors=DETECTORS, offload_detectors=""))
    snapshot.detectors["retired"] = b""
    assert restore_into(second, snapshot) == ["retired"]
    later, flags = _run(second, lines[half:])
    verdicts = {o.event.event_id: o.verdict for step in early for o in step.outcomes}
    verdicts.update(later)  # the last word on each event, as in _run
    assert (verdicts, flags) == expected


def test_a_failing_child_raises_with_its_traceback():
    group = DetectorProcess(["no_such_detector"])
    try:
        group.submit([], 0.0)
        with pytest.raises(RuntimeError, match="no_such_detector"):
            group.collect()
    finally:
        group.close()
    with pytest.raises(RuntimeError, match="closed"):
        group.submit([], 0.0)


def test_close_ends_the_child():
    group = DetectorProcess(["coordination"])
    group.submit([], 0.0)
    assert group.collect() == [("coordination", [], pytest.approx(0.0, abs=1.0))]
    group.close()
    assert group._process.poll() is not None


def test_the_end_of_the_input_reaches_offloaded_detectors():
    """`flush()` ends a file for good: review_rings, offloaded, judges the thin items still settling (this stream
    is shorter than its settling volume); `flush(final=False)` stops where a live worker would, with none."""
    simulation = build(synthetic_base(seed=4), plan_attacks("collusion", size=40), seed=4, max_events=12_000)
    lines = [orjson.dumps(event) for event in simulation.events]
    members = set(simulation.truth["attacks"][0]["entities"]["user"])
    found = {}
    for final in (False, True):
        pipeline = build_pipeline(Settings(detectors="profile,review_rings", offload_detectors="review_rings"))
        try:
            assert pipeline.offloaded[0].names == ["review_rings"]
            for k in range(0, len(lines), 1000):
                pipeline.process(lines[k:k + 1000])
            pipeline.flush(final)
            found[final] = {f.id for f in pipeline.decision.flags() if f.kind == "user"}
        finally:
            pipeline.close()
    assert not found[False]
    assert found[True] and found[True] <= members
