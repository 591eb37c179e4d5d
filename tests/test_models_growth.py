"""Embedding tables grow with new users and items; learned rows and Adam moments survive growth."""

import numpy as np
import torch

from models.bpr import BPRMF
from models.sasrec import SASRec
from trainer.incremental import Trainer, TrainConfig
from trainer.synthetic import synthetic_events

torch.set_num_threads(1)  # tiny models: threads only contend on a shared 2-core machine


def test_bpr_growth_keeps_rows():
    torch.manual_seed(0)
    model = BPRMF(n_users=3, n_items=4, dim=8)
    users, items = model.users.weight.detach().clone(), model.items.weight.detach().clone()
    assert model.grow(10, 9)
    assert model.users.num_embeddings == 10 and model.items.num_embeddings == 9
    assert torch.equal(model.users.weight[:3].detach(), users)
    assert torch.equal(model.items.weight[:4].detach(), items)
    assert torch.count_nonzero(model.items.weight[0]) == 0  # padding row stays zero


def test_sasrec_growth_only_touches_items():
    model = SASRec(n_items=5, dim=8, max_len=4, n_layers=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.grow(100, 12)
    after = model.state_dict()
    assert after["items.weight"].shape[0] == 12
    assert torch.equal(after["items.weight"][:5], before["items.weight"])
    for key in before:
        if key != "items.weight":
            assert torch.equal(after[key], before[key])


def test_trainer_grows_as_users_and_items_arrive():
    events = synthetic_events(n_users=40, n_items=30, per_user=6, seed=2)
    half = len(events) // 2
    trainer = Trainer(TrainConfig(model="bpr", dim=8, epochs=2, holdout_pct=0))
    trainer.ingest(events[:half])
    trainer.fit()
    users0, items0 = len(trainer.log.users), len(trainer.log.items)
    known_item = trainer.model.items.weight[1].detach().clone()
    moments = trainer.optimizer.state[trainer.model.items.weight]["exp_avg"][1].clone()
    trainer.ingest(events[half:] + [{"type": "click", "event_id": "new", "ts": 9e6, "user_id": "brand-new",
                                      "item_id": "never-seen"}])
    assert len(trainer.log.users) > users0 and len(trainer.log.items) > items0
    assert trainer.model.users.num_embeddings >= trainer.log.users.size
    assert trainer.model.items.num_embeddings >= trainer.log.items.size
    assert torch.equal(trainer.model.items.weight[1].detach(), known_item)  # nothing retrained from scratch
    state = trainer.optimizer.state[trainer.model.items.weight]
    assert torch.equal(state["exp_avg"][1], moments)
    assert state["exp_avg"].shape == trainer.model.items.weight.shape
    trainer.fit(1)  # and training goes on over the grown tables
    recs = trainer.recommend(np.array([trainer.log.users.get("brand-new")]), k=5)
    assert trainer.log.items.get("never-seen") not in recs[0]


def test_micro_batches_train_both_models():
    events = synthetic_events(n_users=40, n_items=30, per_user=8, seed=7)
    for kind, extra in (("bpr", {}), ("sasrec", {"n_layers": 1, "max_len": 6, "batch_size": 16})):
        trainer = Trainer(TrainConfig(model=kind, dim=8, holdout_pct=20, **extra))
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        for start in range(0, len(events), 80):
            rows = trainer.ingest(events[start:start + 80])
            assert trainer.fit_increment(rows)["samples"] > 0
        assert trainer.learned_rows == trainer.log.n
        moved = [k for k, v in trainer.model.state_dict().items()
                 if k in before and not torch.equal(v[: len(before[k])], before[k])]
        assert moved, kind
        assert trainer.evaluate_holdout()["n"] > 0
