"""Generalisation: the detectors on streams drawn from parameter ranges and seeds that tuning never saw.

    python benchmarks/generalisation.py                 # every scenario, 2 seeds per split, ~200k events each
    python benchmarks/generalisation.py --quick         # 1 seed per split, 60k events: a smoke run
    python benchmarks/generalisation.py --scenarios covisit,sleeper --seeds 3 --json out.json
    python benchmarks/generalisation.py --splits tune     # the tune rows alone, while choosing and tuning
    SHILLGUARD_DETECTORS=profile,rating_shift python benchmarks/generalisation.py

Each scenario is simulated (`shillguard simulate`, in process) on the `tune` half of simulator/ranges.py
with tune seeds (1000, 1001, ...) and on the disjoint `report` half with report seeds (2000, 2001, ...):
choose and tune detectors on the tune rows, quote the report rows. Each stream is replayed in process
(streams.replay, the pipeline `shillguard replay` builds) with the detectors of `--detectors`, else
$SHILLGUARD_DETECTORS, else the default set without `catalog_drift` (the MiniLM text encoder: slow here;
so `attacked`'s catalog_poison sellers, whom only it finds, read 0 unless it is named), and scored with
simulator.evaluate. Figures are pooled over a split's seeds: per-family recall (flagged / planted
accounts), user precision (malicious flagged / all flagged users), genuine users' events quarantined (benign ratings and clicks held back), false flags per
million genuine events (benign users, sellers and clients flagged), targets flagged, and the members of
benign crowds flagged.

Scenarios (`shillguard simulate` options; MovieLens-100K via $SHILLGUARD_MOVIELENS):
  attacked      --attacks all --max-events N        every family, the new ones too
  attack_free   --attacks none --max-events N       only benign traffic: crowds, casual raters, waves
  review_site   --sparse --timestamps none --contamination 0.35    the stand-in for a labelled review site
  review_site_random_time   the same with --timestamps random: dates that are there and carry nothing
  generous_attack_free   attack_free with --generous G: a site where most ratings are 5s (G drawn per stream)
  generous_review_site   review_site_random_time with --generous G
  covisit       --attacks covisit --max-events N
  sleeper       --attacks sleeper --max-events N
  slow_nuke     --attacks slow_nuke --max-events N
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulator.build import Shape, build, plan_attacks  # noqa: E402
from simulator.cli import load_base  # noqa: E402
from simulator.evaluate import evaluate_replay  # noqa: E402
from simulator.ranges import Ranges  # noqa: E402
from streams.settings import Settings  # noqa: E402

# The service's default set without the MiniLM text encoder (see the docstring)
DEFAULT_DETECTORS = ",".join(name for name in Settings().detectors.split(",") if name != "catalog_drift")
SPLITS = {"tune": 1000, "report": 2000}  # first seed of each split; seeds never overlap
SCENARIOS: dict[str, dict[str, Any]] = {
    "attacked": {"attacks": "all", "capped": True},
    "attack_free": {"attacks": "none", "capped": True},
    "review_site": {"attacks": "none", "capped": False,
                    "shape": {"sparse": True, "timestamps": "none", "contamination": 0.35}},
    "review_site_random_time": {"attacks": "none", "capped": False,
                                "shape": {"sparse": True, "timestamps": "random", "contamination": 0.35}},
    # Sites more generous than MovieLens (most ratings 5s), the lift drawn per stream from the split's half
    "generous_attack_free": {"attacks": "none", "capped": True, "shape": {"generous": "drawn"}},
    "generous_review_site": {"attacks": "none", "capped": False,
                             "shape": {"sparse": True, "timestamps": "random", "contamination": 0.35,
                                       "generous": "drawn"}},
    "covisit": {"attacks": "covisit", "capped": True},
    "sleeper": {"attacks": "sleeper", "capped": True},
    "slow_nuke": {"attacks": "slow_nuke", "capped": True},
}


def shape_of(name: str, seed: int, split: str) -> dict[str, Any]:
    """The scenario's `Shape` options, a drawn one drawn for this seed from the split's half of its range."""
    shape = dict(SCENARIOS[name].get("shape", {}))
    if shape.get("generous") == "drawn":
        shape["generous"] = round(float(Ranges(split).draw(np.random.default_rng([seed, 7_001]), "generous.share")), 3)
    return shape


def simulate_command(name: str, seed: int, split: str, max_events: int) -> str:
    """The `shillguard simulate` line that makes the same stream."""
    spec = SCENARIOS[name]
    parts = ["shillguard simulate", f"--attacks {spec['attacks']}"]
    for key, value in shape_of(name, seed, split).items():
        parts.append(f"--{key}" if value is True else f"--{key} {value}")
    if spec["capped"]:
        parts.append(f"--max-events {max_events}")
    return " ".join(parts + [f"--ranges {split}", f"--seed {seed}", "--out DIR"])


def run_one(base, name: str, seed: int, split: str, max_events: int, detectors: str,
            workdir: Path) -> dict[str, Any]:
    from streams.assembly import build_pipeline
    from streams.replay import replay
    from streams.settings import Settings

    spec = SCENARIOS[name]
    started = time.perf_counter()
    simulation = build(base, plan_attacks(spec["attacks"]), seed=seed,
                       max_events=max_events if spec["capped"] else None,
                       shape=Shape(ranges=split, **shape_of(name, seed, split)))
    events_path, truth_path = simulation.write(workdir)
    simulated = time.perf_counter() - started
    settings = Settings(detectors=detectors)
    pipeline = build_pipeline(settings)
    try:
        summary = replay(events_path, workdir / "replay", pipeline, batch_size=settings.batch_size)
    finally:
        pipeline.close()
    report = evaluate_replay(workdir / "replay", simulation.truth)
    return {"scenario": name, "split": split, "seed": seed, "events": len(simulation.events),
            "simulate_seconds": round(simulated, 2), "replay_seconds": summary["seconds"],
            "events_per_second": summary["events_per_second"], "report": report,
            "command": simulate_command(name, seed, split, max_events)}


def pool(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over a split's seeds, then the ratios."""
    total: dict[str, float] = defaultdict(float)
    families: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    crowds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    kinds: dict[str, str] = {}
    for run in runs:
        report = run["report"]
        users, events, items = report["users"], report["events"], report["items"]
        total["flagged"] += users["flagged"]
        total["true_positives"] += users["true_positives"]
        total["malicious"] += users["malicious"]
        total["unattributed"] += users["unattributed_false_positives"]
        total["false_flags"] += events["false_flags"]
        total["genuine_events"] += events["benign"]
        total["genuine_user_events"] += events["genuine_user_events"]
        total["genuine_user_held"] += events["genuine_user_events_quarantined"]
        total["targets"] += items["targets"]
        total["targets_flagged"] += items["targets_flagged"]
        total["events"] += run["events"]
        for family, row in report["families"].items():
            kinds[family] = row["kind"]
            for key in ("entities", "flagged", "false_positives", "targets", "targets_flagged"):
                families[family][key] += row[key]
        for kind, row in report["benign_groups"].items():
            crowds[kind]["users"] += row["users"]
            crowds[kind]["flagged"] += row["flagged"]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b else None
    return {
        "seeds": [run["seed"] for run in runs], "events": int(total["events"]),
        "user_precision": ratio(total["true_positives"], total["flagged"]),
        "user_recall": ratio(total["true_positives"], total["malicious"]),
        "users_flagged": int(total["flagged"]), "benign_users_flagged": int(total["flagged"] - total["true_positives"]),
        "unattributed_false_positives": int(total["unattributed"]),
        "genuine_user_events_quarantined": ratio(total["genuine_user_held"], total["genuine_user_events"]),
        "false_flags_per_million_genuine_events": (round(1e6 * total["false_flags"] / total["genuine_events"], 1)
                                                   if total["genuine_events"] else None),
        "targets_flagged": f"{int(total['targets_flagged'])}/{int(total['targets'])}",
        "families": {family: {"kind": kinds[family], "recall": ratio(row["flagged"], row["entities"]),
                              "precision": ratio(row["flagged"], row["flagged"] + row["false_positives"]),
                              "accounts": int(row["entities"]),
                              "targets_flagged": f"{int(row['targets_flagged'])}/{int(row['targets'])}"}
                     for family, row in families.items()},
        "benign_groups": {kind: {"users": int(row["users"]), "flagged": int(row["flagged"])}
                          for kind, row in crowds.items()},
    }


