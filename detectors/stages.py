"""Detection and decision as two stages: the topology that lets several workers share the decisions.

One `Pipeline` detects and decides. Split, the detection stage runs the detectors over the whole stream (its
pipeline's decision stage is a `SignalLog`, which decides nothing and records, at each decision point, the
events the detectors had observed by then and the signals they raised), and publishes each decision point as
a `Point`: one per actor partition, carrying the signals about that partition's entities and the ids of its
events admitted up to there. Each actor partition's `ActorStage` holds its events as they arrive, and decides
when their point comes: it admits the events the point names, applies the point's signals detector by
detector in the pipeline's order, and releases what is due at the point's watermark. That is what one
pipeline's decision stage does at the same decision point, with the same signals, for the same events, and
an event's fate depends only on its own actor's flag and on signals naming it (`detectors.partitioned`): so
the split decides exactly what one pipeline decides (`tests/test_stages.py`).

What the split does not carry: a learning fusion (its weights and calibrated threshold learn from analysts'
labels over the whole population; each partition's stage would learn from its own) and signals that name
events another partition holds (no detector names events today): `split_problem` says so before anything
starts. Duplicates are the detection stage's to find (it dedupes the whole stream, as one pipeline does); a
point names the duplicates of its partition, and the actor stage rejects them.

Pure: no I/O. The Kafka wiring (which worker holds which partitions, the topics the points travel on) is
the streams package's.

>>> from detectors.decision import DecisionStage
>>> from detectors.events import RatingEvent
>>> log = SignalLog()
>>> log.admit(RatingEvent(event_id="a", ts=0.0, user_id="u1", item_id="i", rating=5))
>>> _ = log.apply([Signal("user", "u1", "profile", 0.99)], 10.0)
>>> _ = log.release(10.0)
>>> point = log.take()[0]
>>> actor = ActorStage(DecisionStage(hold_seconds=5))
>>> actor.hold(RatingEvent(event_id="a", ts=0.0, user_id="u1", item_id="i", rating=5))
>>> flags, outcomes, rejected = actor.decide(point)
>>> [(flag.id, flag.score > 0.5) for flag in flags], [(o.event.event_id, o.verdict) for o in outcomes]
([('u1', True)], [('a', 'quarantined')])
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from detectors.base import Signal
from detectors.decision import DecisionStage, Flag, Outcome
from detectors.events import ACTOR_FIELD, Event, Rejection
from detectors.pipeline import apply_control


@dataclass(slots=True)
class Point:
    """A decision point of the detection stage (numbered from the stream's start): the events observed since
    the point before, by id, in order; the signals raised meanwhile, by detector in the order the decision
    stage applies them; and the event-time watermark the decisions are taken at. `duplicates`: ids of
    events the detection stage rejected as seen before, since the point before."""

    number: int
    watermark: float
    admitted: list[str] = field(default_factory=list)
    signals: list[tuple[str, list[Signal]]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    control: list[dict] = field(default_factory=list)  # analysts' and the trainer's records (apply_control)


class SignalLog:
    """The decision stage of a detection-only `Pipeline`: holds nothing, decides nothing, and records each
    decision point (`Pipeline._decide` applies the signals detector by detector, then releases)."""

    fusion = None
    flag_threshold = 0.0

    def __init__(self, hold_seconds: float = 0.0) -> None:
        self.hold_seconds = hold_seconds
        self.number = 0  # decision points so far (a snapshot holds it)
        self._latest = float("-inf")  # the latest event time admitted
        self._watermark = float("-inf")  # the last point's
        self._admitted: list[str] = []
        self._signals: list[tuple[str, list[Signal]]] = []
        self._points: deque[Point] = deque()

    @property
    def held_count(self) -> int:
        """Nonzero while an event observed may still be held by its actor partition (no point has named it
        yet, or its hold was not over at the last point's watermark): a driver's idle ticks, which let held
        events leave a quiet stream, come while this is nonzero, as for a decision stage that holds events."""
        return len(self._admitted) or int(self._latest + self.hold_seconds > self._watermark)

    def admit(self, *events: Event) -> None:
        for event in events:
            self._admitted.append(event.event_id)
            if event.ts > self._latest:
                self._latest = event.ts

    def apply(self, signals: Iterable[Signal], now: float = 0.0) -> tuple[list[Flag], list[Outcome]]:
        signals = list(signals)
        if signals:
            self._signals.append((signals[0].detector, signals))
        return [], []

    def release(self, watermark: float) -> list[Outcome]:
        self.number += 1
        self._watermark = watermark
        self._points.append(Point(self.number, watermark, self._admitted, self._signals))
        self._admitted, self._signals = [], []
        return []

    def flush(self) -> list[Outcome]:
        return []

    def take(self) -> list[Point]:
        """The decision points reached since the last call, oldest first."""
        points, self._points = list(self._points), deque()
        return points


class ActorStage:
    """An actor partition's decisions: its events held as they arrive (`hold`), decided at each point."""

    def __init__(self, decision: DecisionStage):
        self.decision = decision
        self.number = 0  # the last point decided
        self._waiting: dict[str, deque[tuple[Event, Any]]] = {}  # arrived, not named by a point yet

    def hold(self, event: Event, source: Any = None) -> None:
        """An event arrived; `source`, the driver's note of where from, comes back with it if it is rejected."""
        self._waiting.setdefault(event.event_id, deque()).append((event, source))

    @property
    def waiting(self) -> int:
        return sum(len(events) for events in self._waiting.values())

    def decide(self, point: Point) -> tuple[list[Flag], list[Outcome], list[tuple[Event, Any]]]:
        """Flags raised, outcomes (released, quarantined, retracted), and duplicates to reject (with their
        sources).

        A detection stage that restarted from its snapshot publishes points again, their lines cut
        differently; so deciding is idempotent: a named event no longer waiting was admitted before (the
        driver makes sure every event a point names has arrived: `Point` numbers and the input positions it
        carries), and a signal applied twice changes nothing (the stage keeps each detector's highest score)."""
        self.number = max(self.number, point.number)
        decision = self.decision
        # Control records first, as a pipeline applies them between batches, before the next decision point.
        flags, outcomes = apply_control(decision, point.control, point.watermark)
        for event_id in point.admitted:
            taken = self._take(event_id)
            if taken is not None:
                decision.admit(taken[0])
        rejected = [event for event in map(self._take, point.duplicates) if event is not None]
        for _, signals in point.signals:
            raised, retracted = decision.apply(signals, point.watermark)
            flags.extend(raised)
            outcomes.extend(retracted)
        outcomes.extend(decision.release(point.watermark))
        return flags, outcomes, rejected

    def _take(self, event_id: str) -> tuple[Event, Any] | None:
        events = self._waiting.get(event_id)
        if not events:
            return None
        event = events.popleft()
        if not events:
            del self._waiting[event_id]
        return event


class DetectionStage:
    """A detection-only `Pipeline` (its decision stage a `SignalLog`) and the bookkeeping that turns its
    decision points into each actor partition's: which partition each observed event arrived on, and the
    duplicates found since the last point. `partition_of(entity id)`: the partition whose stage owns an
    entity (the input topics' partitioner on the actor key)."""

    def __init__(self, pipeline: Any, partitions: int, partition_of: Callable[[str], int]):
        if not isinstance(pipeline.decision, SignalLog):
            raise TypeError("the detection stage's pipeline must decide nothing: its decision stage is a SignalLog")
        self.pipeline = pipeline
        self.partitions = partitions
        self.partition_of = partition_of
        self._source: dict[str, int] = {}  # event id -> the partition it arrived on, until a point names it
        self._control: dict[int, list[dict]] = {}  # control records for each partition's next point
        self._duplicates: list[tuple[str, int]] = []  # (event id, partition) since the last point

    def points(self, step: Any, sources: Iterable[int] = ()) -> list[dict[int, Point]]:
        """The decision points a finished step reached, each as one `Point` per partition (every partition
        gets every point: its watermark releases what is due there). `sources[i]`: the partition that
        `step.decoded[i]` arrived on."""
        source = self._source
        for decoded, partition in zip(step.decoded, sources):
            event_id = decoded.event_id
            if type(decoded) is Rejection:
                if decoded.reason.startswith("duplicate_event_id") and event_id is not None:
                    self._duplicates.append((event_id, partition))
            else:
                source[event_id] = partition
        out = []
        for point in self.pipeline.decision.take():
            split = {p: Point(point.number, point.watermark) for p in range(self.partitions)}
            for event_id in point.admitted:
                split[source.pop(event_id)].admitted.append(event_id)
            for event_id, partition in self._duplicates:
                split[partition].duplicates.append(event_id)
            point.duplicates = [event_id for event_id, _ in self._duplicates]
            self._duplicates = []
            for p, records in self._control.items():
                split[p].control = records
            self._control = {}
            for name, signals in point.signals:
                by_partition: dict[int, list[Signal]] = {}
                for signal in signals:
                    by_partition.setdefault(self.partition_of(signal.id), []).append(signal)
                for p, found in by_partition.items():
                    split[p].signals.append((name, found))
            out.append(split)
        return out


    def route(self, records: Iterable[dict]) -> None:
        """Control records (analysts' decisions, the trainer's signals) for the partition that owns each
        entity, carried by its next point: a learning fusion aside (`split_problem`), they act on the
        entity's flag, which lives there. `cut` makes that point now."""
        for record in records:
            if record.get("id") is not None:
                self._control.setdefault(self.partition_of(str(record["id"])), []).append(record)

    def cut(self) -> None:
        """A decision point now, at the watermark of the last one: control records must not wait for input."""
        log = self.pipeline.decision
        log.release(max(log._watermark, self.pipeline.watermark))  # noqa: SLF001


def actor_key(event: Event) -> str:
    """The key an event's partition follows: its actor's id."""
    return getattr(event, ACTOR_FIELD[type(event)][1])


def split_problem(decision: Any) -> str | None:
    """Why a decision stage like this one cannot be split by actor partition, or None."""
    if hasattr(decision.fusion, "learn"):
        return ("a learning fusion learns its weights and flag threshold from analysts' labels over the whole "
                "population: it does not split by actor partition")
    return None
