"""An analyst's decision on an entity, one way for the CLI, the JSON API and the console.

A decision is a control record (`Pipeline.control` applies it in the worker: a release unflags the entity and
gives back what its flag took) published on the control topic keyed `kind:id`, then an audit row and the
entity's status in the quarantine store. Published first: a failure leaves the store as it was, never a
decision recorded that the worker did not get.

>>> record = control_record("release", "user:u-1", "false_positive", by="ana", note="known tester", ts=5.0)
>>> record["action"], record["kind"], record["id"], record["reason"]
('release', 'user', 'u-1', 'false_positive')
>>> control_record("release", "user:u-1", "because", by="ana")
Traceback (most recent call last):
...
ValueError: reason must be one of true_positive, false_positive, benign_positive, duplicate
"""

from __future__ import annotations

import time
from typing import Any, Callable

ACTIONS = ("release", "confirm", "escalate")
REASONS = ("true_positive", "false_positive", "benign_positive", "duplicate")
KINDS = ("user", "item", "seller", "client")


def parse_entity(entity: str) -> tuple[str, str]:
    """`kind:id` (the key of flags and control records) as (kind, id)."""
    kind, sep, entity_id = entity.partition(":")
    if not sep or kind not in KINDS or not entity_id:
        raise ValueError(f"an entity is kind:id with kind one of {', '.join(KINDS)}, not {entity!r}")
    return kind, entity_id


def control_record(action: str, entity: str, reason: str, by: str, note: str = "",
                   ts: float | None = None) -> dict[str, Any]:
    """The control record of a decision; ValueError for an unknown action, entity or reason."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}")
    if not by:
        raise ValueError("a decision needs who takes it")
    kind, entity_id = parse_entity(entity)
    return {"action": action, "kind": kind, "id": entity_id, "reason": reason, "note": note or "", "by": by,
            "ts": time.time() if ts is None else ts}


def decide(store: Any, publish: Callable[[str, dict[str, Any]], None], action: str, entity: str, reason: str,
           by: str, note: str = "") -> dict[str, Any]:
    """Publish the decision for the worker (`publish(key, record)`, acknowledged when it returns), then
    record it in the store; returns the control record."""
    record = control_record(action, entity, reason, by, note)
    publish(entity, record)
    store.decide_entity(entity, action, by, reason, note)
    return record


async def decide_async(store: Any, publish: Callable[[str, dict[str, Any]], Any], action: str, entity: str,
                       reason: str, by: str, note: str = "") -> dict[str, Any]:
    """`decide` for the worker's web server: `publish` is a coroutine function, the store runs on a thread."""
    import asyncio

    record = control_record(action, entity, reason, by, note)
    await publish(entity, record)
    await asyncio.get_running_loop().run_in_executor(None, store.decide_entity, entity, action, by, reason, note)
    return record
