"""`shillguard simulate` and `shillguard evaluate`: plain click commands, registered by streams/cli.py."""

from __future__ import annotations

import time
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table

from simulator.base import Base
from simulator.build import BENIGN_MODES, FAMILIES, TIMESTAMP_MODES, Shape, build, plan_attacks
from simulator.evaluate import evaluate_replay
from simulator.movielens import MovieLensNotFound, default_movielens_dir, load_movielens
from simulator.ranges import HALVES, describe
from simulator.synthetic import synthetic_base
from simulator.world import SPREAD_SECONDS


def load_base(data: str, seed: int = 0) -> Base:
    """"synthetic", "movielens" (the configured directory) or a MovieLens-format directory."""
    if data == "synthetic":
        return synthetic_base(seed=seed)
    return load_movielens(default_movielens_dir() if data == "movielens" else data)


def _show_ranges(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(describe())
        ctx.exit()


@click.command()
@click.option("--show-ranges", is_flag=True, is_eager=True, expose_value=False, callback=_show_ranges,
              help="Print the ranges random parameters are drawn from (and their tune/report halves), and exit.")
@click.option("--data", default="movielens", show_default=True,
              help="'synthetic', 'movielens' ($SHILLGUARD_MOVIELENS or ../shared/data/movielens-100k) "
                   "or a MovieLens-format directory.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for events.jsonl and truth.json.")
@click.option("--attacks", default=None,
              help=f"Comma-separated families, each optionally :push or :nuke, 'all', 'classic' (the first nine) "
                   f"or 'none' (benign only). Default: all, or none with --contamination. "
                   f"Families: {', '.join(FAMILIES)}.")
@click.option("--attack-size", default=0.05, show_default=True,
              help="Fake accounts per attack: a share of real users (< 1) or a count (covisit, sleeper and "
                   "slow_nuke draw theirs from simulator/ranges.py).")
@click.option("--filler-size", default=0.05, show_default=True,
              help="Filler items per shilling profile: a share of items (< 1) or a count.")
@click.option("--targets", default=1, show_default=True, help="Target items per attack.")
@click.option("--target-pool", type=click.Choice(["auto", "unpopular", "popular", "any"]), default="auto",
              show_default=True, help="Where targets come from; auto: unpopular to push, popular to nuke.")
@click.option("--spread", type=click.Choice(sorted(SPREAD_SECONDS)), default="burst", show_default=True,
              help="Attack window: burst (an hour), hours (8 h) or days (10 days).")
@click.option("--seed", default=0, show_default=True)
@click.option("--max-events", type=int, default=None, help="Cap on the number of events.")
@click.option("--benign", type=click.Choice(BENIGN_MODES), default="full", show_default=True,
              help="full: with trending crowds, premieres, sign-up waves and casual raters; base: the benign "
                   "traffic as it was before them.")
@click.option("--ranges", "ranges", type=click.Choice(HALVES), default="full", show_default=True,
              help="The half of simulator/ranges.py that random parameters are drawn from (tune on one, "
                   "report on the other).")
@click.option("--contamination", type=click.FloatRange(0.0, 0.5), default=0.0, show_default=True,
              help="Share of all accounts that are spammers of mixed families (collusive rings, shilling, "
                   "camouflaged copies, co-visitation groups).")
@click.option("--timestamps", type=click.Choice(TIMESTAMP_MODES), default="real", show_default=True,
              help="none: every event at one timestamp, in random order; random: each at a time drawn at "
                   "random over the span (either way time carries no signal).")
@click.option("--sparse", is_flag=True,
              help="A review site's shape: each real user keeps 3-30 of their ratings; ratings only.")
@click.option("--generous", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="A generous site (most ratings 5s, as on many review sites): each real 2-4 moves up a star "
                   "with its rater's probability, drawn per rater around this mean (a 2 down to 1 in half of "
                   "those); item opinions follow.")
def simulate(data: str, out_dir: Path, attacks: str | None, attack_size: float, filler_size: float,
             targets: int, target_pool: str, spread: str, seed: int, max_events: int | None, benign: str,
             ranges: str, contamination: float, timestamps: str, sparse: bool, generous: float) -> None:
    """Write a benign stream with labelled attacks planted in it: OUT/events.jsonl and OUT/truth.json."""
    console = Console()
    started = time.perf_counter()
    if attacks is None:
        attacks = "none" if contamination > 0 else "all"
    shape = Shape(benign=benign, ranges=ranges, contamination=contamination, timestamps=timestamps,
                  sparse=sparse, generous=generous)
    try:
        base = load_base(data, seed)
        specs = plan_attacks(attacks, size=attack_size, filler=filler_size, targets=targets,
                             target_pool=target_pool, spread=spread)
        shape.check(specs)
    except (MovieLensNotFound, ValueError) as error:
        raise click.UsageError(str(error)) from error
    simulation = build(base, specs, seed=seed, max_events=max_events, shape=shape)
    events_path, truth_path = simulation.write(out_dir)
    totals = simulation.truth["totals"]
    table = Table(title=f"{totals['events']:,} events from {base.name} (seed {seed}) "
                        f"in {time.perf_counter() - started:.1f} s")
    for column in ("attack", "family", "intent", "entities", "targets", "events"):
        table.add_column(column, justify="right" if column in ("entities", "targets", "events") else "left")
    for attack in simulation.truth["attacks"]:
        table.add_row(attack["id"], attack["family"], str(attack["intent"] or "-"),
                      f"{len(attack['entities'][attack['entity_kind']])} {attack['entity_kind']}s",
                      str(len(attack["target_items"])), f"{attack['n_events']:,}")
    users = totals["entities"]["user"]
    table.add_row("", "benign", "", f"{users['total'] - users['malicious']} users", "",
                  f"{totals['benign_events']:,}")
    console.print(table)
    groups: dict[str, list[int]] = {}
    for group in simulation.truth["benign_groups"]:
        groups.setdefault(group["kind"], []).append(len(group["users"]))
    if groups:
        console.print("benign populations: " + "; ".join(
            f"{kind} {len(sizes)} ({sum(sizes):,} users)" for kind, sizes in groups.items()))
    if users["total"]:
        console.print(f"spammers: {users['malicious']:,} of {users['total']:,} accounts "
                      f"({users['malicious'] / users['total']:.1%})")
    console.print(f"wrote {events_path} and {truth_path}")


@click.command()
@click.argument("replay_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--truth", "truth_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the report as JSON here.")
def evaluate(replay_dir: Path, truth_path: Path, json_out: Path | None) -> dict:
    """Score REPLAY_DIR (verdicts.jsonl, flags.jsonl) against a simulation's truth.json."""
    report = evaluate_replay(replay_dir, truth_path)
    console = Console()
    users = report["users"]
    console.print(f"[bold]users[/]: precision {users['precision']:.3f}  recall {users['recall']:.3f}  "
                  f"F1 {users['f1']:.3f}  ({users['true_positives']} of {users['malicious']} malicious "
                  f"flagged, {users['false_positives']} benign flagged, {users['unattributed_false_positives']} "
                  f"of them linked to no attack by their evidence)")
    table = Table(title="per attack family (a benign flag counts against the families its evidence names)")
    for column in ("family", "kind", "precision", "recall", "F1", "benign flagged", "targets flagged",
                   "events held"):
        table.add_column(column, justify="left" if column in ("family", "kind") else "right")
    for family, row in report["families"].items():
        table.add_row(family, row["kind"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      str(row["false_positives"]), f"{row['targets_flagged']}/{row['targets']}",
                      f"{row['events_quarantined_share']:.1%}")
    console.print(table)
    unattributed = {kind: report[name]["unattributed_false_positives"]
                    for kind, name in (("users", "users"), ("sellers", "sellers"), ("clients", "clients"))}
    console.print("benign flagged and linked to no attack: " + ", ".join(
        f"{count} {kind}" for kind, count in unattributed.items()))
    items, events = report["items"], report["events"]
    console.print(f"target items flagged: {items['targets_flagged']}/{items['targets']} "
                  f"({items['targets_flagged_share']:.1%}); other items flagged: {items['other_items_flagged']}")
    console.print(f"benign events quarantined: {events['benign_quarantined']:,}/{events['benign']:,} "
                  f"({events['benign_quarantined_share']:.2%}); malicious events quarantined: "
                  f"{events['malicious_quarantined']:,}/{events['malicious']:,} "
                  f"({events['malicious_quarantined_share']:.1%})")
    console.print(f"genuine users' events quarantined: {events['genuine_user_events_quarantined']:,}/"
                  f"{events['genuine_user_events']:,} ({events['genuine_user_events_quarantined_share']:.2%}); "
                  f"false flags: {events['false_flags']} "
                  f"({events['false_flags_per_million_genuine_events']:,.1f} per million genuine events)")
    for kind, row in report["benign_groups"].items():
        console.print(f"benign {kind}: {row['flagged']} of {row['users']:,} users flagged ({row['groups']} groups)")
    style = "red" if events["without_verdict"] else "green"
    console.print(f"[{style}]lines without a verdict: {events['without_verdict']}[/]; "
                  f"rejected: {events['rejected']}")
    if json_out:
        json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report
