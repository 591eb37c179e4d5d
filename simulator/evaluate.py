"""Score a replay's output (verdicts.jsonl, flags.jsonl) against a simulation's truth.json.

Entity level: per attack family, precision, recall and F1 of the flags on that family's kind of entity
(users, sellers or clients), where a family's precision counts its own caught entities against every benign
entity of that kind that was flagged (flags on other attacks' entities are neither). The headline is over
all user flags: malicious flagged users / all flagged users. Item level: the share of attacked target items
flagged. Event level: shares of benign and malicious events held back (quarantined, or retracted after
release), lines that got no verdict (must be 0) and rejected lines.

>>> _prf(true_positives=3, flagged=4, relevant=6)
{'precision': 0.75, 'recall': 0.5, 'f1': 0.6}
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import orjson

HELD = {"quarantined", "retracted"}


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with path.open("rb") as source:
        for line in source:
            if line.strip():
                yield orjson.loads(line)


def _prf(true_positives: int, flagged: int, relevant: int) -> dict[str, float]:
    # No flags means precision 0, as scikit-learn's zero_division default: nothing was found.
    precision = true_positives / flagged if flagged else 0.0
    recall = true_positives / relevant if relevant else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def evaluate_replay(replay_dir: str | Path, truth: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The report as a plain dict (see the module docstring); `truth` is a path or the loaded truth."""
    if not isinstance(truth, dict):
        truth = orjson.loads(Path(truth).read_bytes())
    replay = Path(replay_dir)
    if not (replay / "verdicts.jsonl").is_file():
        raise FileNotFoundError(f"no verdicts.jsonl in {replay}")
    flagged: dict[str, set[str]] = defaultdict(set)
    for flag in _read_jsonl(replay / "flags.jsonl"):
        flagged[flag["kind"]].add(str(flag["id"]))
    attacks = truth["attacks"]
    malicious: dict[str, set[str]] = defaultdict(set)
    for attack in attacks:
        for kind, ids in attack["entities"].items():
            malicious[kind].update(ids)

    events = _events(replay, truth)
    families: dict[str, dict[str, Any]] = {}
    for family in dict.fromkeys(attack["family"] for attack in attacks):
        own = [attack for attack in attacks if attack["family"] == family]
        kind = own[0]["entity_kind"]
        entities = {e for attack in own for e in attack["entities"][kind]}
        targets = {t for attack in own for t in attack["target_items"]}
        caught = len(entities & flagged[kind])
        benign_flagged = len(flagged[kind] - malicious[kind])
        event_ids = {e for attack in own for e in attack["event_ids"]}
        held = len(event_ids & events["held_ids"])
        families[family] = {
            "kind": kind, "intents": sorted({str(attack["intent"]) for attack in own}),
            "entities": len(entities), "flagged": caught,
            **_prf(caught, caught + benign_flagged, len(entities)),
            "targets": len(targets), "targets_flagged": len(targets & flagged["item"]),
            "events": len(event_ids), "events_quarantined": held,
            "events_quarantined_share": round(held / len(event_ids), 4) if event_ids else 0.0}

    entities = {}
    for kind in ("user", "seller", "client"):
        caught = len(flagged[kind] & malicious[kind])
        entities[kind] = {"flagged": len(flagged[kind]), "malicious": len(malicious[kind]),
                          "true_positives": caught, "false_positives": len(flagged[kind]) - caught,
                          **_prf(caught, len(flagged[kind]), len(malicious[kind]))}
    targets = {t for attack in attacks for t in attack["target_items"]}
    hit = len(targets & flagged["item"])
    items = {"targets": len(targets), "targets_flagged": hit,
             "targets_flagged_share": round(hit / len(targets), 4) if targets else 0.0,
             "other_items_flagged": len(flagged["item"] - targets)}
    del events["held_ids"]
    return {"users": entities["user"], "sellers": entities["seller"], "clients": entities["client"],
            "families": families, "items": items, "events": events}


def _events(replay: Path, truth: dict[str, Any]) -> dict[str, Any]:
    malicious_ids = {e for attack in truth["attacks"] for e in attack["event_ids"]}
    final: dict[str, str] = {}
    lines: set[int] = set()
    anonymous = rejected_anonymous = 0
    for record in _read_jsonl(replay / "verdicts.jsonl"):
        verdict, event_id = record.get("verdict"), record.get("event_id")
        if isinstance(record.get("line"), int):
            lines.add(record["line"])
        if event_id is None:
            anonymous += 1
            rejected_anonymous += verdict == "rejected"
            continue
        # A retraction outranks the earlier release; otherwise the last word stands.
        if final.get(str(event_id)) != "retracted":
            final[str(event_id)] = verdict
    totals = truth["totals"]
    covered = len(lines) if lines else len(final) + anonymous
    held_ids = {e for e, verdict in final.items() if verdict in HELD}
    benign_held = len(held_ids - malicious_ids)
    malicious_held = len(held_ids & malicious_ids)
    retracted = {e for e, verdict in final.items() if verdict == "retracted"}
    return {
        "lines": totals["lines"], "without_verdict": max(0, totals["lines"] - covered),
        "rejected": sum(verdict == "rejected" for verdict in final.values()) + rejected_anonymous,
        "benign": totals["benign_events"], "benign_quarantined": benign_held,
        "benign_quarantined_share": (round(benign_held / totals["benign_events"], 6)
                                     if totals["benign_events"] else 0.0),
        "benign_retracted": len(retracted - malicious_ids),
        "malicious": totals["malicious_events"], "malicious_quarantined": malicious_held,
        "malicious_quarantined_share": (round(malicious_held / totals["malicious_events"], 4)
                                        if totals["malicious_events"] else 0.0),
        "malicious_retracted": len(retracted & malicious_ids),
        "held_ids": held_ids,
    }
