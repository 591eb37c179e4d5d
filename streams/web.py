"""HTTP views on the Faust web server: /healthz (the worker runs), /readyz (state restored, partitions
assigned) and /metrics (Prometheus)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def register(app: Any, guard: Any) -> None:
    @app.page("/healthz", name="healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz", name="readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = guard.ready and not app.rebalancing
        body = {"ready": ready, "restored": guard.restored, "assigned": guard.assigned,
                "rebalancing": bool(app.rebalancing), "held": guard.pipeline.decision.held_count}
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics", name="metrics")
    async def metrics(web: Any, request: Any) -> Any:
        guard._update_gauges()  # noqa: SLF001 - fresh lag and hold figures on every scrape
        return web.bytes(generate_latest(guard.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])
