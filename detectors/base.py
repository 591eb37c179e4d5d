"""The one interface every detector family implements, and the signal it emits.

A detector observes validated events in micro-batches (a batch of one is fine) and answers with signals: a
score in [0, 1] about an entity (user, item, seller, client), the evidence behind it, and optionally the
events it implicates directly. Its state is bounded (windows, expiry, sketches) and can be snapshotted and
restored, so that a restarted worker and the offline `replay` carry on from the same place.
"""

from __future__ import annotations

import abc
import pickle
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from detectors.events import Event
from detectors.state_pickle import dumps_state  # noqa: F401 - detectors import it from here

EntityKind = Literal["user", "item", "seller", "client"]


@dataclass(frozen=True, slots=True)
class Signal:
    """A detector's belief that an entity is malicious (or, for items, under attack)."""

    kind: EntityKind
    id: str
    detector: str
    score: float
    evidence: dict[str, Any] = field(default_factory=dict)
    event_ids: tuple[str, ...] = ()  # events this signal implicates beyond the entity's own
    # The evidence says the account was fake from its first event (a copy of another profile, one of a crowd
    # of fresh accounts), not only that it misbehaved lately: a flag retracts its whole remembered history.
    whole_history: bool = False


class Detector(abc.ABC):
    """Observe events, emit signals. `now` is the event-time watermark (the largest ts seen so far).

    `observe` is also called with an empty batch on idle and flush ticks: the moment to finish periodic
    work (a pending group search), so that an idle stream or the end of a replay misses nothing."""

    name: str = "detector"

    @abc.abstractmethod
    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        """Update state with a micro-batch of events and return the signals it raises."""

    def finish(self, now: float) -> list[Signal]:
        """The input has ended for good (a replay of a file: nothing more will come). A detector that waits
        for more of the stream before it judges (an item's audience to gather) decides now on what it has;
        the rest treat it as an empty tick. A live worker never calls it: its input does not end."""
        return self.observe([], now)

    def snapshot(self) -> bytes:
        """State as bytes; everything a detector keeps is plain Python and numpy, so pickle suffices (numpy
        arrays still mostly at their initial value written compactly: detectors.state_pickle)."""
        return dumps_state(self.__dict__)

    def restore(self, state: bytes) -> None:
        self.__dict__.update(pickle.loads(state))
