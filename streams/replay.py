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
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import orjson

from detectors.events import Rejection, to_json
from detectors.pipeline import Pipeline, Step
from streams.gc_tuning import rare_collections
from streams.outcomes import dumps, flag_record, outcome_record, rejection_record

OUTPUT_FILES = ("verdicts.jsonl", "flags.jsonl", "clean.jsonl", "quarantined.jsonl", "rejected.jsonl",
                "retractions.jsonl", "summary.json")


@dataclass
class _Ledger:
    """Final verdict of every input line, and the clean events still standing."""

    verdicts: list[str | None] = field(default_factory=list)
    event_ids: list[str | None] = field(default_factory=list)
    reasons: dict[int, list[str]] = field(default_factory=dict)
    line_of: dict[str, int] = field(default_factory=dict)
    clean: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {
        "lines": 0, "accepted": 0, "rejected": 0, "clean": 0, "quarantined": 0, "retracted": 0})
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    flags: dict[tuple[str, str], dict] = field(default_factory=dict)


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
           progress: bool = False, control: list[dict] | None = None) -> dict:
    """Run `pipeline` over the JSON lines in `source` ('-' for stdin); return the summary. `control`: records
    of the control topic (analysts' decisions, the trainer's signals: `Pipeline.control`), applied after the
    input as the worker applies them between batches, before the held events are flushed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ledger = _Ledger()
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
        _record(ledger, pipeline.flush(), files)
    seconds = time.perf_counter() - started
    _write_results(out, ledger)
    summary = _summary(ledger, pipeline, seconds)
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


def _record(ledger: _Ledger, step: Step, files: dict[str, BinaryIO]) -> None:
    watermark = step.watermark
    counts, verdicts, event_ids, line_of = ledger.counts, ledger.verdicts, ledger.event_ids, ledger.line_of
    line, rejected = counts["lines"], 0
    for decoded in step.decoded:
        event_ids.append(decoded.event_id)
        if type(decoded) is Rejection:
            rejected += 1
            verdicts.append("rejected")
            ledger.reasons[line] = [decoded.reason]
            code = decoded.reason.split(":", 1)[0]
            ledger.rejected_by_reason[code] = ledger.rejected_by_reason.get(code, 0) + 1
            files["rejected"].write(dumps(rejection_record(decoded, line)) + b"\n")
        else:
            verdicts.append(None)  # held: decided when the decision stage releases it
            line_of[decoded.event_id] = line
        line += 1
    counts["rejected"] += rejected
    counts["accepted"] += len(step.decoded) - rejected
    counts["lines"] = line
    clean = ledger.clean
    for outcome in step.outcomes:
        event = outcome.event
        position = line_of[event.event_id]
        verdict = outcome.verdict
        if outcome.released_by is not None:  # given back by an analyst's release: clean after all
            counts["quarantined" if verdict == "clean" else "retracted"] -= 1
            counts["clean"] += 1
            counts["released"] = counts.get("released", 0) + 1
            verdicts[position] = "clean"
            ledger.reasons[position] = list(outcome.reasons)
            clean[event.event_id] = (event.ts, outcome.payload or to_json(event))
            continue
        counts[verdict] += 1
        if verdict == "clean":
            verdicts[position] = "clean"
            clean[event.event_id] = (event.ts, outcome.payload or to_json(event))
            continue
        verdicts[position] = "quarantined"
        if verdict == "retracted":
            counts["clean"] -= 1
            clean.pop(event.event_id, None)
            ledger.reasons[position] = [f"retracted: {reason}" for reason in outcome.reasons]
            files["retractions"].write(dumps(outcome_record(outcome, watermark)) + b"\n")
        else:
            ledger.reasons[position] = outcome.reasons
            files["quarantined"].write(dumps(outcome_record(outcome, watermark)) + b"\n")
    for flag in step.flags:
        if flag.status == "released":  # as export reads the flags topic
            ledger.flags.pop((flag.kind, flag.id), None)
        else:
            ledger.flags[(flag.kind, flag.id)] = flag_record(flag)


def _write_results(out: Path, ledger: _Ledger) -> None:
    with open(out / "verdicts.jsonl", "wb") as f:
        for line, (verdict, event_id) in enumerate(zip(ledger.verdicts, ledger.event_ids)):
            f.write(dumps({"line": line, "event_id": event_id, "verdict": verdict,
                           "reasons": ledger.reasons.get(line, [])}) + b"\n")
    with open(out / "flags.jsonl", "wb") as f:
        for record in sorted(ledger.flags.values(), key=lambda r: (-r["score"], r["kind"], r["id"])):
            f.write(dumps(record) + b"\n")
    with open(out / "clean.jsonl", "wb") as f:
        for _, payload in sorted(ledger.clean.values(), key=lambda pair: pair[0]):
            f.write(payload + b"\n")


def _summary(ledger: _Ledger, pipeline: Pipeline, seconds: float) -> dict:
    counts = dict(ledger.counts)
    counts["retracted"] = ledger.counts["retracted"]
    undecided = sum(verdict is None for verdict in ledger.verdicts)
    flags_by_kind: dict[str, int] = {}
    for kind, _ in ledger.flags:
        flags_by_kind[kind] = flags_by_kind.get(kind, 0) + 1
    lines = max(ledger.counts["lines"], 1)
    return {
        "counts": counts, "undecided": undecided, "rejected_by_reason": ledger.rejected_by_reason,
        "flags": flags_by_kind, "seconds": round(seconds, 3),
        "events_per_second": round(ledger.counts["lines"] / seconds, 1) if seconds else None,
        "detector_us_per_event": {name: round(1e6 * spent / lines, 2)
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
