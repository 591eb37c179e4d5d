"""Settings from the environment (prefix SHILLGUARD_), one object for every process: the worker, `produce`,
`export`, `quarantine` and the trainer. Secrets (the database URL, which may carry a password, the SASL
password, the webhook URL, the snapshot key) are `SecretStr`: printed or logged, they read `**********`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHILLGUARD_", extra="ignore", env_nested_delimiter="__")

    # Decision stage
    hold_seconds: float = 600.0
    flag_threshold: float = 0.5
    # A year: a camouflaged copy is recognisable only once the real profile it copies shows up, which can be
    # months after the copy (the copies detector keeps a year too). About 170 bytes per released event kept.
    retraction_horizon_seconds: float = 365 * 86400.0
    # How far back a flag retracts unless its evidence condemns the account's whole history
    recent_retraction_seconds: float = 30 * 86400.0
    # Pipeline
    batch_size: int = 2048
    # Decisions (apply signals, release what is due) every this many input lines counted from the stream's
    # start, and on idle and flush ticks, wherever batches end: replay, a worker and a restarted worker
    # decide alike (detectors.pipeline). On a slow stream an event leaves at most this many lines (or one
    # quiet spell) after its hold; lower it there.
    decide_every: int = 2048
    # Comma-separated names, see streams.assembly.DETECTORS. Off by default: midas (a reference anchor).
    detectors: str = ("profile,rating_shift,dense_block,lockstep,coordination,copies,review_rings,catalog_drift,"
                      "extraction,sweep_coverage")
    # Those of the chosen detectors that run in processes of their own beside the rest (streams.parallel),
    # `;` between processes; empty: all in one process. Ignored on a one-core machine.
    offload_detectors: str = ("dense_block,lockstep,coordination,midas,copies,review_rings;catalog_drift,extraction,"
                              "sweep_coverage")
    # Detectors whose signals reach the decision stage `detector_lag` decision points late (detectors.pipeline),
    # so that a catalogue sync's seconds of text embedding do not hold up the ratings and clicks behind it; a
    # process of offloaded detectors is lagged whole or not at all. Off (0) by default: the lag is in lines,
    # and where lines carry much event time (a replay of a dump, the demo) lagged flags come after the hold and
    # turn quarantines into retractions; the deployments set 16 (16 x 2048 lines, seconds of a live stream).
    lagged_detectors: str = "catalog_drift,extraction,sweep_coverage"
    detector_lag: int = 0
    dedupe_capacity: int = 5_000_000
    # Evidence (detectors.fusion): the base rate at which detectors state their scores, and how far each
    # detector's evidence counts (JSON; missing: 1). Every detector counts fully by default: where two
    # detectors see the same thing, the detector itself explains it away (profile targets need most of an
    # item's extreme raters to be the odd ones; rating_shift explains echoes by the accounts it named).
    prior: float = 0.05
    detector_weights: dict[str, float] = {}
    # The tolerated false flags per million genuine events: every detector's significance levels scale with
    # it (streams.assembly.SIGNIFICANCE), 25 (five false flags in 200,000 events) at the defaults.
    false_flag_budget: float = 25.0
    # Analysts' confirmations and releases train the fusion weights (detectors.learned_fusion) once this many
    # have come in, and the flag threshold is then held to the false-flag budget.
    learn_from_analysts: bool = True
    analyst_min_labels: int = 20
    # Each detector's parameters, one variable each: SHILLGUARD_<DETECTOR>__<PARAMETER> (for instance
    # SHILLGUARD_RATING_SHIFT__THRESHOLD=12, or nested SHILLGUARD_DENSE_BLOCK__TEST__MIN_LIFT=8); values
    # are JSON where they are not plain numbers or words. Every constructor parameter of the detector is
    # a setting (README, "Detector settings"); an unknown name is refused when the pipeline is built.
    profile: dict[str, Any] = {}
    rating_shift: dict[str, Any] = {}
    dense_block: dict[str, Any] = {}
    lockstep: dict[str, Any] = {}
    coordination: dict[str, Any] = {}
    midas: dict[str, Any] = {}
    copies: dict[str, Any] = {}
    review_rings: dict[str, Any] = {}
    catalog_drift: dict[str, Any] = {}
    extraction: dict[str, Any] = {}
    sweep_coverage: dict[str, Any] = {}
    # catalog_drift's MiniLM (models/text_encoder.py): "auto" (the faster at equal output: PyTorch where the
    # CPU has native bf16, else ONNX Runtime), "onnx" or "torch"; an ONNX backend that cannot start falls
    # back to PyTorch with a WARNING. The ONNX export is made once into `model_cache_dir` (default
    # $XDG_CACHE_HOME/shillguard/onnx).
    text_encoder_backend: Literal["auto", "onnx", "torch"] = "auto"
    model_cache_dir: Path | None = None
    # Data
    movielens: Path = PROJECT_ROOT.parent / "shared" / "data" / "movielens-100k"

    # Streaming service (streams/README-streaming.md). Unset broker: the embedded Tansu broker.
    broker: str | None = None  # kafka://host:port[,host:port]
    embedded_listen: str = "127.0.0.1:9092"
    broker_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    broker_sasl_mechanism: str = "PLAIN"  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    broker_sasl_username: str | None = None
    broker_sasl_password: SecretStr | None = None
    broker_ssl_cafile: Path | None = None
    broker_ssl_certfile: Path | None = None
    broker_ssl_keyfile: Path | None = None
    app_id: str = "shillguard"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    state_dir: Path = Path(".shillguard")
    # HMAC-SHA256 key of the snapshots (streams/state.py): a snapshot that does not carry its signature is
    # never unpickled. Required against a real cluster; on a laptop (embedded broker) a random key is kept
    # in `state_key_file`, outside the state directory, created on first use.
    state_key: SecretStr | None = None
    state_key_file: Path | None = None  # default: $XDG_CONFIG_HOME/shillguard/state.key (~/.config/...)
    # Of every topic `up` creates; input topics must have exactly this many (`up` refuses others). 12: room for
    # a consumer group of up to 12 members once partitioned workers exist (streams/README-streaming.md).
    partitions: int = 12
    # Topology (streams/README-streaming.md, "Scaling"): "all", one worker detects and decides (the default, and
    # what the embedded default runs); "detect" and "actors", the split topology: one detection worker reads
    # the accepted stream and publishes decision points; actor workers, any number up to `partitions` in one
    # consumer group, hold the input partitions, decide and publish the outcomes.
    role: Literal["all", "detect", "actors"] = "all"
    # Topics
    topic_ratings: str = "events.ratings"
    topic_clicks: str = "events.clicks"
    topic_catalog: str = "events.catalog"
    topic_queries: str = "events.queries"
    topic_clean: str = "events.clean"
    topic_quarantined: str = "events.quarantined"
    topic_rejected: str = "events.rejected"
    topic_retracted: str = "events.retracted"
    topic_flags: str = "flags"
    topic_alerts: str = "alerts"
    topic_client_actions: str = "client-actions"
    topic_control: str = "control"  # decisions and signals for the worker from outside it (analysts, trainer)
    topic_accepted: str = "internal.accepted"  # split topology: input lines, actors -> detection
    topic_points: str = "internal.points"  # split topology: decision points, detection -> actors
    topic_actor_state: str = "internal.actor-state"  # split topology: each actor partition's snapshots
    # Worker
    take_within_seconds: float = 0.05  # longest wait to fill a micro-batch
    align_max_wait_seconds: float = 2.0  # input stalled this long: stop waiting for a lagging partition
    align_max_queued: int = 100_000  # or this many messages wait for it (streams.align)
    # The detection worker of the split topology waits this long for an actor partition whose input holds
    # more than was forwarded (its worker gone: the group's session timeout plus a restore, streams.detection)
    detect_align_max_wait_seconds: float = 90.0
    idle_after_seconds: float = 2.0  # wall time without input before event time is advanced
    idle_every_seconds: float = 1.0  # then an idle tick at most this often
    idle_speedup: float = 1.0  # event-time seconds per idle wall second (tests and demos speed it up)
    snapshot_interval_seconds: float = 10.0  # stretched to 30x the last snapshot's cost
    snapshot_max_events: int = 100_000  # snapshot at least this often, counted in consumed messages
    fetch_max_wait_ms: int | None = None  # None: 100 on the embedded broker (it holds fetches), Faust's 1500 else
    fast_drain: bool = True  # streams.app.patch_faust: skip a per-message task pair in Faust's consumer
    # Sinks
    db: SecretStr = SecretStr("sqlite:///.shillguard/quarantine.db")  # or postgresql://user:password@host/db
    webhook_url: SecretStr | None = None  # may carry a token
    webhook_retries: int = 5
    webhook_timeout_seconds: float = 5.0
    demo_rate: float = 3000.0  # events/s that `up --demo` produces
    console_secure_cookies: bool = False  # the console's session cookie only over HTTPS (behind a TLS proxy)


def get_settings() -> Settings:
    return Settings()
