"""Click commands `train`, `recommend` and `trainer`; the lead registers them in `streams.cli`.

    shillguard train EVENTS.jsonl --out MODELDIR [--model bpr|sasrec] [--epochs N] [--retractions R.jsonl]
    shillguard recommend MODELDIR --k 10 [--users FILE] --out recs.jsonl
    shillguard trainer --model-dir MODELDIR [--model bpr|sasrec]   # follows events.clean / events.retracted
    shillguard attack extract MODELDIR --queries N --out REPORT.json   # the extraction red team
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import orjson

from trainer.alerts import FileAlertSink, KafkaAlertSink, entity_key
from trainer.checkpoint import CheckpointStore
from trainer.gates import default_gates
from trainer.incremental import Trainer, TrainConfig
from trainer.loop import Schedule, run
from trainer.promotion import Promoter
from trainer.sources import FileSource, KafkaSource, client_config, flagged_item_ids, topic_names


def _echo(message: str) -> None:
    click.echo(message, err=True)


def _open_trainer(model_dir: str, model: str | None, from_scratch: bool, device: str | None,
                  **overrides: Any) -> tuple[Trainer, dict[str, Any]]:
    """Resume from the newest checkpoint in `model_dir`, or start a new model there."""
    store = CheckpointStore(model_dir)
    if store.latest() and not from_scratch:
        trainer, meta = store.load("latest", device=device)
        if model and model != trainer.config.model:
            raise click.UsageError(f"{model_dir} holds a {trainer.config.model} model; pass --from-scratch "
                                   f"to replace it with {model}")
        if overrides.get("epochs"):
            trainer.config.epochs = overrides["epochs"]
        _echo(f"resuming from {meta['version']} ({trainer.log.n_active} events learned)")
        return trainer, meta.get("offsets", {})
    known = {k: v for k, v in overrides.items() if v is not None}
    return Trainer(TrainConfig(model=model or "bpr", device=device, **known)), {}


def _read_ids(path: str | None) -> list[str]:
    if not path:
        return []
    ids = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            record = orjson.loads(line)
            value = record.get("user_id", record.get("id", record.get("item_id")))
            if value is not None:
                ids.append(str(value))
        else:
            ids.append(line)
    return ids


def _read_flagged(path: str | None) -> set[str]:
    """Item ids from a file of ids, or from flag records (a replay's flags.jsonl: only `kind: item`)."""
    if not path:
        return set()
    flagged: set[str] = set()
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            record = orjson.loads(line)
            if "kind" in record:
                flagged.update(flagged_item_ids(record))
            elif record.get("item_id") is not None:
                flagged.add(str(record["item_id"]))
        elif line:
            flagged.add(line)
    return flagged


def _gates(utility_margin: float, max_jump: float, uniformity_margin: float, extraction_budget: int = 0):
    return default_gates(utility_margin=utility_margin, max_jump=max_jump, uniformity_margin=uniformity_margin,
                         extraction_budget=extraction_budget)


_gate_options = [
    click.option("--utility-margin", default=0.05, show_default=True,
                 help="Largest relative drop in HR@10/NDCG@10 a new version may show."),
    click.option("--max-exposure-jump", default=0.10, show_default=True,
                 help="Largest rise in an item's share of top-10 lists (and 3x its old share)."),
    click.option("--uniformity-margin", default=0.25, show_default=True,
                 help="Largest drop in item-embedding uniformity (nats)."),
    click.option("--flagged", type=click.Path(exists=True, dir_okay=False),
                 help="Item ids flagged as attack targets: one a line, or flag records (flags.jsonl)."),
    click.option("--extraction-budget", default=0, show_default=True,
                 help="Extraction gate: the red team's query budget against candidate and promoted version "
                      "(the candidate's surrogate fidelity may not rise); 0 turns the gate off (it trains two "
                      "surrogates per proposal: about a minute at 2,000 queries on one CPU core)."),
]


def gate_options(fn):
    for option in reversed(_gate_options):
        fn = option(fn)
    return fn


@click.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "model_dir", required=True, type=click.Path(file_okay=False),
              help="Model directory: versions, PROMOTED, alerts.jsonl.")
@click.option("--model", type=click.Choice(["bpr", "sasrec"]), default=None, help="Default bpr.")
@click.option("--epochs", type=int, default=None, help="Full passes over the learned events.")
@click.option("--retractions", type=click.Path(dir_okay=False), default=None,
              help="retractions.jsonl from replay: events to unlearn.")
