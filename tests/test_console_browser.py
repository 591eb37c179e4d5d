"""The console in a real browser: Playwright for Python driving Debian's chromium (`apt-get install -y
chromium`; launched by path, no browser download). Sign in, open the queue, open a case, release an account
with a reason and a note, see the audit entry; the case page is saved as a screenshot whose path the test
prints (tests/artifacts/, or $SHILLGUARD_SCREENSHOTS).

Marked `integration`: CI (`.ci/run`, SHILLGUARD_REQUIRE_INTEGRATION) fails rather than skips without chromium.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
from aiohttp import web

from streams.console import Console, register
from test_console import seeded_store

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("SHILLGUARD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("SHILLGUARD_SCREENSHOTS", Path(__file__).parent / "artifacts"))


@pytest.fixture
def console_server(tmp_path):
    """The console on a bare aiohttp server in a thread, over a seeded store; (url, tokens, sent)."""
    store = seeded_store(tmp_path)
    tokens = {role: store.add_user(f"{role}-1", role) for role in ("viewer", "analyst")}
    sent = []

    async def publish(key, record):
        sent.append((key, record))

    organic = {"o1": [(500.0, "i1", 3.0), (4000.0, "i2", 4.0)], "o2": [(2500.0, "i2", 2.0)]}
    console = Console(store=store, publish=publish,
                      organic=lambda items: {a: [e for e in ev if e[1] in items] for a, ev in organic.items()})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    app = web.Application()
    register(app, console)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", tokens, sent, store
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium: apt-get install -y chromium (or set SHILLGUARD_CHROMIUM)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extras)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_an_analyst_signs_in_releases_an_account_and_sees_the_audit_entry(console_server, browser):
    url, tokens, sent, store = console_server
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{url}/console/")
    assert "/console/login" in page.url  # not signed in: sent to sign in
    page.fill("#token", tokens["analyst"])
    page.click("#sign-in")
    page.wait_for_selector("table.queue")
    assert page.locator("table.queue tbody tr").count() == 2
    page.locator("a.case-link").nth(1).click()  # the ring's case (the client's is riskier)
    page.wait_for_selector("#ring svg")
    assert page.locator("#ring circle.ring").count() == 6 and page.locator("#ring circle.organic").count() == 3
    # Release one account: untick the others, a reason, a note.
    for box in page.locator('input[name="entity"]').all():
        if box.get_attribute("value") != "user:u2":
            box.uncheck()
    page.select_option("#action", "release")
    page.click("#apply")  # no reason chosen: the browser refuses (the reason is required)
    assert page.locator("#audit").inner_text().count("No decisions yet") == 1 and sent == []
    page.select_option("#reason", "false_positive")
    page.fill("#note", "a beta tester, known to support")
    page.click("#apply")
    page.wait_for_selector("#audit >> text=a beta tester, known to support")
    row = page.locator("#audit tbody tr").first.inner_text()
    assert "analyst-1" in row and "release" in row and "user:u2" in row and "false_positive" in row
    assert [(key, r["action"], r["reason"]) for key, r in sent] == [("user:u2", "release", "false_positive")]
    assert store.entity("user:u2")["status"] == "released"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "console-case.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the case page after the release: {shot}")
    page.goto(f"{url}/console/")
    page.screenshot(path=str(ARTIFACTS / "console-queue.png"), full_page=True)
    print(f"screenshot of the queue: {ARTIFACTS / 'console-queue.png'}")
    assert shot.stat().st_size > 10_000


def test_a_viewer_sees_no_actions(console_server, browser):
    url, tokens, sent, store = console_server
    page = browser.new_page()
    page.goto(f"{url}/console/login")
    page.fill("#token", tokens["viewer"])
    page.click("#sign-in")
    page.wait_for_selector("table.queue")
    page.locator("a.case-link").first.click()
    page.wait_for_selector("#audit")
    assert page.locator("#apply").count() == 0 and page.locator('select[name="action"]').count() == 0
