"""Quality and speed on MovieLens-100K: shillguard's BPR-MF and SASRec beside RecBole 1.2.1's, one split.

Leave-one-out by time (each user's newest rating is the test item, the one before it validation), full
ranking over all items, HR@10 and NDCG@10. Epochs are chosen by early stopping on validation NDCG@10 (never
on test); the test figures are those of the best-validation weights. RecBole runs in its own interpreter
(`--recbole-python`) on atomic files written from the same split.

    python benchmarks/train_quality.py --recbole-python /work/recbole-venv/bin/python --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.incremental import Trainer, TrainConfig  # noqa: E402
from trainer.log import InteractionLog  # noqa: E402
from trainer.metrics import evaluate  # noqa: E402
from trainer.split import leave_one_out  # noqa: E402


def movielens_dir() -> Path:
    try:
        from simulator.movielens import default_movielens_dir
    except ImportError:  # the simulator is optional for the trainer
        import os
        return Path(os.environ.get("SHILLGUARD_MOVIELENS", ROOT.parent / "shared/data/movielens-100k"))
    return default_movielens_dir()


def load_events(directory: Path) -> list[dict]:
    rows = np.loadtxt(directory / "u.data", dtype=np.int64)
    return [{"type": "rating", "event_id": f"ml{i}", "ts": float(ts), "user_id": str(u), "item_id": str(it),
             "rating": float(r)} for i, (u, it, r, ts) in enumerate(rows)]


def write_atomic(log: InteractionLog, directory: Path, name: str) -> None:
    """RecBole atomic file of the active rows; timestamps are ranks so that ties split as ours do."""
    rows = np.flatnonzero(log.active)
    order = rows[np.lexsort((rows, log.ts[rows]))]
    (directory / name).mkdir(parents=True, exist_ok=True)
    with open(directory / name / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for rank, row in enumerate(order):
            f.write(f"{log.users.id_of(int(log.user[row]))}\t{log.items.id_of(int(log.item[row]))}\t{rank}\n")


def run_ours(kind: str, events: list[dict], args) -> list[dict]:
    overrides = {k: v for k, v in {"lr": getattr(args, f"{kind}_lr"), "dropout": args.dropout,
                                   "reg": args.bpr_reg}.items()
                 if v is not None and (k != "dropout" or kind == "sasrec") and (k != "reg" or kind == "bpr")}
    trainer = Trainer(TrainConfig(model=kind, holdout_pct=0, seed=args.seed, device=args.device, **overrides))
    trainer.ingest(events)
    log = trainer.log
    train, valid, test = leave_one_out(log)
    history_train = trainer.history(train)
    train_valid = train.copy()
    train_valid[valid] = True
    history_tv = trainer.history(train_valid)
    best = {"ndcg": -1.0, "epoch": 0, "state": None}
    epochs = getattr(args, f"{kind}_epochs")

    def on_epoch(epoch: int, stats: dict) -> bool:
        if (epoch + 1) % args.eval_every:
            return False
        v = evaluate(trainer.model, log.user[valid], log.item[valid], history_train, trainer.n_items,
                     trainer.device)
        if v["ndcg"] > best["ndcg"]:
            best.update(ndcg=v["ndcg"], hr=v["hr"], epoch=epoch + 1,
                        state=copy.deepcopy(trainer.model.state_dict()))
        if args.verbose:
            print(f"  {kind} epoch {epoch + 1}: valid HR@10 {v['hr']:.4f} NDCG@10 {v['ndcg']:.4f} "
                  f"({stats['seconds']:.2f}s)", file=sys.stderr, flush=True)
        return epoch + 1 - best["epoch"] >= args.patience * args.eval_every

    stats = trainer.fit(epochs, mask=train, on_epoch=on_epoch)
    trainer.model.load_state_dict(best["state"])
    name = {"bpr": "shillguard BPR-MF", "sasrec": "shillguard SASRec"}[kind]
    results = []
    for label, mask in ((name, True),) + (((name + " (unmasked)", False),) if kind == "sasrec" else ()):
        # SASRec's test context includes the validation item (as RecBole's does); BPR's user row cannot.
        t = evaluate(trainer.model, log.user[test], log.item[test], history_tv, trainer.n_items,
                     trainer.device, mask_history=mask)
        results.append({"model": label, "hr": t["hr"], "ndcg": t["ndcg"], "valid_ndcg": best["ndcg"],
                        "best_epoch": best["epoch"], "epochs": stats["epochs"],
                        "seconds_per_epoch": stats["seconds_per_epoch"],
                        "samples_per_second": stats["samples_per_second"],
                        "cpu_seconds_per_epoch": stats["cpu_seconds_per_epoch"],
                        "samples_per_cpu_second": stats["samples_per_cpu_second"]})
    return results


def run_recbole(python: str, model: str, data_dir: Path, args) -> dict:
    cmd = [python, str(ROOT / "benchmarks" / "recbole_run.py"), "--data-dir", str(data_dir), "--dataset",
           "ml100k-loo", "--model", model, "--threads", str(args.threads),
           "--epochs", str(args.recbole_epochs), "--stopping-step", str(args.patience)]
    if args.recbole_max_seconds:
        cmd += ["--max-seconds", str(args.recbole_max_seconds)]
    # RecBole writes log/ and log_tensorboard/ into its working directory: keep them out of the repository.
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=data_dir)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        return {"model": f"RecBole {model}", "error": done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict], threads: int, seconds: float | None = None) -> None:
    device = Trainer(TrainConfig()).device
    took = f", {seconds:.0f}s in all" if seconds is not None else ""
    print(f"MovieLens-100K, leave-one-out by time, full ranking; device {device}, {threads} thread(s){took}")
    print("s/epoch and samples/s are wall clock; cpu s/epoch is this process's CPU time (the machine is shared)")
    print(f"{'model':34} {'HR@10':>7} {'NDCG@10':>8} {'s/epoch':>8} {'cpu s/ep':>8} {'epochs':>7} "
          f"{'samples/s':>11} {'samples/cpu-s':>13}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:34} failed (exit {r['error']})")
            continue
        capped = " (time budget hit)" if r.get("stopped_by_time_budget") else ""
        print(f"{r['model']:34} {r['hr']:7.4f} {r['ndcg']:8.4f} {r['seconds_per_epoch']:8.2f} "
              f"{r.get('cpu_seconds_per_epoch', float('nan')):8.2f} {r['epochs']:7d} "
              f"{r['samples_per_second']:11,.0f} {r.get('samples_per_cpu_second', float('nan')):13,.0f}{capped}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="bpr,sasrec")
    parser.add_argument("--recbole-python", default=None, help="Interpreter with recbole==1.2.1.")
    parser.add_argument("--recbole-models", default="BPR,SASRec")
    parser.add_argument("--recbole-epochs", type=int, default=300)
    parser.add_argument("--recbole-max-seconds", type=float, default=None,
                        help="Training-time budget per RecBole model (its SASRec is slow on a small CPU).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, for ours and RecBole alike.")
    parser.add_argument("--bpr-epochs", type=int, default=300)
    parser.add_argument("--sasrec-epochs", type=int, default=200)
    parser.add_argument("--bpr-lr", type=float, default=None)
    parser.add_argument("--sasrec-lr", type=float, default=None)
    parser.add_argument("--bpr-reg", type=float, default=None)
    parser.add_argument("--dropout", type=float, default=None)
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--patience", type=int, default=10, help="Evaluations without improvement.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None, help="Also write the rows here.")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--from-json", nargs="+", default=None,
                        help="Print the table from rows saved by --json (or recbole_run.py lines); no training.")
    args = parser.parse_args()
    if args.from_json:
        rows = []
        for path in args.from_json:
            text = Path(path).read_text().strip()
            rows += json.loads(text) if text.startswith("[") else [json.loads(text.splitlines()[-1])]
        print_table([r for r in rows if "error" not in r], args.threads)
        return
    torch.set_num_threads(args.threads)
    directory = movielens_dir()
    if not (directory / "u.data").is_file():
        sys.exit(f"MovieLens-100K not found in {directory}; set SHILLGUARD_MOVIELENS")
    events = load_events(directory)
    rows = []
    started = time.time()
    for kind in args.models.split(","):
        rows += run_ours(kind, events, args)
    if args.recbole_python:
        log = InteractionLog()
        log.add(events)
        with tempfile.TemporaryDirectory() as tmp:
            write_atomic(log, Path(tmp), "ml100k-loo")
            for model in args.recbole_models.split(","):
                rows.append(run_recbole(args.recbole_python, model, Path(tmp), args))
    print_table(rows, args.threads, time.time() - started)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
