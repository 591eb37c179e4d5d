"""Incremental snapshots of an actor partition (streams.partition_state): a base and deltas on a compacted
topic restore the same decision stage as a full snapshot, whatever a kill, compaction or tampering left."""

from __future__ import annotations

import copy
import pickle
import random
from collections import namedtuple
from typing import Any

import pytest

from detectors.base import Signal
from detectors.decision import DecisionStage
from detectors.events import RatingEvent
from detectors.stages import ActorStage
from streams import partition_state
from streams.actors import Partition
from streams.partition_state import Chain, restore

KEY = b"k" * 32
Message = namedtuple("Message", "key value")


def decision_of(state: Partition) -> DecisionStage:
    return state.stage.decision


class Stream:
    """A partition's decision stage fed a seeded stream with every way a released event leaves the retraction
    index: expiry (short horizon), the per-entity bound, flags (recent and whole history) and implicated ids."""

    def __init__(self, seed: int = 7):
        self.random = random.Random(seed)
        self.ts = 0.0
        self.n = 0
        self.state = Partition(ActorStage(DecisionStage(
            hold_seconds=10, retraction_horizon=20000, recent_retraction=3000, max_released_per_entity=30)))
        self.released: list[str] = []

    def user(self) -> str:
        """A few busy users (over the per-entity bound), many quiet ones."""
        return f"u{self.random.randint(0, 2) if self.random.random() < 0.3 else self.random.randint(0, 150)}"

    def step(self, state: Partition | None = None) -> list[tuple[str, str]]:
        """One batch: a few events, a release, sometimes a signal. The same draws whatever `state` is fed."""
        stage = decision_of(state or self.state)
        rand, out = self.random, []
        for _ in range(rand.randint(1, 6)):
            self.ts += rand.uniform(0, 30)
            self.n += 1
            stage.admit(RatingEvent(event_id=f"e{self.n}", ts=self.ts, user_id=self.user(),
                                    item_id=f"i{rand.randint(0, 9)}", rating=rand.randint(1, 5)))
        outcomes = stage.release(self.ts)
        roll = rand.random()
        if roll < 0.03:  # a flag: retracts the user's recent released events
            _, retracted = stage.apply([Signal("user", f"u{rand.randint(0, 150)}", "profile", 0.95)], self.ts)
            outcomes += retracted
        elif roll < 0.045:  # whole history: the older kept events go too
            signal = Signal("user", f"u{rand.randint(0, 150)}", "copies", 0.95, whole_history=True)
            outcomes += stage.apply([signal], self.ts)[1]
        elif roll < 0.1:  # a signal naming released events of other users
            named = tuple(rand.sample(self.released, min(3, len(self.released))))
            outcomes += stage.apply([Signal("item", f"i{rand.randint(0, 9)}", "dense_block", 0.95,
                                            event_ids=named)], self.ts)[1]
        self.released += [o.event.event_id for o in outcomes if o.verdict == "clean"]
        return [(o.event.event_id, o.verdict) for o in outcomes]


def write(log: list[Message], chain: Chain, state: Partition, head: bool = True) -> list[Message]:
    """One snapshot onto the log (as the actor worker does); without `head`, a write killed before its head."""
    records = chain.records(state, decision_of(state), KEY)
    if not head:
        first = records[0][0]
        records = records[:[k for k, _ in records].index(first[:first.rindex(b":")])]  # its chunks only
    log.extend(Message(k, v) for k, v in records)
    if head:
        chain.stored()
    return [Message(k, v) for k, v in records]


def compact(log: list[Message], upto: int | None = None) -> list[Message]:
    """What log compaction leaves of the log's first `upto` records (all by default): the latest of each key,
    tombstoned keys gone (after delete.retention.ms), in offset order; the rest (the active segment) as is."""
    upto = len(log) if upto is None else upto
    head, tail = log[:upto], log[upto:]
    latest = {m.key: i for i, m in enumerate(head)}
    kept = [m for i, m in enumerate(head) if latest[m.key] == i and m.value is not None]
    return kept + tail


