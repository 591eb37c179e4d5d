"""The extraction benchmark's table (benchmarks/extraction.py): runs of different schedules are never pooled,
and each defended row is judged against the undefended row of its own schedule and split."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import extraction  # noqa: E402


def report(defence, epochs, target_hr, agreement, surrogate_hr, split="test", **gro):
    config = {"epochs": epochs, "gro_lambda": 0.075, "gro_candidates": 50, "gro_warmup": 0, **gro}
    return {"defence": defence, "split": split, "seed": 0, "target_config": config, "curve": [],
            "target_hr_at_10": target_hr, "agreement_at_10": agreement, "surrogate_hr_at_10": surrogate_hr,
            "train_seconds": 1.0, "total_seconds": 2.0}


def test_rows_of_another_schedule_are_neither_pooled_nor_used_as_the_baseline():
    reports = [report(None, 10, 0.18, 0.50, 0.17), report(None, 30, 0.20, 0.50, 0.18),
               report("gro", 30, 0.185, 0.38, 0.13, gro_warmup=20)]
    lines = extraction.table(reports).splitlines()
    rows = [line.split()[0:2] for line in lines[1:4]]
    assert rows == [["none", "ep=10"], ["none", "ep=30"], ["gro", "l=0.075"]]
    verdict = [line for line in lines if " vs " in line]
    assert len(verdict) == 1
    # against the 30-epoch baseline (0.20): 92.5% kept; against the 10-epoch one it would read 102.8%
    assert "vs none ep=30:" in verdict[0] and "target HR@10 at 92.5%" in verdict[0]
    assert "warm=20 ep=30" in verdict[0] and verdict[0].endswith("PASS")


def test_validation_rows_are_judged_within_their_split():
    reports = [report(None, 30, 0.20, 0.50, 0.18), report(None, 30, 0.25, 0.50, 0.18, split="valid"),
               report("gro", 30, 0.20, 0.35, 0.12, split="valid")]
    verdict = [line for line in extraction.table(reports).splitlines() if " vs " in line]
    assert verdict == [line for line in verdict if "vs none ep=30 [valid]:" in line and "at 80.0%" in line]
    assert len(verdict) == 1 and verdict[0].endswith("FAIL")
