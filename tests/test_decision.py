"""The decision stage: hold, release, quarantine, retract; evidence fusion; bounded state."""

from __future__ import annotations

import pytest

from detectors.base import Signal
from detectors.decision import DecisionStage, Outcome
from detectors.events import CatalogEditEvent, ClickEvent, RatingEvent, RecQueryEvent


def rating(event_id: str, ts: float, user: str = "u1", item: str = "i1") -> RatingEvent:
    return RatingEvent(event_id=event_id, ts=ts, user_id=user, item_id=item, rating=5)


def verdicts(outcomes: list[Outcome]) -> list[tuple[str, str]]:
    return [(o.event.event_id, o.verdict) for o in outcomes]


def flag_user(stage: DecisionStage, user: str = "u1", score: float = 0.9, now: float = 0.0):
    return stage.apply([Signal("user", user, "profile", score, {"why": "test"})], now)


# -- holding and releasing -----------------------------------------------------------------------

def test_event_is_held_until_its_hold_expires():
    stage = DecisionStage(hold_seconds=60)
    stage.admit(rating("a", ts=100))
    assert stage.release(159.9) == []
    assert stage.held_count == 1
    assert verdicts(stage.release(160)) == [("a", "clean")]
    assert stage.held_count == 0


def test_release_is_in_event_time_order_and_each_event_leaves_once():
    stage = DecisionStage(hold_seconds=10)
    for event_id, ts in [("c", 30), ("a", 10), ("b", 20)]:
        stage.admit(rating(event_id, ts))
    assert verdicts(stage.release(35)) == [("a", "clean"), ("b", "clean")]
    assert verdicts(stage.release(35)) == []
    assert verdicts(stage.release(40)) == [("c", "clean")]


def test_late_event_behind_the_watermark_leaves_at_the_next_release():
    stage = DecisionStage(hold_seconds=10)
    stage.admit(rating("new", ts=1000))
    assert stage.release(1000) == []
    stage.admit(rating("old", ts=5))  # out of order: its hold expired long ago
    assert verdicts(stage.release(1000)) == [("old", "clean")]
    assert stage.held_count == 1


def test_events_with_equal_release_time_keep_arrival_order():
    stage = DecisionStage(hold_seconds=0)
    for event_id in "zyx":
        stage.admit(rating(event_id, ts=1))
    assert [o.event.event_id for o in stage.release(1)] == ["z", "y", "x"]


def test_flush_releases_everything_still_held():
    stage = DecisionStage(hold_seconds=1e9)
    stage.admit(rating("a", 1))
    stage.admit(rating("b", 2, user="u2"))
    flag_user(stage, "u2")
    assert verdicts(stage.flush()) == [("a", "clean"), ("b", "quarantined")]
    assert stage.held_count == 0


# -- quarantine of a flagged actor's held events --------------------------------------------------

def test_held_events_of_a_flagged_actor_are_quarantined_with_the_reason():
    stage = DecisionStage(hold_seconds=60)
    stage.admit(rating("a", 0, user="u1"))
    stage.admit(rating("b", 0, user="u2"))
    flags, retracted = flag_user(stage, "u1", 0.9)
    assert retracted == []
    assert [(f.kind, f.id) for f in flags] == [("user", "u1")]
    out = stage.release(60)
    assert verdicts(out) == [("a", "quarantined"), ("b", "clean")]
    assert out[0].reasons == ["user u1 flagged (risk 0.90: profile 0.90)"]
    assert out[1].reasons == []


def test_flagged_actor_stays_flagged_for_later_events():
    stage = DecisionStage(hold_seconds=0)
    flag_user(stage, "u1")
    stage.admit(rating("later", 500))
    assert verdicts(stage.release(500)) == [("later", "quarantined")]
    assert stage.is_flagged("user", "u1")


