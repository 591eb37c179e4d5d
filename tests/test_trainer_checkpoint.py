"""Checkpoints: versions and metadata in safetensors; restart resumes without losing or double counting."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from trainer.checkpoint import CheckpointStore
from trainer.incremental import Trainer, TrainConfig
from trainer.loop import Schedule, run
from trainer.promotion import Promoter
from trainer.sources import FileSource
from trainer.synthetic import synthetic_events

torch.set_num_threads(1)  # tiny models: threads only contend on a shared 2-core machine


@pytest.fixture
def events_file(tmp_path):
    events = synthetic_events(n_users=60, n_items=40, per_user=8, seed=3)
    path = tmp_path / "clean.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path, events


def test_round_trip_keeps_weights_optimizer_log_and_metadata(tmp_path, events_file):
    _, events = events_file
    trainer = Trainer(TrainConfig(model="sasrec", dim=8, n_layers=1, max_len=8, epochs=1, batch_size=16))
    trainer.ingest(events)
    trainer.fit()
    trainer.retract([events[0]["event_id"], "not-yet-seen"])
    store = CheckpointStore(tmp_path / "m")
    version = store.save(trainer, {"offsets": {"k": 7}, "gates": [{"gate": "utility", "passed": True}]})
    with safe_open(str(store.versions_dir / f"{version}.safetensors"), "pt") as f:
        header = json.loads(f.metadata()["shillguard"])
    assert header["offsets"] == {"k": 7} and header["gates"][0]["gate"] == "utility"
    restored, meta = store.load(version)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[key].cpu(), value.cpu()), key
    assert restored.log.event_ids == trainer.log.event_ids
    assert np.array_equal(restored.log.active, trainer.log.active)
    assert restored.log.pending_retractions == {"not-yet-seen"}
    a = trainer.optimizer.state[trainer.model.items.weight]["exp_avg"]
    b = restored.optimizer.state[restored.model.items.weight]["exp_avg"]
    assert torch.equal(a.cpu(), b.cpu())
    assert restored.learned_rows == trainer.learned_rows


def test_restart_resumes_without_losing_or_double_counting(tmp_path, events_file):
    path, events = events_file
    store = CheckpointStore(tmp_path / "m")
    config = TrainConfig(model="bpr", dim=8, batch_size=64, holdout_pct=0)
    trainer = Trainer(config)
    batches_seen = []

    def crash_after_three() -> bool:
        batches_seen.append(1)
        if len(batches_seen) >= 3:  # the process dies after its third micro-batch
            raise KeyboardInterrupt("killed")
        return False

    source = FileSource(path, batch_size=50)
    with pytest.raises(KeyboardInterrupt):
        run(trainer, source, Promoter(store, gates=[]), streaming=True, schedule=Schedule(every_events=100),
            stop=crash_after_three)
    saved = store.meta(store.latest())
    assert saved["offsets"]  # offsets covered are recorded with the weights
    # 150 events were ingested but only 100 were checkpointed: those 50 are re-read, the rest follow.
    restarted, meta = store.load("latest")
    assert restarted.log.n == 100
    run(restarted, FileSource(path, offsets=meta["offsets"], batch_size=50), Promoter(store, gates=[]),
        streaming=True, schedule=Schedule(every_events=100), offsets=meta["offsets"])
    assert restarted.log.n == len(events)
    assert sorted(restarted.log.event_ids) == sorted(e["event_id"] for e in events)
    # A source that redelivers everything (offsets lost) still cannot double count.
    again = restarted.ingest(events)
    assert len(again) == 0 and restarted.log.n == len(events)
    final = store.load("latest")[0]
    assert final.log.n == len(events)
