"""The incremental trainer: learns from the clean log, grows with it, and serves its held-back slice.

One object for offline and streaming use. `ingest` appends clean events (growing the embedding tables),
`fit` runs full epochs over everything learned, `fit_increment` takes one micro-batch step on new events
mixed with replayed old ones (experience replay, so the model does not drift towards the newest traffic),
and `retract` unlearns (see `trainer.unlearning`). Nothing is re-initialised unless asked.

A deterministic panel of users (`holdout_pct` percent, chosen by a hash of the opaque id) has its newest
event held back from training: that rolling leave-one-out slice is what the utility gate compares versions on.

>>> t = Trainer(TrainConfig(model="bpr", dim=8, batch_size=4, seed=0))
>>> ev = [{"type": "click", "event_id": f"e{i}", "ts": i, "user_id": f"u{i % 3}", "item_id": f"i{i % 5}"}
...       for i in range(30)]
>>> len(t.ingest(ev)), t.model.users.num_embeddings >= 3
(30, True)
>>> stats = t.fit(epochs=2); stats["epochs"], stats["samples"] > 0
(2, True)
"""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable

import numpy as np
import torch

from models.bpr import BPRMF
from models.sasrec import SASRec
from trainer.batches import bpr_batches, positive_keys, sasrec_windows
from trainer.device import autocast, pick_device
from trainer.log import InteractionLog
from trainer.metrics import evaluate, topk
from trainer.optim import adam_state_by_name, load_adam_state_by_name, make_adam

DEFAULTS = {
    # Chosen on the validation slice of MovieLens-100K (see benchmarks/README-trainer.md).
    "bpr": {"lr": 2e-3, "batch_size": 4096, "epochs": 35, "dim": 64},
    "sasrec": {"lr": 2e-3, "batch_size": 128, "epochs": 200, "dim": 64},
}


@dataclass
class TrainConfig:
    """Every knob of a run; stored in each checkpoint so that a restart builds the same model."""

    model: str = "bpr"
    dim: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    reg: float = 0.0               # BPR: L2 on the rows a batch touches
    weight_decay: float = 0.0
    max_len: int = 50              # SASRec
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    holdout_pct: float = 10.0      # share of users whose newest event is held back for the gates
    replay_factor: int = 4         # replayed old samples per new sample in a micro-batch step
    unlearn_epochs: int = 30       # passes over the affected rows' clean interactions when rebuilding
    reset_share: float = 0.5       # rows with at least this share of retracted events restart from scratch
    headroom: float = 1.5          # table growth factor, amortising the copy
    seed: int = 0
    # Defence against model extraction (trainer.gro): None or "gro"; the swap loss's weight, the list
    # length the attacker sees, the candidate pool's depth, swaps per list, queries per batch.
    defence: str | None = None
    gro_lambda: float = 0.08
    gro_k: int = 10
    gro_candidates: int = 50
    gro_swaps: int = 3
    gro_queries: int = 256
    gro_warmup: int = 0            # epochs before the swap loss joins: the target trains plainly, the student
                                   # already imitates it, so the swaps are aimed by a trained imitator
    gro_ramp: int = 0              # joint epochs over which the swap loss's weight rises linearly to lambda
                                   # (1/(N+1), 2/(N+1), ... of it), so the target learns its ranking first
    gro_student_lr: float | None = None  # the student's Adam step (None: the target's `lr`)
    # Share of GRO's queries that are attacker-like (SASRec): autoregressive synthetic sequences from random
    # items through the target's own top-k, as a data-free extractor asks, rather than training prefixes.
    # None: 0.5 for SASRec (chosen on validation at 30 epochs with lambda 0.08, benchmarks/README-trainer.md),
    # 0 for BPR-MF (whose queries are users, not sequences).
    gro_synthetic: float | None = None
    gro_synthetic_len: int = 20
    device: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in DEFAULTS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(DEFAULTS)}")
        for key, value in DEFAULTS[self.model].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.gro_synthetic is None:
            self.gro_synthetic = 0.5 if self.model == "sasrec" else 0.0
        if self.defence not in (None, "none", "gro"):
            raise ValueError(f"unknown defence {self.defence!r}; choose gro or none")
        if self.defence == "none":
            self.defence = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "device"}


