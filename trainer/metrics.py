"""Full-ranking evaluation and the statistics the gates compare.

- HR@K and NDCG@K with one held-out item per user, ranked against every item in the catalogue (no sampled
  negatives: Krichene & Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020), the user's other
  known items masked out.
- Exposure: the share of users' top-K lists that contain each item.
- Uniformity of L2-normalised item embeddings, -log E exp(-t ||x - y||^2) over pairs (Wang & Isola,
  "Understanding Contrastive Representation Learning through Alignment and Uniformity", ICML 2020; used by
  UNION, Yu et al., AAAI 2023, to catch ClusterAttack's collapse). Higher is more uniform.

>>> import torch
>>> scores = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
>>> hr, ndcg = rank_metrics(scores, torch.tensor([2, 0]), k=1)
>>> hr.tolist(), ndcg.tolist()
([0.0, 1.0], [0.0, 1.0])
>>> round(uniformity(torch.eye(4)), 3) > round(uniformity(torch.ones(4, 4)), 3)
True
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from trainer.batches import last_items
from trainer.device import autocast

History = tuple[np.ndarray, np.ndarray]  # CSR (indptr over user rows, items in time order)


def rank_metrics(scores: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user hit and NDCG of `targets` under `scores` (B, N); ties count against the target."""
    target_scores = scores.gather(1, targets.view(-1, 1))
    rank = (scores >= target_scores).sum(1) - 1  # 0-based, pessimistic on ties
    hit = (rank < k).float()
    ndcg = hit / torch.log2(rank.float() + 2)
    return hit, ndcg


@torch.no_grad()
def score_users(model, users: np.ndarray, history: History, n_items: int, device: torch.device,
                mask_history: bool = True, extra: np.ndarray | None = None) -> torch.Tensor:
    """Scores (B, n_items) of every item for each user; known items -inf when `mask_history`."""
    indptr, items = history
    users = np.asarray(users, dtype=np.int64)
    with autocast(device):
        if model.kind == "sasrec":
            seq = last_items(indptr, items, users, model.max_len, extra).to(device)
            scores = model.score_sequences(seq, n_items)
        else:
            scores = model.score_users(torch.from_numpy(users).to(device), n_items)
    scores = scores.float()
    if mask_history:
        mask_known(scores, users, history, extra)
    return scores


def mask_known(scores: torch.Tensor, users: np.ndarray, history: History,
               extra: np.ndarray | None = None) -> None:
    """Set the scores of each user's known items (history, plus `extra`) to -inf, in place."""
    indptr, items = history
    lengths = indptr[users + 1] - indptr[users]
    rows = np.repeat(np.arange(len(users)), lengths)
    cols = np.concatenate([items[indptr[u]:indptr[u + 1]] for u in users]) if len(users) else rows
    if extra is not None:
        rows, cols = np.concatenate([rows, np.arange(len(users))]), np.concatenate([cols, extra])
    device = scores.device
    scores[torch.from_numpy(rows).to(device), torch.from_numpy(cols.astype(np.int64)).to(device)] = -math.inf


def evaluate(model, users: np.ndarray, targets: np.ndarray, history: History, n_items: int,
             device: torch.device, k: int = 10, mask_history: bool = True,
             extra: np.ndarray | None = None, batch_size: int = 1024, per_user: bool = False) -> dict:
    """Mean HR@k and NDCG@k of predicting `targets[i]` for `users[i]` given `history` (+ `extra`);
    with `per_user`, also the per-user vectors `hits` and `ndcgs` (for paired comparisons)."""
    was_training = model.training
    model.eval()
    hits, ndcgs = [], []
    for start in range(0, len(users), batch_size):
        end = start + batch_size
        batch_extra = None if extra is None else extra[start:end]
        scores = score_users(model, users[start:end], history, n_items, device, False, batch_extra)
        target = torch.from_numpy(np.asarray(targets[start:end], np.int64)).to(device)
        target_scores = scores.gather(1, target.view(-1, 1)).squeeze(1)
        if mask_history:
            mask_known(scores, users[start:end], history, batch_extra)
            # A repeated item (a second click) may be the target: it must stay rankable.
            scores[torch.arange(len(target), device=device), target] = target_scores
        hit, ndcg = rank_metrics(scores, target, k)
        hits.append(hit.cpu()), ndcgs.append(ndcg.cpu())
    model.train(was_training)
    n = len(users)
    if n == 0:
        out = {"hr": 0.0, "ndcg": 0.0, "n": 0}
        return {**out, "hits": np.zeros(0), "ndcgs": np.zeros(0)} if per_user else out
    hit, ndcg = torch.cat(hits), torch.cat(ndcgs)
    out = {"hr": float(hit.mean()), "ndcg": float(ndcg.mean()), "n": n}
    return {**out, "hits": hit.numpy(), "ndcgs": ndcg.numpy()} if per_user else out


def topk(model, users: np.ndarray, history: History, n_items: int, device: torch.device, k: int = 10,
         batch_size: int = 1024) -> np.ndarray:
    """Top-k item rows (B, k) per user, the user's known items excluded."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(users), batch_size):
        scores = score_users(model, users[start:start + batch_size], history, n_items, device)
        out.append(scores.topk(min(k, n_items - 1), dim=1).indices.cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def exposure_shares(lists: np.ndarray, n_items: int) -> np.ndarray:
    """Share of lists containing each item row, (n_items,)."""
    if len(lists) == 0:
        return np.zeros(n_items)
    return np.bincount(lists.ravel(), minlength=n_items)[:n_items] / len(lists)


@torch.no_grad()
def uniformity(embeddings: torch.Tensor, t: float = 2.0, max_items: int = 4096, seed: int = 0) -> float:
    """-log mean exp(-t ||x - y||^2) over distinct pairs of normalised rows (a sample of `max_items`)."""
    emb = embeddings.detach().float()
    if len(emb) > max_items:
        g = torch.Generator().manual_seed(seed)
        emb = emb[torch.randperm(len(emb), generator=g)[:max_items].to(emb.device)]
    if len(emb) < 2:
        return 0.0
    sq = torch.pdist(F.normalize(emb, dim=1)).square()
    return float(-(torch.logsumexp(-t * sq, 0) - math.log(len(sq))))
