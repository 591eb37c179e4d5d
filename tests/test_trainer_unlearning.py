"""Retractions: a retracted event stops influencing the served model, and the influence left is measured."""

import numpy as np
import pytest
import torch

from trainer.incremental import Trainer, TrainConfig
from trainer.synthetic import push_attack, synthetic_events
from trainer.unlearning import influence

torch.set_num_threads(1)  # tiny models: threads only contend on a shared 2-core machine

N_USERS, N_ITEMS, TARGET = 200, 200, "i199"
CONFIGS = {
    "bpr": dict(model="bpr", dim=16, epochs=30, batch_size=256, holdout_pct=0),
    "sasrec": dict(model="sasrec", dim=16, epochs=12, batch_size=32, n_layers=1, max_len=10, holdout_pct=0,
                   unlearn_epochs=10),
}


def _exposure(trainer: Trainer) -> float:
    """Share of benign users' top-10 lists holding the pushed item."""
    users = np.array([trainer.log.users.get(f"u{u}") for u in range(N_USERS)])
    return influence(trainer, np.array([trainer.log.items.get(TARGET)]), users)


@pytest.mark.parametrize("kind", ["bpr", "sasrec"])
def test_retracted_attack_stops_influencing_the_model(kind):
    benign = synthetic_events(n_users=N_USERS, n_items=N_ITEMS, per_user=20, seed=0)
    attacked, fake_ids = push_attack(benign, targets=[TARGET], n_fakes=30, filler=5, seed=0)
    reference = Trainer(TrainConfig(**CONFIGS[kind]))  # retrained from scratch without the attack
    reference.ingest(benign)
    reference.fit()
    served = Trainer(TrainConfig(**CONFIGS[kind]))
    served.ingest(attacked)
    served.fit()
    clean, before = _exposure(reference), _exposure(served)
    assert before > clean + 0.05, "the planted attack should win exposure"

    report = served.retract(fake_ids)
    after = _exposure(served)
    assert report["unlearned"] == len(fake_ids) and report["pending"] == 0
    assert report["influence_after"] < report["influence_before"]  # measured by the trainer itself
    remaining = (after - clean) / (before - clean)
    assert remaining <= 0.2, f"{remaining:.0%} of the attack's exposure gain survived unlearning"
    # The retracted events are gone from what the model serves from and trains on.
    assert not served.log.active[served.log.rows_of(fake_ids)].any()
    fakes = served.log.users.get("f0")
    assert served.history(served.log.active)[0][fakes + 1] == served.history(served.log.active)[0][fakes]


def test_retraction_before_learning_is_just_dropped():
    trainer = Trainer(TrainConfig(model="bpr", dim=8, holdout_pct=0))
    events = synthetic_events(n_users=10, n_items=10, per_user=4, seed=1)
    trainer.ingest(events)
    report = trainer.retract([events[0]["event_id"], "arrives-later"])
    assert report["unlearned"] == 1 and report["pending"] == 1 and "influence_after" not in report
    late = {"type": "click", "event_id": "arrives-later", "ts": 1.0, "user_id": "u1", "item_id": "i1"}
    assert len(trainer.ingest([late])) == 0
