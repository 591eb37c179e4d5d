"""The `shillguard` command.

Subcommands live in the room that owns them and are imported only when called, so that `shillguard replay`
does not pay for importing torch or Faust.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

# command name -> "module:attribute" of a click command
COMMANDS = {
    "replay": "streams.cli:replay_command",
    "simulate": "simulator.cli:simulate",
    "evaluate": "simulator.cli:evaluate",
    "train": "trainer.cli:train",
    "recommend": "trainer.cli:recommend",
    "trainer": "trainer.cli:trainer",
    "attack": "trainer.cli:attack",
    "up": "streams.service:up",
    "broker": "streams.service:broker_command",
    "produce": "streams.produce:produce",
    "export": "streams.export:export_command",
    "quarantine": "streams.quarantine:quarantine",
    "users": "streams.quarantine:users",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use (the pattern from click's docs)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """shillguard: guards recommender systems against shilling, fake reviews, click farms, catalog
    poisoning and model extraction, and feeds only clean data to the model that retrains on it."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:  # kafka-python narrates every connection at INFO
        logging.getLogger("kafka").setLevel(logging.WARNING)
        logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)  # "task ran for 0.1 s" on busy hosts


@click.command("replay")
@click.argument("events", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for verdicts, flags, clean, retractions and summary.")
@click.option("--detectors", default=None, help="Comma-separated detector names (default: all configured).")
@click.option("--hold-seconds", type=float, default=None, help="Hold window in event-time seconds.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option("--control", "control_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="JSON lines of control records (analysts' decisions, the trainer's MODELDIR/signals.jsonl), "
                   "applied after the input as the worker applies the control topic's.")
@click.option("--final/--open-ended", default=True,
              help="final (default): EVENTS is the whole input, so at its end detectors judge what waits for "
                   "more of the stream (thin items not yet settled) on what there is. open-ended: stop where a "
                   "live worker would stand after the same events (to compare the two).")
def replay_command(events: str, out_dir: str, detectors: str | None, hold_seconds: float | None,
                   progress: bool | None, control_file: str | None, final: bool) -> None:
    """Run the full pipeline in-process over EVENTS (a JSON-lines file, or - for stdin)."""
    from rich.console import Console

    from streams.assembly import build_pipeline
    from streams.replay import replay
    from streams.settings import get_settings

    settings = get_settings()
    if detectors is not None:
        settings.detectors = detectors
    if hold_seconds is not None:
        settings.hold_seconds = hold_seconds
    if progress is None:
        progress = sys.stderr.isatty() and events != "-"
    try:
        pipeline = build_pipeline(settings)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    try:
        control = None
        if control_file:
            import orjson

            with open(control_file, "rb") as source:
                control = [orjson.loads(line) for line in source if line.strip()]
        summary = replay(events, out_dir, pipeline, batch_size=settings.batch_size, progress=progress,
                         control=control, final=final)
    finally:
        pipeline.close()
    counts = summary["counts"]
    Console(stderr=True).print(
        f"[bold]{counts['lines']}[/] lines: {counts['clean']} clean, {counts['quarantined'] + counts['retracted']} quarantined "
        f"({counts['retracted']} of them retracted after release), {counts['rejected']} rejected; "
        f"flags {summary['flags']}; {summary['events_per_second']:,.0f} events/s -> {out_dir}")


if __name__ == "__main__":
    main()
