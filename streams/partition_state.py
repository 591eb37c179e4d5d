"""An actor partition's state on a Kafka topic, so that it follows the partition from worker to worker.

The state topic (`SHILLGUARD_TOPIC_ACTOR_STATE`) has the inputs' partition count; partition p's snapshots go
to its partition p, each as numbered chunks (a record holds at most `CHUNK` bytes; Kafka's default limit is
1 MB) followed by a head record that names the snapshot and its chunk count: a snapshot counts only once its
head is stored, so a worker killed mid-write leaves the previous one in force. Keys are `chunk:<i>` and
`head`, so that on Apache Kafka the topic can be compacted (the latest of each key is all a restore needs;
`up` creates it with `cleanup.policy=compact` where the broker allows). Each snapshot is signed like the
local one (streams.state: HMAC-SHA256 with SHILLGUARD_STATE_KEY, which every worker of a deployment shares):
a state record not signed with the key is never unpickled.
"""

from __future__ import annotations

import pickle
import uuid
from typing import Any, Callable, Iterable

from streams.state import SnapshotRejected, sign, verified

CHUNK = 512 * 1024


def records(state: Any, key: bytes) -> list[tuple[bytes, bytes]]:
    """(record key, value) of one snapshot of `state`: its chunks, then its head."""
    data = sign(key, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    snapshot = uuid.uuid4().hex.encode()
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    out = [(f"chunk:{i}".encode(), snapshot + b"\n" + chunk) for i, chunk in enumerate(chunks)]
    out.append((b"head", snapshot + b"\n" + str(len(chunks)).encode()))
    return out


def latest(messages: Iterable[Any], key: bytes, on_rejected: Callable[[str], None] | None = None) -> Any | None:
    """The state of the latest complete snapshot among a partition's state records (in offset order), or
    None. A snapshot whose signature does not verify is skipped (reported to `on_rejected`), and the one
    before it stands."""
    chunks: dict[bytes, dict[int, bytes]] = {}  # snapshot id -> its chunks seen so far
    complete: list[tuple[bytes, int]] = []
    for message in messages:
        snapshot, _, body = (message.value or b"").partition(b"\n")
        name = message.key or b""
        if name.startswith(b"chunk:"):
            chunks.setdefault(snapshot, {})[int(name[6:])] = body
        elif name == b"head":
            complete.append((snapshot, int(body)))
    for snapshot, count in reversed(complete):
        parts = chunks.get(snapshot, {})
        if any(i not in parts for i in range(count)):
            continue  # compacted away under a later snapshot's chunks: an older head
        try:
            return pickle.loads(verified(key, b"".join(parts[i] for i in range(count))))
        except SnapshotRejected as error:
            if on_rejected is not None:
                on_rejected(str(error))
    return None
