"""The guard agent: input topics in micro-batches through one `Pipeline`, outcomes out, state snapshotted.

One worker consumes every input partition (the detectors' state is global: the profile detector scores a
user against the whole population) with agent concurrency 1, feeding `stream.noack_take(batch, within)`
batches to the same `Pipeline.process` that `replay` uses; a timer calls `Pipeline.idle` when input stops,
so held events still leave on a quiet stream.

Delivery: at least once, made exactly once per event by deduplication.
- Input is acknowledged to Faust (and so committed) only once a snapshot covers it; a snapshot is taken
  after every outcome it implies has been acknowledged by the broker.
- A restarted worker restores the snapshot, skips redelivered messages below its offsets, and reads what
  was published after it (streams.reader): those event ids (and dead letters' source offsets) are
  suppressed when the restored pipeline decides them again, and carried in later snapshots until then.
So every accepted event gets exactly one message on `events.clean` or `events.quarantined` (a later
retraction one on `events.retracted`), every rejected input message exactly one on `events.rejected`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from detectors.decision import Outcome
from detectors.events import Rejection, actor, to_json
from detectors.pipeline import Pipeline, Step
from streams import state as state_module
from streams.activity import ItemActivity
from streams.align import EventTimeAligner, event_time
from streams.assembly import build_pipeline
from streams.broker import kafka_python_config
from streams.metrics import Metrics
from streams.publisher import BatchPublisher
from streams.outcomes import dumps, flag_record, outcome_record, rejection_record
from streams.reader import end_offsets, header, read, source_id
from streams.settings import Settings
from streams.sinks import drift_finding
from streams.state import Snapshot, SnapshotRejected, StateDir, snapshot_key
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


def scan_published(settings: Settings, topics: Topics, start: dict[TP, int]) -> tuple[Published, dict[TP, int]]:
    """Outcomes on the output topics from `start` to their end, and the end offsets."""
    published = Published()
    config = kafka_python_config(settings)
    ends: dict[TP, int] = dict(start)
    for record in read(config, [topics.clean, topics.quarantined, topics.retracted, topics.rejected], start):
        ends[(record.topic, record.partition)] = record.offset + 1
        if record.topic == topics.rejected:
            src = header(record, "src")
            if src is not None:
                published.rejected.add(src.decode())
            continue
        try:
            value = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            continue
        event_id = value.get("event_id") if isinstance(value, dict) else None
        if event_id is None:
            continue
        # An analyst's word (a release, a restoration) is not the pipeline's verdict on the event.
        if header(record, "released_by") is not None or value.get("verdict") == "restored":
            continue
        if record.topic == topics.retracted:
            published.retracted.add(str(event_id))
        elif record.topic == topics.clean:
            published.decided[str(event_id)] = "clean"
        else:
            published.decided[str(event_id)] = "quarantined"
    return published, ends


class Guard:
    """Owns the worker's pipeline, its offsets, its pending sends and its snapshots. `decides`: its pipeline
    decides and it publishes outcomes (the detection stage of the split topology, streams.detection, does
    neither)."""

    decides = True

    @property
    def take_size(self) -> int:
        """Messages the agent takes at most at once."""
        return self.settings.batch_size

    def __init__(self, settings: Settings, topics: Topics, metrics: Metrics | None = None,
                 pipeline: Pipeline | None = None):
        self.settings = settings
        self.topics = topics
        self.metrics = metrics or Metrics()
        self.pipeline = pipeline or build_pipeline(settings, detection_only=not self.decides)
        self.inputs = self.input_topics()
        self.state_dir = StateDir(settings.state_dir, settings.app_id, snapshot_key(settings))
        self.epoch: str | None = None  # the topic epoch (streams.store): new when the topics are new
        self.app: Any = None
        self.input_offsets: dict[TP, int] = {}
        self.control_offsets: dict[TP, int] = {}  # the control topic's, applied and covered by a snapshot
        self.skip_below: dict[TP, int] = {}
        self.output_offsets: dict[TP, int] = {}
        self.published = Published()
        self._publisher: BatchPublisher | None = None
        self.unacked: list[Any] = []
        self.produced_at: dict[str, float] = {}  # event_id -> produce time, for the latency histogram
        self.counts: Counter[str] = Counter()
        self.activity = ItemActivity()  # recent clean raters per item, for the console's ring picture
        self.rate = 0.0  # input messages per second over the last report interval
        self.last_trainer: dict[str, Any] | None = None  # the trainer's last control record
        self.restored = False
        self.assigned = False
        self.stopping = False  # the final snapshot is taken: nothing may use the pipeline any more
        self._lock: asyncio.Lock | None = None
        self._snapshot_lock: asyncio.Lock | None = None
        now = time.monotonic()
        self.last_input = self.last_idle = self.last_snapshot = self.last_report = now
        self.since_snapshot = 0
        self.dirty = False
        self.snapshot_cost = 0.0
        self.aligner = EventTimeAligner(settings.align_max_wait_seconds, settings.align_max_queued)
        self._highwaters: dict[TP, tuple[float, int | None]] = {}
        self._reported = Counter()
        self.pipeline_thread = ThreadPoolExecutor(1, thread_name_prefix="pipeline")
        self._unfinished: tuple[Any, list[Any]] | None = None  # a batch started, not yet finished

    # -- recovery (before the app starts) ----------------------------------------------------
    def recover(self, store_epoch: str | None = None) -> str:
        """Restore the snapshot; return the consumer group id to use. `store_epoch` is the quarantine
        store's current topic epoch, kept where the topics are the ones it knew.

        What the detectors and the decision stage learned about users, items, sellers and clients does not
        depend on the broker: on a new broker (its topics behind the snapshot's offsets: the embedded one,
        which keeps them in memory, after a restart) that state is kept, and only the offsets start afresh,
        in a new consumer group and a new topic epoch."""
        snapshot = None
        try:
            snapshot = self.state_dir.load()
        except SnapshotRejected as error:
            log.error("snapshot %s rejected, never unpickled: %s; set aside as .rejected, starting afresh",
                      self.state_dir.snapshot_path, error)
            self.state_dir.set_aside()
        except Exception as error:  # noqa: BLE001 - a truncated or foreign pickle is as good as none
            log.warning("snapshot unreadable (%s): starting afresh", error)
        config = kafka_python_config(self.settings)
        new_topics = False
        if snapshot is not None:
            ends = end_offsets(config, {topic for topic, _ in snapshot.input_offsets} | set(self.inputs))
            behind = [tp for tp, offset in snapshot.input_offsets.items()
                      if ends.get(tp, -1) < self.broker_offset(offset)]
            if behind:
                log.warning("the broker's topics are behind the snapshot (%s: %s < %s): a new broker. Keeping "
                            "what the detectors learned, reading the new topics from their beginning",
                            behind[0], ends.get(behind[0]), self.broker_offset(snapshot.input_offsets[behind[0]]))
                self._restore(snapshot, offsets=False)
                self.state_dir.new_incarnation()
                new_topics = True
            else:
                self._restore(snapshot)
        elif self.state_dir.snapshot_path.is_file():
            self.state_dir.discard()
        group = f"{self.settings.app_id}-{self.state_dir.incarnation()}"
        if not self.decides:
            self.output_offsets = {}
        elif snapshot is None or new_topics:
            # Reading the inputs from their beginning: anything already on the output topics (a run whose
            # state was lost) is suppressed, nothing is decided twice.
            self.published, self.output_offsets = scan_published(self.settings, self.topics, {})
        else:
            found, self.output_offsets = scan_published(self.settings, self.topics, snapshot.output_offsets)
            self.published.merge(found)
        if new_topics or (snapshot is None and not self.output_offsets_reached()):
            self.epoch = uuid.uuid4().hex[:12]  # nothing published on these topics yet: a new epoch
        elif snapshot is not None:
            self.epoch = snapshot.extra.get("epoch") or store_epoch or uuid.uuid4().hex[:12]
        else:
            self.epoch = store_epoch or uuid.uuid4().hex[:12]  # state lost, topics kept: rows still name them
        self.restored = True
        if self.published:
            log.info("restart: %d outcomes published after the last snapshot will not be published again",
                     len(self.published))
        return group

    def input_topics(self) -> tuple[str, ...]:
        return self.topics.inputs

    def apply_control(self, records: list[dict]) -> Step:
        return self.pipeline.control(records)

    def snapshot_extra(self) -> dict[str, Any]:
        """More state for the snapshot (a subclass's); `restore_extra` gets it back."""
        return {}

    def restore_extra(self, extra: dict[str, Any]) -> None:
        pass

    def output_offsets_reached(self) -> bool:
        """Has anything been published on the output topics?"""
        return any(offset > 0 for offset in self.output_offsets.values())

    def _restore(self, snapshot: Snapshot, offsets: bool = True) -> None:
        """The pipeline's state; with `offsets`, also where it stood on the topics and what it had
        published after (without: topics that are not the snapshot's, read from their beginning)."""
        for name in state_module.restore_into(self.pipeline, snapshot):
            log.warning("snapshot has state for detector %s, which is not configured", name)
        self.counts.update(snapshot.extra.get("counts", {}))
        self.restore_extra(snapshot.extra)
        if not offsets:
            log.info("restored the detectors and decision stage: watermark %.0f, %d events held",
                     snapshot.watermark, self.pipeline.decision.held_count)
            return
        self.input_offsets = dict(snapshot.input_offsets)
        self.skip_below = dict(snapshot.input_offsets)
        self.control_offsets = dict(snapshot.extra.get("control_offsets", {}))
        self.output_offsets = dict(snapshot.output_offsets)
        published = snapshot.extra.get("published")
        if published is not None:
            self.published = published
        log.info("restored snapshot: watermark %.0f, %d events held, offsets %s", snapshot.watermark,
                 self.pipeline.decision.held_count, sum(snapshot.input_offsets.values()))

    # -- the agent's work ---------------------------------------------------------------------
    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    @property
    def ready(self) -> bool:
        return self.restored and self.assigned

    async def handle(self, events: list[Any]) -> None:
        await self._shielded(self._handle([event.message for event in events]), "processing a batch")

    async def _shielded(self, work: Any, doing: str) -> None:
        # Shielded: once work has changed the pipeline its outcomes must all be sent, even on shutdown.
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._crash(doing, error)

    async def _crash(self, doing: str, error: BaseException) -> None:
        """Stop the worker rather than carry on past a batch whose outcomes may be incomplete: a restart
        resumes from the last snapshot and redoes exactly what was lost."""
        log.critical("%s failed (%r): stopping; a restart resumes from the last snapshot", doing, error,
                     exc_info=error)
        if self.app is not None:
            await self.app.crash(error)
        raise error

    async def _handle(self, messages: list[Any]) -> None:
        async with self.lock:
            if self.stopping:  # taken after the final snapshot: unacknowledged, so redelivered after a restart
                return
            started = time.perf_counter()
            skip_below, aligner, in_counts = self.skip_below, self.aligner, Counter()
            event_time = self._event_time
            for message in messages:
                tp = (message.topic, message.partition)
                in_counts[message.topic] += 1
                floor = skip_below.get(tp)
                if floor is not None and message.offset < floor:
                    self.unacked.append(message)  # covered by the restored snapshot
                    self.metrics.skipped.inc()
                    continue
                aligner.add(tp, message.offset, event_time(message), message)
            if self.decides:  # the split's detection worker reads internal.accepted: lines the actor
                for topic, n in in_counts.items():  # workers count as their input (sums over pods stay right)
                    self.metrics.events_in.labels(topic).inc(n)
            self.since_snapshot += len(messages)
            self.last_input = time.monotonic()
            await self._process(aligner.release(self._lagging, self.last_input))
            self.last_input = time.monotonic()
            spent = time.perf_counter() - started
            self.metrics.batch_seconds.observe(spent)
            self.metrics.busy_seconds.inc(spent)
            self.metrics.batch_size.observe(len(messages))

    @staticmethod
    def _event_time(message: Any) -> float:
        return event_time(message.value)

    def broker_offset(self, offset: int) -> int:
        """The broker offset an input position (an offset of `input_offsets`) stands at: the same here; the
        detection worker's positions are per line of a block (streams.accepted)."""
        return offset

    def _lagging(self, tp: TP) -> bool:
        """More data on the broker for this partition than delivered so far? Not known yet (no fetch
        answered for it): maybe, so wait (the aligner stops waiting when all input stalls)."""
        highwater = self._highwater(tp)
        return highwater is None or highwater > self._position(tp)

    def _position(self, tp: TP) -> int:
        """The next offset this worker has not yet been handed for the partition."""
        return self.broker_offset(max(self.input_offsets.get(tp, 0), self.skip_below.get(tp, 0),
                                      self.aligner.last_offset.get(tp, -1) + 1))

    def _input_lags(self) -> bool:
        """Is there input on the broker not yet delivered? Then the worker is busy, not the stream quiet
        (a long snapshot or a stall must not pass for a quiet spell: idle ticks change detector timing)."""
        consumer = self.app.consumer if self.app is not None else None
        if consumer is None:
            return False
        try:
            assignment = consumer.assignment()
        except Exception:  # noqa: BLE001 - not started
            return False
        inputs = self.inputs
        for faust_tp in assignment:
            if faust_tp.topic not in inputs:
                continue
            tp = (faust_tp.topic, faust_tp.partition)
            highwater = self._highwater(tp)
            # Not fetched yet (just assigned, after a restart): what waits there is unknown, not nothing.
            if highwater is None or highwater > self._position(tp):
                return True
        return False

    def _highwater(self, tp: TP) -> int | None:
        # The fetcher's last word on the partition's end; asked of the consumer thread at most every 50 ms.
        now = time.monotonic()
        cached = self._highwaters.get(tp)
        if cached is not None and now - cached[0] < 0.05:
            return cached[1]
        consumer = self.app.consumer if self.app is not None else None
        highwater = None
        if consumer is not None:
            try:
                highwater = consumer.highwater(_faust_tp(tp))
            except Exception:  # noqa: BLE001 - not assigned (any more)
                highwater = None
        self._highwaters[tp] = (now, highwater)
        return highwater

    async def _process(self, messages: list[Any]) -> None:
        """Messages in event-time order through the pipeline, outcomes out (the lock is held)."""
        if not messages:
            return
        offsets, unacked = self.input_offsets, self.unacked
        for message in messages:
            offsets[(message.topic, message.partition)] = message.offset + 1
        unacked.extend(messages)
        batch = self.settings.batch_size
        loop = asyncio.get_running_loop()
        for start in range(0, len(messages), batch):
            chunk = messages[start:start + batch]
            # On a thread of its own, so that the event loop stays free for /healthz, /metrics and the
            # consumer while a batch is in the detectors (seconds, when it waits for MiniLM under load);
            # the lock keeps every other use of the pipeline out meanwhile. Each batch is started before
            # the one before it is finished, so the detector processes work on it meanwhile
            # (detectors.pipeline); the last one is finished by the next, or by the timer.
            started = await loop.run_in_executor(self.pipeline_thread, self.pipeline.start,
                                                 [message.value for message in chunk])
            await self._finish_started()
            self._unfinished = (started, chunk)
        await self.publisher.send()
        self.dirty = True
        if self.publisher.in_flight > 10_000:
            await self._flush_pending()

    async def _finish_started(self) -> None:
        """Detect and decide the batch started last, and publish its outcomes (the lock is held)."""
        if self._unfinished is None:
            return
        started, chunk = self._unfinished
        self._unfinished = None
        spent = dict(self.pipeline.detector_seconds)
        step = await asyncio.get_running_loop().run_in_executor(self.pipeline_thread, self.pipeline.finish,
                                                                started)
        for name, total in self.pipeline.detector_seconds.items():
            self.metrics.detector_seconds.labels(name).observe(total - spent.get(name, 0.0))
        self._publish(step, chunk)

    def _publish(self, step: Step, messages: list[Any] | None = None) -> None:
        topics, published, counts = self.topics, self.published, self.counts
        send = self.publisher.add
        produced_at = self.produced_at
        if messages is not None:
            for decoded, message in zip(step.decoded, messages):
                if type(decoded) is Rejection:
                    src = source_id(message.topic, message.partition, message.offset)
                    if published.rejected and src in published.rejected:
                        published.rejected.discard(src)
                        self.metrics.suppressed.labels("rejected").inc()
                        continue
                    key = decoded.event_id.encode() if decoded.event_id else None
                    send(topics.rejected, key, dumps(rejection_record(decoded)),
                               [("src", src.encode())])
                    counts["rejected"] += 1
                else:
                    produced_at[decoded.event_id] = message.timestamp
        watermark = step.watermark  # of the decision these outcomes come from
        now = time.time()
        observe = self.metrics.outcome_latency.observe
        for outcome in step.outcomes:
            event = outcome.event
            event_id = event.event_id
            verdict = outcome.verdict
            if published:
                if verdict == "retracted":
                    if event_id in published.retracted:
                        published.retracted.discard(event_id)
                        self.metrics.suppressed.labels(verdict).inc()
                        continue
                elif event_id in published.decided:
                    before = published.decided.pop(event_id)
                    produced_at.pop(event_id, None)
                    self.metrics.suppressed.labels(verdict).inc()
                    # Released before the restart, condemned now (a flag came sooner this time): the clean
                    # verdict stands, so it is retracted like any released event, once.
                    condemned = before == "clean" and verdict == "quarantined"
                    if condemned and event_id in published.retracted:
                        published.retracted.discard(event_id)
                        continue
                    if not condemned:
                        if before != verdict:
                            log.warning("event %s was published %s before the restart and is %s now: "
                                        "the published verdict stands", event_id, before, verdict)
                        continue
                    outcome, verdict = Outcome("retracted", event, outcome.reasons, outcome.payload), "retracted"
            key = actor(event)[1].encode()
            if outcome.released_by is not None:  # given back by an analyst's release (Pipeline.control)
                headers = [("released_by", outcome.released_by.encode()),
                           ("reason", "; ".join(outcome.reasons).encode())]
                if verdict == "clean":
                    send(topics.clean, key, outcome.payload or to_json(event), headers)
                else:
                    send(topics.retracted, key, dumps(outcome_record(outcome, watermark)), headers)
                counts["released" if verdict == "clean" else "restored"] += 1
                continue
            if verdict == "clean":
                send(topics.clean, key, outcome.payload or to_json(event), None)
            elif verdict == "quarantined":
                send(topics.quarantined, key, dumps(outcome_record(outcome, watermark)), None)
            else:
                send(topics.retracted, key, dumps(outcome_record(outcome, watermark)), None)
            counts[verdict] += 1
            if verdict != "retracted":
                produced = produced_at.pop(event_id, None)
                if produced:
                    observe(now - produced)
        self.activity.observe(o.event for o in step.outcomes if o.verdict == "clean")
        for report in step.drifts:  # a detector's score distribution changed: say so, on /metrics and as an alert
            finding = drift_finding(report)
            send(topics.alerts, finding["finding_info"]["uid"].encode(), dumps(finding), None)
            self.metrics.drifts.labels(report["detector"]).inc()
            log.warning("DRIFT %s: mean score %.3f -> %.3f (ADWIN, window %d)", report["detector"],
                        report["mean_before"], report["mean_after"], report["window"])
        for flag in step.flags:
            send(topics.flags, f"{flag.kind}:{flag.id}".encode(), dumps(flag_record(flag)),
                       [("updated", b"1" if flag.updated else b"0")])
            self.metrics.flags.labels(flag.kind, str(flag.updated).lower()).inc()
            counts["flags"] += 1

    @property
    def publisher(self) -> BatchPublisher:
        if self._publisher is None:
            # The split's detection worker publishes no outcomes: the actor workers count theirs.
            acked = self.metrics.count_acknowledged(self.topics) if self.decides else None
            self._publisher = BatchPublisher(self.app.producer._ensure_producer(), on_acked=acked)  # noqa: SLF001
            self._publisher.offsets.update(self.output_offsets)
        return self._publisher

    async def _flush_pending(self) -> None:
        """Wait until the broker acknowledged every message so far; note the output offsets reached."""
        self.output_offsets.update(await self.publisher.wait())

    # -- decisions from outside (the control topic) ---------------------------------------
    async def control(self, messages: list[Any]) -> None:
        """Analysts' decisions and the trainer's signals: applied between batches, outcomes published, and
        acknowledged once a snapshot covers them (the decision stage remembers what they did)."""
        await self._shielded(self._control(messages), "applying control records")

    async def _control(self, messages: list[Any]) -> None:
        async with self.lock:
            if self.stopping:
                return
            records = []
            for message in messages:
                tp = (message.topic, message.partition)
                self.unacked.append(message)
                if message.offset < self.control_offsets.get(tp, 0):
                    continue  # applied before the snapshot this worker restored
                self.control_offsets[tp] = message.offset + 1
                try:
                    record = orjson.loads(message.value)
                except orjson.JSONDecodeError:
                    log.warning("control record at %s:%d is not JSON: skipped", *tp)
                    continue
                if isinstance(record, dict):
                    records.append(record)
                    if record.get("by") == "trainer":
                        self.last_trainer = record
            if not records:
                return
            await self._finish_started()
            step = await asyncio.get_running_loop().run_in_executor(self.pipeline_thread, self.apply_control,
                                                                    records)
            self._publish(step)
            await self.publisher.send()
            self.dirty = True
            for record in records:
                self.metrics.control.labels(str(record.get("action"))).inc()
            log.info("control: %s", ", ".join(f"{r.get('action')} {r.get('kind')}:{r.get('id')}" for r in records))

    # -- the timer's work ---------------------------------------------------------------------
    async def tick(self) -> None:
        if not self.ready or self.stopping:
            return
        try:
            await self._tick()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._crash("the guard's timer", error)

    async def _tick(self) -> None:
        now = time.monotonic()
        if len(self.aligner):
            await asyncio.shield(self._release_waiting(now))
        if self._unfinished is not None and now - self.last_input >= self.settings.take_within_seconds:
            await asyncio.shield(self._finish_waiting())  # no next batch came to finish it
        # Idle ticks are detector ticks too (periodic work runs on them), so they come only after a real
        # quiet spell and then at most every `idle_every_seconds`, not on every timer beat.
        quiet = now - self.last_input >= self.settings.idle_after_seconds and not self._input_lags()
        if (quiet and self.pipeline.decision.held_count and not len(self.aligner)
                and now - max(self.last_idle, self.last_input) >= self.settings.idle_every_seconds):
            # Event time moves on by the whole quiet spell, at `idle_speedup` event seconds per second.
            seconds = (now - max(self.last_idle, self.last_input)) * self.settings.idle_speedup
            self.last_idle = now
            await asyncio.shield(self._idle(seconds))
        interval = max(self.settings.snapshot_interval_seconds, 30 * self.snapshot_cost)
        if (self.dirty or self.unacked) and (now - self.last_snapshot >= interval
                                             or self.since_snapshot >= self.settings.snapshot_max_events):
            await self.snapshot()
        self._update_gauges()
        if now - self.last_report >= 10.0:
            self._report(now)

    async def _release_waiting(self, now: float) -> None:
        async with self.lock:
            if self.stopping:  # a tick that began before the final snapshot: the pipeline is closed
                return
            await self._process(self.aligner.release(self._lagging, now))

    async def _finish_waiting(self) -> None:
        async with self.lock:
            if self._unfinished is not None and not self.stopping:
                await self._finish_started()
                await self.publisher.send()

    async def _idle(self, seconds: float) -> None:
        async with self.lock:
            if self.stopping:
                return
            finished = self._unfinished is not None
            await self._finish_started()
            step = self.pipeline.idle(seconds)
            news = bool(step.outcomes or step.flags) or not self.decides  # the detection worker's point is
            if news:
                self._publish(step)
            if finished or news:
                await self.publisher.send()
            self.dirty = True

    async def snapshot(self) -> None:
        if self._snapshot_lock is None:
            self._snapshot_lock = asyncio.Lock()
        async with self._snapshot_lock:
            started = time.perf_counter()
            async with self.lock:
                if self.stopping:
                    # A tick that began before shutdown: the final snapshot is written and the pipeline closed;
                    # a batch started since is unacknowledged, so redelivered after a restart.
                    return
                await self._finish_started()  # the snapshot covers every batch started
                await self._flush_pending()  # raises if the broker refused any: the caller crashes the worker
                snapshot = state_module.capture(
                    self.pipeline, self.input_offsets, self.output_offsets,
                    extra={"published": self.published, "counts": dict(self.counts), "epoch": self.epoch,
                           "control_offsets": dict(self.control_offsets), **self.snapshot_extra()})
                data = state_module.dumps(snapshot)
                acks, self.unacked = self.unacked, []
                self.since_snapshot = 0
                self.dirty = False
            await asyncio.get_running_loop().run_in_executor(None, self.state_dir.save_bytes, data)
            consumer = self.app.consumer if self.app is not None else None
            if consumer is not None:
                for message in acks:
                    message.ack(consumer)
            self.last_snapshot = time.monotonic()
            self.snapshot_cost = time.perf_counter() - started
            self.metrics.snapshot_seconds.observe(self.snapshot_cost)
            self.metrics.snapshot_bytes.set(len(data))

    def _update_gauges(self) -> None:
        self.metrics.held.set(self.pipeline.decision.held_count)
        self.metrics.aligned.set(len(self.aligner))
        forced = self.aligner.forced - self._reported["_forced"]
        if forced:
            self.metrics.align_forced.inc(forced)
            self._reported["_forced"] = self.aligner.forced
        self.metrics.watermark.set(self.pipeline.watermark)
        decision = self.pipeline.decision
        self.metrics.flag_threshold.set(decision.flag_threshold)
        for name, adwin in self.pipeline.drift.detectors.items():
            self.metrics.score_mean.labels(name).set(adwin.estimation)
        fusion = decision.fusion
        if hasattr(fusion, "learned_weights"):
            self.metrics.analyst_labels.set(fusion.labels)
            for name, weight in fusion.learned_weights().items():
                self.metrics.fusion_weight.labels(name).set(weight)
        self.metrics.ready.set(1 if self.ready else 0)
        consumer = getattr(self.app, "consumer", None) if self.app is not None else None
        if consumer is None:
            return
        try:
            assignment = consumer.assignment()
        except Exception:  # noqa: BLE001 - not started yet
            return
        inputs = self.inputs
        for tp in assignment:
            if tp.topic not in inputs:
                continue
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001
                continue
            if highwater is None:
                continue
            position = self.broker_offset(self.input_offsets.get((tp.topic, tp.partition), 0))
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(highwater - position, 0))

    def _report(self, now: float) -> None:
        counts = self.counts
        consumed = sum(map(self.broker_offset, self.input_offsets.values()))
        seconds = now - self.last_report
        rate = (consumed - self._reported.get("_consumed", consumed)) / seconds if seconds else 0.0
        self._reported["_consumed"] = consumed
        self.last_report = now
        self.rate = rate
        if counts or consumed:
            log.info("guard: offset sum %d (%.0f/s), clean %d, quarantined %d, retracted %d, rejected %d, "
                     "flags %d, held %d", consumed, rate, counts["clean"], counts["quarantined"],
                     counts["retracted"], counts["rejected"], counts["flags"],
                     self.pipeline.decision.held_count)

    async def on_shutdown(self) -> None:
        """Finish the batch in hand, take a last snapshot (everything processed so far is covered, nothing is
        redone after a clean stop), then stop the detector processes, which ignore stop signals for this."""
        if self.stopping:
            return
        if self.restored and (self.dirty or self.unacked or self._unfinished is not None):
            try:
                await self.snapshot()
                log.info("final snapshot written")
            except Exception as error:  # noqa: BLE001 - the previous snapshot stays valid
                log.warning("final snapshot failed (%s): a restart resumes from the one before", error)
        async with self.lock:
            self.stopping = True
            await asyncio.get_running_loop().run_in_executor(self.pipeline_thread, self.pipeline.close)
        self.pipeline_thread.shutdown(wait=False)


