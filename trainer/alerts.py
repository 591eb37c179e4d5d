"""Where a blocked version is reported: any callable taking one alert dict is a sink.

Alerts follow the shape of an OCSF Detection Finding (class_uid 2004) so that they sit beside the detectors'
alerts; the gate's own record rides in `unmapped`. Offline the default sink appends to
`MODELDIR/alerts.jsonl`; the streaming trainer publishes to the `alerts` topic. The exposure signals for the
worker (trainer.promotion) go through the same sinks: `MODELDIR/signals.jsonl`, or the control topic.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import orjson

AlertSink = Callable[[dict[str, Any]], None]


def gate_alert(version: str, result: dict[str, Any], model_dir: str) -> dict[str, Any]:
    """An OCSF-style finding for one blocking gate result."""
    return {
        "class_uid": 2004, "class_name": "Detection Finding", "activity_id": 1, "severity_id": 4,
        "severity": "High", "time": int(time.time() * 1000),
        "message": f"model version {version} blocked by the {result['gate']} gate",
        "finding_info": {"uid": f"{Path(model_dir).name}/{version}/{result['gate']}",
                         "title": f"{result['gate']} gate blocked promotion", "types": ["gate_blocked"]},
        "metadata": {"product": {"name": "shillguard", "feature": {"name": "trainer"}}},
        "unmapped": {"version": version, "model_dir": str(model_dir), **result},
    }


class FileAlertSink:
    """Append alerts as JSON lines."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __call__(self, alert: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(orjson.dumps(alert, default=str) + b"\n")


class KafkaAlertSink:
    """Publish alerts (or any record: the exposure signals for the control topic too) as JSON to a topic
    through a kafka-python `KafkaProducer`, keyed by `key(record)` where given."""

    def __init__(self, producer: Any, topic: str = "alerts",
                 key: Callable[[dict[str, Any]], bytes] | None = None):
        self.producer, self.topic, self.key = producer, topic, key

    def __call__(self, alert: dict[str, Any]) -> None:
        self.producer.send(self.topic, orjson.dumps(alert, default=str),
                           key=self.key(alert) if self.key else None)
        self.producer.flush(timeout=10)


def entity_key(record: dict[str, Any]) -> bytes:
    """`kind:id`, the key of flags and control records."""
    return f"{record['kind']}:{record['id']}".encode()
