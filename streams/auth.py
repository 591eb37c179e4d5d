"""Who is asking: API tokens (`Authorization: Bearer`), console sessions (a cookie) and CSRF, as aiohttp
middleware over the whole web server, so that no state-changing request gets through unauthenticated
whatever its route: POST, PUT, PATCH and DELETE need a valid token (401 without), or a session and the
session's CSRF token (403 without it); a viewer may only read (403 on anything that acts).

Roles: viewer reads; analyst also decides (release, confirm, escalate, assign); admin also manages accounts.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from aiohttp import web

SESSION_COOKIE = "sg_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
RANKS = {"viewer": 0, "analyst": 1, "admin": 2}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
OPEN_PATHS = {"/console/login"}  # signing in is how a session starts
USER = web.RequestKey("user", object)  # the signed-in account (name, role[, csrf]) or None
VIA = web.RequestKey("via", object)  # "token" or "session"


def middleware(store: Any) -> Any:
    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        user, via = None, None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            user = await loop.run_in_executor(None, store.authenticate, header[len("Bearer "):].strip())
            via = "token" if user else None
            if user is None:
                return _refuse(request, 401, "invalid token")
        else:
            sid = request.cookies.get(SESSION_COOKIE)
            if sid:
                user = await loop.run_in_executor(None, store.session, sid)
                via = "session" if user else None
        request[USER], request[VIA] = user, via
        if request.method in UNSAFE and request.path not in OPEN_PATHS:
            if user is None:
                return _refuse(request, 401, "sign in or send Authorization: Bearer TOKEN")
            if via == "session":
                sent = request.headers.get(CSRF_HEADER)
                if sent is None and request.content_type in ("application/x-www-form-urlencoded",
                                                             "multipart/form-data"):
                    sent = (await request.post()).get(CSRF_FIELD)
                if not sent or not hmac.compare_digest(str(sent), user["csrf"]):
                    return _refuse(request, 403, "missing or wrong CSRF token")
        return await handler(request)

    return authenticate


def require(request: web.Request, role: str) -> dict[str, Any]:
    """The signed-in account, if its role is at least `role`; else 401 (nobody) or 403 (too low)."""
    user = request.get(USER)
    if user is None:
        raise _error(request, 401, "sign in or send Authorization: Bearer TOKEN")
    if RANKS.get(user["role"], -1) < RANKS[role]:
        raise _error(request, 403, f"{user['role']} may not do this: needs {role}")
    return user


def _error(request: web.Request, status: int, why: str) -> web.HTTPException:
    kind = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden}[status]
    if request.path.startswith("/console/") and status == 401 and request.method not in UNSAFE:
        return web.HTTPSeeOther(f"/console/login?next={request.path_qs}")
    return kind(text=f'{{"error": "{why}"}}', content_type="application/json",
                headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


def _refuse(request: web.Request, status: int, why: str) -> web.Response:
    response = _error(request, status, why)
    return web.Response(status=response.status, text=response.text, content_type="application/json",
                        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)
