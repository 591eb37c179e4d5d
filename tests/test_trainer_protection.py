"""The protection benchmark's bookkeeping (benchmarks/protection.py), on a tiny stream with tiny models:
leak counts per attack, the streams it trains, the unlearned stream's retractions, and its statistics."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import orjson
import torch

from trainer.synthetic import push_attack, synthetic_events

torch.set_num_threads(1)

_spec = importlib.util.spec_from_file_location(
    "protection", Path(__file__).resolve().parent.parent / "benchmarks" / "protection.py")
protection = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(protection)

TARGET = "i59"


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _files(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    benign = synthetic_events(n_users=80, n_items=60, per_user=12, seed=0)
    attacked, fake_ids = push_attack(benign, targets=[TARGET], n_fakes=15, filler=5, seed=0)
    truth = {"attacks": [{"id": "a0", "family": "average", "intent": "push", "target_items": [TARGET],
                          "event_ids": fake_ids}]}
    leaked, retracted = set(fake_ids[:3]), set(fake_ids[3:20])
    dropped_benign = benign[5]["event_id"]  # a false quarantine
    clean = [e for e in attacked if (e["event_id"] not in set(fake_ids) or e["event_id"] in leaked)
             and e["event_id"] != dropped_benign]
    by_id = {e["event_id"]: e for e in attacked}
    retractions = [{"event_id": e, "verdict": "retracted", "reasons": ["test"], "event": by_id[e]}
                   for e in sorted(retracted)]
    return (_write(tmp_path / "events.jsonl", attacked), _write(tmp_path / "truth.json", [truth]),
            _write(tmp_path / "clean.jsonl", clean), _write(tmp_path / "retractions.jsonl", retractions))


def test_leaks_streams_and_summary(tmp_path):
    events, truth, clean, retractions = _files(tmp_path)
    data = protection.prepare(events, truth, clean, retractions)
    assert len(data["retracted_ids"]) == 17
    assert len(data["released"]) == len(data["clean"]) + 17
    (leak,) = protection.leaks(data["truth"], data["raw"], data["clean"])
    assert (leak["events"], leak["leaked"], leak["accounts_leaked"]) == (90, 3, 1)

    tiny = {"dim": 8, "batch_size": 256}
    runs = protection.measure(data, ["bpr"], {"bpr": 2}, [0, 1], list(protection.STREAMS),
                              echo=lambda _: None, config=tiny)
    assert len(runs) == 8 and all(len(r["hits"]) == len(data["held"]) for r in runs)
    unlearned = [r for r in runs if r["stream"] == protection.STREAMS["unlearned"]]
    assert all(r["unlearning"]["unlearned"] == 17 for r in unlearned)

    rows = protection.summarize(runs, data["targets"])
    summaries = [r for r in rows if r["stream"] == "summary"]
    assert [r["judged"] for r in summaries] == [protection.STREAMS["clean"], protection.STREAMS["unlearned"]]
    for r in summaries:
        assert r["seeds"] == 2 and len(r["hr_ratio_per_seed"]) == 2
        assert math.isfinite(r["hr_ratio"]) and r["removed_decided"] in ("decided", "undecided")
    assert all("hits" not in r for r in rows)


def test_statistics():
    gain, removed, se = protection.gain_removed([0.0, 0.0, 0.0], [0.10, 0.10, 0.10], [0.0, 0.0, 0.0])
    assert (round(gain, 6), removed, se) == (0.1, 1.0, 0.0)
    assert math.isnan(protection.gain_removed([0.1, 0.1], [0.05, 0.05], [0.0, 0.0])[1])  # no gain to remove
    rng = np.random.default_rng(0)
    base = (rng.random(2000) < 0.3).astype(float)
    ratio, se = protection.paired_ratio(base * (rng.random(2000) < 0.9), base)
    assert abs(ratio - 0.9) < 0.03 and 0 < se < 0.02
    assert protection.decided(0.99, 0.005, 0.97) == "decided"
    assert protection.decided(0.98, 0.01, 0.97) == "undecided"


def test_an_attack_that_bought_nothing_is_no_gain_not_a_failure():
    row = {"gain_removed": float("nan"), "gain_removed_100": float("nan"), "hr_ratio": 1.0, "pass": False,
           "removed_decided": "undecided", "removed_100_decided": "undecided", "hr_decided": "decided",
           "no_gain": True}
    assert protection.verdict(row).startswith("NO GAIN")
    assert protection.exit_code([row]) == 2
    failed = {**row, "no_gain": False, "gain_removed": 0.5, "removed_decided": "decided"}
    assert protection.verdict(failed) == "FAIL"
    assert protection.exit_code([row, failed]) == 1
    assert protection.exit_code([{**failed, "pass": True}]) == 0
