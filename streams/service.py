"""`shillguard up`: the whole service in one command.

With SHILLGUARD_BROKER unset: start (or adopt) the embedded Tansu broker on SHILLGUARD_EMBEDDED_LISTEN,
create the topics, restore the guard's state, and run the Faust worker (guard agent, quarantine store,
alerts) with its web server on SHILLGUARD_WEB_PORT. `--demo` also feeds built-in simulated traffic with
attacks. With SHILLGUARD_BROKER=kafka://host:port the same worker runs against that cluster.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

log = logging.getLogger(__name__)


def build_worker(settings: Any, loglevel: str = "info") -> tuple[Any, Any, Any]:
    """The Faust app and worker with every agent registered, state restored; (app, worker, guard). The
    role (`SHILLGUARD_ROLE`) picks the guard: one that detects and decides, the split topology's detection
    worker (streams.detection), or an actor worker (streams.actors)."""
    from streams import agents, sinks, web
    from streams.agents import Guard
    from streams.app import create_app
    from streams.gc_tuning import settle
    from streams.store import open_store
    from streams.topics import Topics

    topics = Topics.from_settings(settings)
    store = open_store(settings.db.get_secret_value())
    if settings.role == "actors":
        return build_actor_worker(settings, topics, store, loglevel)
    if settings.role == "detect":
        from streams.detection import DetectionGuard

        guard = DetectionGuard(settings, topics)
    else:
        guard = Guard(settings, topics)
    group = guard.recover(store.current_epoch())
    if guard.epoch != store.current_epoch():
        log.info("topic epoch %s: quarantine rows of earlier epochs (topics that are gone) are listed only "
                 "with `quarantine list --epoch all`", guard.epoch)
    if guard.decides:  # the store's epoch is the outcome topics': the detection worker publishes none
        store.set_epoch(guard.epoch)
    settle()  # fewer, later collections, and none of them over the restored state
    app = create_app(settings, group)
    agents.register(app, guard, settings, topics)
    if guard.decides:  # the detection worker publishes no outcomes: the actor workers feed the sinks
        sinks.register(app, settings, topics, guard.metrics, store)
    web.register(app, guard, store, settings)
    return app, faust_worker(app, loglevel), guard


def build_actor_worker(settings: Any, topics: Any, store: Any, loglevel: str) -> tuple[Any, Any, Any]:
    """The split topology's actor worker: one member of the group `<app_id>-actors`."""
    from detectors.stages import split_problem
    from streams import actors, sinks
    from streams.app import create_app
    from streams.assembly import build_decision

    problem = split_problem(build_decision(settings))
    if problem:
        raise click.ClickException(f"SHILLGUARD_ROLE=actors: {problem}; set SHILLGUARD_LEARN_FROM_ANALYSTS=false")
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # Faust's data directory goes in it
    worker = actors.ActorWorker(settings, topics)
    app = create_app(settings, f"{settings.app_id}-actors")
    actors.register(app, worker, settings, topics)
    sinks.register(app, settings, topics, worker.metrics, store)
    return app, faust_worker(app, loglevel), worker


def faust_worker(app: Any, loglevel: str) -> Any:
    import faust

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    if not sys.stdout.isatty():  # its start-up spinner writes cursor escapes into a log file
        worker.spinner = None
    return worker


def prepare_broker(settings: Any) -> Any:
    """Start or adopt the embedded broker when no broker is configured; create the topics; refuse input
    topics that are not partitioned as the topology needs (streams.topics.partitioning_problem)."""
    from streams.broker import (EmbeddedBroker, create_topics, is_embedded, kafka_python_config,
                                partition_counts, wait_for_broker)
    from streams.topics import Topics, partitioning_problem

    broker = None
    if is_embedded(settings):
        broker = EmbeddedBroker(settings.embedded_listen, settings.state_dir).start()
    else:
        config = kafka_python_config(settings)
        wait_for_broker(config.pop("bootstrap_servers"), **config)
    topics = Topics.from_settings(settings)
    created = create_topics(settings, topics.all)
    if created:
        log.info("created topics: %s", ", ".join(created))
    problem = partitioning_problem(partition_counts(settings, topics.inputs), settings.partitions)
    if problem:
        if broker is not None and broker.process is not None:  # started here (an adopted one serves others)
            broker.stop()
        raise click.ClickException(problem)
    return broker


@click.command("up")
@click.option("--demo", is_flag=True, help="Also feed built-in simulated traffic with attacks.")
@click.option("--demo-events", type=int, default=60_000, show_default=True, help="Size of the demo stream.")
@click.option("--loglevel", default="info", show_default=True,
              type=click.Choice(["crit", "error", "warn", "info", "debug"]))
@click.option("--keep-broker/--stop-broker", default=False,
              help="Leave the embedded broker running when the worker stops (default: stop it).")
def up(demo: bool, demo_events: int, loglevel: str, keep_broker: bool) -> None:
    """Run the guard worker (and, with SHILLGUARD_BROKER unset, the embedded broker)."""
    from streams.settings import get_settings

    settings = get_settings()
    broker = prepare_broker(settings)
    feeder = None
    try:
        app, worker, guard = build_worker(settings, loglevel)
        if demo:
            from streams.demo import DemoFeeder

            feeder = DemoFeeder(settings, guard, n_events=demo_events)
            feeder.start()
        click.echo(f"shillguard up: broker {settings.broker or settings.embedded_listen} "
                   f"(embedded: {broker is not None}), http://{settings.web_host}:{settings.web_port}/metrics",
                   err=True)
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            code = exit_.code
        else:
            code = 0
    finally:
        if feeder is not None:
            feeder.stop()
        if broker is not None and not keep_broker:
            broker.stop()
    sys.exit(code)


@click.command("broker")
@click.option("--listen", default=None, help="host:port (default: SHILLGUARD_EMBEDDED_LISTEN).")
def broker_command(listen: str | None) -> None:
    """Run only the embedded Tansu broker, with the topics, until interrupted."""
    import signal
    import time

    from streams.broker import EmbeddedBroker, create_topics
    from streams.settings import get_settings
    from streams.topics import Topics

    settings = get_settings()
    if listen:
        settings.embedded_listen = listen
    settings.broker = None
    # No pid file: a worker that adopts this broker must leave it running when it stops.
    broker = EmbeddedBroker(settings.embedded_listen).start()
    create_topics(settings, Topics.from_settings(settings).all)
    click.echo(f"embedded broker on {settings.embedded_listen}; Ctrl-C stops it", err=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
