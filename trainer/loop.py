"""The one loop behind `shillguard train` (a file) and `shillguard trainer` (Kafka).

For each batch from a source: unlearn its retractions, ingest its clean events, and, when streaming, take a
micro-batch step. A version is proposed (checkpoint + gates + promotion) on a schedule when streaming, and
once after `epochs` full epochs when the source is a file that has ended. Offsets are saved only with a
checkpoint, so a crash between two proposals re-reads (and dedupes) the events since the last one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from trainer.incremental import Trainer
from trainer.promotion import Promoter
from trainer.sources import Source


@dataclass
class Schedule:
    """Propose when `every_events` new events have been learned or `every_seconds` have passed (if any)."""

    every_events: int = 50_000
    every_seconds: float = 600.0
    _events: int = 0
    _last: float = field(default_factory=time.monotonic)

    def due(self, new_events: int) -> bool:
        self._events += new_events
        if self._events and (self._events >= self.every_events
                             or time.monotonic() - self._last >= self.every_seconds):
            self._events, self._last = 0, time.monotonic()
            return True
        return False


def run(trainer: Trainer, source: Source, promoter: Promoter, *, streaming: bool,
        epochs: int | None = None, schedule: Schedule | None = None, flagged: set[str] | None = None,
        stop: Callable[[], bool] | None = None, echo: Callable[[str], None] = lambda _: None,
        offsets: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Drive `trainer` from `source`; returns the proposals made (each with its gate results)."""
    schedule = schedule or Schedule()
    offsets = dict(offsets or {})
    flagged = flagged if flagged is not None else set()
    proposals: list[dict[str, Any]] = []
    learned = unlearned = 0
    for batch in source.batches():
        if batch.retractions:
            report = trainer.retract([r["event_id"] for r in batch.retractions])
            unlearned += report["unlearned"]
            if report["unlearned"]:
                echo(f"unlearned {report['unlearned']} events ({report['pending']} not seen yet) "
                     f"in {report['seconds']:.2f}s; affected-item exposure "
                     f"{report.get('influence_before', 0):.4f} -> {report.get('influence_after', 0):.4f}")
        if batch.restored:  # an analyst released the entity: its retracted events are learned again
            restored = trainer.restore([r["event_id"] for r in batch.restored])
            if len(restored):
                echo(f"restored {len(restored)} events an analyst released")
                if streaming:
                    trainer.fit_increment(restored)
        rows = trainer.ingest(batch.events)
        learned += len(rows)
        flagged.update(batch.flagged_items)
        if batch.released_items:
            flagged.difference_update(batch.released_items)
            promoter.clear(batch.released_items)
        offsets.update(batch.offsets)
        if streaming:
            if len(rows):
                trainer.fit_increment(rows)
            if schedule.due(len(rows) + len(batch.retractions)):
                proposals.append(_propose(trainer, promoter, offsets, source, echo))
        if stop is not None and stop():
            break
    if not streaming:
        if learned or unlearned or promoter.store.latest() is None:
            stats = trainer.fit(epochs)
            echo(f"trained {stats['epochs']} epochs, {stats['samples_per_second']:,.0f} samples/s")
            proposals.append(_propose(trainer, promoter, offsets, source, echo,
                                      {"train": {k: v for k, v in stats.items()}}))
        else:
            echo("no new events since the last checkpoint; nothing to do")
    elif learned or unlearned:
        proposals.append(_propose(trainer, promoter, offsets, source, echo))  # on shutdown
    return proposals


def _propose(trainer: Trainer, promoter: Promoter, offsets: dict[str, Any], source: Source,
             echo: Callable[[str], None], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    result = promoter.propose(trainer, offsets, meta)
    source.commit({k: v for k, v in offsets.items() if not k.startswith("file:")})
    verdict = "promoted" if result["promoted"] else "BLOCKED by " + ", ".join(
        g["gate"] for g in result["gates"] if not g["passed"])
    m = result["metrics"]
    echo(f"{result['version']}: {verdict} (HR@10 {m['hr@10']:.4f}, NDCG@10 {m['ndcg@10']:.4f}, "
         f"uniformity {m['uniformity']:.3f}, {trainer.log.n_active} events)")
    return result
