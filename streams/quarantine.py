"""`shillguard quarantine list|show|release|confirm|audit`: the analyst's queue (streams.store).

`release` publishes the event to the clean stream (headers `released_by` and `reason`, so that `export`
and trainers can tell a release from a decision) and then records it; `confirm` labels the event. Both
need who (--by, default $USER) and why (--reason): every decision lands in the audit table.
"""

from __future__ import annotations

import getpass
import json
import sys

import click
import orjson


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


@quarantine.command("release")
@click.argument("event_ids", nargs=-1, required=True)
@click.option("--by", default=None, help="Who decides (default: $USER).")
@click.option("--reason", required=True, help="Why the event is legitimate.")
@click.option("--stale-ok", is_flag=True, help="Release events of an earlier topic epoch too.")
def release_command(event_ids: tuple[str, ...], by: str | None, reason: str, stale_ok: bool) -> None:
    """Send events back to the clean stream, and record who and why."""
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
@click.argument("event_ids", nargs=-1, required=True)
@click.option("--by", default=None, help="Who decides (default: $USER).")
@click.option("--reason", required=True, help="Why the event is malicious.")
@click.option("--label", default="malicious", show_default=True, help="The label, e.g. shilling, click_farm.")
def confirm_command(event_ids: tuple[str, ...], by: str | None, reason: str, label: str) -> None:
    """Confirm events as malicious (labelled), and record who and why."""
    from streams.store import NotFound

    store, who = _store(), _who(by)
    for event_id in event_ids:
        try:
            store.confirm(event_id, who=who, why=reason, label=label)
        except NotFound:
            raise click.ClickException(f"{event_id} is not in the quarantine store")
        click.echo(f"{event_id}: confirmed {label} by {who}")


@quarantine.command("audit")
@click.argument("event_id", required=False)
@click.option("--limit", default=100, show_default=True)
def audit_command(event_id: str | None, limit: int) -> None:
    """The audit trail (of one event, or the latest entries), as JSON lines."""
    for entry in _store().audit(event_id, limit=limit):
        click.echo(json.dumps(entry))
