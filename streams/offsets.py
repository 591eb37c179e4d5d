"""Where the input partitions end, as the consumer last fetched them: the guard's and the actor workers'
question "is there more on the broker than delivered so far?" (the event-time aligner waits for such a
partition; an idle tick does not come while one lags)."""

from __future__ import annotations

import time
from typing import Any

TP = tuple[str, int]


def faust_tp(tp: TP) -> Any:
    from faust.types import TP as FaustTP

    return FaustTP(tp[0], tp[1])


class Highwaters:
    def __init__(self) -> None:
        self._seen: dict[TP, tuple[float, int | None]] = {}  # tp -> (when asked, high watermark)

    def get(self, app: Any, tp: TP, max_age: float = 0.05) -> int | None:
        """The partition's high watermark, asked of the consumer again after `max_age` seconds (the aligner
        asks per message); None when not assigned (any more), not fetched yet, or no consumer."""
        now = time.monotonic()
        cached = self._seen.get(tp)
        if cached is None or now - cached[0] >= max_age:
            try:
                highwater = app.consumer.highwater(faust_tp(tp))
            except Exception:  # noqa: BLE001 - not assigned (any more), not started
                highwater = None
            cached = self._seen[tp] = (now, highwater)
        return cached[1]
