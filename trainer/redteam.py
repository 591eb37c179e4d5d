"""The extraction red team: clone a served model through its `recommend` interface, and measure how well.

A black-box attacker in the manner of Yue et al. ("Black-Box Attacks on Sequential Recommenders via
Data-Free Model Extraction", RecSys 2021) and its few-shot successor (arXiv 2411.11677): it knows the item
ids the catalogue lists and nothing of the training data. It builds synthetic sequences autoregressively:
a random listed item, then, query after query, the sequence so far is sent to `recommend` and one of the
k answers (uniformly) is appended. Each call is one query of the budget. A surrogate SASRec is distilled
from the answers list-wise (`trainer.gro.listwise_loss`: position-weighted softmax cross-entropy of each
listed item, at every prefix of every sequence), then compared with the target on users the attacker never
saw: the target's held-back slice (each held-back user's newest event; their earlier history is the query).

The same queries go through the guard offline, as `replay` does: the configured `extraction` and
`sweep_coverage` detectors and the decision stage (`streams.assembly.build_pipeline`, the worker's settings),
over the model's own interactions as demand and light benign API clients asking with real users' recent
items. The report says whether and after how many attacker queries the client was flagged, against the
surrogate's fidelity at several budgets; and, where asked, the fidelity when the flagged client's answers
are perturbed (`trainer.serving`), from the flag on or from the start.

Report fields: `queries`, `agreement_at_10` (mean share of the surrogate's top-10 in the target's top-10,
both excluding the user's known items), `surrogate_hr_at_10`, `target_hr_at_10`, `curve` (the same at
budget fractions), `guard` (flagged, `flag_at_queries`, the flag's action), `perturbed` (optional).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import orjson
import torch

from models.sasrec import SASRec
from trainer.gro import listwise_loss
from trainer.incremental import Trainer
from trainer.metrics import mask_known
from trainer.optim import make_adam
from trainer.serving import ClientActions, Recommender, rec_query_record

ATTACKER = "redteam-extractor"


@dataclass
class AttackConfig:
    """The attack's knobs: the query budget, list length asked, queries per synthetic sequence, sequences
    generated side by side (a wave), the surrogate's size and training, the attacker's pace, the budget
    fractions of the fidelity curve, the seed."""

    queries: int = 5000
    k: int = 10
    seq_len: int = 20
    wave: int = 32
    dim: int = 64
    n_layers: int = 2
    epochs: int = 30
    lr: float = 2e-3
    batch_size: int = 64
    qps: float = 0.5
    curve: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
    seed: int = 0
    eval_users: int = 0  # 0: every held-back user


@dataclass
class Transcript:
    """What the attacker asked and got, in time order: per query, its sequence, prefix length, answer."""

    sequences: list[list[str]] = field(default_factory=list)
    asked: list[tuple[int, int]] = field(default_factory=list)  # (sequence, prefix length) per query
    answers: list[list[str] | None] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)


def synthesize(recommender: Recommender, config: AttackConfig, start_ts: float, budget: int | None = None,
               respond_at: int | None = None, action: dict[str, Any] | None = None) -> Transcript:
    """Autoregressive synthetic sequences, a wave of `wave` at a time, until `budget` queries are spent.
    With `respond_at`, the serving side applies `action` to the attacker from that query on."""
    rng = np.random.default_rng(config.seed)
    catalog = recommender.catalog()
    budget = config.queries if budget is None else budget
    out = Transcript()
    spent = 0
    while spent < budget:
        wave = min(config.wave, math.ceil((budget - spent) / config.seq_len))
        base = len(out.sequences)
        out.sequences += [[catalog[i]] for i in rng.integers(0, len(catalog), wave)]
        for step in range(config.seq_len):
            live = list(range(base, base + wave))[: budget - spent]
            if not live:
                break
            now = start_ts + spent / config.qps
            if respond_at is not None and action is not None and spent <= respond_at < spent + len(live):
                recommender.actions.apply({"client_id": ATTACKER, "action": action}, now)
            answers = recommender.recommend_many([out.sequences[s] for s in live], config.k, ATTACKER, now)
            for s, answer in zip(live, answers):
                out.asked.append((s, len(out.sequences[s])))
                out.answers.append(answer)
                out.ts.append(start_ts + len(out.ts) / config.qps)
                pick = answer[rng.integers(len(answer))] if answer else catalog[rng.integers(len(catalog))]
                if step + 1 < config.seq_len:
                    out.sequences[s].append(pick)
            spent += len(live)
    return out


# -- the surrogate ---------------------------------------------------------------------------------------
def _training_tensors(transcript: Transcript, n_queries: int, rows: dict[str, int], length: int):
    """(seq (S, L), lists (S, L, k)) of the first `n_queries` queries, left-padded to `length`."""
    by_seq: dict[int, dict[int, list[str]]] = {}
    for (s, prefix), answer in zip(transcript.asked[:n_queries], transcript.answers[:n_queries]):
        if answer:
            by_seq.setdefault(s, {})[prefix] = answer
    k = max((len(a) for a in transcript.answers[:n_queries] if a), default=1)
    seqs = np.zeros((len(by_seq), length), np.int64)
    lists = np.zeros((len(by_seq), length, k), np.int64)
    for b, (s, answered) in enumerate(sorted(by_seq.items())):
        upto = max(answered)
        items = [rows[i] for i in transcript.sequences[s][:upto]][-length:]
        offset = length - len(items)
        seqs[b, offset:] = items
        for prefix, answer in answered.items():
            at = offset + prefix - 1 - (upto - len(items))
            if 0 <= at < length:
                got = [rows[i] for i in answer if i in rows][:k]
                lists[b, at, : len(got)] = got
    return torch.from_numpy(seqs), torch.from_numpy(lists)


def _seen_mask(seq: torch.Tensor, n_items: int) -> torch.Tensor:
    """(B, L, n) True where item i is in seq[b, :t+1] (what the interface excludes from answers)."""
    b, length = seq.shape
    onehot = torch.zeros(b, length, n_items, dtype=torch.bool)
    onehot.scatter_(2, seq.unsqueeze(2), True)
    seen = onehot.cumsum(1) > 0
    seen[..., 0] = True
    return seen


def train_surrogate(transcript: Transcript, n_queries: int, n_items: int, item_ids: list[str],
                    config: AttackConfig) -> SASRec:
    """A SASRec distilled list-wise from the first `n_queries` answers."""
    torch.manual_seed(config.seed)
    rows = {item: row for row, item in enumerate(item_ids) if row > 0}
    seq, lists = _training_tensors(transcript, n_queries, rows, config.seq_len)
    model = SASRec(n_items, dim=config.dim, max_len=config.seq_len, n_layers=config.n_layers, n_heads=2,
                   dropout=0.2)
    optimizer = make_adam(model, config.lr)
    g = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(seq), generator=g)
        for start in range(0, len(seq), config.batch_size):
            pick = order[start:start + config.batch_size]
            s, target = seq[pick], lists[pick]
            logits = model.logits(model.encode(s), n_items).masked_fill(_seen_mask(s, n_items), -math.inf)
            keep = target[..., 0] > 0
            loss = listwise_loss(logits[keep], target[keep])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


# -- fidelity ---------------------------------------------------------------------------------------------
@torch.no_grad()
def _top10(score: Callable[[torch.Tensor], torch.Tensor], trainer: Trainer, users: np.ndarray,
           max_len: int, k: int = 10) -> np.ndarray:
    from trainer.batches import last_items

    train_mask, _ = trainer.split()
    history = trainer.history(train_mask)
    out = []
    for start in range(0, len(users), 512):
        batch = users[start:start + 512]
        scores = score(last_items(*history, batch, max_len)).float()
        mask_known(scores, batch, history)
        out.append(scores.topk(k, dim=1).indices.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def eval_users(trainer: Trainer, limit: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(user rows, held-back item rows) of the held-back slice, which the attacker never saw."""
    _, held = trainer.split()
    users, targets = trainer.log.user[held], trainer.log.item[held]
    if limit and len(users) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(users), limit, replace=False))
        users, targets = users[pick], targets[pick]
    return users, targets


