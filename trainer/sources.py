"""Where the trainer's events come from: a file or Kafka, behind one small interface.

A source yields `Batch`es: clean events, retractions (`{"event_id", "event", "reasons"}`), item ids flagged
as attack targets, and the offsets reached after the batch. The trainer checkpoints those offsets with its
weights and hands them back on restart, so nothing is lost; the log's event-id dedupe makes a redelivered
event harmless, so nothing is counted twice.

>>> import tempfile, os
>>> d = tempfile.mkdtemp(); path = os.path.join(d, "clean.jsonl")
>>> _ = open(path, "w").write('{"type": "click", "event_id": "e1", "ts": 1, "user_id": "u", "item_id": "i"}\\n' * 3)
>>> batches = list(FileSource(path, batch_size=2).batches())
>>> [len(b.events) for b in batches], list(batches[-1].offsets.values())
([2, 1], [3])
"""

from __future__ import annotations

import abc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from detectors.events import Rejection, decode_event


@dataclass
class Batch:
    events: list[Any] = field(default_factory=list)
    retractions: list[dict[str, Any]] = field(default_factory=list)
    restored: list[dict[str, Any]] = field(default_factory=list)  # retractions an analyst's release undid
    flagged_items: list[str] = field(default_factory=list)
    released_items: list[str] = field(default_factory=list)  # flags an analyst released (cleared)
    offsets: dict[str, int] = field(default_factory=dict)
    rejected: int = 0


class Source(abc.ABC):
    """Yield batches from `offsets` on (a mapping saved by an earlier run; missing keys: from the start)."""

    @abc.abstractmethod
    def batches(self) -> Iterator[Batch]:
        """Batches in order; a finite source ends, a streaming one yields empty batches while idle."""

    def commit(self, offsets: dict[str, int]) -> None:
        """Acknowledge offsets that are safely checkpointed (a no-op where the checkpoint is the truth)."""


def parse_retraction(raw: bytes | str | dict) -> dict[str, Any] | None:
    """A retraction record, or None if it names no event. A `"verdict": "restored"` record (on the same
    topic: an analyst released the entity whose flag retracted the event) comes back with "restored": True."""
    try:
        record = raw if isinstance(raw, dict) else orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    event = record.get("event") if isinstance(record.get("event"), dict) else {}
    event_id = record.get("event_id", event.get("event_id"))
    if event_id is None:
        return None
    parsed = {"event_id": str(event_id), "event": event, "reasons": record.get("reasons", [])}
    if record.get("verdict") == "restored":
        parsed["restored"] = True
    return parsed


def add_retraction(batch: "Batch", raw: bytes | str | dict) -> None:
    """Sort a record of the retracted topic into the batch: a retraction or a restoration."""
    record = parse_retraction(raw)
    if record is not None:
        (batch.restored if record.get("restored") else batch.retractions).append(record)


def _item_flag(raw: bytes | str | dict) -> dict[str, Any] | None:
    try:
        record = raw if isinstance(raw, dict) else orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(record, dict) and record.get("kind") == "item" and record.get("id") is not None:
        return record
    return None


def flagged_item_ids(raw: bytes | str | dict) -> list[str]:
    """Item ids in a flag record (`{"kind": "item", "id": ...}`, as `detectors.decision.Flag.as_dict`); a
    record of a released flag (`"status": "released"`) flags nothing."""
    record = _item_flag(raw)
    return [str(record["id"])] if record is not None and record.get("status") != "released" else []


def released_item_ids(raw: bytes | str | dict) -> list[str]:
    """Item ids whose flag an analyst released (`{"kind": "item", "id": ..., "status": "released"}`): a
    target cleared, whose exposure may grow again."""
    record = _item_flag(raw)
    return [str(record["id"])] if record is not None and record.get("status") == "released" else []


class FileSource(Source):
    """Lines of a clean events file, then of a retractions file; offsets are line counts, keyed by name."""

    def __init__(self, events: str | os.PathLike, retractions: str | os.PathLike | None = None,
                 offsets: dict[str, int] | None = None, batch_size: int = 20_000):
        self.events, self.retractions = Path(events), Path(retractions) if retractions else None
        self.offsets = dict(offsets or {})
        self.batch_size = batch_size

    @staticmethod
    def key(path: Path) -> str:
        # The resolved path: another file of the same name must not inherit this one's offset.
        return f"file:{path.resolve()}"

    def batches(self) -> Iterator[Batch]:
        yield from self._read(self.events, self._event_batch)
        if self.retractions is not None and self.retractions.exists():
            yield from self._read(self.retractions, self._retraction_batch)

    def _read(self, path: Path, make: Callable[[list[bytes]], Batch]) -> Iterator[Batch]:
        key, start = self.key(path), self.offsets.get(self.key(path), 0)
        lines: list[bytes] = []
        position = 0
        with path.open("rb") as f:
            for position, line in enumerate(f, start=1):
                if position <= start:
                    continue
                if line.strip():
                    lines.append(line)
                if len(lines) >= self.batch_size:
                    yield self._stamp(make(lines), key, position)
                    lines = []
        if lines or position > start:
            yield self._stamp(make(lines), key, max(position, start))

    def _stamp(self, batch: Batch, key: str, position: int) -> Batch:
        self.offsets[key] = position
        batch.offsets = dict(self.offsets)
        return batch

    @staticmethod
    def _event_batch(lines: list[bytes]) -> Batch:
        batch = Batch()
        for line in lines:
            event = decode_event(line)
            if isinstance(event, Rejection):
                batch.rejected += 1
            else:
                batch.events.append(event)
        return batch

    @staticmethod
    def _retraction_batch(lines: list[bytes]) -> Batch:
        batch = Batch()
        for line in lines:
            add_retraction(batch, line)
        return batch


