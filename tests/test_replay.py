"""`replay`: one verdict per input line, counts that add up, and nothing lost."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import orjson
import pytest
from click.testing import CliRunner

from detectors.base import Detector, Signal
from detectors.decision import DecisionStage
from detectors.events import Event
from detectors.pipeline import Pipeline
from streams.cli import main
from streams.replay import OUTPUT_FILES, replay


class TextTells(Detector):
    """A stand-in detector: a rating whose text is "shill" flags its user; "bomb" implicates the rating."""

    name = "fake"

    def observe(self, events: Sequence[Event], now: float) -> list[Signal]:
        signals = []
        for event in events:
            text = getattr(event, "text", None)
            if text == "shill":
                signals.append(Signal("user", event.user_id, self.name, 0.9, {"text": text}))
            elif text == "bomb":
                signals.append(Signal("item", event.item_id, self.name, 0.8, event_ids=(event.event_id,)))
        return signals


def rating(event_id, ts, user, text=None, **extra) -> bytes:
    record = {"type": "rating", "event_id": event_id, "ts": ts, "user_id": user, "item_id": "i1",
              "rating": 4, **extra}
    if text:
        record["text"] = text
    return orjson.dumps(record)


LINES = [
    rating("e1", 100, "sleeper"),                                                    # 0 retracted later
    orjson.dumps({"type": "click", "event_id": "e2", "ts": 110, "user_id": "u2", "item_id": "i1"}),
    b"not json",                                                                     # 2
    orjson.dumps({"type": "catalog_edit", "event_id": "e3", "ts": 120, "item_id": "i1",
                  "seller_id": "s1", "title": "Lamp", "tags": ["home"]}),
    orjson.dumps({"type": "click", "event_id": "e4", "ts": 105, "user_id": "u2", "item_id": "i2"}),
    rating("e1", 130, "u2"),                                                         # 5 duplicate id
    rating("e5", 140, "bad", "shill"),                                               # 6 flagged user
    b"",                                                                             # 7 empty line
    orjson.dumps({"type": "rec_query", "event_id": "e6", "ts": 5000, "client_id": "c1",
                  "seed_items": ["i1"], "k": 5}),                                    # 8 releases 0..6
    rating("e7", 5001, "u3", "bomb"),                                                # 9 implicated
    rating("e8", 5002, "sleeper", "shill"),                                          # 10 flags sleeper
    rating("e9", 5003, "u3", rating=9),                                              # 11 invalid rating
    rating("e10", 5004, "u3"),                                                       # 12 clean
    b'{"type": "purchase", "event_id": "e11", "ts": 5005}',                          # 13 unknown type
]
EXPECTED = ["quarantined", "clean", "rejected", "clean", "clean", "rejected", "quarantined", "rejected",
            "clean", "quarantined", "quarantined", "rejected", "clean", "rejected"]


def run(tmp_path: Path, lines: list[bytes] = LINES, batch_size: int = 3,
        name: str = "out") -> tuple[dict, Path]:
    source = tmp_path / f"{name}.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    pipeline = Pipeline([TextTells()], DecisionStage(hold_seconds=600))
    out = tmp_path / name
    return replay(source, out, pipeline, batch_size=batch_size), out


def read(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run(tmp_path_factory.mktemp("replay"))


def test_every_output_file_is_written(result):
    _, out = result
    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUT_FILES)


def test_one_verdict_per_input_line_in_order(result):
    _, out = result
    verdicts = read(out / "verdicts.jsonl")
    assert [v["line"] for v in verdicts] == list(range(len(LINES)))
    assert [v["verdict"] for v in verdicts] == EXPECTED
    assert all(set(v) == {"line", "event_id", "verdict", "reasons"} for v in verdicts)
    assert [v["event_id"] for v in verdicts] == ["e1", "e2", None, "e3", "e4", "e1", "e5", None, "e6", "e7",
                                                 "e8", "e9", "e10", "e11"]


def test_clean_verdicts_have_no_reasons_and_the_others_do(result):
    _, out = result
    for verdict in read(out / "verdicts.jsonl"):
        assert (verdict["reasons"] == []) == (verdict["verdict"] == "clean"), verdict


def test_reasons_say_why(result):
    _, out = result
    reasons = [v["reasons"] for v in read(out / "verdicts.jsonl")]
    assert reasons[0] == ["retracted: user sleeper flagged (risk 0.90: fake 0.90)"]
    assert reasons[2][0].startswith("malformed_json: ")
    assert reasons[5] == ["duplicate_event_id: already seen"]
    assert reasons[6] == ["user bad flagged (risk 0.90: fake 0.90)"]
    assert reasons[9] == ["implicated by fake signal on item i1"]
    assert reasons[11][0].startswith("invalid_field: rating: ")
    assert reasons[13][0].startswith("unknown_type: 'purchase'")


def test_summary_counts_add_up(result):
    summary, out = result
    assert summary == orjson.loads((out / "summary.json").read_bytes())
    counts = summary["counts"]
    assert counts == {"lines": 14, "accepted": 9, "rejected": 5, "clean": 5, "quarantined": 3,
                      "retracted": 1}
    assert counts["lines"] == counts["accepted"] + counts["rejected"]
    assert counts["accepted"] == counts["clean"] + counts["quarantined"] + counts["retracted"]
    assert summary["undecided"] == 0
    assert summary["rejected_by_reason"] == {"malformed_json": 2, "duplicate_event_id": 1,
                                             "invalid_field": 1, "unknown_type": 1}
    assert summary["flags"] == {"user": 2, "item": 1}
    assert set(summary["detector_us_per_event"]) == {"fake"}


def test_clean_file_holds_exactly_the_clean_events_in_ts_order(result):
    _, out = result
    clean = read(out / "clean.jsonl")
    assert [event["event_id"] for event in clean] == ["e4", "e2", "e3", "e6", "e10"]
    clean_ids = {v["event_id"] for v in read(out / "verdicts.jsonl") if v["verdict"] == "clean"}
    assert {event["event_id"] for event in clean} == clean_ids
    assert clean[2] == {"type": "catalog_edit", "event_id": "e3", "ts": 120.0, "item_id": "i1",
                        "seller_id": "s1", "title": "Lamp", "tags": ["home"]}


def test_retractions_carry_the_event_and_when(result):
    _, out = result
    (retraction,) = read(out / "retractions.jsonl")
    assert retraction["verdict"] == "retracted"
    assert retraction["event_id"] == "e1"
    assert retraction["event"] == {"type": "rating", "event_id": "e1", "ts": 100.0, "user_id": "sleeper",
                                   "item_id": "i1", "rating": 4.0}
    assert retraction["retracted_at"] == 5002.0  # the watermark of the batch that flagged sleeper
    assert retraction["reasons"] == ["user sleeper flagged (risk 0.90: fake 0.90)"]


def test_quarantined_file_carries_events_and_reasons(result):
    _, out = result
    quarantined = {record["event_id"]: record for record in read(out / "quarantined.jsonl")}
    assert set(quarantined) == {"e5", "e7", "e8"}
    assert quarantined["e7"]["event"]["text"] == "bomb"
    assert all(record["verdict"] == "quarantined" and record["reasons"] for record in quarantined.values())


def test_dead_letters_keep_reason_and_raw_line(result):
    _, out = result
    rejected = read(out / "rejected.jsonl")
    assert [record["line"] for record in rejected] == [2, 5, 7, 11, 13]
    for record in rejected:
        assert record["verdict"] == "rejected"
        assert record["raw"].encode() == LINES[record["line"]]
        assert len(record["reasons"]) == 1 and ":" in record["reasons"][0]
    assert rejected[1]["event_id"] == "e1"


def test_one_flag_record_per_flagged_entity(result):
    _, out = result
    flags = read(out / "flags.jsonl")
    assert sorted((flag["kind"], flag["id"]) for flag in flags) == [("item", "i1"), ("user", "bad"),
                                                                    ("user", "sleeper")]
    sleeper = next(flag for flag in flags if flag["id"] == "sleeper")
    assert sleeper["detectors"] == ["fake"] and sleeper["score"] == 0.9
    assert sleeper["evidence"] == {"fake": {"text": "shill"}}


@pytest.mark.parametrize("batch_size", [1, 2, 100])
def test_verdicts_do_not_depend_on_batch_size(tmp_path, batch_size):
    summary, out = run(tmp_path, batch_size=batch_size)
    assert [v["verdict"] for v in read(out / "verdicts.jsonl")] == EXPECTED
    counts = summary["counts"]
    assert counts["accepted"] == counts["clean"] + counts["quarantined"] + counts["retracted"]


def test_crlf_line_endings_and_a_missing_final_newline(tmp_path):
    source = tmp_path / "crlf.jsonl"
    source.write_bytes(rating("a", 1, "u1") + b"\r\n" + rating("b", 2, "u1"))
    summary = replay(source, tmp_path / "out", Pipeline([], DecisionStage()))
    assert summary["counts"]["clean"] == 2 and summary["counts"]["lines"] == 2


def test_a_blank_line_is_an_input_line_and_gets_rejected(tmp_path):
    summary, out = run(tmp_path, lines=[b""], name="blank")
    assert summary["counts"]["lines"] == 1 and summary["counts"]["rejected"] == 1
    assert read(out / "verdicts.jsonl")[0]["verdict"] == "rejected"


def test_empty_file_writes_empty_results(tmp_path):
    (tmp_path / "none.jsonl").write_bytes(b"")
    summary = replay(tmp_path / "none.jsonl", tmp_path / "none", Pipeline([], DecisionStage()))
    assert summary["counts"]["lines"] == 0
    assert (tmp_path / "none" / "verdicts.jsonl").read_bytes() == b""


# -- the CLI ---------------------------------------------------------------------------------------

def cli_input() -> bytes:
    lines = [rating(f"e{n}", 1000 + n, f"u{n % 4}") for n in range(20)] + [b"{oops"]
    return b"\n".join(lines) + b"\n"


def test_cli_replays_stdin(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["replay", "-", "--out", str(out), "--detectors", "profile"],
                                input=cli_input())
    assert result.exit_code == 0, result.output
    verdicts = read(out / "verdicts.jsonl")
    assert len(verdicts) == 21
    assert verdicts[-1]["verdict"] == "rejected"
    counts = orjson.loads((out / "summary.json").read_bytes())["counts"]
    assert counts["lines"] == 21 and counts["accepted"] == 20
    assert counts["accepted"] == counts["clean"] + counts["quarantined"] + counts["retracted"]
    assert "21" in result.output and "lines" in result.output


def test_cli_replays_a_file(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(cli_input())
    result = CliRunner().invoke(main, ["replay", str(source), "--out", str(tmp_path / "out"),
                                       "--detectors", "profile", "--hold-seconds", "5"])
    assert result.exit_code == 0, result.output
    assert len(read(tmp_path / "out" / "verdicts.jsonl")) == 21


def test_cli_unknown_detector_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["replay", "-", "--out", str(tmp_path / "out"),
                                       "--detectors", "profile,nope"], input=b"")
    assert result.exit_code == 2
    assert "unknown detector(s) ['nope']" in result.output
    assert "profile" in result.output  # names the known ones
    assert not (tmp_path / "out").exists()  # failed before writing anything
