"""The worker's durable state: a snapshot of detectors and decision stage with the offsets it covers.

A snapshot is one pickle written atomically (temporary file, fsync, rename) under SHILLGUARD_STATE_DIR:
the pipeline's state, the next input offset per partition it has consumed up to, and the next offset per
output partition it had published up to (everything before it acknowledged by the broker). A restarted
worker restores it, skips redelivered input below those offsets and, for outcomes published after it,
reads the output topics from those offsets to suppress what was already published.

The `incarnation` names the consumer group: a fresh one (no snapshot, or a snapshot that does not match
the broker's topics) starts from the beginning of the input topics, so nothing is lost with the state.
"""

from __future__ import annotations

import os
import pickle
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SNAPSHOT_VERSION = 1
TP = tuple[str, int]


@dataclass
class Snapshot:
    input_offsets: dict[TP, int]
    output_offsets: dict[TP, int]
    detectors: dict[str, bytes]
    decision: Any
    seen: Any
    watermark: float
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = SNAPSHOT_VERSION


class StateDir:
    def __init__(self, path: str | Path, app_id: str = "shillguard"):
        self.path = Path(path)
        self.app_id = app_id

    @property
    def snapshot_path(self) -> Path:
        return self.path / f"{self.app_id}.snapshot"

    @property
    def incarnation_path(self) -> Path:
        return self.path / f"{self.app_id}.incarnation"

    def incarnation(self) -> str:
        """The current consumer-group suffix, created on first use."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.incarnation_path.is_file():
            value = self.incarnation_path.read_text().strip()
            if value:
                return value
        return self.new_incarnation()

    def new_incarnation(self) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        value = uuid.uuid4().hex[:12]
        _atomic_write(self.incarnation_path, value.encode())
        return value

    def load(self) -> Snapshot | None:
        try:
            data = self.snapshot_path.read_bytes()
        except FileNotFoundError:
            return None
        snapshot = pickle.loads(data)
        if getattr(snapshot, "version", None) != SNAPSHOT_VERSION:
            return None
        return snapshot

    def save_bytes(self, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.snapshot_path, data)

    def discard(self) -> None:
        """Forget the snapshot and start a new incarnation (the broker lost the topics it refers to)."""
        if self.snapshot_path.is_file():
            self.snapshot_path.replace(self.snapshot_path.with_suffix(".stale"))
        self.new_incarnation()


def dumps(snapshot: Snapshot) -> bytes:
    return pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as sink:
        sink.write(data)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(tmp, path)
    try:
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
