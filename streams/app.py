"""The Faust app, built from settings.

Against the embedded broker the group session, heartbeat and rebalance timeouts are short, because Tansu
only completes a join when the timeouts allow (and a killed worker's membership has to expire before its
successor gets the partitions). Topics are created by `up` (streams.broker.create_topics), never declared
by Faust; there are no Faust tables: the guard's state lives in snapshots (streams.state).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import logging
from typing import Any, AsyncIterator, cast

import faust

from streams.broker import faust_broker_url, faust_credentials, is_embedded
from streams.settings import Settings


log = logging.getLogger(__name__)

# What each patch below was written against: the sha256 of `inspect.getsource` of the upstream function in
# faust-streaming 0.15.3 and aiokafka 0.14.0, the versions pyproject.toml pins. A patch whose upstream
# source differs is not applied (and tests/test_streaming_units.py fails), so an upgrade is a decision:
# read the upstream diff, carry it into the copy, update the hash.
UPSTREAM_SOURCES = {
    # copied and changed: patch_faust's _drain_messages
    "faust.transport.consumer:Consumer._drain_messages":
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
    # replaced: patch_faust's wait_until_ebb
    "faust.transport.producer:ProducerBuffer.wait_until_ebb":
        "758dd5744044071bbc79609fa8e5bfc339818f186bc19b723de2c4c877412e00",
    # wrapped: set_fetch_max_wait sets the consumer's _fetch_max_wait_ms, which start() hands its fetcher
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer":
        "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7",
    "aiokafka.consumer.consumer:AIOKafkaConsumer.start":
        "2f1ba70443327538800d348e61042cdedd5a5e6306f40ebe1a06dddba7494c45",
    # called: streams.publisher.BatchPublisher.prepare
    "aiokafka.client:AIOKafkaClient._wait_on_metadata":
        "52b0a5ee78ef3aa0c21c82b69baa20eb6983d9e5871e9e66784198cb2f1bf256",
}


def upstream_source(path: str) -> str:
    """The source of `module:Class.function` as installed (under any patch of ours)."""
    module, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return inspect.getsource(getattr(target, "__wrapped__", target))


def upstream_changes(paths: Any = None) -> list[str]:
    """The patched or called upstream functions whose source is not the one our code was written for."""
    changed = []
    for path in paths or UPSTREAM_SOURCES:
        digest = hashlib.sha256(upstream_source(path).encode()).hexdigest()
        if digest != UPSTREAM_SOURCES[path]:
            changed.append(path)
    return changed


FAST_DRAIN_PATCHED = ("faust.transport.consumer:Consumer._drain_messages",
                      "faust.transport.producer:ProducerBuffer.wait_until_ebb")
FETCH_WAIT_PATCHED = ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer",
                      "aiokafka.consumer.consumer:AIOKafkaConsumer.start")


def create_app(settings: Settings, group_id: str) -> faust.App:
    if settings.fast_drain:
        changed = upstream_changes(FAST_DRAIN_PATCHED)
        if changed:
            log.warning("not patching Faust's consumer loop: upstream %s changed since the copy was made "
                        "(faust-streaming is pinned in pyproject.toml; see streams/app.py)", ", ".join(changed))
        else:
            patch_faust()
    embedded = is_embedded(settings)
    fetch_wait = settings.fetch_max_wait_ms or (100 if embedded else None)
    if fetch_wait:
        changed = upstream_changes(FETCH_WAIT_PATCHED)
        if changed:
            log.warning("not setting the consumer's fetch wait: upstream %s changed (see streams/app.py)",
                        ", ".join(changed))
        else:
            set_fetch_max_wait(fetch_wait)
    options: dict[str, Any] = {}
    credentials = faust_credentials(settings)
    if credentials is not None:
        options["broker_credentials"] = credentials
    app = faust.App(
        group_id,
        broker=faust_broker_url(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        autodiscover=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        # The guard acknowledges input only once a snapshot covers it, so streams are rarely "empty".
        stream_wait_empty=False,
        broker_session_timeout=10.0 if embedded else 60.0,
        broker_heartbeat_interval=1.0 if embedded else 3.0,
        broker_rebalance_timeout=10.0 if embedded else 60.0,
        broker_commit_livelock_soft_timeout=600.0,
        consumer_max_fetch_size=256 * 1024,
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        datadir=str(settings.state_dir / "faust"),
        **options,
    )
    return app


_PATCHED = False


def set_fetch_max_wait(milliseconds: int) -> None:
    """Faust creates its aiokafka consumer with fetch_max_wait_ms=1500, hard-coded. A Kafka broker answers
    a fetch as soon as data arrives, but Tansu holds it for the whole wait: 0.4 s median latency added per
    hop. Set the consumer's wait before it starts (its fetcher is built in start())."""
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    original = getattr(thread._create_worker_consumer, "__wrapped__", thread._create_worker_consumer)

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = milliseconds  # noqa: SLF001
        return consumer

    _create_worker_consumer.__wrapped__ = original  # type: ignore[attr-defined]
    thread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]


def patch_faust() -> None:
    """Faust's consumer loop wraps every message's delivery in `wait_first(callback, suspend_flow.wait())`,
    two tasks per message, about half of its per-message cost. Outside a flow suspension (a rebalance)
    the callback is awaited directly; during one the original path is taken. Same semantics otherwise."""
    global _PATCHED
    if _PATCHED:
        return
    from faust.transport import consumer as consumer_module

    original = consumer_module.Consumer._drain_messages

    async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - exercised by integration
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        suspended = self.suspend_flow.is_set
        fetching = consumer_module.CONSUMER_FETCHING
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > 100:
                            await asyncio.sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if suspended():
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            else:
                                await callback(message)
                            set_read_offset(tp, offset)
                    unset_flag(fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            unset_flag(fetching)

    _drain_messages.__wrapped__ = original  # type: ignore[attr-defined]
    consumer_module.Consumer._drain_messages = _drain_messages

    # The conductor awaits ProducerBuffer.wait_until_ebb() for every message; its `size` reads a setting
    # through Faust's slow settings registry each time. The buffer only fills with table changelog
    # sends (this app has no tables): look at the queue directly, and go the original way when full.
    from faust.transport.producer import ProducerBuffer

    original_ebb = ProducerBuffer.wait_until_ebb

    async def wait_until_ebb(self: Any) -> None:
        queue = self.__dict__.get("_sg_queue")
        if queue is None:  # the setting, read once
            queue = self.__dict__["_sg_queue"] = self.queue if self.app.conf.producer_threaded else self.pending
        if queue is not None and len(queue._queue) > self.max_messages:  # noqa: SLF001
            await original_ebb(self)

    wait_until_ebb.__wrapped__ = original_ebb  # type: ignore[attr-defined]
    ProducerBuffer.wait_until_ebb = wait_until_ebb  # type: ignore[method-assign]
    _PATCHED = True
