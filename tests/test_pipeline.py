"""The pipeline: decode, dedupe, detect, decide, one micro-batch at a time."""

from __future__ import annotations

from typing import Sequence

import orjson
import pytest

from detectors.base import Detector, Signal
from detectors.decision import DecisionStage
from detectors.events import Event, RatingEvent, Rejection
from detectors.pipeline import Pipeline, SeenIds


class FlagUsers(Detector):
    """Flags the named users as soon as it sees one of their events, and names events it is told to."""

    name = "fake"

    def __init__(self, users: Sequence[str] = (), implicate: Sequence[str] = ()):
        self.users = set(users)
        self.implicate = set(implicate)
        self.seen: list[str] = []
        self.calls: list[tuple[list[str], float]] = []

    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        self.calls.append(([event.event_id for event in events], now))
        signals = []
        for event in events:
            self.seen.append(event.event_id)
            user = getattr(event, "user_id", None)
            if user in self.users:
                signals.append(Signal("user", user, self.name, 0.9, {"seen": len(self.seen)}))
            if event.event_id in self.implicate:
                signals.append(Signal("item", event.item_id, self.name, 0.9, event_ids=(event.event_id,)))
        return signals


def rating(event_id: str, ts: float, user: str = "u1", item: str = "i1") -> bytes:
    return orjson.dumps({"type": "rating", "event_id": event_id, "ts": ts, "user_id": user,
                         "item_id": item, "rating": 4})


def verdicts(step) -> list[tuple[str, str]]:
    return [(o.event.event_id, o.verdict) for o in step.outcomes]


def pipeline(*detectors: Detector, hold: float = 60) -> Pipeline:
    return Pipeline(list(detectors), DecisionStage(hold_seconds=hold))


def test_every_input_line_is_decoded_in_order():
    pipe = pipeline()
    step = pipe.process([rating("a", 1), b"garbage", rating("b", 2)])
    assert [getattr(d, "event_id", None) for d in step.decoded] == ["a", None, "b"]
    assert isinstance(step.decoded[1], Rejection)
    assert step.decoded[1].raw == b"garbage"


def test_str_lines_are_accepted():
    step = pipeline().process([rating("a", 1).decode()])
    assert isinstance(step.decoded[0], RatingEvent)


def test_watermark_is_the_largest_event_time_seen_and_ignores_rejections():
    pipe = pipeline()
    pipe.process([rating("a", 50), rating("b", 20)])
    assert pipe.watermark == 50
    pipe.process([rating("c", 30), b'{"type": "rating", "ts": 99999}'])
    assert pipe.watermark == 50


def test_events_are_held_then_released_clean_as_event_time_passes():
    pipe = pipeline(hold=60)
    assert verdicts(pipe.process([rating("a", 0)])) == []
    assert verdicts(pipe.process([rating("b", 59, user="u2")])) == []
    assert verdicts(pipe.process([rating("c", 60, user="u3")])) == [("a", "clean")]


def test_idle_advances_the_watermark_and_releases_without_input():
    pipe = pipeline(hold=60)
    pipe.process([rating("a", 100)])
    assert verdicts(pipe.idle(30)) == []
    assert pipe.watermark == 130
    step = pipe.idle(30)
    assert verdicts(step) == [("a", "clean")]
    assert step.decoded == [] and step.flags == []


def test_flush_releases_everything_held():
    pipe = pipeline(FlagUsers(users=["bad"]), hold=1e6)
    pipe.process([rating("a", 1), rating("b", 2, user="bad")])
    step = pipe.flush()
    assert verdicts(step) == [("a", "clean"), ("b", "quarantined")]
    assert pipe.decision.held_count == 0
    assert verdicts(pipe.flush()) == []


def test_detector_sees_accepted_events_only_with_the_watermark():
    detector = FlagUsers()
    pipe = pipeline(detector)
    pipe.process([rating("a", 10), b"{", rating("b", 40), rating("a", 50)])
    assert detector.calls == [(["a", "b"], 40.0)]


def test_batch_of_only_rejections_gives_detectors_an_empty_tick():
    detector = FlagUsers()
    pipe = pipeline(detector)
    pipe.process([b"{", b""])
    assert detector.calls == [([], 0.0)]


def test_fake_detector_flag_quarantines_held_events_of_the_user():
    pipe = pipeline(FlagUsers(users=["bad"]), hold=10)
    step = pipe.process([rating("a", 0, user="bad"), rating("b", 0, user="good")])
    assert [(f.kind, f.id) for f in step.flags] == [("user", "bad")]
    assert verdicts(pipe.process([rating("c", 10, user="good")])) == [("a", "quarantined"),
                                                                       ("b", "clean")]


def test_fake_detector_flag_retracts_released_events_of_the_user():
    pipe = pipeline(FlagUsers(users=["bad"]), hold=10)
    pipe.process([rating("a", 0, user="sleeper")])
    assert verdicts(pipe.process([rating("b", 20, user="good")])) == [("a", "clean")]
    pipe.detectors[0].users.add("sleeper")
    step = pipe.process([rating("c", 21, user="sleeper")])
    assert verdicts(step) == [("a", "retracted")]
    assert step.outcomes[0].event.event_id == "a"
    assert verdicts(pipe.flush()) == [("b", "clean"), ("c", "quarantined")]


