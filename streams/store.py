"""The analyst's quarantine queue and its audit trail: SQLite by default, PostgreSQL for a shared one.

One small interface (`QuarantineStore`), two backends that differ only in driver and placeholders. Rows
arrive from the worker's store agent (at least once: inserts are idempotent on event_id); analysts list,
show, release (the event goes back to the clean stream) and confirm (label it) them. Every decision, the
system's included, is a row in `audit`: who, what, why and when.

Every row carries the topic epoch it came from: the worker starts a new epoch when it finds itself on new
topics (a restarted embedded broker keeps its topics in memory only; a cluster whose topics were recreated),
and records it as the store's current one. Rows of an earlier epoch name events of topics that no longer
exist: `list` shows the current epoch's rows unless asked for all.

>>> store = open_store("sqlite://")
>>> store.add([{"event_id": "e1", "verdict": "quarantined", "reasons": ["user u1 flagged"],
...             "event": {"type": "rating", "event_id": "e1", "ts": 5.0, "user_id": "u1", "item_id": "i",
...                       "rating": 5.0}}])
1
>>> store.add([{"event_id": "e1", "verdict": "quarantined", "reasons": [], "event": {"type": "rating"}}])
0
>>> [row["event_id"] for row in store.list()]
['e1']
>>> store.confirm("e1", who="ana", why="known ring", label="shilling")["status"]
'confirmed'
>>> [entry["action"] for entry in store.audit("e1")]
['quarantined', 'confirmed']
>>> store.set_epoch("new-broker")
>>> store.list(status="all"), len(store.list(status="all", epoch="all"))
([], 1)
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from detectors.events import ACTOR_FIELD, EVENT_TYPES

SYSTEM = "shillguard"
_ACTOR_FIELDS = {name: ACTOR_FIELD[model] for name, model in EVENT_TYPES.items()}  # by the JSON `type`


class NotFound(KeyError):
    pass


class QuarantineStore:
    """Backend-neutral SQL; `_placeholder` is '?' (sqlite3) or '%s' (psycopg)."""

    _placeholder = "?"
    _id_column = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self) -> None:
        self._lock = threading.RLock()  # one connection shared by the agents' executor threads
        self.epoch: str | None = None  # the topic epoch new rows belong to (set_epoch; current_epoch)

    # -- backend hooks ------------------------------------------------------------------------
    def _execute(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: list[tuple]) -> None:
        raise NotImplementedError

    def _insert_new(self, rows: list[tuple]) -> list[str]:
        """Insert quarantine rows, skipping known event ids; return the ids actually inserted."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _sql(self, sql: str) -> str:
        return sql if self._placeholder == "?" else sql.replace("?", self._placeholder)

    def _create(self) -> None:
        for statement in (
            """CREATE TABLE IF NOT EXISTS quarantine (
                event_id TEXT PRIMARY KEY, verdict TEXT NOT NULL, event_type TEXT, actor_kind TEXT,
                actor_id TEXT, ts DOUBLE PRECISION, reasons TEXT NOT NULL, event TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending', label TEXT,
                created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
            "CREATE INDEX IF NOT EXISTS quarantine_status ON quarantine (status, created_at)",
            "CREATE INDEX IF NOT EXISTS quarantine_actor ON quarantine (actor_kind, actor_id)",
            f"""CREATE TABLE IF NOT EXISTS audit (
                id {self._id_column}, at DOUBLE PRECISION NOT NULL, event_id TEXT, action TEXT NOT NULL,
                actor TEXT NOT NULL, reason TEXT, detail TEXT)""",
            "CREATE INDEX IF NOT EXISTS audit_event ON audit (event_id)",
            """CREATE TABLE IF NOT EXISTS findings (
                uid TEXT PRIMARY KEY, first_time DOUBLE PRECISION NOT NULL,
                last_time DOUBLE PRECISION NOT NULL, updates INTEGER NOT NULL, members TEXT NOT NULL)""",
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            # Flagged entities as the flags topic last described them, with the analysts' status and assignee.
            """CREATE TABLE IF NOT EXISTS entities (
                entity TEXT PRIMARY KEY, kind TEXT NOT NULL, id TEXT NOT NULL, score DOUBLE PRECISION,
                detectors TEXT NOT NULL, flag TEXT NOT NULL, first_ts DOUBLE PRECISION,
                flagged_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL DEFAULT 'open', assignee TEXT)""",
            # Console and API accounts: tokens are 256-bit random, so a SHA-256 of one is as good as a slow
            # password hash and can be looked up directly.
            """CREATE TABLE IF NOT EXISTS users (
                name TEXT PRIMARY KEY, role TEXT NOT NULL, token_sha256 TEXT NOT NULL UNIQUE,
                created_at DOUBLE PRECISION NOT NULL, active INTEGER NOT NULL DEFAULT 1)""",
            """CREATE TABLE IF NOT EXISTS sessions (
                sid_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, csrf TEXT NOT NULL,
                expires DOUBLE PRECISION NOT NULL)""",
        ):
            self._execute(statement)
        if "entity" not in self._columns("audit"):  # an analyst's decision on a whole entity
            self._execute("ALTER TABLE audit ADD COLUMN entity TEXT")
        self._execute("CREATE INDEX IF NOT EXISTS audit_entity ON audit (entity)")
        columns = self._columns("quarantine")
        if "epoch" not in columns:  # a store from before epochs: its rows belong to the epoch current now
            self._execute("ALTER TABLE quarantine ADD COLUMN epoch TEXT")
        self._execute("CREATE INDEX IF NOT EXISTS quarantine_epoch ON quarantine (epoch, status, created_at)")
        epoch = self.current_epoch()
        if epoch is None:
            epoch = uuid.uuid4().hex[:12]
            self._execute(self._sql("INSERT INTO meta (key, value) VALUES ('epoch', ?)"), (epoch,))
        self._execute(self._sql("UPDATE quarantine SET epoch = ? WHERE epoch IS NULL"), (epoch,))
        self.epoch = epoch

    def _columns(self, table: str) -> set[str]:
        self._execute(f"SELECT * FROM {table} LIMIT 0")  # noqa: S608 - a table name of ours
        return set(self._last_columns)

    def current_epoch(self) -> str | None:
        """The topic epoch the worker last declared current."""
        rows = self._execute("SELECT value FROM meta WHERE key = 'epoch'")
        return rows[0][0] if rows else None

    def set_epoch(self, epoch: str) -> None:
        """The worker's word: rows from now on, and `list` by default, belong to `epoch`."""
        with self._lock:
            self._execute(self._sql("UPDATE meta SET value = ? WHERE key = 'epoch'"), (epoch,))
            self.epoch = epoch

    # -- the worker's side --------------------------------------------------------------------
    def add(self, records: Iterable[dict[str, Any]]) -> int:
        """Quarantined or retracted outcome records (streams.outcomes.outcome_record); idempotent."""
        now = time.time()
        rows, reasons_of = [], {}
        for record in records:
            event = record.get("event") or {}
            kind, field = _ACTOR_FIELDS.get(event.get("type"), (None, None))
            event_id = str(record["event_id"])
            reasons_of[event_id] = (record.get("verdict"), record.get("reasons") or [])
            rows.append((event_id, record.get("verdict", "quarantined"), event.get("type"), kind,
                         event.get(field) if field else None, event.get("ts"),
                         json.dumps(record.get("reasons") or []), json.dumps(event), now, now, self.epoch))
        if not rows:
            return 0
        with self._lock:
            inserted = self._insert_new(rows)
            if inserted:
                self._executemany(self._sql(
                    "INSERT INTO audit (at, event_id, action, actor, reason, detail) VALUES (?, ?, ?, ?, ?, ?)"),
                    [(now, event_id, reasons_of[event_id][0], SYSTEM, "; ".join(reasons_of[event_id][1]), None)
                     for event_id in inserted])
        return len(inserted)

    def upsert_finding(self, uid: str, member: str, at: float) -> tuple[bool, list[str], float]:
        """Note that `member` is part of finding `uid`; return (new finding?, its members, the wall time it
        was first published)."""
        with self._lock:
            rows = self._execute(self._sql("SELECT members, updates, first_time FROM findings WHERE uid = ?"),
                                 (uid,))
            if not rows:
                self._execute(self._sql(
                    "INSERT INTO findings (uid, first_time, last_time, updates, members) VALUES (?, ?, ?, 0, ?)"),
                    (uid, at, at, json.dumps([member])))
                return True, [member], at
            members = json.loads(rows[0][0])
            if member not in members:
                members.append(member)
            self._execute(self._sql(
                "UPDATE findings SET last_time = ?, updates = updates + 1, members = ? WHERE uid = ?"),
                (at, json.dumps(members), uid))
            return False, members, float(rows[0][2])

    # -- the analyst's side -------------------------------------------------------------------
    def list(self, status: str | None = "pending", limit: int = 50, actor: str | None = None,
             offset: int = 0, epoch: str = "current", events: bool = False) -> list[dict[str, Any]]:
        """Rows oldest first; `epoch` "current" (the rows of the topics that exist now), "all", or an id;
        `events`: with each row's event (one query for a case page, not one per event)."""
        where, params = [], []
        if epoch != "all":
            where.append("epoch = ?")
            params.append(self.current_epoch() if epoch == "current" else epoch)
        if status and status != "all":
            where.append("status = ?")
            params.append(status)
        if actor:
            kind, _, entity = actor.partition(":")
            where.append("actor_kind = ? AND actor_id = ?")
            params += [kind, entity]
        sql = ("SELECT event_id, verdict, event_type, actor_kind, actor_id, ts, reasons, status, label, "
               "created_at, updated_at, epoch" + (", event" if events else "") + " FROM quarantine"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY created_at, event_id LIMIT ? OFFSET ?")
        rows = self._execute(self._sql(sql), (*params, limit, offset))
        keys = ("event_id", "verdict", "event_type", "actor_kind", "actor_id", "ts", "reasons", "status",
                "label", "created_at", "updated_at", "epoch") + (("event",) if events else ())
        out = []
        for row in rows:
            item = dict(zip(keys, row))
            item["reasons"] = json.loads(item["reasons"])
            if events:
                item["event"] = json.loads(item["event"])
            out.append(item)
        return out

    def count(self, status: str | None = None, epoch: str = "all") -> int:
        where, params = [], []
        if epoch != "all":
            where.append("epoch = ?")
            params.append(self.current_epoch() if epoch == "current" else epoch)
        if status and status != "all":
            where.append("status = ?")
            params.append(status)
        sql = "SELECT COUNT(*) FROM quarantine" + (" WHERE " + " AND ".join(where) if where else "")
        return self._execute(self._sql(sql), params)[0][0]

    def get(self, event_id: str) -> dict[str, Any]:
        rows = self._execute(self._sql(
            "SELECT event_id, verdict, event_type, actor_kind, actor_id, ts, reasons, event, status, label, "
            "created_at, updated_at, epoch FROM quarantine WHERE event_id = ?"), (event_id,))
        if not rows:
            raise NotFound(event_id)
        keys = ("event_id", "verdict", "event_type", "actor_kind", "actor_id", "ts", "reasons", "event",
                "status", "label", "created_at", "updated_at", "epoch")
        item = dict(zip(keys, rows[0]))
        item["stale"] = item["epoch"] != self.current_epoch()
        item["reasons"] = json.loads(item["reasons"])
        item["event"] = json.loads(item["event"])
        return item

    def audit(self, event_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        sql = "SELECT id, at, event_id, action, actor, reason, detail FROM audit"
        params: tuple = ()
        if event_id is not None:
            sql += " WHERE event_id = ?"
            params = (event_id,)
        rows = self._execute(self._sql(sql + " ORDER BY id LIMIT ?"), (*params, limit))
        keys = ("id", "at", "event_id", "action", "actor", "reason", "detail")
        return [{**dict(zip(keys, row)), "detail": json.loads(row[6]) if row[6] else None} for row in rows]

    def release(self, event_id: str, who: str, why: str) -> dict[str, Any]:
        """Mark released (the caller publishes the event to the clean stream first)."""
        return self._decide(event_id, "released", who, why, label=None)

    def confirm(self, event_id: str, who: str, why: str, label: str = "malicious") -> dict[str, Any]:
        return self._decide(event_id, "confirmed", who, why, label=label)

    def _decide(self, event_id: str, status: str, who: str, why: str, label: str | None) -> dict[str, Any]:
        if not who or not why:
            raise ValueError("an analyst decision needs who and why")
        with self._lock:
            before = self.get(event_id)
            now = time.time()
            self._execute(self._sql("UPDATE quarantine SET status = ?, label = ?, updated_at = ? WHERE event_id = ?"),
                          (status, label if label is not None else before["label"], now, event_id))
            self._execute(self._sql(
                "INSERT INTO audit (at, event_id, action, actor, reason, detail) VALUES (?, ?, ?, ?, ?, ?)"),
                (now, event_id, status, who, why, json.dumps({"from": before["status"], "label": label})))
        return self.get(event_id)


    # -- flagged entities, the analysts' decisions on them -------------------------------------
    def upsert_flag(self, record: dict[str, Any], at: float | None = None) -> None:
        """A flag record (streams.outcomes.flag_record) from the flags topic. A record with a status (an
        analyst's release or confirmation, applied by the worker) sets it; a new flag after a release
        opens the entity again."""
        now = time.time() if at is None else at
        entity = f"{record['kind']}:{record['id']}"
        detectors = json.dumps(sorted(record.get("detector_scores") or {}))
        with self._lock:
            rows = self._execute(self._sql("SELECT status FROM entities WHERE entity = ?"), (entity,))
            if not rows:
                self._execute(self._sql(
                    "INSERT INTO entities (entity, kind, id, score, detectors, flag, first_ts, flagged_at, "
                    "updated_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                    (entity, record["kind"], str(record["id"]), float(record.get("score") or 0.0), detectors,
                     json.dumps(record), record.get("first_ts"), now, now, record.get("status") or "open"))
                return
            status = record.get("status") or ("open" if rows[0][0] == "released" else rows[0][0])
            self._execute(self._sql(
                "UPDATE entities SET score = ?, detectors = ?, flag = ?, first_ts = ?, updated_at = ?, "
                "status = ? WHERE entity = ?"),
                (float(record.get("score") or 0.0), detectors, json.dumps(record), record.get("first_ts"), now,
                 status, entity))

    _ENTITY_KEYS = ("entity", "kind", "id", "score", "detectors", "flag", "first_ts", "flagged_at", "updated_at",
                    "status", "assignee")

    def entities(self, status: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT " + ", ".join(self._ENTITY_KEYS) + " FROM entities"
        params: tuple = ()
        if status and status != "all":
            sql, params = sql + " WHERE status = ?", (status,)
        rows = self._execute(self._sql(sql + " ORDER BY flagged_at, entity"), params)
        return [self._entity_row(row) for row in rows]

    def entity_status(self, entity: str) -> str | None:
        rows = self._execute(self._sql("SELECT status FROM entities WHERE entity = ?"), (entity,))
        return rows[0][0] if rows else None

    def entity(self, entity: str) -> dict[str, Any]:
        rows = self._execute(self._sql("SELECT " + ", ".join(self._ENTITY_KEYS) + " FROM entities WHERE entity = ?"),
                             (entity,))
        if not rows:
            raise NotFound(entity)
        return self._entity_row(rows[0])

    def _entity_row(self, row: tuple) -> dict[str, Any]:
        item = dict(zip(self._ENTITY_KEYS, row))
        item["detectors"] = json.loads(item["detectors"])
        item["flag"] = json.loads(item["flag"])
        return item

    def decide_entity(self, entity: str, action: str, who: str, why: str, note: str = "") -> None:
        """An analyst's release, confirmation or escalation of a whole entity: its status and an audit row
        (the worker applies the decision itself from the control topic)."""
        if not who or not why:
            raise ValueError("an analyst decision needs who and why")
        status = {"release": "released", "confirm": "confirmed", "escalate": "escalated"}[action]
        now = time.time()
        with self._lock:
            self._execute(self._sql("UPDATE entities SET status = ?, updated_at = ? WHERE entity = ?"),
                          (status, now, entity))
            if action == "release":  # the worker gives the entity's quarantined events back
                kind, _, entity_id = entity.partition(":")
                self._execute(self._sql("UPDATE quarantine SET status = 'released', updated_at = ? WHERE "
                                        "actor_kind = ? AND actor_id = ? AND status = 'pending'"),
                              (now, kind, entity_id))
            self._audit_entity(now, entity, action, who, why, {"note": note} if note else None)

    def assign(self, entity: str, assignee: str | None, who: str) -> None:
        now = time.time()
        with self._lock:
            self._execute(self._sql("UPDATE entities SET assignee = ?, updated_at = ? WHERE entity = ?"),
                          (assignee or None, now, entity))
            self._audit_entity(now, entity, "assign", who, assignee or "unassigned", None)

    def _audit_entity(self, at: float, entity: str, action: str, who: str, why: str, detail: Any) -> None:
        self._execute(self._sql(
            "INSERT INTO audit (at, event_id, action, actor, reason, detail, entity) VALUES (?, ?, ?, ?, ?, ?, ?)"),
            (at, None, action, who, why, json.dumps(detail) if detail else None, entity))

    def entity_audit(self, entities: Iterable[str]) -> list[dict[str, Any]]:
        """The analysts' decisions on these entities, oldest first (append-only: nothing updates it)."""
        entities = list(entities)
        if not entities:
            return []
        rows = self._execute(self._sql(
            "SELECT id, at, entity, action, actor, reason, detail FROM audit WHERE entity IN ("
            + ", ".join("?" for _ in entities) + ") ORDER BY id"), entities)
        keys = ("id", "at", "entity", "action", "actor", "reason", "detail")
        return [{**dict(zip(keys, row)), "detail": json.loads(row[6]) if row[6] else None} for row in rows]

    # -- accounts ------------------------------------------------------------------------------
    def add_user(self, name: str, role: str) -> str:
        """A new account (or a new token for an existing one); returns the token, which is not stored."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._execute(self._sql("DELETE FROM users WHERE name = ?"), (name,))
            self._execute(self._sql(
                "INSERT INTO users (name, role, token_sha256, created_at, active) VALUES (?, ?, ?, ?, 1)"),
                (name, role, _sha256(token), time.time()))
            self._audit_entity(time.time(), f"user-account:{name}", "account", SYSTEM, f"role {role}", None)
        return token

    def users(self) -> list[dict[str, Any]]:
        rows = self._execute("SELECT name, role, created_at, active FROM users ORDER BY name")
        return [dict(zip(("name", "role", "created_at", "active"), row)) for row in rows]

    def authenticate(self, token: str | None) -> dict[str, Any] | None:
        """The account a bearer token belongs to (name, role), or None."""
        if not token:
            return None
        rows = self._execute(self._sql("SELECT name, role FROM users WHERE token_sha256 = ? AND active = 1"),
                             (_sha256(token),))
        return {"name": rows[0][0], "role": rows[0][1]} if rows else None

    def open_session(self, name: str, hours: float = 12.0) -> tuple[str, str]:
        """A console session for an authenticated account: (session id for the cookie, CSRF token)."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        with self._lock:
            self._execute(self._sql("DELETE FROM sessions WHERE expires < ?"), (time.time(),))
            self._execute(self._sql("INSERT INTO sessions (sid_sha256, name, csrf, expires) VALUES (?, ?, ?, ?)"),
                          (_sha256(sid), name, csrf, time.time() + hours * 3600))
        return sid, csrf

    def session(self, sid: str | None) -> dict[str, Any] | None:
        """The account and CSRF token of a live session, or None."""
        if not sid:
            return None
        rows = self._execute(self._sql(
            "SELECT s.name, u.role, s.csrf FROM sessions s JOIN users u ON u.name = s.name "
            "WHERE s.sid_sha256 = ? AND s.expires > ? AND u.active = 1"), (_sha256(sid), time.time()))
        return {"name": rows[0][0], "role": rows[0][1], "csrf": rows[0][2]} if rows else None

    def close_session(self, sid: str) -> None:
        self._execute(self._sql("DELETE FROM sessions WHERE sid_sha256 = ?"), (_sha256(sid),))


ROLES = ("viewer", "analyst", "admin")


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SQLiteStore(QuarantineStore):
    def __init__(self, path: str | Path = ":memory:"):
        super().__init__()
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._create()

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            cursor = self._db.execute(sql, tuple(params))
            self._last_columns = [d[0] for d in cursor.description or ()]
            return cursor.fetchall()

    def _executemany(self, sql: str, rows: list[tuple]) -> None:
        with self._lock:
            self._db.executemany(sql, rows)

    def _insert_new(self, rows: list[tuple]) -> list[str]:
        inserted = []
        self._db.execute("BEGIN")
        try:
            for row in rows:
                cursor = self._db.execute(
                    "INSERT INTO quarantine (event_id, verdict, event_type, actor_kind, actor_id, ts, reasons, "
                    "event, created_at, updated_at, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (event_id) DO NOTHING", row)
                if cursor.rowcount:
                    inserted.append(row[0])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return inserted

    def close(self) -> None:
        self._db.close()


class PostgresStore(QuarantineStore):
    _placeholder = "%s"
    _id_column = "BIGSERIAL PRIMARY KEY"

    def __init__(self, url: str):
        super().__init__()
        try:
            import psycopg
        except ImportError as error:  # pragma: no cover - depends on the install
            raise RuntimeError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from error
        try:
            self._db = psycopg.connect(url, autocommit=True)
        except psycopg.OperationalError as error:  # its message can quote the connection string
            raise RuntimeError(f"PostgreSQL at {redact(url)} is unreachable: "
                               f"{str(error).replace(url, redact(url))}") from None
        self._create()

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock, self._db.cursor() as cursor:
            cursor.execute(sql, tuple(params))
            self._last_columns = [d.name for d in cursor.description or ()]
            return cursor.fetchall() if cursor.description else []

    def _executemany(self, sql: str, rows: list[tuple]) -> None:
        with self._lock, self._db.cursor() as cursor:
            cursor.executemany(sql, rows)

    def _insert_new(self, rows: list[tuple]) -> list[str]:
        inserted: list[str] = []
        with self._db.transaction(), self._db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO quarantine (event_id, verdict, event_type, actor_kind, actor_id, ts, reasons, "
                "event, created_at, updated_at, epoch) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id", rows, returning=True)
            while True:
                row = cursor.fetchone()
                if row is not None:
                    inserted.append(row[0])
                if not cursor.nextset():
                    break
        return inserted

    def close(self) -> None:
        self._db.close()


def redact(url: str) -> str:
    """The URL without its password, fit for a message.

    >>> redact("postgresql://guard:s3cret@db:5432/shillguard")
    'postgresql://guard:***@db:5432/shillguard'
    >>> redact("sqlite:///q.db")
    'sqlite:///q.db'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    credentials, _, host = rest.partition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def open_store(url: str) -> QuarantineStore:
    """sqlite:///relative.db, sqlite:////absolute.db, sqlite:// (memory) or postgresql://... (the URL is a
    secret: no message of this module prints its password)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        if path.startswith("/"):
            path = path[1:]
        return SQLiteStore(path or ":memory:")
    raise ValueError(f"unsupported SHILLGUARD_DB {redact(url)!r}: sqlite:///path or postgresql://...")
