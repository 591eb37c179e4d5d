"""Records of the split topology's accepted topic: blocks of input lines, actors -> detection worker.

An actor worker forwards the lines it releases in one batch as one record per partition, not one record
per line: the detection worker then pays Faust's per-message cost (the bulk of its own cost, beside the
detectors) once a block. A block carries, per line, its source (input topic and offset: the partition is
the record's), the event time the actor's aligner read from it (so the detection worker's aligner need
not parse the line again) and the line as it came, bytes and all (a dead letter is forwarded too: the
detection stage counts lines). It also carries the high watermarks of every input partition the actor
holds, as its consumer last fetched them: the detection worker must not take a partition for caught up
while its actor has read input it has not forwarded yet (it would release the other partitions' later
events first). A block of one partition speaks for the others too, because the actor sends the blocks of
one batch together and the detection worker may fetch some before the rest; ListOffsets, its other
source, can stop a produce batch short of the end on the embedded broker. The framing is a few fixed-size
struct fields per line, hand-written because the lines are arbitrary bytes and a generic serialiser (JSON,
msgpack) would either re-encode them or add a dependency for this one use.

Inside the detection worker a block's lines are `Line`s, each with an offset of its own (`line_offset`: the
record's offset times 2**SHIFT plus its index) so that the guard's positions, snapshots and skipping of
redelivered input work per line: a snapshot may fall between two lines of one block. The record is
acknowledged with its last line.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

from streams.align import event_time
from streams.reader import source_id

MAGIC = b"SGB1"
SHIFT = 20  # a block holds fewer than 2**SHIFT lines (split_blocks keeps it far below)
MAX_LINES = 4096
MAX_BYTES = 256 * 1024  # well under Kafka's default message.max.bytes (1 MB)
_HEAD = struct.Struct("<BqdI")  # topic index, source offset, event time, line length
_COUNT = struct.Struct("<BI")  # topics named, lines
_MARK = struct.Struct("<BHq")  # topic index, partition, high watermark


class Block(NamedTuple):
    lines: list[tuple[str, int, float, bytes]]  # (source topic, offset, ts, bytes)
    highwaters: dict[tuple[str, int], int]  # (input topic, partition) -> high watermark, as the actor knew it


def encode_block(topics: list[str], marks: list[tuple[int, int, int]],
                 lines: list[tuple[int, int, float, bytes]]) -> bytes:
    """One record's value: `topics` named once, the high watermarks as (topic index, partition, offset),
    then each line as (topic index, offset, ts, bytes)."""
    parts = [MAGIC, _COUNT.pack(len(topics), len(lines))]
    for name in topics:
        encoded = name.encode()
        parts.append(struct.pack("<H", len(encoded)))
        parts.append(encoded)
    parts.append(struct.pack("<H", len(marks)))
    parts.extend(_MARK.pack(*mark) for mark in marks)
    pack = _HEAD.pack
    for index, offset, ts, value in lines:
        parts.append(pack(index, offset, ts, len(value)))
        parts.append(value)
    return b"".join(parts)


def split_blocks(lines: list[tuple[str, int, float, bytes]],
                 highwaters: dict[tuple[str, int], int] | None = None) -> Iterator[tuple[str, bytes]]:
    """(key, value) records for a partition's lines (topic, offset, ts, bytes), in order, each block within
    MAX_LINES and MAX_BYTES (a line longer than that travels alone), each with `highwaters` ((input topic,
    partition) -> high watermark). The key names the block's first line."""
    highwaters = highwaters or {}
    start = 0
    while start < len(lines):
        size, end = 0, start
        while end < len(lines) and end - start < MAX_LINES:
            size += len(lines[end][3]) + _HEAD.size
            if size > MAX_BYTES and end > start:
                break
            end += 1
        chunk = lines[start:end]
        topics: dict[str, int] = {}
        marks = [(topics.setdefault(topic, len(topics)), number, highwater)
                 for (topic, number), highwater in highwaters.items()]
        framed = [(topics.setdefault(topic, len(topics)), offset, ts, value) for topic, offset, ts, value in chunk]
        first_topic, first_offset = chunk[0][0], chunk[0][1]
        yield f"{first_topic}:{first_offset}", encode_block(list(topics), marks, framed)
        start = end


def decode_block(key: bytes | None, value: bytes) -> Block:
    """A record's lines and high watermarks. A record that is not a block is one line forwarded whole,
    keyed by its source `topic:partition:offset` (the format before blocks: a rolling upgrade)."""
    if not value.startswith(MAGIC):
        if not key:
            raise ValueError("an accepted record neither a block nor keyed by its source")
        topic, _, offset = key.decode().rsplit(":", 2)
        return Block([(topic, int(offset), event_time(value), value)], {})
    at = len(MAGIC)
    n_topics, n_lines = _COUNT.unpack_from(value, at)
    at += _COUNT.size
    topics = []
    for _ in range(n_topics):
        (length,) = struct.unpack_from("<H", value, at)
        at += 2
        topics.append(value[at:at + length].decode())
        at += length
    (n_marks,) = struct.unpack_from("<H", value, at)
    at += 2
    highwaters = {}
    for _ in range(n_marks):
        index, number, highwater = _MARK.unpack_from(value, at)
        at += _MARK.size
        highwaters[(topics[index], number)] = highwater
    lines = []
    unpack, head = _HEAD.unpack_from, _HEAD.size
    for _ in range(n_lines):
        index, offset, ts, length = unpack(value, at)
        at += head
        lines.append((topics[index], offset, ts, value[at:at + length]))
        at += length
    if at != len(value):
        raise ValueError(f"an accepted block of {len(value)} bytes ends at {at}")
    return Block(lines, highwaters)


def line_offset(record_offset: int, index: int) -> int:
    return (record_offset << SHIFT) | index


def record_after(next_line_offset: int) -> int:
    """The broker offset after the record that holds the line before `next_line_offset` (0 for none):
    where the worker stands on the topic once that line is delivered."""
    return ((next_line_offset - 1) >> SHIFT) + 1 if next_line_offset > 0 else 0


@dataclass(slots=True)
class Line:
    """One line of a block, as the guard handles a message: on the accepted partition at a line offset."""

    topic: str  # the accepted topic
    partition: int
    offset: int  # line_offset(record, index)
    value: bytes
    source_topic: str
    source_offset: int
    ts: float
    timestamp: Any
    record: Any  # the Faust message of the block
    last: bool  # the block's last line: acknowledging it acknowledges the record

    @property
    def key(self) -> bytes:
        return source_id(self.source_topic, self.partition, self.source_offset).encode()

    def ack(self, consumer: Any) -> Any:
        return self.record.ack(consumer) if self.last else False


def lines_of(message: Any) -> tuple[list[Line], dict[str, int]]:
    """A Faust message of the accepted topic as its `Line`s, and the high watermarks it carries."""
    decoded, highwaters = decode_block(message.key, message.value)
    last = len(decoded) - 1
    topic, partition, offset, timestamp = message.topic, message.partition, message.offset, message.timestamp
    return [Line(topic, partition, line_offset(offset, i), value, source, source_offset, ts, timestamp, message,
                 i == last)
            for i, (source, source_offset, ts, value) in enumerate(decoded)], highwaters
