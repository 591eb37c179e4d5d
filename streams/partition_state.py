"""An actor partition's state on a Kafka topic, so that it follows the partition from worker to worker.

The state topic (`SHILLGUARD_TOPIC_ACTOR_STATE`) has the inputs' partition count; partition p's snapshots go
to its partition p. Most of a partition's state is the year of released events its decision stage keeps for
retraction, and it only grows at one end, so snapshots are incremental (`Chain`):
- a base holds the whole state; its id B is new each time. Records `base:B:<i>` (chunks: a record holds at
  most `CHUNK` bytes; Kafka's default limit is 1 MB), then the head `base:B` naming the chunk count;
- a delta n (1, 2, ...) of base B holds the rest of the state whole (small) and, of the released events, only
  those released since the previous snapshot and the ids forgotten since (the decision stage's journal).
  Records `delta:B:n:<i>`, then the head `delta:B:n`;
- a new base is written once the deltas since the base outweigh it, or after `MAX_DELTAS` deltas; right after
  its head, tombstones (value None) for every key of the chain it supersedes.
A base or delta counts only once its head is stored, so a worker killed mid-write leaves the previous state in
force. Restoring = the latest complete base and its complete deltas 1, 2, ... in order up to the first
missing, incomplete or rejected one. Every value starts with the id of its write, so that the chunks of two
writes of one key (a delta rewritten after a kill) never mix.

Compaction: a restore reads the partition as compaction leaves it (the latest record of each key; a tombstone
deletes its key) whether or not the broker has compacted, so compaction changes nothing: no key is written
twice except a delta whose earlier write was incomplete, and a key is tombstoned only once a base that does
not need it is complete before it. The topic can be compacted (`up` creates it with `cleanup.policy=compact`
where the broker allows).

Each base and delta is signed like the local snapshot (streams.state: HMAC-SHA256 with SHILLGUARD_STATE_KEY,
which every worker of a deployment shares), with its base id and number inside the signed bytes, so that a
state record not signed with the key is never unpickled, nor a signed delta replayed out of its place.
Snapshots written before deltas (`chunk:<i>` and `head`) are still restored, and tombstoned by the next base.
"""

from __future__ import annotations

import pickle
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from streams.state import SnapshotRejected, sign, verified

CHUNK = 512 * 1024
MAX_DELTAS = 64  # a restore applies at most this many deltas to its base

Record = tuple[bytes, bytes | None]


