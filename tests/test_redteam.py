"""The extraction red team (trainer/redteam.py), the serving call (trainer/serving.py) and the extraction gate:
the attacker asks only through `recommend`, its surrogate learns the target, the guard wiring flags a sweep,
the client actions bound what a flagged client gets, and `shillguard attack extract` writes its report."""

import json

import numpy as np
import orjson
import pytest
import torch
from click.testing import CliRunner

from trainer.cli import attack, train
from trainer.gates import ExtractionGate, VersionReport, default_gates
from trainer.incremental import Trainer, TrainConfig
from trainer.redteam import (ATTACKER, SESSIONS, AttackConfig, Transcript, eval_users, fidelity, guard_stream, run_guard,
                             synthesize, target_top10, train_surrogate)
from trainer.serving import ClientActions, Recommender, Throttled, perturb_list
from trainer.synthetic import synthetic_events

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def target():
    events = synthetic_events(n_users=150, n_items=60, per_user=15, seed=3)
    trainer = Trainer(TrainConfig(model="sasrec", dim=16, epochs=6, max_len=15, batch_size=32, holdout_pct=100,
                                  seed=0))
    trainer.ingest(events)
    trainer.fit()
    trainer.model.eval()
    return trainer


def _ids(trainer):
    return ["<pad>"] + [trainer.log.items.id_of(r) for r in range(1, trainer.n_items)]


def test_synthetic_sequences_are_autoregressive_and_spend_the_budget(target):
    rec = Recommender(target.model, _ids(target))
    config = AttackConfig(queries=130, seq_len=10, wave=4, seed=1)
    t = synthesize(rec, config, start_ts=0.0)
    assert len(t.asked) == 130 == rec.queries == len(t.answers) == len(t.ts)
    for (s, prefix), answer in zip(t.asked, t.answers):
        seq = t.sequences[s]
        assert len(answer) == 10 and not set(answer) & set(seq[:prefix])  # known items are excluded
        if prefix < len(seq):
            assert seq[prefix] in answer  # the next item is one of the answers: autoregressive
    assert np.all(np.diff(t.ts) > 0)


def test_the_surrogate_learns_the_target(target):
    ids = _ids(target)
    config = AttackConfig(queries=600, seq_len=10, epochs=15, dim=16, n_layers=1, seed=0)
    transcript = synthesize(Recommender(target.model, ids), config, 0.0)
    users, targets = eval_users(target)
    lists = target_top10(target, users)
    trained = fidelity(target, train_surrogate(transcript, 600, target.n_items, ids, config), users, targets, lists)
    untrained = fidelity(target, train_surrogate(transcript, 600, target.n_items, ids,
                                                 AttackConfig(epochs=0, dim=16, n_layers=1, seq_len=10)),
                         users, targets, lists)
    assert trained["agreement_at_10"] > untrained["agreement_at_10"] + 0.15
    assert trained["target_hr_at_10"] == untrained["target_hr_at_10"]


def test_the_guard_flags_a_sweeping_attacker_and_not_the_benign_clients(target):
    # A transcript that sweeps the catalogue: one fresh item per query, no repeats, as a sweeper does.
    ids = _ids(target)[1:]
    order = np.random.default_rng(0).permutation(len(ids))
    sweep = Transcript(sequences=[[ids[i]] for i in order], asked=[(n, 1) for n in range(len(ids))],
                       answers=[[] for _ in ids], ts=[2e6 + 30.0 * n for n in range(len(ids))])
    lines = guard_stream(target, sweep, benign_clients=30, benign_per_attack_query=3.0)
    assert sum(attack for *_, attack in lines) == len(ids)
    result = run_guard(lines, batch_size=256)
    assert result["flagged"] and result["flag_at_queries"] <= len(ids)
    # The same stream without the attacker's queries flags nobody as the attacker.
    assert not run_guard([line for line in lines if not line[2]], batch_size=256)["flagged"]


def test_the_guard_flags_the_autoregressive_attacker_on_its_chained_queries(target):
    # The red team's own attacker, whose queries repeat seeds and sweep nothing; with the answers logged
    # beside its queries, each query is seen to extend an earlier one by an item it was answered.
    rec = Recommender(target.model, _ids(target))
    transcript = synthesize(rec, AttackConfig(queries=1200, seq_len=10, wave=8, seed=2), start_ts=2e6)
    lines = guard_stream(target, transcript, seed=2, benign_clients=30)
    result = run_guard(lines, batch_size=256)
    # Before the attack ends (the decision stage decides every `decide_every` lines, as replay does).
    assert result["flagged"] and result["flag_at_queries"] < len(transcript.asked)
    assert result["chain"]["share"] >= 0.7
    # Nobody else: the light apps, and the heavy app whose users follow 40% of its answers.
    assert result["benign_clients_flagged"] == []
    assert any(orjson.loads(line)["client_id"] == SESSIONS for _, line, attack in lines
               if not attack and b"rec_query" in line)


