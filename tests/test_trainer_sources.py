"""Sources: the file source resumes from offsets; the Kafka source decodes, seeks and tracks offsets."""

import json
from collections import namedtuple

import pytest

pytest.importorskip("kafka")
from kafka import TopicPartition  # noqa: E402

from trainer.sources import FileSource, KafkaSource, broker_address, parse_retraction  # noqa: E402

Record = namedtuple("Record", "offset value")


def test_file_source_resumes_from_offsets(tmp_path):
    path = tmp_path / "clean.jsonl"
    lines = [json.dumps({"type": "click", "event_id": f"e{i}", "ts": i, "user_id": "u", "item_id": "i"})
             for i in range(5)] + ["not json"]
    path.write_text("\n".join(lines) + "\n")
    first = list(FileSource(path, batch_size=4).batches())
    assert sum(len(b.events) for b in first) == 5 and sum(b.rejected for b in first) == 1
    offsets = first[-1].offsets
    path.write_text(path.read_text() + json.dumps(
        {"type": "rating", "event_id": "e9", "ts": 9, "user_id": "u", "item_id": "j", "rating": 4}) + "\n")
    resumed = list(FileSource(path, offsets=offsets).batches())
    assert [e.event_id for b in resumed for e in b.events] == ["e9"]


class FakeConsumer:
    def __init__(self, records):
        self.records, self.assigned, self.seeks = records, [], {}

    def partitions_for_topic(self, topic):
        return {0}

    def assign(self, partitions):
        self.assigned = partitions

    def seek(self, tp, offset):
        self.seeks[tp] = offset

    def seek_to_beginning(self, tp):
        self.seeks[tp] = 0

    def poll(self, timeout_ms, max_records):
        records, self.records = self.records, {}
        return records


def test_kafka_source_batches_events_retractions_and_flags():
    clean, retracted, flags = (TopicPartition(t, 0) for t in ("events.clean", "events.retracted", "flags"))
    event = {"type": "click", "event_id": "e1", "ts": 1, "user_id": "u", "item_id": "i"}
    consumer = FakeConsumer({
        clean: [Record(7, json.dumps(event).encode()), Record(8, b"{broken")],
        retracted: [Record(3, json.dumps({"event_id": "e0", "event": event, "reasons": ["r"]}).encode())],
        flags: [Record(0, json.dumps({"kind": "item", "id": "i"}).encode()),
                Record(1, json.dumps({"kind": "user", "id": "u"}).encode())],
    })
    source = KafkaSource(offsets={"events.clean:0": 7}, consumer=consumer)
    batch = next(iter(source.batches()))
    assert consumer.seeks[clean] == 7 and consumer.seeks[retracted] == 0
    assert [e.event_id for e in batch.events] == ["e1"] and batch.rejected == 1
    assert [r["event_id"] for r in batch.retractions] == ["e0"]
    assert batch.flagged_items == ["i"]
    assert batch.offsets == {"events.clean:0": 9, "events.retracted:0": 4, "flags:0": 2}


def test_broker_address_and_retraction_parsing(monkeypatch):
    monkeypatch.setenv("SHILLGUARD_BROKER", "kafka://10.0.0.1:9093")
    assert broker_address() == ["10.0.0.1:9093"]
    assert broker_address("kafka://h1:9092,kafka://h2:9092") == ["h1:9092", "h2:9092"]
    monkeypatch.delenv("SHILLGUARD_BROKER")
    assert broker_address() == ["127.0.0.1:9092"]
    assert parse_retraction(b'{"event": {"event_id": "x"}}')["event_id"] == "x"
    assert parse_retraction(b"[]") is None