def fidelity(trainer: Trainer, surrogate: torch.nn.Module, users: np.ndarray, targets: np.ndarray,
             target_lists: np.ndarray | None = None) -> dict[str, float]:
    """Top-10 agreement with the target and both HR@10 on the held-back users."""
    n = trainer.n_items
    if target_lists is None:
        target_lists = target_top10(trainer, users)
    cpu = torch.device("cpu")
    lists = _top10(lambda seq: surrogate.to(cpu).score_sequences(seq, n), trainer, users, surrogate.max_len)
    agreement = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(lists, target_lists)]) if len(users) else 0.0
    return {"agreement_at_10": round(float(agreement), 4),
            "surrogate_hr_at_10": round(float(np.mean([t in row for t, row in zip(targets, lists)])), 4),
            "target_hr_at_10": round(float(np.mean([t in row for t, row in zip(targets, target_lists)])), 4)}


def target_top10(trainer: Trainer, users: np.ndarray, model: torch.nn.Module | None = None) -> np.ndarray:
    model = (model or trainer.model).eval()
    if model.kind == "sasrec":
        return _top10(lambda seq: model.score_sequences(seq.to(trainer.device), trainer.n_items), trainer,
                      users, model.max_len)
    from trainer.metrics import topk

    return topk(model, users, trainer.history(trainer.split()[0]), trainer.n_items, trainer.device, 10)


