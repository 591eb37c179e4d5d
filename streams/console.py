"""The analyst console (/console/) and its JSON API (/api/), on the worker's web server.

aiohttp views added straight to the aiohttp application under Faust's web server (`app.web.web_app`), not
Faust's own View classes or its ASGI integration: the console needs cookies, form posts, redirects and a
middleware over every route (streams.auth), which aiohttp has and Faust 0.15's views wrap away; the worker's
event loop serves them, so they run beside /metrics with nothing more to deploy. Pages are rendered on the
server (Jinja2, autoescaped); the one script (streams/static/console.js: select-all for bulk actions) is
served from the package, no CDN.

Decisions go through streams.decisions: a control record for the worker, then the store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import jinja2
from aiohttp import web

from streams import auth
from streams.cases import FAMILIES, build_cases, describe, filter_cases
from streams.decisions import ACTIONS, REASONS, decide_async, parse_entity
from streams.ring import MAX_ORGANIC, MAX_RING, ring_svg
from streams.store import NotFound

HERE = Path(__file__).parent
CTX = web.AppKey("console", object)


@dataclass
class Console:
    """What the views need: the store, how to publish a control record, and the worker's health figures."""

    store: Any
    publish: Callable[[str, dict[str, Any]], Awaitable[None]]
    health: Callable[[], dict[str, Any]] = lambda: {}
    organic: Callable[[list[str]], dict[str, list]] = lambda items: {}
    secure_cookies: bool = False
    templates: jinja2.Environment = field(default_factory=lambda: jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined))

    def __post_init__(self) -> None:
        self.templates.filters["when"] = _when
        self.templates.filters["wall"] = _wall
        self.templates.filters["plain"] = _plain


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _plain(value: Any) -> str:
    """A figure for a person: dicts as `key value, ...`, nested one level."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items()) or "none"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return "none" if value is None else str(value)


def _wall(ts: Any) -> str:
    return _when(ts) + " UTC" if ts else ""


async def _blocking(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# -- what the pages and the API show ------------------------------------------------------------------
def cases(console: Console, **filters: Any) -> list[dict[str, Any]]:
    return filter_cases(build_cases(console.store.entities("all")), **filters)


def case_detail(console: Console, case_id: str) -> dict[str, Any]:
    """A case with each entity's evidence in words, its events and decisions, and the ring picture."""
    store = console.store
    everything = build_cases(store.entities("all"))
    case = next((c for c in everything if c["id"] == case_id or case_id in c["entities"]), None)
    if case is None:
        raise NotFound(case_id)
    entities, ring, items = [], {}, set()
    for entity in case["entities"]:
        row = store.entity(entity)
        flag = row["flag"]
        events = store.list(status="all", actor=entity, limit=500, epoch="all", events=True)
        full = events[:200]
        for record in full:
            event = record["event"]
            if event.get("item_id") is not None and row["kind"] == "user":
                ring.setdefault(row["id"], []).append((float(event.get("ts") or 0), str(event["item_id"]),
                                                       event.get("rating")))
        if row["kind"] == "item":
            items.add(row["id"])
        entities.append({
            **row, "evidence": [describe(d, e) for d, e in sorted((flag.get("evidence") or {}).items())],
            "history": flag.get("history") or [], "events": full,
            "told_trainer": {"retracted": sum(1 for e in events if e["verdict"] == "retracted"),
                             "quarantined": sum(1 for e in events if e["verdict"] == "quarantined"),
                             "released": sum(1 for e in events if e["status"] == "released")}})
    items |= {item for events in ring.values() for _, item, _ in events}
    organic = {a: ev for a, ev in console.organic(sorted(items)).items() if a not in ring}
    timeline = sorted(({"ts": r["event"].get("ts"), "entity": e["entity"], "event_id": r["event_id"],
                        "what": f"{r['event'].get('type')} {r['event'].get('item_id') or ''}".strip(),
                        "verdict": r["verdict"], "status": r["status"]}
                       for e in entities for r in e["events"]), key=lambda x: x["ts"] or 0)
    return {**case, "entity_rows": entities, "audit": store.entity_audit(case["entities"]),
            "timeline": timeline[-300:], "ring_svg": ring_svg(ring, organic) if ring or organic else "",
            "ring_accounts": len(ring), "organic_accounts": len(organic),
            "organic_drawn": min(len(organic), MAX_ORGANIC), "ring_drawn": min(len(ring), MAX_RING)}


def case_json(case: dict[str, Any]) -> dict[str, Any]:
    return {key: case[key] for key in ("id", "entities", "risk", "status", "assignee", "detectors", "families",
                                        "flagged_at", "first_ts", "statuses", "groups")}