def test_client_actions_bound_what_a_flagged_client_gets():
    ranked = list(range(100, 130))
    noisy = perturb_list(ranked, 10, 0.2, "c|q1")
    assert noisy == perturb_list(ranked, 10, 0.2, "c|q1")  # repeating a query cannot average noise away
    assert len(set(noisy) & set(ranked[:10])) == 8  # the utility budget: ceil(0.2 * 10) replaced
    assert set(noisy) - set(ranked[:10]) <= set(ranked[10:30])  # by near misses
    kept = [x for x in noisy if x in ranked[:10]]
    assert kept == sorted(kept)  # in their order
    assert perturb_list(ranked, 10, 0.0, "c|q1") == ranked[:10]
    actions = ClientActions()
    actions.apply({"client_id": "c", "action": {"type": "throttle", "max_qps": 2.0, "max_k": 5,
                                                 "ttl_seconds": 100}}, now=0.0)
    assert actions.admit("c", 50, 0.0) == 5 and actions.admit("c", 50, 0.1) == 5
    with pytest.raises(Throttled):
        actions.admit("c", 50, 0.2)
    assert actions.admit("c", 50, 1.5) == 5  # tokens come back at max_qps
    assert actions.admit("c", 50, 200.0) == 50  # the action expired


def test_recommender_serves_sequences_for_both_models_with_the_action_applied():
    events = synthetic_events(n_users=40, n_items=30, per_user=8, seed=1)
    for model in ("bpr", "sasrec"):
        trainer = Trainer(TrainConfig(model=model, dim=8, epochs=1, max_len=8))
        trainer.ingest(events)
        ids = _ids(trainer)
        rec = Recommender(trainer.model, ids, version="v1")
        seeds = ids[1:4]
        clean = rec.recommend(seeds, 10)
        assert len(clean) == 10 and not set(clean) & set(seeds)
        rec.actions.apply({"client_id": "x", "action": {"type": "noise", "noise_scale": 0.3,
                                                         "ttl_seconds": 60}}, now=0.0)
        noisy = rec.recommend(seeds, 10, client_id="x", now=1.0)
        assert len(set(noisy) & set(clean)) == 7
        assert rec.recommend(seeds, 10, client_id="someone-else", now=1.0) == clean


def test_extraction_gate_blocks_an_easier_to_clone_version():
    base = VersionReport(hr=0.2, ndcg=0.1, uniformity=3.0, shares={}, n_lists=10, extraction=0.40)
    gate = ExtractionGate(budget=500, tolerance=0.02)
    assert not gate.check(VersionReport(0.2, 0.1, 3.0, {}, 10, extraction=0.50), base).passed
    assert gate.check(VersionReport(0.2, 0.1, 3.0, {}, 10, extraction=0.41), base).passed
    assert gate.check(VersionReport(0.2, 0.1, 3.0, {}, 10), base).details["skipped"]
    assert [g.name for g in default_gates()] == ["utility", "exposure", "uniformity"]  # opt-in
    assert default_gates(extraction_budget=300)[-1].budget == 300


def test_attack_extract_command_writes_the_report(tmp_path):
    events = synthetic_events(n_users=60, n_items=40, per_user=10, seed=6)
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps(e) + "\n" for e in events))
    model_dir = tmp_path / "model"
    runner = CliRunner()
    result = runner.invoke(train, [str(clean), "--out", str(model_dir), "--model", "sasrec", "--epochs", "2",
                                   "--dim", "8", "--defence", "gro", "--gro-lambda", "0.2", "--gro-synthetic", "0.5",
                                   "--holdout-pct", "100", "--extraction-budget", "100"])
    assert result.exit_code == 0, result.output
    meta = json.loads((model_dir / "versions" / "v000001.json").read_text())
    assert meta["defence"]["name"] == "gro" and meta["config"]["gro_lambda"] == 0.2
    assert meta["config"]["gro_synthetic"] == 0.5 and meta["defence"]["synthetic"] == 0.5
    assert 0.0 <= meta["metrics"]["extraction_agreement@10"] <= 1.0
    report_path = tmp_path / "report.json"
    result = runner.invoke(attack, ["extract", str(model_dir), "--queries", "120", "--seq-len", "10",
                                    "--epochs", "2", "--dim", "8", "--curve", "0.5,1", "--no-guard",
                                    "--perturb", "0.2", "--out", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    for key in ("agreement_at_10", "surrogate_hr_at_10", "target_hr_at_10"):
        assert 0.0 <= report[key] <= 1.0
    assert report["queries"] == 120 and report["defence"] == "gro"
    assert [p["queries"] for p in report["curve"]] == [60, 120]
    assert report["perturbed"]["noise_scale"] == 0.2


def test_attack_is_registered_in_the_shillguard_command():
    from streams.cli import COMMANDS, main

    assert COMMANDS["attack"] == "trainer.cli:attack"
    result = CliRunner().invoke(main, ["attack", "extract", "--help"])
    assert result.exit_code == 0 and "--queries" in result.output
    assert ATTACKER