def same(a: DecisionStage, b: DecisionStage) -> None:
    """Equal decision stages (the released events' dict order aside; an empty deque counts as none)."""
    skip = {"_released", "_released_by_id", "_seq", "_journal", "fusion"}
    assert {k: v for k, v in a.__dict__.items() if k not in skip} == \
        {k: v for k, v in b.__dict__.items() if k not in skip}
    assert repr(a._seq) == repr(b._seq)
    assert pickle.dumps(a.fusion) == pickle.dumps(b.fusion)
    assert {k: list(q) for k, q in a._released.items() if q} == {k: list(q) for k, q in b._released.items() if q}
    assert a._released_by_id == b._released_by_id


def run(stream: Stream, log: list[Message], chain: Chain, batches: int, every: int = 5) -> None:
    for i in range(batches):
        stream.step()
        if i % every == every - 1:
            write(log, chain, stream.state)


def started(seed: int, batches: int) -> tuple[Stream, list[Message], Chain, Any]:
    """A stream run `batches` batches with its writes, and a copy of its state then."""
    stream, log, chain = Stream(seed), [], Chain()
    run(stream, log, chain, batches)
    return stream, log, chain, pickle.loads(pickle.dumps(stream.state))


def kinds(log: list[Message]) -> dict[str, int]:
    """Heads of bases and deltas on the log, and tombstones."""
    keys = [m.key for m in log if m.value is not None]
    return {"bases": sum(k.startswith(b"base:") and k.count(b":") == 1 for k in keys),
            "deltas": sum(k.startswith(b"delta:") and k.count(b":") == 2 for k in keys),
            "tombstones": sum(m.value is None for m in log)}


def fork(stream: Stream, state: Partition) -> Stream:
    """The same stream from here on, fed to `state`."""
    other = copy.copy(stream)
    other.random = random.Random()
    other.random.setstate(stream.random.getstate())
    other.released, other.state = list(stream.released), state
    return other


def test_base_and_deltas_restore_what_a_full_snapshot_does():
    stream, log, chain = Stream(), [], Chain()
    run(stream, log, chain, 600)
    counted = kinds(log)
    assert counted["bases"] >= 2 and counted["deltas"] >= 20 and counted["tombstones"] > 0, counted
    restored, restored_chain = restore(log, KEY, decision_of)
    full = pickle.loads(pickle.dumps(stream.state))  # what a whole snapshot restores
    same(decision_of(restored), decision_of(full))
    assert restored.stage.decision._released, "the stream keeps released events"
    assert restored_chain.base == chain.base and restored_chain.deltas == chain.deltas
    # Deciding on: the same outcomes from either, and from the stage that never stopped.
    a, b = fork(stream, restored), fork(stream, full)
    seen = []
    for _ in range(300):
        outcomes = stream.step()
        assert a.step() == b.step() == outcomes
        seen += outcomes
    assert {"clean", "quarantined", "retracted"} <= {v for _, v in seen}
    same(decision_of(restored), decision_of(full))


def test_restored_chain_goes_on_with_deltas():
    stream, log, chain = Stream(3), [], Chain()
    run(stream, log, chain, 100)
    state, chain2 = restore(log, KEY, decision_of)
    stream.state = state  # the next owner
    base = chain2.base
    run(stream, log, chain2, 10)
    assert chain2.base == base and log[-1].key.startswith(f"delta:{base}:".encode())  # no new base on a move
    restored, _ = restore(log, KEY, decision_of)
    same(decision_of(restored), decision_of(stream.state))


def test_a_write_killed_before_its_head_is_ignored():
    stream, log, chain, kept = started(11, 200)
    for _ in range(5):
        stream.step()
    killed = write(log, chain, stream.state, head=False)
    assert killed and all(m.key.startswith(b"delta:") and m.key.count(b":") == 3 for m in killed)
    restored, chain2 = restore(log, KEY, decision_of)
    same(decision_of(restored), decision_of(kept))
    # The next owner writes that delta again, over the killed chunks, and it counts.
    stream.state = restored
    for _ in range(5):
        stream.step()
    write(log, chain2, restored)
    again, _ = restore(log, KEY, decision_of)
    same(decision_of(again), decision_of(restored))
    # A new base killed mid-write: the old base and its deltas stand.
    kept = pickle.loads(pickle.dumps(restored))
    chain2.deltas += [0] * partition_state.MAX_DELTAS  # the next write is a base
    stream.step()
    killed = write(log, chain2, restored, head=False)
    assert killed and all(m.key.startswith(b"base:") and m.key.count(b":") == 2 for m in killed)
    restored, _ = restore(log, KEY, decision_of)
    same(decision_of(restored), decision_of(kept))


