"""The split topology's record between its stages: a decision point for one actor partition, as JSON.

`through`: for each input topic, the offset up to which the detection stage has read that partition's lines
(exclusive): an actor worker decides a point only once its own input has reached it, so every event the
point names has arrived (after a rebalance the new owner may still be reading the partition again).
"""

from __future__ import annotations

from typing import Any

import orjson

from detectors.base import Signal
from detectors.stages import Point


def encode_point(point: Point, through: dict[str, int]) -> bytes:
    return orjson.dumps({
        "n": point.number, "watermark": point.watermark, "through": through, "admitted": point.admitted,
        "duplicates": point.duplicates, "control": point.control,
        "signals": [[name, [[s.kind, s.id, s.score, s.evidence, list(s.event_ids), s.whole_history]
                            for s in signals]] for name, signals in point.signals]},
        option=orjson.OPT_SERIALIZE_NUMPY)


def decode_point(value: bytes) -> tuple[Point, dict[str, int]]:
    record: dict[str, Any] = orjson.loads(value)
    signals = [(name, [Signal(kind, entity_id, name, score, evidence, tuple(event_ids), whole_history)
                       for kind, entity_id, score, evidence, event_ids, whole_history in found])
               for name, found in record["signals"]]
    point = Point(record["n"], record["watermark"], record["admitted"], signals, record["duplicates"],
                  record.get("control", []))
    return point, record["through"]
