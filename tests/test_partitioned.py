"""The decision stage split by actor partition (detectors.partitioned) decides what one stage decides: on a
simulated stream with every attack family, the same detectors' signals go to one `DecisionStage` and to a
`PartitionedDecision` side by side, and every answer of the two must agree, decision point by decision point."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from detectors.base import Signal
from detectors.decision import DecisionStage
from detectors.events import RatingEvent
from detectors.partitioned import PartitionedDecision


def verdicts(outcomes: list) -> list[tuple[str, str]]:
    return sorted((outcome.event.event_id, outcome.verdict) for outcome in outcomes)


def flag_keys(flags: list) -> list[tuple]:
    return sorted((flag.kind, flag.id, round(flag.score, 12), flag.updated) for flag in flags)


class SideBySide:
    """One stage and the partitioned stages, fed the same calls; each answer is compared."""

    def __init__(self, one: DecisionStage, split: PartitionedDecision):
        self.one, self.split = one, split
        self.seen: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:  # fusion, flag_threshold: the one stage's
        return getattr(self.one, name)

    def admit(self, *events: Any) -> None:
        self.one.admit(*events)
        self.split.admit(*events)

    def apply(self, signals: Any, now: float = 0.0) -> tuple[list, list]:
        signals = list(signals)
        flags, retracted = self.one.apply(signals, now)
        split_flags, split_retracted = self.split.apply(signals, now)
        assert flag_keys(split_flags) == flag_keys(flags)
        assert verdicts(split_retracted) == verdicts(retracted)
        self.seen["signals"] += len(signals)
        self.seen["flags"] += len(flags)
        self.seen["retracted"] += len(retracted)
        return flags, retracted

    def release(self, watermark: float) -> list:
        out = self.one.release(watermark)
        assert verdicts(self.split.release(watermark)) == verdicts(out)
        self.seen.update(outcome.verdict for outcome in out)
        assert self.split.held_count == self.one.held_count
        return out

    def flush(self) -> list:
        out = self.one.flush()
        assert verdicts(self.split.flush()) == verdicts(out)
        self.seen.update(outcome.verdict for outcome in out)
        return out

    @property
    def held_count(self) -> int:
        return self.one.held_count


@pytest.mark.parametrize("partitions, hold_seconds", [(3, 600.0), (12, 3 * 86400.0)])
def test_partitioned_decisions_equal_one_stage_on_a_stream_with_attacks(partitions, hold_seconds):
    """With a short hold flags come after release (retractions), with a long one before (quarantines)."""
    from streams.assembly import build_pipeline
    from streams.demo import demo_events
    from streams.settings import Settings

    settings = Settings(offload_detectors="", hold_seconds=hold_seconds,
                        detectors="profile,rating_shift,dense_block,lockstep,coordination,copies,extraction,"
                                  "sweep_coverage")
    pipeline = build_pipeline(settings)

    def stage() -> DecisionStage:
        return DecisionStage(hold_seconds=settings.hold_seconds, flag_threshold=settings.flag_threshold,
                             retraction_horizon=settings.retraction_horizon_seconds,
                             recent_retraction=settings.recent_retraction_seconds)

    side = SideBySide(stage(), PartitionedDecision.build(partitions, stage))
    pipeline.decision = side
    lines, _ = demo_events(20_000, seed=3)
    for start in range(0, len(lines), 2048):
        pipeline.process(lines[start:start + 2048])
    pipeline.flush()
    assert side.split.held_count == 0
    seen = side.seen
    # The comparison means something only if the stream flagged, quarantined and retracted.
    assert seen["flags"] > 10 and seen["quarantined"] + seen["retracted"] > 50, seen
    assert seen["clean"] + seen["quarantined"] == len(lines), seen  # the demo stream has no rejections


def test_an_implication_crosses_partitions_to_the_events_holder():
    """A signal on an item names a user's held event and another user's released one: both stages act."""
    split = PartitionedDecision.build(4, lambda: DecisionStage(hold_seconds=60))
    users = [f"u{n}" for n in range(40)]
    item = "i7"
    held_user = next(u for u in users if split.partition_of(u, 4) != split.partition_of(item, 4))
    released_user = next(u for u in users if split.partition_of(u, 4) not in
                         (split.partition_of(item, 4), split.partition_of(held_user, 4)))
    split.admit(RatingEvent(event_id="early", ts=0.0, user_id=released_user, item_id=item, rating=5))
    assert verdicts(split.release(60.0)) == [("early", "clean")]
    split.admit(RatingEvent(event_id="late", ts=100.0, user_id=held_user, item_id=item, rating=5))
    flags, retracted = split.apply([Signal("item", item, "crowd", 0.95, event_ids=("early", "late"))], 100.0)
    assert [(f.kind, f.id) for f in flags] == [("item", item)]
    assert verdicts(retracted) == [("early", "retracted")]
    assert verdicts(split.release(160.0)) == [("late", "quarantined")]
    assert not split.is_flagged("user", held_user)


def test_a_worker_holding_some_partitions_refuses_events_of_the_others():
    stages = {0: DecisionStage(), 1: DecisionStage()}
    split = PartitionedDecision(stages, 4)
    foreign_user = next(f"u{n}" for n in range(100) if split.partition_of(f"u{n}", 4) >= 2)
    with pytest.raises(ValueError, match="not held here"):
        split.admit(RatingEvent(event_id="x", ts=0.0, user_id=foreign_user, item_id="i", rating=3))


def test_an_analysts_release_and_confirmation_reach_the_entitys_stage():
    split = PartitionedDecision.build(4, lambda: DecisionStage(hold_seconds=60))
    split.admit(RatingEvent(event_id="e", ts=0.0, user_id="u3", item_id="i", rating=1))
    split.apply([Signal("user", "u3", "profile", 0.99)], 0.0)
    assert verdicts(split.release(60.0)) == [("e", "quarantined")]
    confirmed = split.confirm("user", "u3", by="ana")
    assert confirmed is not None and confirmed.status == "confirmed"
    flag, given_back = split.unflag("user", "u3", by="ana", reason="false_positive")
    assert flag is not None and verdicts(given_back) == [("e", "clean")]
    assert not split.is_flagged("user", "u3") and split.flags() == []
