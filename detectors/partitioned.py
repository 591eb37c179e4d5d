"""The decision stage split by actor partition: the state a partitioned worker owns, and the proof that the
split decides what one stage decides.

A `DecisionStage` holds events, fuses signals into entity risk and releases, quarantines or retracts. Every
part of that state is keyed by an entity (risk, flags, released and condemned events, analysts' history) or
by an event whose actor is an entity, and an event's fate depends only on its own actor's flag and on signals
naming it. So one stage per partition of actors (the partition of the actor's key on the input topics) decides
exactly what one global stage decides, provided each signal reaches the stage that owns its entity (the
partition of the entity's id, for items too) and the events a passing signal names reach the stages that hold
them. Such implications cross partitions (a crowd detector names other users' events on an item it flags): the
owning stage hands them out as `foreign` implications, applied before any stage releases.

One difference in time, not in kind: each stage forgets state past the retraction horizon when it releases
something, so what a year-old entity's stage forgets can fall at another decision point than in one stage.
What does not partition: a learning fusion's weights and its calibrated flag threshold are global (they learn
from analysts' labels over the whole population); here every partition's stage is built by one factory, and
`control` records that train the fusion are not routed (`PartitionedDecision` serves the detection path).

Parameters: `stages`, partition -> its `DecisionStage` (a worker holds only the partitions assigned to it; a
test holds them all); `partitions`, the partition count; `partition_of(key, partitions)`, which partition an
entity id falls in (the input topics' partitioner on the actor key; `crc32_partition` by default).

>>> from detectors.base import Signal
>>> from detectors.events import RatingEvent
>>> split = PartitionedDecision.build(4, lambda: DecisionStage(hold_seconds=60))
>>> split.admit(RatingEvent(event_id="a", ts=0.0, user_id="u1", item_id="i", rating=5),
...             RatingEvent(event_id="b", ts=0.0, user_id="u2", item_id="i", rating=5))
>>> flags, _ = split.apply([Signal("item", "i", "crowd", 0.9, event_ids=("b",))])
>>> sorted((o.event.event_id, o.verdict) for o in split.release(60.0))
[('a', 'clean'), ('b', 'quarantined')]
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterable

from detectors.base import Signal
from detectors.decision import DecisionStage, Flag, Outcome
from detectors.events import ACTOR_FIELD, Event


def crc32_partition(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


class PartitionedDecision:
    """Decision stages by actor partition, used as one `DecisionStage` on the detection path (`admit`,
    `apply`, `release`, `flush`, `held_count`, `is_flagged`, `flags`, `unflag`, `confirm`)."""

    def __init__(self, stages: dict[int, DecisionStage], partitions: int,
                 partition_of: Callable[[str, int], int] = crc32_partition):
        self.stages = stages
        self.partitions = partitions
        self.partition_of = partition_of

    @classmethod
    def build(cls, partitions: int, make_stage: Callable[[], DecisionStage],
              partition_of: Callable[[str, int], int] = crc32_partition) -> "PartitionedDecision":
        """Every partition's stage, in one process."""
        return cls({p: make_stage() for p in range(partitions)}, partitions, partition_of)

    def stage_of(self, entity_id: str) -> DecisionStage | None:
        """The stage owning the entity, None where another worker holds its partition."""
        return self.stages.get(self.partition_of(entity_id, self.partitions))

    def admit(self, *events: Event) -> None:
        for event in events:
            stage = self.stage_of(getattr(event, ACTOR_FIELD[type(event)][1]))
            if stage is None:
                raise ValueError(f"event {event.event_id}: its actor's partition is not held here")
            stage.admit(event)

    def apply(self, signals: Iterable[Signal], now: float = 0.0) -> tuple[list[Flag], list[Outcome]]:
        """Each signal at its entity's stage (signals of one stage in their order), then the implications
        they pass to events other stages hold. Signals of partitions not held here are skipped, and so are
        implications no held stage knows: a worker holding some partitions would have to forward them to the
        partition's owner (not built: no detector names events today)."""
        by_stage: dict[int, list[Signal]] = {}
        for signal in signals:
            by_stage.setdefault(self.partition_of(signal.id, self.partitions), []).append(signal)
        flags: list[Flag] = []
        retracted: list[Outcome] = []
        foreign: list[tuple[str, str]] = []
        for partition, owned in by_stage.items():
            stage = self.stages.get(partition)
            if stage is None:
                continue  # another worker's: it applies them
            raised, taken = stage.apply(owned, now, foreign)
            flags.extend(raised)
            retracted.extend(taken)
        for event_id, reason in foreign:
            for stage in self.stages.values():
                if stage.implicate(event_id, reason, retracted):
                    break
        return flags, retracted

    def release(self, watermark: float) -> list[Outcome]:
        return [outcome for stage in self.stages.values() for outcome in stage.release(watermark)]

    def flush(self) -> list[Outcome]:
        return [outcome for stage in self.stages.values() for outcome in stage.flush()]

    @property
    def held_count(self) -> int:
        return sum(stage.held_count for stage in self.stages.values())

    def is_flagged(self, kind: str, entity_id: str) -> bool:
        stage = self.stage_of(entity_id)
        return stage is not None and stage.is_flagged(kind, entity_id)

    def flags(self) -> list[Flag]:
        return [flag for stage in self.stages.values() for flag in stage.flags()]

    def unflag(self, kind: str, entity_id: str, **decision: str | float) -> tuple[Flag | None, list[Outcome]]:
        stage = self.stage_of(entity_id)
        return stage.unflag(kind, entity_id, **decision) if stage is not None else (None, [])  # type: ignore[arg-type]

    def confirm(self, kind: str, entity_id: str, **decision: str | float) -> Flag | None:
        stage = self.stage_of(entity_id)
        return stage.confirm(kind, entity_id, **decision) if stage is not None else None  # type: ignore[arg-type]
