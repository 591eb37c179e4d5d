"""Read topics to their end with kafka-python: for `export`, and for a restarted worker's look at what it
had already published. No consumer group: partitions are assigned and nothing is committed.

The embedded broker can report a high watermark that lags a batched produce for a moment, so "the end" is
the end offsets re-read until two readings agree after everything up to them has been consumed.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator, Mapping

TP = tuple[str, int]


def partitions_of(consumer: Any, topics: Iterable[str]) -> list[Any]:
    from kafka import TopicPartition

    tps = []
    for topic in topics:
        partitions = None
        deadline = time.monotonic() + 10
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.1)
        tps.extend(TopicPartition(topic, p) for p in sorted(partitions or ()))
    return tps


def end_offsets(config: Mapping[str, Any], topics: Iterable[str]) -> dict[TP, int]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **config)
    try:
        tps = partitions_of(consumer, topics)
        return {(tp.topic, tp.partition): offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def read(config: Mapping[str, Any], topics: Iterable[str], start: Mapping[TP, int] | None = None,
         settle_seconds: float = 0.5, max_records: int = 10_000) -> Iterator[Any]:
    """Every message of `topics` from `start` (default: the beginning) to the end, partition order kept."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, fetch_max_bytes=16 * 1024 * 1024,
                             max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=100, **config)
    try:
        tps = partitions_of(consumer, topics)
        if not tps:
            return
        consumer.assign(tps)
        beginnings = consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max((start or {}).get((tp.topic, tp.partition), 0), beginnings[tp]))
        ends = consumer.end_offsets(tps)
        settled_at: float | None = None
        while True:
            if all(consumer.position(tp) >= ends[tp] for tp in tps):
                latest = consumer.end_offsets(tps)
                if latest != ends:
                    ends, settled_at = latest, None
                    continue
                if settled_at is None:
                    settled_at = time.monotonic()
                if time.monotonic() - settled_at >= settle_seconds:
                    return
                time.sleep(0.05)
                continue
            batch = consumer.poll(timeout_ms=500, max_records=max_records)
            for tp in tps:
                for record in batch.get(tp, ()):
                    yield record
                    if record.offset + 1 > ends[tp]:
                        ends[tp] = record.offset + 1
    finally:
        consumer.close()


def header(record: Any, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return value
    return None


def source_id(topic: str, partition: int, offset: int) -> str:
    """How an output names the input message it answers (the `src` header)."""
    return f"{topic}:{partition}:{offset}"
