"""The accepted topic's blocks (streams.accepted): what the actors forward is what the detection worker reads,
line for line, and a snapshot between two lines of one block neither loses nor repeats a line."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from types import SimpleNamespace

import orjson
import pytest

from streams.accepted import (MAX_BYTES, MAX_LINES, decode_block, line_offset, lines_of, record_after,
                              split_blocks)
from streams.align import NO_TIME
from streams.settings import Settings
from streams.topics import Topics


TopicPartition = namedtuple("TopicPartition", "topic partition")


def rating(n: int, ts: float) -> bytes:
    return orjson.dumps({"type": "rating", "event_id": f"e{n}", "ts": ts, "user_id": f"u{n % 7}",
                         "item_id": "i", "rating": 4})


def test_a_block_carries_every_line_byte_for_byte_with_its_source_and_time():
    lines = [("events.ratings", 10, 1.5, rating(1, 1.5)), ("events.clicks", 3, 2.0, b"\xff\x00 not json"),
             ("events.ratings", 11, NO_TIME, b""), ("events.catalog", 0, 3.25, b"{}")]
    records = list(split_blocks(lines, {("events.ratings", 0): 40, ("events.queries", 0): 7,
                                        ("events.ratings", 5): 2}))
    assert len(records) == 1
    key, value = records[0]
    assert key == "events.ratings:10"
    block = decode_block(key.encode(), value)
    assert block.lines == lines
    assert block.highwaters == {("events.ratings", 0): 40, ("events.queries", 0): 7, ("events.ratings", 5): 2}


def test_blocks_are_cut_by_lines_and_bytes_and_keep_the_order():
    many = [("events.ratings", n, float(n), b"{}") for n in range(MAX_LINES * 2 + 5)]
    records = list(split_blocks(many))
    assert [len(decode_block(None, value).lines) for _, value in records] == [MAX_LINES, MAX_LINES, 5]
    assert [line for _, value in records for line in decode_block(None, value).lines] == many
    big = [("events.catalog", n, 0.0, b"x" * (MAX_BYTES // 3)) for n in range(7)] + \
          [("events.catalog", 7, 0.0, b"y" * (2 * MAX_BYTES))]
    records = list(split_blocks(big))
    assert all(len(value) <= MAX_BYTES + 64 for _, value in records[:-1])
    assert decode_block(None, records[-1][1]).lines == [big[-1]]  # longer than a block: it travels alone
    assert [line for _, value in records for line in decode_block(None, value).lines] == big


def test_a_record_of_one_line_keyed_by_its_source_still_reads():
    value = rating(1, 42.0)
    assert decode_block(b"events.ratings:3:17", value) == ([("events.ratings", 17, 42.0, value)], {})
    with pytest.raises(ValueError):
        decode_block(None, value)


def test_a_truncated_block_is_refused():
    _, value = next(split_blocks([("events.ratings", 1, 1.0, rating(1, 1.0))]))
    with pytest.raises(Exception):
        decode_block(None, value[:-3])


class Record:
    def __init__(self, offset: int, value: bytes, partition: int = 0):
        self.topic, self.partition, self.offset, self.value = "internal.accepted", partition, offset, value
        self.key, self.timestamp, self.acks = None, 0.0, 0

    def ack(self, consumer):
        self.acks += 1
        return True


def test_lines_have_offsets_of_their_own_and_only_the_last_acknowledges_the_record():
    lines = [("events.ratings", n, float(n), rating(n, float(n))) for n in range(4)]
    record = Record(9, next(split_blocks(lines))[1], partition=2)
    got, _ = lines_of(record)
    assert [line.offset for line in got] == [line_offset(9, i) for i in range(4)]
    assert [line.key for line in got] == [f"events.ratings:2:{n}".encode() for n in range(4)]
    assert all(record_after(line.offset + 1) == 10 for line in got)
    assert record_after(line_offset(9, 0)) == 9  # nothing of record 9 handled yet: 8 is the last one delivered
    assert record_after(0) == 0
    for line in got:
        line.ack(None)
    assert record.acks == 1


def test_the_detection_worker_skips_the_lines_of_a_block_its_snapshot_covers(tmp_path):
    """A snapshot taken between two lines of a block; the block redelivered after a restart: the lines
    before the snapshot's position are skipped, the rest handled once, and the record acknowledged once."""
    from streams.detection import DetectionGuard

    settings = Settings(state_dir=tmp_path, detectors="profile", offload_detectors="", partitions=1,
                        learn_from_analysts=False)
    topics = Topics.from_settings(settings)
    lines = [(topics.ratings, n, float(n), rating(n, float(n))) for n in range(5)]
    record = Record(3, next(split_blocks(lines))[1])
    handled: list = []
    consumer = SimpleNamespace(highwater=lambda tp: 4, assignment=lambda: [])
    guard = DetectionGuard(settings, topics)
    try:
        guard.app = SimpleNamespace(consumer=consumer)
        guard.restored = guard.assigned = True
        guard._input_ends = lambda: {}  # noqa: SLF001 - no broker here
        guard.skip_below = {(topics.accepted, 0): line_offset(3, 2)}  # lines 0 and 1 were in the snapshot

        async def process(messages) -> None:
            handled.extend(messages)

        guard._process = process  # noqa: SLF001
        asyncio.run(guard.handle([SimpleNamespace(message=record)]))
        assert [line.source_offset for line in handled] == [2, 3, 4]
        assert [line.value for line in handled] == [value for *_, value in lines[2:]]
        assert guard.delivered == {0: {topics.ratings: 5}}
        assert guard._position((topics.accepted, 0)) == 4  # noqa: SLF001 - the whole record delivered
        for line in guard.unacked + handled:
            line.ack(consumer)
        assert record.acks == 1
    finally:
        guard.pipeline.close()