def show(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def print_tables(results: dict[str, dict[str, Any]]) -> None:
    print("\n| scenario | split | seeds | events | user precision | user recall | genuine users' events "
          "quarantined | false flags per M genuine events | benign users flagged (unattributed) | "
          "targets flagged | crowd members flagged |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, row in results.items():
        name, split = key.split(":")
        crowds = ", ".join(f"{kind} {g['flagged']}/{g['users']}" for kind, g in row["benign_groups"].items())
        quarantined = row["genuine_user_events_quarantined"]
        print(f"| {name} | {split} | {','.join(map(str, row['seeds']))} | {row['events']:,} | "
              f"{show(row['user_precision'])} | {show(row['user_recall'])} | "
              f"{'–' if quarantined is None else f'{100 * quarantined:.2f}%'} | "
              f"{show(row['false_flags_per_million_genuine_events'], 1)} | "
              f"{row['benign_users_flagged']} ({row['unattributed_false_positives']}) | {row['targets_flagged']} | "
              f"{crowds} |")
    columns = [key for key, row in results.items() if row["families"]]
    families = list(dict.fromkeys(f for key in columns for f in results[key]["families"]))
    if not families:
        return
    print("\nPer-family recall of its accounts, users unless named (precision: the family's flagged accounts "
          "against the benign flags whose evidence names it):\n")
    print("| family | " + " | ".join(k.replace(":", " ") for k in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for family in families:
        cells = []
        for key in columns:
            row = results[key]["families"].get(family)
            cells.append("" if row is None else f"{show(row['recall'], 2)} ({show(row['precision'], 2)})")
        kind = next(results[key]["families"][family]["kind"] for key in columns
                    if family in results[key]["families"])
        print(f"| {family}{'' if kind == 'user' else f' ({kind}s)'} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, from: "
                        + ", ".join(SCENARIOS))
    parser.add_argument("--seeds", type=int, default=2, help="seeds per split")
    parser.add_argument("--splits", default=",".join(SPLITS),
                        help="comma-separated, from: tune, report (tune alone while choosing and tuning)")
    parser.add_argument("--max-events", type=int, default=200_000, help="events per capped stream")
    parser.add_argument("--quick", action="store_true", help="1 seed per split, 60,000 events per stream")
    parser.add_argument("--data", default="movielens", help="movielens, synthetic or a MovieLens-format dir")
    parser.add_argument("--detectors", default=None,
                        help=f"default: $SHILLGUARD_DETECTORS, else {DEFAULT_DETECTORS}")
    parser.add_argument("--json", type=Path, default=None, help="write every run and the pooled rows here")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.max_events = 1, 60_000
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}: one of {', '.join(SCENARIOS)}")
    splits = {name.strip(): SPLITS[name.strip()] for name in args.splits.split(",") if name.strip() in SPLITS}
    if not splits:
        parser.error(f"--splits: one or more of {', '.join(SPLITS)}")
    detectors = args.detectors or os.environ.get("SHILLGUARD_DETECTORS") or DEFAULT_DETECTORS
    base = load_base(args.data)
    print(f"detectors: {detectors}; {args.seeds} seed(s) per split; capped streams at {args.max_events:,} "
          f"events; data {base.name}", flush=True)
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        for split, first_seed in splits.items():
            split_runs = []
            for seed in range(first_seed, first_seed + args.seeds):
                with tempfile.TemporaryDirectory(prefix="generalisation-") as workdir:
                    run = run_one(base, name, seed, split, args.max_events, detectors, Path(workdir))
                users = run["report"]["users"]
                print(f"{name:12s} {split:6s} seed {seed}: {run['events']:,} events, user precision "
                      f"{users['precision']:.3f} recall {users['recall']:.3f}, "
                      f"{run['events_per_second']:,.0f} events/s  [{run['command']}]", flush=True)
                split_runs.append(run)
            runs += split_runs
            results[f"{name}:{split}"] = pool(split_runs)
    print_tables(results)
    print(f"\n{len(runs)} streams in {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_bytes(orjson.dumps({"detectors": detectors, "seeds_per_split": args.seeds,
                                            "max_events": args.max_events, "results": results, "runs": runs},
                                           option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
