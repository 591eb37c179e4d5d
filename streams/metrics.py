"""Prometheus metrics of one worker, in a registry of its own (served on /metrics by streams.web)."""

from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.events_in = Counter("shillguard_events_in", "Messages consumed from input topics",
                                 ["topic"], registry=registry)
        self.events_out = Counter("shillguard_events_out",
                                  "Outcomes published, by outcome, counted as the broker acknowledges them",
                                  ["outcome"], registry=registry)
        self.suppressed = Counter("shillguard_outcomes_suppressed",
                                  "Outcomes not published because they were already published before a restart",
                                  ["outcome"], registry=registry)
        self.skipped = Counter("shillguard_redelivered_skipped",
                               "Redelivered input messages already covered by the restored snapshot",
                               registry=registry)
        self.flags = Counter("shillguard_flags", "Flags raised (update=true: stronger evidence)",
                             ["kind", "update"], registry=registry)
        self.alerts = Counter("shillguard_alerts", "OCSF findings published", ["activity"], registry=registry)
        self.webhook_failures = Counter("shillguard_webhook_failures", "Findings the webhook never accepted",
                                        registry=registry)
        self.detector_seconds = Histogram("shillguard_detector_batch_seconds",
                                          "Time each detector spent on one micro-batch", ["detector"],
                                          buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_seconds = Histogram("shillguard_batch_seconds", "Micro-batch: decode, detect, decide, publish",
                                       buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("shillguard_batch_events", "Messages per micro-batch",
                                    buckets=(1, 10, 100, 500, 1000, 2000, 5000), registry=registry)
        self.outcome_latency = Histogram("shillguard_outcome_latency_seconds",
                                         "Wall time from produce (message timestamp) to outcome published, "
                                         "hold window included", buckets=LATENCY_BUCKETS, registry=registry)
        self.consumer_lag = Gauge("shillguard_consumer_lag", "High watermark minus next offset to process",
                                  ["topic", "partition"], registry=registry)
        self.aligned = Gauge("shillguard_align_buffer_events",
                             "Messages waiting for a lagging partition before the pipeline (streams.align)",
                             registry=registry)
        self.align_forced = Counter("shillguard_align_forced",
                                    "Times the aligner gave up waiting for a partition", registry=registry)
        self.busy_seconds = Counter("shillguard_guard_busy_seconds", "Wall time spent handling input batches",
                                    registry=registry)
        self.held = Gauge("shillguard_hold_buffer_events", "Events held by the decision stage", registry=registry)
        self.watermark = Gauge("shillguard_event_time_watermark_seconds", "Largest event time seen",
                               registry=registry)
        self.snapshot_seconds = Histogram("shillguard_snapshot_seconds", "Snapshot: flush, pickle and write",
                                          buckets=LATENCY_BUCKETS, registry=registry)
        self.snapshot_bytes = Gauge("shillguard_snapshot_bytes", "Size of the last snapshot", registry=registry)
        self.ready = Gauge("shillguard_ready", "1 once state is restored and partitions are assigned",
                           registry=registry)
        self.control = Counter("shillguard_control_records", "Control records applied (analysts' decisions, "
                               "the trainer's signals)", ["action"], registry=registry)
        self.drifts = Counter("shillguard_detector_score_drifts", "Changes ADWIN found in a detector's score "
                              "distribution (each also an OCSF finding on the alerts topic)", ["detector"],
                              registry=registry)
        self.score_mean = Gauge("shillguard_detector_score_mean", "Mean of a detector's recent signal scores "
                                "(ADWIN's window)", ["detector"], registry=registry)
        self.fusion_weight = Gauge("shillguard_fusion_weight", "Weight of a detector's evidence, learned from "
                                   "analysts' labels", ["detector"], registry=registry)
        self.flag_threshold = Gauge("shillguard_flag_threshold", "The decision stage's flag threshold (held to "
                                    "the false-flag budget once analysts' labels train the fusion)",
                                    registry=registry)
        self.analyst_labels = Gauge("shillguard_analyst_labels", "Analysts' labels the fusion has learned from",
                                    registry=registry)
        self.store_rows = Counter("shillguard_quarantine_store_rows", "Rows newly written to the quarantine store",
                                  registry=registry)

    def count_acknowledged(self, topics: Any) -> Callable[[str, int], None]:
        """A BatchPublisher's `on_acked`: records the broker stored on an outcome topic, by outcome (an
        analyst's release counts as clean, a restoration as retracted: the topic they are on). One mapping
        for the single worker and the split's actor workers, so the dashboards sum them alike."""
        outcome_of = {topics.clean: "clean", topics.quarantined: "quarantined", topics.retracted: "retracted",
                      topics.rejected: "rejected"}
        events_out = self.events_out

        def acked(topic: str, count: int) -> None:
            outcome = outcome_of.get(topic)
            if outcome is not None:
                events_out.labels(outcome).inc(count)

        return acked
