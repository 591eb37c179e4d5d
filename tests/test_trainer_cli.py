"""`train` and `recommend` from the command line: one line per user, seen items excluded, incremental reruns."""

import json

import orjson
import torch
from click.testing import CliRunner

from trainer.cli import recommend, train
from trainer.synthetic import synthetic_events

torch.set_num_threads(1)  # tiny models: threads only contend on a shared 2-core machine


def _write(path, events):
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_train_then_recommend_excludes_seen_items(tmp_path):
    events = synthetic_events(n_users=50, n_items=40, per_user=10, seed=4)
    events.append({"type": "catalog_edit", "event_id": "c1", "ts": 1.0, "item_id": "i1", "seller_id": "s",
                   "title": "ignored by the trainer"})
    clean = tmp_path / "clean.jsonl"
    _write(clean, events)
    model_dir = tmp_path / "model"
    runner = CliRunner()
    result = runner.invoke(train, [str(clean), "--out", str(model_dir), "--epochs", "3", "--dim", "8"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["promoted"] is True

    users = tmp_path / "users.txt"
    users.write_text("u1\nu2\nsomeone-new\n")
    recs = tmp_path / "recs.jsonl"
    result = runner.invoke(recommend, [str(model_dir), "--k", "10", "--users", str(users), "--out", str(recs)])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in recs.read_text().splitlines()]
    assert [line["user_id"] for line in lines] == ["u1", "u2", "someone-new"]
    seen = {}
    for e in events:
        if e["type"] == "rating":
            seen.setdefault(e["user_id"], set()).add(e["item_id"])
    for line in lines[:2]:
        assert len(line["items"]) == 10 and len(set(line["items"])) == 10
        assert not set(line["items"]) & seen[line["user_id"]]
    assert len(lines[2]["items"]) == 10  # cold start: the most popular items

    # All users by default.
    result = runner.invoke(recommend, [str(model_dir), "--out", str(recs)])
    assert len(recs.read_text().splitlines()) == 50


def test_second_run_is_incremental_and_honours_retractions(tmp_path):
    events = synthetic_events(n_users=40, n_items=30, per_user=8, seed=6)
    clean = tmp_path / "clean.jsonl"
    _write(clean, events[:200])
    model_dir = tmp_path / "model"
    runner = CliRunner()
    assert runner.invoke(train, [str(clean), "--out", str(model_dir), "--epochs", "2", "--dim", "8"]).exit_code == 0
    result = runner.invoke(train, [str(clean), "--out", str(model_dir), "--epochs", "2"])
    assert "nothing to do" in result.output  # the same file again: no event counted twice
    _write(clean, events)  # the replay appended more
    retractions = tmp_path / "retractions.jsonl"
    retractions.write_text(json.dumps({"event_id": events[0]["event_id"], "event": events[0],
                                       "reasons": ["user flagged"]}) + "\n")
    result = runner.invoke(train, [str(clean), "--out", str(model_dir), "--epochs", "2",
                                   "--retractions", str(retractions)])
    assert result.exit_code in (0, 3), result.output  # 3: trained, but a gate blocked promotion
    meta = json.loads((model_dir / "versions" / "v000002.json").read_text())
    assert meta["events_learned"] == len(events) and meta["events_active"] == len(events) - 1
    assert meta["offsets"] and meta["gates"]
