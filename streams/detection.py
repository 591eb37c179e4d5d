"""The detection worker of the split topology (`SHILLGUARD_ROLE=detect`): one per deployment.

It is the guard (streams.agents) with a detection-only pipeline, reading the accepted stream (every input
line, forwarded by the actor workers on its input partition's number) instead of the inputs: the same
event-time alignment, micro-batches, detector processes, idle ticks and snapshots. At each decision point
it publishes, to every partition of the points topic, that partition's `Point` (detectors.stages): the ids
of its events observed since the point before, the signals about its entities, the watermark, and how far
it has read the partition's input (`through`, streams.points). It decides and publishes no outcome.

Restarted from its snapshot it reads the accepted stream again from there and publishes points again, cut
where its batches now fall; the actor stages decide idempotently (a named event is admitted once, a signal
applied twice changes nothing), so nothing is decided twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka.partitioner import murmur2

from detectors.pipeline import Step
from detectors.stages import DetectionStage
from streams.accepted import lines_of, record_after
from streams.agents import Guard
from streams.broker import kafka_python_config
from streams.points import encode_point

log = logging.getLogger(__name__)
TAKE_BLOCKS = 64  # records the agent takes at once: blocks of up to a few thousand lines each

def advance(read: dict[int, dict[str, int]], lines: list[Any]) -> None:
    """Move `read` (accepted partition -> input topic -> next offset) past `lines` (streams.accepted)."""
    for line in lines:
        topics = read.setdefault(line.partition, {})
        if line.source_offset >= topics.get(line.source_topic, 0):
            topics[line.source_topic] = line.source_offset + 1


def kafka_partition(key: str, partitions: int) -> int:
    """The partition the Java client's default partitioner (and aiokafka's, and `produce`'s) gives a key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class DetectionGuard(Guard):
    decides = False

    def __init__(self, settings: Any, topics: Any, metrics: Any = None, pipeline: Any = None):
        super().__init__(settings, topics, metrics, pipeline)
        partitions = settings.partitions
        self.detection = DetectionStage(self.pipeline, partitions, lambda key: kafka_partition(key, partitions))
        self.through: dict[int, dict[str, int]] = {}  # accepted partition -> input topic -> next offset read
        self.delivered: dict[int, dict[str, int]] = {}  # the same, counting what waits in the aligner
        # accepted partition -> input topic -> its high watermark as the partition's actor last fetched it
        self.reported: dict[int, dict[str, int]] = {}
        self.aligner.max_wait = max(self.aligner.max_wait, settings.detect_align_max_wait_seconds)
        self._ends: dict[tuple[str, int], int] = {}
        self._ends_at = 0.0
        self._ends_ok = True  # the last ask answered (a failing one is retried once a second, not per batch)
        self._arrived = 0.0  # when lines last arrived
        self._ends_consumer: Any = None
        self._end_tps: list[Any] = []

    def input_topics(self) -> tuple[str, ...]:
        return (self.topics.accepted,)

    # The actors forward blocks of lines (streams.accepted): the guard handles each line as a message of its
    # own, at a line offset, so that positions and snapshots hold between two lines of one block.
    @property
    def take_size(self) -> int:
        return TAKE_BLOCKS

    def broker_offset(self, offset: int) -> int:
        return record_after(offset)

    @staticmethod
    def _event_time(message: Any) -> float:
        return message.ts  # read by the actor's aligner from the line

    async def _handle(self, messages: list[Any]) -> None:
        self._arrived = time.monotonic()
        lines = []
        reported = self.reported
        for message in messages:
            got, highwaters = lines_of(message)
            lines += got
            for (topic, number), highwater in highwaters.items():
                known = reported.setdefault(number, {})
                if highwater > known.get(topic, 0):
                    known[topic] = highwater
        # While an actor partition moves (a worker killed, a rebalance), its lines stop coming without the
        # accepted partition looking behind. So a partition also lags while its input topics hold more than
        # the actors have forwarded so far: the aligner then holds the others back (rather than run the
        # watermark ahead of the partition's events) and idle ticks wait.
        advance(self.delivered, lines)
        batch = self.settings.batch_size  # the aligner gets a batch at a time, as from unbatched records
        for start in range(0, len(lines), batch):
            await super()._handle(lines[start:start + batch])

    def _lagging(self, tp: Any) -> bool:
        return super()._lagging(tp) or self._input_behind(tp[1])

    def _input_lags(self) -> bool:
        return super()._input_lags() or any(self._input_behind(p) for p in range(self.settings.partitions))

    def _input_behind(self, partition: int) -> bool:
        ends = self._input_ends()
        read = self.delivered.get(partition, {})
        reported = self.reported.get(partition, {})
        return any(max(ends.get((topic, partition), 0), reported.get(topic, 0)) > read.get(topic, 0)
                   for topic in self.topics.inputs)

    def _input_ends(self) -> dict[tuple[str, int], int]:
        """The input topics' end offsets (a blocking call of milliseconds), asked again once lines arrived
        since the last answer, else once a second. Lines of one partition may be released ahead of another
        partition only on ends asked after they arrived: those ends count every line produced before them,
        so the other partition's earlier lines, still with its actor, hold them back. Ends a second old let
        3 actor workers interleave partitions otherwise than `replay` (7 more users flagged on 197,628
        lines, from the profile detector's target test)."""
        now = time.monotonic()
        if now - self._ends_at >= 1.0 or (self._ends_ok and self._ends_at <= self._arrived):
            self._ends_at = now
            self._ends_ok = False
            try:
                if self._ends_consumer is None:
                    from kafka import KafkaConsumer

                    from streams.reader import partitions_of

                    self._ends_consumer = KafkaConsumer(enable_auto_commit=False, group_id=None,
                                                        **kafka_python_config(self.settings))
                    self._end_tps = partitions_of(self._ends_consumer, self.topics.inputs)
                ends = self._ends_consumer.end_offsets(self._end_tps)
                self._ends = {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
                self._ends_ok = True
            except Exception as error:  # noqa: BLE001 - unknown ends hold nothing back
                log.warning("input end offsets unavailable (%s): not waiting for moving partitions", error)
                self._ends = {}
        return self._ends

    def apply_control(self, records: list[dict]) -> Any:
        """Analysts' decisions and the trainer's signals go to the actor partition that owns the entity, on a
        point made now (detectors.stages.DetectionStage.route)."""
        self.detection.route(records)
        self.detection.cut()
        return Step(watermark=self.pipeline.watermark)

    def snapshot_extra(self) -> dict[str, Any]:
        detection = self.detection
        return {"detection": (detection._source, detection._duplicates, detection._control,  # noqa: SLF001
                              self.through)}

    def restore_extra(self, extra: dict[str, Any]) -> None:
        if "detection" in extra:
            detection = self.detection
            detection._source, detection._duplicates, detection._control, self.through = extra["detection"]  # noqa: SLF001

    def _publish(self, step: Any, messages: list[Any] | None = None) -> None:
        sources: list[int] = []
        if messages is not None:
            sources = [line.partition for line in messages]
            advance(self.through, messages)
        send, points_topic = self.publisher.add, self.topics.points
        for split in self.detection.points(step, sources):
            for partition, point in split.items():
                send(points_topic, None, encode_point(point, self.through.get(partition, {})),
                     partition=partition)
            self.counts["points"] += 1
            self.counts["signals"] += sum(len(found) for point in split.values() for _, found in point.signals)
        self.outputs.drifts(send, step.drifts)
