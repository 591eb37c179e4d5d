"""The split topology on a real broker (the embedded Tansu): one detection worker and several actor workers
(`SHILLGUARD_ROLE=detect|actors`, streams.detection and streams.actors) in one consumer group give every input
message exactly one outcome and flag the users `replay` flags, also when an actor worker is killed with -9
mid-stream (its partitions move to the other, with their state from the state topic) and when it rejoins.

Every detector but `catalog_drift` (MiniLM would take most of the test's time on two cores)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from test_streaming_integration import TOPICS, Service, broker  # noqa: F401 - the session's broker fixture

pytestmark = pytest.mark.integration

DETECTORS = "profile,rating_shift,dense_block,lockstep,coordination,copies,review_rings,extraction,sweep_coverage"
SETTINGS = {"SHILLGUARD_DETECTORS": DETECTORS, "SHILLGUARD_LEARN_FROM_ANALYSTS": "false",
            "SHILLGUARD_OFFLOAD_DETECTORS": "dense_block,lockstep,coordination,copies,review_rings",
            "SHILLGUARD_PARTITIONS": "6", "SHILLGUARD_SNAPSHOT_INTERVAL_SECONDS": "2"}


@pytest.fixture(scope="module")
def split_stream(tmp_path_factory):
    """20,000 simulated events with attacks, two malformed lines and a duplicate; replay's flags."""
    from streams.assembly import build_pipeline
    from streams.demo import demo_events
    from streams.replay import replay
    from streams.settings import Settings

    directory = tmp_path_factory.mktemp("split")
    lines, _ = demo_events(20_000, seed=2)
    lines[50:50] = [b"{not json", b'{"type": "rating", "event_id": "bad-1", "ts": 1, "user_id": "u"}']
    lines.insert(3_000, lines[2_500])
    path = directory / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    settings = Settings(detectors=DETECTORS, learn_from_analysts=False, offload_detectors="")
    replay(path, directory / "replay", build_pipeline(settings), final=False)  # compared with live workers
    return path