# -- the JSON API --------------------------------------------------------------------------------------
async def api_cases(request: web.Request) -> web.Response:
    auth.require(request, "viewer")
    console = request.app[CTX]
    q = request.query
    found = await _blocking(lambda: cases(console, detector=q.get("detector"), family=q.get("family"),
                                          status=q.get("status"), assignee=q.get("assignee")))
    return web.json_response({"cases": [case_json(c) for c in found]})


async def api_case(request: web.Request) -> web.Response:
    auth.require(request, "viewer")
    try:
        detail = await _blocking(case_detail, request.app[CTX], request.match_info["case_id"])
    except NotFound:
        raise web.HTTPNotFound(text='{"error": "no such case"}', content_type="application/json")
    detail.pop("ring_svg")
    return web.json_response(detail)


async def api_decide(request: web.Request) -> web.Response:
    user = auth.require(request, "analyst")
    action = request.match_info["action"]
    body = await _json_body(request)
    entity = f"{request.match_info['kind']}:{request.match_info['id']}"
    try:
        record = await decide_async(request.app[CTX].store, request.app[CTX].publish, action, entity,
                                    str(body.get("reason") or ""), user["name"], str(body.get("note") or ""))
    except ValueError as error:
        raise web.HTTPBadRequest(text=f'{{"error": "{error}"}}', content_type="application/json")
    return web.json_response({"ok": True, "control": record})


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "a JSON object"}', content_type="application/json")
    return body


async def api_assign(request: web.Request) -> web.Response:
    user = auth.require(request, "analyst")
    body = await _json_body(request)
    entity = f"{request.match_info['kind']}:{request.match_info['id']}"
    await _blocking(request.app[CTX].store.assign, entity, body.get("assignee"), user["name"])
    return web.json_response({"ok": True})


async def api_add_user(request: web.Request) -> web.Response:
    auth.require(request, "admin")
    body = await _json_body(request)
    try:
        token = await _blocking(request.app[CTX].store.add_user, str(body.get("name") or ""), body.get("role"))
    except ValueError as error:
        raise web.HTTPBadRequest(text=f'{{"error": "{error}"}}', content_type="application/json")
    return web.json_response({"name": body.get("name"), "role": body.get("role"), "token": token})


async def api_health(request: web.Request) -> web.Response:
    auth.require(request, "viewer")
    return web.json_response(await _blocking(health, request.app[CTX]))


