"""Opaque ids: one random token per entity or event, the same format for real and fake.

A detector must not be able to tell a planted account from a real one by its id (a fake `user_944` after
943 real users would give the game away), so every id is a seeded random token drawn in one shared space per
kind, whatever its origin and whenever it was created.

>>> import numpy as np
>>> minter = IdMinter(np.random.default_rng(0))
>>> ids = minter.mint("user", 3)
>>> len(set(ids)), [len(i) for i in ids], ids[0][:2]
(3, [14, 14, 14], 'u-')
"""

from __future__ import annotations

import numpy as np

PREFIXES = {"user": "u-", "item": "i-", "seller": "s-", "client": "c-", "event": "e-", "session": "x-"}
_TOKEN_SPACE = 1 << 48  # 12 hex digits: collisions are rare at millions of ids and rejected anyway


class IdMinter:
    """Draw unique tokens per kind from a seeded generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self._used: dict[str, set[int]] = {kind: set() for kind in PREFIXES}

    def mint(self, kind: str, n: int) -> list[str]:
        used, prefix = self._used[kind], PREFIXES[kind]
        tokens: list[int] = []
        while len(tokens) < n:
            for token in self.rng.integers(0, _TOKEN_SPACE, n - len(tokens)).tolist():
                if token not in used:
                    used.add(token)
                    tokens.append(token)
        return [f"{prefix}{token:012x}" for token in tokens]
