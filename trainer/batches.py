"""Training batches cut from whole tensors, never from a per-sample DataLoader.

A per-sample loader spends its time in Python (about 0.1M BPR samples/s on a laptop-class CPU); shuffling an
index tensor and slicing it keeps the loop inside torch (millions of samples/s). Negatives for BPR are drawn
uniformly and redrawn once where they hit a known positive, which removes nearly all false negatives at a
fraction of the cost of exact rejection sampling.

>>> import numpy as np, torch
>>> g = torch.Generator().manual_seed(0)
>>> batches = list(bpr_batches(np.array([0, 0, 1]), np.array([1, 2, 3]), n_items=6, batch_size=2,
...                            generator=g))
>>> [len(b[0]) for b in batches]
[2, 1]
>>> seq, target = sasrec_windows(np.array([0, 3]), np.array([1, 2, 3]), max_len=4)
>>> seq.tolist(), target.tolist()
([[0, 0, 1, 2]], [[0, 0, 2, 3]])
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


def positive_keys(user: np.ndarray, item: np.ndarray, n_items: int) -> torch.Tensor:
    """Sorted unique user * n_items + item keys, for fast membership tests with searchsorted."""
    return torch.from_numpy(np.unique(user.astype(np.int64) * n_items + item))


def _is_positive(keys: torch.Tensor, users: torch.Tensor, items: torch.Tensor, n_items: int) -> torch.Tensor:
    if len(keys) == 0:
        return torch.zeros_like(users, dtype=torch.bool)
    query = users * n_items + items
    at = torch.searchsorted(keys, query).clamp_(max=len(keys) - 1)
    return keys[at] == query


def sample_negatives(users: torch.Tensor, n_items: int, keys: torch.Tensor | None,
                     generator: torch.Generator | None) -> torch.Tensor:
    """Uniform items in 1..n_items-1, redrawn once where they are the user's positives."""
    neg = torch.randint(1, max(n_items, 2), users.shape, generator=generator)
    if keys is not None:
        hit = _is_positive(keys, users, neg, n_items)
        if hit.any():
            neg[hit] = torch.randint(1, max(n_items, 2), (int(hit.sum()),), generator=generator)
    return neg


def bpr_batches(user: np.ndarray, item: np.ndarray, n_items: int, batch_size: int,
                generator: torch.Generator | None = None, keys: torch.Tensor | None = None,
                device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, ...]]:
    """One shuffled epoch of (users, positives, negatives) batches on `device`."""
    users, items = torch.from_numpy(np.asarray(user, np.int64)), torch.from_numpy(np.asarray(item, np.int64))
    order = torch.randperm(len(users), generator=generator)
    users, items = users[order], items[order]
    negs = sample_negatives(users, n_items, keys, generator)
    users, items, negs = (t.to(device, non_blocking=True) for t in (users, items, negs))
    for start in range(0, len(users), batch_size):
        end = start + batch_size
        yield users[start:end], items[start:end], negs[start:end]


def sasrec_windows(indptr: np.ndarray, items: np.ndarray, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each user's history into left-padded (input, next-item target) windows of `max_len`.

    Windows are taken from the newest end back, `max_len` targets apart, so every item after a user's first
    is a target exactly once per epoch (the all-prefixes augmentation without its L-fold cost).
    """
    seqs, targets = [], []
    for user in range(len(indptr) - 1):
        history = items[indptr[user]:indptr[user + 1]]
        for end in range(len(history), 1, -max_len):
            window = history[max(0, end - max_len - 1):end]
            pad = max_len + 1 - len(window)
            padded = np.concatenate([np.zeros(pad, np.int64), window])
            seqs.append(padded[:-1])
            targets.append(np.where(padded[:-1] > 0, padded[1:], 0))  # no target from empty context
    if not seqs:
        empty = torch.zeros((0, max_len), dtype=torch.long)
        return empty, empty.clone()
    return torch.from_numpy(np.stack(seqs)), torch.from_numpy(np.stack(targets))


def last_items(indptr: np.ndarray, items: np.ndarray, users: np.ndarray, max_len: int,
               extra: np.ndarray | None = None) -> torch.Tensor:
    """The newest `max_len` items of each user's history (plus an optional extra item), left-padded."""
    out = np.zeros((len(users), max_len), dtype=np.int64)
    for row, user in enumerate(users):
        history = items[indptr[user]:indptr[user + 1]]
        if extra is not None:
            history = np.append(history, extra[row])
        history = history[-max_len:]
        if len(history):
            out[row, max_len - len(history):] = history
    return torch.from_numpy(out)
