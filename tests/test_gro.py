"""GRO (trainer/gro.py): the gathered swap gradient is the dense one, the chosen swaps raise the student's
loss, the swap loss moves the target's scores towards them, and a GRO-trained version records its defence
and resumes with its student."""

import pytest
import torch

from trainer import gro
from trainer.checkpoint import CheckpointStore
from trainer.incremental import Trainer, TrainConfig, config_from_dict
from trainer.synthetic import synthetic_events

torch.set_num_threads(1)


def _case(seed=0, b=4, m=40, k=5, c=10):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, m, generator=g)
    scores[:, 0] = float("-inf")
    order = torch.randperm(m - 1, generator=g)[: k + c] + 1
    lists, pool = order[:k].repeat(b, 1), order[k:].repeat(b, 1)
    return scores, lists, pool


def test_gathered_gradient_equals_the_dense_swap_matrix_gradient():
    scores, lists, pool = _case()
    b, m = scores.shape
    k = lists.shape[1]
    s = scores.clamp_min(-1e4)
    dense = torch.zeros(b, k, m)
    dense.scatter_(2, lists.unsqueeze(2), 1.0)
    dense.requires_grad_(True)
    a = torch.einsum("bkm,bm->bk", dense, s)  # A s, the paper's form
    (grad_dense,) = torch.autograd.grad(gro.listwise_loss(s, lists, a), dense)
    # The change of moving candidate i into position j, read off the dense gradient ...
    dense_gain = grad_dense.gather(2, pool.unsqueeze(1).expand(b, k, -1)) - grad_dense.gather(
        2, lists.unsqueeze(2))
    # ... is what swap_targets ranks by, from a (B, k, c) gather.
    gathered = s.gather(1, lists).requires_grad_(True)
    (grad,) = torch.autograd.grad(gro.listwise_loss(s, lists, gathered), gathered)
    gain = grad.unsqueeze(2) * (s.gather(1, pool).unsqueeze(1) - s.gather(1, lists).unsqueeze(2))
    assert torch.allclose(gain, dense_gain, atol=1e-6)


def test_chosen_swaps_raise_the_students_loss_and_use_each_item_once():
    scores, lists, pool = _case(seed=3)
    positions, incoming = gro.swap_targets(scores, lists, pool, max_swaps=3)
    valid = positions >= 0
    assert valid.sum() >= len(lists)  # random scores leave swaps worth making in every list
    swapped = lists.clone()
    for row, col in valid.nonzero().tolist():
        swapped[row, positions[row, col]] = incoming[row, col]
    for row in range(len(lists)):
        assert len(set(swapped[row].tolist())) == lists.shape[1]  # no item twice in a list
        assert set(incoming[row][valid[row]].tolist()) <= set(pool[row].tolist())
    before = gro.listwise_loss(scores, lists)
    after = gro.listwise_loss(scores, swapped)
    assert after > before + 1e-3
    # A random swap of the same size raises it less than the chosen ones.
    random_swapped = lists.clone()
    random_swapped[:, :3] = pool[:, -3:]
    assert after > gro.listwise_loss(scores, random_swapped)


def test_swap_loss_moves_the_target_towards_the_new_lists():
    scores, lists, pool = _case(seed=5)
    positions, incoming = gro.swap_targets(scores, lists, pool, max_swaps=2)
    target = torch.randn_like(scores).clamp_min(-1e4).requires_grad_(True)
    loss = gro.swap_loss(target, lists, positions, incoming)
    loss.backward()
    valid = positions >= 0
    outgoing = lists.gather(1, positions.clamp_min(0))
    assert (target.grad.gather(1, incoming.clamp_min(0))[valid] < 0).all()  # descent raises the incoming
    assert (target.grad.gather(1, outgoing)[valid] > 0).all()  # and lowers the displaced items
    none = torch.full_like(positions, -1)
    assert gro.swap_loss(target, lists, none, none).item() == 0.0


def test_unknown_defence_is_refused():
    with pytest.raises(ValueError):
        TrainConfig(model="sasrec", defence="magic")


@pytest.mark.parametrize("model", ["sasrec", "bpr"])
def test_gro_training_is_recorded_and_resumes_with_its_student(tmp_path, model):
    events = synthetic_events(n_users=60, n_items=40, per_user=12, seed=2)
    config = TrainConfig(model=model, dim=8, epochs=2, max_len=10, batch_size=32, defence="gro",
                         gro_lambda=0.3, seed=0)
    trainer = Trainer(config)
    trainer.ingest(events)
    before = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    trainer.fit()
    moved = [k for k, v in trainer.student.state_dict().items() if not torch.equal(v, before[k])]
    assert moved, "the student never learned"
    store = CheckpointStore(tmp_path)
    version = store.save(trainer, {})
    meta = store.meta(version)
    assert meta["defence"]["name"] == "gro" and meta["defence"]["lambda"] == 0.3
    restored, _ = store.load(version)
    assert restored.config.defence == "gro"
    for key, value in trainer.student.state_dict().items():
        assert torch.equal(restored.student.state_dict()[key], value)
    restored.fit(1)  # and it goes on training


