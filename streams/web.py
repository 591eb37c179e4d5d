"""HTTP views on the Faust web server: /healthz (the worker runs), /readyz (state restored, partitions
assigned), /metrics (Prometheus), and the analyst console and its API (streams.console: /console/, /api/)."""

from __future__ import annotations

from typing import Any, Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def register(app: Any, guard: Any, store: Any = None, settings: Any = None) -> None:
    @app.page("/healthz", name="healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz", name="readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = guard.ready and not app.rebalancing
        body = {"ready": ready, "restored": guard.restored, "assigned": guard.assigned,
                "rebalancing": bool(app.rebalancing), "held": guard.pipeline.decision.held_count}
        return web.json(body, status=200 if ready else 503)

    register_metrics(app, guard.metrics, guard.update_gauges)

    if store is None:
        return
    from streams.console import Console, register as register_console

    topic = guard.topics.control

    async def publish(key: str, record: dict[str, Any]) -> None:
        # Acknowledged by the broker before the store records the decision (streams.decisions).
        await app.producer.send_and_wait(topic, key.encode(), orjson.dumps(record), None, None, None)

    console = Console(store=store, publish=publish, health=lambda: worker_health(guard),
                      organic=guard.activity.raters,
                      secure_cookies=bool(settings is not None and settings.console_secure_cookies))
    register_console(app.web.web_app, console)


def register_metrics(app: Any, metrics: Any, refresh: Callable[[], None]) -> None:
    """/metrics: the worker's registry (streams.metrics), gauges refreshed first (fresh lag and hold figures on
    every scrape). Every role serves it: the single worker, the split's detection and actor workers."""
    @app.page("/metrics", name="metrics")
    async def page(web: Any, request: Any) -> Any:
        refresh()
        return web.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])


def worker_health(guard: Any) -> dict[str, Any]:
    """The figures /metrics has, summed up for the console's health page."""
    guard.update_gauges()
    totals: dict[str, float] = {}
    by_label: dict[str, dict[str, float]] = {}
    for family in guard.metrics.registry.collect():
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket")):
                continue
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            label = (sample.labels.get("outcome") or sample.labels.get("action") or sample.labels.get("kind")
                     or sample.labels.get("detector") or sample.labels.get("activity"))
            if label:
                by_label.setdefault(sample.name, {})[label] = by_label.get(sample.name, {}).get(label, 0) + sample.value
    trainer = guard.last_trainer or {}
    evidence = trainer.get("evidence") or {}
    return {
        "ready": bool(totals.get("shillguard_ready")),
        "consumer_lag_messages": int(totals.get("shillguard_consumer_lag", 0)),
        "throughput_events_per_second": round(guard.rate, 1),
        "events_in": int(totals.get("shillguard_events_in_total", 0)),
        "events_out": {k: int(v) for k, v in by_label.get("shillguard_events_out_total", {}).items()},
        "hold_buffer_events": int(totals.get("shillguard_hold_buffer_events", 0)),
        "align_buffer_events": int(totals.get("shillguard_align_buffer_events", 0)),
        "flags_raised": {k: int(v) for k, v in by_label.get("shillguard_flags_total", {}).items()},
        "alerts": {k: int(v) for k, v in by_label.get("shillguard_alerts_total", {}).items()},
        "control_records": {k: int(v) for k, v in by_label.get("shillguard_control_records_total", {}).items()},
        "event_time_watermark": totals.get("shillguard_event_time_watermark_seconds", 0.0),
        "snapshot_bytes": int(totals.get("shillguard_snapshot_bytes", 0)),
        "flag_threshold": round(guard.pipeline.decision.flag_threshold, 4),
        "analyst_labels_learned": int(totals.get("shillguard_analyst_labels", 0)),
        "learned_fusion_in_use": bool(getattr(guard.pipeline.decision.fusion, "active", False)),
        "fusion_weights": {k: round(v, 3) for k, v in by_label.get("shillguard_fusion_weight", {}).items()},
        "drift": {name: {"drifts": guard.pipeline.drift.drifts.get(name, 0),
                         "mean_score": round(float(adwin.estimation), 4),
                         "last": guard.pipeline.drift.last.get(name)}
                  for name, adwin in guard.pipeline.drift.detectors.items()},
        "trainer_last_version": evidence.get("version"),
        "trainer_last_gate_signal": evidence.get("why") or (f"{trainer.get('detector')} on {trainer.get('kind')} "
                                                            f"{trainer.get('id')}" if trainer else None),
    }
