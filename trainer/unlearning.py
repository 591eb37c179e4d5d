"""Targeted unlearning: a retracted event stops influencing the served model by rebuilding the rows it touched.

Exact unlearning would retrain from scratch without the event (Bourtoule et al., "Machine Unlearning", IEEE
S&P 2021); recommendation-specific methods partition the data to make that cheaper (Chen et al.,
"Recommendation Unlearning", WWW 2022). For an embedding model most of an event's influence sits in its own
user and item rows, so we re-initialise the rows made mostly of retracted events (a pushed item, a fake
user), forget their Adam moments, and re-fit them on what remains in the clean log under the training objective itself (their positive terms, and their terms as
sampled negatives for other users, whose rows stay frozen). SASRec has no user rows: the event leaves the
user's input sequence at once, and the item rows it touched are rebuilt with the encoder frozen.
What influence remains is second order (other rows trained against the poisoned ones). The report measures
it as the exposure (summed top-10 share over up to 2,000 other users) of the items the retracted events were
mostly made of, before and after; tests and the protection benchmark compare it with a model retrained from
scratch without the events.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from trainer.batches import positive_keys, sample_negatives, sasrec_windows
from trainer.device import autocast
from trainer.metrics import exposure_shares
from trainer.optim import reset_rows


def unlearn(trainer, event_ids: Iterable[str], measure: bool = True) -> dict[str, Any]:
    """Retract events from the log and rebuild the rows they influenced; returns a report."""
    start = time.perf_counter()
    event_ids = [str(e) for e in event_ids]
    log = trainer.log
    candidate_rows = log.rows_of(event_ids)
    candidate_rows = candidate_rows[log.active[candidate_rows]] if len(candidate_rows) else candidate_rows
    users = np.unique(log.user[candidate_rows])
    items = np.unique(log.item[candidate_rows])
    learned = bool(len(candidate_rows)) and candidate_rows.min() < trainer.learned_rows
    # The items the retracted events were mostly made of (a pushed target) are where influence shows;
    # popular items the events merely touched (fillers) are reported apart.
    gone = np.bincount(log.item[candidate_rows], minlength=trainer.n_items)[items] if len(items) else items
    total = np.bincount(log.item[log.active], minlength=trainer.n_items)[items] if len(items) else items
    pushed = items[gone >= trainer.config.reset_share * np.maximum(total, 1)]
    others = np.setdiff1d(items, pushed)
    sample = _probe_users(trainer, exclude=users) if measure and learned else None
    before = {}
    if sample is not None:
        shares = _shares(trainer, sample)
        before = {"influence_before": float(shares[pushed].sum()),
                  "filler_exposure_before": float(shares[others].sum())}
    rows = log.retract(event_ids)
    report: dict[str, Any] = {"retracted": len(event_ids), "unlearned": int(len(rows)),
                              "pending": len(event_ids) - int(len(rows)),
                              "users_rebuilt": int(len(users)), "items_rebuilt": int(len(items)),
                              "items_mostly_retracted": int(len(pushed))}
    # Rows appended after the last training step never shaped the weights: deactivating them is enough.
    if len(rows) and rows.min() < trainer.learned_rows:
        if trainer.model.kind == "bpr":
            _rebuild_bpr(trainer, users, items, rows)
        else:
            _rebuild_sasrec(trainer, items, rows)
        if sample is not None:
            shares = _shares(trainer, sample)
            report.update(before, influence_after=float(shares[pushed].sum()),
                          filler_exposure_after=float(shares[others].sum()))
    report["seconds"] = time.perf_counter() - start
    return report


def _probe_users(trainer, exclude: np.ndarray, n: int = 2000) -> np.ndarray:
    users = np.setdiff1d(np.unique(trainer.log.user[trainer.log.active]), exclude)
    if len(users) > n:
        users = np.sort(np.random.default_rng(0).choice(users, n, replace=False))
    return users


def _shares(trainer, users: np.ndarray, k: int = 10) -> np.ndarray:
    return exposure_shares(trainer.recommend(users, k), trainer.n_items)


def influence(trainer, items: np.ndarray, users: np.ndarray, k: int = 10,
              model: nn.Module | None = None) -> float:
    """Mean number of `items` in the top-k lists of `users` (their exposure, summed over the items)."""
    if len(users) == 0 or len(items) == 0:
        return 0.0
    lists = trainer.recommend(users, k, model=model)
    return float(exposure_shares(lists, trainer.n_items)[items].sum())


def _row_params(weight: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, nn.Parameter]:
    index = torch.as_tensor(rows, dtype=torch.long, device=weight.device)
    return index, nn.Parameter(weight.detach()[index].clone())


def _forget(trainer, table, rows: np.ndarray, column: np.ndarray, retracted: np.ndarray) -> np.ndarray:
    """Re-initialise the rows mostly made of retracted events and return them (the ones to rebuild).

    A row whose retracted share is at least `reset_share` is mostly poison (a pushed item, a fake user): it
    restarts from scratch. A row the events merely touched (a popular filler item, a benign user with one
    retracted event) is left as it is: the events are already out of every later epoch and micro-batch,
    and rebuilding such a row in isolation over-trains it (measured: fillers then gain exposure).
    """
    active = np.bincount(column[trainer.log.active], minlength=table.num_embeddings)[rows]
    gone = np.bincount(column[retracted], minlength=table.num_embeddings)[rows]
    poisoned = rows[gone >= trainer.config.reset_share * (gone + active)]
    if len(poisoned):
        index = torch.as_tensor(poisoned, dtype=torch.long, device=table.weight.device)
        reset_rows(trainer.optimizer, table.weight, index)
        table.reset_rows(index)
    return poisoned


def _rebuild_bpr(trainer, users: np.ndarray, items: np.ndarray, retracted: np.ndarray) -> None:
    model, log, cfg = trainer.model, trainer.log, trainer.config
    users = _forget(trainer, model.users, users, log.user, retracted)
    items = _forget(trainer, model.items, items, log.item, retracted)
    train = trainer.split()[0]
    pool = np.flatnonzero(train)
    if len(pool) == 0 or (len(users) == 0 and len(items) == 0):
        return
    own = pool[np.isin(log.user[pool], users) | np.isin(log.item[pool], items)]
    keys = positive_keys(log.user[train], log.item[train], trainer.n_items)
    # The affected items' terms as sampled negatives: about len(pool) / n_items of them per item per epoch.
    n_neg = int(np.ceil(len(pool) / max(trainer.n_items - 1, 1))) * len(items)
    u_index, p_users = _row_params(model.users.weight, users)
    i_index, p_items = _row_params(model.items.weight, items)
    optimizer = torch.optim.Adam([p_users, p_items], lr=cfg.lr)
    base_users, base_items = model.users.weight.detach(), model.items.weight.detach()
    for _ in range(cfg.unlearn_epochs):
        u = torch.from_numpy(log.user[own])
        i = torch.from_numpy(log.item[own])
        j = sample_negatives(u, trainer.n_items, keys, trainer.generator)
        pick = pool[torch.randint(0, len(pool), (n_neg,), generator=trainer.generator).numpy()]
        u2, i2 = torch.from_numpy(log.user[pick]), torch.from_numpy(log.item[pick])
        j2 = torch.from_numpy(items)[torch.randint(0, max(len(items), 1), (n_neg,), generator=trainer.generator)]
        u, i, j = torch.cat([u, u2]), torch.cat([i, i2]), torch.cat([j, j2])
        order = torch.randperm(len(u), generator=trainer.generator)
        u, i, j = (t[order].to(trainer.device) for t in (u, i, j))
        for start in range(0, len(u), cfg.batch_size):
            end = start + cfg.batch_size
            tables = {"users.weight": base_users.index_copy(0, u_index, p_users),
                      "items.weight": base_items.index_copy(0, i_index, p_items)}
            with autocast(trainer.device):
                loss = functional_call(model, tables, (u[start:end], i[start:end], j[start:end]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        model.users.weight[u_index] = p_users.detach()
        model.items.weight[i_index] = p_items.detach()


def _rebuild_sasrec(trainer, items: np.ndarray, retracted: np.ndarray) -> None:
    model, log, cfg = trainer.model, trainer.log, trainer.config
    items = _forget(trainer, model.items, items, log.item, retracted)
    if len(items) == 0:
        return
    train = trainer.split()[0]
    indptr, seq_items, _ = log.sequences(train)
    seq, target = sasrec_windows(indptr, seq_items, cfg.max_len)
    if len(seq) == 0:
        return
    affected = torch.from_numpy(items)
    touches = torch.isin(seq, affected).any(1) | torch.isin(target, affected).any(1)
    # The rows' terms as softmax negatives come from every window; a random sample of as many stands in.
    others = torch.randint(0, len(seq), (int(touches.sum()) + 1,), generator=trainer.generator)
    pick = torch.cat([torch.nonzero(touches).flatten(), others])
    seq, target = seq[pick].to(trainer.device), target[pick].to(trainer.device)
    i_index, p_items = _row_params(model.items.weight, items)
    optimizer = torch.optim.Adam([p_items], lr=cfg.lr)
    frozen = {name: p.detach() for name, p in model.named_parameters()}
    was_training = model.training
    model.eval()  # no dropout: the encoder is fixed, only the rows move
    for _ in range(cfg.unlearn_epochs):
        order = torch.randperm(len(seq), generator=trainer.generator).to(trainer.device)
        for start in range(0, len(seq), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            tables = dict(frozen, **{"items.weight": frozen["items.weight"].index_copy(0, i_index, p_items)})
            with autocast(trainer.device):
                loss = functional_call(model, tables, (seq[batch], target[batch]),
                                       {"n_items": trainer.n_items})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.train(was_training)
    with torch.no_grad():
        model.items.weight[i_index] = p_items.detach()