def _faust_tp(tp: TP) -> Any:
    from faust.types import TP as FaustTP

    return FaustTP(tp[0], tp[1])


def register(app: Any, guard: Guard, settings: Settings, topics: Topics) -> None:
    """The guard agent, its timer and its lifecycle hooks on `app`."""
    guard.app = app
    source = app.topic(*guard.inputs, value_serializer="raw", key_serializer="raw")

    @app.agent(source, name="guard", concurrency=1)
    async def guard_agent(stream: Any) -> None:
        # One batch in the pipeline while the next is taken: Faust delivers messages one by one on this
        # thread, the pipeline runs on its own (mostly waiting for the detector processes); taking and
        # processing in turn left each idle while the other worked. Batches still enter in order.
        in_flight: asyncio.Future | None = None
        async for events in stream.noack_take(guard.take_size, within=settings.take_within_seconds):
            if in_flight is not None:
                await in_flight
            in_flight = asyncio.ensure_future(guard.handle(events))
        if in_flight is not None:
            await in_flight

    control = app.topic(topics.control, value_serializer="raw", key_serializer="raw")

    @app.agent(control, name="control", concurrency=1)
    async def control_agent(stream: Any) -> None:
        async for messages in stream.noack_take(100, within=0.2):
            await guard.control([event.message for event in messages])

    @app.task
    async def guard_tick() -> None:
        # A loop of its own rather than app.timer: mode's timer logs "Timer ... is overlapping" whenever a
        # beat outlasts its interval, and a beat that snapshots or finishes a batch does, by design.
        while not app.should_stop and not guard.stopping:
            await guard.tick()
            await asyncio.sleep(0.25)

    @app.on_partitions_assigned.connect
    async def on_assigned(app: Any, assigned: Any, **kwargs: Any) -> None:
        # Faust's Monitor sensor books every message in Python dicts (a tenth of the per-message cost)
        # for its /stats page; Prometheus on /metrics is what this worker reports.
        app.sensors._sensors.discard(app.monitor)  # noqa: SLF001
        # Every input partition holds the others back until it has spoken or proved empty: otherwise the
        # first to answer after a (re)start would run the watermark ahead of the rest.
        guard.aligner.track((tp.topic, tp.partition) for tp in assigned if tp.topic in guard.inputs)
        guard.last_input = time.monotonic()  # waiting for a group is no quiet spell
        guard.assigned = True
        log.info("assigned %d input partitions", len([tp for tp in assigned if tp.topic in guard.inputs]))

    @app.on_before_shutdown.connect
    async def on_shutdown(app: Any, **kwargs: Any) -> None:
        await guard.on_shutdown()
