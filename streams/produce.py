"""`shillguard produce EVENTS.jsonl`: publish events to the input topics by type, keyed by actor.

Each message carries its line number in a `line` header, so that `export` can write verdicts line by line
as `replay` does. A line that is not a typed JSON object (malformed, unknown type) still goes out, to the
ratings topic, so that the worker turns it into a dead letter on `events.rejected` as replay would.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import click
import orjson

from streams.topics import INPUT_OF_TYPE, Topics


def route(line: bytes, topics: Topics) -> tuple[str, bytes | None]:
    """(topic, key) of one input line."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return topics.ratings, None
    if not isinstance(value, dict):
        return topics.ratings, None
    topic = topics.for_type(value.get("type"))
    if topic is None:
        return topics.ratings, None
    key = value.get(INPUT_OF_TYPE[value["type"]][1])
    return topic, str(key).encode() if key is not None else None


def make_producer(settings: Any, **overrides: Any) -> Any:
    from kafka import KafkaProducer

    from streams.broker import kafka_python_config

    options = dict(acks="all", linger_ms=10, batch_size=512 * 1024, max_request_size=8 * 1024 * 1024,
                   retries=5, max_in_flight_requests_per_connection=1)
    options.update(overrides)
    return KafkaProducer(**kafka_python_config(settings), **options)


def produce_lines(producer: Any, lines: Iterable[bytes], topics: Topics, start_line: int = 0,
                  rate: float | None = None, on_sent: Callable[[int, int], None] | None = None,
                  timestamp_ms: Callable[[], int] | None = None) -> int:
    """Send lines in order; `rate` caps events/s. Returns the number sent."""
    sent = 0
    started = time.perf_counter()
    for number, line in enumerate(lines, start_line):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        topic, key = route(line, topics)
        producer.send(topic, value=line, key=key, headers=[("line", str(number).encode())],
                      timestamp_ms=timestamp_ms() if timestamp_ms else None)
        sent += 1
        if on_sent is not None:
            on_sent(sent, len(line) + 1)
        if rate and sent % 100 == 0:
            ahead = sent / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
    return sent


@click.command("produce")
@click.argument("events", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--rate", type=float, default=None, help="Events per second (default: as fast as possible).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def produce(events: str, rate: float | None, progress: bool | None) -> None:
    """Publish the events in EVENTS (JSON lines, - for stdin) to the input topics by type."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from streams.settings import get_settings

    settings = get_settings()
    topics = Topics.from_settings(settings)
    if progress is None:
        progress = sys.stderr.isatty() and events != "-"
    producer = make_producer(settings)
    source: BinaryIO = sys.stdin.buffer if events == "-" else open(events, "rb")
    started = time.perf_counter()
    try:
        if progress:
            total = None if events == "-" else Path(events).stat().st_size
            with Progress(TextColumn("produce"), BarColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                          transient=True) as bar:
                task = bar.add_task("produce", total=total)
                sent = produce_lines(producer, source, topics, rate=rate,
                                     on_sent=lambda _, size: bar.advance(task, size))
                producer.flush()
        else:
            sent = produce_lines(producer, source, topics, rate=rate)
            producer.flush()
    finally:
        producer.close()
        if source is not sys.stdin.buffer:
            source.close()
    seconds = time.perf_counter() - started
    Console(stderr=True).print(f"produced {sent:,} events in {seconds:.1f} s ({sent / max(seconds, 1e-9):,.0f}/s) "
                               f"to {settings.broker or settings.embedded_listen}")
