"""One code path for every driver: decode, dedupe, detect, decide, in micro-batches.

`replay` feeds it lines from a file and the Faust agents feed it messages from Kafka; both get back the same
`Step` of outcomes, so a detector cannot behave differently in the two.

Some detectors may be offloaded to another process (`streams.parallel`): they get the accepted lines of the
batch when it starts and answer while the local detectors work, so a second core does their share. Signals
are applied in the configured order either way, and detectors never read the decision stage, so the
outcomes are the same as with every detector in process.

A driver with the next batch at hand may `start` it before it `finish`es the one before: the offloaded
detectors then work on the next batch while this process decides the last (`process` is the two in one).
Starting only decodes, dedupes and submits; everything the decision stage and the local detectors see
happens in `finish`, in batch order, so the outcomes are the same either way.

With `decide_every` set (build_pipeline sets it), decisions fall at fixed points of the input, not at the
ends of whatever batches a driver happens to cut: every `decide_every` lines counted from the stream's
start (and on idle and flush ticks). Detectors observe every batch at once (they are batch-invariant: their
periodic work falls at the event that makes it due); their signals wait, and at a decision point the
decision stage applies them, detector by detector in the configured order, and releases what is due. A
batch that straddles a decision point is observed in two parts. So a stream cut into batches of 1, 150 or
2048 lines, a worker's batches and a restarted worker's different ones all get the same outcomes: a
worker restored from a snapshot (which holds the position and the waiting signals) and fed the same input
decides what one that never stopped decides. Without it (0), every batch's end is a decision point.

Some detectors' signals may reach the decision stage `lag` decision points late (`lagged`, with
`decide_every` set): those of the catalog path, whose text encoder takes seconds over a catalogue sync, so
that ratings and clicks do not wait behind it. A lagged detector's signals from the lines up to a decision
point are applied `lag` decision points later, a fixed place in the input whatever the batches, so replay
and a worker still decide alike; an offloaded process of lagged detectors is collected only when its
answer is due, and works meanwhile. The price is the delay itself: on a stream whose `lag x decide_every`
lines span more event time than the hold, an entity those detectors flag has events released first, which
its flag then retracts. An idle tick (no input to hold up) applies every lagged signal in hand.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

from detectors.base import Detector, Signal
from detectors.decision import DecisionStage, Flag, Outcome
from detectors.events import Event, Rejection, decode_event
from detectors.score_drift import ScoreDrift


CONTROL_ACTIONS = ("release", "confirm", "escalate", "signal")
# An analyst's decision as a label for the learning fusion: confirmed malicious, or not (a duplicate says
# nothing about the entity, an escalation nothing yet).
LABELS = {("confirm", "true_positive"): True, ("release", "false_positive"): False,
          ("release", "benign_positive"): False}


@dataclass(slots=True)
class Step:
    """What one micro-batch produced. `decoded[i]` is the event or rejection of input line i."""

    decoded: list[Event | Rejection] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)  # clean, quarantined and retracted
    flags: list[Flag] = field(default_factory=list)
    watermark: float = 0.0  # the event time of the last decision these outcomes come from
    drifts: list[dict] = field(default_factory=list)  # detectors whose score distribution changed (ADWIN)


@dataclass(slots=True)
class Started:
    """A batch decoded and handed to the offloaded detectors, waiting for `Pipeline.finish`: its events in
    parts, each part ending at a decision point or at the end of the batch (`decide` says which)."""

    step: Step
    parts: list[tuple[list[Event], bool, int]]  # the part's events, whether it ends at a decision point, and
    # its end: the input lines started up to it


class SeenIds:
    """Bounded memory of event ids for duplicate rejection: the oldest ids are forgotten first."""

    def __init__(self, capacity: int = 5_000_000):
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, event_id: str) -> bool:
        """Remember the id; False if it was already known."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


class Offloaded(Protocol):
    """Detectors that run elsewhere: `submit` hands them a batch's accepted lines (the raw lines, which are
    smaller to send than events), `collect` waits for each one's (name, signals, seconds)."""

    names: list[str]

    def submit(self, lines: list[bytes | str], now: float, final: bool = False) -> None: ...

    def collect(self) -> list[tuple[str, list[Signal], float]]: ...

    def snapshot(self) -> dict[str, bytes]: ...

    def restore(self, states: dict[str, bytes]) -> None: ...

    def close(self) -> None: ...