# -- the guard ---------------------------------------------------------------------------------------------
SESSIONS = "client-sessions"


def guard_stream(trainer: Trainer, transcript: Transcript, seed: int = 0, benign_clients: int = 60,
                 benign_per_attack_query: float = 1.0, follow_share: float = 0.4) -> list[tuple[float, bytes, bool]]:
    """(ts, JSON line, is the attacker's query) in time order: the model's own interactions as demand,
    light benign clients asking with real users' latest 1-5 items (k 10/20/50, Zipf-like activity) over
    the two days before and during the attack, a heavy benign app (`SESSIONS`, as many queries as the
    attacker) whose users' sessions take one of the answers they were just served as their next item at
    `follow_share` of the steps and their own next item otherwise, and the attacker's queries. Every query
    is logged as the serving layer logs it (`trainer.serving.rec_query_record`: the sequence as seeds,
    newest first, and the answer); the benign answers come from the target itself."""
    rng = np.random.default_rng(seed + 7)
    log = trainer.log
    active = np.flatnonzero(log.active)
    items = log.items
    recommender = Recommender(trainer.model, ["<pad>"] + [items.id_of(r) for r in range(1, trainer.n_items)],
                              trainer.device)
    lines: list[tuple[float, bytes, bool]] = []
    for n, row in enumerate(active.tolist()):
        lines.append((float(log.ts[row]), orjson.dumps(
            {"type": "rating", "event_id": f"rt-{n}", "ts": float(log.ts[row]), "user_id": log.users.id_of(int(log.user[row])),
             "item_id": items.id_of(int(log.item[row])), "rating": 4}), False))
    t0 = transcript.ts[0] if transcript.ts else float(log.ts[active].max()) + 86_400
    t1 = transcript.ts[-1] if transcript.ts else t0
    indptr, seq_items, _ = log.sequences(log.active)
    users = np.flatnonzero(np.diff(indptr) > 0)

    def history(user: int) -> list[str]:
        return [items.id_of(int(i)) for i in seq_items[indptr[user]:indptr[user + 1]]]

    n_benign = int(benign_per_attack_query * len(transcript.ts)) + 20 * benign_clients
    weights = 1.0 / np.arange(1, benign_clients + 1) ** 1.1
    clients = rng.choice(benign_clients, n_benign, p=weights / weights.sum())
    times = np.sort(rng.uniform(t0 - 2 * 86_400, t1, n_benign))
    ks = rng.choice([10, 20, 50], n_benign, p=[0.5, 0.3, 0.2])
    sequences = [history(users[rng.integers(len(users))])[-int(rng.integers(1, 6)):] for _ in range(n_benign)]
    answers: list[list[str] | None] = [None] * n_benign
    for k in np.unique(ks).tolist():
        picked = np.flatnonzero(ks == k)
        for at in range(0, len(picked), 512):
            rows = picked[at:at + 512]
            for row, answer in zip(rows, recommender.recommend_many([sequences[r] for r in rows], int(k))):
                answers[row] = answer
    for n, (client, ts) in enumerate(zip(clients.tolist(), times.tolist())):
        lines.append((ts, orjson.dumps(rec_query_record(f"bq-{n}", ts, f"client-{client:03d}", sequences[n],
                                                        int(ks[n]), answers[n])), False))
    lines += _session_queries(recommender, history, users, len(transcript.ts), t0, t1, follow_share, rng)
    for n, ((s, prefix), ts) in enumerate(zip(transcript.asked, transcript.ts)):
        lines.append((ts, orjson.dumps(rec_query_record(f"aq-{n}", ts, ATTACKER, transcript.sequences[s][:prefix],
                                                        10, transcript.answers[n])), True))
    lines.sort(key=lambda line: line[0])
    return lines


