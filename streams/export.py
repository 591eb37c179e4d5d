"""`shillguard export --out DIR`: the output topics as the files `replay` writes, so that a streaming run
can be audited and scored (`shillguard evaluate DIR --truth ...`) like a replay.

Reads the input topics too, to give every input message its line (the `line` header `produce` sets, else
the order read) and to check delivery: `summary.json` counts, besides replay's figures, the input messages
without an outcome (`missing`) and the events with more than one (`duplicates`), both 0 when every event
got exactly one. An analyst's release (a message on the clean topic with a `released_by` header) turns a
quarantined event clean; a retraction turns a clean one quarantined, as in replay, and a `restored` record
(an analyst released the entity whose flag retracted it) turns it clean again. A flag record with
`"status": "released"` takes the entity out of flags.jsonl.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import orjson

from streams.ledger import Ledger, summary_head
from streams.outcomes import dumps
from streams.reader import header, read, source_id
from streams.topics import Topics


def export(settings: Any, out_dir: str | Path) -> dict[str, Any]:
    from streams.broker import kafka_python_config

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    topics = Topics.from_settings(settings)
    config = kafka_python_config(settings)
    ledger = Ledger()

    # Inputs: line of every message, and the lines of each event id.
    line_of_src: dict[str, int] = {}
    lines_of_event: dict[str, list[int]] = {}
    next_line = 0
    inputs = 0
    for record in read(config, topics.inputs):
        inputs += 1
        number = header(record, "line")
        line = int(number) if number is not None else None
        if line is None or line in ledger.event_ids:  # not from `produce`, or a line produced twice
            line = next_line
        next_line = max(next_line, line + 1)
        line_of_src[source_id(record.topic, record.partition, record.offset)] = line
        event_id = _event_id(record.value)
        ledger.line(line, event_id)
        if event_id is not None:
            lines_of_event.setdefault(event_id, []).append(line)

    with open(out / "rejected.jsonl", "wb") as sink:
        for record in read(config, [topics.rejected]):
            value = orjson.loads(record.value)
            src = header(record, "src")
            line = line_of_src.get(src.decode()) if src else None
            if line is not None:
                value["line"] = line
            ledger.reject(line, value.get("reasons", []))
            sink.write(dumps(value) + b"\n")
    # An event's line: the first that carries its id and was not rejected (a duplicate id is).
    for event_id, lines in lines_of_event.items():
        line = next((n for n in lines if n not in ledger.rejected_lines), None)
        if line is not None:
            ledger.line_of[event_id] = line

    decided: Counter[str] = Counter()  # outcomes per event id, to check delivery
    releases: dict[str, tuple[str, str, float, bytes]] = {}  # an analyst's word: applied after every decision
    for record in read(config, [topics.clean]):
        event_id = _event_id(record.value)
        if event_id is None:
            continue
        released_by = header(record, "released_by")
        ts = orjson.loads(record.value).get("ts", 0.0)
        if released_by is not None:
            reason = (header(record, "reason") or b"").decode()
            releases[event_id] = (released_by.decode(), reason, ts, record.value)
            continue
        decided[event_id] += 1
        ledger.decide(event_id, "clean", [], ts, record.value)

    with open(out / "quarantined.jsonl", "wb") as sink:
        for record in read(config, [topics.quarantined]):
            value = orjson.loads(record.value)
            event_id = str(value["event_id"])
            decided[event_id] += 1
            ledger.decide(event_id, "quarantined", value.get("reasons", []))
            sink.write(record.value + b"\n")

    duplicate_retractions = 0
    with open(out / "retractions.jsonl", "wb") as sink:
        retracted: set[str] = set()
        for record in read(config, [topics.retracted]):
            value = orjson.loads(record.value)
            event_id = str(value["event_id"])
            if value.get("verdict") == "restored":  # an analyst released its flag: applied with the releases
                who = (header(record, "released_by") or b"").decode()
                releases[event_id] = (who, (header(record, "reason") or b"").decode(),
                                      (value.get("event") or {}).get("ts", 0.0), dumps(value.get("event") or {}))
                continue
            if event_id in retracted:
                duplicate_retractions += 1
                continue
            retracted.add(event_id)
            ledger.retract(event_id, value.get("reasons", []))
            sink.write(record.value + b"\n")

    for event_id, (who, why, ts, payload) in releases.items():
        reasons = [why if why.startswith("released by") else f"released by {who}: {why}"]
        ledger.release(event_id, reasons, ts, payload, restored=event_id in retracted)

    for record in read(config, [topics.flags]):
        value = orjson.loads(record.value)
        ledger.flag((value["kind"], str(value["id"])), None if value.get("status") == "released" else value)

    ledger.write(out)
    summary = {**summary_head(ledger.export_counts(), ledger),
               "delivery": _delivery(ledger, inputs, decided, duplicate_retractions),
               "seconds": round(time.perf_counter() - started, 3)}
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


def _delivery(ledger: Ledger, inputs: int, decided: Counter[str], duplicate_retractions: int) -> dict[str, Any]:
    """Exactly one outcome per accepted event? `decided`: the outcomes on the clean and quarantined topics."""
    rejected_lines = ledger.rejected_lines
    anonymous_accepted = sum(1 for line, event_id in ledger.event_ids.items()
                             if event_id is None and line not in rejected_lines)
    missing = sorted(event_id for event_id in ledger.line_of if not decided.get(event_id))
    duplicates = sorted(event_id for event_id, n in decided.items() if n > 1)
    return {"input_messages": inputs, "missing": len(missing) + anonymous_accepted, "duplicates": len(duplicates),
            "duplicate_retractions": duplicate_retractions,
            "rejected_without_source": ledger.tally["rejected"] - len(rejected_lines),
            "missing_examples": missing[:10], "duplicate_examples": duplicates[:10]}


def _event_id(value: bytes) -> str | None:
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("event_id"), (str, int)):
        return str(parsed["event_id"])
    return None


@click.command("export")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for verdicts, flags, clean, quarantined, rejected, retractions and summary.")
def export_command(out_dir: str) -> None:
    """Read the output topics into the files `replay` writes."""
    from rich.console import Console

    from streams.settings import get_settings

    summary = export(get_settings(), out_dir)
    counts, delivery = summary["counts"], summary["delivery"]
    style = "green" if not (delivery["missing"] or delivery["duplicates"] or summary["undecided"]) else "red"
    Console(stderr=True).print(
        f"[bold]{counts['lines']}[/] input messages: {counts['clean']} clean, "
        f"{counts['quarantined'] + counts['retracted']} quarantined ({counts['retracted']} retracted), "
        f"{counts['rejected']} rejected; flags {summary['flags']}; "
        f"[{style}]without outcome {delivery['missing']}, duplicated {delivery['duplicates']}, "
        f"undecided lines {summary['undecided']}[/] -> {out_dir}")
