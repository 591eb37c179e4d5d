"""Propose a version: checkpoint it, run every gate against the promoted version, promote or alert.

Both versions are judged on the same ground: the current held-back slice for utility, the same panel of users
(with their current histories) for exposure, the items in use for uniformity. The promoted model is kept in
memory (and reloaded from `MODELDIR/PROMOTED` after a restart); a blocked candidate is recorded with its gate
results but not served, and the trainer keeps learning from the clean stream.

The feedback link: an item whose exposure jumps is what a push buys, so each jump the exposure gate blocks
goes back to the worker as a signal on the item (the `signals` sink: the control topic, or a file), with the
version and its old and new share. The worker flags the item, analysts see it as a case, and the gate holds
every later version back until the cause is found (its accounts flagged and unlearned, the jump gone) or an
analyst releases the item: released items (`clear`) have their jump accepted until a version is promoted.
"""

from __future__ import annotations

import time
import zlib
from typing import Any, Callable, Iterable

import numpy as np
import torch

from trainer.alerts import AlertSink, gate_alert
from trainer.checkpoint import CheckpointStore
from trainer.gates import Gate, VersionReport, default_gates
from trainer.incremental import Trainer, build_model, config_from_dict
from trainer.metrics import exposure_shares, uniformity


# An exposure jump alone is enough to open a case on the item (an item flag quarantines nothing: it marks a
# suspected target for analysts and for the exposure gate), not to convict anyone.
EXPOSURE_SIGNAL_SCORE = 0.6


