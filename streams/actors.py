"""The actor workers of the split topology (`SHILLGUARD_ROLE=actors`): any number, one consumer group.

Each holds some partitions of the input topics (keyed by actor, so an actor's events of every type share a
partition number) and the same partitions of the points topic (co-partitioned: Faust assigns topics of
equal partition count that one app reads together by partition number). For each partition it
- decodes each input line: a line that is not a valid event goes to the dead-letter topic; a valid one is
  held by the partition's `ActorStage` (detectors.stages);
- forwards every line to the accepted topic, on the same partition number, in blocks of the lines a batch
  released (streams.accepted), for the detection worker (streams.detection);
- decides each point the detection worker publishes for the partition, once its own input has reached the
  point's `through` offsets (so every event the point names has arrived), and publishes the outcomes: clean,
  quarantined, retracted, duplicates as dead letters, flags.
Outcomes of partition p go to partition p of the outcome topics where they have the inputs' partition count,
else by key.

State follows the partition. Every `snapshot_interval_seconds`, on a rebalance that takes partitions away,
and on shutdown, each partition's state (its stage, how far it has read its input and points, how far its
outputs had been acknowledged) goes to its partition of the state topic (streams.partition_state); only then
are the messages it covers acknowledged, so the group's committed offsets never pass a snapshot. A worker
that is assigned a partition restores its latest snapshot from the topic (a local disk holds nothing), skips
redelivered messages the snapshot covers, and reads what the partition's previous owner published and
forwarded after it (up to a kill -9): those outcomes, dead letters and forwarded lines are not sent again
when the restored stage decides them again. So every input message gets exactly one outcome across
rebalances and a worker killed mid-stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from detectors.events import Rejection, decode_event, to_json
from detectors.stages import ActorStage, Point
from streams import gauges, partition_state, snapshots
from streams.accepted import decode_block, split_blocks
from streams.align import EventTimeAligner, event_time
from streams.assembly import build_decision
from streams.broker import kafka_python_config
from streams.metrics import Metrics
from streams.offsets import Highwaters
from streams.points import decode_point
from streams.publisher import BatchPublisher
from streams.publishing import Outputs, Send
from streams.reader import end_offsets, read, source_id
from streams.recovery import note_output
from streams.state import snapshot_key
from streams.web import register_metrics

log = logging.getLogger(__name__)
TP = tuple[str, int]


@dataclass
class Partition:
    """What a worker holds of one actor partition; pickled whole into the state topic."""

    stage: ActorStage
    positions: dict[str, int] = field(default_factory=dict)  # input topic -> next offset handled
    points_read: int = 0  # next offset of the points partition handled
    points: deque = field(default_factory=deque)  # (Point, through) read, not decided yet
    outputs: dict[str, int] = field(default_factory=dict)  # topic -> next offset acknowledged at the snapshot
    # Published or forwarded by an earlier owner after the snapshot it left: not to be sent again.
    decided: dict[str, str] = field(default_factory=dict)  # event id -> verdict
    retracted: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)  # source ids of dead letters
    forwarded: set[str] = field(default_factory=set)  # source ids of lines on the accepted topic


class ActorWorker:
    def __init__(self, settings: Any, topics: Any, metrics: Metrics | None = None):
        self.settings = settings
        self.topics = topics
        self.metrics = metrics or Metrics()
        self.key = snapshot_key(settings)
        self.app: Any = None
        self.partitions: dict[int, Partition] = {}
        self.chains: dict[int, partition_state.Chain] = {}  # what each partition's snapshots build on
        self.unacked: list[Any] = []
        self.dirty: set[int] = set()
        self.counts: Counter[str] = Counter()
        self.outputs = Outputs(topics, self.metrics, self.counts)
        self.assigned = False
        self.restoring: asyncio.Future | None = None  # the restore of newly assigned partitions
        self._publisher: BatchPublisher | None = None
        self.lock = asyncio.Lock()  # binds to the running loop at first use (Python 3.10+)
        self._same_partitions: dict[str, bool] = {}  # outcome topic -> has the inputs' partition count
        self.last_snapshot = self.last_report = time.monotonic()
        self.snapshot_cost = 0.0
        self.aligner = EventTimeAligner(settings.align_max_wait_seconds, settings.align_max_queued)
        self.highwaters = Highwaters()
        self._marks_at, self._marks_cache = float("-inf"), {}
        self.last_input = time.monotonic()
        self.watermark = 0.0  # of the last point decided
        # partition -> event id -> produce time, for the latency histogram (held events only; not pickled:
        # events restored from a snapshot leave unmeasured, as the guard's do after a restart)
        self.produced_at: dict[int, dict[str, float]] = {}
        self._forced = 0  # the aligner's forced releases already counted

    @property
    def publisher(self) -> BatchPublisher:
        if self._publisher is None:
            # Outcomes and dead letters counted as the broker acknowledges them, as the guard counts its own.
            self._publisher = BatchPublisher(self.app.producer._ensure_producer(),  # noqa: SLF001
                                             on_acked=self.metrics.count_acknowledged(self.topics))
        return self._publisher

    @property
    def held_count(self) -> int:
        return sum(p.stage.decision.held_count + p.stage.waiting for p in self.partitions.values())

    @property
    def outcome_topics(self) -> tuple[str, ...]:
        topics = self.topics
        return (topics.clean, topics.quarantined, topics.retracted, topics.rejected, topics.accepted)

    # -- the agent's work ----------------------------------------------------------------------
    async def handle(self, events: list[Any]) -> None:
        if self.restoring is not None:
            await self.restoring
        async with self.lock:
            started = time.perf_counter()
            points_topic, partitions, aligner = self.topics.points, self.partitions, self.aligner
            touched: set[int] = set()
            in_counts: Counter[str] = Counter()  # input messages only: points are no input to count
            for event in events:
                message = event.message
                number, offset = message.partition, message.offset
                state = partitions.get(number)
                if state is None:  # revoked while the batch was taken: redelivered to the new owner
                    continue
                if message.topic == points_topic:
                    self.unacked.append(message)
                    if offset >= state.points_read:
                        state.points_read = offset + 1
                        state.points.append(decode_point(message.value))
                        touched.add(number)
                    continue
                in_counts[message.topic] += 1
                if offset < state.positions.get(message.topic, 0):
                    self.unacked.append(message)
                    self.metrics.skipped.inc()
                    continue  # covered by the snapshot this partition was restored from
                ts = event_time(message.value)
                aligner.add((message.topic, number), offset, ts, (message, ts))
            for topic, n in in_counts.items():
                self.metrics.events_in.labels(topic).inc(n)
            self.last_input = time.monotonic()
            touched |= self._forward(aligner.release(self._lagging, self.last_input))
            for number in touched:
                self._decide(number)
            self.dirty |= touched
            await self.publisher.send()
            spent = time.perf_counter() - started
            self.metrics.batch_seconds.observe(spent)
            self.metrics.busy_seconds.inc(spent)
            self.metrics.batch_size.observe(len(events))
        self._report()

    def _forward(self, released: list[tuple[Any, float]]) -> set[int]:
        """Input in event-time order across the partitions' topics (streams.align, as the guard reads its
        input): held, dead-lettered, and forwarded in one block per partition (streams.accepted). Returns the
        partitions touched."""
        send, partitions = self.publisher.add, self.partitions
        touched: set[int] = set()
        blocks: dict[int, list[tuple[str, int, float, bytes]]] = {}
        for message, ts in released:
            number, offset = message.partition, message.offset
            state = partitions.get(number)
            if state is None:
                continue
            self.unacked.append(message)
            state.positions[message.topic] = offset + 1
            touched.add(number)
            src = source_id(message.topic, number, offset)
            decoded = decode_event(message.value)
            if type(decoded) is Rejection:
                self.outputs.rejection(self._sender(number), decoded, src, state)
            else:
                state.stage.hold(decoded, src)
                if message.timestamp:
                    self.produced_at.setdefault(number, {}).setdefault(decoded.event_id, message.timestamp)
            # Every line, the rejected too: the detection stage counts lines to place its decision points.
            if src in state.forwarded:
                state.forwarded.discard(src)
            else:
                blocks.setdefault(number, []).append((message.topic, offset, ts, message.value))
        accepted = self.topics.accepted
        highwaters = self._marks() if blocks else {}
        for number, lines in blocks.items():
            for key, value in split_blocks(lines, highwaters):
                send(accepted, key.encode(), value, partition=number)
        return touched

    def _marks(self, max_age: float = 0.05) -> dict[tuple[str, int], int]:
        """The high watermarks of every input partition held, for the blocks (streams.accepted): gathered
        again after `max_age` seconds, not per batch (small batches made the lookups a tenth of the actors'
        CPU)."""
        now = time.monotonic()
        if now - self._marks_at >= max_age:
            marks = {}
            for number in self.partitions:
                for topic in self.topics.inputs:
                    highwater = self.highwaters.get(self.app, (topic, number))
                    if highwater is not None:
                        marks[(topic, number)] = highwater
            self._marks_at, self._marks_cache = now, marks
        return self._marks_cache

    def _lagging(self, tp: TP) -> bool:
        """More of this input partition on the broker than delivered so far (or not known yet)?"""
        highwater = self.highwaters.get(self.app, tp)
        state = self.partitions.get(tp[1])
        position = max(state.positions.get(tp[0], 0) if state else 0, self.aligner.last_offset.get(tp, -1) + 1)
        return highwater is None or highwater > position

    def _decide(self, number: int) -> None:
        """Decide the partition's points whose events have all arrived, in order."""
        state = self.partitions[number]
        queue, positions = state.points, state.positions
        while queue:
            point, through = queue[0]
            if any(positions.get(topic, 0) < offset for topic, offset in through.items()):
                return  # this worker has not read the partition's input that far yet (it just took it over)
            queue.popleft()
            flags, outcomes, duplicates = state.stage.decide(point)
            self.watermark = max(self.watermark, point.watermark)
            self._publish(number, state, point, flags, outcomes, duplicates)

    def _partition(self, topic: str, number: int) -> int | None:
        same = self._same_partitions.get(topic)
        if same is None:  # asked once per topic, not per outcome: partition counts do not change under us
            partitions = self.publisher.producer.client.cluster.partitions_for_topic(topic)
            if not partitions:
                return None  # no metadata yet: by key this once, asked again next time
            same = self._same_partitions[topic] = len(partitions) == self.settings.partitions
        return number if same else None

    def _sender(self, number: int) -> Send:
        """Records of actor partition `number` go to the same partition of the outcome topics where these
        have the inputs' partition count, else by key."""
        add, partition = self.publisher.add, self._partition

        def send(topic: str, key: bytes | None, value: bytes, headers: list | None) -> None:
            add(topic, key, value, headers, partition=partition(topic, number))
        return send

    def _publish(self, number: int, state: Partition, point: Point, flags: list, outcomes: list,
                 duplicates: list) -> None:
        outputs, send = self.outputs, self._sender(number)
        produced_at, now = self.produced_at.get(number, {}), time.time()
        for event, src in duplicates:
            outputs.rejection(send, Rejection(to_json(event), "duplicate_event_id: already seen", event.event_id),
                              src, state)
        for outcome in outcomes:
            # An analyst's release goes out as it comes (streams.publishing): nothing is suppressed for it.
            outputs.outcome(send, outcome, point.watermark, state if outcome.released_by is None else None,
                            produced_at, now)
        outputs.flags(self.publisher.add, flags)  # by key
        for event, _ in duplicates:  # its produce time, unless the original is still held (one sample less)
            produced_at.pop(event.event_id, None)

    # -- snapshots and partitions moving -------------------------------------------------------
    async def snapshot(self, numbers: set[int] | None = None) -> None:
        """Each dirty partition's state to the state topic; then acknowledge the messages it covers."""
        async with self.lock:
            await self._snapshot(numbers)

    async def _snapshot(self, numbers: set[int] | None = None) -> None:
        started = time.perf_counter()
        offsets = await self.publisher.wait()  # everything published so far is stored
        chosen = self.dirty if numbers is None else (numbers & self.dirty)
        size = 0
        for number in sorted(chosen):
            state = self.partitions.get(number)
            if state is None:
                continue
            for topic in self.outcome_topics:
                if (topic, number) in offsets:
                    state.outputs[topic] = offsets[(topic, number)]
            chain = self.chains.setdefault(number, partition_state.Chain())
            for key, value in chain.records(state, state.stage.decision, self.key):
                self.publisher.add(self.topics.actor_state, key, value, partition=number)
                size += len(value) if value is not None else 0
        await self.publisher.wait()
        for number in chosen:
            if number in self.chains:
                self.chains[number].stored()
        self.dirty -= chosen
        acks, self.unacked = self.unacked, []
        snapshots.acknowledge(self.app, (message for message in acks if message.partition in self.partitions))
        self.last_snapshot = time.monotonic()
        self.snapshot_cost = time.perf_counter() - started
        if chosen:
            self.metrics.snapshot_seconds.observe(time.perf_counter() - started)
            self.metrics.snapshot_bytes.set(size)

    async def revoked_partitions(self, numbers: set[int]) -> None:
        """A rebalance takes partitions away (Faust revokes every partition, then assigns anew): snapshot
        them and let go, before the group hands them to another member, which restores that snapshot."""
        async with self.lock:
            gone = numbers & set(self.partitions)
            # Input waiting in the aligner was not acknowledged: the partitions' next owner reads it again.
            self._forced = gauges.count_forced(self.metrics, self.aligner, self._forced)
            self.aligner = EventTimeAligner(self.settings.align_max_wait_seconds, self.settings.align_max_queued)
            self._forced = 0
            if gone:
                self.dirty |= gone  # their last word, even unchanged: the new owner reads from it
                await self._snapshot(gone)
                for number in gone:
                    del self.partitions[number]
                    self.chains.pop(number, None)
                self._forget(gone)

    def assigned_partitions(self, numbers: set[int]) -> None:
        """Restore newly assigned partitions from the state topic, in a task of its own: the rebalance
        callback must return within the group's timeouts; `handle` waits for the restore."""
        stale = (set(self.partitions) | set(self.produced_at)) - numbers
        for number in set(self.partitions) - numbers:  # not revoked first (a stopped member's)
            del self.partitions[number]
            self.chains.pop(number, None)
        self._forget(stale)
        self.aligner.track((topic, number) for topic in self.topics.inputs for number in numbers)
        self.restoring = asyncio.ensure_future(self._restore_assigned(sorted(numbers - set(self.partitions))))

    async def _restore_assigned(self, new: list[int]) -> None:
        async with self.lock:
            if new:
                restored = await asyncio.get_running_loop().run_in_executor(None, self._restore, new)
                for number, (state, chain) in restored.items():
                    self.partitions[number], self.chains[number] = state, chain
            self.assigned = True
        log.info("actors: partitions %s (restored %s)", sorted(self.partitions), new)

    def _restore(self, numbers: list[int]) -> dict[int, tuple[Partition, partition_state.Chain]]:
        """Each partition's latest snapshot (or a fresh state) with the chain its next snapshots build on,
        and what was published and forwarded after: one read of the state topic's last records and one of
        the outputs, for every partition at once."""
        config = kafka_python_config(self.settings)
        topic = self.topics.actor_state
        ends = end_offsets(config, [topic])
        found: dict[int, tuple[Partition | None, partition_state.Chain]] = {}
        # A base and its deltas are a few records: looked for among the partition's last records first
        # (without compaction the partition keeps every snapshot), then, where no base is complete there, in
        # all of it (records after a base in the window are in the window too).
        for window in (256, None):
            wanted = [n for n in numbers if found.get(n, (None,))[0] is None]
            if not wanted:
                break
            start = {(topic, n): max(ends.get((topic, n), 0) - window, 0) if window else 0 for n in wanted}
            messages: dict[int, list[Any]] = {n: [] for n in wanted}
            for message in read(config, [topic], start, partitions=wanted):
                messages[message.partition].append(message)
            for number in wanted:
                found[number] = partition_state.restore(
                    messages[number], self.key, lambda state: state.stage.decision,
                    lambda why, n=number: log.error(
                        "partition %d: a state snapshot was rejected (%s): the one before stands", n, why))
        states = {n: found[n][0] or Partition(ActorStage(build_decision(self.settings))) for n in numbers}
        self._scan(config, states)
        return {n: (state, found[n][1]) for n, state in states.items()}

    def _scan(self, config: dict[str, Any], states: dict[int, Partition]) -> None:
        """What was published and forwarded after each partition's snapshot (by a worker killed since)."""
        topics = self.topics
        start = {(topic, n): offset for n, state in states.items() for topic, offset in state.outputs.items()}
        for record in read(config, self.outcome_topics, start, partitions=list(states)):
            state = states[record.partition]
            if record.topic == topics.accepted:
                state.forwarded.update(source_id(source, record.partition, offset)
                                       for source, offset, _, _ in decode_block(record.key, record.value).lines)
            else:  # as the guard reads what it published (an analyst's release is not a verdict)
                note_output(state, record, topics)
        for number, state in states.items():
            log.info("partition %d: restored at input offsets %s, points offset %d, %d events held", number,
                     state.positions, state.points_read, state.stage.decision.held_count + state.stage.waiting)
            if state.decided or state.retracted or state.rejected or state.forwarded:
                log.info("partition %d: %d outcomes and %d forwarded lines published after its snapshot will "
                         "not be sent again (forwarded: %s)", number, len(state.decided) + len(state.retracted) +
                         len(state.rejected), len(state.forwarded), sorted(state.forwarded)[:3])

    async def release_waiting(self) -> None:
        """Input stalled: what the aligner holds goes (it gives up waiting after `align_max_wait_seconds`)."""
        async with self.lock:
            touched = self._forward(self.aligner.release(self._lagging, time.monotonic()))
            for number in touched:
                self._decide(number)
            self.dirty |= touched
            await self.publisher.send()

    async def tick(self) -> None:
        if len(self.aligner):
            await self.release_waiting()
        interval = snapshots.interval(self.settings, self.snapshot_cost)
        if (self.dirty or self.unacked) and time.monotonic() - self.last_snapshot >= interval:
            await self.snapshot()

    # -- metrics (served on /metrics, streams.web) ----------------------------------------------
    def update_gauges(self) -> None:
        """The gauges of what this worker holds now: its input partitions' lag, held events, readiness."""
        metrics = self.metrics
        ready = self.assigned and not (self.app is not None and self.app.rebalancing)
        gauges.set_holding(metrics, self.held_count, self.aligner, self.watermark, ready)
        self._forced = gauges.count_forced(metrics, self.aligner, self._forced)
        if self.app is None:
            return
        for number, state in list(self.partitions.items()):
            for topic in self.topics.inputs:
                highwater = self.highwaters.get(self.app, (topic, number), max_age=0.0)  # fresh on every scrape
                if highwater is not None:
                    lag = max(highwater - state.positions.get(topic, 0), 0)
                    metrics.consumer_lag.labels(topic, str(number)).set(lag)

    def _forget(self, numbers: set[int]) -> None:
        """Partitions this worker no longer holds: their lag is the next owner's to report (summed over
        pods, a series left here would count it twice), their held events its to measure."""
        for number in numbers:
            self.produced_at.pop(number, None)
            for topic in self.topics.inputs:
                try:
                    self.metrics.consumer_lag.remove(topic, str(number))
                except KeyError:
                    pass

    def _report(self) -> None:
        now = time.monotonic()
        if now - self.last_report < 10.0:
            return
        self.last_report = now
        log.info("actors: partitions %s, %s", sorted(self.partitions), gauges.counts_text(self.counts, self.held_count))


