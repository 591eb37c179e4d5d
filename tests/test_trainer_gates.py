"""Deployment gates: a planted ClusterAttack-style collapse and a planted exposure jump are blocked,
an honest retrain is promoted, and every result is recorded with its version (and alerted when blocking)."""

import numpy as np
import pytest
import torch

from trainer.checkpoint import CheckpointStore
from trainer.gates import ExposureGate, UniformityGate, UtilityGate, VersionReport
from trainer.incremental import Trainer, TrainConfig
from trainer.promotion import Promoter
from trainer.synthetic import synthetic_events

torch.set_num_threads(1)  # tiny models: threads only contend on a shared 2-core machine


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    """A model directory whose v000001 is promoted, and the trainer with the rest of the stream to come."""
    events = synthetic_events(n_users=300, n_items=100, per_user=20, seed=5)
    cut = int(len(events) * 0.8)
    trainer = Trainer(TrainConfig(model="bpr", dim=16, batch_size=256, epochs=25, holdout_pct=30, seed=1))
    trainer.ingest(events[:cut])
    trainer.fit()
    alerts: list[dict] = []
    store = CheckpointStore(tmp_path_factory.mktemp("model"))
    promoter = Promoter(store, sink=alerts.append)
    first = promoter.propose(trainer, {"clean": cut})
    assert first["promoted"] and first["gates"] == []  # nothing to compare the first version with
    return trainer, promoter, alerts, events[cut:]


def _fresh_promoter(promoter, alerts):
    return Promoter(promoter.store, sink=alerts.append)


def test_honest_retrain_is_promoted(promoted):
    trainer, promoter, alerts, rest = promoted
    trainer.ingest(rest)
    trainer.fit(5)
    result = _fresh_promoter(promoter, alerts).propose(trainer, {"clean": "end"})
    assert [g["gate"] for g in result["gates"]] == ["utility", "exposure", "uniformity"]
    assert all(g["passed"] for g in result["gates"]), result["gates"]
    assert result["promoted"] and promoter.store.promoted() == result["version"]
    assert not alerts


def _planted(trainer, plant) -> Trainer:
    """A copy of the trainer whose weights were tampered with by `plant(model)`."""
    copy = Trainer(trainer.config, trainer.log)
    copy.load_state(trainer.state())
    with torch.no_grad():
        plant(copy.model, copy)
    return copy


def test_cluster_collapse_is_blocked(promoted):
    trainer, promoter, alerts, _ = promoted
    served = promoter.store.promoted()

    def collapse(model, t):
        # ClusterAttack's end state: item embeddings pulled into a few tight clusters.
        g = torch.Generator().manual_seed(0)
        weight = model.items.weight
        centers = torch.randn(3, weight.shape[1], generator=g) * weight[1:].norm(dim=1).mean()
        assign = torch.randint(0, 3, (weight.shape[0],), generator=g)
        weight[1:] = (centers[assign] + 0.01 * torch.randn(weight.shape, generator=g))[1:]

    alerts.clear()
    result = _fresh_promoter(promoter, alerts).propose(_planted(trainer, collapse))
    gates = {g["gate"]: g for g in result["gates"]}
    assert not gates["uniformity"]["passed"]
    assert gates["uniformity"]["value"] < gates["uniformity"]["threshold"]
    assert not result["promoted"] and promoter.store.promoted() == served
    assert any(a["unmapped"]["gate"] == "uniformity" for a in alerts)
    recorded = promoter.store.meta(result["version"])  # the gate results live with the version
    assert recorded["promoted"] is False and {g["gate"] for g in recorded["gates"]} == set(gates)


def test_exposure_jump_is_blocked(promoted):
    trainer, promoter, alerts, _ = promoted
    served = promoter.store.promoted()
    target = trainer.log.items.get("i99")  # an unpopular item

    def push(model, t):
        # A poisoned update that aligns one item with the average user: it enters nearly every list.
        model.items.weight[target] = 5 * model.users.weight[: t.log.users.size].mean(0)

    alerts.clear()
    result = _fresh_promoter(promoter, alerts).propose(_planted(trainer, push))
    gates = {g["gate"]: g for g in result["gates"]}
    assert not gates["exposure"]["passed"]
    assert "i99" in gates["exposure"]["details"]["jumps"]
    assert gates["uniformity"]["passed"]  # one item moved: not a collapse
    assert not result["promoted"] and promoter.store.promoted() == served
    assert any(a["unmapped"]["gate"] == "exposure" and a["class_uid"] == 2004 for a in alerts)


