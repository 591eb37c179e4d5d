"""The serving call: top-k for a sequence of item ids, with a flagged client's action applied.

`Recommender` answers what an API answers: item ids in (a user's recent items, oldest first), item ids out,
the items given excluded. SASRec reads the sequence as it is; BPR-MF folds an unknown sequence in as the mean
of its items' vectors (a user vector for a user it never saw).

`ClientActions` applies the records of the `client-actions` topic (`streams.sinks.client_action`: a flagged
client's `{"type": "throttle" | "noise", "max_qps", "max_k", "noise_scale", "ttl_seconds"}`), each until
its `ttl_seconds` run out:
- throttle: a token bucket at `max_qps` (burst of one second's worth, at least 1): a query over the rate is
  refused (`Throttled`, an HTTP 429 to the caller), and k is capped at `max_k`.
- noise: the list is perturbed within a stated utility budget: at most ceil(`noise_scale` * k) of the k
  items are replaced, each by an item the model itself ranks in k+1..3k (near misses, not junk), and the
  order is kept otherwise. So at least (1 - noise_scale) of the true top-k is served, in order. The
  replacement is a pure function of (client, query, model): asking again returns the same list, so the
  noise cannot be averaged away by repeating a query.

>>> actions = ClientActions()
>>> actions.apply({"client_id": "c1", "action": {"type": "throttle", "max_qps": 1.0, "max_k": 20,
...                                                "noise_scale": 0.0, "ttl_seconds": 60}}, now=0.0)
>>> actions.admit("c1", k=100, now=0.0), actions.admit("c2", k=100, now=0.0)
(20, 100)
>>> try:
...     actions.admit("c1", k=10, now=0.1)
... except Throttled as refused:
...     print("429", refused.retry_after)
429 0.9
>>> perturb_list(list(range(30)), k=10, scale=0.2, key="c1|q")[:10].count(0) == 1
True
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

NEAR_MISS_DEPTH = 3  # replacements come from ranks k+1..3k


def rec_query_record(event_id: str, ts: float, client_id: str, sequence: Sequence[str], k: int,
                     answer: Sequence[str] | None, user_id: str | None = None) -> dict[str, Any]:
    """The `rec_query` event a serving layer logs for one call: the sequence as seeds, newest first (as apps
    send context), and the answer it got (`answer_items`, omitted when it was refused): what lets the
    extraction detector see a client building its queries from its own answers."""
    record: dict[str, Any] = {"type": "rec_query", "event_id": event_id, "ts": ts, "client_id": client_id,
                              "seed_items": list(sequence)[::-1], "k": k}
    if user_id is not None:
        record["user_id"] = user_id
    if answer is not None:
        record["answer_items"] = list(answer)
    return record


class Throttled(Exception):
    """A query refused because the client is over its rate; `retry_after` in seconds."""

    def __init__(self, client_id: str, retry_after: float):
        super().__init__(f"client {client_id} throttled; retry after {retry_after:.2f}s")
        self.client_id, self.retry_after = client_id, retry_after


def perturb_list(ranked: Sequence[Any], k: int, scale: float, key: str) -> list[Any]:
    """The top k of `ranked` (best first, at least 3k long for full effect) with ceil(scale * k) of its
    positions replaced by items from ranks k+1..3k; deterministic in `key`."""
    head, tail = list(ranked[:k]), list(ranked[k:NEAR_MISS_DEPTH * k])
    n_swap = min(math.ceil(scale * k - 1e-9), len(head), len(tail)) if scale > 0 else 0
    if n_swap <= 0:
        return head
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big"))
    slots = rng.choice(len(head), n_swap, replace=False)
    incoming = rng.choice(len(tail), n_swap, replace=False)
    for slot, pick in zip(slots.tolist(), incoming.tolist()):
        head[slot] = tail[pick]
    return head


@dataclass
class _Active:
    action: dict[str, Any]
    until: float
    tokens: float
    at: float


class ClientActions:
    """The actions in force, by client, from `client-actions` records."""

    def __init__(self):
        self._active: dict[str, _Active] = {}

    def apply(self, record: dict[str, Any], now: float) -> None:
        action = record["action"]
        rate = float(action.get("max_qps") or 0.0)
        self._active[str(record["client_id"])] = _Active(action, now + float(action.get("ttl_seconds", 0)),
                                                         max(rate, 1.0), now)

    def action(self, client_id: str | None, now: float) -> dict[str, Any] | None:
        active = self._active.get(client_id) if client_id is not None else None
        if active is None:
            return None
        if now >= active.until:
            del self._active[client_id]
            return None
        return active.action

    def admit(self, client_id: str | None, k: int, now: float) -> int:
        """The k this query may have; raises `Throttled` when a throttled client is over its rate."""
        action = self.action(client_id, now)
        if action is None:
            return k
        if action.get("max_k"):
            k = min(k, int(action["max_k"]))
        if action.get("type") == "throttle" and action.get("max_qps"):
            active, rate = self._active[client_id], float(action["max_qps"])
            active.tokens = min(max(rate, 1.0), active.tokens + (now - active.at) * rate)
            active.at = now
            if active.tokens < 1.0:
                raise Throttled(client_id, round((1.0 - active.tokens) / rate, 4))
            active.tokens -= 1.0
        return k

    def noise_scale(self, client_id: str | None, now: float) -> float:
        action = self.action(client_id, now)
        if action is None or action.get("type") != "noise":
            return 0.0
        return float(action.get("noise_scale") or 0.0)


class Recommender:
    """A served model version answering sequence queries; `actions` are the client actions in force."""

    def __init__(self, model: torch.nn.Module, item_ids: list[str], device: torch.device | str = "cpu",
                 actions: ClientActions | None = None, version: str | None = None):
        self.model, self.device = model.eval(), torch.device(device)
        self.item_ids = item_ids  # row -> id; row 0 is padding
        self.rows = {item: row for row, item in enumerate(item_ids) if row > 0}
        self.actions = actions or ClientActions()
        self.version = version
        self.queries = 0

    @classmethod
    def load(cls, model_dir: str, version: str = "promoted", device: str | None = None) -> "Recommender":
        from trainer.checkpoint import CheckpointStore

        store = CheckpointStore(model_dir)
        trainer, meta = store.load(version, device=device)
        ids = ["<pad>"] + [trainer.log.items.id_of(row) for row in range(1, trainer.n_items)]
        return cls(trainer.model, ids, trainer.device, version=meta["version"])

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def catalog(self) -> list[str]:
        """The item ids a client can see listed (what an attacker starts from)."""
        return self.item_ids[1:]

    @torch.no_grad()
    def scores(self, sequences: Sequence[Sequence[str]]) -> torch.Tensor:
        """(B, n_items) scores of every item after each sequence, the sequence's own items -inf."""
        n = self.n_items
        rows = [[self.rows[i] for i in seq if i in self.rows] for seq in sequences]
        model = self.model
        if model.kind == "sasrec":
            length = model.max_len
            batch = torch.zeros(len(rows), length, dtype=torch.long)
            for b, seq in enumerate(rows):
                if seq:
                    batch[b, length - len(seq[-length:]):] = torch.tensor(seq[-length:])
            out = model.score_sequences(batch.to(self.device), n).float()
        else:  # fold-in: an unseen user as the mean of their items' vectors
            emb = model.items.weight[:n]
            users = torch.zeros(len(rows), emb.shape[1], device=emb.device)
            for b, seq in enumerate(rows):
                if seq:
                    users[b] = emb[torch.tensor(seq, device=emb.device)].mean(0)
            out = (users @ emb.T).float()
            out[:, 0] = -math.inf
        for b, seq in enumerate(rows):
            if seq:
                out[b, torch.tensor(seq, device=out.device)] = -math.inf
        return out

    def recommend_many(self, sequences: Sequence[Sequence[str]], k: int, client_id: str | None = None,
                       now: float = 0.0) -> list[list[str] | None]:
        """One answer per sequence, as `recommend` gives it (None where the client was throttled)."""
        ks: list[int | None] = []
        for _ in sequences:
            try:
                ks.append(self.actions.admit(client_id, k, now))
            except Throttled:
                ks.append(None)
        return self._answer(sequences, ks, client_id, now)

    def recommend(self, seed_items: Sequence[str], k: int = 10, client_id: str | None = None,
                  now: float = 0.0) -> list[str]:
        """Top-k item ids after `seed_items` for `client_id`, its action applied; raises `Throttled`."""
        return self._answer([seed_items], [self.actions.admit(client_id, k, now)], client_id, now)[0]

    def _answer(self, sequences: Sequence[Sequence[str]], ks: list[int | None], client_id: str | None,
                now: float) -> list[list[str] | None]:
        self.queries += len(sequences)
        scale = self.actions.noise_scale(client_id, now)
        widest = max([kk for kk in ks if kk is not None], default=0)
        if widest == 0:
            return [None] * len(sequences)
        depth = min(NEAR_MISS_DEPTH * widest if scale > 0 else widest, self.n_items - 1)
        order = self.scores(sequences).topk(depth, dim=1)
        values, indices = order.values.cpu(), order.indices.cpu()
        answers: list[list[str] | None] = []
        for b, (seq, kk) in enumerate(zip(sequences, ks)):
            if kk is None:
                answers.append(None)
                continue
            ranked = [self.item_ids[r] for r in indices[b][torch.isfinite(values[b])].tolist()]
            if scale > 0:
                ranked = perturb_list(ranked, kk, scale, f"{client_id}|{self.version}|{'/'.join(seq)}")
            answers.append(ranked[:kk])
        return answers
