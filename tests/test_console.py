"""The console and its JSON API on a bare aiohttp application (the worker mounts the same routes on Faust's):
accounts and roles on every state-changing route, cases, decisions going out as control records, pages."""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streams.console import STATE_CHANGING, Console, register
from streams.store import open_store

BLOCK = {"block": "dense_block-2", "users": 3, "items": ["i1", "i2"], "n_items": 2, "density": 1.0, "lift": 40.0,
         "span": [1000.0, 4600.0]}


def seeded_store(path):
    """Three accounts of one dense block, the item they pushed, and an unrelated client."""
    store = open_store(f"sqlite:///{path}/q.db")
    for n, user in enumerate(("u1", "u2", "u3")):
        store.upsert_flag({"kind": "user", "id": user, "score": 0.9 - n / 100, "detector_scores": {"dense_block": 0.9},
                           "evidence": {"dense_block": {**BLOCK, "member_edges": 2}}, "first_ts": 1000.0})
        store.add([{"event_id": f"{user}-{item}", "verdict": "quarantined", "reasons": [f"user {user} flagged"],
                    "event": {"type": "rating", "event_id": f"{user}-{item}", "ts": 1000.0 + k * 60,
                              "user_id": user, "item_id": item, "rating": 5.0}}
                   for k, item in enumerate(("i1", "i2"))])
    store.upsert_flag({"kind": "item", "id": "i1", "score": 0.7, "detector_scores": {"profile": 0.7},
                       "evidence": {"profile": {"reason": "push target", "extreme_raters": 3, "z": 5.0}},
                       "first_ts": 1100.0})
    store.upsert_flag({"kind": "client", "id": "c1", "score": 0.95, "detector_scores": {"extraction": 0.95},
                       "evidence": {"extraction": {"queries": 600, "distinct_seeds": 590, "catalog_share": 0.8}},
                       "first_ts": 2000.0})
    return store


@pytest.fixture
def setup(tmp_path):
    store = seeded_store(tmp_path)
    tokens = {role: store.add_user(role, role) for role in ("viewer", "analyst", "admin")}
    sent = []

    async def publish(key, record):
        sent.append((key, record))

    organic = {"o1": [(500.0, "i1", 3.0)], "u1": [(999.0, "i1", 5.0)]}
    console = Console(store=store, publish=publish, health=lambda: {"consumer_lag_messages": 7},
                      organic=lambda items: {a: [e for e in ev if e[1] in items] for a, ev in organic.items()})
    return store, tokens, sent, console


def run(console, scenario):
    async def main():
        app = web.Application()
        register(app, console)
        async with TestClient(TestServer(app)) as client:
            await scenario(client)
    asyncio.run(main())


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_every_state_changing_route_refuses_no_credentials_bad_tokens_and_viewers(setup):
    store, tokens, sent, console = setup

    async def scenario(client):
        for method, path in STATE_CHANGING:
            response = await client.request(method, path, json={"reason": "false_positive"})
            assert response.status == 401, (path, response.status)
            response = await client.request(method, path, json={"reason": "false_positive"},
                                            headers=bearer("not-a-token"))
            assert response.status == 401, (path, response.status)
            if path == "/console/logout":
                continue  # signing out is no decision: anyone signed in may
            response = await client.request(method, path, json={"reason": "false_positive"},
                                            headers=bearer(tokens["viewer"]))
            assert response.status == 403, (path, response.status)
        # an analyst may not manage accounts
        response = await client.post("/api/users", json={"name": "x", "role": "admin"},
                                     headers=bearer(tokens["analyst"]))
        assert response.status == 403
        # any other route and method: still no way in without credentials
        assert (await client.put("/api/cases")).status == 401
        assert (await client.delete("/api/entities/user/u1/release")).status == 401
        assert (await client.get("/api/cases")).status == 401  # reading needs an account too

    run(console, scenario)
    assert sent == []  # nothing reached the worker
    assert store.entity("user:u1")["status"] == "open"


def test_cases_group_flags_by_shared_evidence_riskiest_first(setup):
    store, tokens, sent, console = setup

    async def scenario(client):
        response = await client.get("/api/cases", headers=bearer(tokens["viewer"]))
        assert response.status == 200
        cases = (await response.json())["cases"]
        assert [c["entities"] for c in cases] == [["client:c1"], ["item:i1", "user:u1", "user:u2", "user:u3"]]
        assert cases[1]["risk"] == 0.9 and cases[1]["status"] == "open" and cases[1]["assignee"] is None
        filtered = await (await client.get("/api/cases?detector=extraction", headers=bearer(tokens["viewer"]))).json()
        assert [c["entities"] for c in filtered["cases"]] == [["client:c1"]]
        detail = await (await client.get(f"/api/cases/{cases[1]['id']}", headers=bearer(tokens["viewer"]))).json()
        assert detail["ring_accounts"] == 3 and detail["organic_accounts"] == 1  # u1 is the ring, not organic
        assert any("block of 3 accounts x 2 items" in line for row in detail["entity_rows"] for line in row["evidence"])

    run(console, scenario)


