"""Embedding tables that grow as new users and items arrive, and the id maps behind them.

A stream keeps introducing users and items; rebuilding the model for each would throw away what was learned.
`GrowableEmbedding` keeps the learned rows and appends freshly initialised ones; with `headroom` it reserves
capacity geometrically so that growth (a copy of the table) is amortised O(1) per new id. `IdIndex` maps opaque string ids to dense rows.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> emb = GrowableEmbedding(2, 4)
>>> before = emb.weight.detach().clone()
>>> emb.grow(5)
True
>>> emb.grow(4)
False
>>> emb.num_embeddings, bool(torch.equal(emb.weight[:2].detach(), before))
(5, True)
>>> ids = IdIndex(first=1)
>>> ids.add("u9"), ids.add("u3"), ids.add("u9"), len(ids)
(1, 2, 1, 2)
"""

from __future__ import annotations

import torch
from torch import nn


class GrowableEmbedding(nn.Module):
    """An embedding table whose row count can only increase; existing rows are kept bit for bit.

    Parameters: `num_embeddings` rows of `dim` columns, initialised N(0, `init_std`); `padding_idx` (if any)
    stays zero. The parameter object is replaced on growth, so optimisers must be told (see
    `trainer.optim.migrate_adam`).
    """

    def __init__(self, num_embeddings: int, dim: int, init_std: float = 0.1,
                 padding_idx: int | None = None):
        super().__init__()
        self.dim, self.init_std, self.padding_idx = dim, init_std, padding_idx
        self.weight = nn.Parameter(self._fresh(num_embeddings, torch.device("cpu"), torch.float32))

    @property
    def num_embeddings(self) -> int:
        return self.weight.shape[0]

    def _fresh(self, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        rows = torch.randn(n, self.dim, device=device, dtype=dtype) * self.init_std
        if self.padding_idx is not None and self.padding_idx < n:
            rows[self.padding_idx] = 0
        return rows

    def grow(self, n: int, headroom: float = 1.0) -> bool:
        """Make room for at least `n` rows (`headroom` > 1 reserves more); True if the parameter changed.

        Rows past the ids in use are initialised but never scored: callers slice `weight[:n_in_use]`.
        """
        old = self.weight
        if n <= old.shape[0]:
            return False
        n = max(n, int(old.shape[0] * headroom))
        fresh = self._fresh(n - old.shape[0], old.device, old.dtype)
        if self.padding_idx is not None and self.padding_idx >= old.shape[0]:
            fresh[self.padding_idx - old.shape[0]] = 0
        self.weight = nn.Parameter(torch.cat([old.detach(), fresh]), requires_grad=old.requires_grad)
        return True

    def reset_rows(self, rows: torch.Tensor) -> None:
        """Re-initialise `rows` (used to forget a retracted entity before rebuilding it)."""
        with torch.no_grad():
            self.weight[rows] = self._fresh(len(rows), self.weight.device, self.weight.dtype)
            if self.padding_idx is not None:
                self.weight[self.padding_idx] = 0

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.weight[index]


class IdIndex:
    """Opaque string id <-> dense row, in order of first appearance; rows start at `first`."""

    def __init__(self, first: int = 0):
        self.first = first
        self.ids: list[str] = []
        self._row: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, key: str) -> bool:
        return key in self._row

    @property
    def size(self) -> int:
        """Rows a table needs to hold every id (reserved rows included)."""
        return self.first + len(self.ids)

    def add(self, key: str) -> int:
        row = self._row.get(key)
        if row is None:
            row = self._row[key] = self.first + len(self.ids)
            self.ids.append(key)
        return row

    def get(self, key: str, default: int = -1) -> int:
        return self._row.get(key, default)

    def id_of(self, row: int) -> str:
        return self.ids[row - self.first]

    @classmethod
    def from_ids(cls, ids: list[str], first: int = 0) -> "IdIndex":
        index = cls(first)
        for key in ids:
            index.add(key)
        return index
