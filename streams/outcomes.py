"""How outcomes look on the wire: the same JSON objects in replay's files and on the output topics."""

from __future__ import annotations

from typing import Any

import orjson

from detectors.decision import Flag, Outcome
from detectors.events import Event, Rejection


def event_dict(event: Event) -> dict[str, Any]:
    return event.model_dump(exclude_none=True)


def rejection_record(rejection: Rejection, line: int | None = None) -> dict[str, Any]:
    record = {"event_id": rejection.event_id, "verdict": "rejected", "reasons": [rejection.reason],
              "raw": rejection.raw.decode("utf-8", "replace")}
    if line is not None:
        record["line"] = line
    return record


def outcome_record(outcome: Outcome, watermark: float) -> dict[str, Any]:
    """An event leaving the decision stage: clean, quarantined (with reasons) or retracted."""
    record = {"event_id": outcome.event.event_id, "verdict": outcome.verdict, "reasons": outcome.reasons,
              "event": event_dict(outcome.event)}
    if outcome.verdict == "retracted":
        record["retracted_at"] = watermark
    return record


def flag_record(flag: Flag) -> dict[str, Any]:
    return flag.as_dict()


def dumps(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)
