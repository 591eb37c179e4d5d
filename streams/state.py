"""The worker's durable state: a snapshot of detectors and decision stage with the offsets it covers.

A snapshot is one pickle, signed with HMAC-SHA256 under a key from a secret (SHILLGUARD_STATE_KEY) and
written atomically (temporary file, fsync, rename) under SHILLGUARD_STATE_DIR. Unpickling runs code, so a
file whose signature does not verify is never unpickled: whoever can write the state directory but does not
hold the key cannot make the worker run anything (`SnapshotRejected`, and the worker starts afresh). The
snapshot holds:
the pipeline's state, the next input offset per partition it has consumed up to, and the next offset per
output partition it had published up to (everything before it acknowledged by the broker). A restarted
worker restores it, skips redelivered input below those offsets and, for outcomes published after it,
reads the output topics from those offsets to suppress what was already published.

The `incarnation` names the consumer group: a fresh one (no snapshot, or a snapshot that does not match
the broker's topics) starts from the beginning of the input topics, so nothing is lost with the state.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SNAPSHOT_VERSION = 3  # raised when a detector's state layout changes: an older snapshot is not loaded
TP = tuple[str, int]
MAGIC = b"shillguard-snapshot/hmac-sha256\n"  # then the 32-byte signature, then the pickle


class SnapshotRejected(ValueError):
    """A snapshot file that is not signed with this worker's key: never unpickled."""


def sign(key: bytes, payload: bytes) -> bytes:
    return MAGIC + hmac.new(key, payload, hashlib.sha256).digest() + payload


def verified(key: bytes, data: bytes) -> bytes:
    """The payload of a signed snapshot, or SnapshotRejected.

    >>> verified(b"k", sign(b"k", b"state")) == b"state"
    True
    >>> verified(b"other key", sign(b"k", b"state"))
    Traceback (most recent call last):
    ...
    streams.state.SnapshotRejected: the snapshot's signature does not match SHILLGUARD_STATE_KEY
    """
    if not data.startswith(MAGIC):
        raise SnapshotRejected("the file is not a signed snapshot (an older format, or not written by shillguard)")
    signature, payload = data[len(MAGIC):len(MAGIC) + 32], data[len(MAGIC) + 32:]
    if not hmac.compare_digest(signature, hmac.new(key, payload, hashlib.sha256).digest()):
        raise SnapshotRejected("the snapshot's signature does not match SHILLGUARD_STATE_KEY")
    return payload


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "shillguard" / "state.key"


def snapshot_key(settings: Any) -> bytes:
    """SHILLGUARD_STATE_KEY; required against a real cluster. With the embedded broker (a laptop) and no
    key set, a random key kept in SHILLGUARD_STATE_KEY_FILE (default ~/.config/shillguard/state.key, mode
    0600), outside the state directory, created on first use: there is no default key."""
    if settings.state_key is not None:
        key = settings.state_key.get_secret_value().encode()
        if len(key) < 16:
            raise ValueError("SHILLGUARD_STATE_KEY is too short: use at least 16 random characters "
                             "(e.g. `openssl rand -hex 32`)")
        return key
    if settings.broker:
        raise ValueError("SHILLGUARD_STATE_KEY is not set: against a real cluster the snapshots' signing key "
                         "must come from a secret (e.g. `openssl rand -hex 32` into a Kubernetes Secret)")
    path = Path(settings.state_key_file) if settings.state_key_file else default_key_file()
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as sink:
        sink.write(key)
    return key


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
    def __init__(self, path: str | Path, app_id: str = "shillguard", key: bytes | None = None):
        self.path = Path(path)
        self.app_id = app_id
        if not key:
            raise ValueError("a state directory needs its snapshots' signing key (streams.state.snapshot_key)")
        self._key = key

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
        """The snapshot, None if there is none; SnapshotRejected if its signature does not verify."""
        try:
            data = self.snapshot_path.read_bytes()
        except FileNotFoundError:
            return None
        snapshot = pickle.loads(verified(self._key, data))
        if getattr(snapshot, "version", None) != SNAPSHOT_VERSION:
            return None
        return snapshot

    def save_bytes(self, data: bytes) -> None:
        """Sign the pickled snapshot `data` and write it atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.snapshot_path, sign(self._key, data))

    def set_aside(self, suffix: str = ".rejected") -> None:
        """Move the snapshot out of the way (kept for a look, never loaded again)."""
        if self.snapshot_path.is_file():
            self.snapshot_path.replace(self.snapshot_path.with_suffix(suffix))

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


def capture(pipeline: Any, input_offsets: dict[TP, int] | None = None,
            output_offsets: dict[TP, int] | None = None, extra: dict[str, Any] | None = None) -> Snapshot:
    """The pipeline's whole state (its detectors wherever they run, the decision stage, the dedupe ids,
    the watermark) with the offsets it covers. Every started batch must be finished first."""
    detectors = pipeline.snapshot_detectors()  # first: it takes lagged answers in flight into `late`
    return Snapshot(input_offsets=dict(input_offsets or {}), output_offsets=dict(output_offsets or {}),
                    detectors=detectors, decision=pipeline.decision,
                    seen=(pipeline.seen.capacity, list(pipeline.seen._ids)),  # noqa: SLF001 - a list pickles fast
                    watermark=pipeline.watermark,
                    extra={**(extra or {}), "position": pipeline.position, "drift": pipeline.drift,
                           "waiting": {name: list(found) for name, found in pipeline.waiting.items()},
                           "late": list(pipeline.late)})


def restore_into(pipeline: Any, snapshot: Snapshot) -> list[str]:
    """Put `snapshot`'s state into a freshly built pipeline; return the names of detectors the snapshot has
    state for that the pipeline does not run."""
    from collections import OrderedDict

    from detectors.pipeline import SeenIds

    unknown = pipeline.restore_detectors(snapshot.detectors)
    pipeline.decision = snapshot.decision
    capacity, ids = snapshot.seen
    seen = SeenIds(capacity)
    seen._ids = OrderedDict.fromkeys(ids)  # noqa: SLF001 - the inverse of capture
    pipeline.seen = seen
    pipeline.watermark = snapshot.watermark
    pipeline.position = snapshot.extra.get("position", 0)
    if snapshot.extra.get("drift") is not None:
        pipeline.drift = snapshot.extra["drift"]
    pipeline.waiting = {name: list(found) for name, found in snapshot.extra.get("waiting", {}).items()}
    pipeline.late = list(snapshot.extra.get("late", []))
    return unknown
