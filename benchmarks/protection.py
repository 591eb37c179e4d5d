"""Protection: how much of a push attack's exposure gain survives when the trainer is fed shillguard's clean
stream instead of the raw one, and what that costs in accuracy.

Three models are trained on the same benign hold-out split: on the benign events only (truth labels), on the
raw attacked stream, and on the clean stream from `shillguard replay` (less its retractions). For each:
the exposure of the push targets in benign users' top-10 and top-100 lists (mean over targets of the share
of lists holding the target) and HR@10/NDCG@10 on each benign user's newest benign event (held out of all
three). Pass: the clean-fed model removes >= 90% of the raw model's exposure gain over the benign-only
model among the top 10 and among the top 100 (an implicit-feedback push such as a co-visitation one may
buy places 11 to 100 first), and keeps HR@10 >= 97% of the benign-only model's. Exit code 0 on a pass, 1 on
a failure, 2 (NO GAIN) where the raw model ranks the targets no higher than the benign-only one: a push that
bought nothing leaves nothing to remove, and the stream says nothing about protection.

Every figure is a mean over `--seeds` training seeds, with its standard error: exposure and HR over the
seeds; the HR@10 ratio from the per-user hits (averaged over the seeds) of the same users under both models,
a paired estimate (delta method over users). A criterion counts as decided when the estimate is more than
two standard errors from its threshold.

Before training it prints, per planted attack, how many of its learnable events reach the clean stream
(the detectors' leak), which is what explains exposure left in the clean-fed model.

    python benchmarks/protection.py RUN/events.jsonl RUN/truth.json REPLAY/clean.jsonl \
        [--retractions REPLAY/retractions.jsonl] [--models bpr,sasrec] [--seeds 5] [--json OUT.json]
    python benchmarks/protection.py --merge A.json B.json ...   # pool seeds run by separate commands
    python benchmarks/protection.py --demo /tmp/protection-demo   # builds a small attacked stream first
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.incremental import Trainer, TrainConfig  # noqa: E402
from trainer.metrics import evaluate, exposure_shares  # noqa: E402
from trainer.sources import parse_retraction  # noqa: E402

LEARNABLE = {"rating", "click"}
STREAMS = {"benign": "benign only", "raw": "raw", "clean": "clean (shillguard)",
           "unlearned": "released, unlearned"}
JUDGED = ("clean", "unlearned")  # the streams held to the criteria against benign-only
NEED_REMOVED, NEED_HR = 0.90, 0.97


def read_events(path: Path) -> list[dict]:
    out = []
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                event = orjson.loads(line)
                if event.get("type") in LEARNABLE:
                    out.append(event)
    return out


def push_targets(truth: dict) -> list[str]:
    return sorted({t for a in truth["attacks"] if a.get("intent") == "push" for t in a.get("target_items", [])})


def target_families(truth: dict) -> dict[str, str]:
    return {t: a["family"] for a in truth["attacks"] if a.get("intent") == "push" for t in a.get("target_items", [])}


def malicious_ids(truth: dict) -> set[str]:
    return {e for a in truth["attacks"] for e in a.get("event_ids", [])}


def holdout(benign: list[dict]) -> dict[str, dict]:
    """Each benign user's newest benign event (users with at least 3), held out of every training stream."""
    by_user: dict[str, list[dict]] = {}
    for i, e in enumerate(benign):
        by_user.setdefault(str(e["user_id"]), []).append((float(e["ts"]), i, e))
    return {u: max(rows)[2] for u, rows in by_user.items() if len(rows) >= 3}


