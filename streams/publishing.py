"""What the pipeline decides, as records on the output topics: the guard's and the actor workers' one mapping.

Both publish less what was already published after the snapshot they resumed from (the guard's own run
before a restart, an actor partition's previous owner): `published` is anything with the sets `decided`
(event id -> verdict), `retracted` and `rejected` (source ids), streams.recovery.Published or
streams.actors.Partition. `send(topic, key, value, headers)` places the record (by key, or on the actor
partition's number).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Iterable

from detectors.decision import Flag, Outcome
from detectors.events import Rejection, actor, to_json
from streams.metrics import Metrics
from streams.outcomes import dumps, flag_record, outcome_record, rejection_record
from streams.sinks import drift_finding
from streams.topics import Topics

log = logging.getLogger(__name__)
Send = Callable[[str, bytes | None, bytes, list | None], None]


def unpublished(published: Any, outcome: Outcome) -> Outcome | None:
    """The outcome to publish: None where it was published already; a retraction where the event was
    published clean and is condemned now (a flag came sooner this time: the clean verdict stands, so it is
    retracted like any released event, once)."""
    event_id = outcome.event.event_id
    if outcome.verdict == "retracted":
        if event_id in published.retracted:
            published.retracted.discard(event_id)
            return None
        return outcome
    before = published.decided.pop(event_id, None)
    if before is None:
        return outcome
    if before == "clean" and outcome.verdict == "quarantined":
        if event_id in published.retracted:
            published.retracted.discard(event_id)
            return None
        return Outcome("retracted", outcome.event, outcome.reasons, outcome.payload)
    if before != outcome.verdict:
        log.warning("event %s was published %s before and is %s now: the published verdict stands", event_id,
                    before, outcome.verdict)
    return None


class Outputs:
    """Outcomes, dead letters, flags and drift findings to their topics, counted in `counts` and `metrics`."""

    def __init__(self, topics: Topics, metrics: Metrics, counts: Counter[str]):
        self.topics = topics
        self.metrics = metrics
        self.counts = counts

    def rejection(self, send: Send, rejection: Rejection, src: str, published: Any) -> None:
        """A dead letter, with the source id of the input message it answers (`src` header)."""
        if src in published.rejected:
            published.rejected.discard(src)
            self.metrics.suppressed.labels("rejected").inc()
            return
        key = rejection.event_id.encode() if rejection.event_id else None
        send(self.topics.rejected, key, dumps(rejection_record(rejection)), [("src", src.encode())])
        self.counts["rejected"] += 1

    def outcome(self, send: Send, outcome: Outcome, watermark: float, published: Any,
                produced_at: dict[str, float], now: float) -> None:
        """One outcome of a decision at `watermark`; `published` None or empty: nothing to suppress.
        `produced_at` (event id -> produce time) gives the latency from produce to first outcome."""
        event_id = outcome.event.event_id
        if published:
            decided = unpublished(published, outcome)
            if decided is not outcome:
                self.metrics.suppressed.labels(outcome.verdict).inc()
                produced_at.pop(event_id, None)
                if decided is None:
                    return
                outcome = decided
        topics, event, verdict = self.topics, outcome.event, outcome.verdict
        key = actor(event)[1].encode()
        if outcome.released_by is not None:  # given back by an analyst's release (Pipeline.control)
            headers = [("released_by", outcome.released_by.encode()),
                       ("reason", "; ".join(outcome.reasons).encode())]
            if verdict == "clean":
                send(topics.clean, key, outcome.payload or to_json(event), headers)
            else:  # a retracted event: a `restored` record
                send(topics.retracted, key, dumps(outcome_record(outcome, watermark)), headers)
            self.counts["released" if verdict == "clean" else "restored"] += 1
            return
        if verdict == "clean":
            send(topics.clean, key, outcome.payload or to_json(event), None)
        else:
            topic = topics.quarantined if verdict == "quarantined" else topics.retracted
            send(topic, key, dumps(outcome_record(outcome, watermark)), None)
        self.counts[verdict] += 1
        produced = produced_at.pop(event_id, None)
        if produced and verdict != "retracted":
            self.metrics.outcome_latency.observe(now - produced)

    def flags(self, send: Send, flags: Iterable[Flag]) -> None:
        for flag in flags:
            send(self.topics.flags, f"{flag.kind}:{flag.id}".encode(), dumps(flag_record(flag)),
                 [("updated", b"1" if flag.updated else b"0")])
            self.metrics.flags.labels(flag.kind, str(flag.updated).lower()).inc()
            self.counts["flags"] += 1

    def drifts(self, send: Send, reports: Iterable[dict]) -> None:
        """A detector's score distribution changed: say so, on /metrics and as an alert."""
        for report in reports:
            finding = drift_finding(report)
            send(self.topics.alerts, finding["finding_info"]["uid"].encode(), dumps(finding), None)
            self.metrics.drifts.labels(report["detector"]).inc()
            log.warning("DRIFT %s: mean score %.3f -> %.3f (ADWIN, window %d)", report["detector"],
                        report["mean_before"], report["mean_after"], report["window"])

