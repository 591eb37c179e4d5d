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

The guard orchestrates (batches, control records, the timer, shutdown, under one lock); its jobs live in
modules of their own: streams.recovery (restore, a new broker, what was published after the snapshot),
streams.publishing (outcomes to records, less what was published), streams.snapshots, streams.offsets
(where the input partitions end), streams.gauges (/metrics and the periodic log line).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from detectors.events import Rejection
from detectors.pipeline import Pipeline, Step
from streams import gauges, recovery, snapshots
from streams.activity import ItemActivity
from streams.align import EventTimeAligner, event_time
from streams.assembly import build_pipeline
from streams.metrics import Metrics
from streams.offsets import Highwaters
from streams.publisher import BatchPublisher
from streams.publishing import Outputs
# Published stays importable from here: snapshots written before streams.recovery pickled it as this module's.
from streams.recovery import Published
from streams.reader import source_id
from streams.settings import Settings
from streams.state import StateDir, snapshot_key
from streams.topics import Topics

log = logging.getLogger(__name__)
TP = tuple[str, int]


class Guard:
    """Owns the worker's pipeline, its offsets, its pending sends and its snapshots, and runs them in turn.
    `decides`: its pipeline decides and it publishes outcomes (the detection stage of the split topology,
    streams.detection, does neither)."""

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
        self.outputs = Outputs(topics, self.metrics, self.counts)
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
        self.highwaters = Highwaters()
        self._forced = 0  # the aligner's forced releases counted on /metrics
        self._consumed: int | None = None  # input offsets at the last report
        self.pipeline_thread = ThreadPoolExecutor(1, thread_name_prefix="pipeline")
        self._unfinished: tuple[Any, list[Any]] | None = None  # a batch started, not yet finished

    # -- recovery (before the app starts): streams.recovery ---------------------------------------
    def recover(self, store_epoch: str | None = None) -> str:
        """Restore the snapshot; return the consumer group id to use (streams.recovery.recover)."""
        return recovery.recover(self, store_epoch)

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
        highwater = self.highwaters.get(self.app, tp)
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
            highwater = self.highwaters.get(self.app, tp)
            # Not fetched yet (just assigned, after a restart): what waits there is unknown, not nothing.
            if highwater is None or highwater > self._position(tp):
                return True
        return False

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
        """A finished batch's (`messages`') or a control step's outcomes, dead letters, flags and drift
        findings to the output topics, less what a previous run published (streams.publishing)."""
        outputs, published, produced_at, send = self.outputs, self.published, self.produced_at, self.publisher.add
        if messages is not None:
            for decoded, message in zip(step.decoded, messages):
                if type(decoded) is Rejection:
                    outputs.rejection(send, decoded, source_id(message.topic, message.partition, message.offset),
                                      published)
                else:
                    produced_at[decoded.event_id] = message.timestamp
        watermark, now = step.watermark, time.time()  # the watermark of the decision these outcomes come from
        for outcome in step.outcomes:
            outputs.outcome(send, outcome, watermark, published, produced_at, now)
        self.activity.observe(o.event for o in step.outcomes if o.verdict == "clean")
        outputs.drifts(send, step.drifts)
        outputs.flags(send, step.flags)

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
        if (self.dirty or self.unacked) and (now - self.last_snapshot >= snapshots.interval(self.settings,
                                                                                             self.snapshot_cost)
                                             or self.since_snapshot >= self.settings.snapshot_max_events):
            await self.snapshot()
        self.update_gauges()
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
                data = snapshots.capture(self)
                acks, self.unacked = self.unacked, []
                self.since_snapshot = 0
                self.dirty = False
            await asyncio.get_running_loop().run_in_executor(None, self.state_dir.save_bytes, data)
            snapshots.acknowledge(self.app, acks)
            self.last_snapshot = time.monotonic()
            self.snapshot_cost = time.perf_counter() - started
            self.metrics.snapshot_seconds.observe(self.snapshot_cost)
            self.metrics.snapshot_bytes.set(len(data))

    def update_gauges(self) -> None:
        """Set when /metrics is scraped and on the timer (streams.gauges)."""
        gauges.set_holding(self.metrics, self.pipeline.decision.held_count, self.aligner, self.pipeline.watermark,
                           self.ready)
        self._forced = gauges.count_forced(self.metrics, self.aligner, self._forced)
        gauges.set_decision(self.metrics, self.pipeline)
        consumer = getattr(self.app, "consumer", None) if self.app is not None else None
        if consumer is not None:
            gauges.set_lag(self.metrics, consumer, self.inputs,
                           lambda tp: self.broker_offset(self.input_offsets.get(tp, 0)))

    def _report(self, now: float) -> None:
        consumed = sum(map(self.broker_offset, self.input_offsets.values()))
        seconds = now - self.last_report
        before = consumed if self._consumed is None else self._consumed
        self.rate = (consumed - before) / seconds if seconds else 0.0
        self._consumed, self.last_report = consumed, now
        if self.counts or consumed:
            log.info("guard: offset sum %d (%.0f/s), %s", consumed, self.rate,
                     gauges.counts_text(self.counts, self.pipeline.decision.held_count))

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
