"""One code path for every driver: decode, dedupe, detect, decide, in micro-batches.

`replay` feeds it lines from a file and the Faust agents feed it messages from Kafka; both get back the same
`Step` of outcomes, so a detector cannot behave differently in the two.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from detectors.base import Detector
from detectors.decision import DecisionStage, Flag, Outcome
from detectors.events import Event, Rejection, decode_event


@dataclass(slots=True)
class Step:
    """What one micro-batch produced. `decoded[i]` is the event or rejection of input line i."""

    decoded: list[Event | Rejection] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)  # clean, quarantined and retracted
    flags: list[Flag] = field(default_factory=list)


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


class Pipeline:
    def __init__(self, detectors: Sequence[Detector], decision: DecisionStage,
                 seen: SeenIds | None = None):
        self.detectors = list(detectors)
        self.decision = decision
        self.seen = seen or SeenIds()
        self.watermark = 0.0
        self.detector_seconds = {detector.name: 0.0 for detector in self.detectors}

    def process(self, lines: Iterable[bytes | str]) -> Step:
        step = Step()
        events: list[Event] = []
        decoded_all, seen = step.decoded, self.seen
        for raw in lines:
            decoded = decode_event(raw)
            if type(decoded) is not Rejection:
                if seen.add(decoded.event_id):
                    events.append(decoded)
                else:
                    decoded = Rejection(raw if isinstance(raw, bytes) else raw.encode(),
                                        "duplicate_event_id: already seen", decoded.event_id)
            decoded_all.append(decoded)
        return self._detect_and_decide(events, step)

    def _detect_and_decide(self, events: list[Event], step: Step) -> Step:
        self.decision.admit(*events)
        if events:
            self.watermark = max(self.watermark, max(event.ts for event in events))
        # An empty batch is a tick (idle, flush): detectors finish their periodic work on it.
        for detector in self.detectors:
            started = time.perf_counter()
            signals = detector.observe(events, self.watermark)
            self.detector_seconds[detector.name] += time.perf_counter() - started
            flags, retracted = self.decision.apply(signals, self.watermark)
            step.flags.extend(flags)
            step.outcomes.extend(retracted)
        step.outcomes.extend(self.decision.release(self.watermark))
        return step

    def idle(self, seconds: float) -> Step:
        """No input for `seconds` of wall time: let event time move on so held events still leave."""
        self.watermark += seconds
        return self._detect_and_decide([], Step())

    def flush(self) -> Step:
        """End of input: release everything that is still held."""
        step = self._detect_and_decide([], Step())
        step.outcomes.extend(self.decision.flush())
        return step
