"""GRO: train the served model so that its top-k lists mislead whoever distils a copy from them.

Zhang, Yin, Chen & Long, "Defense Against Model Extraction Attacks on Recommender Systems", WSDM 2024
(arXiv 2310.16335), written here from the paper. An attacker copies a recommender by training a surrogate
on its top-k answers. GRO trains, beside the target, a *student* that imitates that attacker (it learns the
target's current top-k lists with the attacker's list-wise loss), and asks which change of the lists would
hurt the student most. A top-k list is a swap matrix A (k x m, A[j, i] = 1 when item i sits at position j);
the student's scores s enter its loss only through A s, so dL/dA[j, i] = (dL/d(As)_j) s_i: the first-order
change of the student's loss if item i took position j. The best swaps form A', and a *swap loss* teaches
the target to rank as A' does, weighted by `lambda` against its own recommendation loss.

Two choices of ours, both to keep the target's utility and the cost small:
- A is never built: the list is a row of k indices, A s is `s.gather(1, list)`, and the gradient is taken
  only for a pool of candidates, the target's own ranks k+1..`candidates` (a (B, k, c) gather instead of a
  dense (B, k, m) matrix). Swapping in items the target itself ranks just below the cut costs it little.
- A' takes, greedily, the (position, candidate) pairs of largest positive gain, each candidate and position
  once, at most `max_swaps` per list; the swap loss is the logistic loss of each swapped-in item's target
  score over the score of the item it displaces.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> student_scores = torch.randn(2, 30)
>>> lists, pool = torch.arange(1, 11).repeat(2, 1), torch.arange(11, 21).repeat(2, 1)
>>> positions, incoming = swap_targets(student_scores, lists, pool, max_swaps=3)
>>> positions.shape, incoming.shape, bool((positions >= 0).any())
(torch.Size([2, 3]), torch.Size([2, 3]), True)
>>> loss = swap_loss(torch.randn(2, 30, requires_grad=True), lists, positions, incoming)
>>> loss.requires_grad
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def position_weights(k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """DCG-style weights of the k positions of a list, summing to 1: the head of a list says most."""
    w = 1.0 / torch.log2(torch.arange(k, device=device, dtype=torch.float32) + 2.0)
    return w / w.sum()


def listwise_loss(scores: torch.Tensor, lists: torch.Tensor, gathered: torch.Tensor | None = None) -> torch.Tensor:
    """The attacker's list-wise distillation loss: position-weighted softmax cross-entropy of each listed
    item under `scores` (B, m); `lists` (B, k) item rows, 0 = empty slot. `gathered` replaces
    `scores.gather(1, lists)` (the A s of the paper) so that its gradient can be taken."""
    k = lists.shape[1]
    scores = scores.float().clamp_min(-1e4)  # excluded items are -inf; an empty slot's weight is 0
    a = (scores.gather(1, lists) if gathered is None else gathered).float().clamp_min(-1e4)
    log_z = torch.logsumexp(scores, dim=1, keepdim=True)
    weights = position_weights(k, scores.device) * (lists > 0)
    per_row = -((a.float() - log_z) * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
    return per_row.mean()


@torch.no_grad()
def _greedy_pairs(gain: torch.Tensor, max_swaps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, up to `max_swaps` (position, candidate) pairs of largest positive gain, each position and
    each candidate used once; -1 where fewer are worth it. `gain` is (B, k, c)."""
    b, k, c = gain.shape
    gain = gain.clone()
    positions = torch.full((b, max_swaps), -1, dtype=torch.long, device=gain.device)
    candidates = torch.full_like(positions, -1)
    rows = torch.arange(b, device=gain.device)
    for step in range(min(max_swaps, k, c)):
        best, flat = gain.view(b, -1).max(1)
        ok = best > 0
        j, t = flat // c, flat % c
        positions[ok, step], candidates[ok, step] = j[ok], t[ok]
        gain[rows, j, :] = -math.inf  # the position is taken
        gain[rows, :, t] = -math.inf  # and so is the candidate
    return positions, candidates


def swap_targets(student_scores: torch.Tensor, lists: torch.Tensor, pool: torch.Tensor,
                 max_swaps: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A' as (positions (B, s), incoming item rows (B, s)), -1 where no swap: the swaps that raise the
    student's list-wise loss most, to first order, from the gradient of that loss with respect to A."""
    s = student_scores.detach().float()
    gathered = s.gather(1, lists).requires_grad_(True)
    with torch.enable_grad():
        loss = listwise_loss(s, lists, gathered)
        (grad,) = torch.autograd.grad(loss, gathered)  # dL/d(As), (B, k)
    # dL/dA[j, i] = grad_j * s_i; the change of swapping position j's item for candidate i is
    # grad_j * (s_i - s_current_j): a (B, k, c) gather, never the (B, k, m) matrix.
    gain = grad.unsqueeze(2) * (s.gather(1, pool).unsqueeze(1) - s.gather(1, lists).unsqueeze(2))
    gain = gain.masked_fill((pool <= 0).unsqueeze(1) | (lists <= 0).unsqueeze(2), -math.inf)
    positions, picked = _greedy_pairs(gain, max_swaps)
    incoming = torch.where(picked >= 0, pool.gather(1, picked.clamp_min(0)), torch.full_like(picked, -1))
    return positions, incoming


def swap_loss(target_scores: torch.Tensor, lists: torch.Tensor, positions: torch.Tensor,
              incoming: torch.Tensor) -> torch.Tensor:
    """Logistic loss of each swapped-in item's target score over the displaced item's, averaged over the
    swaps (zero, with a gradient path, when there are none)."""
    valid = positions >= 0
    if not bool(valid.any()):
        return target_scores.sum() * 0.0
    outgoing = lists.gather(1, positions.clamp_min(0))
    r = target_scores.float()
    margin = r.gather(1, outgoing) - r.gather(1, incoming.clamp_min(0))
    return F.softplus(margin)[valid].mean()


def ranked(scores: torch.Tensor, k: int, candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The served top-k lists and the candidate pool (ranks k+1..`candidates`) of `scores` (B, m), whose
    excluded items are already -inf; pool slots that fall on -inf are 0."""
    depth = min(candidates, scores.shape[1] - 1)
    values, order = scores.detach().topk(depth, dim=1)
    order = torch.where(torch.isfinite(values), order, torch.zeros_like(order))
    return order[:, :k], order[:, k:]
