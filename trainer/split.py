"""Leave-one-out by time: each user's newest event is the test item, the one before it validation.

The protocol of SASRec (Kang & McAuley 2018) and of RecBole's `LS: valid_and_test` with `order: TO`.
Ties in time are broken by arrival order, so the split is a pure function of the log.

>>> from trainer.log import InteractionLog
>>> log = InteractionLog()
>>> _ = log.add([{"type": "click", "event_id": str(i), "ts": i, "user_id": "u", "item_id": str(i)}
...              for i in range(4)])
>>> train, valid, test = leave_one_out(log)
>>> train.tolist(), log.item[valid].tolist(), log.item[test].tolist()
([True, True, False, False], [3], [4])
"""

from __future__ import annotations

import numpy as np

from trainer.log import InteractionLog


def leave_one_out(log: InteractionLog, min_history: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train mask, validation rows, test rows) over active rows; users with < `min_history` only train."""
    indptr, _, rows = log.sequences(log.active)
    lengths = np.diff(indptr)
    users = np.flatnonzero(lengths >= min_history)
    test = rows[indptr[users + 1] - 1]
    valid = rows[indptr[users + 1] - 2]
    train = log.active.copy()
    train[test] = False
    train[valid] = False
    return train, valid, test