def leaks(truth: dict, raw: list[dict], clean: list[dict]) -> list[dict]:
    """Per planted attack: its learnable events, and how many of them reach the clean stream."""
    by_id = {e["event_id"]: e for e in raw}
    clean_ids = {e["event_id"] for e in clean}
    out = []
    for attack in truth["attacks"]:
        ids = [e for e in attack.get("event_ids", []) if e in by_id]
        leaked = [by_id[e] for e in ids if e in clean_ids]
        targets = set(attack.get("target_items", []))
        accounts = {str(by_id[e].get("user_id")) for e in ids}
        out.append({"attack": attack.get("id"), "family": attack["family"], "intent": attack.get("intent"),
                    "targets": sorted(targets), "events": len(ids), "leaked": len(leaked),
                    "leaked_on_targets": sum(1 for e in leaked if e.get("item_id") in targets),
                    "accounts": len(accounts), "accounts_leaked": len({str(e.get("user_id")) for e in leaked})})
    return out


def train_and_measure(name: str, events: list[dict], held: dict[str, dict], targets: list[str],
                      config: dict, retract: list[str] | None = None) -> dict:
    """Train on `events`; with `retract`, then unlearn those events (as the streaming trainer must when a
    late flag retracts events it already learned), and measure."""
    trainer = Trainer(TrainConfig(holdout_pct=0, **config))
    trainer.ingest(events)
    start, cpu = time.perf_counter(), time.process_time()
    stats = trainer.fit()
    unlearning = trainer.retract(retract, measure=False) if retract else None
    log = trainer.log
    users = np.array([log.users.get(u) for u in held], dtype=np.int64)
    items = np.array([log.items.get(str(e["item_id"])) for e in held.values()], dtype=np.int64)
    keep = (users >= 0) & (items >= 0)  # a target never seen in training cannot be hit
    history = trainer.history(log.active)
    utility = evaluate(trainer.model, users[keep], items[keep], history, trainer.n_items, trainer.device,
                       per_user=True)
    hits, ndcgs = np.zeros(len(held)), np.zeros(len(held))  # unseen users or test items count as misses
    hits[keep], ndcgs[keep] = utility["hits"], utility["ndcgs"]
    lists = trainer.recommend(users[users >= 0], 100)  # best first: the top 10 are its first columns
    target_rows = [log.items.get(t) for t in targets]
    exposure = {}
    for k, key in ((10, "exposure"), (100, "exposure_100")):
        shares = exposure_shares(lists[:, :k], trainer.n_items)
        exposure[key] = [float(shares[r]) if r >= 0 else 0.0 for r in target_rows]
    return {"stream": name, "seed": config["seed"], "events": log.n_active, "hr": float(hits.mean()),
            "ndcg": float(ndcgs.mean()), "hits": hits.tolist(),
            **{key: float(np.mean(values)) if values else 0.0 for key, values in exposure.items()},
            "per_target": dict(zip(targets, exposure["exposure"])),
            "per_target_100": dict(zip(targets, exposure["exposure_100"])),
            "train_seconds": time.perf_counter() - start, "train_cpu_seconds": time.process_time() - cpu,
            "epochs": stats["epochs"], "unlearning": unlearning}


