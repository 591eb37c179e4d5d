"""The decision stage: fuse signals into entity risk, hold events, release, quarantine or retract them.

Each accepted event is held for `hold_seconds` of event time. When its hold expires it is released to the
clean stream unless its actor (the user of a rating or click, the seller of a catalog edit, the client of a
query) is flagged or a signal implicated it directly; then it is quarantined. An entity flagged after some of
its events were released has those events retracted, as far back as `retraction_horizon`.

Fusion (`detectors.fusion.EvidenceFusion`) reads each detector's strongest score for the entity as calibrated
evidence (a log Bayes factor against a reference base rate) and adds independent evidence up, so the flag
threshold is a posterior probability and a weak detector alone never crosses it by construction of its
score; flags are sticky until an analyst releases them.

An analyst's release (`unflag`) gives back what the flag took: the entity's quarantined events leave clean
(verdict "clean", `released_by` set) and its retracted ones are "restored" (the trainer learns them again).
The evidence the analyst reviewed stays on record: only a score above it (evidence newer than the release)
flags the entity again, and the release stays in the flag's `history`.

>>> from detectors.events import RatingEvent
>>> from detectors.base import Signal
>>> stage = DecisionStage(hold_seconds=60)
>>> stage.admit(RatingEvent(event_id="a", ts=0.0, user_id="u1", item_id="i", rating=5))
>>> stage.admit(RatingEvent(event_id="b", ts=0.0, user_id="u2", item_id="i", rating=4))
>>> [o.verdict for o in stage.release(30.0)]
[]
>>> flags, _ = stage.apply([Signal("user", "u1", "profile", 0.9)])
>>> [(o.event.event_id, o.verdict) for o in stage.release(60.0)]
[('a', 'quarantined'), ('b', 'clean')]
>>> _, late = stage.apply([Signal("user", "u2", "profile", 0.8)])
>>> [(o.event.event_id, o.verdict) for o in late]
[('b', 'retracted')]
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Literal

from detectors.base import EntityKind, Signal
from detectors.events import ACTOR_FIELD, Event, decode_event, to_json
from detectors.fusion import EvidenceFusion

Verdict = Literal["clean", "quarantined", "retracted", "restored"]


@dataclass(slots=True)
class Outcome:
    verdict: Verdict
    event: Event
    reasons: list[str] = field(default_factory=list)
    payload: bytes | None = None  # the event as JSON, where it was already serialised
    released_by: str | None = None  # an analyst's release (verdict clean) or restoration (verdict restored)


@dataclass(slots=True)
class Flag:
    kind: EntityKind
    id: str
    score: float
    detectors: dict[str, float]
    evidence: dict[str, Any]
    first_ts: float
    updated: bool = False  # True when this re-announces a flag with stronger evidence
    status: str = "open"  # open, confirmed (an analyst agreed) or released (an analyst unflagged it)
    history: list[dict[str, Any]] = field(default_factory=list)  # analysts' decisions on the entity
    last_ts: float | None = None  # event time of the latest evidence that strengthened the flag

    def __setstate__(self, state: Any) -> None:
        # Pickled by default slot pickling, (None, {slot: value}); flags from snapshots taken before `status`
        # and `history` existed lack them.
        values = state[1] if isinstance(state, tuple) else state
        for name, value in (values or {}).items():
            object.__setattr__(self, name, value)
        for name, default in (("updated", False), ("status", "open"), ("history", list), ("last_ts", None)):
            if name not in (values or {}):
                object.__setattr__(self, name, default() if callable(default) else default)

    def as_dict(self) -> dict[str, Any]:
        record = {"kind": self.kind, "id": self.id, "score": round(self.score, 4),
                  "detectors": sorted(self.detectors), "detector_scores": {
                      name: round(score, 4) for name, score in self.detectors.items()},
                  "evidence": self.evidence, "first_ts": self.first_ts}
        if self.last_ts is not None and self.last_ts != self.first_ts:
            record["last_ts"] = self.last_ts
        if self.status != "open":
            record["status"] = self.status
        if self.history:
            record["history"] = self.history
        return record


@dataclass(slots=True)
class _Risk:
    scores: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    last_ts: float = 0.0
    whole_history: bool = False


class DecisionStage:
    """Parameters: `hold_seconds` of event time before release; `flag_threshold` on fused risk (a posterior
    probability); `fusion`, how detectors' scores add up (default `EvidenceFusion()`);
    `retraction_horizon` seconds of event time during which released events can still be retracted (those
    of an entity flagged on `whole_history` evidence: a copied profile found when the real one arrives,
    months later); `recent_retraction` how far back a flag on other evidence retracts (an eccentric real
    user wrongly flagged loses a month, not a year); `max_released_per_entity` bounds the retraction index
    for very active entities."""

    recent_retraction = 30 * 86400.0  # for snapshots taken before it was a parameter
    fusion = EvidenceFusion()  # likewise

    def __init__(self, hold_seconds: float = 600.0, flag_threshold: float = 0.5,
                 retraction_horizon: float = 365 * 86400.0, max_released_per_entity: int = 5000,
                 recent_retraction: float = 30 * 86400.0, fusion: EvidenceFusion | None = None):
        self.hold_seconds = hold_seconds
        self.flag_threshold = flag_threshold
        self.fusion = fusion or EvidenceFusion()
        self.retraction_horizon = retraction_horizon
        self.recent_retraction = min(recent_retraction, retraction_horizon)
        self.max_released_per_entity = max_released_per_entity
        self._held: list[tuple[float, int, Event]] = []  # heap of (release time, seq, event)
        self._held_ids: set[str] = set()  # only held events can still be implicated before release
        self._seq = itertools.count()
        self._risk: dict[tuple[str, str], _Risk] = {}
        self._flags: dict[tuple[str, str], Flag] = {}
        self._implicated: dict[str, str] = {}  # event_id -> reason, for signals naming events
        # Released events kept for retraction, compactly: (ts, event_id, JSON) is a sixth of a model's size.
        self._released: dict[tuple[str, str], deque[tuple[float, str, bytes]]] = {}
        self._released_by_id: dict[str, tuple[str, str]] = {}
        self._expired_at = float("-inf")
        # What a flag took from an entity, kept so that a release can give it back (same bound as above):
        # (ts, event_id, JSON, "quarantined" | "retracted").
        self._condemned: dict[tuple[str, str], deque[tuple[float, str, bytes, str]]] = {}
        self._reviewed: dict[tuple[str, str], dict[str, float]] = {}  # scores an analyst released
        self._history: dict[tuple[str, str], list[dict[str, Any]]] = {}  # analysts' decisions
        self._journal: _Journal | None = None  # changes to the released events since a mark, when asked for

    def __getstate__(self) -> dict[str, Any]:
        # The journal is the snapshot writer's, of changes since its last write: not part of the state. The
        # index by id is the released events again (an eighth of the snapshot): rebuilt on restore.
        state = dict(self.__dict__)
        state.pop("_journal", None)
        state.pop("_released_by_id", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Snapshots from before releases gave events back lack what a release needs: empty, then the rest.
        self.__dict__.update(_condemned={}, _reviewed={}, _history={}, _journal=None)
        self.__dict__.update(state)
        if "_released_by_id" not in state:
            self._released_by_id = {event_id: key for key, released in self._released.items()
                                    for _, event_id, _ in released}

    # -- incremental snapshots: the released events are most of the state, and append-mostly -----------
    def journal_start(self) -> None:
        """Record from now on which released events are added and which forgotten (`journal_take`): an
        incremental snapshot writes those instead of every released event."""
        self._journal = _Journal()

    @property
    def journaling(self) -> bool:
        return self._journal is not None

    def journal_take(self) -> tuple[dict[tuple[str, str], list[tuple[float, str, bytes]]], list[str]]:
        """What changed among the released events since the mark (`journal_start` or the last take): those
        released since and still kept (entity -> its (ts, event_id, JSON) in release order), and the ids of
        those kept at the mark and forgotten since (retracted, expired, over the per-entity bound). A new
        mark."""
        journal = self._journal
        if journal is None:
            raise RuntimeError("journal_take without journal_start")
        self._journal = _Journal()
        added: dict[tuple[str, str], list[tuple[float, str, bytes]]] = {}
        for key, record in journal.added.values():
            records = added.get(key)
            if records is None:  # grouped by entity: each key pickled once, not per event
                records = added[key] = []
            records.append(record)
        return added, list(journal.removed)

    def journal_replay(self, added: dict[tuple[str, str], list[tuple[float, str, bytes]]],
                       removed: Iterable[str]) -> None:
        """Apply what `journal_take` returned to a copy of the stage as it was at the mark: its released
        events then equal the original's. (Every removal keeps a deque's order and every release appends, so
        a deque is its survivors in order, then the events added since in order.)"""
        released, by_id = self._released, self._released_by_id
        gone: dict[tuple[str, str], set[str]] = {}
        for event_id in removed:
            key = by_id.pop(event_id, None)
            if key is not None:
                gone.setdefault(key, set()).add(event_id)
        for key, ids in gone.items():
            queue = released.get(key)
            if not queue:
                continue
            left = len(ids)
            while queue and left and queue[0][1] in ids:  # expiry and the bound take the oldest
                queue.popleft()
                left -= 1
            while queue and left and queue[-1][1] in ids:  # a flag retracts the newest
                queue.pop()
                left -= 1
            if left:
                released[key] = queue = deque(record for record in queue if record[1] not in ids)
            if not queue:
                del released[key]
        for key, records in added.items():
            queue = released.get(key)
            if queue is None:
                queue = released[key] = deque()
            queue.extend(records)
            for record in records:
                by_id[record[1]] = key

    def detach_released(self) -> tuple[dict, dict]:
        """Take the released events out (an incremental snapshot pickles the rest); `attach_released` puts
        them back."""
        taken = (self._released, self._released_by_id)
        self._released, self._released_by_id = {}, {}
        return taken

    def attach_released(self, taken: tuple[dict, dict]) -> None:
        self._released, self._released_by_id = taken

    def _forgotten(self, event_id: str) -> None:
        """A released event left the retraction index: the journal notes it."""
        journal = self._journal
        if journal is not None and journal.added.pop(event_id, None) is None:
            journal.removed.add(event_id)

    # -- holding and releasing ------------------------------------------------------------
    def admit(self, *events: Event) -> None:
        held, hold, seq, held_ids = self._held, self.hold_seconds, self._seq, self._held_ids
        for event in events:
            heapq.heappush(held, (event.ts + hold, next(seq), event))
            held_ids.add(event.event_id)

    def release(self, watermark: float) -> list[Outcome]:
        """Release every event whose hold has expired at `watermark` (event time)."""
        out: list[Outcome] = []
        held = self._held
        # The hot loop of the stage (every event passes once): locals, and the actor lookup inlined.
        pop, actor_field, held_ids, implicated = heapq.heappop, ACTOR_FIELD, self._held_ids, self._implicated
        flags, released_of, released_by_id, cap = (self._flags, self._released, self._released_by_id,
                                                   self.max_released_per_entity)
        journal = self._journal.added if self._journal is not None else None
        while held and held[0][0] <= watermark:
            event = pop(held)[2]
            kind, name = actor_field[type(event)]
            key = (kind, getattr(event, name))
            event_id = event.event_id
            held_ids.discard(event_id)
            reason = implicated.pop(event_id, None) if implicated else None  # popped either way
            flag = flags.get(key)
            if flag is not None or reason is not None:
                out.append(Outcome("quarantined", event, [_flag_reason(flag) if flag is not None else reason]))
                self._condemn(key, event.ts, event_id, to_json(event), "quarantined")
                continue
            released = released_of.get(key)
            if released is None:
                released = released_of[key] = deque()
            payload = to_json(event)
            record = (event.ts, event_id, payload)
            released.append(record)
            released_by_id[event_id] = key
            if journal is not None:
                journal[event_id] = (key, record)
            if len(released) > cap:
                oldest = released.popleft()[1]
                released_by_id.pop(oldest, None)
                if journal is not None:
                    self._forgotten(oldest)
            out.append(Outcome("clean", event, [], payload))
        # Expiry scans every entity, so it runs once per hundredth of the horizon, not per release.
        if out and watermark - self._expired_at >= self.retraction_horizon / 100:
            self._expire(watermark)
            self._expired_at = watermark
        return out

    def flush(self) -> list[Outcome]:
        """Release everything still held (end of a replay)."""
        return self.release(float("inf"))

    @property
    def held_count(self) -> int:
        return len(self._held)

    def _expire(self, watermark: float) -> None:
        # Bounded state: forget released events past the retraction horizon, and unflagged risk that
        # has gone quiet for as long.
        horizon = watermark - self.retraction_horizon
        if horizon <= 0 or watermark == float("inf"):
            return
        for key in [k for k, q in self._released.items() if not q or q[0][0] < horizon]:
            released = self._released[key]
            while released and released[0][0] < horizon:  # oldest first: released in ts order
                oldest = released.popleft()[1]
                self._released_by_id.pop(oldest, None)
                self._forgotten(oldest)
            if not released:
                del self._released[key]
        for key in [k for k, q in self._condemned.items() if not q or q[-1][0] < horizon]:
            del self._condemned[key]
        for key in [k for k, r in self._risk.items() if r.last_ts < horizon and k not in self._flags]:
            del self._risk[key]

    # -- signals ----------------------------------------------------------------------------
    def apply(self, signals: Iterable[Signal], now: float = 0.0,
              foreign: list[tuple[str, str]] | None = None) -> tuple[list[Flag], list[Outcome]]:
        """Fuse signals; return flags raised or strengthened, and retractions of released events. With
        `foreign`, the events a passing signal implicates that this stage neither holds nor released are
        appended to it as (event_id, reason): another partition's stage holds them (`implicate` there)."""
        changed: dict[tuple[str, str], Flag] = {}
        retracted: list[Outcome] = []
        for signal in signals:
            key = (signal.kind, signal.id)
            risk = self._risk.get(key)
            if risk is None:
                risk = self._risk[key] = _Risk()
            risk.last_ts = max(risk.last_ts, now)
            # After a release, only evidence beyond what the analyst reviewed counts.
            reviewed = self._reviewed.get(key)
            floor = reviewed.get(signal.detector, 0.0) if reviewed else 0.0
            if signal.score > max(risk.scores.get(signal.detector, 0.0), floor):
                risk.scores[signal.detector] = signal.score
                risk.evidence[signal.detector] = signal.evidence
            widened = signal.whole_history and not risk.whole_history
            risk.whole_history |= signal.whole_history
            fused = self.fusion.risk(risk.scores)
            if fused < self.flag_threshold:
                continue
            since = float("-inf") if risk.whole_history else now - self.recent_retraction
            flag = self._flags.get(key)
            if flag is None:
                flag = changed[key] = self._flags[key] = Flag(
                    signal.kind, signal.id, fused, dict(risk.scores), dict(risk.evidence), now,
                    history=list(self._history.get(key, ())))
                retracted.extend(self._retract_entity(key, flag, since))
            else:
                if widened:  # now known fake from the start: the older history it kept goes too
                    retracted.extend(self._retract_entity(key, flag, since))
                if fused > flag.score + 1e-9:
                    flag.score, flag.detectors, flag.evidence = fused, dict(risk.scores), dict(risk.evidence)
                    flag.last_ts = now
                    if key not in changed:  # raised earlier in this same batch: still news, not an update
                        flag.updated = True
                    changed[key] = flag
            # Events named by a signal on a flagged entity are condemned even when the flag is old news.
            reason = f"implicated by {signal.detector} signal on {signal.kind} {signal.id}"
            for event_id in signal.event_ids:
                if not self.implicate(event_id, reason, retracted) and foreign is not None:
                    foreign.append((event_id, reason))
        # Copies: a later update must not rewrite what was already announced.
        return [replace(flag) for flag in changed.values()], retracted

    def implicate(self, event_id: str, reason: str, retracted: list[Outcome]) -> bool:
        """A signal on a flagged entity names this event: retract it if released (appended to `retracted`),
        quarantine it at release if held. False if this stage has never seen it (or forgot it)."""
        owner = self._released_by_id.get(event_id)
        if owner is not None:
            retracted.extend(self._retract_ids(owner, {event_id}, reason))
            return True
        if event_id in self._held_ids:
            self._implicated.setdefault(event_id, reason)
            return True
        return False

    def _retract_entity(self, key: tuple[str, str], flag: Flag, since: float) -> list[Outcome]:
        """Retract the entity's released events from event time `since` on; older ones stay remembered,
        in case later evidence condemns its whole history."""
        released = self._released.pop(key, None)
        if not released:
            return []
        if released[0][0] < since:  # in ts order: keep the prefix before `since`
            kept = deque()
            while released and released[0][0] < since:
                kept.append(released.popleft())
            self._released[key] = kept
        reason = _flag_reason(flag)
        for ts, event_id, payload in released:
            self._released_by_id.pop(event_id, None)
            self._forgotten(event_id)
            self._condemn(key, ts, event_id, payload, "retracted")
        return [_retraction(record, reason) for record in released]

    def _retract_ids(self, key: tuple[str, str], ids: set[str], reason: str) -> list[Outcome]:
        released = self._released[key]
        hit = [record for record in released if record[1] in ids]
        if hit:
            self._released[key] = deque(record for record in released if record[1] not in ids)
            for ts, event_id, payload in hit:
                self._released_by_id.pop(event_id, None)
                self._forgotten(event_id)
                self._condemn(key, ts, event_id, payload, "retracted")
        return [_retraction(record, reason) for record in hit]

    def _condemn(self, key: tuple[str, str], ts: float, event_id: str, payload: bytes, verdict: str) -> None:
        condemned = self._condemned.get(key)
        if condemned is None:
            condemned = self._condemned[key] = deque()
        condemned.append((ts, event_id, payload, verdict))
        if len(condemned) > self.max_released_per_entity:
            condemned.popleft()

    def is_flagged(self, kind: str, entity_id: str) -> bool:
        return (kind, entity_id) in self._flags

    def flags(self) -> list[Flag]:
        return list(self._flags.values())

    def unflag(self, kind: str, entity_id: str, by: str = "analyst", reason: str = "false_positive",
               at: float = 0.0, note: str = "") -> tuple[Flag | None, list[Outcome]]:
        """An analyst's release: the entity's future events flow again, and what its flag took is given
        back: quarantined events as clean, retracted ones as restored (both with `released_by`). Returns the
        released flag (status "released", None if the entity was not flagged) and those outcomes. The scores
        the analyst saw are remembered: only stronger evidence flags the entity again."""
        key = (kind, entity_id)
        entry = {"action": "release", "by": by, "reason": reason, "at": at, **({"note": note} if note else {})}
        self._history.setdefault(key, []).append(entry)
        risk = self._risk.pop(key, None)
        flag = self._flags.pop(key, None)
        reviewed = self._reviewed.setdefault(key, {})
        for name, score in {**(risk.scores if risk else {}), **(flag.detectors if flag else {})}.items():
            reviewed[name] = max(reviewed.get(name, 0.0), score)
        why = f"released by {by}: {reason}"
        out = []
        for _, _, payload, verdict in self._condemned.pop(key, ()):
            event = decode_event(payload)
            out.append(Outcome("clean" if verdict == "quarantined" else "restored", event, [why], payload, by))
        if flag is None:
            return None, out
        return replace(flag, status="released", updated=True, history=list(self._history[key])), out

    def confirm(self, kind: str, entity_id: str, by: str = "analyst", reason: str = "true_positive",
                at: float = 0.0, note: str = "", action: str = "confirm") -> Flag | None:
        """An analyst's confirmation (or escalation): recorded in the flag's history; the flag stays. Returns
        the flag, status "confirmed" (None if the entity is not flagged)."""
        key = (kind, entity_id)
        entry = {"action": action, "by": by, "reason": reason, "at": at, **({"note": note} if note else {})}
        self._history.setdefault(key, []).append(entry)
        flag = self._flags.get(key)
        if flag is None:
            return None
        flag.history = list(self._history[key])
        if action == "confirm":
            flag.status = "confirmed"
        return replace(flag, updated=True, history=list(flag.history))

    def scores_of(self, kind: str, entity_id: str) -> dict[str, float]:
        """Each detector's strongest score on the entity (what an analyst reviewed)."""
        key = (kind, entity_id)
        flag, risk = self._flags.get(key), self._risk.get(key)
        return dict(flag.detectors if flag else risk.scores if risk else self._reviewed.get(key, {}))

    def population(self) -> list[dict[str, float]]:
        """The scores of every entity the stage is weighing (for calibrating the threshold)."""
        return [risk.scores for risk in self._risk.values()]

    def history(self, kind: str, entity_id: str) -> list[dict[str, Any]]:
        return list(self._history.get((kind, entity_id), ()))


@dataclass(slots=True)
class _Journal:
    added: dict[str, tuple[tuple[str, str], tuple[float, str, bytes]]] = field(default_factory=dict)  # by id
    removed: set[str] = field(default_factory=set)  # kept at the mark, forgotten since


def _retraction(record: tuple[float, str, bytes], reason: str) -> Outcome:
    _, _, payload = record
    return Outcome("retracted", decode_event(payload), [reason], payload)


def _flag_reason(flag: Flag) -> str:
    detectors = ", ".join(f"{name} {score:.2f}" for name, score in sorted(flag.detectors.items()))
    return f"{flag.kind} {flag.id} flagged (risk {flag.score:.2f}: {detectors})"
