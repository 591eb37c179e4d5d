"""Recovery of the guard (before the app starts): its snapshot restored, a new broker told from a restart,
and what a previous run published after its last snapshot, so as not to publish it again
(streams.publishing). Its hooks stay on the guard: `broker_offset`, `restore_extra`, `decides`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson

from streams import state as state_module
from streams.broker import kafka_python_config
from streams.reader import end_offsets, header, read
from streams.settings import Settings
from streams.state import Snapshot, SnapshotRejected
from streams.topics import Topics

log = logging.getLogger(__name__)
TP = tuple[str, int]


class Published:
    """What a previous run of this worker published after its last snapshot: not to be published again."""

    def __init__(self) -> None:
        self.decided: dict[str, str] = {}  # event_id -> verdict on the clean or quarantined topic
        self.retracted: set[str] = set()
        self.rejected: set[str] = set()  # source ids (topic:partition:offset) of dead letters

    def __bool__(self) -> bool:
        return bool(self.decided or self.retracted or self.rejected)

    def __len__(self) -> int:
        return len(self.decided) + len(self.retracted) + len(self.rejected)

    def merge(self, other: "Published") -> None:
        self.decided.update(other.decided)
        self.retracted |= other.retracted
        self.rejected |= other.rejected


def note_output(published: Any, record: Any, topics: Topics) -> None:
    """One record of an output topic into what was published (`published.decided`, `.retracted`,
    `.rejected`: a `Published`, or an actor partition's own)."""
    if record.topic == topics.rejected:
        src = header(record, "src")
        if src is not None:
            published.rejected.add(src.decode())
        return
    try:
        value = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return
    event_id = value.get("event_id") if isinstance(value, dict) else None
    if event_id is None:
        return
    # An analyst's word (a release, a restoration) is not the pipeline's verdict on the event.
    if header(record, "released_by") is not None or value.get("verdict") == "restored":
        return
    if record.topic == topics.retracted:
        published.retracted.add(str(event_id))
    else:
        published.decided[str(event_id)] = "clean" if record.topic == topics.clean else "quarantined"


def scan_published(settings: Settings, topics: Topics, start: dict[TP, int]) -> tuple[Published, dict[TP, int]]:
    """Outcomes on the output topics from `start` to their end, and the end offsets."""
    published = Published()
    config = kafka_python_config(settings)
    ends: dict[TP, int] = dict(start)
    for record in read(config, [topics.clean, topics.quarantined, topics.retracted, topics.rejected], start):
        ends[(record.topic, record.partition)] = record.offset + 1
        note_output(published, record, topics)
    return published, ends



def recover(guard: Any, store_epoch: str | None = None) -> str:
    """Restore the snapshot; return the consumer group id to use. `store_epoch` is the quarantine
    store's current topic epoch, kept where the topics are the ones it knew.

    What the detectors and the decision stage learned about users, items, sellers and clients does not
    depend on the broker: on a new broker (its topics behind the snapshot's offsets: the embedded one,
    which keeps them in memory, after a restart) that state is kept, and only the offsets start afresh,
    in a new consumer group and a new topic epoch."""
    snapshot = None
    try:
        snapshot = guard.state_dir.load()
    except SnapshotRejected as error:
        log.error("snapshot %s rejected, never unpickled: %s; set aside as .rejected, starting afresh",
                  guard.state_dir.snapshot_path, error)
        guard.state_dir.set_aside()
    except Exception as error:  # noqa: BLE001 - a truncated or foreign pickle is as good as none
        log.warning("snapshot unreadable (%s): starting afresh", error)
    config = kafka_python_config(guard.settings)
    new_topics = False
    if snapshot is not None:
        ends = end_offsets(config, {topic for topic, _ in snapshot.input_offsets} | set(guard.inputs))
        behind = [tp for tp, offset in snapshot.input_offsets.items()
                  if ends.get(tp, -1) < guard.broker_offset(offset)]
        if behind:
            log.warning("the broker's topics are behind the snapshot (%s: %s < %s): a new broker. Keeping "
                        "what the detectors learned, reading the new topics from their beginning",
                        behind[0], ends.get(behind[0]), guard.broker_offset(snapshot.input_offsets[behind[0]]))
            restore(guard, snapshot, offsets=False)
            guard.state_dir.new_incarnation()
            new_topics = True
        else:
            restore(guard, snapshot)
    elif guard.state_dir.snapshot_path.is_file():
        guard.state_dir.discard()
    group = f"{guard.settings.app_id}-{guard.state_dir.incarnation()}"
    if not guard.decides:
        guard.output_offsets = {}
    elif snapshot is None or new_topics:
        # Reading the inputs from their beginning: anything already on the output topics (a run whose
        # state was lost) is suppressed, nothing is decided twice.
        guard.published, guard.output_offsets = scan_published(guard.settings, guard.topics, {})
    else:
        found, guard.output_offsets = scan_published(guard.settings, guard.topics, snapshot.output_offsets)
        guard.published.merge(found)
    if new_topics or (snapshot is None and not guard.output_offsets_reached()):
        guard.epoch = uuid.uuid4().hex[:12]  # nothing published on these topics yet: a new epoch
    elif snapshot is not None:
        guard.epoch = snapshot.extra.get("epoch") or store_epoch or uuid.uuid4().hex[:12]
    else:
        guard.epoch = store_epoch or uuid.uuid4().hex[:12]  # state lost, topics kept: rows still name them
    guard.restored = True
    if guard.published:
        log.info("restart: %d outcomes published after the last snapshot will not be published again",
                 len(guard.published))
    return group


def restore(guard: Any, snapshot: Snapshot, offsets: bool = True) -> None:
    """The pipeline's state; with `offsets`, also where it stood on the topics and what it had
    published after (without: topics that are not the snapshot's, read from their beginning)."""
    for name in state_module.restore_into(guard.pipeline, snapshot):
        log.warning("snapshot has state for detector %s, which is not configured", name)
    guard.counts.update(snapshot.extra.get("counts", {}))
    guard.restore_extra(snapshot.extra)
    if not offsets:
        log.info("restored the detectors and decision stage: watermark %.0f, %d events held",
                 snapshot.watermark, guard.pipeline.decision.held_count)
        return
    guard.input_offsets = dict(snapshot.input_offsets)
    guard.skip_below = dict(snapshot.input_offsets)
    guard.control_offsets = dict(snapshot.extra.get("control_offsets", {}))
    guard.output_offsets = dict(snapshot.output_offsets)
    published = snapshot.extra.get("published")
    if published is not None:
        guard.published = published
    log.info("restored snapshot: watermark %.0f, %d events held, offsets %s", snapshot.watermark,
             guard.pipeline.decision.held_count, sum(snapshot.input_offsets.values()))
