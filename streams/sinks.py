"""Sinks behind the guard: the quarantine store, OCSF alerts (with an optional webhook) and client actions.

Each is a Faust agent of its own, downstream of the guard's topics, so that a slow database or webhook
never holds the pipeline back; each is at least once and idempotent (store rows by event id, findings by
uid: a finding seen before is published again as an update, activity 2).

Alerts are OCSF Detection Findings (class_uid 2004, schema 1.1.0; tests/test_ocsf.py validates them against
that release's JSON Schema): one per flagged entity, or per group when a detector names one in its evidence
(a dense block, a lockstep group), with severity from the fused risk, the detectors and their evidence, and
the affected entities as resources; an analyst's confirmation updates the finding and a release closes it.

>>> flag = {"kind": "user", "id": "u7", "score": 0.93, "detectors": ["profile"],
...         "detector_scores": {"profile": 0.93}, "evidence": {"profile": {"z": 4.1}}, "first_ts": 100.0}
>>> finding = ocsf_finding(flag, created=True, now=1_000.0)
>>> finding["class_uid"], finding["type_uid"], finding["activity_id"], finding["severity"]
(2004, 200401, 1, 'High')
>>> finding["finding_info"]["uid"], [r["uid"] for r in finding["resources"]]
('shillguard:user:u7', ['u7'])
>>> ocsf_finding(flag, created=False, now=1_001.0)["type_uid"]
200402
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable

import orjson

from streams.metrics import Metrics
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger(__name__)

OCSF_VERSION = "1.1.0"
PRODUCT = {"name": "shillguard", "vendor_name": "shillguard", "version": "0.1.0"}
GROUP_KEYS = ("group", "group_id", "block")  # evidence keys by which a detector names a group
SEVERITIES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
FINDING_TYPES = {"user": "Fake account or shilling profile", "seller": "Catalog poisoning",
                 "client": "Model extraction", "item": "Item under attack"}


def severity_of(kind: str, score: float) -> int:
    """Fused risk to OCSF severity_id; an item flag names a victim, so it is one step lower."""
    severity = 4 if score >= 0.9 else 3 if score >= 0.7 else 2
    return severity - 1 if kind == "item" else severity


def group_of(flag: dict[str, Any]) -> str | None:
    for detector, evidence in sorted((flag.get("evidence") or {}).items()):
        if isinstance(evidence, dict):
            for key in GROUP_KEYS:
                if evidence.get(key) is not None:
                    return f"{detector}:{evidence[key]}"
    return None


def finding_uid(flag: dict[str, Any]) -> str:
    group = group_of(flag)
    return f"shillguard:group:{group}" if group else f"shillguard:{flag['kind']}:{flag['id']}"


STATUS_OF = {"confirmed": (2, "In Progress"), "released": (3, "Suppressed")}  # OCSF status_id by flag status
ACTIVITIES = {1: "Create", 2: "Update", 3: "Close"}
ID_KEYS = {"id", "uid", "item", "user", "seller", "client", "block", "group", "group_id", "imitates", "reason",
           "direction", "newcomer", "by", "encoder"}  # evidence values that are names, never numbers


def numbers(value: Any, key: str = "") -> Any:
    """Evidence as a SIEM can compute on: numeric strings as numbers (a detector's "5" rating), numpy scalars
    as plain numbers, NaN and infinities (which JSON has not) as null; names stay strings.

    >>> numbers({"rating": "5", "count": "17.8", "item": "42", "z": float("nan"), "span": ["1.5", 2]})
    {'rating': 5, 'count': 17.8, 'item': '42', 'z': None, 'span': [1.5, 2]}
    """
    if isinstance(value, dict):
        return {k: numbers(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [numbers(v, key) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        if key in ID_KEYS:
            return value
        try:
            number = float(value)
        except ValueError:
            return value
        value = number
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        value = value.item()  # numpy scalar
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    return value


def ocsf_finding(flag: dict[str, Any], created: bool, now: float | None = None,
                 members: Iterable[str] | None = None, first_time: float | None = None,
                 close: bool | None = None) -> dict[str, Any]:
    """The OCSF Detection Finding for a flag record (streams.outcomes.flag_record).

    Times: `first_seen_time` is the flag's event time (when the decision stage flagged the entity) and
    `last_seen_time` that of its latest evidence; `created_time` is the wall time the finding was first
    published (`first_time`, from the store) and `modified_time` this one's. An analyst's confirmation
    (flag status "confirmed") is an Update, status In Progress; a release (status "released") Closes the
    finding, status Suppressed, unless `close` is False (other members of its group still stand: Update)."""
    now_s = time.time() if now is None else now
    now_ms = int(now_s * 1000)
    kind, entity, score = flag["kind"], str(flag["id"]), float(flag["score"])
    status = flag.get("status") or "open"
    if status == "released" and close is not False:
        activity = 3
    else:
        activity = 1 if created else 2
    status_id, status_name = STATUS_OF.get(status, (1, "New"))
    if status == "released" and activity != 3:
        status_id, status_name = 2, "In Progress"  # a member released, the group's finding stands
    severity = severity_of(kind, score)
    detectors = list(flag.get("detectors") or sorted(flag.get("detector_scores") or {}))
    group = group_of(flag)
    entities = list(dict.fromkeys([*(members or []), f"{kind}:{entity}"]))
    resources = []
    for member in entities:
        member_kind, _, member_id = member.partition(":")
        resources.append({"uid": member_id, "type": member_kind, "name": member_id})
    title = (f"Coordinated group {group}: {len(entities)} {'entity' if len(entities) == 1 else 'entities'}"
             if group
             else f"{FINDING_TYPES.get(kind, 'Suspicious entity')}: {kind} {entity}")
    first_seen = float(flag.get("first_ts") or 0.0)
    last_seen = float(flag.get("last_ts") or first_seen)
    history = flag.get("history") or []
    decision = history[-1] if history and status != "open" else None
    finding = {
        "class_uid": 2004, "class_name": "Detection Finding", "category_uid": 2, "category_name": "Findings",
        "activity_id": activity, "activity_name": ACTIVITIES[activity],
        "type_uid": 2004 * 100 + activity, "type_name": f"Detection Finding: {ACTIVITIES[activity]}",
        "time": now_ms, "severity_id": severity, "severity": SEVERITIES[severity],
        "status_id": status_id, "status": status_name,
        "confidence_score": int(round(score * 100)), "risk_score": int(round(score * 100)),
        "message": title,
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "logged_time": now_ms,
                     "event_code": kind},
        "finding_info": {
            "uid": finding_uid(flag), "title": title,
            "desc": f"{kind} {entity} flagged with fused risk {score:.2f} by {', '.join(detectors)}",
            "types": [FINDING_TYPES.get(kind, "Suspicious entity")],
            "analytic": {"name": ",".join(detectors), "type_id": 3, "type": "Statistical"},
            "first_seen_time": int(first_seen * 1000), "last_seen_time": int(last_seen * 1000),
            "created_time": int((first_time if first_time is not None else now_s) * 1000),
            "modified_time": now_ms, "product_uid": PRODUCT["name"]},
        "evidences": [{"data": numbers({"detector": name, "score": (flag.get("detector_scores") or {}).get(name),
                                        "evidence": (flag.get("evidence") or {}).get(name)})}
                      for name in detectors],
        "resources": resources,
        "unmapped": numbers({"kind": kind, "entity": entity, "detector_scores": flag.get("detector_scores"),
                             "group": group, "analyst_status": status}),
    }
    if decision is not None:
        finding["status_detail"] = f"{decision.get('action')} by {decision.get('by')}: {decision.get('reason')}"
        if decision.get("note"):
            finding["comment"] = str(decision["note"])
    return finding


def drift_finding(report: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """An OCSF Detection Finding saying a detector's score distribution changed (detectors.score_drift)."""
    now_ms = int((time.time() if now is None else now) * 1000)
    detector = str(report["detector"])
    title = (f"Detector {detector}: score distribution changed, mean {report['mean_before']:.3f} -> "
             f"{report['mean_after']:.3f}")
    at_ms = int(float(report.get("at") or 0.0) * 1000)
    return {
        "class_uid": 2004, "class_name": "Detection Finding", "category_uid": 2, "category_name": "Findings",
        "activity_id": 1, "activity_name": "Create", "type_uid": 200401, "type_name": "Detection Finding: Create",
        "time": now_ms, "severity_id": 2, "severity": "Low", "status_id": 1, "status": "New", "message": title,
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "logged_time": now_ms, "event_code": "drift"},
        "finding_info": {
            "uid": f"shillguard:drift:{detector}:{report.get('drifts', 1)}", "title": title,
            "desc": "ADWIN found two windows of the detector's signal scores whose means differ beyond chance: "
                    "new traffic, an upstream change, or attackers adapting to its threshold",
            "types": ["Detector drift"], "analytic": {"name": "ADWIN", "type_id": 3, "type": "Statistical"},
            "first_seen_time": at_ms, "last_seen_time": at_ms, "created_time": now_ms, "modified_time": now_ms,
            "product_uid": PRODUCT["name"]},
        "evidences": [{"data": numbers(report)}],
        "unmapped": {"kind": "detector", "entity": detector},
    }