def test_an_exposure_jump_goes_back_to_the_worker_until_an_analyst_clears_it(promoted):
    """The feedback link: the blocked jump becomes one signal on the item (with the version, for the worker's
    control topic), not repeated by the next blocked version; once an analyst releases the item the same
    jump is accepted, and after that promotion a new jump blocks again."""
    trainer, promoter, alerts, _ = promoted
    target = trainer.log.items.get("i99")

    def push(model, t):
        model.items.weight[target] = 5 * model.users.weight[: t.log.users.size].mean(0)

    signals: list[dict] = []
    feedback = Promoter(promoter.store, sink=alerts.append, signals=signals.append)
    pushed = _planted(trainer, push)
    first = feedback.propose(pushed)
    assert not first["promoted"] and first["signals"] == ["i99"]
    (signal,) = signals
    assert signal["action"] == "signal" and (signal["kind"], signal["id"], signal["detector"]) == (
        "item", "i99", "exposure")
    assert signal["evidence"]["version"] == first["version"] and 0.5 <= signal["score"] < 1
    shares = signal["evidence"]["share_of_top10_lists"]
    assert shares["new"] > shares["old"] + 0.1
    again = feedback.propose(pushed)
    assert not again["promoted"] and again["signals"] == [] and len(signals) == 1  # told once per baseline
    feedback.clear(["i99"])  # an analyst released the item: a film in the news
    cleared = feedback.propose(pushed)
    exposure = {g["gate"]: g for g in cleared["gates"]}["exposure"]
    assert cleared["promoted"], cleared["gates"]
    assert "i99" in exposure["details"]["cleared_jumps"] and not feedback.cleared


def test_released_flags_clear_and_other_flags_flag():
    from trainer.sources import flagged_item_ids, released_item_ids

    flag = {"kind": "item", "id": "i1", "score": 0.9}
    released = {**flag, "status": "released", "by": "ana"}
    assert flagged_item_ids(flag) == ["i1"] and released_item_ids(flag) == []
    assert flagged_item_ids(released) == [] and released_item_ids(released) == ["i1"]
    assert flagged_item_ids(b'{"kind": "user", "id": "u"}') == [] and released_item_ids(b"not json") == []


def test_flagged_target_may_not_gain_any_exposure():
    base = VersionReport(hr=0.2, ndcg=0.1, uniformity=3.0, shares={"t": 0.01, "a": 0.3}, n_lists=500,
                         flagged=["t"])
    small_gain = VersionReport(hr=0.2, ndcg=0.1, uniformity=3.0, shares={"t": 0.04, "a": 0.3}, n_lists=500,
                               flagged=["t"])
    gate = ExposureGate()
    result = gate.check(small_gain, base)
    assert not result.passed and "t" in result.details["flagged_gains"]
    unflagged = VersionReport(**{**small_gain.__dict__, "flagged": []})
    assert gate.check(unflagged, VersionReport(**{**base.__dict__, "flagged": []})).passed


def test_utility_and_uniformity_margins():
    base = VersionReport(hr=0.20, ndcg=0.10, uniformity=3.0, shares={}, n_lists=0, n_eval=500)
    worse = VersionReport(hr=0.17, ndcg=0.10, uniformity=2.9, shares={}, n_lists=0, n_eval=500)
    assert not UtilityGate(margin=0.05).check(worse, base).passed
    assert UtilityGate(margin=0.20).check(worse, base).passed
    assert UniformityGate(margin=0.25).check(worse, base).passed
    assert not UniformityGate(margin=0.05).check(worse, base).passed


def test_utility_drop_within_noise_is_not_blocked():
    rng = np.random.default_rng(0)
    base_hits = (rng.random(100) < 0.2).astype(float)
    cand_hits = base_hits.copy()
    cand_hits[np.flatnonzero(base_hits)[:2]] = 0  # two users fewer hit: -10%, well within noise on 100
    base = VersionReport(hr=base_hits.mean(), ndcg=0.1, uniformity=3.0, shares={}, n_lists=0, n_eval=100,
                         per_user={"hr": base_hits, "ndcg": np.full(100, 0.1)})
    cand = VersionReport(hr=cand_hits.mean(), ndcg=0.1, uniformity=3.0, shares={}, n_lists=0, n_eval=100,
                         per_user={"hr": cand_hits, "ndcg": np.full(100, 0.1)})
    assert UtilityGate(margin=0.05).check(cand, base).passed
    big = base_hits.copy()
    big[np.flatnonzero(base_hits)[:15]] = 0  # most hits lost: a real regression
    worse = VersionReport(**{**cand.__dict__, "hr": big.mean(), "per_user": {"hr": big, "ndcg": np.full(100, 0.1)}})
    assert not UtilityGate(margin=0.05).check(worse, base).passed
