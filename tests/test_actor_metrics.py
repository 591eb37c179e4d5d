"""The split topology's metrics: an actor worker (streams.actors) counts what the single worker's /metrics
counts for the work it does (input, dead letters, outcomes as the broker acknowledges them, flags, its
partitions' lag), and the detection worker counts none of it, so sums over the pods (the alert rules', the
dashboard's) read as they do for one worker. tests/test_split_integration.py scrapes real workers."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import orjson

from detectors.base import Signal
from detectors.decision import DecisionStage
from detectors.stages import ActorStage, Point
from fake_broker import Batch
from streams.accepted import split_blocks
from streams.points import encode_point
from streams.settings import Settings
from streams.topics import Topics


class Producer:
    """aiokafka's producer as BatchPublisher uses it; batches are acknowledged when the test says so."""

    def __init__(self, partitions: int):
        self.pending: list[asyncio.Future] = []
        self.auto = False
        cluster = SimpleNamespace(partitions_for_topic=lambda topic: set(range(partitions)))
        self.client = SimpleNamespace(cluster=cluster)

    def create_batch(self):
        return Batch()

    async def send_batch(self, batch, topic, partition):
        future = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        if self.auto:
            self.ack()
        return future

    def ack(self):
        for future in self.pending:
            future.set_result(SimpleNamespace(offset=0))
        self.pending.clear()


class Consumer:
    def __init__(self):
        self.highwaters: dict[tuple[str, int], int] = {}

    def highwater(self, tp):
        return self.highwaters.get((tp.topic, tp.partition), 0)


def message(topic: str, offset: int, value: bytes, partition: int = 0, key: bytes | None = None):
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition, offset=offset, value=value,
                                                   timestamp=time.time() - 5, key=key,
                                                   ack=lambda consumer: None))


def rating(event_id: str, user: str, ts: float) -> bytes:
    return orjson.dumps({"type": "rating", "event_id": event_id, "ts": ts, "user_id": user, "item_id": "i",
                         "rating": 5})


def sample(worker, name: str, **labels: str) -> float:
    return worker.metrics.registry.get_sample_value(name, labels) or 0.0


def test_an_actor_worker_counts_input_dead_letters_outcomes_flags_and_its_lag(tmp_path):
    from streams.actors import ActorWorker, Partition

    settings = Settings(state_dir=tmp_path, partitions=2, learn_from_analysts=False)
    topics = Topics.from_settings(settings)
    producer, consumer = Producer(settings.partitions), Consumer()
    worker = ActorWorker(settings, topics)
    worker.app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer), consumer=consumer,
                                 rebalancing=False)
    worker.partitions[0] = Partition(ActorStage(DecisionStage(hold_seconds=0)))
    worker.assigned = True
    lines = [rating("e0", "u0", 1.0), rating("e1", "u1", 2.0), b"{not json", rating("e0", "u0", 1.0)]
    consumer.highwaters[(topics.ratings, 0)] = len(lines)
    # The detection worker's point: e0 and e1 observed, the second e0 a duplicate, user u1 flagged.
    point = Point(1, 100.0, admitted=["e0", "e1"], signals=[("profile", [Signal("user", "u1", "profile", 0.99)])],
                  duplicates=["e0"])

    async def run() -> None:
        await worker.handle([message(topics.ratings, k, line) for k, line in enumerate(lines)])
        await worker.handle([message(topics.points, 0, encode_point(point, {topics.ratings: len(lines)}))])
        assert worker.counts == {"clean": 1, "quarantined": 1, "rejected": 2, "flags": 1}
        # Sent, not yet acknowledged: not counted yet (as the single worker's, streams.agents).
        assert sample(worker, "shillguard_events_out_total", outcome="clean") == 0
        producer.ack()
        await asyncio.sleep(0)
        worker.update_gauges()
        consumer.highwaters[(topics.clicks, 0)] = 7  # more input waiting on another topic of the partition
        worker.update_gauges()
        assert sample(worker, "shillguard_consumer_lag", topic=topics.clicks, partition="0") == 7
        producer.auto = True
        await worker.revoked_partitions({0})  # another worker reports partition 0's lag from now on

    asyncio.run(run())
    out = {outcome: sample(worker, "shillguard_events_out_total", outcome=outcome)
           for outcome in ("clean", "quarantined", "retracted", "rejected")}
    assert out == {"clean": 1, "quarantined": 1, "retracted": 0, "rejected": 2}  # malformed line, duplicate
    assert sample(worker, "shillguard_events_in_total", topic=topics.ratings) == len(lines)
    assert sample(worker, "shillguard_events_in_total", topic=topics.points) == 0  # points are no input
    assert sample(worker, "shillguard_flags_total", kind="user", update="false") == 1
    assert sample(worker, "shillguard_outcome_latency_seconds_count") == 2  # e0 and e1, produced 5 s ago
    assert sample(worker, "shillguard_outcome_latency_seconds_sum") >= 10
    assert sample(worker, "shillguard_batch_seconds_count") == 2
    assert sample(worker, "shillguard_snapshot_seconds_count") == 1 and sample(worker, "shillguard_snapshot_bytes") > 0
    assert worker.metrics.registry.get_sample_value(
        "shillguard_consumer_lag", {"topic": topics.clicks, "partition": "0"}) is None
    assert not worker.produced_at


