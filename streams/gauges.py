"""The gauges on /metrics (streams.web) and the log line every 10 s: what a worker holds now, set when
scraped and on the timer, not on the hot path."""

from __future__ import annotations

from typing import Any

from streams.align import EventTimeAligner
from streams.metrics import Metrics


def set_holding(metrics: Metrics, held: int, aligner: EventTimeAligner, watermark: float, ready: bool) -> None:
    """Held events, input waiting in the aligner, the watermark, readiness."""
    metrics.held.set(held)
    metrics.aligned.set(len(aligner))
    metrics.watermark.set(watermark)
    metrics.ready.set(1 if ready else 0)


def count_forced(metrics: Metrics, aligner: EventTimeAligner, counted: int) -> int:
    """Count the aligner's forced releases since `counted` (a counter, from a number the aligner keeps);
    returns the number counted so far."""
    if aligner.forced > counted:
        metrics.align_forced.inc(aligner.forced - counted)
        return aligner.forced
    return counted


def set_decision(metrics: Metrics, pipeline: Any) -> None:
    """The decision stage's flag threshold, each detector's mean score, the learned fusion's weights."""
    decision = pipeline.decision
    metrics.flag_threshold.set(decision.flag_threshold)
    for name, adwin in pipeline.drift.detectors.items():
        metrics.score_mean.labels(name).set(adwin.estimation)
    fusion = decision.fusion
    if hasattr(fusion, "learned_weights"):
        metrics.analyst_labels.set(fusion.labels)
        for name, weight in fusion.learned_weights().items():
            metrics.fusion_weight.labels(name).set(weight)


def set_lag(metrics: Metrics, consumer: Any, inputs: tuple[str, ...], position: Any) -> None:
    """Each assigned input partition's lag: the consumer's high watermark less `position((topic, partition))`."""
    try:
        assignment = consumer.assignment()
    except Exception:  # noqa: BLE001 - not started yet
        return
    for tp in assignment:
        if tp.topic not in inputs:
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # noqa: BLE001
            continue
        if highwater is None:
            continue
        lag = max(highwater - position((tp.topic, tp.partition)), 0)
        metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)


def counts_text(counts: Any, held: int) -> str:
    """The outcome counts of the periodic log line."""
    return (f"clean {counts['clean']}, quarantined {counts['quarantined']}, retracted {counts['retracted']}, "
            f"rejected {counts['rejected']}, flags {counts['flags']}, held {held}")