def test_the_detection_worker_waits_for_input_its_actor_has_read_and_not_forwarded(tmp_path):
    """A block says how far the actor's consumer saw the partition's input: until the lines up to there
    arrive, the partition is behind (the aligner holds the other partitions' later events), even where
    ListOffsets says nothing more."""
    from streams.detection import DetectionGuard

    settings = Settings(state_dir=tmp_path, detectors="profile", offload_detectors="", partitions=2,
                        learn_from_analysts=False)
    topics = Topics.from_settings(settings)
    guard = DetectionGuard(settings, topics)
    try:
        guard.app = SimpleNamespace(consumer=None)
        guard._input_ends = lambda: {}  # noqa: SLF001 - ListOffsets knows nothing more
        guard._process = lambda messages: asyncio.sleep(0)  # noqa: SLF001
        guard.restored = guard.assigned = True
        first = [(topics.ratings, n, float(n), rating(n, float(n))) for n in range(3)]
        block = Record(0, next(split_blocks(first, {(topics.ratings, 0): 5}))[1])
        asyncio.run(guard.handle([SimpleNamespace(message=block)]))
        assert guard._input_behind(0)  # noqa: SLF001 - lines 3 and 4 were read by the actor, not forwarded
        rest = [(topics.ratings, n, float(n), rating(n, float(n))) for n in range(3, 5)]
        block = Record(1, next(split_blocks(rest, {(topics.ratings, 0): 5}))[1])
        asyncio.run(guard.handle([SimpleNamespace(message=block)]))
        assert not guard._input_behind(0)  # noqa: SLF001
        # A block of partition 1 speaks for partition 0 too: the actor has read two more lines there.
        other = [(topics.ratings, 0, 9.0, rating(9, 9.0))]
        block = Record(0, next(split_blocks(other, {(topics.ratings, 0): 7, (topics.ratings, 1): 1}))[1],
                       partition=1)
        asyncio.run(guard.handle([SimpleNamespace(message=block)]))
        assert guard._input_behind(0)  # noqa: SLF001
        assert not guard._input_behind(1)  # noqa: SLF001
    finally:
        guard.pipeline.close()


def test_the_detection_worker_asks_the_input_ends_again_once_lines_arrived(tmp_path):
    """Ends asked before a block arrived may not count lines produced just before it: they are asked again
    (not reused for up to a second), so the lines are judged on ends that count their elders."""
    from streams.detection import DetectionGuard

    settings = Settings(state_dir=tmp_path, detectors="profile", offload_detectors="", partitions=1,
                        learn_from_analysts=False)
    topics = Topics.from_settings(settings)
    guard = DetectionGuard(settings, topics)
    asked: list[int] = []
    tp = TopicPartition(topics.ratings, 0)

    class Ends:
        def end_offsets(self, tps):
            asked.append(1)
            return {tp: 10 * len(asked)}

    try:
        guard.app = SimpleNamespace(consumer=None)
        guard._ends_consumer, guard._end_tps = Ends(), [tp]  # noqa: SLF001
        guard._process = lambda messages: asyncio.sleep(0)  # noqa: SLF001
        guard.restored = guard.assigned = True
        assert guard._input_ends() == {(topics.ratings, 0): 10}  # noqa: SLF001
        assert guard._input_ends() == {(topics.ratings, 0): 10}  # noqa: SLF001 - nothing arrived: cached
        block = Record(0, next(split_blocks([(topics.ratings, 0, 1.0, rating(0, 1.0))]))[1])
        asyncio.run(guard.handle([SimpleNamespace(message=block)]))
        assert guard._input_ends() == {(topics.ratings, 0): 20}  # noqa: SLF001
        assert len(asked) == 2
    finally:
        guard.pipeline.close()