@dataclass
class Chain:
    """What the writer of one partition's snapshots knows of the records on the topic (not pickled)."""

    base: str | None = None  # the id of the base in force
    base_bytes: int = 0
    deltas: list[int] = field(default_factory=list)  # the sizes of its deltas 1, 2, ...
    keys: list[bytes] = field(default_factory=list)  # the keys this base and its deltas wrote
    stale: set[bytes] = field(default_factory=set)  # keys no restore needs: tombstoned with the next base
    unconfirmed: bool = False  # records handed out, not known stored yet

    def records(self, state: Any, decision: Any, key: bytes) -> list[Record]:
        """(record key, value) of the next snapshot of `state`, whose decision stage is `decision`: a delta,
        or a new base followed by tombstones. `stored` once the broker has them all."""
        if self.base is None or self.unconfirmed or not decision.journaling or len(self.deltas) >= MAX_DELTAS:
            # A write that may have failed leaves a gap in the journal: only a base is safe after it.
            out = self._base(state, decision, key)
        else:
            out = self._delta(state, decision, key) or self._base(state, decision, key)
        self.unconfirmed = True
        return out

    def stored(self) -> None:
        """The records last handed out are on the topic (the tombstones too)."""
        if self.unconfirmed and not self.deltas:
            self.stale = set()
        self.unconfirmed = False

    def _base(self, state: Any, decision: Any, key: bytes) -> list[Record]:
        base = uuid.uuid4().hex
        name = f"base:{base}".encode()
        data = sign(key, name + b"\n" + pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        decision.journal_start()  # the next delta starts from here (nothing runs between: one thread)
        out = _framed(name, data)
        # The superseded chain's keys: no restore needs them once this head is stored (they follow it).
        self.stale |= set(self.keys)
        new = {k for k, _ in out}
        out += [(k, None) for k in sorted(self.stale - new)]
        self.base, self.base_bytes, self.deltas, self.keys = base, len(data), [], sorted(new)
        return out

    def _delta(self, state: Any, decision: Any, key: bytes) -> list[Record] | None:
        added, removed = decision.journal_take()
        taken = decision.detach_released()
        try:
            payload = pickle.dumps((state, added, removed), protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            decision.attach_released(taken)
        if sum(self.deltas) + len(payload) > self.base_bytes:
            return None  # the deltas outweigh their base: a new base is smaller to restore from
        name = f"delta:{self.base}:{len(self.deltas) + 1}".encode()
        data = sign(key, name + b"\n" + payload)
        out = _framed(name, data)
        self.deltas.append(len(data))
        self.keys += [k for k, _ in out]
        return out


def _framed(name: bytes, data: bytes) -> list[Record]:
    """`data` as chunks `<name>:<i>` then the head `<name>`, each value led by the id of this write."""
    write = uuid.uuid4().hex.encode()
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    out: list[Record] = [(name + b":%d" % i, write + b"\n" + chunk) for i, chunk in enumerate(chunks)]
    out.append((name, write + b"\n" + str(len(chunks)).encode()))
    return out


def compacted(messages: Iterable[Any]) -> dict[bytes, tuple[int, bytes]]:
    """The partition as compaction leaves it: key -> (offset order, value) of its latest record, tombstoned
    keys left out."""
    last: dict[bytes, tuple[int, bytes]] = {}
    for order, message in enumerate(messages):
        name = message.key or b""
        if message.value is None:
            last.pop(name, None)
        else:
            last[name] = (order, message.value)
    return last


def restore(messages: Iterable[Any], key: bytes, decision_of: Callable[[Any], Any],
            on_rejected: Callable[[str], None] | None = None) -> tuple[Any | None, Chain]:
    """The state of the latest complete base among a partition's state records (in offset order) with its
    complete deltas applied in order, or None; and the chain to write the next snapshots on. `decision_of`
    finds the decision stage in a state. A base or delta whose signature does not verify is skipped (reported
    to `on_rejected`): the base before it, or the state before the delta, stands."""
    messages = list(messages)
    last = compacted(messages)
    bases = sorted(((order, name[5:].decode()) for name, (order, _) in last.items()
                    if name.startswith(b"base:") and name.count(b":") == 1), reverse=True)
    for _, base in bases:
        name = f"base:{base}".encode()
        data = _load(last, name, key, on_rejected)
        if data is None:
            continue
        state = pickle.loads(data)
        chain = Chain(base, _size(last, name), [], _keys(last, name))
        while len(chain.deltas) < MAX_DELTAS:
            name = f"delta:{base}:{len(chain.deltas) + 1}".encode()
            data = _load(last, name, key, on_rejected)
            if data is None:
                break  # not written (yet), cut short by a kill, or rejected: the state before it stands
            rest, added, removed = pickle.loads(data)
            decision = decision_of(state)
            decision.journal_replay(added, removed)
            decision_of(rest).attach_released(decision.detach_released())
            state = rest
            chain.deltas.append(_size(last, name))
            chain.keys += _keys(last, name)
        chain.stale = set(last) - set(chain.keys)  # later deltas that do not apply, incomplete writes
        decision_of(state).journal_start()
        return state, chain
    state = _legacy(messages, key, on_rejected)
    return state, Chain(stale=set(last))  # no base: the next snapshot is one, and tombstones the rest


def _load(last: dict[bytes, tuple[int, bytes]], name: bytes, key: bytes,
          on_rejected: Callable[[str], None] | None) -> bytes | None:
    """The verified payload of base or delta `name`, or None if its head or a chunk is missing."""
    head = last.get(name)
    if head is None:
        return None
    write, _, count = head[1].partition(b"\n")
    parts = []
    for i in range(int(count)):
        chunk = last.get(name + b":%d" % i)
        if chunk is None or not chunk[1].startswith(write + b"\n"):
            return None  # compacted away under, or mixed with, another write
        parts.append(chunk[1][len(write) + 1:])
    try:
        payload = verified(key, b"".join(parts))
        if not payload.startswith(name + b"\n"):
            raise SnapshotRejected(f"a signed state record under {name.decode()} that names another place")
    except SnapshotRejected as error:
        if on_rejected is not None:
            on_rejected(f"{name.decode()}: {error}")
        return None
    return payload[len(name) + 1:]


def _keys(last: dict[bytes, tuple[int, bytes]], name: bytes) -> list[bytes]:
    count = int(last[name][1].partition(b"\n")[2])
    return [name + b":%d" % i for i in range(count)] + [name]


def _size(last: dict[bytes, tuple[int, bytes]], name: bytes) -> int:
    write = last[name][1].partition(b"\n")[0]
    return sum(len(last[k][1]) - len(write) - 1 for k in _keys(last, name)[:-1])


def _legacy(messages: list[Any], key: bytes, on_rejected: Callable[[str], None] | None) -> Any | None:
    """The latest complete snapshot written before deltas (chunks `chunk:<i>` then a head `head`, pickled
    whole, each value led by the snapshot's id), as restored then."""
    chunks: dict[bytes, dict[int, bytes]] = {}  # snapshot id -> its chunks seen so far
    complete: list[tuple[bytes, int]] = []
    for message in messages:
        if message.value is None:
            continue
        snapshot, _, body = message.value.partition(b"\n")
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
