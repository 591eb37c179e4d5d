"""Learning from analysts: precision among the cases a simulated analyst reviews each day, before and after
the fusion learns from their labels (Dal Pozzolo et al., 2018: alert precision, the share of the alerts
investigators see that are frauds).

    python benchmarks/analyst_learning.py                      # 2 held-out seeds, 60k events each, 10 a day
    python benchmarks/analyst_learning.py --seeds 2000,2001,2002 --events 100000 --per-day 20

Each stream is simulated with `shillguard simulate --data synthetic --attacks all --seed S --max-events N`
(every attack family in a benign stream with trending crowds, sign-up waves and casual raters; seeds from
2000, the report half, never used for tuning) and replayed through the service's pipeline (the default
detectors without catalog_drift, whose MiniLM encoder is slow here and which no family but catalog_poison
needs). Each event-time day, every account (user, seller, client) whose evidence grew that day and whose
fused risk reaches `--alert-floor` is an alert; the analyst reviews the `--per-day` riskiest not reviewed
before, and labels each from the simulator's truth (a planted account: confirm, true_positive; else
release, false_positive).
- before: alerts ranked by the configured fusion (every detector's evidence counts fully), which never
  changes;
- after: ranked by detectors.learned_fusion.LearnedFusion (the worker's fusion when
  SHILLGUARD_LEARN_FROM_ANALYSTS is on), which learns from each day's labels overnight.
Printed: per day with alerts, alerts, reviewed, malicious among them before and after; the totals; the
learned weights; and the flag threshold the false-flag budget gives on the last day's alerts.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.fusion import EvidenceFusion  # noqa: E402
from detectors.learned_fusion import LearnedFusion  # noqa: E402
from streams.assembly import build_pipeline  # noqa: E402
from streams.replay import iter_batches  # noqa: E402
from streams.settings import Settings  # noqa: E402

DAY = 86400.0
DATA = "movielens"  # set by --data
ACCOUNTS = ("user", "seller", "client")


def simulate(seed: int, events: int, out: Path) -> tuple[Path, set[tuple[str, str]]]:
    command = [sys.executable, "-m", "streams.cli", "simulate", "--data", DATA, "--attacks", "all",
               "--seed", str(seed), "--out", str(out)] + (["--max-events", str(events)] if events else [])
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    truth = orjson.loads((out / "truth.json").read_bytes())
    bad = {(kind, str(entity)) for attack in truth["attacks"] for kind, ids in attack["entities"].items()
           for entity in ids}
    return out / "events.jsonl", bad


def alerts_by_day(events: Path, settings: Settings, floor: float) -> tuple[dict[int, dict], int]:
    """Day -> {entity: detector scores at the day's end} for accounts whose evidence grew that day."""
    pipeline = build_pipeline(settings)
    fusion = EvidenceFusion(settings.prior, settings.detector_weights)
    days: dict[int, dict] = defaultdict(dict)
    seen_at: dict[tuple[str, str], float] = {}
    try:
        with open(events, "rb") as stream:
            for batch in iter_batches(stream, settings.batch_size):
                pipeline.process(batch)
                for key, risk in pipeline.decision._risk.items():  # noqa: SLF001 - a benchmark's look inside
                    if key[0] in ACCOUNTS and risk.last_ts != seen_at.get(key):
                        seen_at[key] = risk.last_ts
                        if fusion.risk(risk.scores) >= floor:
                            days[int(risk.last_ts // DAY)][key] = dict(risk.scores)
        pipeline.flush()
        lines = pipeline.position
    finally:
        pipeline.close()
    return days, lines


def review(days: dict[int, dict], bad: set, per_day: int, model, learn: bool) -> dict[int, tuple[int, int]]:
    """Day -> (reviewed, malicious among them); the model learns each day's labels after the day."""
    reviewed: set = set()
    out = {}
    for day in sorted(days):
        alerts = [(key, scores) for key, scores in days[day].items() if key not in reviewed]
        alerts.sort(key=lambda pair: (-model.risk(pair[1]), pair[0]))
        chosen = alerts[:per_day]
        hits = sum(key in bad for key, _ in chosen)
        out[day] = (len(chosen), hits)
        for key, scores in chosen:
            reviewed.add(key)
            if learn:
                model.learn(scores, key in bad)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="2000,2001")
    parser.add_argument("--data", default="movielens", help="movielens ($SHILLGUARD_MOVIELENS) or synthetic")
    parser.add_argument("--events", type=int, default=0, help="cap on events (0: the whole stream)")
    parser.add_argument("--per-day", type=int, default=10)
    parser.add_argument("--alert-floor", type=float, default=0.2, help="fused risk that makes an alert")
    parser.add_argument("--min-labels", type=int, default=20)
    parser.add_argument("--cache", default=None, help="directory keeping each seed's alerts between runs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    global DATA
    DATA = args.data
    settings = Settings(offload_detectors="")
    settings.detectors = ",".join(n for n in settings.detectors.split(",") if n != "catalog_drift")
    totals = {"before": [0, 0], "after": [0, 0], "before_later": [0, 0], "after_later": [0, 0]}
    for seed in (int(s) for s in args.seeds.split(",")):
        cached = Path(args.cache) / f"{args.data}-{seed}-{args.events}.pickle" if args.cache else None
        if cached is not None and cached.exists():
            days, lines, bad = pickle.loads(cached.read_bytes())
        else:
            with tempfile.TemporaryDirectory() as tmp:
                events, bad = simulate(seed, args.events, Path(tmp))
                days, lines = alerts_by_day(events, settings, settings.prior)  # every account with evidence
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(pickle.dumps((days, lines, bad)))
        static = EvidenceFusion(settings.prior, settings.detector_weights)
        days = {day: kept for day, alerts in days.items()
                if (kept := {k: v for k, v in alerts.items() if static.risk(v) >= args.alert_floor})}
        learned = LearnedFusion(settings.prior, settings.detector_weights, min_labels=args.min_labels,
                                budget=settings.false_flag_budget)
        before = review(days, bad, args.per_day, static, learn=False)
        after = review(days, bad, args.per_day, learned, learn=True)
        everyone = {key for alerts in days.values() for key in alerts}
        print(f"\nseed {seed}: {lines:,} events, {sum(len(d) for d in days.values())} alerts on {len(days)} days "
              f"({len(everyone)} accounts, {len(everyone & bad)} of them planted: "
              f"{len(everyone & bad) / max(len(everyone), 1):.0%}), {len(bad)} planted accounts in all")
        print(f"{'day':>5} {'alerts':>7} {'reviewed':>9} {'precision before':>17} {'precision after':>16}")
        labels = 0
        for index, day in enumerate(sorted(days)):
            (n, hits_before), (_, hits_after) = before[day], after[day]
            if not n:
                continue
            print(f"{day - min(days):>5} {len(days[day]):>7} {n:>9} {hits_before / n:>17.2f} {hits_after / n:>16.2f}")
            totals["before"][0] += n
            totals["before"][1] += hits_before
            totals["after"][0] += n
            totals["after"][1] += hits_after
            if labels >= args.min_labels:  # days on which the learned model was ranking
                totals["before_later"][0] += n
                totals["before_later"][1] += hits_before
                totals["after_later"][0] += n
                totals["after_later"][1] += hits_after
            labels += n
        print("learned weights:", learned.learned_weights(), f"intercept {learned.model.intercept:.3f}")
        last = max(days)
        print(f"flag threshold within {settings.false_flag_budget:g} false flags per million genuine events, "
              f"on the last day's alerts: {learned.calibrate(days[last].values(), lines):.3f} "
              f"(configured {settings.flag_threshold})")
    for name in ("before", "after", "before_later", "after_later"):
        n, hits = totals[name]
        print(f"{name:>13}: {hits}/{n} reviewed cases malicious, precision {hits / max(n, 1):.3f}")


if __name__ == "__main__":
    main()
