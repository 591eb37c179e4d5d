"""Fuzzing: decode and the whole pipeline with arbitrary bytes and JSON (hypothesis). No exception escapes,
every line gets exactly one verdict, and a rejection always carries one of the documented codes.

`benchmarks/fuzz.py` pushes a million lines of the same kinds through `shillguard replay` and counts the codes.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from detectors.events import Rejection, decode_event
from fuzzing import CODES, dumps, fuzzed_line, json_values, mutated_event

settings.register_profile("shillguard", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shillguard")


def _check(line: bytes) -> None:
    decoded = decode_event(line)
    if type(decoded) is Rejection:
        assert decoded.reason.split(":", 1)[0] in CODES, decoded.reason
        assert decoded.raw == line  # nothing is lost: the dead letter carries the line as it came
    else:
        assert decoded.event_id and decoded.ts == decoded.ts  # a validated event: an id, a finite time


@settings(max_examples=400)
@given(st.binary(max_size=2_000))
def test_decode_never_raises_on_arbitrary_bytes(line):
    _check(line)


@settings(max_examples=400)
@given(json_values)
def test_decode_never_raises_on_arbitrary_json(value):
    _check(dumps(value))


@settings(max_examples=400)
@given(mutated_event())
def test_decode_never_raises_on_mutated_events(line):
    _check(line)


_PIPELINE = []


def _pipeline():
    """One long-lived pipeline for every example, as a worker's is: state left by earlier examples (ids seen,
    flags, odd timestamps) is part of what the next one meets."""
    if not _PIPELINE:
        from streams.assembly import build_pipeline
        from streams.settings import Settings

        _PIPELINE.append(build_pipeline(Settings(
            detectors="profile,rating_shift,dense_block,lockstep,coordination,copies,extraction,midas",
            offload_detectors="", decide_every=7, hold_seconds=30)))
    return _PIPELINE[0]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # an overflow or 0/0 in a detector is a NaN score, silently
@settings(max_examples=60)
@given(st.lists(fuzzed_line(), min_size=1, max_size=120), st.integers(1, 40))
def test_the_pipeline_gives_every_line_exactly_one_verdict(lines, batch):
    pipeline = _pipeline()
    pipeline.flush()  # nothing of an earlier example still held
    verdicts: dict[int, str] = {}
    line_of: dict[str, int] = {}
    steps = [pipeline.process(lines[k:k + batch]) for k in range(0, len(lines), batch)]
    steps.append(pipeline.flush())
    position = 0
    for step in steps:
        for decoded in step.decoded:
            if type(decoded) is Rejection:
                assert decoded.reason.split(":", 1)[0] in CODES
                verdicts[position] = "rejected"
            else:
                assert decoded.event_id not in line_of  # a duplicate id is rejected, never decided twice
                line_of[decoded.event_id] = position
            position += 1
        for outcome in step.outcomes:
            line = line_of.get(outcome.event.event_id)
            if line is None:  # a retraction of an event an earlier example released
                assert outcome.verdict == "retracted"
                continue
            if outcome.verdict == "retracted":
                assert verdicts[line] == "clean"  # only a released event is retracted, and once
                verdicts[line] = "retracted"
            else:
                assert line not in verdicts  # one decision per accepted event
                verdicts[line] = outcome.verdict
    assert position == len(lines) and sorted(verdicts) == list(range(len(lines)))