@pytest.mark.parametrize("share", [1.0, 0.5, 0.9])
def test_compaction_removes_nothing_a_restore_needs(share):
    stream, log, chain = Stream(5), [], Chain()
    run(stream, log, chain, 600)
    assert kinds(log)["tombstones"] > 0
    compacted = compact(log, int(len(log) * share))
    assert len(compacted) < len(log)
    restored, _ = restore(compacted, KEY, decision_of)
    same(decision_of(restored), decision_of(stream.state))
    # What compaction leaves of a full compaction is the latest base and its deltas only.
    if share == 1.0:
        bases = {m.key.split(b":")[1] for m in compacted}
        assert bases == {chain.base.encode()}


def test_a_tampered_delta_is_rejected_and_the_state_before_it_stands():
    stream, log, chain, kept = started(13, 120)
    for _ in range(5):
        stream.step()
    written = write(log, chain, stream.state)
    assert written[0].key.startswith(b"delta:")
    i = len(log) - len(written)  # its first chunk: one byte of the pickle changed
    value = bytearray(log[i].value)
    value[-10] ^= 1
    log[i] = Message(log[i].key, bytes(value))
    rejected = []
    restored, _ = restore(log, KEY, decision_of, rejected.append)
    assert rejected and "delta:" in rejected[0]
    same(decision_of(restored), decision_of(kept))


def test_a_signed_delta_replayed_under_another_key_is_rejected():
    stream, log, chain, kept = started(17, 120)
    stream.step()
    first = write(log, chain, stream.state)
    stream.step()
    # The same signed bytes written again as the next delta (a replay): its number is inside the signature.
    name = f"delta:{chain.base}:{len(chain.deltas) + 1}".encode()
    log.extend(Message(name + m.key[m.key.rindex(b":"):] if m.key.count(b":") == 3 else name, m.value)
               for m in first)
    rejected = []
    restored, _ = restore(log, KEY, decision_of, rejected.append)
    assert rejected
    after_first, _ = restore(log[:len(log) - len(first)], KEY, decision_of)
    same(decision_of(restored), decision_of(after_first))
    assert kept is not None


def test_a_snapshot_from_before_deltas_is_restored_then_replaced():
    stream = Stream(19)
    for _ in range(50):
        stream.step()
    data = partition_state.sign(KEY, pickle.dumps(stream.state))
    log = [Message(b"chunk:0", b"s1\n" + data), Message(b"head", b"s1\n1")]
    restored, chain = restore(log, KEY, decision_of)
    same(decision_of(restored), decision_of(stream.state))
    records = chain.records(restored, decision_of(restored), KEY)
    assert records[0][0].startswith(b"base:")
    assert {k for k, v in records if v is None} == {b"chunk:0", b"head"}


def test_two_writes_of_one_delta_never_mix(monkeypatch):
    """A partition's old owner, not quite dead, and its new one write the same delta at once: the chunks under
    the latest head are not all of its write, so that delta is incomplete (not taken for tampered)."""
    monkeypatch.setattr(partition_state, "CHUNK", 4096)
    stream, log, chain, kept = started(23, 150)
    stream.step()
    zombie, other = copy.deepcopy(chain), copy.deepcopy(stream.state)  # deepcopy leaves the journal out
    decision_of(other)._journal = copy.deepcopy(decision_of(stream.state)._journal)
    decision_of(other).admit(RatingEvent(event_id="z", ts=0.0, user_id="u1", item_id="i1", rating=1))
    ours = chain.records(stream.state, decision_of(stream.state), KEY)
    theirs = zombie.records(other, decision_of(other), KEY)
    assert ours[0][0].startswith(b"delta:") and len(theirs) > 2 and ours[0][0] == theirs[0][0]
    assert ours[-1][0] == theirs[-1][0]
    log += [Message(*r) for r in theirs[:-1]] + [Message(*ours[0])] + [Message(*theirs[-1])]
    rejected = []
    restored, _ = restore(log, KEY, decision_of, rejected.append)
    same(decision_of(restored), decision_of(kept))
    assert rejected == []