def client_action(flag: dict[str, Any]) -> dict[str, Any] | None:
    """A client flag's action for the serving side, where a detector proposed one (evidence["action"])."""
    if flag.get("kind") != "client":
        return None
    for detector, evidence in sorted((flag.get("evidence") or {}).items()):
        if isinstance(evidence, dict) and evidence.get("action"):
            return {"client_id": str(flag["id"]), "action": evidence["action"], "detector": detector,
                    "score": flag.get("score"), "first_ts": flag.get("first_ts")}
    return None


class Webhook:
    """POST each finding as JSON; retry with exponential backoff on errors, 5xx and 429."""

    def __init__(self, url: str, retries: int = 5, timeout: float = 5.0, backoff: float = 0.5):
        self.url, self.retries, self.timeout, self.backoff = url, retries, timeout, backoff
        self._session: Any = None

    async def post(self, payload: dict[str, Any]) -> bool:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        body = orjson.dumps(payload)
        for attempt in range(self.retries + 1):
            try:
                async with self._session.post(self.url, data=body,
                                              headers={"Content-Type": "application/json"}) as response:
                    if response.status < 300:
                        return True
                    if 400 <= response.status < 500 and response.status != 429:
                        log.warning("webhook refused a finding: HTTP %d", response.status)
                        return False
                    error: Any = f"HTTP {response.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error = exc
            if attempt < self.retries:
                await asyncio.sleep(self.backoff * 2 ** attempt)
        log.warning("webhook gave up after %d attempts: %s", self.retries + 1, error)
        return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AlertSink:
    """Flags in, findings (and client actions) out; finding state in the quarantine store."""

    def __init__(self, store: Any, metrics: Metrics, webhook: Webhook | None = None):
        self.store, self.metrics, self.webhook = store, metrics, webhook

    def findings(self, flags: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for flag in flags:
            self.store.upsert_flag(flag)  # the console's queue
            uid = finding_uid(flag)
            now = time.time()
            created, members, first_time = self.store.upsert_finding(uid, f"{flag['kind']}:{flag['id']}", now)
            close = None
            if flag.get("status") == "released" and len(members) > 1:  # closed once its last member is released
                close = all(self.store.entity_status(member) == "released" for member in members)
            out.append(ocsf_finding(flag, created, now=now, members=members if group_of(flag) else None,
                                    first_time=first_time, close=close))
        return out


def register(app: Any, settings: Settings, topics: Topics, metrics: Metrics, store: Any) -> None:
    """The quarantine-store agent and the alerts agent."""
    loop_executor = None
    webhook = Webhook(settings.webhook_url.get_secret_value(), settings.webhook_retries,
                      settings.webhook_timeout_seconds) if settings.webhook_url else None
    alerts = AlertSink(store, metrics, webhook)

    @app.agent(app.topic(topics.quarantined, topics.retracted, value_serializer="raw", key_serializer="raw"),
               name="quarantine-store", concurrency=1)
    async def quarantine_store(stream: Any) -> None:
        async for values in stream.take(1000, within=0.5):
            # Restorations (an analyst's release undoing a retraction) are decisions the store already has.
            records = [record for record in map(orjson.loads, values) if record.get("verdict") != "restored"]
            added = await asyncio.get_running_loop().run_in_executor(loop_executor, store.add, records)
            metrics.store_rows.inc(added)

    @app.agent(app.topic(topics.flags, value_serializer="raw", key_serializer="raw"), name="alerts",
               concurrency=1)
    async def alert_agent(stream: Any) -> None:
        async for values in stream.take(200, within=0.5):
            flags = [orjson.loads(value) for value in values]
            findings = await asyncio.get_running_loop().run_in_executor(loop_executor, alerts.findings, flags)
            for flag, finding in zip(flags, findings):
                uid = finding["finding_info"]["uid"]
                await app.producer.send(topics.alerts, uid.encode(), orjson.dumps(finding), None, None, None)
                metrics.alerts.labels(finding["activity_name"].lower()).inc()
                if finding["activity_id"] != 2:
                    log.info("ALERT %s severity %s: %s", uid, finding["severity"], finding["message"])
                action = client_action(flag)
                if action is not None:
                    await app.producer.send(topics.client_actions, action["client_id"].encode(),
                                            orjson.dumps(action), None, None, None)
                if webhook is not None and not await webhook.post(finding):
                    metrics.webhook_failures.inc()

    @app.on_before_shutdown.connect
    async def close_sinks(app: Any, **kwargs: Any) -> None:
        if webhook is not None:
            await webhook.close()