@click.option("--from-scratch", is_flag=True, help="Ignore existing checkpoints in --out.")
@click.option("--dim", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda; default: CUDA when present.")
@click.option("--defence", type=click.Choice(["none", "gro"]), default=None,
              help="Train a defence against model extraction into the model (GRO, trainer/gro.py).")
@click.option("--gro-lambda", type=float, default=None, help="Weight of GRO's swap loss (default 0.08).")
@click.option("--gro-candidates", type=int, default=None,
              help="GRO's swap pool: the target's ranks k+1..this (default 50).")
@click.option("--gro-warmup", type=int, default=None,
              help="Epochs before GRO's swap loss joins; the student imitates already (default 0).")
@click.option("--gro-ramp", type=int, default=None,
              help="Joint epochs over which GRO's swap-loss weight rises linearly to --gro-lambda (default 0).")
@click.option("--gro-student-lr", type=float, default=None, help="GRO's student's learning rate (default --lr).")
@click.option("--gro-synthetic", type=float, default=None,
              help="SASRec: share of GRO's queries that are attacker-like synthetic sequences (default 0.5).")
@click.option("--holdout-pct", type=float, default=None,
              help="Share of users whose newest event is held back for the gates (default 10).")
@gate_options
def train(events, model_dir, model, epochs, retractions, from_scratch, dim, lr, batch_size, seed, device,
          defence, gro_lambda, gro_candidates, gro_warmup, gro_ramp, gro_student_lr, gro_synthetic, holdout_pct, utility_margin, max_exposure_jump,
          uniformity_margin, flagged, extraction_budget):
    """Learn from the ratings and clicks in EVENTS.jsonl (e.g. a replay's clean.jsonl)."""
    trainer, offsets = _open_trainer(model_dir, model, from_scratch, device, epochs=epochs, dim=dim, lr=lr,
                                     batch_size=batch_size, seed=seed, defence=defence, gro_lambda=gro_lambda,
                                     gro_candidates=gro_candidates, gro_warmup=gro_warmup,
                                     gro_ramp=gro_ramp, gro_student_lr=gro_student_lr, gro_synthetic=gro_synthetic,
                                     holdout_pct=holdout_pct)
    if from_scratch:
        offsets = {}
    store = CheckpointStore(model_dir)
    flagged_ids = _read_flagged(flagged)
    promoter = Promoter(store, _gates(utility_margin, max_exposure_jump, uniformity_margin, extraction_budget),
                        FileAlertSink(Path(model_dir) / "alerts.jsonl"), lambda: flagged_ids,
                        FileAlertSink(Path(model_dir) / "signals.jsonl"))
    source = FileSource(events, retractions, offsets)
    proposals = run(trainer, source, promoter, streaming=False, epochs=epochs, echo=_echo, offsets=offsets)
    for p in proposals:
        click.echo(orjson.dumps({"version": p["version"], "promoted": p["promoted"],
                                 "metrics": p["metrics"], "gates": [
                                     {"gate": g["gate"], "passed": g["passed"]} for g in p["gates"]]}))
    if proposals and not proposals[-1]["promoted"]:
        sys.exit(3)


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--k", default=10, show_default=True)
@click.option("--users", "users_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="User ids, one a line (or JSON lines with user_id); default every known user.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="-", show_default=True)
@click.option("--version", default="promoted", show_default=True, help="promoted, latest, or vNNNNNN.")
@click.option("--device", default=None)
def recommend(model_dir, k, users_file, out_path, version, device):
    """Top-k items per user from the served version, excluding items the user already interacted with."""
    store = CheckpointStore(model_dir)
    trainer, meta = store.load(version, device=device)
    log = trainer.log
    ids = _read_ids(users_file) or [log.users.id_of(u) for u in np.unique(log.user[log.active])]
    rows = np.array([log.users.get(u) for u in ids], dtype=np.int64)
    known = rows >= 0
    lists = np.zeros((len(ids), k), dtype=np.int64)
    if known.any():
        got = trainer.recommend(rows[known], k)
        lists[known, : got.shape[1]] = got
    popular = trainer.popular(k)  # cold start: users the model has never seen
    out = sys.stdout.buffer if out_path == "-" else open(out_path, "wb")
    try:
        for i, user_id in enumerate(ids):
            items = lists[i] if known[i] else popular
            out.write(orjson.dumps({"user_id": user_id,
                                    "items": [log.items.id_of(int(x)) for x in items if x > 0]}) + b"\n")
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    _echo(f"{len(ids)} users ({int((~known).sum())} cold) from {meta['version']}")


@click.command("trainer")
@click.option("--model-dir", required=True, type=click.Path(file_okay=False))
@click.option("--model", type=click.Choice(["bpr", "sasrec"]), default=None)
@click.option("--broker", default=None,
              help="kafka://host:port[,...]; default $SHILLGUARD_BROKER (or the embedded 127.0.0.1:9092). "
                   "SASL and TLS come from the same SHILLGUARD_BROKER_* settings as the worker's.")
@click.option("--every-events", default=50_000, show_default=True, help="Propose after this many events.")
@click.option("--every-seconds", default=600.0, show_default=True, help="... or after this long.")
@click.option("--poll-ms", default=1000, show_default=True)
@click.option("--max-records", default=5000, show_default=True, help="Largest micro-batch.")
@click.option("--idle-exit", type=float, default=None, help="Stop after this many idle seconds (tests).")
@click.option("--from-scratch", is_flag=True)
@click.option("--device", default=None)
@click.option("--defence", type=click.Choice(["none", "gro"]), default=None,
              help="For a new model: train GRO into it (a resumed model keeps its own).")
@click.option("--gro-lambda", type=float, default=None)
@gate_options
def trainer_command(model_dir, model, broker, every_events, every_seconds, poll_ms, max_records, idle_exit,
                    from_scratch, device, defence, gro_lambda, utility_margin, max_exposure_jump, uniformity_margin,
                    flagged, extraction_budget):
    """Follow events.clean and events.retracted, train in micro-batches, propose versions on a schedule."""
    import time

    from kafka import KafkaProducer

    from streams.broker import bootstrap_servers
    from streams.settings import get_settings

    settings = get_settings()  # the one Settings of every process: brokers, SASL/TLS, topic names
    if broker:
        settings.broker = broker
    trainer, offsets = _open_trainer(model_dir, model, from_scratch, device, defence=defence,
                                     gro_lambda=gro_lambda)
    topics = topic_names(settings)
    flagged_ids = _read_flagged(flagged)
    producer = KafkaProducer(**client_config(settings))
    promoter = Promoter(CheckpointStore(model_dir),
                        _gates(utility_margin, max_exposure_jump, uniformity_margin, extraction_budget),
                        KafkaAlertSink(producer, topics["alerts"]), lambda: flagged_ids,
                        KafkaAlertSink(producer, topics["control"], key=entity_key))
    source = KafkaSource(settings, topics, offsets, poll_ms=poll_ms, max_records=max_records)
    stopping = {"now": False, "idle_since": time.monotonic()}
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stopping.update(now=True))

    def stop() -> bool:
        if source.offsets != stopping.get("seen"):
            stopping["seen"], stopping["idle_since"] = dict(source.offsets), time.monotonic()
        idle = idle_exit is not None and time.monotonic() - stopping["idle_since"] > idle_exit
        return stopping["now"] or idle

    _echo(f"following {topics['clean']} and {topics['retracted']} on {','.join(bootstrap_servers(settings))} "
          f"({settings.broker_security_protocol})")
    run(trainer, source, promoter, streaming=True, flagged=flagged_ids, stop=stop, echo=_echo,
        schedule=Schedule(every_events, every_seconds), offsets=offsets)
    producer.close()


