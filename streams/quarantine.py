"""`shillguard quarantine list|show|release|confirm|escalate|audit`: the analyst's queue (streams.store).

`release --entity kind:id` (and `confirm`, `escalate`) decides on a whole flagged entity: a control record
for the worker, which unflags a released entity and gives back what its flag took (streams.decisions).
`release EVENT_ID...` publishes single events to the clean stream (headers `released_by` and `reason`, so
that `export` and trainers can tell a release from a decision) and then records it; `confirm EVENT_ID...`
labels them. All need who (--by, default $USER) and why (--reason): every decision lands in the audit table.
"""

from __future__ import annotations

import getpass
import json
import sys

import click
import orjson

from streams.decisions import REASONS


def _store():
    from streams.settings import get_settings
    from streams.store import open_store

    return open_store(get_settings().db.get_secret_value())


def _who(by: str | None) -> str:
    return by or getpass.getuser()


@click.group("quarantine")
def quarantine() -> None:
    """The analyst's queue of quarantined events (SQLite, or PostgreSQL with SHILLGUARD_DB=postgresql://)."""


@quarantine.command("list")
@click.option("--status", default="pending", show_default=True,
              type=click.Choice(["pending", "released", "confirmed", "all"]))
@click.option("--actor", default=None, help="kind:id, e.g. user:u-12ab.")
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0)
@click.option("--epoch", default="current", show_default=True,
              help="Rows of the topics that exist now (current), of every epoch (all; older ones name events "
                   "of topics that are gone, e.g. an embedded broker's before a restart), or of one epoch id.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def list_command(status: str, actor: str | None, limit: int, offset: int, epoch: str, as_json: bool) -> None:
    """Quarantined events, oldest first."""
    from rich.console import Console
    from rich.table import Table

    store = _store()
    rows = store.list(status=status, limit=limit, actor=actor, offset=offset, epoch=epoch)
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    stale = store.count(status) - store.count(status, epoch="current")
    title = f"{len(rows)} of {store.count(status, epoch=epoch)} {status} events"
    if epoch == "current" and stale:
        title += f" ({stale} more from earlier topic epochs: --epoch all)"
    table = Table(title=title)
    columns = ("event_id", "verdict", "type", "actor", "ts", "status") + (("epoch",) if epoch != "current" else ())
    for column in columns:
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="ellipsis", no_wrap=True, max_width=50)
    for row in rows:
        table.add_row(row["event_id"], row["verdict"], row["event_type"] or "",
                      f"{row['actor_kind']}:{row['actor_id']}", f"{row['ts']:.0f}" if row["ts"] else "",
                      row["status"] + (f" ({row['label']})" if row["label"] else ""),
                      *((row["epoch"] or "",) if epoch != "current" else ()),
                      (row["reasons"] or [""])[0][:80])
    console = Console()
    console.width = max(console.width, 150)  # ids are long: never squeeze them into 80 columns
    console.print(table)


@quarantine.command("show")
@click.argument("event_id")
def show_command(event_id: str) -> None:
    """One event: its record and its audit trail, as JSON."""
    from streams.store import NotFound

    store = _store()
    try:
        record = store.get(event_id)
    except NotFound:
        raise click.ClickException(f"{event_id} is not in the quarantine store")
    record["audit"] = store.audit(event_id)
    click.echo(json.dumps(record, indent=2))


ENTITY_HELP = ("A whole flagged entity, kind:id (e.g. user:u-12ab): the worker unflags it (release) or keeps it "
               "(confirm), through the control topic.")
REASON_HELP = "Why. With --entity one of: " + ", ".join(REASONS) + "."


def _decide_entity(action: str, entity: str, reason: str, by: str | None, note: str) -> None:
    """One entity's decision: the control record for the worker, then the store (streams.decisions)."""
    from streams.decisions import decide
    from streams.produce import make_producer
    from streams.settings import get_settings
    from streams.topics import Topics

    settings = get_settings()
    topic = Topics.from_settings(settings).control
    producer = make_producer(settings)

    def publish(key: str, record: dict) -> None:
        producer.send(topic, key=key.encode(), value=orjson.dumps(record)).get(timeout=30)

    try:
        record = decide(_store(), publish, action, entity, reason, _who(by), note)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    finally:
        producer.close()
    click.echo(f"{entity}: {action} ({record['reason']}) by {record['by']}, sent to the worker on {topic}")


def _entity_or_events(event_ids: tuple[str, ...], entity: str | None) -> None:
    if bool(event_ids) == bool(entity):
        raise click.UsageError("name event ids or --entity kind:id (one of the two)")