def topic_names(settings: Any = None) -> dict[str, str]:
    """The topics the trainer follows, from the one `Settings` every process shares."""
    from streams.settings import get_settings

    settings = settings or get_settings()
    return {"clean": settings.topic_clean, "retracted": settings.topic_retracted, "flags": settings.topic_flags,
            "alerts": settings.topic_alerts, "control": settings.topic_control}


def client_config(settings: Any = None) -> dict[str, Any]:
    """kafka-python connection settings (brokers, SASL PLAIN/SCRAM, TLS) from the shared `Settings`: the
    trainer connects exactly as the worker, `produce` and `export` do (streams.broker)."""
    from streams.broker import kafka_python_config
    from streams.settings import get_settings

    return kafka_python_config(settings or get_settings())


class KafkaSource(Source):
    """Follow the clean, retracted (and flags) topics with kafka-python, from checkpointed offsets.

    Partitions are assigned explicitly (no consumer-group rebalancing) and seeked to the saved offsets: the
    checkpoint, not the broker's committed offsets, is the record of what was learned. Offsets are still
    committed after each checkpoint, for monitoring lag.
    """

    def __init__(self, settings: Any = None, topics: dict[str, str] | None = None,
                 offsets: dict[str, int] | None = None, poll_ms: int = 1000, max_records: int = 5000,
                 consumer: Any = None, group_id: str = "shillguard-trainer"):
        self.topics = topics or topic_names(settings)
        self.offsets = dict(offsets or {})
        self.poll_ms, self.max_records = poll_ms, max_records
        if consumer is None:
            from kafka import KafkaConsumer

            consumer = KafkaConsumer(**client_config(settings), group_id=group_id, enable_auto_commit=False,
                                     auto_offset_reset="earliest")
        self.consumer = consumer
        self._role = {self.topics["clean"]: "clean", self.topics["retracted"]: "retracted",
                      self.topics.get("flags", ""): "flags"}

    def _assign(self, wait_s: float = 30.0) -> None:
        from kafka import TopicPartition

        wanted = [t for t in (self.topics["clean"], self.topics["retracted"], self.topics.get("flags")) if t]
        deadline = time.monotonic() + wait_s
        partitions = []
        for topic in wanted:
            found = self.consumer.partitions_for_topic(topic)
            while not found and topic != self.topics.get("flags") and time.monotonic() < deadline:
                time.sleep(0.5)  # the topic may not exist yet on a fresh broker
                found = self.consumer.partitions_for_topic(topic)
            partitions += [TopicPartition(topic, p) for p in sorted(found or [])]
        self.consumer.assign(partitions)
        for tp in partitions:
            saved = self.offsets.get(f"{tp.topic}:{tp.partition}")
            if saved is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, saved)

    def batches(self) -> Iterator[Batch]:
        self._assign()
        while True:
            polled = self.consumer.poll(timeout_ms=self.poll_ms, max_records=self.max_records)
            batch = Batch()
            for tp, records in polled.items():
                role = self._role.get(tp.topic)
                for record in records:
                    if role == "clean":
                        event = decode_event(record.value)
                        if isinstance(event, Rejection):
                            batch.rejected += 1
                        else:
                            batch.events.append(event)
                    elif role == "retracted":
                        add_retraction(batch, record.value)
                    elif role == "flags":
                        batch.flagged_items += flagged_item_ids(record.value)
                        batch.released_items += released_item_ids(record.value)
                    self.offsets[f"{tp.topic}:{tp.partition}"] = record.offset + 1
            batch.offsets = dict(self.offsets)
            yield batch

    def commit(self, offsets: dict[str, int]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        try:
            self.consumer.commit({TopicPartition(*k.rsplit(":", 1)[:1], int(k.rsplit(":", 1)[1])):
                                  OffsetAndMetadata(v, None, -1) for k, v in offsets.items()})
        except Exception:  # monitoring only: the checkpoint holds the offsets that matter
            pass
