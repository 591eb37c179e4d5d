"""Read topics to their end with kafka-python: for `export`, and for a restarted worker's look at what it
had already published. No consumer group: partitions are assigned and nothing is committed.

The embedded Tansu answers ListOffsets with the last record batch's base offset + 1, so after a batched
produce "the end" it reports falls short of the last batch for as long as nothing more is produced; its
fetch responses carry the true high watermark. The end of a partition is therefore the further of the two,
and a read finishes only once a fetch at its position has found nothing more.
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


def _ends(consumer: Any, tps: list[Any]) -> dict[Any, int]:
    """ListOffsets' end, or further where a fetch has seen a higher watermark (see the module's note)."""
    listed = consumer.end_offsets(tps)
    return {tp: max(listed[tp], consumer.highwater(tp) or 0) for tp in tps}


def end_offsets(config: Mapping[str, Any], topics: Iterable[str], timeout: float = 10.0) -> dict[TP, int]:
    """The next offset to be written, per partition: one fetch at the listed end tells the true one."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100, **config)
    try:
        tps = partitions_of(consumer, topics)
        if not tps:
            return {}
        consumer.assign(tps)
        for tp, offset in consumer.end_offsets(tps).items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        return {(tp.topic, tp.partition): offset for tp, offset in _ends(consumer, tps).items()}
    finally:
        consumer.close()


def read(config: Mapping[str, Any], topics: Iterable[str], start: Mapping[TP, int] | None = None,
         settle_seconds: float = 0.5, max_records: int = 10_000,
         partitions: Iterable[int] | None = None) -> Iterator[Any]:
    """Every message of `topics` (of those `partitions` only, where given) from `start` (default: the
    beginning) to the end, partition order kept."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, fetch_max_bytes=16 * 1024 * 1024,
                             max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=100, **config)
    try:
        tps = partitions_of(consumer, topics)
        if partitions is not None:
            wanted = set(partitions)
            tps = [tp for tp in tps if tp.partition in wanted]
        if not tps:
            return
        consumer.assign(tps)
        beginnings = consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max((start or {}).get((tp.topic, tp.partition), 0), beginnings[tp]))
        settled_at: float | None = None
        while True:
            batch = consumer.poll(timeout_ms=200, max_records=max_records)
            if batch:
                settled_at = None
                for tp in tps:
                    yield from batch.get(tp, ())
                continue
            # Nothing came back: at the end only if every partition's position has reached it, as the
            # fetches just made see it, for `settle_seconds` on end.
            ends = _ends(consumer, tps)
            if any(consumer.position(tp) < ends[tp] for tp in tps):
                settled_at = None
                continue
            if settled_at is None:
                settled_at = time.monotonic()
            elif time.monotonic() - settled_at >= settle_seconds:
                return
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
