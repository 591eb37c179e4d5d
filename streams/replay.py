"""`shillguard replay`: the streaming pipeline with a file in place of Kafka and files in place of topics.

Writes into the output directory:
- verdicts.jsonl: one object per input line (line, event_id, verdict clean|quarantined|rejected, reasons);
  a retracted event's verdict is quarantined, with the retraction among its reasons.
- flags.jsonl: one object per flagged entity, its final score, detectors and evidence.
- clean.jsonl: the events that stayed clean, in ts order (what a trainer should learn from).
- quarantined.jsonl, rejected.jsonl (dead letters with reason and raw line), retractions.jsonl.
- summary.json: counts, seconds, events/s, and each detector's cost per event.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import BinaryIO, Iterator

import orjson

from detectors.events import Rejection, to_json
from detectors.pipeline import Pipeline, Step
from streams.gc_tuning import rare_collections
from streams.ledger import Ledger, summary_head
from streams.outcomes import dumps, flag_record, outcome_record, rejection_record

OUTPUT_FILES = ("verdicts.jsonl", "flags.jsonl", "clean.jsonl", "quarantined.jsonl", "rejected.jsonl",
                "retractions.jsonl", "summary.json")


def iter_batches(stream: BinaryIO, batch_size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in stream:
        batch.append(line.rstrip(b"\r\n"))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def replay(source: str | Path, out_dir: str | Path, pipeline: Pipeline, batch_size: int = 2048,
           progress: bool = False, control: list[dict] | None = None, final: bool = True) -> dict:
    """Run `pipeline` over the JSON lines in `source` ('-' for stdin); return the summary. `control`: records
    of the control topic (analysts' decisions, the trainer's signals: `Pipeline.control`), applied after the
    input as the worker applies them between batches, before the held events are flushed. `final`: the file
    is the whole input (`Pipeline.flush`); False to compare with a live worker, whose input does not end."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger()
    started = time.perf_counter()
    with ExitStack() as stack:
        stream = sys.stdin.buffer if str(source) == "-" else stack.enter_context(open(source, "rb"))
        files = {name: stack.enter_context(open(out / f"{name}.jsonl", "wb"))
                 for name in ("quarantined", "rejected", "retractions")}
        bar = stack.enter_context(_progress(source) if progress else nullcontext())
        stack.enter_context(rare_collections())
        # The next batch is started before the last is finished: offloaded detectors work on it meanwhile.
        last = None
        for batch in iter_batches(stream, batch_size):
            begun = pipeline.start(batch)
            if last is not None:
                _record(ledger, pipeline.finish(last), files)
            last = begun
            if bar is not None:
                bar.advance(sum(len(line) + 1 for line in batch))
        if last is not None:
            _record(ledger, pipeline.finish(last), files)
        if control:
            _record(ledger, pipeline.control(control), files)
        _record(ledger, pipeline.flush(final), files)
    seconds = time.perf_counter() - started
    ledger.write(out)
    summary = _summary(ledger, pipeline, seconds)
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


def _record(ledger: Ledger, step: Step, files: dict[str, BinaryIO]) -> None:
    watermark = step.watermark
    line = len(ledger.event_ids)
    for decoded in step.decoded:
        ledger.line(line, decoded.event_id)
        if type(decoded) is Rejection:
            ledger.reject(line, [decoded.reason])
            files["rejected"].write(dumps(rejection_record(decoded, line)) + b"\n")
        else:
            ledger.line_of[decoded.event_id] = line  # held: decided when the decision stage releases it
        line += 1
    for outcome in step.outcomes:
        event, verdict = outcome.event, outcome.verdict
        if outcome.released_by is not None:  # given back by an analyst's release: clean after all
            ledger.release(event.event_id, list(outcome.reasons), event.ts, outcome.payload or to_json(event),
                           restored=verdict != "clean")
        elif verdict == "clean":
            ledger.decide(event.event_id, verdict, outcome.reasons, event.ts, outcome.payload or to_json(event))
        elif verdict == "retracted":
            ledger.retract(event.event_id, outcome.reasons)
            files["retractions"].write(dumps(outcome_record(outcome, watermark)) + b"\n")
        else:
            ledger.decide(event.event_id, verdict, outcome.reasons)
            files["quarantined"].write(dumps(outcome_record(outcome, watermark)) + b"\n")
    for flag in step.flags:  # as export reads the flags topic
        ledger.flag((flag.kind, flag.id), None if flag.status == "released" else flag_record(flag))


def _summary(ledger: Ledger, pipeline: Pipeline, seconds: float) -> dict:
    lines = len(ledger.event_ids)
    return {
        **summary_head(ledger.replay_counts(), ledger), "seconds": round(seconds, 3),
        "events_per_second": round(lines / seconds, 1) if seconds else None,
        "detector_us_per_event": {name: round(1e6 * spent / max(lines, 1), 2)
                                  for name, spent in pipeline.detector_seconds.items()},
    }


def _progress(source: str | Path):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    class _Bar:
        def __init__(self) -> None:
            total = None if str(source) == "-" else Path(source).stat().st_size
            self.progress = Progress(TextColumn("replay"), BarColumn(), TransferSpeedColumn(),
                                     TimeRemainingColumn(), transient=True)
            self.task = self.progress.add_task("replay", total=total)

        def __enter__(self) -> "_Bar":
            self.progress.start()
            return self

        def __exit__(self, *exc) -> None:
            self.progress.stop()

        def advance(self, n: int) -> None:
            self.progress.advance(self.task, n)

    return _Bar()
