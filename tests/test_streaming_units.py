"""The streaming service's parts that need no broker: OCSF mapping, client actions, the quarantine store,
the webhook's retries, event-time alignment, routing, settings and snapshots."""

from __future__ import annotations

import asyncio
import pickle

import orjson
import pytest

from fake_broker import Batch
from streams.align import EventTimeAligner, event_time
from streams.broker import bootstrap_servers, faust_broker_url, kafka_python_config
from streams.produce import route
from streams.settings import Settings
from streams.sinks import AlertSink, Webhook, client_action, finding_uid, ocsf_finding
from streams.state import Snapshot, StateDir, dumps
from streams.store import NotFound, open_store
from streams.topics import Topics

FLAG = {"kind": "user", "id": "u7", "score": 0.93, "detectors": ["profile", "rating_shift"],
        "detector_scores": {"profile": 0.9, "rating_shift": 0.3},
        "evidence": {"profile": {"anomaly_z": 4.1}, "rating_shift": {"g": 12.0}}, "first_ts": 100.0}


def outcome(event_id: str, verdict: str = "quarantined", user: str = "u1") -> dict:
    return {"event_id": event_id, "verdict": verdict, "reasons": [f"user {user} flagged"],
            "event": {"type": "rating", "event_id": event_id, "ts": 10.0, "user_id": user, "item_id": "i1",
                      "rating": 5.0}}


# -- OCSF ---------------------------------------------------------------------------------------
def test_ocsf_detection_finding_carries_the_required_attributes():
    finding = ocsf_finding(FLAG, created=True, now=1_700_000_000.0)
    for name in ("activity_id", "category_uid", "class_uid", "type_uid", "time", "severity_id", "metadata",
                 "finding_info"):
        assert name in finding, name  # OCSF 1.1 Detection Finding: required attributes
    assert (finding["class_uid"], finding["category_uid"], finding["type_uid"]) == (2004, 2, 200401)
    assert finding["metadata"]["version"].startswith("1.")
    assert finding["metadata"]["product"]["name"] == "shillguard"
    assert finding["finding_info"]["uid"] == "shillguard:user:u7"
    assert finding["finding_info"]["first_seen_time"] == 100_000
    assert finding["time"] == 1_700_000_000_000
    assert finding["severity"] == "High" and finding["severity_id"] == 4
    assert [e["data"]["detector"] for e in finding["evidences"]] == ["profile", "rating_shift"]
    assert finding["evidences"][0]["data"]["evidence"] == {"anomaly_z": 4.1}
    assert finding["resources"] == [{"uid": "u7", "type": "user", "name": "u7"}]
    orjson.dumps(finding)  # serialisable as is


def test_ocsf_update_is_activity_2_with_the_same_uid():
    created, updated = ocsf_finding(FLAG, True), ocsf_finding({**FLAG, "score": 0.99}, False)
    assert (updated["activity_id"], updated["type_uid"], updated["activity_name"]) == (2, 200402, "Update")
    assert updated["finding_info"]["uid"] == created["finding_info"]["uid"]


def test_ocsf_severity_follows_risk_and_items_are_victims():
    low = ocsf_finding({**FLAG, "score": 0.55}, True)
    item = ocsf_finding({**FLAG, "kind": "item", "id": "i1", "score": 0.95}, True)
    assert (low["severity_id"], item["severity_id"]) == (2, 3)


def test_a_group_named_in_evidence_is_one_finding_updated_as_members_join():
    store = open_store("sqlite://")
    sink = AlertSink(store, metrics=None)
    member = lambda uid: {**FLAG, "id": uid, "evidence": {"dense_block": {"block": "dense_block-3"}}}  # noqa: E731
    first, second = sink.findings([member("u1"), member("u2")])
    assert finding_uid(member("u1")) == "shillguard:group:dense_block:dense_block-3"
    assert first["activity_id"] == 1 and second["activity_id"] == 2
    assert first["finding_info"]["uid"] == second["finding_info"]["uid"]
    assert {r["uid"] for r in second["resources"]} == {"u1", "u2"}
    # a plain entity flag seen again is an update too
    again = sink.findings([FLAG, FLAG])
    assert [f["activity_id"] for f in again] == [1, 2]