def test_an_analyst_release_goes_to_the_worker_and_the_audit_log(setup):
    store, tokens, sent, console = setup

    async def scenario(client):
        response = await client.post("/api/entities/user/u2/release", json={"reason": "because"},
                                     headers=bearer(tokens["analyst"]))
        assert response.status == 400  # the reason is one of four
        response = await client.post("/api/entities/user/u2/release",
                                     json={"reason": "false_positive", "note": "a beta tester"},
                                     headers=bearer(tokens["analyst"]))
        assert response.status == 200, await response.text()
        response = await client.post("/api/entities/client/c1/confirm", json={"reason": "true_positive"},
                                     headers=bearer(tokens["admin"]))
        assert response.status == 200

    run(console, scenario)
    assert [(key, r["action"], r["reason"], r["by"], r["note"]) for key, r in sent] == [
        ("user:u2", "release", "false_positive", "analyst", "a beta tester"),
        ("client:c1", "confirm", "true_positive", "admin", "")]
    assert store.entity("user:u2")["status"] == "released"
    assert {row["status"] for row in store.list(status="all", actor="user:u2")} == {"released"}
    assert [(a["entity"], a["action"], a["actor"], a["detail"]) for a in store.entity_audit(["user:u2"])] == [
        ("user:u2", "release", "analyst", {"note": "a beta tester"})]


def test_an_admin_adds_accounts(setup):
    store, tokens, sent, console = setup

    async def scenario(client):
        response = await client.post("/api/users", json={"name": "dee", "role": "analyst"},
                                     headers=bearer(tokens["admin"]))
        assert response.status == 200
        token = (await response.json())["token"]
        assert (await client.get("/api/cases", headers=bearer(token))).status == 200

    run(console, scenario)


def test_the_console_signs_in_with_a_session_and_csrf_and_acts(setup):
    store, tokens, sent, console = setup

    async def scenario(client):
        response = await client.get("/console/", allow_redirects=False)
        assert response.status == 303 and response.headers["Location"].startswith("/console/login")
        response = await client.post("/console/login", data={"token": "wrong"})
        assert response.status == 401
        response = await client.post("/console/login", data={"token": tokens["analyst"], "next": "/console/"})
        assert response.status == 200 and "case-" in await response.text()  # redirected to the queue
        page = await (await client.get("/console/")).text()
        case_id = re.findall(r'href="/console/cases/(case-[0-9a-f]+)"', page)[1]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        page = await (await client.get(f"/console/cases/{case_id}")).text()
        assert "<svg" in page and 'class="ring"' in page and 'class="organic"' in page
        assert "block of 3 accounts x 2 items" in page
        form = {"entity": "user:u3", "action": "release", "reason": "false_positive", "note": "seen before"}
        response = await client.post(f"/console/cases/{case_id}/decide", data=form)
        assert response.status == 403  # no CSRF token
        response = await client.post(f"/console/cases/{case_id}/decide", data={**form, "csrf": "forged"})
        assert response.status == 403
        response = await client.post(f"/console/cases/{case_id}/decide", data={**form, "csrf": csrf})
        assert response.status == 200
        page = await response.text()
        assert re.search(r"<td>analyst</td><td>release</td><td>user:u3</td><td>false_positive</td>"
                         r"\s*<td>seen before</td>", page)
        response = await client.post("/console/bulk", data={"case": case_id, "action": "confirm",
                                                            "reason": "true_positive", "csrf": csrf})
        assert response.status == 200
        health = await (await client.get("/console/health")).text()
        assert "consumer lag messages" in health and "dense_block" in health

    run(console, scenario)
    assert [(key, r["action"]) for key, r in sent][:1] == [("user:u3", "release")]
    assert {key for key, r in sent[1:]} == {"user:u1", "user:u2", "user:u3", "item:i1"}


def test_a_viewer_reads_the_console_but_has_no_actions(setup):
    store, tokens, sent, console = setup

    async def scenario(client):
        await client.post("/console/login", data={"token": tokens["viewer"]})
        page = await (await client.get("/console/")).text()
        assert "case-" in page and 'name="action"' not in page
        case_id = re.findall(r'href="/console/cases/(case-[0-9a-f]+)"', page)[0]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        response = await client.post(f"/console/cases/{case_id}/decide",
                                     data={"entity": "client:c1", "action": "release", "reason": "false_positive",
                                           "csrf": csrf})
        assert response.status == 403

    run(console, scenario)
    assert sent == []