def _mean_se(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def gain_removed(benign: list[float], raw: list[float], clean: list[float]) -> tuple[float, float, float]:
    """(attack gain, share of it removed, standard error of that share) from per-seed target exposures.

    removed = 1 - (clean - benign) / (raw - benign) on the seed means; its error by the delta method, the
    three streams' seeds being independent.
    >>> g, r, se = gain_removed([0.0, 0.0], [0.10, 0.12], [0.01, 0.01])
    >>> round(g, 3), round(r, 3), se > 0
    (0.11, 0.909, True)
    """
    (b, vb), (r, vr), (c, vc) = (_mean_se(x) for x in (benign, raw, clean))
    gain, left = r - b, c - b
    if not gain > 0:
        return gain, float("nan"), float("nan")
    var = (vc ** 2) / gain ** 2 + (left ** 2) * (vr ** 2) / gain ** 4 + ((gain - left) ** 2) * (vb ** 2) / gain ** 4
    return gain, 1 - left / gain, math.sqrt(var) if math.isfinite(var) else float("nan")


def paired_ratio(clean_hits: np.ndarray, benign_hits: np.ndarray) -> tuple[float, float]:
    """mean(clean) / mean(benign) over the same users, and its standard error (delta method over users).

    >>> r, se = paired_ratio(np.array([1, 0, 1, 1.0]), np.array([1, 0, 1, 1.0]))
    >>> r, se
    (1.0, 0.0)
    """
    n = len(benign_hits)
    base = float(np.mean(benign_hits))
    if n < 2 or base == 0:
        return float("nan"), float("nan")
    ratio = float(np.mean(clean_hits)) / base
    residual = np.asarray(clean_hits, float) - ratio * np.asarray(benign_hits, float)
    return ratio, float(residual.std(ddof=1) / math.sqrt(n) / base)


def decided(value: float, se: float, threshold: float) -> str:
    if not (math.isfinite(value) and math.isfinite(se)):
        return "undecided"
    return "decided" if abs(value - threshold) > 2 * se else "undecided"


def summarize(runs: list[dict], targets: list[str]) -> list[dict]:
    """Rows per (model, stream) with means and standard errors over seeds, and one summary row per model."""
    rows = []
    for kind in dict.fromkeys(r["model"] for r in runs):
        results = {}
        for name in STREAMS.values():
            mine = [r for r in runs if r["model"] == kind and r["stream"] == name]
            if not mine:
                continue
            row = {"model": kind, "stream": name, "seeds": len(mine), "events": mine[0]["events"],
                   "epochs": mine[0]["epochs"]}
            for key in ("exposure", "exposure_100", "hr", "ndcg", "train_seconds", "train_cpu_seconds"):
                row[key], row[key + "_se"] = _mean_se([r.get(key, float("nan")) for r in mine])
            row["per_target"] = {t: float(np.mean([r["per_target"][t] for r in mine])) for t in targets}
            row["hits"] = np.mean([r["hits"] for r in mine], axis=0)
            results[name] = (row, mine)
            rows.append(row)
        if STREAMS["benign"] not in results or STREAMS["raw"] not in results:
            continue
        (base, b_runs), (_, r_runs) = results[STREAMS["benign"]], results[STREAMS["raw"]]
        for key in JUDGED:
            if STREAMS[key] not in results:
                continue
            judged, j_runs = results[STREAMS[key]]
            gain, removed, removed_se = gain_removed(*[[r["exposure"] for r in x] for x in (b_runs, r_runs, j_runs)])
            gain_100, removed_100, removed_100_se = gain_removed(
                *[[r.get("exposure_100", float("nan")) for r in x] for x in (b_runs, r_runs, j_runs)])
            hr_ratio, se_users = paired_ratio(judged["hits"], base["hits"])
            # The same ratio's error from the seed-to-seed spread of each model's HR@10 (whole-model
            # fluctuations the per-user residuals may understate); the larger of the two decides.
            se_seeds = hr_ratio * math.hypot(base["hr_se"] / base["hr"], judged["hr_se"] / judged["hr"]) \
                if base["hr"] and judged["hr"] else float("nan")
            hr_ratio_se = max(se_users, se_seeds) if math.isfinite(se_seeds) else se_users
            by_seed = {r["seed"]: r["hr"] for r in b_runs}
            per_seed = [r["hr"] / by_seed[r["seed"]] for r in sorted(j_runs, key=lambda r: r["seed"])
                        if by_seed.get(r["seed"])]
            rows.append({"model": kind, "stream": "summary", "judged": STREAMS[key], "attack_gain": gain,
                         "gain_removed": removed, "gain_removed_se": removed_se,
                         "attack_gain_100": gain_100, "gain_removed_100": removed_100,
                         "gain_removed_100_se": removed_100_se, "hr_ratio": hr_ratio,
                         "hr_ratio_se": hr_ratio_se, "hr_ratio_se_users": se_users, "hr_ratio_se_seeds": se_seeds,
                         "hr_ratio_per_seed": per_seed,
                         "seeds": min(len(b_runs), len(r_runs), len(j_runs)),
                         "removed_decided": decided(removed, removed_se, NEED_REMOVED),
                         "removed_100_decided": decided(removed_100, removed_100_se, NEED_REMOVED),
                         "hr_decided": decided(hr_ratio, hr_ratio_se, NEED_HR),
                         # a model with no gain at 100 to remove (nan) passes that criterion vacuously
                         "pass": bool(removed >= NEED_REMOVED and not removed_100 < NEED_REMOVED
                                      and hr_ratio >= NEED_HR),
                         # the push bought the raw model nothing, at 10 or at 100: nothing to remove
                         "no_gain": not gain > 0 and not gain_100 > 0})
    for row in rows:
        row.pop("hits", None)
    return rows


def prepare(events_path: Path, truth_path: Path, clean_path: Path, retractions: Path | None) -> dict:
    truth = orjson.loads(truth_path.read_bytes())
    raw = read_events(events_path)
    bad = malicious_ids(truth)
    benign = [e for e in raw if e["event_id"] not in bad]
    held = holdout(benign)
    clean = read_events(clean_path)
    n_retracted, retracted_events = 0, []
    if retractions is not None and retractions.exists():
        records = [r for r in map(parse_retraction, retractions.read_bytes().splitlines()) if r is not None]
        retracted = {r["event_id"] for r in records}
        before = len(clean)
        clean = [e for e in clean if e["event_id"] not in retracted]  # replay's clean.jsonl already lacks them
        n_retracted = before - len(clean)
        retracted_events = [r["event"] for r in records if r["event"].get("type") in LEARNABLE]
    # What a streaming trainer was fed: every released event, the ones a late flag retracted included.
    released = sorted(clean + retracted_events, key=lambda e: float(e["ts"]))
    return {"truth": truth, "raw": raw, "bad": bad, "benign": benign, "held": held, "clean": clean,
            "released": released, "retracted_ids": [e["event_id"] for e in retracted_events],
            "n_retracted": n_retracted, "targets": push_targets(truth), "families": target_families(truth)}


def measure(data: dict, models: list[str], epochs: dict[str, int | None], seeds: list[int],
            streams: list[str] = list(STREAMS), echo=print, config: dict | None = None) -> list[dict]:
    """One run per (model, stream, seed); each with its per-user hits over the held-out users.
    `config`: extra TrainConfig fields (tests use tiny models)."""
    held, targets = data["held"], data["targets"]
    held_ids = {e["event_id"] for e in held.values()}
    source = {"benign": data["benign"], "raw": data["raw"], "clean": data["clean"], "unlearned": data["released"]}
    runs = []
    for kind in models:
        for key in streams:
            train = [e for e in source[key] if e["event_id"] not in held_ids]
            for seed in seeds:
                run = train_and_measure(STREAMS[key], train, held, targets, {
                    "model": kind, "seed": seed, **({"epochs": epochs[kind]} if epochs.get(kind) else {}),
                    **(config or {})},
                    retract=data["retracted_ids"] if key == "unlearned" else None)
                run["model"] = kind
                echo(f"  {kind} {STREAMS[key]:20} seed {seed}: target exposure {run['exposure']:.4f}, "
                     f"HR@10 {run['hr']:.4f}, {run['epochs']} epochs in {run['train_seconds']:.0f}s "
                     f"({run['train_cpu_seconds']:.0f} CPU s)")
                runs.append(run)
    return runs


def print_header(data: dict) -> None:
    raw, clean, bad = data["raw"], data["clean"], data["bad"]
    raw_ids = {e["event_id"] for e in raw}
    caught = len((bad & raw_ids) - {e["event_id"] for e in clean})
    print(f"{len(raw)} raw learnable events, {len(bad & raw_ids)} malicious ({caught} kept out of the clean "
          f"stream), {len(data['benign'])} benign, {len(clean)} clean, {len(data['retracted_ids'])} released "
          f"then retracted; {len(data['targets'])} push targets; {len(data['held'])} benign users evaluated")


def print_leaks(table: list[dict]) -> None:
    print(f"{'attack':6} {'family':12} {'intent':6} {'events':>7} {'in clean':>8} {'leaked':>7} "
          f"{'on target':>9} {'accounts leaked':>15}")
    for r in table:
        share = r["leaked"] / r["events"] if r["events"] else 0.0
        print(f"{r['attack']:6} {r['family']:12} {str(r['intent']):6} {r['events']:7d} {r['leaked']:8d} "
              f"{share:7.1%} {r['leaked_on_targets']:9d} {r['accounts_leaked']:>7d} of {r['accounts']:<5d}")


def verdict(row: dict) -> str:
    """PASS/FAIL on the point estimates, and whether the standard errors settle it; NO GAIN where the attack
    bought the raw model no exposure (the stream cannot show protection either way)."""
    if row.get("no_gain"):
        return ("NO GAIN: the raw stream's model ranks the push targets no higher than the benign-only model "
                "(top 10 and top 100): no exposure to remove, so this stream measures no protection")
    removed_ok, hr_ok = row["gain_removed"] >= NEED_REMOVED, row["hr_ratio"] >= NEED_HR
    removed_100_ok = not row.get("gain_removed_100", float("nan")) < NEED_REMOVED  # nan: no gain to remove
    criteria = ((removed_ok, row["removed_decided"]), (removed_100_ok, row.get("removed_100_decided", "decided")),
                (hr_ok, row["hr_decided"]))
    if all(ok for ok, _ in criteria):
        settled = all(d == "decided" for _, d in criteria if _ is not None)
        return "PASS" if settled else "PASS on the point estimates, not decided at 2 SE"
    failing = [(ok, d) for ok, d in criteria if not ok]
    settled = any(d == "decided" for _, d in failing)
    return "FAIL" if settled else "FAIL on the point estimates, not decided at 2 SE"


def print_table(rows: list[dict], families: dict[str, str] | None = None) -> None:
    families = families or {}
    print(f"{'model':7} {'stream':20} {'seeds':>5} {'events':>8} {'target exposure':>17} {'HR@10':>15} "
          f"{'NDCG@10':>15} {'train s':>8}")
    for r in rows:
        if r["stream"] == "summary":
            print(f"{r['model']:7} {r['judged']} vs benign only, {r['seeds']} seeds: attack gain "
                  f"{r['attack_gain']:.4f}, {r['gain_removed']:.1%} ± {r['gain_removed_se']:.1%} of it removed "
                  f"(need >= 90%: {r['removed_decided']} at 2 SE)")
            if "gain_removed_100" in r:
                print(f"{'':7} top 100: attack gain {r['attack_gain_100']:.4f}, {r['gain_removed_100']:.1%} ± "
                      f"{r['gain_removed_100_se']:.1%} of it removed (need >= 90%: {r['removed_100_decided']} "
                      f"at 2 SE)")
            print(f"{'':7} HR@10 at {r['hr_ratio']:.1%} ± {r['hr_ratio_se']:.1%} of benign-only's (SE over users "
                  f"{r['hr_ratio_se_users']:.1%}, over seeds {r['hr_ratio_se_seeds']:.1%}; per seed "
                  f"{', '.join(f'{x:.1%}' for x in r['hr_ratio_per_seed'])}; need >= 97%: {r['hr_decided']} "
                  f"at 2 SE)")
            print(f"{'':7} {verdict(r)}")
        else:
            print(f"{r['model']:7} {r['stream']:20} {r['seeds']:5d} {r['events']:8d} "
                  f"{r['exposure']:8.4f} ± {r['exposure_se']:.4f} {r['hr']:.4f} ± {r['hr_se']:.4f} "
                  f"{r['ndcg']:.4f} ± {r['ndcg_se']:.4f} {r['train_seconds']:8.1f}")
    per_target = [r for r in rows if r["stream"] != "summary"]
    if not per_target:
        return
    print("exposure per push target (mean over seeds):")
    print(f"{'model':7} {'target':16} {'family':12} " + " ".join(f"{r['stream'][:18]:>18}" for r in per_target
                                                                 if r["model"] == per_target[0]["model"]))
    for kind in dict.fromkeys(r["model"] for r in per_target):
        mine = [r for r in per_target if r["model"] == kind]
        for t in mine[0]["per_target"]:
            print(f"{kind:7} {t:16} {families.get(t, '?'):12} " + " ".join(f"{r['per_target'][t]:18.4f}"
                                                                          for r in mine))


def build_demo(out: Path, seed: int = 0, recall: float = 0.95, false_positive: float = 0.01,
               n_fakes: int = 100, filler: int = 15) -> tuple[Path, Path, Path]:
    """A small attacked stream (MovieLens-100K if present, else synthetic) and a stand-in 'clean' stream.

    The stand-in drops `recall` of the malicious events and `false_positive` of the benign ones at random:
    it exercises the measurement, not the detectors (the real figure uses the replay's clean.jsonl).
    """
    from trainer.synthetic import push_attack, synthetic_events

    rng = np.random.default_rng(seed)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_quality import load_events, movielens_dir

    directory = movielens_dir()
    benign = load_events(directory) if (directory / "u.data").is_file() else synthetic_events(
        n_users=600, n_items=400, per_user=40, seed=seed)
    counts: dict[str, int] = {}
    for e in benign:
        counts[e["item_id"]] = counts.get(e["item_id"], 0) + 1
    # Push a few mid-popularity items: on MovieLens-100K BPR-MF hardly lets an obscure one into a top-10.
    tail = sorted(i for i, c in counts.items() if 40 <= c <= 80)
    targets = [str(t) for t in rng.choice(tail, size=3, replace=False)]
    attacked, fake_ids = push_attack(benign, targets=targets, n_fakes=n_fakes, filler=filler, seed=seed,
                                     popular_pool=20)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "events.jsonl").open("wb") as f:
        for e in attacked:
            f.write(orjson.dumps(e) + b"\n")
    truth = {"attacks": [{"id": "a0", "family": "average", "intent": "push", "entity_kind": "user",
                          "target_items": targets, "event_ids": fake_ids}]}
    (out / "truth.json").write_bytes(orjson.dumps(truth))
    fakes = set(fake_ids)
    with (out / "clean.jsonl").open("wb") as f:
        for e in attacked:
            drop = rng.random() < (recall if e["event_id"] in fakes else false_positive)
            if not drop:
                f.write(orjson.dumps(e) + b"\n")
    return out / "events.jsonl", out / "truth.json", out / "clean.jsonl"