def test_client_action_only_where_a_detector_proposed_one():
    flag = {**FLAG, "kind": "client", "id": "c1",
            "evidence": {"extraction": {"action": {"type": "throttle", "max_qps": 0.5}}}}
    assert client_action(flag) == {"client_id": "c1", "action": {"type": "throttle", "max_qps": 0.5},
                                   "detector": "extraction", "score": 0.93, "first_ts": 100.0}
    assert client_action({**flag, "evidence": {"extraction": {}}}) is None
    assert client_action(FLAG) is None


# -- quarantine store ---------------------------------------------------------------------------
def test_store_is_idempotent_and_audits_every_decision(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/q.db")
    assert store.add([outcome("e1"), outcome("e2", "retracted")]) == 2
    assert store.add([outcome("e1"), outcome("e3")]) == 1  # redelivery: e1 again
    assert [r["event_id"] for r in store.list()] == ["e1", "e2", "e3"]
    assert store.list(actor="user:u1")[0]["actor_id"] == "u1"
    store.release("e1", who="ana", why="real fan")
    store.confirm("e2", who="bo", why="ring", label="shilling")
    assert store.count("pending") == 1
    assert store.get("e2")["label"] == "shilling"
    assert [(a["action"], a["actor"]) for a in store.audit("e1")] == [("quarantined", "shillguard"),
                                                                      ("released", "ana")]
    with pytest.raises(ValueError):
        store.release("e3", who="", why="no one")
    with pytest.raises(NotFound):
        store.get("nope")
    store.close()
    reopened = open_store(f"sqlite:///{tmp_path}/q.db")  # durable
    assert reopened.count() == 3


def test_store_url_forms():
    with pytest.raises(ValueError):
        open_store("mysql://x")


# -- webhook --------------------------------------------------------------------------------------
def test_webhook_retries_server_errors_then_delivers():
    from aiohttp import web

    calls = []

    async def handler(request):
        calls.append(await request.json())
        return web.Response(status=503 if len(calls) < 3 else 200)

    async def scenario():
        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        hook = Webhook(f"http://127.0.0.1:{port}/hook", retries=4, timeout=2, backoff=0.01)
        try:
            delivered = await hook.post({"a": 1})
            refused = Webhook(f"http://127.0.0.1:{port}/missing", retries=3, timeout=2, backoff=0.01)
            not_found = await refused.post({"a": 2})
            await refused.close()
            return delivered, not_found
        finally:
            await hook.close()
            await runner.cleanup()

    delivered, not_found = asyncio.run(scenario())
    assert delivered and len(calls) == 3 and calls[0] == {"a": 1}
    assert not not_found  # 404: not retried, reported


def test_webhook_gives_up_after_its_retries():
    async def scenario():
        hook = Webhook("http://127.0.0.1:9/unreachable", retries=2, timeout=0.5, backoff=0.01)
        try:
            return await hook.post({"a": 1})
        finally:
            await hook.close()

    assert asyncio.run(scenario()) is False


# -- alignment, routing, settings, snapshots ----------------------------------------------------------
def test_aligner_waits_for_a_lagging_partition_then_gives_up():
    aligner = EventTimeAligner(max_wait=1.0)
    aligner.add("a", 0, 5.0, "a5")
    aligner.add("b", 0, 1.0, "b1")
    aligner.add("a", 1, 9.0, "a9")
    lagging = {"b"}
    assert aligner.release(lambda tp: tp in lagging, now=0.0) == ["b1"]  # b may still send ts >= 1
    assert aligner.release(lambda tp: tp in lagging, now=0.5) == []
    assert aligner.release(lambda tp: tp in lagging, now=1.6) == ["a5", "a9"]  # waited long enough
    assert len(aligner) == 0


def test_aligner_keeps_waiting_while_other_partitions_deliver():
    """A restarted worker gets whole fetches of some partitions before the first of others: while input
    arrives the aligner waits for the laggard however long that takes, and gives up only on a true stall."""
    aligner = EventTimeAligner(max_wait=1.0)
    aligner.track(["slow"])
    lagging = {"slow"}
    for second in range(5):  # five seconds of input from "fast", none from "slow"
        aligner.add("fast", second, 100.0 + second, f"f{second}")
        assert aligner.release(lambda tp: tp in lagging, now=float(second)) == []
    aligner.add("slow", 0, 50.0, "s50")
    lagging.clear()
    assert aligner.release(lambda tp: tp in lagging, now=5.0) == ["s50", "f0", "f1", "f2", "f3", "f4"]
    assert aligner.forced == 0


def test_aligner_gives_up_when_too_much_waits():
    aligner = EventTimeAligner(max_wait=1.0, max_queued=3)
    aligner.track(["slow"])
    for offset in range(4):
        aligner.add("fast", offset, 10.0 + offset, offset)
    assert aligner.release(lambda tp: tp == "slow", now=0.0) == [0, 1, 2, 3]
    assert aligner.forced == 1


def test_event_time_of_odd_lines():
    assert event_time(b'{"ts": 3}') == 3.0
    assert event_time(b"not json") == float("-inf")
    assert event_time(b'{"ts": "3"}') == float("-inf")
    assert event_time(b"[1]") == float("-inf")


def test_route_by_type_and_actor():
    topics = Topics.from_settings(Settings())
    assert route(b'{"type": "rating", "user_id": "u1"}', topics) == ("events.ratings", b"u1")
    assert route(b'{"type": "catalog_edit", "seller_id": 7}', topics) == ("events.catalog", b"7")
    assert route(b'{"type": "rec_query", "client_id": "c"}', topics) == ("events.queries", b"c")
    assert route(b"garbage", topics) == ("events.ratings", None)  # still becomes a dead letter
    assert route(b'{"type": "nope"}', topics) == ("events.ratings", None)


def test_broker_settings():
    settings = Settings(broker="kafka://k1:9092,k2:9093", broker_security_protocol="SASL_SSL",
                        broker_sasl_mechanism="SCRAM-SHA-512", broker_sasl_username="u",
                        broker_sasl_password="p")
    assert bootstrap_servers(settings) == ["k1:9092", "k2:9093"]
    assert faust_broker_url(settings) == "kafka://k1:9092;kafka://k2:9093"
    config = kafka_python_config(settings)
    assert config["sasl_plain_password"] == "p" and config["security_protocol"] == "SASL_SSL"
    assert bootstrap_servers(Settings(embedded_listen="127.0.0.1:1234")) == ["127.0.0.1:1234"]


def test_snapshot_round_trip_and_incarnation(tmp_path):
    from streams.assembly import build_pipeline

    state = StateDir(tmp_path, "t", key=b"k" * 32)
    first = state.incarnation()
    assert state.incarnation() == first
    pipeline = build_pipeline(Settings())
    pipeline.process([b'{"type": "rating", "event_id": "e1", "ts": 1, "user_id": "u", "item_id": "i", '
                      b'"rating": 5}'])
    snapshot = Snapshot({("events.ratings", 0): 1}, {("events.clean", 0): 0},
                        {d.name: d.snapshot() for d in pipeline.detectors}, pipeline.decision,
                        (10, ["e1"]), pipeline.watermark)
    state.save_bytes(dumps(snapshot))
    loaded = state.load()
    assert loaded.input_offsets == {("events.ratings", 0): 1}
    assert loaded.decision.held_count == 1
    state.discard()
    assert state.load() is None and state.incarnation() != first
    pickle.dumps(loaded)


def test_a_snapshot_not_signed_with_the_key_is_never_unpickled(tmp_path):
    """Whoever can write the state directory but lacks SHILLGUARD_STATE_KEY cannot make the worker unpickle
    (so run) anything: a forged, tampered or unsigned file is rejected before pickle sees it."""
    from streams.state import MAGIC, SnapshotRejected

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    state = StateDir(tmp_path, "t", key=b"k" * 32)
    state.snapshot_path.write_bytes(pickle.dumps(Boom()))  # an unsigned pickle
    with pytest.raises(SnapshotRejected, match="not a signed snapshot"):
        state.load()
    StateDir(tmp_path, "t", key=b"x" * 32).save_bytes(pickle.dumps(Boom()))  # signed with another key
    with pytest.raises(SnapshotRejected, match="signature does not match"):
        state.load()
    state.save_bytes(pickle.dumps({"fine": 1}))
    data = bytearray(state.snapshot_path.read_bytes())
    data[len(MAGIC) + 40] ^= 1  # one bit of the payload
    state.snapshot_path.write_bytes(bytes(data))
    with pytest.raises(SnapshotRejected):
        state.load()


def test_snapshot_key_comes_from_a_secret_and_none_is_made_up_for_a_cluster(tmp_path):
    from streams.state import snapshot_key

    with pytest.raises(ValueError, match="SHILLGUARD_STATE_KEY is not set"):
        snapshot_key(Settings(broker="kafka://k:9092", state_key=None))
    with pytest.raises(ValueError, match="too short"):
        snapshot_key(Settings(state_key="short"))
    assert snapshot_key(Settings(broker="kafka://k:9092", state_key="s" * 32)) == b"s" * 32
    key_file = tmp_path / "conf" / "state.key"
    laptop = Settings(state_key_file=key_file)  # embedded broker: a random key, kept outside the state dir
    key = snapshot_key(laptop)
    assert len(key) == 64 and snapshot_key(laptop) == key and key_file.stat().st_mode & 0o077 == 0
    assert key != snapshot_key(Settings(state_key_file=tmp_path / "other.key"))


def test_secrets_are_never_printed():
    from streams.store import open_store

    settings = Settings(db="postgresql://guard:hunter2@db.example:5432/q", broker_sasl_password="hunter2",
                        webhook_url="https://hooks.example/T0K3N", state_key="k" * 32)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert "T0K3N" not in repr(settings) and "k" * 32 not in repr(settings)
    with pytest.raises(ValueError) as error:
        open_store("mysql://guard:hunter2@db/q")
    assert "hunter2" not in str(error.value)
    with pytest.raises(RuntimeError) as error:
        open_store("postgresql://guard:hunter2@127.0.0.1:1/q?connect_timeout=2")  # nothing listens on port 1
    assert "hunter2" not in str(error.value) and "guard:***@127.0.0.1:1" in str(error.value)


def test_aligner_holds_back_for_an_assigned_partition_not_heard_from():
    aligner = EventTimeAligner(max_wait=1.0)
    aligner.track(["quiet", "slow"])
    aligner.add("fast", 0, 50.0, "f50")
    has_data = {"slow"}  # "quiet" proved empty; "slow" has data on the broker but has not delivered yet
    assert aligner.release(lambda tp: tp in has_data, now=0.0) == []
    aligner.add("slow", 0, 10.0, "s10")
    has_data.clear()
    assert aligner.release(lambda tp: tp in has_data, now=0.1) == ["s10", "f50"]


def test_after_a_restart_an_event_published_clean_but_condemned_now_is_retracted_once(tmp_path):
    """What a previous run published after its last snapshot is not published again; a clean verdict that
    the restarted pipeline now quarantines still stands, so the event is retracted, and only once."""
    import orjson

    from detectors.decision import Outcome
    from detectors.events import RatingEvent
    from detectors.pipeline import Step
    from streams.agents import Guard
    from streams.settings import Settings
    from streams.topics import Topics

    class Sent(list):
        def add(self, topic, key, value, headers):
            self.append((topic, orjson.loads(value) if topic != topics.clean else value))

    settings = Settings(state_dir=tmp_path, detectors="profile", offload_detectors="")
    topics = Topics.from_settings(settings)
    guard = Guard(settings, topics)
    guard._publisher = sent = Sent()  # noqa: SLF001
    events = {name: RatingEvent(event_id=name, ts=1.0, user_id="u", item_id="i", rating=5) for name in "abcd"}
    guard.published.decided.update({"a": "clean", "b": "clean", "c": "quarantined"})
    guard.published.retracted.add("b")  # b was retracted before the kill too
    guard._publish(Step(outcomes=[Outcome("quarantined", events[name], ["user u flagged"]) for name in "abcd"]))
    assert [(topic, record["event_id"], record["verdict"]) for topic, record in sent] == [
        (topics.retracted, "a", "retracted"), (topics.quarantined, "d", "quarantined")]
    assert not guard.published
    guard.pipeline.close()


def test_no_idle_tick_while_an_assigned_partition_has_not_been_fetched(tmp_path):
    """Right after a (re)start the consumer has not heard from its partitions: that is not a quiet stream,
    and an idle tick then would push event time ahead of what is waiting on the broker."""
    import time

    from faust.types import TP as FaustTP

    from streams.agents import Guard

    class Consumer:
        highwaters: dict = {}

        def assignment(self):
            return set(self.highwaters)

        def highwater(self, tp):
            return self.highwaters[tp]

    class App:
        consumer = Consumer()

    settings = Settings(state_dir=tmp_path, detectors="profile", offload_detectors="", hold_seconds=3600,
                        snapshot_interval_seconds=3600)
    topics = Topics.from_settings(settings)
    guard = Guard(settings, topics)
    guard.app, guard.restored, guard.assigned = App(), True, True
    guard.pipeline.process([b'{"type": "rating", "event_id": "e", "ts": 1000, "user_id": "u", "item_id": "i", '
                            b'"rating": 5}'])
    tp = FaustTP(topics.ratings, 0)
    App.consumer.highwaters = {tp: None}
    guard.last_input = guard.last_idle = time.monotonic() - 100
    asyncio.run(guard._tick())  # noqa: SLF001
    assert guard.pipeline.watermark == 1000  # not fetched yet: no idle tick
    App.consumer.highwaters = {tp: 0}  # fetched: nothing more there, so the stream is quiet
    time.sleep(0.06)  # past the guard's 50 ms cache of high watermarks
    asyncio.run(guard._tick())  # noqa: SLF001
    assert guard.pipeline.watermark >= 1000 + 100 * settings.idle_speedup
    guard.pipeline.close()


def test_a_batch_started_is_finished_by_the_next_by_the_timer_or_before_a_snapshot(tmp_path):
    """The worker starts each batch before it finishes the one before (its detector processes work on the
    next meanwhile): the last batch's outcomes still leave once no batch follows, and a snapshot covers it."""
    import time
    from types import SimpleNamespace

    from streams.agents import Guard

    class Publisher(list):
        in_flight = 0

        def add(self, topic, key, value, headers):
            self.append(topic)

        async def send(self):
            pass

        async def wait(self):
            return {}

    settings = Settings(state_dir=tmp_path, detectors="profile", offload_detectors="", hold_seconds=0,
                        snapshot_interval_seconds=3600, decide_every=10)  # a decision point at each batch's end
    topics = Topics.from_settings(settings)
    guard = Guard(settings, topics)
    guard._publisher = sent = Publisher()  # noqa: SLF001
    guard.restored = guard.assigned = True

    def batch(first: int, n: int) -> list:
        return [SimpleNamespace(topic=topics.ratings, partition=0, offset=k, timestamp=time.time(), value=orjson.dumps(
            {"type": "rating", "event_id": f"e{k}", "ts": 1000 + k, "user_id": f"u{k % 7}", "item_id": f"i{k % 5}",
             "rating": 4})) for k in range(first, first + n)]

    async def run() -> None:
        await guard._process(batch(0, 10))  # noqa: SLF001
        assert sent.count(topics.clean) == 0 and guard.pipeline.pending == 1
        await guard._process(batch(10, 10))  # noqa: SLF001
        assert sent.count(topics.clean) == 10 and guard.pipeline.pending == 1
        guard.last_input = time.monotonic()
        await guard._tick()  # noqa: SLF001 - input just came: the next batch may be on its way
        assert sent.count(topics.clean) == 10
        guard.last_input -= settings.take_within_seconds
        await guard._tick()  # noqa: SLF001 - none came: the timer finishes it
        assert sent.count(topics.clean) == 20 and guard.pipeline.pending == 0
        await guard._process(batch(20, 5))  # noqa: SLF001
        await guard.snapshot()  # finishes the batch; its events wait for the next decision point (line 30)
        assert sent.count(topics.clean) == 20 and guard.pipeline.pending == 0
        snapshot = guard.state_dir.load()
        assert snapshot.input_offsets == {(topics.ratings, 0): 25} and snapshot.decision.held_count == 5

    try:
        asyncio.run(run())
    finally:
        guard.pipeline.close()


def test_patched_upstream_functions_are_the_ones_the_patches_were_written_for():
    """streams/app.py copies, replaces or wraps Faust's and aiokafka's private functions; the versions are
    pinned, and an upgrade that changes any of those functions must be read and carried over on purpose."""
    from importlib.metadata import version

    from streams.app import UPSTREAM_SOURCES, patch_faust, set_fetch_max_wait, upstream_changes

    assert (version("faust-streaming"), version("aiokafka")) == ("0.15.3", "0.14.0")
    assert upstream_changes() == []
    patch_faust()
    set_fetch_max_wait(100)
    assert upstream_changes() == []  # the originals, not our replacements, are what is hashed
    assert len(UPSTREAM_SOURCES) == 5


def test_a_changed_upstream_function_is_noticed(monkeypatch):
    import streams.app as app_module

    path = next(iter(app_module.UPSTREAM_SOURCES))
    monkeypatch.setitem(app_module.UPSTREAM_SOURCES, path, "0" * 64)
    assert app_module.upstream_changes() == [path]


def test_events_out_is_counted_when_the_broker_acknowledges_not_at_the_next_snapshot():
    """shillguard_events_out_total used to be brought up to date only when a snapshot flushed the producer:
    a dashboard read 2,237 clean while the log said 55,417. Now each record batch counts once acknowledged."""
    from streams.publisher import BatchPublisher

    class Producer:
        def __init__(self):
            self.futures = []
            self.client = type("C", (), {"cluster": type("K", (), {"partitions_for_topic": staticmethod(
                lambda topic: {0})})()})()

        def create_batch(self):
            return Batch()

        async def send_batch(self, batch, topic, partition):
            future = asyncio.get_running_loop().create_future()
            self.futures.append((future, batch.n))
            return future

    acked: list[tuple[str, int]] = []

    async def run() -> None:
        producer = Producer()
        publisher = BatchPublisher(producer, on_acked=lambda topic, n: acked.append((topic, n)))
        for k in range(3):
            publisher.add("clean", b"k", b"v")
        publisher.add("quarantined", b"k", b"v")
        await publisher.send()
        assert acked == []  # sent, not yet acknowledged
        (clean, n_clean), (quarantined, _) = producer.futures
        clean.set_result(type("M", (), {"offset": 10})())
        await asyncio.sleep(0)
        assert acked == [("clean", 3)]  # counted on the acknowledgement, without any snapshot
        quarantined.set_exception(RuntimeError("refused"))
        await asyncio.sleep(0)
        assert acked == [("clean", 3)]  # a refused batch is not counted

    asyncio.run(run())


def test_partitioning_problem_names_each_input_topic_that_differs():
    from streams.topics import partitioning_problem

    assert partitioning_problem({"r": 12, "c": 12}, 12) is None
    problem = partitioning_problem({"r": 12, "c": 4, "q": None}, 12)
    assert "c: 4" in problem and "q: missing" in problem and "r:" not in problem
    assert "SHILLGUARD_PARTITIONS=12" in problem