def register(app: Any, worker: ActorWorker, settings: Any, topics: Any) -> None:
    """The actor agent (inputs and points, co-partitioned), its snapshot timer and its lifecycle hooks."""
    worker.app = app
    source = app.topic(*topics.inputs, topics.points, value_serializer="raw", key_serializer="raw")

    @app.agent(source, name="actors", concurrency=1)
    async def actor_agent(stream: Any) -> None:
        async for events in stream.noack_take(settings.batch_size, within=settings.take_within_seconds):
            await worker.handle(events)

    @app.task
    async def actor_tick() -> None:
        while not app.should_stop:
            await worker.tick()
            worker.update_gauges()
            await asyncio.sleep(0.5)

    @app.on_partitions_assigned.connect
    async def on_assigned(app: Any, assigned: Any, **kwargs: Any) -> None:
        app.sensors._sensors.discard(app.monitor)  # noqa: SLF001 - as in streams.agents
        worker.assigned_partitions({tp.partition for tp in assigned if tp.topic == topics.points})

    @app.on_partitions_revoked.connect
    async def on_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        await worker.revoked_partitions({tp.partition for tp in revoked if tp.topic == topics.points})

    @app.on_before_shutdown.connect
    async def on_shutdown(app: Any, **kwargs: Any) -> None:
        await worker.snapshot()

    async def state(web: Any, request: Any) -> Any:
        ready = worker.assigned and not app.rebalancing
        return web.json({"ready": ready, "held": worker.held_count, "partitions": sorted(worker.partitions),
                         "counts": dict(worker.counts)}, status=200 if ready else 503)

    app.page("/healthz", name="healthz")(state)
    app.page("/readyz", name="readyz")(state)
    # The metrics the single worker exports, for what an actor worker does (decode, dead letters, outcomes,
    # flags, its partitions' lag and snapshots): Prometheus sums them over the pods.
    register_metrics(app, worker.metrics, worker.update_gauges)
