"""Training throughput: samples/s of BPR-MF and SASRec on the CPU, and on CUDA (bfloat16 autocast) if present.

Both wall-clock samples/s and samples per CPU-second of this process are printed: on a shared machine the
second is the one that measures the code. BPR is also timed fed by a per-sample `torch.utils.data.DataLoader`, the pattern this trainer avoids: the
gap between the two rows is the cost of building batches in Python, one sample at a time.

    python benchmarks/throughput.py [--threads 1] [--epochs 3] [--defences none,gro] [--devices cpu,cuda]

`--defences none,gro` adds a row per model trained with GRO (trainer/gro.py: a student model and the swap
loss beside the recommendation loss), the cost of the defence.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.incremental import Trainer, TrainConfig  # noqa: E402
from trainer.synthetic import synthetic_events  # noqa: E402


def events() -> list[dict]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_quality import load_events, movielens_dir

    directory = movielens_dir()
    if (directory / "u.data").is_file():
        return load_events(directory)
    return synthetic_events(n_users=1000, n_items=1700, per_user=100)  # MovieLens-100K's shape


def ours(kind: str, evs: list[dict], device: str, epochs: int, defence: str | None = None) -> tuple[float, float]:
    trainer = Trainer(TrainConfig(model=kind, device=device, holdout_pct=0, defence=defence))
    trainer.ingest(evs)
    trainer.fit(1)  # warm-up: allocator, kernels
    stats = trainer.fit(epochs)
    return stats["samples_per_second"], stats["samples_per_cpu_second"]


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, user, item, n_items):
        self.user, self.item, self.n_items = user, item, n_items

    def __len__(self):
        return len(self.user)

    def __getitem__(self, i):
        return int(self.user[i]), int(self.item[i]), int(np.random.randint(1, self.n_items))


def per_sample_loader(evs: list[dict], seconds: float = 10.0) -> tuple[float, float]:
    trainer = Trainer(TrainConfig(model="bpr", device="cpu", holdout_pct=0))
    trainer.ingest(evs)
    log = trainer.log
    loader = torch.utils.data.DataLoader(_Pairs(log.user, log.item, trainer.n_items), batch_size=4096,
                                         shuffle=True)
    n, start, cpu_start = 0, time.perf_counter(), time.process_time()
    for u, i, j in loader:
        trainer._step((u, i, j))
        n += len(u)
        if time.perf_counter() - start > seconds:
            break
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", default="bpr,sasrec")
    parser.add_argument("--defences", default="none", help="none, gro, or both: none,gro")
    parser.add_argument("--devices", default=None, help="default: cpu, and cuda where present")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    evs = events()
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{len(evs)} events; torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"))
    print(f"{'model':30} {'device':6} {'samples/s':>12} {'samples/cpu-s':>14}")
    for kind in args.models.split(","):
        for defence in args.defences.split(","):
            for device in devices:
                wall, cpu = ours(kind, evs, device, args.epochs, None if defence == "none" else defence)
                name = kind + (" + GRO" if defence == "gro" else "") + " (batched tensors)"
                print(f"{name:30} {device:6} {wall:12,.0f} {cpu:14,.0f}", flush=True)
    if "bpr" in args.models:
        wall, cpu = per_sample_loader(evs)
        print(f"{'bpr (per-sample DataLoader)':30} {'cpu':6} {wall:12,.0f} {cpu:14,.0f}")


if __name__ == "__main__":
    main()
