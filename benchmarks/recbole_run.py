"""Run RecBole 1.2.1's BPR or SASRec on atomic files written by `train_quality.py`; print one JSON line.

Run with RecBole's own interpreter (its pins clash with ours), e.g.
    /work/recbole-venv/bin/python benchmarks/recbole_run.py --data-dir /tmp/x --dataset ml100k-loo --model BPR
The split is RecBole's leave-one-out by time (`LS: valid_and_test`, `order: TO`) with full-sort evaluation;
the timestamps in the atomic file are ranks, so ties fall exactly as in shillguard's split.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", choices=["BPR", "SASRec"], required=True)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--stopping-step", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--evaluate-only", default=None, metavar="CHECKPOINT",
                        help="Only test a checkpoint saved by an earlier (stopped) run.")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="Training-time budget: no new epoch starts after it (the best so far is tested).")
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()

    # RecBole 1.2.1 reloads its own best checkpoint with torch.load, whose default became weights_only in
    # torch 2.6; the file is the one it just wrote, so the old behaviour is safe here.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    torch.set_num_threads(args.threads)
    params = {
        "data_path": args.data_dir, "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp", "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full",
                      "group_by": "user"},
        "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10",
        "epochs": args.epochs, "stopping_step": args.stopping_step, "seed": args.seed,
        "reproducibility": True, "use_gpu": False, "device": "cpu", "show_progress": False,
        "checkpoint_dir": f"{args.data_dir}/saved", "log_wandb": False, "state": "WARNING",
    }
    if args.model == "SASRec":
        params.update({"loss_type": "CE", "train_neg_sample_args": None, "MAX_ITEM_LIST_LENGTH": 50})
    config = Config(model=args.model, dataset=args.dataset, config_dict=params)
    init_seed(config["seed"], config["reproducibility"])
    logging.getLogger().setLevel(logging.WARNING)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    if args.evaluate_only:
        # Test a checkpoint a stopped run saved (its best on validation so far).
        test = trainer.evaluate(test_data, load_best_model=True, model_file=args.evaluate_only,
                                show_progress=False)
        print(json.dumps({"model": f"RecBole {args.model}", "hr": float(test["hit@10"]),
                          "ndcg": float(test["ndcg@10"]), "checkpoint": args.evaluate_only}))
        return

    epoch_seconds: list[float] = []
    epoch_cpu: list[float] = []
    train_epoch = trainer._train_epoch

    class _Budget(Exception):
        pass

    def timed(*a, **kw):
        # Checked before an epoch, so the previous epoch's validation and best-model save are complete.
        if args.max_seconds and sum(epoch_seconds) >= args.max_seconds:
            raise _Budget
        start, cpu_start = time.perf_counter(), time.process_time()
        out = train_epoch(*a, **kw)
        epoch_seconds.append(time.perf_counter() - start)
        epoch_cpu.append(time.process_time() - cpu_start)
        return out

    valid_epoch = trainer._valid_epoch

    def logged(*a, **kw):
        score, result = valid_epoch(*a, **kw)
        print(f"  RecBole {args.model} epoch {len(epoch_seconds)}: valid {dict(result)} "
              f"({epoch_seconds[-1]:.1f}s)", file=sys.stderr, flush=True)
        return score, result

    trainer._train_epoch = timed
    trainer._valid_epoch = logged
    capped = False
    try:
        best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    except _Budget:
        capped, best_valid = True, trainer.best_valid_score
    test = trainer.evaluate(test_data, load_best_model=True, model_file=trainer.saved_model_file,
                            show_progress=False)
    samples = len(train_data._dataset)
    per_epoch = sum(epoch_seconds) / max(len(epoch_seconds), 1)
    cpu_per_epoch = sum(epoch_cpu) / max(len(epoch_cpu), 1)
    print(json.dumps({
        "model": f"RecBole {args.model}", "hr": float(test["hit@10"]), "ndcg": float(test["ndcg@10"]),
        "valid_ndcg": float(best_valid), "epochs": len(epoch_seconds), "seconds_per_epoch": per_epoch,
        "samples_per_second": samples / per_epoch if per_epoch else 0.0, "train_samples": samples,
        "cpu_seconds_per_epoch": cpu_per_epoch,
        "samples_per_cpu_second": samples / cpu_per_epoch if cpu_per_epoch else 0.0,
        "n_users": int(dataset.user_num) - 1, "n_items": int(dataset.item_num) - 1,
        "stopped_by_time_budget": capped}))


if __name__ == "__main__":
    main()