def test_an_actor_worker_serves_metrics_on_its_web_port():
    """/metrics is a page of the actor app, beside /healthz and /readyz."""
    from streams.actors import ActorWorker, register

    pages: dict[str, object] = {}

    class App:
        rebalancing = False

        def topic(self, *names, **kwargs):
            return names

        def agent(self, *args, **kwargs):
            return lambda fn: fn

        def task(self, fn):
            return fn

        on_partitions_assigned = on_partitions_revoked = on_before_shutdown = SimpleNamespace(
            connect=lambda fn: fn)

        def page(self, path, name):
            def add(fn):
                pages[path] = fn
                return fn
            return add

    settings = Settings(partitions=2, learn_from_analysts=False)
    topics = Topics.from_settings(settings)
    worker = ActorWorker(settings, topics)
    worker.metrics.events_out.labels("clean").inc(3)
    register(App(), worker, settings, topics)
    assert {"/healthz", "/readyz", "/metrics"} <= set(pages)
    web = SimpleNamespace(bytes=lambda body, content_type: (body, content_type))
    body, content_type = asyncio.run(pages["/metrics"](web, None))
    assert content_type == "text/plain"
    assert b'shillguard_events_out_total{outcome="clean"} 3.0' in body
    assert b"shillguard_ready 0.0" in body  # no partitions assigned yet


def test_the_detection_worker_counts_no_input_and_no_outcome_the_actors_count(tmp_path):
    """It reads internal.accepted (every input line again, forwarded by the actors) and publishes no outcome:
    counting either would double the input and outcome sums over the pods (the dead-letter ratio's
    denominator among them)."""
    from streams.agents import Guard
    from streams.detection import DetectionGuard

    settings = Settings(state_dir=tmp_path, detectors="profile", offload_detectors="", partitions=2,
                        learn_from_analysts=False)
    topics = Topics.from_settings(settings)
    producer = Producer(settings.partitions)
    app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer), consumer=None)
    detect, single = DetectionGuard(settings, topics), Guard(settings, topics)
    try:
        detect.app = single.app = app
        assert detect.publisher.on_acked is None
        assert single.publisher.on_acked is not None
        single.publisher.on_acked(topics.clean, 2)
        assert sample(single, "shillguard_events_out_total", outcome="clean") == 2

        async def run() -> None:
            forwarded = split_blocks([(topics.ratings, 0, 1.0, rating("e0", "u0", 1.0))])
            key, block = next(forwarded)
            for guard, topic, value in ((detect, topics.accepted, block), (single, topics.ratings, None)):
                guard.restored = guard.assigned = True
                guard._process = _nothing  # noqa: SLF001 - counting happens before the pipeline
                await guard.handle([message(topic, 0, value or rating("e0", "u0", 1.0), key=key.encode())])

        asyncio.run(run())
        assert sample(detect, "shillguard_events_in_total", topic=topics.accepted) == 0
        assert sample(single, "shillguard_events_in_total", topic=topics.ratings) == 1
    finally:
        detect.pipeline.close()
        single.pipeline.close()


async def _nothing(messages) -> None:
    pass


def test_a_new_owner_reads_an_analysts_release_as_no_verdict(tmp_path, monkeypatch):
    """What an earlier owner published after its snapshot is not sent again; an analyst's release (a clean
    record with `released_by`) or a restoration is the analyst's word, not the pipeline's verdict, as the
    single worker reads it (streams.recovery.note_output): counted as a verdict, a restored stage that
    quarantines the event again would publish a retraction nobody decided."""
    import streams.actors as actors_module
    from streams.actors import ActorWorker, Partition

    settings = Settings(state_dir=tmp_path, detectors="profile", offload_detectors="", partitions=2,
                        learn_from_analysts=False)
    topics = Topics.from_settings(settings)
    record = lambda topic, value, headers=(): SimpleNamespace(topic=topic, partition=1, value=value,  # noqa: E731
                                                               headers=list(headers), key=None)
    records = [record(topics.clean, orjson.dumps({"event_id": "e1"})),
               record(topics.clean, orjson.dumps({"event_id": "e2"}), [("released_by", b"ana")]),
               record(topics.retracted, orjson.dumps({"event_id": "e3", "verdict": "restored"})),
               record(topics.retracted, orjson.dumps({"event_id": "e4", "verdict": "retracted"})),
               record(topics.quarantined, b"not json"),
               record(topics.rejected, b"{}", [("src", b"events.ratings:1:7")])]
    monkeypatch.setattr(actors_module, "read", lambda *args, **kwargs: iter(records))
    worker = ActorWorker(settings, topics)
    state = Partition(ActorStage(DecisionStage()))
    worker._scan({}, {1: state})  # noqa: SLF001
    assert state.decided == {"e1": "clean"}
    assert state.retracted == {"e4"}
    assert state.rejected == {"events.ratings:1:7"}
