"""The evaluator, on hand-built replay outputs with hand-computed scores."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from simulator import build, evaluate_replay, plan_attacks, synthetic_base
from simulator.cli import evaluate


def write_jsonl(path, rows):
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


TRUTH = {
    "version": 1,
    "totals": {"lines": 10, "events": 10, "benign_events": 4, "malicious_events": 6},
    "attacks": [
        {"id": "a0", "family": "random", "intent": "push", "entity_kind": "user",
         "entities": {"user": ["u1", "u2", "u3", "u4"]}, "target_items": ["i1"],
         "event_ids": ["e1", "e2", "e3", "e4"]},
        {"id": "a1", "family": "sweep", "intent": None, "entity_kind": "client",
         "entities": {"client": ["c1"]}, "target_items": [], "event_ids": ["e5"]},
        {"id": "a2", "family": "catalog_poison", "intent": "push", "entity_kind": "seller",
         "entities": {"seller": ["s1"]}, "target_items": ["i2"], "event_ids": ["e6"]},
    ],
}
FLAGS = [
    {"kind": "user", "id": "u1", "score": 0.9, "detectors": ["profile"], "evidence": {}},
    {"kind": "user", "id": "u2", "score": 0.8, "detectors": ["profile"], "evidence": {}},
    {"kind": "user", "id": "u2", "score": 0.95, "detectors": ["profile", "graph"], "evidence": {}},  # update
    {"kind": "user", "id": "u9", "score": 0.7, "detectors": ["profile"],  # benign, pushed random's target
     "evidence": {"profile": {"targets": [{"item": "i1", "direction": "push"}]}}},
    {"kind": "client", "id": "c1", "score": 0.99, "detectors": ["sweep"], "evidence": {}},
    {"kind": "client", "id": "c7", "score": 0.6, "detectors": ["sweep"], "evidence": {}},  # benign
    {"kind": "item", "id": "i1", "score": 0.8, "detectors": ["target"], "evidence": {}},
    {"kind": "item", "id": "i5", "score": 0.5, "detectors": ["target"], "evidence": {}},
]
# Lines 0-9 hold e1..e10; e7..e10 are benign. Line 9 (e10) got no verdict, line 8 (e9) was rejected.
VERDICTS = [
    {"line": 0, "event_id": "e1", "verdict": "quarantined", "reasons": ["user flagged"]},
    {"line": 1, "event_id": "e2", "verdict": "clean", "reasons": []},
    {"line": 2, "event_id": "e3", "verdict": "clean", "reasons": []},
    {"line": 3, "event_id": "e4", "verdict": "clean", "reasons": []},
    {"line": 4, "event_id": "e5", "verdict": "quarantined", "reasons": ["client flagged"]},
    {"line": 5, "event_id": "e6", "verdict": "clean", "reasons": []},
    {"line": 6, "event_id": "e7", "verdict": "quarantined", "reasons": ["user flagged"]},
    {"line": 7, "event_id": "e8", "verdict": "clean", "reasons": []},
    {"line": 8, "event_id": None, "verdict": "rejected", "reasons": ["malformed_json: ..."]},
    {"line": 1, "event_id": "e2", "verdict": "retracted", "reasons": ["user flagged late"]},
]


@pytest.fixture
def replay(tmp_path):
    write_jsonl(tmp_path / "verdicts.jsonl", VERDICTS)
    write_jsonl(tmp_path / "flags.jsonl", FLAGS)
    (tmp_path / "truth.json").write_bytes(orjson.dumps(TRUTH))
    return tmp_path


def test_hand_computed_scores(replay):
    report = evaluate_replay(replay, replay / "truth.json")
    # Users: 3 flagged (u1, u2, u9), 2 of the 4 fakes. F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = 4/7.
    assert report["users"] == {"flagged": 3, "malicious": 4, "true_positives": 2, "false_positives": 1,
                               "unattributed_false_positives": 0, "precision": 0.6667, "recall": 0.5,
                               "f1": 0.5714}
    random = report["families"]["random"]  # u9's evidence names random's target: its false positive
    assert (random["precision"], random["recall"], random["f1"]) == (0.6667, 0.5, 0.5714)
    assert random["false_positives"] == 1
    assert random["targets_flagged"] == 1
    assert (random["events_quarantined"], random["events_quarantined_share"]) == (2, 0.5)
    sweep = report["families"]["sweep"]  # c7's flag names nothing of the sweep's: not charged to it
    assert (sweep["kind"], sweep["precision"], sweep["recall"], sweep["f1"]) == ("client", 1.0, 1.0, 1.0)
    assert report["clients"]["unattributed_false_positives"] == 1
    poison = report["families"]["catalog_poison"]
    assert (poison["kind"], poison["precision"], poison["recall"], poison["f1"]) == ("seller", 0.0, 0.0, 0.0)
    assert report["items"] == {"targets": 2, "targets_flagged": 1, "targets_flagged_share": 0.5,
                               "other_items_flagged": 1}
    events = report["events"]
    assert events["without_verdict"] == 1 and events["rejected"] == 1
    assert (events["benign_quarantined"], events["benign_quarantined_share"]) == (1, 0.25)
    # e1 and e5 quarantined, e2 retracted after release: 3 of 6.
    assert (events["malicious_quarantined"], events["malicious_quarantined_share"]) == (3, 0.5)
    assert events["malicious_retracted"] == 1 and events["benign_retracted"] == 0
    # u9 and c7 are false flags among 4 benign events: 500,000 per million.
    assert (events["false_flags"], events["false_flags_per_million_genuine_events"]) == (2, 500_000.0)
    # No by_type in this truth and no outcome files: every benign event counts as a user's, e7 was held.
    assert (events["genuine_user_events"], events["genuine_user_events_quarantined"]) == (4, 1)


def test_false_positives_are_charged_to_the_family_their_evidence_names(tmp_path):
    truth = {
        "totals": {"lines": 12, "events": 12, "benign_events": 8, "malicious_events": 4,
                   "by_type": {"rating": {"benign": 4, "malicious": 3}, "click": {"benign": 2, "malicious": 1},
                               "rec_query": {"benign": 2, "malicious": 0}}},
        "attacks": [
            {"id": "a0", "family": "covisit", "intent": "push", "entity_kind": "user",
             "entities": {"user": ["u1", "u2"]}, "target_items": ["i1"], "event_ids": ["e1", "e2"]},
            {"id": "a1", "family": "sleeper", "intent": "push", "entity_kind": "user",
             "entities": {"user": ["u3", "u4"]}, "target_items": ["i2"], "event_ids": ["e3", "e4"]}],
        "benign_groups": [{"kind": "trending", "users": ["b4", "b5"], "items": ["i9"]}],
    }
    flags = [
        {"kind": "user", "id": "u1", "evidence": {"dense_block": {"block": "dense_block-7", "items": ["i1"]}}},
        {"kind": "user", "id": "u3", "evidence": {"profile": {"targets": [{"item": "i2"}]}}},
        # b1 sits in covisit's block (its flag names the block, not the target): covisit's false positive.
        {"kind": "user", "id": "b1", "evidence": {"dense_block": {"block": "dense_block-7", "items": ["i8"]}}},
        # b2 names sleeper's target: sleeper's. b3 names both targets: both families'.
        {"kind": "user", "id": "b2", "evidence": {"coordination": {"item": "i2", "rating": "5"}}},
        {"kind": "user", "id": "b3", "evidence": {"a": {"item": "i1"}, "b": {"targets": [{"item": "i2"}]}}},
        # b4 (a trending crowd member) names an item of no attack and a group of no attack: unattributed.
        {"kind": "user", "id": "b4", "evidence": {"coordination": {"item": "i9", "rating": "5"},
                                                  "lockstep": {"block": "lockstep-1"}}},
        {"kind": "item", "id": "i1", "evidence": {}},
    ]
    write_jsonl(tmp_path / "flags.jsonl", flags)
    write_jsonl(tmp_path / "verdicts.jsonl", [
        {"line": n, "event_id": f"e{n + 1}", "verdict": "quarantined" if n in (0, 4, 5, 6, 8) else "clean"}
        for n in range(12)])
    # e5, e6, e7 and e9 are benign and held: two ratings, a click and a query (from the outcome files).
    write_jsonl(tmp_path / "quarantined.jsonl", [
        {"event_id": "e5", "event": {"type": "rating"}}, {"event_id": "e6", "event": {"type": "click"}},
        {"event_id": "e9", "event": {"type": "rec_query"}}])
    write_jsonl(tmp_path / "retractions.jsonl", [{"event_id": "e7", "event": {"type": "rating"}}])
    report = evaluate_replay(tmp_path, truth)
    covisit, sleeper = report["families"]["covisit"], report["families"]["sleeper"]
    assert (covisit["flagged"], covisit["false_positives"], covisit["precision"], covisit["recall"]) == (
        1, 2, 0.3333, 0.5)
    assert (sleeper["flagged"], sleeper["false_positives"], sleeper["precision"]) == (1, 2, 0.3333)
    users = report["users"]
    assert (users["false_positives"], users["unattributed_false_positives"], users["precision"]) == (4, 1, 0.3333)
    events = report["events"]
    assert events["false_flags_per_million_genuine_events"] == round(1e6 * 4 / 8, 2)
    # Genuine users' events: 6 benign ratings and clicks, 3 of them held (the query is not one).
    assert (events["genuine_user_events"], events["genuine_user_events_quarantined"],
            events["genuine_user_events_quarantined_share"]) == (6, 3, 0.5)
    assert report["benign_groups"] == {"trending": {"groups": 1, "users": 2, "flagged": 1}}


def test_verdicts_without_line_numbers_are_counted_by_event_id(tmp_path):
    write_jsonl(tmp_path / "verdicts.jsonl", [{k: v for k, v in row.items() if k != "line"} for row in VERDICTS])
    report = evaluate_replay(tmp_path, TRUTH)  # no flags.jsonl: nothing flagged
    assert report["events"]["without_verdict"] == 1
    assert report["users"]["precision"] == 0.0 and report["users"]["recall"] == 0.0


def test_missing_verdicts_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="verdicts.jsonl"):
        evaluate_replay(tmp_path, TRUTH)


def test_an_oracle_scores_perfectly_through_the_cli(tmp_path):
    sim = build(synthetic_base(n_users=80, n_items=150, n_ratings=4_000, days=40, seed=2),
                plan_attacks("all", size=6), seed=9)
    sim.write(tmp_path)
    truth = sim.truth
    bad = {e for attack in truth["attacks"] for e in attack["event_ids"]}
    write_jsonl(tmp_path / "verdicts.jsonl", [
        {"event_id": e["event_id"], "line": n, "verdict": "quarantined" if e["event_id"] in bad else "clean",
         "reasons": []} for n, e in enumerate(sim.events)])
    write_jsonl(tmp_path / "flags.jsonl", [
        {"kind": kind, "id": i, "score": 1.0, "detectors": ["oracle"], "evidence": {}}
        for attack in truth["attacks"] for kind, ids in attack["entities"].items() for i in ids] + [
        {"kind": "item", "id": i, "score": 1.0, "detectors": ["oracle"], "evidence": {}}
        for attack in truth["attacks"] for i in attack["target_items"]])
    result = CliRunner().invoke(evaluate, [str(tmp_path), "--truth", str(tmp_path / "truth.json"),
                                           "--json", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    assert "lines without a verdict: 0" in result.output
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    assert all(row["f1"] == 1.0 and row["false_positives"] == 0 for row in report["families"].values())
    assert (report["users"]["precision"], report["users"]["recall"]) == (1.0, 1.0)
    assert report["items"]["targets_flagged_share"] == 1.0
    assert report["events"]["benign_quarantined"] == 0 and report["events"]["malicious_quarantined_share"] == 1.0