def build_model(config: TrainConfig, n_users: int, n_items: int) -> torch.nn.Module:
    if config.model == "bpr":
        return BPRMF(n_users, n_items, dim=config.dim, reg=config.reg)
    return SASRec(n_items, dim=config.dim, max_len=config.max_len, n_layers=config.n_layers,
                  n_heads=config.n_heads, dropout=config.dropout)


class Trainer:
    def __init__(self, config: TrainConfig, log: InteractionLog | None = None):
        self.config = config
        self.device = pick_device(config.device)
        self.log = log if log is not None else InteractionLog()
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = build_model(config, self.log.users.size, self.log.items.size).to(self.device)
        self.optimizer = make_adam(self.model, config.lr, config.weight_decay)
        # GRO's student: a copy of the architecture that imitates an attacker (trainer.gro), never served.
        self.student = self.student_optimizer = None
        if config.defence == "gro":
            self.student = build_model(config, self.log.users.size, self.log.items.size).to(self.device)
            self.student_optimizer = make_adam(self.student, self._student_lr(), config.weight_decay)
        self.samples_trained = 0
        self.epochs_trained = 0
        self.learned_rows = 0  # log rows before this index have shaped the weights
        self._gro_pool: torch.Tensor | None = None
        self._split_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    # -- data -------------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        """Item rows in use, padding row 0 included."""
        return self.log.items.size

    def ingest(self, events: Iterable[Any]) -> np.ndarray:
        """Append clean events to the log and grow the tables; returns the new rows."""
        rows = self.log.add(events)
        if len(rows):
            self.grow()
        return rows

    def _student_lr(self) -> float:
        return self.config.gro_student_lr or self.config.lr

    def grow(self) -> None:
        state = adam_state_by_name(self.model, self.optimizer)
        if self.model.grow(self.log.users.size, self.log.items.size, self.config.headroom):
            self.model.to(self.device)
            self.optimizer = make_adam(self.model, self.config.lr, self.config.weight_decay)
            load_adam_state_by_name(self.model, self.optimizer, state)
        if self.student is not None:
            state = adam_state_by_name(self.student, self.student_optimizer)
            if self.student.grow(self.log.users.size, self.log.items.size, self.config.headroom):
                self.student.to(self.device)
                self.student_optimizer = make_adam(self.student, self._student_lr(), self.config.weight_decay)
                load_adam_state_by_name(self.student, self.student_optimizer, state)

    def panel(self) -> np.ndarray:
        """User rows in the evaluation panel: a stable hash of the id, so the panel survives restarts."""
        ids = self.log.users.ids
        cut = self.config.holdout_pct / 100 * 2**32
        return np.array([row for row, uid in enumerate(ids) if zlib.crc32(uid.encode()) < cut],
                        dtype=np.int64)

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """(train mask over log rows, held-back rows): each panel user's newest event is held back."""
        if self._split_cache is None or self._split_cache[0] != self.log.changes:
            active = self.log.active.copy()
            held = self.log.last_rows(active, self.panel(), min_history=3)
            active[held] = False
            self._split_cache = (self.log.changes, active, held)
        return self._split_cache[1], self._split_cache[2]

    def history(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indptr, items, _ = self.log.sequences(mask)
        return indptr, items

    # -- training ---------------------------------------------------------------------------------
    def _step(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with autocast(self.device):
            if self.student is not None:
                loss = self._gro_loss(batch, swap=self.epochs_trained >= self.config.gro_warmup)
            elif self.model.kind == "bpr":
                loss = self.model.loss(*batch)
            else:
                loss = self.model.loss(*batch, n_items=self.n_items)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()  # a tensor: reading it would sync the GPU every step

    def _gro_loss(self, batch: tuple[torch.Tensor, ...], swap: bool = True) -> torch.Tensor:
        """The recommendation loss plus GRO's swap loss (trainer.gro); the student takes its own step on
        the target's current lists first. Queries: BPR, the batch's users; SASRec, one random prefix of
        each window (attackers ask with short and long histories alike), its items excluded as served.
        Without `swap` (the warm-up) only the student learns its imitation; the target's loss is plain."""
        from trainer import gro

        cfg, n = self.config, self.n_items
        model, student = self.model, self.student
        if model.kind == "bpr":
            loss = model.loss(*batch)
            users = batch[0][: cfg.gro_queries].unique()  # the batch is shuffled: a random sample
            target_scores = model.score_users(users, n)
            served = target_scores.detach()
            student_scores = student.score_users(users, n)
        else:
            seq, target = batch
            hidden = model.encode(seq)
            keep = target > 0
            loss = torch.nn.functional.cross_entropy(model.logits(hidden[keep], n).float(), target[keep])
            if cfg.gro_synthetic > 0:
                # Attacker-like queries replace a share of the training prefixes: their answers are what an
                # extractor learns from, and changing them costs real users' histories little.
                n_syn = int(round(cfg.gro_synthetic * min(len(seq), cfg.gro_queries)))
                if n_syn:
                    extra = self._synthetic_queries(n_syn, seq.shape[1], seq.device)
                    seq = torch.cat([extra, seq[: max(min(len(seq), cfg.gro_queries) - n_syn, 0)]])
                    hidden = torch.cat([model.encode(extra), hidden[: len(seq) - n_syn]])
            length = (seq > 0).sum(1)
            rows = torch.nonzero(length > 0).squeeze(1)[: cfg.gro_queries]
            width = seq.shape[1]
            back = (torch.rand(len(rows), generator=self.generator).to(seq.device) * length[rows]).long()
            pos = width - 1 - back
            prefix = seq[rows].masked_fill(torch.arange(width, device=seq.device) > pos.unsqueeze(1), 0)
            seen = torch.zeros(len(rows), n, dtype=torch.bool, device=seq.device)
            seen.scatter_(1, prefix, True)
            seen[:, 0] = True
            target_scores = model.logits(hidden[rows, pos], n)
            served = target_scores.detach().masked_fill(seen, float("-inf"))
            student_scores = student.logits(student.encode(seq[rows])[torch.arange(len(rows)), pos], n)
            student_scores = student_scores.masked_fill(seen, float("-inf"))
        lists, pool = gro.ranked(served.float(), cfg.gro_k, cfg.gro_candidates)
        student_loss = gro.listwise_loss(student_scores, lists)
        self.student_optimizer.zero_grad(set_to_none=True)
        student_loss.backward()
        self.student_optimizer.step()
        if not swap:
            return loss
        positions, incoming = gro.swap_targets(student_scores.detach().float().clamp_min(-1e4), lists, pool,
                                               cfg.gro_swaps)
        return loss + self.gro_weight() * gro.swap_loss(target_scores, lists, positions, incoming)

    def gro_weight(self) -> float:
        """The swap loss's weight this epoch: lambda, scaled down over the first `gro_ramp` joint epochs."""
        cfg = self.config
        joint = self.epochs_trained - cfg.gro_warmup  # 0 in the first epoch with the swap loss
        return cfg.gro_lambda * min(1.0, (joint + 1) / (cfg.gro_ramp + 1))

    @torch.no_grad()
    def _synthetic_queries(self, count: int, width: int, device: torch.device) -> torch.Tensor:
        """`count` random prefixes of the epoch's pool of autoregressive synthetic sequences (a random item,
        then one of the target's top-k after the sequence so far, repeatedly), left-padded to `width`."""
        cfg, n = self.config, self.n_items
        if self._gro_pool is None:
            was_training = self.model.training
            self.model.eval()
            size, length = max(cfg.gro_queries, 64), min(cfg.gro_synthetic_len, width)
            pool = torch.zeros(size, width, dtype=torch.long, device=device)
            pool[:, -1] = torch.randint(1, n, (size,), generator=self.generator).to(device)
            for step in range(1, length):
                scores = self.model.score_sequences(pool, n).float()
                scores.scatter_(1, pool, float("-inf"))
                top = scores.topk(cfg.gro_k, dim=1).indices
                pick = top.gather(1, torch.randint(0, cfg.gro_k, (size, 1), generator=self.generator).to(device))
                pool = torch.cat([pool[:, 1:], pick], dim=1)
            self.model.train(was_training)
            self._gro_pool = pool
        pool = self._gro_pool
        rows = torch.randint(0, len(pool), (count,), generator=self.generator).to(device)
        cut = torch.randint(1, min(cfg.gro_synthetic_len, width) + 1, (count,), generator=self.generator).to(device)
        picked = pool[rows]
        # Keep the first `cut` items of each sequence (right-aligned, as the model reads them).
        length = (picked > 0).sum(1)
        shift = length - cut
        index = (torch.arange(width, device=device).unsqueeze(0) - shift.unsqueeze(1)).clamp_min(0)
        shifted = picked.gather(1, index)
        return shifted.masked_fill(torch.arange(width, device=device).unsqueeze(0) < width - cut.unsqueeze(1), 0)

    def _batches(self, mask: np.ndarray, rows: np.ndarray | None = None):
        """One epoch of batches over the rows in `mask` (BPR samples or SASRec windows)."""
        cfg = self.config
        if self.model.kind == "bpr":
            picked = np.flatnonzero(mask) if rows is None else rows
            user, item = self.log.user[picked], self.log.item[picked]
            keys = positive_keys(self.log.user[mask], self.log.item[mask], self.n_items)
            return len(picked), bpr_batches(user, item, self.n_items, cfg.batch_size, self.generator,
                                            keys, self.device)
        indptr, items, _ = self.log.sequences(mask)
        seq, target = sasrec_windows(indptr, items, cfg.max_len)
        if rows is not None:  # micro-batch: only windows of the users that just acted, plus replay
            users = np.unique(self.log.user[rows])
            owner = _window_owners(indptr, cfg.max_len)
            fresh = np.flatnonzero(np.isin(owner, users))
            newest = fresh[np.r_[True, owner[fresh][1:] != owner[fresh][:-1]]] if len(fresh) else fresh
            n_replay = min(len(seq), cfg.replay_factor * max(len(newest), 1))
            replay = torch.randint(0, max(len(seq), 1), (n_replay,), generator=self.generator).numpy()
            pick = torch.from_numpy(np.concatenate([newest, replay]).astype(np.int64))
            seq, target = seq[pick], target[pick]
        order = torch.randperm(len(seq), generator=self.generator)
        seq, target = seq[order].to(self.device), target[order].to(self.device)
        n_samples = int((target > 0).sum())

        def gen():
            for start in range(0, len(seq), cfg.batch_size):
                yield seq[start:start + cfg.batch_size], target[start:start + cfg.batch_size]
        return n_samples, gen()

    def fit(self, epochs: int | None = None, mask: np.ndarray | None = None,
            on_epoch=None) -> dict[str, Any]:
        """Full epochs over the training rows (`mask`, default: everything but the held-back slice).

        `on_epoch(epoch, stats)` may return True to stop early (validation-based early stopping).
        """
        epochs = self.config.epochs if epochs is None else epochs
        mask = self.split()[0] if mask is None else mask
        self.model.train()
        total, seconds, cpu_seconds, per_epoch = 0, 0.0, 0.0, []
        for epoch in range(epochs):
            start, cpu_start = time.perf_counter(), time.process_time()
            self._gro_pool = None  # attacker-like queries, drawn afresh from this epoch's model
            n, batches = self._batches(mask)
            for batch in batches:
                self._step(batch)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            # CPU time too: on a shared machine wall time measures the neighbours as much as the code.
            cpu_seconds += time.process_time() - cpu_start
            total, seconds = total + n, seconds + elapsed
            per_epoch.append(elapsed)
            self.samples_trained += n
            self.epochs_trained += 1
            if on_epoch is not None and on_epoch(epoch, {"samples": n, "seconds": elapsed}):
                break
        done = len(per_epoch)
        if done:
            self.learned_rows = self.log.n
        return {"epochs": done, "samples": total, "seconds": seconds,
                "seconds_per_epoch": seconds / max(done, 1), "cpu_seconds_per_epoch": cpu_seconds / max(done, 1),
                "samples_per_second": total / seconds if seconds else 0.0,
                "samples_per_cpu_second": total / cpu_seconds if cpu_seconds else 0.0}

    def fit_increment(self, rows: np.ndarray, passes: int = 1) -> dict[str, Any]:
        """A micro-batch update: the new rows plus `replay_factor` times as many replayed old ones."""
        train_mask, _ = self.split()
        rows = rows[train_mask[rows]]
        if len(rows) == 0:
            return {"samples": 0}
        self.model.train()
        total = 0
        for _ in range(passes):
            if self.model.kind == "bpr":
                pool = np.flatnonzero(train_mask)
                replay = pool[torch.randint(0, len(pool), (self.config.replay_factor * len(rows),),
                                            generator=self.generator).numpy()]
                n, batches = self._batches(train_mask, np.concatenate([rows, replay]))
            else:
                n, batches = self._batches(train_mask, rows)
            for batch in batches:
                self._step(batch)
            total += n
        self.samples_trained += total
        self.learned_rows = self.log.n
        return {"samples": total}

    def retract(self, event_ids: Iterable[str], measure: bool = True) -> dict[str, Any]:
        """Unlearn events (see `trainer.unlearning`); ids not learned yet are dropped on arrival."""
        from trainer.unlearning import unlearn  # unlearning imports this module's helpers
        return unlearn(self, event_ids, measure)

    def restore(self, event_ids: Iterable[str]) -> np.ndarray:
        """Learn again events whose retraction an analyst undid; returns their rows (to fit on)."""
        return self.log.restore(event_ids)

    # -- serving and evaluation -------------------------------------------------------------------
    def evaluate_holdout(self, model: torch.nn.Module | None = None, k: int = 10,
                         per_user: bool = False) -> dict[str, Any]:
        """HR@k and NDCG@k on the held-back slice (full ranking, known items masked)."""
        train_mask, held = self.split()
        return evaluate(model or self.model, self.log.user[held], self.log.item[held],
                        self.history(train_mask), self.n_items, self.device, k=k, per_user=per_user)

    def recommend(self, users: np.ndarray, k: int = 10, model: torch.nn.Module | None = None) -> np.ndarray:
        """Top-k item rows for user rows, excluding everything each user already interacted with."""
        return topk(model or self.model, users, self.history(self.log.active), self.n_items,
                    self.device, k)

    def popular(self, k: int) -> np.ndarray:
        counts = np.bincount(self.log.item[self.log.active], minlength=self.n_items)
        counts[0] = -1
        return np.argsort(-counts, kind="stable")[:k]

    def clone_model(self) -> torch.nn.Module:
        """A frozen copy of the current weights (the candidate a proposal evaluates)."""
        copy = build_model(self.config, self.model_users(), self.model.items.num_embeddings)
        copy.load_state_dict(self.model.state_dict())
        return copy.to(self.device).eval()

    def model_users(self) -> int:
        return self.model.users.num_embeddings if self.model.kind == "bpr" else 1

    # -- persistence ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        student = {}
        if self.student is not None:
            student = {"student": self.student.state_dict(),
                       "student_optim": adam_state_by_name(self.student, self.student_optimizer)}
        return {**student, "model": self.model.state_dict(), "optim": adam_state_by_name(self.model, self.optimizer),
                "generator": self.generator.get_state(), "samples_trained": self.samples_trained,
                "epochs_trained": self.epochs_trained, "learned_rows": self.learned_rows}

    def load_state(self, state: dict[str, Any]) -> None:
        model_state = state["model"]
        n_items = model_state["items.weight"].shape[0]
        n_users = model_state["users.weight"].shape[0] if "users.weight" in model_state else 1
        self.model.grow(n_users, n_items)
        self.model.load_state_dict(model_state)
        self.model.to(self.device)
        self.optimizer = make_adam(self.model, self.config.lr, self.config.weight_decay)
        load_adam_state_by_name(self.model, self.optimizer, state.get("optim", {}))
        if "generator" in state:
            self.generator.set_state(state["generator"])
        self.samples_trained = int(state.get("samples_trained", 0))
        self.epochs_trained = int(state.get("epochs_trained", 0))
        self.learned_rows = int(state.get("learned_rows", 0))
        if self.student is not None and state.get("student"):
            rows = state["student"]["items.weight"].shape[0]
            users = state["student"]["users.weight"].shape[0] if "users.weight" in state["student"] else 1
            self.student.grow(users, rows)
            self.student.load_state_dict(state["student"])
            self.student.to(self.device)
            self.student_optimizer = make_adam(self.student, self._student_lr(), self.config.weight_decay)
            load_adam_state_by_name(self.student, self.student_optimizer, state.get("student_optim", {}))
        self.grow()  # the log may know more ids than the saved tables


def _window_owners(indptr: np.ndarray, max_len: int) -> np.ndarray:
    """The user row of each window `sasrec_windows` cuts, in the same order."""
    lengths = np.diff(indptr)
    per_user = np.where(lengths > 1, -(-(lengths - 1) // max_len), 0)
    return np.repeat(np.arange(len(lengths)), per_user)


def config_from_dict(values: dict[str, Any], **overrides: Any) -> TrainConfig:
    known = {k: v for k, v in values.items() if k in TrainConfig.__dataclass_fields__}
    known.setdefault("gro_synthetic", 0.0)  # saved before the option existed: those versions trained without it
    return replace(TrainConfig(**known), **overrides)
