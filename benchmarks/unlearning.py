"""How much of a retracted push attack's influence survives unlearning, against a retrain from scratch.

On a synthetic taste-group stream, 30 fake profiles push one unpopular item (5 popular fillers each). Three
models: `reference` trained on the benign events only, `served` trained on everything, then `served` after
`retract(fake events)`. Printed: the pushed item's exposure in benign users' top-10 lists (share of lists) in
each, the share of the attack's gain removed, and the fillers' summed exposure against the reference's.

    python benchmarks/unlearning.py [--model bpr|sasrec]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.incremental import Trainer, TrainConfig  # noqa: E402
from trainer.synthetic import push_attack, synthetic_events  # noqa: E402
from trainer.unlearning import influence  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bpr", choices=["bpr", "sasrec"])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--fakes", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    benign = synthetic_events(n_users=args.users, n_items=args.items, per_user=20, seed=0)
    target = f"i{args.items - 1}"
    attacked, fake_ids = push_attack(benign, targets=[target], n_fakes=args.fakes, filler=5, seed=0)
    config = dict(model=args.model, dim=16, holdout_pct=0, epochs=30,
                  batch_size=256 if args.model == "bpr" else 32)
    if args.model == "sasrec":
        config.update(n_layers=1, max_len=10)

    def trained(events):
        trainer = Trainer(TrainConfig(**config))
        trainer.ingest(events)
        trainer.fit()
        return trainer

    reference, served = trained(benign), trained(attacked)

    def exposure(t, item_ids):
        users = np.array([t.log.users.get(f"u{u}") for u in range(args.users)])
        return influence(t, np.array([t.log.items.get(i) for i in item_ids]), users)

    fillers = sorted({e["item_id"] for e in attacked if e["event_id"] in set(fake_ids)} - {target})
    clean, before = exposure(reference, [target]), exposure(served, [target])
    report = served.retract(fake_ids)
    after = exposure(served, [target])
    gain = before - clean
    print(f"{args.model}: pushed item's exposure: retrained without the attack {clean:.3f}, attacked "
          f"{before:.3f}, after unlearning {after:.3f}; gain removed "
          f"{(1 - (after - clean) / gain) if gain > 0 else float('nan'):.0%}")
    print(f"{args.model}: fillers' summed exposure: retrained {exposure(reference, fillers):.3f}, after unlearning "
          f"{exposure(served, fillers):.3f}; unlearning took {report['seconds']:.2f}s "
          f"({report['unlearned']} events, {report['items_mostly_retracted']} item row(s) rebuilt)")


if __name__ == "__main__":
    main()
