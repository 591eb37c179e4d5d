"""Detection and decision split into stages (detectors.stages) decide what one pipeline decides: the same
stream, with every classic attack family, duplicates and malformed lines, through one `Pipeline` and through a
detection stage whose points are decided by actor partitions, must give every event the same outcomes and
raise the same flags."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from detectors.base import Signal
from detectors.decision import DecisionStage
from detectors.events import RatingEvent, Rejection, decode_event
from detectors.stages import ActorStage, DetectionStage, SignalLog, actor_key, split_problem

DETECTORS = "profile,rating_shift,dense_block,lockstep,coordination,copies,review_rings,extraction,sweep_coverage"


def crc(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def stream() -> list[bytes]:
    from streams.demo import demo_events

    lines, _ = demo_events(20_000, seed=3)
    # A retried send (same event again) and malformed input, spread through the stream.
    lines = list(lines)
    for at in range(1_000, len(lines), 3_000):
        lines.insert(at, lines[at - 400])
        lines.insert(at + 1, b'{"type": "rating", "event_id": "broken"')
    return lines


def one_pipeline(settings, lines: list[bytes], batch: int):
    from streams.assembly import build_pipeline

    pipeline = build_pipeline(settings)
    outcomes, flags, rejected = [], [], 0
    steps = [pipeline.process(lines[start:start + batch]) for start in range(0, len(lines), batch)]
    steps.append(pipeline.flush())
    for step in steps:
        outcomes += [(o.event.event_id, o.verdict) for o in step.outcomes]
        flags += [(f.kind, f.id, round(f.score, 12), f.updated) for f in step.flags]
        rejected += sum(type(d) is Rejection for d in step.decoded)
    pipeline.close()
    return sorted(outcomes), sorted(flags), rejected


def split_stages(settings, lines: list[bytes], batch: int, partitions: int):
    """Lines arrive on the partition of their actor; the actor partitions hold them (rejecting what does not
    decode) and forward every line to the detection stage, whose points they decide."""
    from streams.assembly import build_decision, build_pipeline

    detection = DetectionStage(build_pipeline(settings, detection_only=True), partitions,
                               lambda key: crc(key, partitions))
    actors = {p: ActorStage(build_decision(settings)) for p in range(partitions)}
    outcomes, flags, rejected = [], [], 0

    def decide(points):
        nonlocal rejected
        for split in points:
            for partition, point in split.items():
                raised, decided, duplicates = actors[partition].decide(point)
                outcomes.extend((o.event.event_id, o.verdict) for o in decided)
                flags.extend((f.kind, f.id, round(f.score, 12), f.updated) for f in raised)
                rejected += len(duplicates)

    for start in range(0, len(lines), batch):
        chunk = lines[start:start + batch]
        sources = []
        for line in chunk:
            decoded = decode_event(line)
            if type(decoded) is Rejection:
                rejected += 1  # the actor partition's dead letter
                sources.append(0)
                continue
            partition = crc(actor_key(decoded), partitions)
            actors[partition].hold(decoded)
            sources.append(partition)
        step = detection.pipeline.process(chunk)
        decide(detection.points(step, sources))
    decide(detection.points(detection.pipeline.flush()))
    detection.pipeline.close()
    for actor in actors.values():
        outcomes.extend((o.event.event_id, o.verdict) for o in actor.decision.flush())
        assert actor.waiting == 0
    return sorted(outcomes), sorted(flags), rejected


@pytest.mark.parametrize("partitions, batch, hold_seconds", [(3, 2048, 600.0), (12, 700, 3 * 86400.0)])
def test_the_split_stages_decide_what_one_pipeline_decides(partitions, batch, hold_seconds):
    """With a short hold flags come after release (retractions), with a long one before (quarantines)."""
    from streams.settings import Settings

    settings = Settings(offload_detectors="", hold_seconds=hold_seconds, detectors=DETECTORS)
    lines = stream()
    outcomes, flags, rejected = one_pipeline(settings, lines, batch)
    split_outcomes, split_flags, split_rejected = split_stages(settings, lines, batch, partitions)
    verdicts = Counter(verdict for _, verdict in outcomes)
    # The comparison means something only if the stream flagged, quarantined and retracted, and had
    # duplicates and broken lines.
    assert len(flags) > 10 and rejected >= 12, (len(flags), rejected)
    assert verdicts["retracted" if hold_seconds < 3600 else "quarantined"] > 50, verdicts
    assert split_outcomes == outcomes
    assert split_flags == flags
    assert split_rejected == rejected


def test_a_point_decides_only_events_it_names_and_deciding_it_again_changes_nothing():
    log = SignalLog()
    early = RatingEvent(event_id="a", ts=0.0, user_id="u1", item_id="i", rating=5)
    late = RatingEvent(event_id="b", ts=1.0, user_id="u1", item_id="i", rating=5)
    log.admit(early)
    log.release(100.0)
    first = log.take()[0]
    log.apply([Signal("user", "u1", "profile", 0.99)], 100.0)
    log.release(100.0)
    second = log.take()[0]
    actor = ActorStage(DecisionStage(hold_seconds=10))
    actor.hold(early)
    actor.hold(late)  # arrived, but the detection stage has not observed it: not released at the first point
    _, outcomes, _ = actor.decide(first)
    assert [(o.event.event_id, o.verdict) for o in outcomes] == [("a", "clean")]
    assert actor.waiting == 1
    flags, outcomes, _ = actor.decide(second)
    assert [f.id for f in flags] == ["u1"] and [(o.event.event_id, o.verdict) for o in outcomes] == [("a", "retracted")]
    # Published again by a restarted detection stage: nothing admitted twice, no flag raised again.
    assert actor.decide(first) == ([], [], []) and actor.decide(second) == ([], [], [])
    assert actor.waiting == 1 and actor.number == 2


def test_a_learning_fusion_does_not_split():
    from streams.assembly import build_decision
    from streams.settings import Settings

    assert split_problem(build_decision(Settings(learn_from_analysts=False))) is None
    assert "learning fusion" in split_problem(build_decision(Settings(learn_from_analysts=True)))


def test_the_detection_stage_keeps_ticking_while_an_event_waits_for_its_point():
    """Idle ticks had moved the watermark past an event that came in late: it still needs a point (else its
    actor partition holds it for ever), so the log still counts as holding."""
    log = SignalLog(hold_seconds=600)
    log.admit(RatingEvent(event_id="a", ts=0.0, user_id="u", item_id="i", rating=3))
    log.release(10_000.0)
    assert log.held_count == 0
    log.admit(RatingEvent(event_id="late", ts=5.0, user_id="u", item_id="i", rating=3))
    assert log.held_count > 0
    log.release(10_001.0)
    assert log.held_count == 0 and log.take()[-1].admitted == ["late"]


def test_an_analysts_release_reaches_the_partition_that_owns_the_entity():
    """Control records ride the next point to the entity's partition: a release there gives back what the
    flag took, as one pipeline's `control` does."""
    from types import SimpleNamespace

    partitions = 4
    owner = crc("u3", partitions)
    log = SignalLog(hold_seconds=10)
    detection = DetectionStage(SimpleNamespace(decision=log, watermark=0.0), partitions,
                               lambda key: crc(key, partitions))
    event = RatingEvent(event_id="e", ts=0.0, user_id="u3", item_id="i", rating=1)
    actors = {p: ActorStage(DecisionStage(hold_seconds=10)) for p in range(partitions)}
    actors[owner].hold(event)
    log.admit(event)
    log.apply([Signal("user", "u3", "profile", 0.99)], 20.0)
    log.release(20.0)

    class Step:
        decoded = [event]

    decided = [actors[p].decide(point) for split in detection.points(Step(), [owner]) for p, point in split.items()]
    assert [(o.event.event_id, o.verdict) for _, outcomes, _ in decided for o in outcomes] == [("e", "quarantined")]
    detection.route([{"action": "release", "kind": "user", "id": "u3", "reason": "false_positive", "by": "ana"}])
    detection.cut()
    (split,) = detection.points(SimpleNamespace(decoded=[]))
    assert [p for p, point in split.items() if point.control] == [owner]
    flags, outcomes, _ = actors[owner].decide(split[owner])
    assert [(f.id, f.status) for f in flags] == [("u3", "released")]
    assert [(o.event.event_id, o.verdict, o.released_by) for o in outcomes] == [("e", "clean", "ana")]
    assert not actors[owner].decision.is_flagged("user", "u3")
