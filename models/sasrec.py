"""SASRec: a causal self-attention encoder over a user's item sequence predicts the next item.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018; trained here with full softmax
cross-entropy over the catalogue at every position of a sequence (sequence-to-sequence), which Klenitskiy &
Vasilev ("Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023) show lifts
SASRec above BERT4Rec. Pre-LayerNorm blocks, learned positions, item embeddings tied to the output layer.
Sequences are left-padded with item 0 so that the newest item is always in the last position.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> model = SASRec(n_items=6, dim=8, max_len=4, n_layers=1, n_heads=2)
>>> seq = torch.tensor([[0, 1, 2, 3], [0, 0, 4, 5]])
>>> model.loss(seq, torch.tensor([[0, 2, 3, 4], [0, 0, 5, 1]]), n_items=6).shape
torch.Size([])
>>> model.score_sequences(seq, n_items=6).shape
torch.Size([2, 6])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.growable import GrowableEmbedding


class _Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.n_heads, dim // self.n_heads).unbind(2)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, length, dim)))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(nn.Module):
    """Parameters: `n_items` rows (row 0 = padding), `dim`, `max_len`, `n_layers`, `n_heads`, `dropout`."""

    kind = "sasrec"

    def __init__(self, n_items: int, dim: int = 64, max_len: int = 50, n_layers: int = 2,
                 n_heads: int = 2, dropout: float = 0.2, init_std: float = 0.02):
        super().__init__()
        self.dim, self.max_len, self.n_layers = dim, max_len, n_layers
        self.n_heads, self.dropout_p = n_heads, dropout
        self.items = GrowableEmbedding(max(n_items, 2), dim, init_std, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        nn.init.normal_(self.positions.weight, std=init_std)
        self.blocks = nn.ModuleList(_Block(dim, n_heads, dropout) for _ in range(n_layers))
        self.ln = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def config(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "max_len": self.max_len, "n_layers": self.n_layers,
                "n_heads": self.n_heads, "dropout": self.dropout_p}

    def grow(self, n_users: int, n_items: int, headroom: float = 1.0) -> bool:
        # No user table: a user is their sequence, so new users cost nothing.
        return self.items.grow(n_items, headroom)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position, (B, L, dim); position t sees items 0..t only."""
        length = seq.shape[1]
        pad = seq == 0
        x = self.items(seq) * math.sqrt(self.dim) + self.positions.weight[-length:]
        x = self.drop(x.masked_fill(pad.unsqueeze(-1), 0.0))
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        # A query may attend to earlier non-padding keys, and always to itself (so that padded rows,
        # which are never read, do not become all-masked NaNs).
        eye = torch.eye(length, dtype=torch.bool, device=seq.device)
        mask = (causal & ~pad.unsqueeze(1)) | eye
        mask = mask.unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)

    def logits(self, hidden: torch.Tensor, n_items: int) -> torch.Tensor:
        logits = hidden @ self.items.weight[:n_items].T
        logits[..., 0] = float("-inf")
        return logits

    def loss(self, seq: torch.Tensor, target: torch.Tensor, n_items: int) -> torch.Tensor:
        """Cross-entropy of the next item at every non-padding position."""
        keep = target > 0
        hidden = self.encode(seq)[keep]
        return F.cross_entropy(self.logits(hidden, n_items).float(), target[keep])

    forward = loss  # so torch.func.functional_call can swap tables (see trainer.unlearning)

    def item_embeddings(self, n_items: int) -> torch.Tensor:
        return self.items.weight[1:n_items]

    def score_sequences(self, seq: torch.Tensor, n_items: int) -> torch.Tensor:
        """Scores of every item as the next one after each (left-padded) sequence, (B, n_items)."""
        return self.logits(self.encode(seq)[:, -1], n_items)