@pytest.mark.parametrize("event, entity", [
    (ClickEvent(event_id="c", ts=0, user_id="u1", item_id="i1"), ("user", "u1")),
    (CatalogEditEvent(event_id="e", ts=0, item_id="i1", seller_id="s1", title="t"), ("seller", "s1")),
    (RecQueryEvent(event_id="q", ts=0, client_id="c1", seed_items=["i1"], k=5), ("client", "c1")),
])
def test_each_event_type_is_tainted_by_its_actor(event, entity):
    stage = DecisionStage(hold_seconds=0)
    stage.admit(event)
    stage.apply([Signal(entity[0], entity[1], "d", 0.9)])
    assert verdicts(stage.release(0)) == [(event.event_id, "quarantined")]


def test_query_is_not_tainted_by_its_flagged_end_user_only_by_its_client():
    stage = DecisionStage(hold_seconds=0)
    stage.admit(RecQueryEvent(event_id="q", ts=0, client_id="c1", user_id="u1", seed_items=[], k=5))
    flag_user(stage, "u1")
    assert verdicts(stage.release(0)) == [("q", "clean")]


def test_item_flags_taint_nothing():
    stage = DecisionStage(hold_seconds=60)
    stage.admit(rating("a", 0, item="i1"))
    stage.release(60)
    stage.admit(rating("b", 10, item="i1"))
    flags, retracted = stage.apply([Signal("item", "i1", "bomb", 0.99)])
    assert [(f.kind, f.id) for f in flags] == [("item", "i1")]
    assert retracted == []
    assert verdicts(stage.release(70)) == [("b", "clean")]


# -- retraction ----------------------------------------------------------------------------------

def test_released_events_are_retracted_when_the_actor_is_flagged_later():
    stage = DecisionStage(hold_seconds=0)
    first, second = rating("a", 1), rating("b", 2)
    stage.admit(first)
    stage.admit(second)
    stage.admit(rating("other", 3, user="u2"))
    assert [o.verdict for o in stage.release(3)] == ["clean"] * 3
    _, retracted = flag_user(stage, "u1", 0.8)
    assert verdicts(retracted) == [("a", "retracted"), ("b", "retracted")]
    assert retracted[0].event == first and retracted[1].event == second  # the payload travels with it
    assert retracted[0].reasons == ["user u1 flagged (risk 0.80: profile 0.80)"]


def test_an_event_is_retracted_at_most_once():
    stage = DecisionStage(hold_seconds=0)
    stage.admit(rating("a", 1))
    stage.release(1)
    _, first = flag_user(stage, "u1", 0.6)
    _, again = flag_user(stage, "u1", 0.95)  # stronger evidence re-announces the flag, not the retraction
    assert verdicts(first) == [("a", "retracted")]
    assert again == []


def test_retraction_reaches_back_only_as_far_as_the_horizon():
    stage = DecisionStage(hold_seconds=0, retraction_horizon=100)
    stage.admit(rating("a", 10))
    stage.release(10)
    stage.admit(rating("x", 500, user="u2"))  # time moves on past the horizon of "a"
    stage.release(500)
    _, retracted = flag_user(stage, "u1", now=500)
    assert retracted == []


def test_retraction_inside_the_horizon_still_happens():
    stage = DecisionStage(hold_seconds=0, retraction_horizon=1000)
    stage.admit(rating("a", 10))
    stage.release(10)
    stage.admit(rating("x", 500, user="u2"))
    stage.release(500)
    _, retracted = flag_user(stage, "u1", now=500)
    assert verdicts(retracted) == [("a", "retracted")]


def test_an_active_entity_keeps_only_its_events_inside_the_horizon():
    stage = DecisionStage(hold_seconds=0, retraction_horizon=100)
    stage.admit(rating("old", 10))
    stage.release(10)
    stage.admit(rating("recent", 450))
    stage.release(450)
    stage.admit(rating("x", 500, user="u2"))
    stage.release(500)  # horizon is now 400: "old" is past it, "recent" is not
    _, retracted = flag_user(stage, "u1", now=500)
    assert verdicts(retracted) == [("recent", "retracted")]


