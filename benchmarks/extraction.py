"""The extraction red team on MovieLens-100K: SASRec without a defence and with GRO, several seeds.

One command per defence (run the two side by side, one core each):

    python benchmarks/extraction.py --defence none --seeds 3 --json none.json
    python benchmarks/extraction.py --defence gro --seeds 3 --json gro.json
    python benchmarks/extraction.py --merge none.json gro.json      # the table, and the must-show verdict

Each seed trains the target (every user's newest rating held back: the attacker never sees those users'
answers for their full histories, and they are the users the surrogate is compared on), writes it to a model
directory, and runs `shillguard attack extract` on it (the same code, `trainer.redteam.extract`). Figures:
mean ± standard deviation over seeds. Wall and CPU seconds are printed: the development machine is shared.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from train_quality import load_events, movielens_dir  # noqa: E402
from trainer.checkpoint import CheckpointStore  # noqa: E402
from trainer.incremental import Trainer, TrainConfig  # noqa: E402
from trainer.redteam import AttackConfig, extract  # noqa: E402

FIELDS = ("target_hr_at_10", "agreement_at_10", "surrogate_hr_at_10")


def guard_only(args) -> None:
    """Only the guard's side, at a larger budget: does the extraction detector flag the red team's client at
    all, and after how many queries (no surrogate is trained)."""
    from trainer.redteam import guard_stream, run_guard, synthesize
    from trainer.serving import Recommender

    trainer = Trainer(TrainConfig(model="sasrec", epochs=args.epochs, dim=args.dim, max_len=args.max_len,
                                  batch_size=args.batch_size, seed=args.seed, holdout_pct=100.0))
    trainer.ingest(load_events(movielens_dir()))
    trainer.fit()
    trainer.model.eval()
    ids = ["<pad>"] + [trainer.log.items.id_of(r) for r in range(1, trainer.n_items)]
    start = float(trainer.log.ts[trainer.log.active].max()) + 86_400
    for budget in (int(x) for x in args.guard_only.split(",")):
        transcript = synthesize(Recommender(trainer.model, ids), AttackConfig(queries=budget, seed=args.seed), start)
        result = run_guard(guard_stream(trainer, transcript, args.seed))
        print(json.dumps({"queries": budget, "attack_hours": round(budget / AttackConfig.qps / 3600, 1),
                          **result}), flush=True)


def validation_events(events: list[dict]) -> list[dict]:
    """The events less each user's newest one (ties by arrival, as the trainer's split breaks them): the
    trainer then holds back the second newest, so settings are chosen on users' validation items and the
    test items (the newest, what the report scores) are never seen while choosing."""
    newest: dict[str, int] = {}
    for n, event in enumerate(events):
        best = newest.get(event["user_id"])
        if best is None or event["ts"] >= events[best]["ts"]:
            newest[event["user_id"]] = n
    drop = set(newest.values())
    return [event for n, event in enumerate(events) if n not in drop]


def run(args) -> list[dict]:
    events = load_events(movielens_dir())
    if args.split == "valid":
        events = validation_events(events)
    out = []
    for seed in range(args.seed, args.seed + args.seeds):
        wall, cpu = time.perf_counter(), time.process_time()
        trainer = Trainer(TrainConfig(model="sasrec", epochs=args.epochs, dim=args.dim, max_len=args.max_len,
                                      batch_size=args.batch_size, seed=seed, holdout_pct=100.0,
                                      defence=None if args.defence == "none" else args.defence,
                                      gro_lambda=args.gro_lambda, gro_swaps=args.gro_swaps,
                                      gro_candidates=args.gro_candidates, gro_warmup=args.gro_warmup,
                                      gro_ramp=args.gro_ramp, gro_synthetic=args.gro_synthetic,
                                      gro_student_lr=args.gro_student_lr))
        trainer.ingest(events)
        stats = trainer.fit()
        train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
        with tempfile.TemporaryDirectory() as model_dir:
            store = CheckpointStore(model_dir)
            store.promote(store.save(trainer, {"train": stats}))
            target, meta = store.load("promoted")
            config = AttackConfig(queries=args.queries, epochs=args.attack_epochs, seed=seed,
                                  curve=tuple(float(x) for x in args.curve.split(",")))
            report = extract(target, meta["version"], config, guard=not args.no_guard,
                             perturb_scale=args.perturb, echo=lambda m: print(f"  [{seed}] {m}", flush=True))
        report.update(seed=seed, split=args.split, train_seconds=round(train_wall, 1), train_cpu_seconds=round(train_cpu, 1),
                      total_seconds=round(time.perf_counter() - wall, 1),
                      total_cpu_seconds=round(time.process_time() - cpu, 1), target_config=trainer.config.to_dict())
        print(json.dumps({k: report[k] for k in ("seed", "defence", *FIELDS, "train_seconds", "total_seconds")}),
              flush=True)
        out.append(report)
        if args.json:  # after every seed: a run stopped early keeps the seeds it finished
            Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return out


def table(reports: list[dict]) -> str:
    by = {}
    for r in reports:
        by.setdefault(_label(r), []).append(r)
    lines = [f"{'defence':38} {'seeds':>5} {'target HR@10':>16} {'agreement@10':>16} {'surrogate HR@10':>16} "
             f"{'flagged':>8} {'train s':>8} {'total s':>8}"]
    means = {}
    for name, rs in by.items():
        cells = []
        for f in FIELDS:
            v = np.array([r[f] for r in rs])
            means[(name, f)] = v.mean()
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f}")
        guarded = [r for r in rs if r.get("guard")]
        flagged = f"{sum(1 for r in guarded if r['guard']['flagged'])}/{len(guarded)}" if guarded else "-"
        lines.append(f"{name:38} {len(rs):>5} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} "
                     f"{flagged:>8} {np.mean([r['train_seconds'] for r in rs]):>8.0f} "
                     f"{np.mean([r['total_seconds'] for r in rs]):>8.0f}")
    for name in [n for n in by if not n.startswith("none")]:
        base = _label({**by[name][0], "defence": None})  # compared within its own split and schedule
        if (base, FIELDS[0]) not in means:
            continue
        drop = {f: 1 - means[(name, f)] / max(means[(base, f)], 1e-9) for f in FIELDS[1:]}
        keep = means[(name, FIELDS[0])] / max(means[(base, FIELDS[0])], 1e-9)
        ok = all(d >= 0.20 for d in drop.values()) and keep >= 0.90
        lines.append(f"{name} vs {base}: agreement@10 -{drop['agreement_at_10']:.1%}, surrogate HR@10 "
                     f"-{drop['surrogate_hr_at_10']:.1%} (need >= 20% each); target HR@10 at {keep:.1%} "
                     f"(need >= 90%): {'PASS' if ok else 'FAIL'}")
    for r in reports:
        g = r.get("guard") or {}
        curve = ", ".join(f"{p['queries']}: {p['agreement_at_10']:.3f}" for p in r["curve"])
        lines.append(f"  {_label(r)} seed {r['seed']}: curve (queries: agreement) {curve}; guard "
                     + (f"flagged at {g['flag_at_queries']} queries (agreement {_agreement(g, 'flag')}, "
                        f"{g['flag_share_of_final_agreement']:.0%} of final; the detector signalled at "
                        f"{g['detector_signal_at_queries']}: {_agreement(g, 'detector_signal')}, "
                        f"{g['detector_signal_share_of_final_agreement']:.0%}; honest clients flagged: "
                        f"{len(g.get('benign_clients_flagged', []))})" if g.get("flagged") else
                        "did not flag" if g else "not run")
                     + (f"; perturbed agreement {r['perturbed']['agreement_at_10']:.3f}, surrogate HR "
                        f"{r['perturbed']['surrogate_hr_at_10']:.3f}, noised served HR "
                        f"{r['perturbed']['served_hr_at_10_with_noise']:.3f}" if r.get("perturbed") else ""))
    return "\n".join(lines)


def _agreement(guard: dict, key: str) -> str:
    point = guard.get(f"{key}_fidelity") or {}
    return f"{point['agreement_at_10']:.3f}" if point else "-"


def _label(report: dict) -> str:
    """The defence, its parameters and the target's epochs, so that runs of different settings or schedules
    are never pooled (and each defended row is compared with the undefended one of its own schedule)."""
    c = report["target_config"]
    tail = f" ep={c['epochs']}" + (" [valid]" if report.get("split") == "valid" else "")
    if not report["defence"]:
        return "none" + tail
    return (f"gro l={c['gro_lambda']} c={c['gro_candidates']}" + (f" syn={c.get('gro_synthetic', 0)}"
            if c.get("gro_synthetic") else "") + (f" warm={c['gro_warmup']}" if c.get("gro_warmup") else "")
            + (f" ramp={c['gro_ramp']}" if c.get("gro_ramp") else "")
            + (f" slr={c['gro_student_lr']}" if c.get("gro_student_lr") else "") + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defence", default="none", choices=["none", "gro"])
    parser.add_argument("--gro-lambda", type=float, default=0.08)
    parser.add_argument("--gro-swaps", type=int, default=3)
    parser.add_argument("--gro-candidates", type=int, default=50)
    parser.add_argument("--gro-warmup", type=int, default=0)
    parser.add_argument("--gro-ramp", type=int, default=0)
    parser.add_argument("--gro-synthetic", type=float, default=0.5)
    parser.add_argument("--gro-student-lr", type=float, default=None)
    parser.add_argument("--split", default="test", choices=["test", "valid"],
                        help="valid: drop every user's newest event and score the second newest (choose here)")
    parser.add_argument("--curve", default="0.125,0.25,0.5,1", help="budget fractions of the fidelity curve")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--attack-epochs", type=int, default=30)
    parser.add_argument("--perturb", type=float, default=None)
    parser.add_argument("--no-guard", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--merge", nargs="*", default=None)
    parser.add_argument("--guard-only", default=None, metavar="BUDGETS",
                        help="comma-separated query budgets: only run the attacker's queries through the guard")
    args = parser.parse_args()
    if args.guard_only:
        torch.set_num_threads(args.threads)
        guard_only(args)
        return
    if args.merge:
        reports = [r for path in args.merge for r in json.loads(Path(path).read_text())]
        print(table(reports))
        return
    torch.set_num_threads(args.threads)
    print(table(run(args)))


if __name__ == "__main__":
    main()