class Promoter:
    """Parameters: the `store`, the `gates`, an alert `sink`, `flagged` (returns item ids flagged as
    attack targets), `signals` (takes each exposure-jump signal record for the worker), `panel_size` users
    for exposure, `k` list length."""

    def __init__(self, store: CheckpointStore, gates: list[Gate] | None = None,
                 sink: AlertSink | None = None, flagged: Callable[[], Iterable[str]] | None = None,
                 signals: Callable[[dict[str, Any]], None] | None = None, panel_size: int = 2000, k: int = 10):
        self.store, self.gates = store, gates if gates is not None else default_gates()
        self.sink, self.flagged, self.signals = sink, flagged, signals
        self.panel_size, self.k = panel_size, k
        self.cleared: set[str] = set()  # released by an analyst since the last promotion
        self._signalled: set[tuple[str, str | None]] = set()  # (item, baseline version) already told
        self._baseline: tuple[str, torch.nn.Module] | None = None

    def clear(self, items: Iterable[str]) -> None:
        """Items an analyst released: their exposure jump is accepted until the next promotion."""
        self.cleared.update(items)

    def exposure_panel(self, trainer: Trainer) -> np.ndarray:
        """Up to `panel_size` active users, picked by a stable hash of their ids."""
        users = np.unique(trainer.log.user[trainer.log.active])
        if len(users) <= self.panel_size:
            return users
        ids = trainer.log.users.ids
        keys = np.array([zlib.crc32(ids[u].encode()) for u in users])
        return np.sort(users[np.argsort(keys, kind="stable")[: self.panel_size]])

    def report(self, trainer: Trainer, model: torch.nn.Module) -> VersionReport:
        utility = trainer.evaluate_holdout(model, k=self.k, per_user=True)
        lists = trainer.recommend(self.exposure_panel(trainer), self.k, model=model)
        shares = exposure_shares(lists, trainer.n_items)
        item_ids = trainer.log.items
        in_use = np.unique(trainer.log.item[trainer.log.active])
        emb = model.items.weight.detach()[torch.as_tensor(in_use, device=model.items.weight.device)]
        extraction = None
        budgets = [g.budget for g in self.gates if getattr(g, "measures_extraction", False)]
        if budgets:
            from trainer.redteam import surrogate_fidelity

            extraction = surrogate_fidelity(trainer, model, budgets[0])
        return VersionReport(
            extraction=extraction, hr=utility["hr"], ndcg=utility["ndcg"], n_eval=utility["n"], uniformity=uniformity(emb),
            shares={item_ids.id_of(int(i)): float(shares[i]) for i in np.flatnonzero(shares)},
            n_lists=len(lists), flagged=sorted(set(self.flagged())) if self.flagged else [],
            cleared=sorted(self.cleared),
            per_user={"hr": utility["hits"], "ndcg": utility["ndcgs"]})

    def baseline(self, trainer: Trainer) -> torch.nn.Module | None:
        """The promoted model, grown to the trainer's current tables (new rows are untrained)."""
        promoted = self.store.promoted()
        if promoted is None:
            return None
        if self._baseline is None or self._baseline[0] != promoted:
            self._baseline = (promoted, load_model(self.store, promoted, trainer.device))
        model = self._baseline[1]
        n_users = trainer.model.users.num_embeddings if trainer.model.kind == "bpr" else 1
        model.grow(n_users, trainer.model.items.num_embeddings)
        return model.to(trainer.device).eval()

    def propose(self, trainer: Trainer, offsets: dict[str, Any] | None = None,
                meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Checkpoint the trainer as a new version; promote it if every gate passes."""
        candidate = trainer.clone_model()
        cand = self.report(trainer, candidate)
        base_model = self.baseline(trainer)
        results = []
        base = None
        if base_model is not None:
            base = self.report(trainer, base_model)
            results = [gate.check(cand, base).as_dict() for gate in self.gates]
        promoted = all(r["passed"] for r in results)
        record = {"offsets": offsets or {}, "promoted": promoted, "baseline": self.store.promoted(),
                  "metrics": _summary(cand), "baseline_metrics": _summary(base) if base else None,
                  "gates": results, **(meta or {})}
        version = self.store.save(trainer, record)
        if promoted:
            self.store.promote(version)
            self._baseline = (version, candidate)
            self.cleared.clear()  # the new baseline carries the accepted shares
        else:
            if self.sink is not None:
                for result in results:
                    if not result["passed"]:
                        self.sink(gate_alert(version, result, str(self.store.dir)))
            record["signals"] = self._signal_jumps(version, record["baseline"], results)
        return {"version": version, **record}

    def _signal_jumps(self, version: str, baseline: str | None, results: list[dict[str, Any]]) -> list[str]:
        """Tell the worker about each item whose exposure jump blocked this version (once per baseline)."""
        told = []
        for result in results:
            if result["gate"] != "exposure" or result["passed"]:
                continue
            for item, shares in result["details"]["jumps"].items():
                if self.signals is None or (item, baseline) in self._signalled:
                    continue
                self._signalled.add((item, baseline))
                self.signals(exposure_signal(item, version, baseline, shares["old"], shares["new"]))
                told.append(item)
        return told


def exposure_signal(item: str, version: str, baseline: str | None, old: float, new: float) -> dict[str, Any]:
    """The control record that tells the worker an item's exposure jumped in a new version."""
    return {"action": "signal", "kind": "item", "id": item, "detector": "exposure",
            "score": EXPOSURE_SIGNAL_SCORE, "by": "trainer", "ts": time.time(),
            "evidence": {"version": version, "baseline": baseline, "share_of_top10_lists": {"old": old, "new": new},
                         "why": f"its share of top-10 lists went from {old:.2%} to {new:.2%} in version {version}"}}


def _summary(report: VersionReport) -> dict[str, Any]:
    top = sorted(report.shares.items(), key=lambda kv: -kv[1])[:5]
    return {"hr@10": report.hr, "ndcg@10": report.ndcg, "n_eval": report.n_eval,
            **({"extraction_agreement@10": report.extraction} if report.extraction is not None else {}),
            "uniformity": report.uniformity, "top_exposure": dict(top)}


def load_model(store: CheckpointStore, version: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Just the network of a version (no log, no optimiser): what serving needs."""
    from safetensors.torch import load_file

    meta = store.meta(version)
    tensors = load_file(str(store.versions_dir / f"{version}.safetensors"))
    state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    config = config_from_dict(meta["config"])
    n_users = state["users.weight"].shape[0] if "users.weight" in state else 1
    model = build_model(config, n_users, state["items.weight"].shape[0])
    model.load_state_dict(state)
    return model.to(device).eval()
