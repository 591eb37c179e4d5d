"""Decisions that flow back into detection: the control topic's records through `Pipeline.control`, the
worker's control agent, the trainer's restorations, the store's entity decisions and accounts."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import orjson
import pytest

from detectors.base import Signal
from detectors.decision import DecisionStage
from detectors.events import RatingEvent
from detectors.pipeline import Pipeline
from streams.decisions import control_record, decide, parse_entity
from streams.settings import Settings
from streams.store import open_store
from streams.topics import Topics
from postgres_schema import fresh_schema


def rating(event_id: str, ts: float, user: str = "u1", item: str = "i1") -> RatingEvent:
    return RatingEvent(event_id=event_id, ts=ts, user_id=user, item_id=item, rating=5)


def line(event_id: str, ts: float, user: str = "u1") -> bytes:
    return orjson.dumps({"type": "rating", "event_id": event_id, "ts": ts, "user_id": user, "item_id": "i1",
                         "rating": 5})


def verdicts(outcomes) -> list[tuple[str, str]]:
    return [(o.event.event_id, o.verdict) for o in outcomes]


# -- the decision stage -------------------------------------------------------------------------------

def flagged_stage() -> DecisionStage:
    """u1 flagged at 100: 'old' (released clean at 10) retracted, 'held' quarantined when its hold ends."""
    stage = DecisionStage(hold_seconds=10)
    stage.admit(rating("old", 0))
    assert verdicts(stage.release(10)) == [("old", "clean")]
    stage.admit(rating("held", 95))
    _, retracted = stage.apply([Signal("user", "u1", "profile", 0.9, {"z": 5})], now=100)
    assert verdicts(retracted) == [("old", "retracted")]
    assert verdicts(stage.release(105)) == [("held", "quarantined")]
    return stage


def test_a_release_gives_back_what_the_flag_took():
    stage = flagged_stage()
    flag, given = stage.unflag("user", "u1", by="ana", reason="false_positive", at=7.0, note="a tester")
    assert sorted(verdicts(given)) == [("held", "clean"), ("old", "restored")]
    assert all(o.released_by == "ana" and o.reasons == ["released by ana: false_positive"] for o in given)
    assert flag.status == "released" and flag.as_dict()["status"] == "released"
    assert flag.history == [{"action": "release", "by": "ana", "reason": "false_positive", "at": 7.0,
                             "note": "a tester"}]
    assert stage.unflag("user", "u1") == (None, [])  # given back once
    stage.admit(rating("later", 200))
    assert verdicts(stage.release(210)) == [("later", "clean")]  # later events flow


def test_only_evidence_beyond_what_the_analyst_reviewed_flags_again_and_the_release_stays_in_history():
    stage = flagged_stage()
    stage.unflag("user", "u1", by="ana", at=7.0)
    flags, _ = stage.apply([Signal("user", "u1", "profile", 0.9, {"z": 5})], now=300)  # the same evidence
    assert flags == [] and not stage.is_flagged("user", "u1")
    stage.admit(rating("after", 290))
    (flag,), retracted = stage.apply([Signal("user", "u1", "profile", 0.97, {"z": 9})], now=310)
    assert stage.is_flagged("user", "u1") and flag.status == "open"
    assert [entry["action"] for entry in flag.history] == ["release"]
    assert verdicts(stage.release(300)) == [("after", "quarantined")]


def test_confirm_keeps_the_flag_and_records_the_decision():
    stage = flagged_stage()
    flag = stage.confirm("user", "u1", by="bo", reason="true_positive", at=3.0)
    assert flag.status == "confirmed" and stage.is_flagged("user", "u1")
    assert flag.as_dict()["history"][0]["action"] == "confirm"
    assert stage.confirm("user", "nobody", by="bo") is None


# -- the pipeline's control entry -----------------------------------------------------------------------

def test_pipeline_control_applies_signals_releases_and_confirms():
    pipeline = Pipeline([], DecisionStage(hold_seconds=10))
    pipeline.process([line("a", 0), line("b", 5, "u2")])
    signal = {"action": "signal", "kind": "user", "id": "u1", "detector": "exposure", "score": 0.95,
              "by": "trainer", "ts": 1.0, "evidence": {"why": "exposure jump"}}
    step = pipeline.control([signal, {"action": "nonsense", "kind": "user", "id": "u1"}, {"action": "release"}])
    assert [(f.kind, f.id, f.evidence) for f in step.flags] == [("user", "u1", {"exposure": {"why": "exposure jump"}})]
    assert verdicts(pipeline.process([line("c", 30, "u3")]).outcomes) == [("a", "quarantined"), ("b", "clean")]
    step = pipeline.control([control_record("confirm", "user:u2", "true_positive", by="bo"),
                             control_record("release", "user:u1", "false_positive", by="ana")])
    assert [(f.id, f.status) for f in step.flags] == [("u1", "released")]  # u2 is not flagged
    assert verdicts(step.outcomes) == [("a", "clean")]
    assert not pipeline.decision.is_flagged("user", "u1")


# -- the worker ------------------------------------------------------------------------------------------

class Publisher(list):
    in_flight = 0

    def add(self, topic, key, value, headers):
        self.append((topic, key, value, dict(headers or [])))

    async def send(self):
        pass

    async def wait(self):
        return {}


def test_the_worker_applies_control_records_and_publishes_what_a_release_gives_back(tmp_path):
    settings = Settings(state_dir=tmp_path, detectors="profile", offload_detectors="", hold_seconds=10,
                        snapshot_interval_seconds=3600, decide_every=0)
    topics = Topics.from_settings(settings)
    from streams.agents import Guard

    guard = Guard(settings, topics)
    guard._publisher = sent = Publisher()  # noqa: SLF001
    guard.restored = guard.assigned = True

    def message(topic, offset, value):
        return SimpleNamespace(topic=topic, partition=0, offset=offset, timestamp=time.time(), value=value)

    signal = orjson.dumps({"action": "signal", "kind": "user", "id": "u1", "detector": "exposure", "score": 0.95})
    release = orjson.dumps(control_record("release", "user:u1", "false_positive", by="ana", note="tester"))

    async def run() -> None:
        await guard._process([message(topics.ratings, 0, line("e0", 0))])  # noqa: SLF001
        await guard._process([message(topics.ratings, 1, line("e1", 20))])  # noqa: SLF001 - e0 leaves clean
        await guard.control([message(topics.control, 0, signal)])  # u1 flagged: e0 retracted
        await guard._process([message(topics.ratings, 2, line("e2", 40))])  # noqa: SLF001 - e1 quarantined
        await guard._finish_started()  # noqa: SLF001
        before = len(sent)
        await guard.control([message(topics.control, 1, release), message(topics.control, 1, release)])
        given = sent[before:]
        assert sorted((topic, h.get("released_by")) for topic, _, _, h in given if topic != topics.flags) == [
            (topics.clean, b"ana"), (topics.retracted, b"ana")]
        restored = next(orjson.loads(v) for t, _, v, _ in given if t == topics.retracted)
        assert restored["verdict"] == "restored" and restored["event_id"] == "e0"
        (flag,) = [orjson.loads(v) for t, _, v, _ in given if t == topics.flags]
        assert flag["status"] == "released" and flag["history"][0]["note"] == "tester"
        await guard.snapshot()
        snapshot = guard.state_dir.load()
        assert snapshot.extra["control_offsets"] == {(topics.control, 0): 2}
        assert not snapshot.decision.is_flagged("user", "u1")

    try:
        asyncio.run(run())
    finally:
        guard.pipeline.close()
    assert guard.metrics.control.labels("release")._value.get() == 1  # the redelivered one skipped


# -- the trainer -----------------------------------------------------------------------------------------

def test_the_trainer_learns_restored_events_again(tmp_path):
    from trainer.log import InteractionLog
    from trainer.sources import FileSource

    log = InteractionLog()
    log.add([rating("e1", 1), rating("e2", 2)])
    log.retract(["e1", "e3"])
    assert log.n_active == 1
    retracted = tmp_path / "retractions.jsonl"
    retracted.write_bytes(b"\n".join(orjson.dumps(r) for r in [
        {"event_id": "e1", "verdict": "restored", "reasons": ["released by ana"], "event": {}},
        {"event_id": "e2", "verdict": "retracted", "reasons": ["flagged"], "event": {}}]) + b"\n")
    events = tmp_path / "clean.jsonl"
    events.write_bytes(b"")
    (batch,) = [b for b in FileSource(events, retracted).batches() if b.restored or b.retractions]
    assert [r["event_id"] for r in batch.restored] == ["e1"] and [r["event_id"] for r in batch.retractions] == ["e2"]
    assert log.restore(["e1", "e3"]).tolist() == [0]
    assert log.n_active == 2 and "e3" not in log.pending_retractions
    log.add([rating("e3", 3)])  # no longer dropped on arrival
    assert log.n_active == 3


# -- the store: entities, decisions, accounts --------------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request, tmp_path):
    """The store on both backends (PostgreSQL in a schema of its own, dropped afterwards)."""
    if request.param == "sqlite":
        yield open_store(f"sqlite:///{tmp_path}/q.db")
        return
    with fresh_schema() as url:
        store = open_store(url)
        yield store
        store.close()


def test_entity_decisions_and_their_audit(store):
    flag = {"kind": "user", "id": "u1", "score": 0.9, "detector_scores": {"profile": 0.9}, "first_ts": 5.0}
    store.upsert_flag(flag)
    sent = []
    decide(store, lambda key, record: sent.append((key, record)), "release", "user:u1", "false_positive",
           by="ana", note="a tester")
    assert sent[0][0] == "user:u1" and sent[0][1]["action"] == "release"
    assert store.entity("user:u1")["status"] == "released"
    store.upsert_flag({**flag, "status": "released"})
    assert store.entity("user:u1")["status"] == "released"
    store.upsert_flag({**flag, "score": 0.97})  # newer evidence flags it again
    assert store.entity("user:u1")["status"] == "open"
    store.assign("user:u1", "bo", who="ana")
    assert store.entity("user:u1")["assignee"] == "bo"
    assert [(a["action"], a["actor"], a["reason"]) for a in store.entity_audit(["user:u1"])] == [
        ("release", "ana", "false_positive"), ("assign", "ana", "bo")]
    with pytest.raises(ValueError):
        decide(store, lambda *_: None, "release", "user:u1", "no reason", by="ana")
    with pytest.raises(ValueError):
        parse_entity("u1")


def test_accounts_tokens_are_hashed_and_sessions_expire(store):
    token = store.add_user("ana", "analyst")
    assert store.authenticate(token) == {"name": "ana", "role": "analyst"}
    assert store.authenticate("wrong") is None and store.authenticate(None) is None
    rows = store._execute("SELECT token_sha256 FROM users")  # noqa: SLF001
    assert token not in str(rows)
    sid, csrf = store.open_session("ana")
    assert store.session(sid) == {"name": "ana", "role": "analyst", "csrf": csrf}
    store.close_session(sid)
    assert store.session(sid) is None
    expired, _ = store.open_session("ana", hours=-1)
    assert store.session(expired) is None
    again = store.add_user("ana", "viewer")  # a new token replaces the old
    assert store.authenticate(token) is None and store.authenticate(again)["role"] == "viewer"
    with pytest.raises(ValueError):
        store.add_user("x", "root")


def test_analysts_labels_train_the_fusion_and_set_the_threshold_within_the_budget():
    from detectors.learned_fusion import LearnedFusion

    fusion = LearnedFusion(prior=0.05, min_labels=10, budget=25.0)
    stage = DecisionStage(hold_seconds=0, fusion=fusion)
    pipeline = Pipeline([], stage)
    pipeline.position = 200_000  # genuine events seen: 25 per million allow 5 expected false flags
    for n in range(40):  # "noisy" flags real users, analysts release them; "solid" finds rings they confirm
        stage.apply([Signal("user", f"n{n}", "noisy", 0.9), Signal("user", f"s{n}", "solid", 0.9)])
        pipeline.control([control_record("release", f"user:n{n}", "false_positive", by="ana"),
                          control_record("confirm", f"user:s{n}", "true_positive", by="ana")])
    weights = fusion.learned_weights()
    assert weights["noisy"] < 0.5 < 1.0 < weights["solid"]
    assert fusion.labels == 80
    flags, _ = stage.apply([Signal("user", "fresh-noisy", "noisy", 0.95)])
    assert flags == []  # what analysts kept releasing no longer flags
    flags, _ = stage.apply([Signal("user", "fresh-solid", "solid", 0.9)])
    assert [f.id for f in flags] == ["fresh-solid"]
    assert 0.3 <= stage.flag_threshold <= 1.0
    # a duplicate or an escalation is no label
    pipeline.control([control_record("escalate", "user:s1", "true_positive", by="ana"),
                      control_record("release", "user:s2", "duplicate", by="ana")])
    assert fusion.labels == 80


def test_the_threshold_rises_when_the_budget_allows_fewer_false_flags():
    from detectors.learned_fusion import LearnedFusion

    fusion = LearnedFusion(min_labels=0)
    population = [{"a": 0.6}] * 50 + [{"a": 0.99}] * 5
    generous = fusion.calibrate(population, genuine_events=1_000_000, budget=100.0)
    strict = fusion.calibrate(population, genuine_events=1_000_000, budget=1.0)
    assert generous <= 0.6 < strict


def test_replay_applies_control_records_as_the_worker_does(tmp_path):
    """`replay --control FILE`: the same Pipeline.control after the input; released events end clean."""
    from streams.replay import replay

    lines = [line(f"a{k}", k * 10.0, "u1") for k in range(5)] + [line(f"b{k}", k * 10.0, "u2") for k in range(5)]
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    signals = [{"action": "signal", "kind": "user", "id": who, "detector": "exposure", "score": 0.97}
               for who in ("u1", "u2")]

    def run(control, out):
        return replay(tmp_path / "events.jsonl", tmp_path / out, Pipeline([], DecisionStage(hold_seconds=15)),
                      batch_size=3, control=control)

    flagged = run(signals, "flagged")  # after the input: u1's and u2's released events retracted, held ones kept
    assert flagged["counts"]["quarantined"] + flagged["counts"]["retracted"] == 10 and flagged["flags"] == {"user": 2}
    assert flagged["counts"]["retracted"] > 0
    summary = run(signals + [control_record("release", "user:u1", "false_positive", by="ana")], "released")
    verdicts = {r["event_id"]: r for r in map(orjson.loads, (tmp_path / "released" / "verdicts.jsonl").read_bytes().splitlines())}
    assert [verdicts[f"a{k}"]["verdict"] for k in range(5)] == ["clean"] * 5
    assert verdicts["a0"]["reasons"] == ["released by ana: false_positive"]
    assert [verdicts[f"b{k}"]["verdict"] for k in range(5)] == ["quarantined"] * 5
    assert summary["counts"]["clean"] == 5 and summary["flags"] == {"user": 1}
    assert summary["counts"]["quarantined"] + summary["counts"]["retracted"] == 5
    assert len((tmp_path / "released" / "clean.jsonl").read_bytes().splitlines()) == 5