trainer = trainer_command  # the name the lead registers


@click.group()
def attack() -> None:
    """Red-team exercises against your own model."""


@attack.command("extract")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--queries", default=5000, show_default=True, help="The attacker's query budget.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="-", show_default=True)
@click.option("--version", default="promoted", show_default=True, help="promoted, latest, or vNNNNNN.")
@click.option("--k", default=10, show_default=True, help="List length the attacker asks for.")
@click.option("--seq-len", default=20, show_default=True, help="Queries per synthetic sequence.")
@click.option("--epochs", default=30, show_default=True, help="Surrogate training epochs.")
@click.option("--dim", default=64, show_default=True, help="Surrogate embedding size.")
@click.option("--curve", default="0.125,0.25,0.5,1", show_default=True,
              help="Budget fractions at which the surrogate's fidelity is measured.")
@click.option("--eval-users", default=0, show_default=True, help="Held-back users to compare on (0: all).")
@click.option("--guard/--no-guard", default=True, show_default=True,
              help="Run the queries through the extraction detectors, as replay does.")
@click.option("--perturb", type=float, default=None,
              help="Also attack with the attacker's answers perturbed at this noise scale from the flag on.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None)
def extract_command(model_dir, queries, out_path, version, k, seq_len, epochs, dim, curve, eval_users, guard,
                    perturb, seed, device):
    """Clone the model behind `recommend` as a black-box attacker would, and report how well it went."""
    from trainer.redteam import AttackConfig, extract

    store = CheckpointStore(model_dir)
    target, meta = store.load(version, device=device)
    target.model.eval()
    config = AttackConfig(queries=queries, k=k, seq_len=seq_len, epochs=epochs, dim=dim, seed=seed,
                          curve=tuple(float(x) for x in curve.split(",") if x), eval_users=eval_users)
    report = extract(target, meta["version"], config, guard=guard, perturb_scale=perturb, echo=_echo)
    data = orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    if out_path == "-":
        click.echo(data.decode())
    else:
        Path(out_path).write_bytes(data + b"\n")
    _echo(f"agreement@10 {report['agreement_at_10']:.4f}, surrogate HR@10 {report['surrogate_hr_at_10']:.4f}, "
          f"target HR@10 {report['target_hr_at_10']:.4f} after {report['queries']} queries")
