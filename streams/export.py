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

    # Inputs: line of every message, and where each event id was first seen.
    line_of_src: dict[str, int] = {}
    lines_of_event: dict[str, list[int]] = {}
    event_id_of_line: dict[int, str | None] = {}
    next_line = 0
    inputs = 0
    for record in read(config, topics.inputs):
        inputs += 1
        number = header(record, "line")
        line = int(number) if number is not None else None
        if line is None or line in event_id_of_line:  # not from `produce`, or a line produced twice
            line = next_line
        next_line = max(next_line, line + 1)
        line_of_src[source_id(record.topic, record.partition, record.offset)] = line
        event_id = _event_id(record.value)
        event_id_of_line[line] = event_id
        if event_id is not None:
            lines_of_event.setdefault(event_id, []).append(line)

    verdicts: dict[int, str] = {}
    reasons: dict[int, list[str]] = {}
    counts = Counter()
    decided = Counter()
    clean: dict[str, tuple[float, bytes]] = {}
    rejected_lines: set[int] = set()
    event_line: dict[str, int] = {}
    flags: dict[tuple[str, str], dict] = {}
    rejected_by_reason: Counter = Counter()

    with open(out / "rejected.jsonl", "wb") as sink:
        for record in read(config, [topics.rejected]):
            value = orjson.loads(record.value)
            src = header(record, "src")
            line = line_of_src.get(src.decode()) if src else None
            if line is not None:
                value["line"] = line
                rejected_lines.add(line)
                verdicts[line] = "rejected"
                reasons[line] = value.get("reasons", [])
            counts["rejected"] += 1
            rejected_by_reason[(value.get("reasons") or ["?"])[0].split(":", 1)[0]] += 1
            sink.write(dumps(value) + b"\n")

    def line_for(event_id: str) -> int | None:
        line = event_line.get(event_id)
        if line is None:
            candidates = [n for n in lines_of_event.get(event_id, ()) if n not in rejected_lines]
            line = candidates[0] if candidates else None
            if line is not None:
                event_line[event_id] = line
        return line

    releases: dict[str, tuple[str, str, float, bytes]] = {}
    for record in read(config, [topics.clean]):
        event_id = _event_id(record.value)
        if event_id is None:
            continue
        released_by = header(record, "released_by")
        if released_by is not None:  # an analyst's word: applied after every decision, below
            releases[event_id] = (released_by.decode(), (header(record, "reason") or b"").decode(),
                                  orjson.loads(record.value).get("ts", 0.0), record.value)
            continue
        else:
            decided[event_id] += 1
            counts["clean"] += 1
            line = line_for(event_id)
            if line is not None and verdicts.get(line) != "quarantined":
                verdicts.setdefault(line, "clean")
        ts = orjson.loads(record.value).get("ts", 0.0)
        clean[event_id] = (ts, record.value)

    with open(out / "quarantined.jsonl", "wb") as sink:
        for record in read(config, [topics.quarantined]):
            value = orjson.loads(record.value)
            event_id = str(value["event_id"])
            decided[event_id] += 1
            counts["quarantined"] += 1
            line = line_for(event_id)
            if line is not None:
                verdicts[line] = "quarantined"
                reasons[line] = value.get("reasons", [])
            sink.write(record.value + b"\n")

    retracted = 0
    with open(out / "retractions.jsonl", "wb") as sink:
        seen_retractions: set[str] = set()
        for record in read(config, [topics.retracted]):
            value = orjson.loads(record.value)
            event_id = str(value["event_id"])
            if value.get("verdict") == "restored":  # an analyst released its flag: applied with the releases
                who = (header(record, "released_by") or b"").decode()
                releases[event_id] = (who, (header(record, "reason") or b"").decode(),
                                      (value.get("event") or {}).get("ts", 0.0), dumps(value.get("event") or {}))
                continue
            if event_id in seen_retractions:
                counts["duplicate_retractions"] += 1
                continue
            seen_retractions.add(event_id)
            retracted += 1
            clean.pop(event_id, None)
            line = line_for(event_id)
            if line is not None:
                verdicts[line] = "quarantined"
                reasons[line] = [f"retracted: {reason}" for reason in value.get("reasons", [])]
            sink.write(record.value + b"\n")

    restored = sum(1 for event_id in releases if event_id in seen_retractions)  # retracted, then given back
    for event_id, (who, why, ts, payload) in releases.items():
        line = line_for(event_id)
        if line is not None:
            verdicts[line] = "clean"
            reasons[line] = [why if why.startswith("released by") else f"released by {who}: {why}"]
        clean[event_id] = (ts, payload)

    for record in read(config, [topics.flags]):
        value = orjson.loads(record.value)
        if value.get("status") == "released":  # an analyst unflagged it (until newer evidence flags it again)
            flags.pop((value["kind"], str(value["id"])), None)
        else:
            flags[(value["kind"], str(value["id"]))] = value

    with open(out / "verdicts.jsonl", "wb") as sink:
        for line in sorted(event_id_of_line):
            sink.write(dumps({"line": line, "event_id": event_id_of_line[line], "verdict": verdicts.get(line),
                              "reasons": reasons.get(line, [])}) + b"\n")
    with open(out / "flags.jsonl", "wb") as sink:
        for record in sorted(flags.values(), key=lambda r: (-r["score"], r["kind"], r["id"])):
            sink.write(dumps(record) + b"\n")
    with open(out / "clean.jsonl", "wb") as sink:
        for _, payload in sorted(clean.values(), key=lambda pair: pair[0]):
            sink.write(payload + b"\n")

    accepted_events = {event_id for event_id, lines in lines_of_event.items()
                       if any(line not in rejected_lines for line in lines)}
    anonymous_accepted = sum(1 for line, event_id in event_id_of_line.items()
                             if event_id is None and line not in rejected_lines)
    missing = sorted(event_id for event_id in accepted_events if not decided.get(event_id))
    duplicates = sorted(event_id for event_id, n in decided.items() if n > 1)
    unanswered = sum(1 for line in event_id_of_line if line not in verdicts)
    flags_by_kind = Counter(kind for kind, _ in flags)
    summary = {
        "counts": {"lines": len(event_id_of_line), "accepted": len(event_id_of_line) - len(rejected_lines),
                   "rejected": counts["rejected"], "clean": counts["clean"] - retracted + restored,
                   "quarantined": counts["quarantined"], "retracted": retracted - restored,
                   "released": len(releases), "restored": restored},
        "undecided": unanswered, "rejected_by_reason": dict(rejected_by_reason),
        "flags": dict(flags_by_kind),
        "delivery": {"input_messages": inputs, "missing": len(missing) + anonymous_accepted,
                     "duplicates": len(duplicates), "duplicate_retractions": counts["duplicate_retractions"],
                     "rejected_without_source": counts["rejected"] - len(rejected_lines),
                     "missing_examples": missing[:10], "duplicate_examples": duplicates[:10]},
        "seconds": round(time.perf_counter() - started, 3),
    }
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


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