def test_a_flag_retracts_a_recent_stretch_unless_its_evidence_condemns_the_whole_history():
    def stage_with_history() -> DecisionStage:
        stage = DecisionStage(hold_seconds=0, retraction_horizon=1000, recent_retraction=100)
        for event_id, ts in (("old", 10), ("recent", 450)):
            stage.admit(rating(event_id, ts))
            stage.release(ts)
        return stage

    stage = stage_with_history()
    _, retracted = flag_user(stage, "u1", now=500)  # profile statistics: the last 100 s only
    assert verdicts(retracted) == [("recent", "retracted")]
    copy = Signal("user", "u1", "copies", 0.9, {"why": "copy"}, whole_history=True)
    _, retracted = stage.apply([copy], 600)  # later: a copy from birth, so the rest goes too
    assert verdicts(retracted) == [("old", "retracted")]
    assert stage.apply([copy], 700)[1] == []  # nothing twice

    stage = stage_with_history()
    _, retracted = stage.apply([copy], 500)
    assert sorted(verdicts(retracted)) == [("old", "retracted"), ("recent", "retracted")]


def test_expired_entities_leave_no_retraction_state():
    stage = DecisionStage(hold_seconds=0, retraction_horizon=100)
    for n in range(50):
        stage.admit(rating(f"e{n}", n, user=f"u{n}"))
    stage.release(50)
    assert len(stage._released_by_id) == 50
    stage.admit(rating("late", 1000, user="late"))
    stage.release(1000)
    assert set(stage._released_by_id) == {"late"}
    assert list(stage._released) == [("user", "late")]


def test_max_released_per_entity_bounds_the_retraction_index():
    stage = DecisionStage(hold_seconds=0, max_released_per_entity=2)
    for n, ts in enumerate([1, 2, 3]):
        stage.admit(rating(f"e{n}", ts))
    stage.release(3)
    assert len(stage._released_by_id) == 2
    _, retracted = flag_user(stage, "u1")
    assert verdicts(retracted) == [("e1", "retracted"), ("e2", "retracted")]


# -- signals that name events ---------------------------------------------------------------------

def test_implicated_held_event_is_quarantined_and_its_neighbours_are_not():
    stage = DecisionStage(hold_seconds=60)
    stage.admit(rating("bomb", 0, user="u1"))
    stage.admit(rating("honest", 0, user="u2"))
    stage.apply([Signal("item", "i1", "bomb", 0.9, event_ids=("bomb",))])
    out = stage.release(60)
    assert verdicts(out) == [("bomb", "quarantined"), ("honest", "clean")]
    assert out[0].reasons == ["implicated by bomb signal on item i1"]
    assert not stage.is_flagged("user", "u1")


def test_implicated_released_event_is_retracted():
    stage = DecisionStage(hold_seconds=0)
    stage.admit(rating("bomb", 0, user="u1"))
    stage.admit(rating("keep", 0, user="u1"))
    stage.release(0)
    _, retracted = stage.apply([Signal("item", "i1", "bomb", 0.9, event_ids=("bomb",))])
    assert verdicts(retracted) == [("bomb", "retracted")]
    assert retracted[0].reasons == ["implicated by bomb signal on item i1"]
    # the rest of the user's released events stay retractable
    _, later = flag_user(stage, "u1")
    assert verdicts(later) == [("keep", "retracted")]


def test_implicated_events_are_honoured_on_an_entity_already_flagged():
    # A detector keeps naming new events against an item it already flagged, with the same score.
    stage = DecisionStage(hold_seconds=60)
    stage.admit(rating("first", 0, user="u1"))
    stage.admit(rating("second", 0, user="u2"))
    stage.apply([Signal("item", "i1", "bomb", 0.9, event_ids=("first",))])
    flags, _ = stage.apply([Signal("item", "i1", "bomb", 0.9, event_ids=("second",))])
    assert flags == []  # nothing new about the item itself
    assert verdicts(stage.release(60)) == [("first", "quarantined"), ("second", "quarantined")]