def test_undefended_training_has_no_student(tmp_path):
    trainer = Trainer(TrainConfig(model="sasrec", dim=8, epochs=1, max_len=10))
    trainer.ingest(synthetic_events(n_users=20, n_items=20, per_user=6, seed=1))
    trainer.fit()
    store = CheckpointStore(tmp_path)
    version = store.save(trainer, {})
    assert trainer.student is None and store.meta(version)["defence"] is None


def test_warmup_epochs_train_the_student_without_the_swap_loss(monkeypatch):
    from trainer import gro

    swaps = []
    real = gro.swap_loss
    monkeypatch.setattr(gro, "swap_loss", lambda *args: swaps.append(1) or real(*args))
    trainer = Trainer(TrainConfig(model="sasrec", dim=8, epochs=1, max_len=10, defence="gro", gro_warmup=1))
    trainer.ingest(synthetic_events(n_users=20, n_items=20, per_user=6, seed=1))
    before = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    trainer.fit()  # the warm-up epoch: the student learns to imitate, the target trains plainly
    assert not swaps
    assert not all(torch.equal(v, before[k]) for k, v in trainer.student.state_dict().items())
    trainer.fit(1)
    assert swaps


def test_attacker_like_queries_follow_the_targets_own_answers():
    trainer = Trainer(TrainConfig(model="sasrec", dim=8, epochs=1, max_len=12, defence="gro", gro_synthetic=1.0,
                                  gro_synthetic_len=6, gro_k=5, seed=3))
    trainer.ingest(synthetic_events(n_users=30, n_items=25, per_user=8, seed=2))
    trainer.fit()
    trainer._gro_pool = None
    queries = trainer._synthetic_queries(40, 12, torch.device("cpu"))
    pool = trainer._gro_pool
    assert queries.shape == (40, 12) and ((queries > 0).sum(1) >= 1).all()
    assert ((pool > 0).sum(1) == 6).all()
    trainer.model.eval()
    with torch.no_grad():
        for t in range(12 - 6, 11):  # each next item is one of the target's top-5 after the prefix
            prefix = pool.clone()
            prefix[:, t + 1:] = 0
            prefix = torch.cat([torch.zeros_like(prefix[:, : 11 - t]), prefix[:, : t + 1]], dim=1)
            scores = trainer.model.score_sequences(prefix, trainer.n_items)
            scores.scatter_(1, prefix, float("-inf"))
            top = scores.topk(5, dim=1).indices
            assert (top == pool[:, t + 1: t + 2]).any(1).all()
    # Every query is a prefix of a pool sequence, right-aligned.
    for row in queries:
        items = row[row > 0].tolist()
        assert any(seq[seq > 0].tolist()[: len(items)] == items for seq in pool)


def test_ramp_scales_the_swap_loss_up_over_the_first_joint_epochs(monkeypatch):
    from trainer import gro

    monkeypatch.setattr(gro, "swap_loss", lambda *args: torch.tensor(1.0))  # a swap loss of 1
    trainer = Trainer(TrainConfig(model="sasrec", dim=8, epochs=1, max_len=10, defence="gro", gro_lambda=0.3,
                                  gro_warmup=1, gro_ramp=2))
    trainer.ingest(synthetic_events(n_users=20, n_items=20, per_user=6, seed=1))
    batch = next(trainer._batches(trainer.split()[0])[1])
    added = []
    for epochs_trained in (1, 2, 3, 7):  # the first joint epoch is the one after the warm-up
        trainer.epochs_trained = epochs_trained
        trainer.model.eval()  # no dropout: the recommendation loss is the same in both calls
        plain = trainer._gro_loss(batch, swap=False).item()
        added.append(trainer._gro_loss(batch).item() - plain)
    assert added == pytest.approx([0.1, 0.2, 0.3, 0.3], abs=1e-5)
    # the ramp is recorded with the other GRO parameters in a version's meta
    from trainer.checkpoint import _defence
    assert _defence(trainer.config)["ramp"] == 2


def test_attacker_like_queries_are_the_sasrec_default_and_old_versions_keep_their_own():
    # Defaults chosen on the validation split (benchmarks/README-trainer.md): lambda 0.08, half the queries
    # attacker-like for SASRec; BPR-MF's queries are users, so none there.
    assert TrainConfig(model="sasrec").gro_lambda == 0.08
    assert TrainConfig(model="sasrec").gro_synthetic == 0.5 and TrainConfig(model="bpr").gro_synthetic == 0.0
    assert TrainConfig(model="sasrec", gro_synthetic=0.0).gro_synthetic == 0.0
    # A version saved before the option existed trained without it, and resumes without it.
    saved = TrainConfig(model="sasrec", defence="gro").to_dict()
    del saved["gro_synthetic"]
    assert config_from_dict(saved).gro_synthetic == 0.0
    assert config_from_dict(TrainConfig(model="sasrec", defence="gro").to_dict()).gro_synthetic == 0.5
