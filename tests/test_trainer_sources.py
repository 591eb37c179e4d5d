"""Sources: the file source resumes from offsets; the Kafka source decodes, seeks and tracks offsets."""

import json
from collections import namedtuple

import pytest

pytest.importorskip("kafka")
from kafka import TopicPartition  # noqa: E402

from trainer.sources import FileSource, KafkaSource, parse_retraction  # noqa: E402

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


def test_retraction_parsing():
    assert parse_retraction(b'{"event": {"event_id": "x"}}')["event_id"] == "x"
    assert parse_retraction(b"[]") is None


@pytest.mark.parametrize("protocol, mechanism", [("SASL_SSL", "SCRAM-SHA-512"), ("SASL_PLAINTEXT", "PLAIN"),
                                                 ("SASL_SSL", "SCRAM-SHA-256"), ("SSL", None)])
def test_kafka_source_connects_with_the_workers_settings(monkeypatch, tmp_path, protocol, mechanism):
    """No broker here requires SASL or TLS, so the client configuration is asserted: the trainer's consumer
    gets the brokers, SASL mechanism and credentials, and TLS files from the same settings as the worker."""
    import kafka

    from streams.settings import Settings

    captured = {}

    class Capture(FakeConsumer):
        def __init__(self, **config):
            captured.update(config)
            super().__init__({})

    monkeypatch.setattr(kafka, "KafkaConsumer", Capture)
    ca = tmp_path / "ca.crt"
    settings = Settings(broker="kafka://k1:9093,kafka://k2:9093", broker_security_protocol=protocol,
                        broker_sasl_mechanism=mechanism or "PLAIN", broker_sasl_username="trainer",
                        broker_sasl_password="s3cret", broker_ssl_cafile=ca, topic_clean="x.clean")
    source = KafkaSource(settings)
    assert captured["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert captured["security_protocol"] == protocol and captured["group_id"] == "shillguard-trainer"
    if mechanism:
        assert (captured["sasl_mechanism"], captured["sasl_plain_username"], captured["sasl_plain_password"]) \
            == (mechanism, "trainer", "s3cret")
    else:
        assert "sasl_mechanism" not in captured
    assert (captured.get("ssl_cafile") == str(ca)) == ("SSL" in protocol)
    assert source.topics["clean"] == "x.clean"


def test_trainer_command_reads_the_shared_settings(monkeypatch, tmp_path):
    """`shillguard trainer` builds its consumer and its alert producer from Settings (environment), with
    --broker only overriding the address."""
    import kafka
    from click.testing import CliRunner

    from trainer.cli import trainer

    made = []

    class Refuse:
        def __init__(self, **config):
            made.append(config)
            raise RuntimeError("stop here")

    monkeypatch.setattr(kafka, "KafkaProducer", Refuse)
    monkeypatch.setenv("SHILLGUARD_BROKER_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SHILLGUARD_BROKER_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SHILLGUARD_BROKER_SASL_USERNAME", "shillguard-trainer")
    monkeypatch.setenv("SHILLGUARD_BROKER_SASL_PASSWORD", "pw")
    result = CliRunner().invoke(trainer, ["--model-dir", str(tmp_path / "m"), "--broker", "kafka://k:9093"])
    assert isinstance(result.exception, RuntimeError) and made
    assert made[0]["bootstrap_servers"] == ["k:9093"] and made[0]["sasl_mechanism"] == "SCRAM-SHA-512"
    assert made[0]["sasl_plain_username"] == "shillguard-trainer" and made[0]["sasl_plain_password"] == "pw"