def merge(paths: list[str]) -> dict:
    """Pool the runs of several `--json` outputs made on the same files (seeds or streams run apart)."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    # Benign-only and raw runs do not read the replay: they may be pooled with clean runs of any replay
    # of the same stream; clean and unlearned runs must all come from one replay.
    common = ("events", "truth", "held_users", "epochs")
    first = docs[0]
    for doc in docs[1:]:
        if any(doc["inputs"].get(k) != first["inputs"].get(k) for k in common) or doc["targets"] != first["targets"]:
            raise SystemExit(f"cannot merge runs on different inputs: {doc['inputs']} vs {first['inputs']}")
    replay_docs = [d for d in docs if any(r["stream"] in (STREAMS["clean"], STREAMS["unlearned"]) for r in d["runs"])]
    replays = {(d["inputs"]["clean"], d["inputs"]["retractions"]) for d in replay_docs}
    if len(replays) > 1:
        raise SystemExit(f"clean-fed runs from different replays cannot be pooled: {sorted(map(str, replays))}")
    base = replay_docs[0] if replay_docs else first
    runs = {(r["model"], r["stream"], r["seed"]): r for doc in docs for r in doc["runs"]}
    return {**base, "runs": list(runs.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events", nargs="?")
    parser.add_argument("truth", nargs="?")
    parser.add_argument("clean", nargs="?")
    parser.add_argument("--retractions", default=None)
    parser.add_argument("--demo", default=None, help="Build a small attacked stream in this directory first.")
    parser.add_argument("--demo-fakes", type=int, default=100, help="Fake profiles in the demo stream.")
    parser.add_argument("--demo-filler", type=int, default=15, help="Filler items per fake profile.")
    parser.add_argument("--demo-recall", type=float, default=0.95,
                        help="Share of malicious events the demo's stand-in detector keeps out.")
    parser.add_argument("--models", default="bpr")
    parser.add_argument("--streams", default="benign,raw,clean",
                        help="Which of benign,raw,clean,unlearned to train (the rest can come from --merge). "
                             "unlearned: fed every released event, then told the retractions (the streaming "
                             "trainer's case: a late flag retracts events it already learned).")
    parser.add_argument("--bpr-epochs", type=int, default=None)
    parser.add_argument("--sasrec-epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="First training seed.")
    parser.add_argument("--seeds", type=int, default=3, help="Training seeds per stream (seed, seed+1, ...).")
    parser.add_argument("--json", default=None, help="Write the runs (per-user hits included) here.")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="Only pool the runs of earlier --json outputs and print the result.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.merge:
        doc = merge(args.merge)
        print_leaks(doc["leaks"])
        rows = summarize(doc["runs"], doc["targets"])
        print_table(rows, doc["families"])
        if args.json:
            Path(args.json).write_text(json.dumps(doc))
        sys.exit(exit_code([r for r in rows if r["stream"] == "summary"]))
    if args.demo:
        events, truth, clean = build_demo(Path(args.demo), args.seed, recall=args.demo_recall,
                                          n_fakes=args.demo_fakes, filler=args.demo_filler)
    elif args.events and args.truth and args.clean:
        events, truth, clean = Path(args.events), Path(args.truth), Path(args.clean)
    else:
        parser.error("give EVENTS TRUTH CLEAN, or --demo DIR, or --merge JSON...")
    retractions = Path(args.retractions) if args.retractions else None
    data = prepare(events, truth, clean, retractions)
    print_header(data)
    table = leaks(data["truth"], data["raw"], data["clean"])
    print_leaks(table)
    streams = [s.strip() for s in args.streams.split(",") if s.strip()]
    unknown = set(streams) - set(STREAMS)
    if unknown:
        parser.error(f"unknown streams {sorted(unknown)}: {', '.join(STREAMS)}")
    runs = measure(data, args.models.split(","), {"bpr": args.bpr_epochs, "sasrec": args.sasrec_epochs},
                   list(range(args.seed, args.seed + args.seeds)), streams)
    rows = summarize(runs, data["targets"])
    print_table(rows, data["families"])
    if args.json:
        inputs = {"events": str(events.resolve()), "truth": str(truth.resolve()), "clean": str(clean.resolve()),
                  "retractions": str(retractions.resolve()) if retractions else None,
                  "held_users": len(data["held"]),
                  "epochs": {"bpr": args.bpr_epochs, "sasrec": args.sasrec_epochs}}
        Path(args.json).write_text(json.dumps({"inputs": inputs, "targets": data["targets"],
                                               "families": data["families"], "leaks": table, "runs": runs,
                                               "rows": rows}))
    sys.exit(exit_code([r for r in rows if r["stream"] == "summary"]))


def exit_code(summaries: list[dict]) -> int:
    """1 where a judged stream fails, else 2 where the attack bought no exposure to remove, else 0."""
    if any(not r["pass"] and not r.get("no_gain") for r in summaries):
        return 1
    return 2 if any(r.get("no_gain") for r in summaries) else 0


if __name__ == "__main__":
    main()