def test_fake_detector_implicated_event_is_quarantined_alone():
    pipe = pipeline(FlagUsers(implicate=["x"]), hold=0)
    step = pipe.process([rating("x", 5, user="u1"), rating("y", 5, user="u1")])
    assert verdicts(step) == [("x", "quarantined"), ("y", "clean")]
    assert step.outcomes[0].reasons == ["implicated by fake signal on item i1"]


def test_every_accepted_event_gets_exactly_one_final_outcome():
    pipe = pipeline(FlagUsers(users=["bad"]), hold=5)
    lines = [rating(f"e{n}", n, user="bad" if n % 7 == 0 else f"u{n % 3}") for n in range(40)]
    outcomes = []
    for start in range(0, 40, 6):
        outcomes += pipe.process(lines[start:start + 6]).outcomes
    outcomes += pipe.flush().outcomes
    decided = [o.event.event_id for o in outcomes if o.verdict != "retracted"]
    assert sorted(decided) == sorted(f"e{n}" for n in range(40))
    clean = {o.event.event_id for o in outcomes if o.verdict == "clean"}
    retracted = [o.event.event_id for o in outcomes if o.verdict == "retracted"]
    assert set(retracted) <= clean and len(retracted) == len(set(retracted))


def test_duplicate_id_in_the_same_batch_is_rejected():
    step = pipeline().process([rating("a", 1), rating("a", 2)])
    dup = step.decoded[1]
    assert isinstance(dup, Rejection)
    assert dup.reason == "duplicate_event_id: already seen"
    assert dup.event_id == "a" and dup.raw == rating("a", 2)


def test_duplicate_id_across_batches_is_rejected_and_never_decided_twice():
    pipe = pipeline(hold=0)
    first = pipe.process([rating("a", 1)])
    second = pipe.process([rating("a", 1).decode()])
    assert verdicts(first) == [("a", "clean")]
    assert isinstance(second.decoded[0], Rejection)
    assert second.decoded[0].reason.startswith("duplicate_event_id")
    assert second.decoded[0].raw == rating("a", 1)
    assert verdicts(second) == [] and verdicts(pipe.flush()) == []


def test_integer_and_string_ids_are_the_same_id_for_dedupe():
    step = pipeline().process([rating(7, 1), rating("7", 2)])
    assert step.decoded[1].reason.startswith("duplicate_event_id")


def test_rejected_line_does_not_use_up_its_id():
    step = pipeline().process([b'{"type": "rating", "event_id": "a", "ts": 1}', rating("a", 1)])
    assert isinstance(step.decoded[0], Rejection)
    assert isinstance(step.decoded[1], RatingEvent)


def test_seen_ids_forget_the_oldest_beyond_capacity():
    seen = SeenIds(capacity=2)
    assert seen.add("a") and seen.add("b") and seen.add("c")
    assert not seen.add("c") and not seen.add("b")
    assert seen.add("a")  # forgotten


def test_detector_seconds_are_accounted_per_detector():
    class Slow(FlagUsers):
        name = "slow"

        def observe(self, events, now):
            import time
            time.sleep(0.01)
            return []

    pipe = pipeline(FlagUsers(), Slow())
    assert pipe.detector_seconds == {"fake": 0.0, "slow": 0.0}
    pipe.process([rating("a", 1)])
    pipe.process([rating("b", 2)])
    assert pipe.detector_seconds["slow"] >= 0.02
    assert 0 < pipe.detector_seconds["fake"] < pipe.detector_seconds["slow"]


def test_signals_of_every_detector_reach_the_decision_stage():
    class Weak(Detector):
        def __init__(self, name):
            self.name = name

        def observe(self, events, now):
            return [Signal("user", "u1", self.name, 0.3)]

    one = pipeline(Weak("a"))
    assert one.process([rating("x", 1)]).flags == []
    two = pipeline(Weak("a"), Weak("b"))
    assert [(f.id, round(f.score, 2)) for f in two.process([rating("x", 1)]).flags] == [("u1", 0.78)]  # 0.3 and 0.3 at a 5% base rate


def test_detector_snapshot_restore_round_trips_state():
    detector = FlagUsers(users=["bad"])
    pipe = pipeline(detector)
    pipe.process([rating("a", 1), rating("b", 2)])
    state = detector.snapshot()
    assert isinstance(state, bytes)
    fresh = FlagUsers()
    fresh.restore(state)
    assert fresh.seen == ["a", "b"] and fresh.users == {"bad"} and fresh.calls == detector.calls
    # the restored copy carries on independently of the original
    fresh.observe([RatingEvent(event_id="c", ts=3, user_id="u", item_id="i", rating=1)], 3)
    assert detector.seen == ["a", "b"]


def test_detector_interface_requires_observe():
    with pytest.raises(TypeError):
        Detector()