class Pipeline:
    """`detectors` run in process; `offloaded` groups elsewhere; `order` (detector names, default: local
    then offloaded) is the order in which their signals reach the decision stage."""

    def __init__(self, detectors: Sequence[Detector], decision: DecisionStage,
                 seen: SeenIds | None = None, offloaded: Sequence[Offloaded] = (),
                 order: Sequence[str] | None = None, decide_every: int = 0, lagged: Sequence[str] = (),
                 lag: int = 0):
        self.detectors = list(detectors)
        self.offloaded = list(offloaded)
        self.decision = decision
        self.seen = seen or SeenIds()
        self.watermark = 0.0
        self.decide_every = decide_every
        # State beside the detectors' and the decision stage's (a snapshot holds it): input lines finished so
        # far, and the signals observed since the last decision point, by detector.
        self.position = 0
        self.waiting: dict[str, list[Signal]] = {}
        self._started_position = 0  # lines started (ahead of `position` while batches wait to finish)
        names = [detector.name for detector in self.detectors] + [n for o in self.offloaded for n in o.names]
        self.order = list(order) if order is not None else names
        if sorted(self.order) != sorted(names):
            raise ValueError(f"order {self.order} does not name the detectors {names}")
        self.detector_seconds = {name: 0.0 for name in self.order}
        # Lagged detectors (the module's note): off without fixed decision points
        self.lag_lines = lag * decide_every if lag > 0 else 0
        self.lagged = set(lagged) & set(names) if self.lag_lines else set()
        for group in self.offloaded:
            if self.lagged & set(group.names) and not set(group.names) <= self.lagged:
                raise ValueError(f"detectors {group.names} share a process: lag all of them or none")
        # Per lagged process, the ends of the parts it was given and has not answered yet, oldest first
        self._due: dict[int, deque[int]] = {id(group): deque() for group in self.offloaded
                                            if set(group.names) <= self.lagged}
        # State (a snapshot holds it): lagged signals in hand, (part end, detector, signals), not due yet
        self.late: list[tuple[int, str, list[Signal]]] = []
        self.drift = ScoreDrift()  # each detector's score distribution, watched (a snapshot holds it)
        self._started: deque[Started] = deque()
        self._ahead = 0.0  # the watermark of the last batch started

    def process(self, lines: Iterable[bytes | str]) -> Step:
        return self.finish(self.start(lines))

    def start(self, lines: Iterable[bytes | str]) -> Started:
        """Decode and dedupe a batch, and hand its accepted lines to the offloaded detectors."""
        step = Step()
        decoded_all, seen = step.decoded, self.seen
        if not self._started:
            self._ahead = self.watermark
            self._started_position = self.position
        parts: list[tuple[list[Event], bool]] = []
        events: list[Event] = []
        accepted: list[bytes | str] = []  # what offloaded detectors get
        every, position = self.decide_every, self._started_position
        for raw in lines:
            decoded = decode_event(raw)
            if type(decoded) is not Rejection:
                if seen.add(decoded.event_id):
                    events.append(decoded)
                    accepted.append(raw)
                else:
                    decoded = Rejection(raw if isinstance(raw, bytes) else raw.encode(),
                                        "duplicate_event_id: already seen", decoded.event_id)
            decoded_all.append(decoded)
            position += 1
            if every and position % every == 0:  # a decision point: the part so far is observed and decided
                self._start_part(parts, events, accepted, True, position)
                events, accepted = [], []
        if events or not parts:
            self._start_part(parts, events, accepted, not every, position)
        self._started_position = position
        started = Started(step, parts)
        self._started.append(started)
        return started

    def _start_part(self, parts: list, events: list[Event], accepted: list[bytes | str], decide: bool,
                    end: int) -> None:
        if events:  # the watermark this part will bring the decision stage to
            self._ahead = max(self._ahead, max(event.ts for event in events))
        self._submit(accepted, self._ahead, end)
        parts.append((events, decide, end))

    def finish(self, started: Started) -> Step:
        """Detect (and, at decision points, decide) a started batch: the oldest one not finished yet."""
        if not self._started or self._started[0] is not started:
            raise RuntimeError("batches must be finished in the order they were started")
        self._started.popleft()
        step = started.step
        for events, decide, end in started.parts:
            self._detect(events, end)
            if decide:
                self._decide(step, end)
        self.position += len(step.decoded)
        return step

    @property
    def pending(self) -> int:
        """Batches started and not finished."""
        return len(self._started)

    def _require_finished(self, before: str) -> None:
        if self._started:
            raise RuntimeError(f"finish the started batches before {before}")

    def _submit(self, lines: list[bytes | str], now: float, end: int, final: bool = False) -> None:
        for group in self.offloaded:
            group.submit(lines, now, final)
            due = self._due.get(id(group))
            if due is not None:
                due.append(end)

    def _detect(self, events: list[Event], end: int, tick: bool = False, final: bool = False) -> None:
        """Admit a part's events and let every detector observe them; their signals wait for a decision (a
        lagged detector's, with the part's end, for theirs). `final`: the end of the input (Detector.finish)."""
        self.decision.admit(*events)
        if events:
            self.watermark = max(self.watermark, max(event.ts for event in events))
        if tick:  # an empty batch: detectors finish their periodic work on it (idle, flush)
            self._submit([], self.watermark, end, final)
        for detector in self.detectors:
            started = time.perf_counter()
            found = detector.finish(self.watermark) if final else detector.observe(events, self.watermark)
            self.detector_seconds[detector.name] += time.perf_counter() - started
            self._hold(detector.name, found, end)
        for group in self.offloaded:
            if id(group) not in self._due:
                self._collect(group, end)

    def _collect(self, group: Offloaded, end: int) -> None:
        for name, found, seconds in group.collect():
            self.detector_seconds[name] += seconds
            self._hold(name, found, end)

    def _hold(self, name: str, found: list[Signal], end: int) -> None:
        if not found:
            return
        if name in self.lagged:
            self.late.append((end, name, found))
        else:
            self.waiting.setdefault(name, []).extend(found)

    def _take_answers(self, limit: int | None) -> None:
        """Collect the lagged processes' answers for parts ending at or before line `limit` (None: all in
        flight) into `late`: a lagged process is waited for only when its answer is due."""
        for group in self.offloaded:
            due = self._due.get(id(group))
            while due and (limit is None or due[0] <= limit):
                self._collect(group, due.popleft())

    def _catch_up(self, at: int | None) -> None:
        """The lagged signals due at the decision point after input line `at` (None: all of them)."""
        limit = None if at is None else at - self.lag_lines
        self._take_answers(limit)
        if self.late:
            late, self.late = self.late, []
            for end, name, found in late:
                if limit is None or end <= limit:
                    self.waiting.setdefault(name, []).extend(found)
                else:
                    self.late.append((end, name, found))

    def _decide(self, step: Step, at: int | None) -> Step:
        """A decision point after input line `at` (None: the end of the input): the waiting signals,
        detector by detector in the configured order, then release."""
        if self.lagged:
            self._catch_up(at)
        waiting, self.waiting = self.waiting, {}
        for name in self.order:
            signals = waiting.get(name)
            if signals:
                # In a canonical order: a detector may emit a decision point's signals in an order that
                # iterating a set gave it, and a set rebuilt from a snapshot can iterate differently.
                signals.sort(key=_canonical)
                observe = self.drift.observe
                for signal in signals:
                    found = observe(name, signal.score, self.watermark)
                    if found:
                        step.drifts.extend(found)
                flags, retracted = self.decision.apply(signals, self.watermark)
                step.flags.extend(flags)
                step.outcomes.extend(retracted)
        step.outcomes.extend(self.decision.release(self.watermark))
        step.watermark = self.watermark
        return step

    def idle(self, seconds: float) -> Step:
        """No input for `seconds` of wall time: let event time move on so held events still leave."""
        self._require_finished("idle")
        self.watermark += seconds
        self._detect([], self.position, tick=True)
        return self._decide(Step(), None)  # nothing to hold up: the lagged signals in hand are applied too

    def control(self, records: Iterable[dict]) -> Step:
        """Decisions and signals from outside the stream (the control topic: analysts, the trainer), applied
        at once, between batches (`apply_control`)."""
        self._require_finished("control")
        step = Step(watermark=self.watermark)
        step.flags, step.outcomes = apply_control(self.decision, records, self.watermark, self._learn)
        return step

    def _learn(self, kind: str, entity_id: str, confirmed: bool | None) -> None:
        """An analyst's label trains a learning fusion (detectors.learned_fusion), which then sets the flag
        threshold within the false-flag budget over the entities the stage is weighing."""
        fusion = self.decision.fusion
        if confirmed is None or not hasattr(fusion, "learn"):
            return
        scores = self.decision.scores_of(kind, entity_id)
        if not scores:
            return
        fusion.learn(scores, confirmed)
        if fusion.active:
            self.decision.flag_threshold = fusion.calibrate(self.decision.population(), self.position)

    def flush(self, final: bool = True) -> Step:
        """End of input: release everything that is still held. `final`: the input has ended for good (a
        file), so detectors decide what waits for more of the stream (Detector.finish); False stops where a
        live worker would stand after the same input (to compare a replay with a worker)."""
        self._require_finished("flush")
        self._detect([], self.position, tick=True, final=final)
        step = self._decide(Step(), None)
        step.outcomes.extend(self.decision.flush())
        return step

    # -- detector state, wherever the detectors run ------------------------------------------
    def snapshot_detectors(self) -> dict[str, bytes]:
        """Every detector's state; the lagged processes' answers in flight are taken into `late` first (the
        snapshot must hold them: a restored pipeline applies them where this one would have)."""
        self._require_finished("a snapshot")
        self._take_answers(None)
        states = {detector.name: detector.snapshot() for detector in self.detectors}
        for group in self.offloaded:
            states.update(group.snapshot())
        return states

    def restore_detectors(self, states: dict[str, bytes]) -> list[str]:
        """Restore the detectors named in `states`; return the names that no configured detector has."""
        local = {detector.name: detector for detector in self.detectors}
        for name in local.keys() & states.keys():
            local[name].restore(states[name])
        for group in self.offloaded:
            group.restore({name: states[name] for name in group.names if name in states})
        return sorted(states.keys() - set(self.order))

    def close(self) -> None:
        """Stop offloaded detectors (a pipeline without them needs no closing)."""
        for group in self.offloaded:
            group.close()