def _session_queries(recommender: Recommender, history: Callable[[int], list[str]], users: np.ndarray,
                     budget: int, t0: float, t1: float, follow_share: float, rng: np.random.Generator,
                     steps: int = 10, wave: int = 32) -> list[tuple[float, bytes, bool]]:
    """A heavy honest app: sessions of real users, each step a query with the session so far (k 10), the
    next item one of the answers at `follow_share` of the steps, the user's own next item otherwise."""
    out: list[tuple[float, bytes, bool]] = []
    times = np.sort(rng.uniform(t0, t1, budget)).tolist()
    while len(out) < budget:
        own = [history(users[rng.integers(len(users))]) for _ in range(wave)]
        cut = [int(rng.integers(1, max(len(h) - steps, 2))) for h in own]
        sessions = [h[:c][-5:] for h, c in zip(own, cut)]
        for step in range(steps):
            live = list(range(min(wave, budget - len(out))))
            if not live:
                break
            answers = recommender.recommend_many([sessions[b] for b in live], 10)
            for b, answer in zip(live, answers):
                ts = times[len(out)]
                out.append((ts, orjson.dumps(rec_query_record(f"sq-{len(out)}", ts, SESSIONS, sessions[b], 10,
                                                              answer)), False))
                follows = answer and rng.random() < follow_share
                nxt = cut[b] + step
                pick = (answer[rng.integers(len(answer))] if follows else
                        own[b][nxt] if nxt < len(own[b]) else own[b][rng.integers(len(own[b]))])
                sessions[b] = (sessions[b] + [pick])[-50:]
    return out


