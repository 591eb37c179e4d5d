"""Event-time alignment across input partitions, before the pipeline sees a message.

The pipeline's watermark is the largest event time it has seen. A consumer reading sixteen partitions does
not read them in step: a small topic (catalog edits) can be read to its end while a big one (ratings) lags
far behind, and the watermark would race ahead; the lagging events would then look late (released without
a hold) and old accounts' ages would be misjudged. So messages wait here, per partition and in offset
order, and leave in event-time order up to the least event time any lagging partition has reached: the
next message of a partition with more data on the broker can be no older than what it last delivered (as
Kafka Streams does it with its stream time and `max.task.idle.ms`). A partition that is caught up does not
hold anything back. Everything queued leaves anyway once no input at all has arrived for `max_wait`
seconds (a stalled fetch, a stale high watermark) or `max_queued` messages wait, so nothing can stall the
stream or fill memory. Input still arriving from other partitions is no reason to give up: a restarted
worker with a backlog gets whole fetches of some partitions before the first of others, and, under load,
that took longer than any fixed wait (the watermark then jumped days ahead and a burst was missed).

>>> aligner = EventTimeAligner(max_wait=5.0)
>>> aligner.add(("ratings", 0), 0, 10.0, "r10")
>>> aligner.add(("ratings", 0), 1, 30.0, "r30")
>>> aligner.add(("catalog", 0), 0, 20.0, "c20")
>>> aligner.release(lagging=lambda tp: tp == ("catalog", 0), now=0.0)   # catalog may still send ts >= 20
['r10', 'c20']
>>> aligner.release(lagging=lambda tp: False, now=0.1)
['r30']
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from typing import Any, Callable, Hashable, Iterable

import orjson

NO_TIME = float("-inf")
log = logging.getLogger(__name__)


def event_time(value: bytes) -> float:
    """The `ts` of a JSON event, or -inf where there is none (the pipeline will reject the line)."""
    try:
        ts = orjson.loads(value).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return NO_TIME
    return float(ts) if type(ts) in (int, float) else NO_TIME


class EventTimeAligner:
    def __init__(self, max_wait: float = 1.0, max_queued: int = 100_000):
        self.max_wait = max_wait
        self.max_queued = max_queued
        self._queues: dict[Hashable, deque[tuple[float, int, Any]]] = {}
        self._frontier: dict[Hashable, float] = {}  # largest event time delivered per partition
        self.last_offset: dict[Hashable, int] = {}  # largest offset delivered per partition
        self._waiting_since: float | None = None
        self._size = 0
        self.forced = 0  # releases that gave up waiting for a lagging partition

    def __len__(self) -> int:
        return self._size

    def add(self, tp: Hashable, offset: int, ts: float, item: Any) -> None:
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = deque()
        queue.append((ts, offset, item))
        if ts > self._frontier.get(tp, NO_TIME):
            self._frontier[tp] = ts
        if offset > self.last_offset.get(tp, -1):
            self.last_offset[tp] = offset
        self._size += 1
        self._waiting_since = None  # the stream moves: the wait for a lagging partition starts again

    def release(self, lagging: Callable[[Hashable], bool], now: float, force: bool = False) -> list[Any]:
        """Items that can go, in event-time order (ties: in partition order)."""
        if not self._size:
            self._waiting_since = None
            return []
        bound = float("inf")
        if not force and self._size > self.max_queued:
            force = self._give_up(f"{self._size} messages wait", lagging)
        if not force:
            for tp in self._lagging_partitions(lagging):
                bound = min(bound, self._frontier.get(tp, NO_TIME))
        runs = []
        for tp, queue in self._queues.items():
            run = []
            while queue and queue[0][0] <= bound:
                ts, offset, item = queue.popleft()
                run.append((ts, tp, offset, item))
            if run:
                runs.append(run)
        if not runs:
            if self._waiting_since is None:
                self._waiting_since = now
            elif now - self._waiting_since >= self.max_wait:
                force = self._give_up(f"no input for {now - self._waiting_since:.1f} s", lagging)
                self._waiting_since = None
                return self.release(lagging, now, force=force)
            return []
        self._waiting_since = None if not self._size else now
        # Ties in event time go in partition order, not in the order partitions happened to be fetched: a
        # restarted worker then hands the pipeline the very sequence the first run did.
        out = [entry[3] for entry in heapq.merge(*runs, key=lambda entry: (entry[0], entry[1]))]
        self._size -= len(out)
        if not self._size:
            self._waiting_since = None
        return out

    def _give_up(self, why: str, lagging: Callable[[Hashable], bool]) -> bool:
        self.forced += 1
        log.warning("%s: released out of event-time order, not waiting for %s", why,
                    self._lagging_partitions(lagging))
        return True

    def _lagging_partitions(self, lagging: Callable[[Hashable], bool]) -> list[Hashable]:
        return [tp for tp in self._frontier if lagging(tp)]

    def track(self, partitions: Iterable[Hashable]) -> None:
        """Partitions assigned but not heard from yet: while they lag, nothing passes them."""
        for tp in partitions:
            self._frontier.setdefault(tp, NO_TIME)
