"""Outcome publishing in record batches: one future per partition batch instead of one per message.

`send()` per message costs the aiokafka producer a future, a metadata lookup and a pure-Python murmur2
hash; the guard publishes about one message per event, so it builds the record batches itself (aiokafka's
`create_batch`/`send_batch`, the same partitioner as the Java client, its hash cached per key) and waits
for them only when a snapshot needs the broker's word that everything before it is stored.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Callable, Sequence

from aiokafka.partitioner import murmur2

TP = tuple[str, int]


class BatchPublisher:
    def __init__(self, producer: Any, max_cached_keys: int = 1_000_000,
                 on_acked: Callable[[str, int], None] | None = None):
        self.producer = producer  # aiokafka.AIOKafkaProducer, started
        self.on_acked = on_acked  # (topic, messages) once the broker has stored a batch: metrics that don't lag
        self._builders: dict[TP, Any] = {}
        self._counts: dict[TP, int] = {}
        self._full: list[tuple[TP, Any, int]] = []
        self._in_flight: list[tuple[TP, int, asyncio.Future]] = []
        self._partitions: dict[str, list[int]] = {}
        self._partition_of: dict[tuple[str, bytes], int] = {}
        self.max_cached_keys = max_cached_keys
        self.offsets: dict[TP, int] = {}  # next offset per output partition, as acknowledged by the broker

    def partition(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            found = self.producer.client.cluster.partitions_for_topic(topic)
            if not found:
                raise LookupError(f"no metadata for topic {topic}")
            partitions = self._partitions[topic] = sorted(found)
        if key is None:
            return random.choice(partitions)
        cache_key = (topic, key)
        partition = self._partition_of.get(cache_key)
        if partition is None:
            if len(self._partition_of) >= self.max_cached_keys:
                self._partition_of.clear()
            partition = self._partition_of[cache_key] = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        return partition

    async def prepare(self, topics: Sequence[str]) -> None:
        """Fetch partition metadata for the topics before the first message."""
        for topic in topics:
            await self.producer.client._wait_on_metadata(topic)  # noqa: SLF001 - what send() does too

    def add(self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None,
            timestamp: float | None = None, partition: int | None = None) -> None:
        """One message; on `partition` where given, else on its key's (the Java client's partitioner)."""
        tp = (topic, self.partition(topic, key) if partition is None else partition)
        builder = self._builders.get(tp)
        if builder is None:
            builder = self._builders[tp] = self.producer.create_batch()
            self._counts[tp] = 0
        if builder.append(timestamp=timestamp, key=key, value=value, headers=headers or []) is None:
            self._full.append((tp, builder, self._counts[tp]))
            builder = self._builders[tp] = self.producer.create_batch()
            self._counts[tp] = 0
            if builder.append(timestamp=timestamp, key=key, value=value, headers=headers or []) is None:
                raise ValueError(f"a message of {len(value)} bytes does not fit a record batch")
        self._counts[tp] += 1

    async def send(self) -> None:
        """Hand every open batch to the producer (they go out in the background)."""
        batches = self._full + [(tp, builder, self._counts[tp]) for tp, builder in self._builders.items()]
        self._full, self._builders, self._counts = [], {}, {}
        for tp, builder, count in batches:
            builder.close()
            future = await self.producer.send_batch(builder, tp[0], partition=tp[1])
            if self.on_acked is not None:
                future.add_done_callback(self._acknowledged(tp[0], count))
            self._in_flight.append((tp, count, future))

    async def wait(self) -> dict[TP, int]:
        """Send what is open and wait for the broker to acknowledge everything; raise if it refused any."""
        await self.send()
        in_flight, self._in_flight = self._in_flight, []
        offsets = self.offsets
        for tp, count, future in in_flight:
            metadata = await future
            if metadata is None:  # acks=0: no offsets to note
                continue
            end = metadata.offset + count
            if end > offsets.get(tp, 0):
                offsets[tp] = end
        return dict(offsets)

    def _acknowledged(self, topic: str, count: int) -> Callable[[asyncio.Future], None]:
        def done(future: asyncio.Future) -> None:
            if not future.cancelled() and future.exception() is None:
                self.on_acked(topic, count)
        return done

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)
