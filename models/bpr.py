"""BPR matrix factorisation: a user vector dotted with an item vector, trained to rank seen over unseen.

Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009. The loss is
-log sigmoid(s(u, i) - s(u, j)) for an interacted item i and a sampled item j, plus an L2 penalty on the
rows the batch touches. Item row 0 is padding (shared with SASRec's convention) and never scored.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> model = BPRMF(n_users=3, n_items=5, dim=8)
>>> loss = model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 4]))
>>> loss.shape, model.score_users(torch.tensor([0, 2]), n_items=5).shape
(torch.Size([]), torch.Size([2, 5]))
>>> _ = model.grow(n_users=10, n_items=7); model.users.num_embeddings, model.items.num_embeddings
(10, 7)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.growable import GrowableEmbedding


class BPRMF(nn.Module):
    """Parameters: table sizes (item rows include padding row 0), `dim`, `reg` (L2 on touched rows)."""

    kind = "bpr"

    def __init__(self, n_users: int, n_items: int, dim: int = 64, reg: float = 0.0,
                 init_std: float = 0.1):
        super().__init__()
        self.dim, self.reg = dim, reg
        self.users = GrowableEmbedding(max(n_users, 1), dim, init_std)
        self.items = GrowableEmbedding(max(n_items, 2), dim, init_std, padding_idx=0)

    def config(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "reg": self.reg}

    def grow(self, n_users: int, n_items: int, headroom: float = 1.0) -> bool:
        grew_u = self.users.grow(n_users, headroom)
        grew_i = self.items.grow(n_items, headroom)
        return grew_u or grew_i

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u, i, j = self.users(users), self.items(pos), self.items(neg)
        diff = (u * (i - j)).sum(-1)
        loss = -F.logsigmoid(diff).mean()
        if self.reg:
            loss = loss + self.reg * (u.square().sum() + i.square().sum() + j.square().sum()) / len(users)
        return loss

    forward = loss  # so torch.func.functional_call can swap tables (see trainer.unlearning)

    def item_embeddings(self, n_items: int) -> torch.Tensor:
        return self.items.weight[1:n_items]

    def score_users(self, users: torch.Tensor, n_items: int) -> torch.Tensor:
        """Scores of every item for each user, (B, n_items); column 0 (padding) is -inf."""
        scores = self.users(users) @ self.items.weight[:n_items].T
        scores[:, 0] = float("-inf")
        return scores