def test_implicated_events_below_the_threshold_are_not_condemned():
    stage = DecisionStage(hold_seconds=0, flag_threshold=0.5)
    stage.admit(rating("a", 0))
    stage.apply([Signal("item", "i1", "bomb", 0.2, event_ids=("a",))])
    assert verdicts(stage.release(0)) == [("a", "clean")]


def test_implicating_events_that_are_not_held_keeps_no_state():
    stage = DecisionStage(hold_seconds=0)
    stage.admit(rating("a", 0))
    flag_user(stage, "u1")
    stage.apply([Signal("item", "i1", "bomb", 0.9, event_ids=("a", "never-seen"))])
    assert verdicts(stage.release(0)) == [("a", "quarantined")]
    assert stage._implicated == {}


# -- fusion and flags -----------------------------------------------------------------------------

def test_one_weak_detector_does_not_flag():
    stage = DecisionStage(flag_threshold=0.5)
    flags, _ = stage.apply([Signal("user", "u1", "a", 0.3)])
    assert flags == [] and not stage.is_flagged("user", "u1")


def test_repeated_weak_signals_from_one_detector_do_not_add_up():
    stage = DecisionStage(flag_threshold=0.5)
    flags, _ = stage.apply([Signal("user", "u1", "a", 0.3)] * 5)
    assert flags == []


def odds(p: float) -> float:
    return p / (1 - p)


def posterior(*scores: float, prior: float = 0.05) -> float:
    """Naive Bayes over independent detectors: each score is a posterior at `prior`."""
    o = odds(prior)
    for score in scores:
        o *= odds(score) / odds(prior)
    return o / (1 + o)


def test_independent_weak_detectors_add_up_as_evidence():
    stage = DecisionStage(flag_threshold=0.5)
    flags, _ = stage.apply([Signal("user", "u1", "a", 0.3), Signal("user", "u1", "b", 0.3)])
    assert len(flags) == 1
    assert flags[0].score == pytest.approx(posterior(0.3, 0.3))  # 0.78
    assert flags[0].detectors == {"a": 0.3, "b": 0.3}


def test_weak_independent_evidence_that_stays_below_the_threshold_does_not_flag():
    stage = DecisionStage(flag_threshold=0.5)
    flags, _ = stage.apply([Signal("user", "u1", "a", 0.15), Signal("user", "u1", "b", 0.15)])
    assert posterior(0.15, 0.15) < 0.5 and flags == []


@pytest.mark.parametrize("threshold", [0.4, 0.5, 0.7])
def test_a_weak_detector_alone_gives_the_same_outcomes_at_any_usual_threshold(threshold):
    stage = DecisionStage(hold_seconds=0, flag_threshold=threshold)
    stage.admit(rating("a", 0, user="u1"), rating("b", 0, user="u2"))
    flags, _ = stage.apply([Signal("user", "u1", "weak", 0.2), Signal("user", "u2", "weak", 0.35)])
    assert flags == []
    assert verdicts(stage.release(0)) == [("a", "clean"), ("b", "clean")]


def test_evidence_below_the_prior_is_ignored_not_exculpatory():
    stage = DecisionStage(flag_threshold=0.5)
    flags, _ = stage.apply([Signal("user", "u1", "a", 0.9), Signal("user", "u1", "b", 0.01)])
    assert flags[0].score == pytest.approx(0.9)


def test_each_detector_counts_with_its_strongest_score():
    stage = DecisionStage(flag_threshold=0.5)
    stage.apply([Signal("user", "u1", "a", 0.3)])
    stage.apply([Signal("user", "u1", "a", 0.1)])  # weaker news does not lower the score
    flags, _ = stage.apply([Signal("user", "u1", "b", 0.3)])
    assert flags[0].score == pytest.approx(posterior(0.3, 0.3))


def test_signals_about_different_entities_do_not_mix():
    stage = DecisionStage(flag_threshold=0.5)
    flags, _ = stage.apply([Signal("user", "u1", "a", 0.3), Signal("user", "u2", "b", 0.3),
                            Signal("item", "u1", "b", 0.3)])
    assert flags == []