def run_guard(lines: list[tuple[float, bytes, bool]], detectors: str = "extraction,sweep_coverage",
              batch_size: int | None = None) -> dict[str, Any]:
    """Feed the stream through the configured detectors and decision stage, as `replay` does: the first
    flag on the attacking client, how many of its queries the guard had seen by then, and every other
    client flagged (honest ones, here)."""
    from streams.assembly import build_pipeline
    from streams.settings import get_settings

    settings = get_settings().model_copy()
    settings.detectors = detectors
    settings.offload_detectors = ""
    pipeline = build_pipeline(settings)
    batch_size = batch_size or settings.batch_size
    seen_attack = 0
    started = time.perf_counter()
    result: dict[str, Any] = {"flagged": False, "flag_at_queries": None}
    others: set[str] = set()
    try:
        steps = (pipeline.process([line for _, line, _ in lines[at:at + batch_size]])
                 for at in range(0, len(lines), batch_size))
        for at, step in enumerate([*steps, pipeline.flush()]):
            if at * batch_size < len(lines):
                seen_attack += sum(1 for *_, attack in lines[at * batch_size:(at + 1) * batch_size] if attack)
            for record in (flag.as_dict() for flag in step.flags):
                if record["kind"] != "client":
                    continue
                if record["id"] != ATTACKER:
                    others.add(record["id"])
                elif not result["flagged"]:
                    result = _flagged(record, seen_attack)
    finally:
        pipeline.close()
    result.update(attack_queries_seen=seen_attack, benign_clients_flagged=sorted(others),
                  seconds=round(time.perf_counter() - started, 1))
    return result


def _flagged(record: dict[str, Any], seen_attack: int) -> dict[str, Any]:
    evidence = (record.get("evidence") or {}).get("extraction") or {}
    return {"flagged": True, "flag_at_queries": seen_attack, "detector_signal_at_queries": evidence.get("queries"),
            "score": record["score"], "detectors": record["detectors"], "action": _action(record),
            "chain": evidence.get("chain")}


def _action(flag: dict[str, Any]) -> dict[str, Any] | None:
    for _, evidence in sorted((flag.get("evidence") or {}).items()):
        if isinstance(evidence, dict) and evidence.get("action"):
            return evidence["action"]
    return None