class Split:
    """A detection worker and `actors` actor workers sharing topics and an app id."""

    def __init__(self, broker: str, workdir: Path, actors: int):
        name = f"s{uuid.uuid4().hex[:6]}"
        shared = {**SETTINGS, "SHILLGUARD_APP_ID": name}
        shared.update({f"SHILLGUARD_TOPIC_{topic.upper()}": f"{name}.{topic}"
                       for topic in (*TOPICS, "accepted", "points", "actor_state")})
        self.detect = self._service(broker, workdir / "detect", {**shared, "SHILLGUARD_ROLE": "detect"})
        self.actors = [self._service(broker, workdir / f"actor{k}", {**shared, "SHILLGUARD_ROLE": "actors"})
                       for k in range(actors)]

    @staticmethod
    def _service(broker: str, workdir: Path, env: dict[str, str]) -> Service:
        workdir.mkdir(parents=True)
        service = Service(broker, workdir)
        service.env.update(env)
        service.env["SHILLGUARD_STATE_DIR"] = str(workdir / "state")
        return service

    def decided(self) -> int:
        total = 0
        for actor in self.actors:
            if actor.process is not None and actor.process.poll() is None:
                _, body = actor.get("/readyz")
                counts = json.loads(body or "{}").get("counts", {})
                total += counts.get("clean", 0) + counts.get("quarantined", 0) + counts.get("rejected", 0)
        return total

    def metric(self, name: str, **labels: str) -> float:
        """Summed over every running worker, detection included, as Prometheus sums over the pods."""
        return sum(service.metric(name, **labels) for service in (self.detect, *self.actors)
                   if service.process is not None and service.process.poll() is None)

    def export(self, out: Path, expected: int, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            self.detect.cli("export", "--out", str(out))
            summary = json.loads((out / "summary.json").read_text())
            if summary["delivery"]["missing"] == 0 or time.monotonic() > deadline:
                return summary
            for service in (self.detect, *self.actors):
                assert service.process is None or service.process.poll() is None or service.process.returncode \
                    in (-9, 0), service.log()
            time.sleep(3)

    def stop(self) -> None:
        for service in (*self.actors, self.detect):
            service.stop()


def users(directory: Path) -> set[str]:
    records = [orjson.loads(line) for line in (directory / "flags.jsonl").read_bytes().splitlines()]
    return {record["id"] for record in records if record["kind"] == "user"}


def agreement(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(len(a | b), 1)


def check(summary: dict, total: int) -> None:
    assert summary["counts"]["lines"] == total
    assert summary["delivery"]["missing"] == 0, summary["delivery"]
    assert summary["delivery"]["duplicates"] == 0, summary["delivery"]
    assert summary["delivery"]["duplicate_retractions"] == 0, summary["delivery"]
    assert summary["undecided"] == 0
    assert summary["counts"]["rejected"] == 3  # two malformed lines and the duplicate


def check_metrics(split: Split, out: Path, total: int, timeout: float = 60) -> None:
    """The workers' /metrics, summed over them, count what the topics hold: one outcome per input line,
    the dead letters, the retractions (those can still come as flags arrive: compared with a fresh export),
    the input once (the detection worker counts neither outcomes nor the accepted lines)."""
    deadline = time.monotonic() + timeout
    while True:
        summary = split.export(out, total)
        counts = summary["counts"]
        # Records per topic (summary.json's clean is net of retractions); an analyst's release is on clean
        # and a restoration on retracted, as the single worker counts them.
        expected = {"clean": counts["clean"] + counts["retracted"] - counts["restored"] + counts["released"],
                    "quarantined": counts["quarantined"], "rejected": counts["rejected"],
                    "retracted": counts["retracted"] + 2 * counts["restored"]}
        found = {outcome: split.metric("shillguard_events_out_total", outcome=outcome) for outcome in expected}
        if found == expected or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert found == expected, (found, summary)
    assert split.detect.metric("shillguard_events_out_total") == 0
    # one per line, and one per analyst's release of a quarantined event (on clean)
    assert sum(found[o] for o in ("clean", "quarantined", "rejected")) == \
        total + counts["released"] - counts["restored"]
    # Every line counted in once (more only if a partition moved mid-stream and was read again): the
    # detection worker's reading of internal.accepted would double it.
    assert total <= split.metric("shillguard_events_in_total") < 2 * total
    assert split.detect.metric("shillguard_events_in_total") == 0
    assert split.metric("shillguard_flags_total") > 0 and split.metric("shillguard_snapshot_seconds_count") > 0
    # Each input partition's lag is reported by the one worker that holds it, and none is left.
    lag = [line.split(" ")[0] for actor in split.actors if actor.process is not None and actor.process.poll() is None
           for line in actor.get("/metrics")[1].splitlines() if line.startswith("shillguard_consumer_lag{")]
    assert len(lag) == len(set(lag)) == len(TOPICS[:4]) * int(SETTINGS["SHILLGUARD_PARTITIONS"]), lag
    assert split.metric("shillguard_consumer_lag") == 0


def test_two_actor_workers_decide_what_replay_decides(broker, split_stream, tmp_path):  # noqa: F811
    split = Split(broker, tmp_path, actors=2)
    try:
        split.detect.start()
        for actor in split.actors:
            actor.start()
        split.detect.cli("produce", str(split_stream), "--no-progress")
        total = len(split_stream.read_bytes().splitlines())
        summary = split.export(tmp_path / "export", total)
        check(summary, total)
        replayed = users(split_stream.parent / "replay")
        assert len(replayed) >= 10  # the comparison means something
        assert agreement(users(tmp_path / "export"), replayed) >= 0.98
        check_metrics(split, tmp_path / "metrics", total)
        # Both workers decided: the partitions were split between them.
        assert all(json.loads(actor.get("/readyz")[1])["counts"].get("clean", 0) > 0 for actor in split.actors)
        # An analyst's release reaches the actor partition that owns the user, through the detection worker:
        # what the flag took is given back, the user is flagged no more, and nothing else moves.
        user = sorted(users(tmp_path / "export"))[0]
        split.detect.cli("quarantine", "release", "--entity", f"user:{user}", "--reason", "false_positive",
                         "--by", "ana")
        deadline = time.monotonic() + 120
        while True:
            split.detect.cli("export", "--out", str(tmp_path / "released"))
            after = json.loads((tmp_path / "released" / "summary.json").read_text())
            if after["counts"].get("released", 0) + after["counts"].get("restored", 0) > 0:
                break
            assert time.monotonic() < deadline, split.detect.log()
            time.sleep(2)
        assert user not in users(tmp_path / "released")
        assert users(tmp_path / "released") == users(tmp_path / "export") - {user}
        check(after, total)
        check_metrics(split, tmp_path / "released-metrics", total)  # what the release gave back counted too
    finally:
        split.stop()


def test_an_actor_worker_killed_mid_stream_loses_and_doubles_nothing_then_rejoins(broker, split_stream,  # noqa: F811
                                                                                  tmp_path):
    split = Split(broker, tmp_path, actors=2)
    total = len(split_stream.read_bytes().splitlines())
    try:
        split.detect.start()
        for actor in split.actors:
            actor.start()
        # Produced while the workers run, so that the victim dies with input read, forwarded and published
        # after its last snapshot (its successor must neither lose nor repeat any of it).
        producer = subprocess.Popen([sys.executable, "-m", "streams.cli", "produce", str(split_stream),
                                     "--no-progress", "--rate", "1500"], env=split.detect.env, cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while split.decided() < 0.2 * total:
            assert time.monotonic() < deadline, split.detect.log()
            time.sleep(0.3)
        victim = split.actors[1]
        victim.kill9()
        assert producer.wait(120) == 0
        summary = split.export(tmp_path / "after-kill", total)
        check(summary, total)
        replayed = users(split_stream.parent / "replay")
        assert agreement(users(tmp_path / "after-kill"), replayed) >= 0.95
        # It rejoins: the partitions move again, nothing is published twice.
        victim.start()
        time.sleep(15)
        check(split.export(tmp_path / "after-rejoin", total), total)
    finally:
        split.stop()