def apply_control(decision: DecisionStage, records: Iterable[dict], watermark: float,
                  learn: Callable[[str, str, bool | None], None] | None = None) -> tuple[list[Flag], list[Outcome]]:
    """Apply control records to a decision stage; return the flags and outcomes they make.
    `{"action": "release"|"confirm"|"escalate", "kind", "id", "reason", "note", "by", "ts"}` or
    `{"action": "signal", "kind", "id", "detector", "score", "evidence"}` (evidence for that detector on that
    entity). Records that name no entity or action are skipped. `learn(kind, id, label)` hears each analyst's
    label (`LABELS`) before it is applied."""
    flags: list[Flag] = []
    outcomes: list[Outcome] = []
    for record in records:
        kind, entity_id, action = record.get("kind"), record.get("id"), record.get("action")
        if not kind or entity_id is None or action not in CONTROL_ACTIONS:
            continue
        entity_id = str(entity_id)
        if action == "signal":
            try:
                score = float(record["score"])
            except (KeyError, TypeError, ValueError):
                continue
            evidence = record.get("evidence") if isinstance(record.get("evidence"), dict) else {}
            signal = Signal(kind, entity_id, str(record.get("detector") or "control"), score, evidence)
            raised, retracted = decision.apply([signal], watermark)
            flags.extend(raised)
            outcomes.extend(retracted)
            continue
        who = str(record.get("by") or "analyst")
        reason, note = str(record.get("reason") or ""), str(record.get("note") or "")
        at = float(record.get("ts") or 0.0)
        if learn is not None:
            learn(kind, entity_id, LABELS.get((action, reason)))
        if action == "release":
            flag, given_back = decision.unflag(kind, entity_id, by=who, reason=reason, at=at, note=note)
            outcomes.extend(given_back)
        else:
            flag = decision.confirm(kind, entity_id, by=who, reason=reason, at=at, note=note, action=action)
        if flag is not None:
            flags.append(flag)
    return flags, outcomes


def _canonical(signal: Signal) -> tuple:
    return (signal.kind, signal.id, signal.score, signal.whole_history, signal.event_ids, repr(signal.evidence))