@quarantine.command("release")
@click.argument("event_ids", nargs=-1)
@click.option("--entity", default=None, help=ENTITY_HELP)
@click.option("--by", default=None, help="Who decides (default: $USER).")
@click.option("--reason", required=True, help=REASON_HELP)
@click.option("--note", default="", help="A note for the audit log (--entity).")
@click.option("--stale-ok", is_flag=True, help="Release events of an earlier topic epoch too.")
def release_command(event_ids: tuple[str, ...], entity: str | None, by: str | None, reason: str, note: str,
                    stale_ok: bool) -> None:
    """Unflag an entity (its quarantined events go back to the clean stream, its retractions are undone),
    or send single events back to the clean stream; record who and why."""
    _entity_or_events(event_ids, entity)
    if entity:
        _decide_entity("release", entity, reason, by, note)
        return
    from detectors.events import actor, decode_event, to_json
    from streams.produce import make_producer
    from streams.settings import get_settings
    from streams.store import NotFound
    from streams.topics import Topics

    settings = get_settings()
    store, who = _store(), _who(by)
    topic = Topics.from_settings(settings).clean
    producer = make_producer(settings)
    try:
        for event_id in event_ids:
            try:
                record = store.get(event_id)
            except NotFound:
                raise click.ClickException(f"{event_id} is not in the quarantine store")
            if record["status"] == "released":
                click.echo(f"{event_id}: already released", err=True)
                continue
            if record["stale"] and not stale_ok:
                raise click.ClickException(
                    f"{event_id} is from topic epoch {record['epoch']}, whose topics are gone (the clean stream "
                    f"it would go back to is not the one it left); --stale-ok releases it to today's")
            event = decode_event(orjson.dumps(record["event"]))
            if not hasattr(event, "event_id"):
                raise click.ClickException(f"{event_id}: stored event no longer validates: {event.reason}")
            # Published first and acknowledged, then recorded: a failure leaves the event pending, never
            # recorded as released without being so.
            producer.send(topic, key=actor(event)[1].encode(), value=to_json(event),
                          headers=[("released_by", who.encode()), ("reason", reason.encode())]).get(timeout=30)
            store.release(event_id, who=who, why=reason)
            click.echo(f"{event_id}: released to {topic} by {who}")
    finally:
        producer.close()


@quarantine.command("confirm")
@click.argument("event_ids", nargs=-1)
@click.option("--entity", default=None, help=ENTITY_HELP)
@click.option("--by", default=None, help="Who decides (default: $USER).")
@click.option("--reason", required=True, help=REASON_HELP)
@click.option("--note", default="", help="A note for the audit log (--entity).")
@click.option("--label", default="malicious", show_default=True, help="The label, e.g. shilling, click_farm.")
def confirm_command(event_ids: tuple[str, ...], entity: str | None, by: str | None, reason: str, note: str,
                    label: str) -> None:
    """Confirm an entity's flag, or events as malicious (labelled); record who and why."""
    _entity_or_events(event_ids, entity)
    if entity:
        _decide_entity("confirm", entity, reason, by, note)
        return
    from streams.store import NotFound

    store, who = _store(), _who(by)
    for event_id in event_ids:
        try:
            store.confirm(event_id, who=who, why=reason, label=label)
        except NotFound:
            raise click.ClickException(f"{event_id} is not in the quarantine store")
        click.echo(f"{event_id}: confirmed {label} by {who}")


@quarantine.command("escalate")
@click.option("--entity", required=True, help="kind:id, e.g. user:u-12ab.")
@click.option("--by", default=None, help="Who decides (default: $USER).")
@click.option("--reason", required=True, help=REASON_HELP)
@click.option("--note", default="", help="A note for the audit log.")
def escalate_command(entity: str, by: str | None, reason: str, note: str) -> None:
    """Escalate an entity's case (it stays flagged); record who and why."""
    _decide_entity("escalate", entity, reason, by, note)


@quarantine.command("audit")
@click.argument("event_id", required=False)
@click.option("--limit", default=100, show_default=True)
def audit_command(event_id: str | None, limit: int) -> None:
    """The audit trail (of one event, or the latest entries), as JSON lines."""
    for entry in _store().audit(event_id, limit=limit):
        click.echo(json.dumps(entry))


@click.group("users")
def users() -> None:
    """Console and API accounts (roles: viewer reads, analyst acts, admin manages accounts)."""


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["viewer", "analyst", "admin"]))
def users_add(name: str, role: str) -> None:
    """Create NAME (or give it a new token) and print its API token, once: only its hash is stored."""
    token = _store().add_user(name, role)
    click.echo(f"{name} ({role}); token, shown once:", err=True)
    click.echo(token)


@users.command("list")
def users_list() -> None:
    """Accounts, as JSON lines (never tokens)."""
    for user in _store().users():
        click.echo(json.dumps(user))