# -- the whole exercise -------------------------------------------------------------------------------------
def extract(trainer: Trainer, version: str | None, config: AttackConfig, guard: bool = True,
            perturb_scale: float | None = None, echo: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The red team's report against the model in `trainer` (its served weights)."""
    started = time.perf_counter()
    item_ids = ["<pad>"] + [trainer.log.items.id_of(r) for r in range(1, trainer.n_items)]
    start_ts = float(trainer.log.ts[trainer.log.active].max()) + 86_400 if trainer.log.n else 0.0
    recommender = Recommender(trainer.model, item_ids, trainer.device, version=version)
    transcript = synthesize(recommender, config, start_ts)
    echo(f"{len(transcript.asked)} queries in {len(transcript.sequences)} synthetic sequences")
    users, targets = eval_users(trainer, config.eval_users, config.seed)
    target_lists = target_top10(trainer, users)
    curve = []
    for share in sorted(set(config.curve) | {1.0}):
        budget = max(1, int(round(share * len(transcript.asked))))
        surrogate = train_surrogate(transcript, budget, trainer.n_items, item_ids, config)
        point = {"queries": budget, **fidelity(trainer, surrogate, users, targets, target_lists)}
        echo(f"budget {budget}: {point}")
        curve.append(point)
    final = curve[-1]
    report: dict[str, Any] = {
        "version": version, "model": trainer.config.model, "defence": trainer.config.defence,
        "queries": len(transcript.asked), "sequences": len(transcript.sequences),
        "agreement_at_10": final["agreement_at_10"], "surrogate_hr_at_10": final["surrogate_hr_at_10"],
        "target_hr_at_10": final["target_hr_at_10"], "eval_users": int(len(users)),
        "training_data_used": 0.0, "curve": curve, "attack": asdict(config)}
    if guard:
        result = run_guard(guard_stream(trainer, transcript, config.seed))
        if result["flagged"]:
            # The surrogate the attacker has when the flag lands (and when the detector first signalled,
            # which the decision stage acts on at its next decision point), against the final one.
            for key in ("detector_signal_at_queries", "flag_at_queries"):
                at = result.get(key)
                if at:
                    surrogate = train_surrogate(transcript, at, trainer.n_items, item_ids, config)
                    point = fidelity(trainer, surrogate, users, targets, target_lists)
                    result[key.replace("_at_queries", "_fidelity")] = point
                    result[key.replace("_at_queries", "_share_of_final_agreement")] = round(
                        point["agreement_at_10"] / max(final["agreement_at_10"], 1e-9), 3)
            half = next((p["queries"] for p in curve if p["agreement_at_10"] >= final["agreement_at_10"] / 2), None)
            result["half_fidelity_at_queries"] = half  # the first curve budget at half the final agreement
            result["before_half_fidelity"] = result.get("flag_share_of_final_agreement", 0.0) <= 0.5
        report["guard"] = result
        echo(f"guard: {result}")
    if perturb_scale is not None:
        report["perturbed"] = perturbed(trainer, config, item_ids, version, start_ts, users, targets,
                                        target_lists, perturb_scale, report.get("guard"))
        echo(f"perturbed: {report['perturbed']}")
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def perturbed(trainer: Trainer, config: AttackConfig, item_ids: list[str], version: str | None,
              start_ts: float, users: np.ndarray, targets: np.ndarray, target_lists: np.ndarray,
              scale: float, guard: dict[str, Any] | None) -> dict[str, Any]:
    """The attack again with the attacker's answers perturbed (`noise` at `scale`) from the guard's flag on
    (from the first query when it never flagged), and what the noise costs an honest caller's HR@10."""
    action = {"type": "noise", "noise_scale": scale, "max_qps": None, "max_k": None,
              "ttl_seconds": 10 ** 9}
    at = guard["flag_at_queries"] if guard and guard.get("flagged") else 0
    recommender = Recommender(trainer.model, item_ids, trainer.device, ClientActions(), version)
    transcript = synthesize(recommender, config, start_ts, respond_at=at, action=action)
    surrogate = train_surrogate(transcript, len(transcript.asked), trainer.n_items, item_ids, config)
    point = fidelity(trainer, surrogate, users, targets, target_lists)
    # The utility budget, measured: HR@10 of the held-back users' lists as a noised client would get them.
    served = np.array([perturb_list_rows(row, scale, f"{u}") for u, row in zip(users, _deeper(trainer, users))])
    noisy_hr = float(np.mean([t in row for t, row in zip(targets, served)])) if len(users) else 0.0
    return {"noise_scale": scale, "from_query": at, **point, "served_hr_at_10_with_noise": round(noisy_hr, 4)}


def surrogate_fidelity(trainer: Trainer, model: torch.nn.Module, budget: int, seed: int = 0,
                       epochs: int = 20, eval_users_limit: int = 500) -> float:
    """Top-10 agreement of a surrogate extracted with `budget` queries from `model` (a version's network,
    scored against `trainer`'s held-back users): what the extraction gate compares. Same seed, same
    synthetic start items and same surrogate training for every version, so versions differ only by how
    their answers teach."""
    config = AttackConfig(queries=budget, epochs=epochs, seed=seed, dim=32, n_layers=1)
    item_ids = ["<pad>"] + [trainer.log.items.id_of(r) for r in range(1, trainer.n_items)]
    transcript = synthesize(Recommender(model, item_ids, trainer.device), config, 0.0)
    surrogate = train_surrogate(transcript, len(transcript.asked), trainer.n_items, item_ids, config)
    users, targets = eval_users(trainer, eval_users_limit, seed)
    return fidelity(trainer, surrogate, users, targets, target_top10(trainer, users, model))["agreement_at_10"]


def _deeper(trainer: Trainer, users: np.ndarray) -> np.ndarray:
    model = trainer.model.eval()
    if model.kind == "sasrec":
        return _top10(lambda seq: model.score_sequences(seq.to(trainer.device), trainer.n_items), trainer,
                      users, model.max_len, k=30)
    from trainer.metrics import topk

    return topk(model, users, trainer.history(trainer.split()[0]), trainer.n_items, trainer.device, 30)


def perturb_list_rows(row: np.ndarray, scale: float, key: str) -> list[int]:
    from trainer.serving import perturb_list

    return perturb_list(row.tolist(), 10, scale, key)