def test_flag_is_reannounced_only_when_stronger():
    stage = DecisionStage()
    first, _ = flag_user(stage, score=0.7)
    same, _ = flag_user(stage, score=0.7)
    weaker, _ = flag_user(stage, score=0.6)
    stronger, _ = stage.apply([Signal("user", "u1", "other", 0.5)])
    assert [f.updated for f in first] == [False]
    assert same == [] and weaker == []
    assert len(stronger) == 1 and stronger[0].updated
    assert stronger[0].score == pytest.approx(posterior(0.7, 0.5))
    assert stage.flags()[0].detectors == {"profile": 0.7, "other": 0.5}


def test_flag_record_carries_score_detectors_evidence_and_first_ts():
    stage = DecisionStage()
    (flag,), _ = stage.apply([Signal("seller", "s1", "catalog", 0.87654, {"near_duplicates": 3})], 42.0)
    assert flag.as_dict() == {"kind": "seller", "id": "s1", "score": 0.8765, "detectors": ["catalog"],
                              "detector_scores": {"catalog": 0.8765},
                              "evidence": {"catalog": {"near_duplicates": 3}}, "first_ts": 42.0}


def test_unflag_lets_future_events_flow_and_forgets_the_risk():
    stage = DecisionStage(hold_seconds=0)
    flag_user(stage, "u1", 0.9)
    flag, _ = stage.unflag("user", "u1")
    assert flag is not None and flag.status == "released"
    assert not stage.is_flagged("user", "u1")
    stage.admit(rating("after", 10))
    assert verdicts(stage.release(10)) == [("after", "clean")]
    flags, _ = stage.apply([Signal("user", "u1", "other", 0.3)])
    assert flags == []  # the old 0.9 is gone, not fused with the new 0.3


def test_unflag_of_an_unknown_entity_releases_nothing():
    assert DecisionStage().unflag("user", "nobody") == (None, [])


def test_quiet_unflagged_risk_is_forgotten_after_the_horizon():
    stage = DecisionStage(hold_seconds=0, retraction_horizon=100)
    stage.apply([Signal("user", "u1", "a", 0.3)], now=0)
    stage.admit(rating("x", 1000, user="u2"))
    stage.release(1000)
    flags, _ = stage.apply([Signal("user", "u1", "b", 0.3)], now=1000)
    assert flags == []
    assert ("user", "u1") in stage._risk and ("user", "u2") not in stage._risk


def test_recent_unflagged_risk_is_kept():
    stage = DecisionStage(hold_seconds=0, retraction_horizon=100)
    stage.apply([Signal("user", "u1", "a", 0.3)], now=950)
    stage.admit(rating("x", 1000, user="u2"))
    stage.release(1000)
    flags, _ = stage.apply([Signal("user", "u1", "b", 0.3)], now=1000)
    assert len(flags) == 1


def test_flags_are_never_expired():
    stage = DecisionStage(hold_seconds=0, retraction_horizon=100)
    flag_user(stage, "u1", now=0)
    stage.admit(rating("x", 10_000, user="u2"))
    stage.release(10_000)
    stage.admit(rating("y", 10_001, user="u1"))
    assert verdicts(stage.release(10_001)) == [("y", "quarantined")]


def test_announced_flags_are_snapshots_not_live_objects():
    stage = DecisionStage()
    (first,), _ = flag_user(stage, score=0.6)
    flag_user(stage, score=0.9)
    assert first.score == pytest.approx(0.6) and first.updated is False


def test_flag_raised_and_strengthened_in_one_batch_is_announced_once_as_new():
    stage = DecisionStage()
    flags, _ = stage.apply([Signal("user", "u1", "a", 0.6), Signal("user", "u1", "b", 0.5)])
    assert len(flags) == 1
    assert flags[0].score == pytest.approx(posterior(0.6, 0.5)) and flags[0].updated is False