def health(console: Console) -> dict[str, Any]:
    """The worker's figures (from its /metrics registry) and flags per detector per hour (from the store)."""
    figures = dict(console.health())
    now = time.time()
    hours: dict[str, list[int]] = {}
    for row in console.store.entities("all"):
        age = int((now - row["flagged_at"]) // 3600)
        if 0 <= age < 6:
            for detector in row["detectors"]:
                hours.setdefault(detector, [0] * 6)[age] += 1
    figures["flags_per_detector_per_hour"] = hours  # index 0: the last hour
    return figures


# -- the console's pages -------------------------------------------------------------------------------
def _page(request: web.Request, template: str, **values: Any) -> web.Response:
    console = request.app[CTX]
    user = request.get(auth.USER)
    html = console.templates.get_template(template).render(
        user=user, csrf=(user or {}).get("csrf", ""), reasons=REASONS, actions=ACTIONS, **values)
    return web.Response(text=html, content_type="text/html",
                        headers={"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
                                 "X-Frame-Options": "DENY", "Cache-Control": "no-store"})


async def login_form(request: web.Request) -> web.Response:
    return _page(request, "login.html", error=None, next=request.query.get("next", "/console/"))


async def login(request: web.Request) -> web.StreamResponse:
    console = request.app[CTX]
    form = await request.post()
    account = await _blocking(console.store.authenticate, str(form.get("token") or "").strip())
    target = str(form.get("next") or "/console/")
    if not target.startswith("/console/"):
        target = "/console/"
    if account is None:
        response = _page(request, "login.html", error="That token is not valid.", next=target)
        response.set_status(401)
        return response
    sid, _ = await _blocking(console.store.open_session, account["name"])
    response = web.HTTPSeeOther(target)
    response.set_cookie(auth.SESSION_COOKIE, sid, httponly=True, samesite="Strict", path="/",
                        secure=console.secure_cookies, max_age=12 * 3600)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    sid = request.cookies.get(auth.SESSION_COOKIE)
    if sid:
        await _blocking(request.app[CTX].store.close_session, sid)
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(auth.SESSION_COOKIE, path="/")
    raise response


async def queue(request: web.Request) -> web.Response:
    auth.require(request, "viewer")
    console = request.app[CTX]
    q = request.query
    filters = {name: q.get(name) or None for name in ("detector", "family", "status", "assignee")}
    if "status" not in q:
        filters["status"] = "open"
    everything = await _blocking(lambda: build_cases(console.store.entities("all")))
    shown = filter_cases(everything, **filters)
    detectors = sorted({d for case in everything for d in case["detectors"]})
    assignees = sorted({case["assignee"] for case in everything if case["assignee"]})
    return _page(request, "queue.html", cases=shown, total=len(everything), filters=filters,
                 detectors=detectors, families=sorted(FAMILIES.values()), assignees=assignees, now=time.time())


async def case_page(request: web.Request) -> web.Response:
    auth.require(request, "viewer")
    try:
        case = await _blocking(case_detail, request.app[CTX], request.match_info["case_id"])
    except NotFound:
        raise web.HTTPNotFound(text="no such case (its members may have changed: back to the queue)")
    return _page(request, "case.html", case=case)


async def case_decide(request: web.Request) -> web.StreamResponse:
    """Confirm, release or escalate the selected entities of a case, with one reason and note."""
    user = auth.require(request, "analyst")
    console = request.app[CTX]
    form = await request.post()
    entities = form.getall("entity", [])
    action, reason, note = form.get("action"), str(form.get("reason") or ""), str(form.get("note") or "")
    if not entities or action not in ACTIONS or reason not in REASONS:
        raise web.HTTPBadRequest(text="choose entities, an action and a reason")
    for entity in entities:
        try:
            parse_entity(str(entity))
        except ValueError as error:
            raise web.HTTPBadRequest(text=str(error))
        await decide_async(console.store, console.publish, str(action), str(entity), reason, user["name"], note)
    raise web.HTTPSeeOther(str(form.get("back") or f"/console/cases/{request.match_info['case_id']}"))


async def bulk_decide(request: web.Request) -> web.StreamResponse:
    """The queue's bulk action: every entity of the selected cases."""
    user = auth.require(request, "analyst")
    console = request.app[CTX]
    form = await request.post()
    selected = set(form.getall("case", []))
    action, reason, note = form.get("action"), str(form.get("reason") or ""), str(form.get("note") or "")
    if not selected or action not in ACTIONS or reason not in REASONS:
        raise web.HTTPBadRequest(text="choose cases, an action and a reason")
    everything = await _blocking(lambda: build_cases(console.store.entities("all")))
    for case in everything:
        if case["id"] in selected:
            for entity in case["entities"]:
                await decide_async(console.store, console.publish, str(action), entity, reason, user["name"], note)
    raise web.HTTPSeeOther("/console/")


async def case_assign(request: web.Request) -> web.StreamResponse:
    user = auth.require(request, "analyst")
    console = request.app[CTX]
    form = await request.post()
    assignee = str(form.get("assignee") or "").strip() or None
    detail = await _blocking(case_detail, console, request.match_info["case_id"])
    for entity in detail["entities"]:
        await _blocking(console.store.assign, entity, assignee, user["name"])
    raise web.HTTPSeeOther(f"/console/cases/{request.match_info['case_id']}")


async def health_page(request: web.Request) -> web.Response:
    auth.require(request, "viewer")
    return _page(request, "health.html", health=await _blocking(health, request.app[CTX]))


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


def register(app: web.Application, console: Console) -> None:
    """The middleware and every route of the console and the API on `app` (Faust's aiohttp application in
    the worker, a bare one in tests)."""
    app[CTX] = console
    app.middlewares.append(auth.middleware(console.store))
    app.router.add_get("/api/cases", api_cases)
    app.router.add_get("/api/cases/{case_id}", api_case)
    app.router.add_get("/api/health", api_health)
    app.router.add_post("/api/entities/{kind}/{id}/{action:release|confirm|escalate}", api_decide)
    app.router.add_post("/api/entities/{kind}/{id}/assign", api_assign)
    app.router.add_post("/api/users", api_add_user)
    app.router.add_get("/console", root)
    app.router.add_get("/console/", queue)
    app.router.add_get("/console/login", login_form)
    app.router.add_post("/console/login", login)
    app.router.add_post("/console/logout", logout)
    app.router.add_post("/console/bulk", bulk_decide)
    app.router.add_get("/console/health", health_page)
    app.router.add_get("/console/cases/{case_id}", case_page)
    app.router.add_post("/console/cases/{case_id}/decide", case_decide)
    app.router.add_post("/console/cases/{case_id}/assign", case_assign)
    app.router.add_static("/console/static/", HERE / "static")


# The routes that change state, for the tests that every one refuses the unauthenticated and viewers.
STATE_CHANGING = [("POST", "/api/entities/user/u1/release"), ("POST", "/api/entities/user/u1/confirm"),
                  ("POST", "/api/entities/user/u1/escalate"), ("POST", "/api/entities/user/u1/assign"),
                  ("POST", "/api/users"), ("POST", "/console/logout"), ("POST", "/console/bulk"),
                  ("POST", "/console/cases/x/decide"), ("POST", "/console/cases/x/assign")]
