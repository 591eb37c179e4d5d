"""OCSF alerts a SIEM can trust: every finding the alerts sink builds validates against the JSON Schema of
the pinned OCSF release (1.1.0, compiled offline from the schema's own files: tests/ocsf), with times in their
proper fields, numbers as numbers, and one finding uid from Create through Update to Close."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from detectors.base import Signal
from detectors.pipeline import Pipeline
from detectors.decision import DecisionStage
from streams.decisions import control_record
from streams.outcomes import flag_record
from streams.sinks import OCSF_VERSION, AlertSink, ocsf_finding
from streams.store import open_store

SCHEMA = Path(__file__).parent / "ocsf" / f"detection_finding-{OCSF_VERSION}.schema.json"


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def valid(validator, finding):
    errors = sorted(validator.iter_errors(finding), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors]
    return finding


def test_the_vendored_schema_is_the_pinned_release_and_strict(validator):
    schema = validator.schema
    assert schema["$id"] == f"https://schema.ocsf.io/{OCSF_VERSION}/classes/detection_finding"
    assert {"activity_id", "class_uid", "finding_info", "metadata", "severity_id", "time", "type_uid"} <= set(
        schema["required"])
    assert schema["additionalProperties"] is False
    # It can fail: a string time, an unknown attribute, an activity OCSF does not define.
    finding = ocsf_finding({"kind": "user", "id": "u", "score": 0.9, "detector_scores": {"p": 0.9}, "first_ts": 5.0},
                           created=True, now=10.0)
    for broken in ({**finding, "time": "10"}, {**finding, "shillguard": 1}, {**finding, "activity_id": 7},
                   {**finding, "finding_info": {**finding["finding_info"], "first_seen_time": 5.5}}):
        assert list(validator.iter_errors(broken))


def test_findings_through_create_update_confirm_and_close_validate_and_keep_their_uid(validator):
    """A flag from the decision stage, a stronger one, an analyst's confirmation of one entity and a release
    of another, as the worker publishes them on the flags topic and the alerts sink turns them into findings."""
    stage = DecisionStage(hold_seconds=0)
    pipeline = Pipeline([], stage)
    evidence = {"block": "dense_block-2", "users": 2, "items": ["i1", "i2"], "density": 1.0, "lift": 44.1,
                "span": [877249115.0, 877253982.0], "rating": "5", "count": "17.8"}
    flags, _ = stage.apply([Signal("user", "u1", "dense_block", 0.95, evidence),
                            Signal("user", "u2", "dense_block", 0.95, evidence),
                            Signal("client", "c1", "extraction", 0.99, {"queries": 600, "z": float("nan")})],
                           now=877_260_000.0)
    stronger, _ = stage.apply([Signal("client", "c1", "exposure", 0.9, {"why": "jump"})], now=877_270_000.0)
    confirm = pipeline.control([control_record("confirm", "user:u1", "true_positive", by="ana")]).flags
    release_c1 = pipeline.control([control_record("release", "client:c1", "false_positive", by="bo",
                                                   note="a partner's crawler")]).flags
    release_u1 = pipeline.control([control_record("release", "user:u2", "benign_positive", by="bo")]).flags
    release_u2 = pipeline.control([control_record("release", "user:u1", "duplicate", by="bo")]).flags
    sink = AlertSink(open_store("sqlite://"), metrics=None)
    findings, in_order = {}, []
    for batch in (flags, stronger, confirm, release_c1, release_u1, release_u2):
        for flag, finding in zip(batch, sink.findings([json.loads(json.dumps(flag_record(f))) for f in batch])):
            findings.setdefault(f"{flag.kind}:{flag.id}", []).append(valid(validator, finding))
            in_order.append((f"{flag.kind}:{flag.id}", finding))

    client = findings["client:c1"]
    assert [(f["activity_id"], f["type_uid"], f["status_id"]) for f in client] == [
        (1, 200401, 1), (2, 200402, 1), (3, 200403, 3)]
    assert len({f["finding_info"]["uid"] for f in client}) == 1
    created, updated, closed = client
    info = created["finding_info"]
    assert info["first_seen_time"] == 877_260_000_000  # the flag's event time
    assert updated["finding_info"]["first_seen_time"] == 877_260_000_000
    assert updated["finding_info"]["last_seen_time"] == 877_270_000_000  # the stronger evidence's event time
    assert info["created_time"] == created["time"]  # wall time, when first published
    assert closed["finding_info"]["created_time"] == info["created_time"]
    assert closed["finding_info"]["modified_time"] == closed["time"] >= info["created_time"]
    assert closed["time"] > 1_600_000_000_000 > info["first_seen_time"]  # wall time vs. 1997's event time
    assert closed["status_detail"] == "release by bo: false_positive" and closed["comment"] == "a partner's crawler"
    assert client[0]["evidences"][0]["data"]["evidence"]["z"] is None  # NaN is no JSON number

    # The block's two accounts share one finding: a confirmation updates it, the first release too (one
    # member still stands), the last release closes it.
    group = findings["user:u1"] + findings["user:u2"]
    assert len({f["finding_info"]["uid"] for f in group}) == 1
    timeline = [f for entity, f in in_order if entity.startswith("user:")]
    assert [f["activity_id"] for f in timeline] == [1, 2, 2, 2, 3]
    assert timeline[2]["status_id"] == 2 and timeline[2]["status_detail"].startswith("confirm by ana")
    data = timeline[0]["evidences"][0]["data"]
    assert data["score"] == 0.95 and data["evidence"]["rating"] == 5 and data["evidence"]["count"] == 17.8
    assert data["evidence"]["block"] == "dense_block-2"  # names stay names


def test_a_detector_drift_alert_validates(validator):
    from detectors.score_drift import ScoreDrift
    from streams.sinks import drift_finding

    watch = ScoreDrift()
    reports = [r for t in range(2000) for r in watch.observe("profile", 0.2 if t < 1000 else 0.8, 877_000_000.0 + t)]
    assert reports
    finding = valid(validator, drift_finding(reports[0]))
    assert finding["finding_info"]["first_seen_time"] == int(reports[0]["at"] * 1000)
    assert finding["evidences"][0]["data"]["detector"] == "profile"
