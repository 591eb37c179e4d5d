"""Score a replay's output (verdicts.jsonl, flags.jsonl) against a simulation's truth.json.

Entity level: per attack family, recall, and precision and F1 of the flags on that family's kind of entity
(users, sellers or clients). A benign entity flagged is a false positive of the family its flag's evidence
links it to: the evidence names one of the family's target items or entities, or a group (a `block`,
`group`, `campaign`, `cluster` or `ring` value) that the flags of the family's own entities name too. It is
charged to every family it links to, and to none if it links to none: those are reported apart as
unattributed false positives (before, every benign flag was charged to every family, so that one busy
false target made every family look imprecise). The headline is over all user flags: malicious flagged
users / all flagged users. Item level: the share of attacked target items flagged. Event level: shares of
benign and malicious events held back (quarantined, or retracted after release), genuine users' events
(benign ratings and clicks) held back, false flags (benign users, sellers and clients flagged) per million
genuine events, lines that got no verdict (must be 0) and rejected lines. Benign populations the simulator
lists (trending crowds, premieres, sign-up waves, casual raters) get their flagged members counted.

>>> _prf(true_positives=3, flagged=4, relevant=6)
{'precision': 0.75, 'recall': 0.5, 'f1': 0.6}
>>> sorted(_references({"profile": {"targets": [{"item": "i-1"}]}, "lockstep": {"block": "lockstep-2"}}))
[('group', 'lockstep-2'), ('id', 'i-1'), ('id', 'lockstep-2')]
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import orjson

HELD = {"quarantined", "retracted"}
GROUP_KEYS = {"block", "group", "campaign", "cluster", "ring"}  # evidence keys whose value names a group
USER_EVENTS = {"rating", "click"}


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


def _references(evidence: Any) -> set[tuple[str, str]]:
    """What a flag's evidence names: every string in it ("id": an item, user or other id) and the values of
    group keys ("group": a block or campaign), found at any depth."""
    found: set[tuple[str, str]] = set()
    stack: list[tuple[str | None, Any]] = [(None, evidence)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((key, element) for element in value)
        elif isinstance(value, str):
            found.add(("id", value))
            if key in GROUP_KEYS:
                found.add(("group", value))
    return found


def evaluate_replay(replay_dir: str | Path, truth: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The report as a plain dict (see the module docstring); `truth` is a path or the loaded truth."""
    if not isinstance(truth, dict):
        truth = orjson.loads(Path(truth).read_bytes())
    replay = Path(replay_dir)
    if not (replay / "verdicts.jsonl").is_file():
        raise FileNotFoundError(f"no verdicts.jsonl in {replay}")
    flagged: dict[str, set[str]] = defaultdict(set)
    references: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for flag in _read_jsonl(replay / "flags.jsonl"):  # an update re-announces a flag: evidence adds up
        flagged[flag["kind"]].add(str(flag["id"]))
        references[(flag["kind"], str(flag["id"]))] |= _references(flag.get("evidence") or {})
    attacks = truth["attacks"]
    malicious: dict[str, set[str]] = defaultdict(set)
    for attack in attacks:
        for kind, ids in attack["entities"].items():
            malicious[kind].update(ids)

    events = _events(replay, truth)
    family_names = list(dict.fromkeys(attack["family"] for attack in attacks))
    # What links a benign flag to a family: its targets, its entities, the groups its own flags name.
    links: dict[str, set[tuple[str, str]]] = {}
    for family in family_names:
        own = [attack for attack in attacks if attack["family"] == family]
        names = {("id", t) for attack in own for t in attack["target_items"]}
        names |= {("id", e) for attack in own for ids in attack["entities"].values() for e in ids}
        names |= {ref for attack in own for kind, ids in attack["entities"].items() for e in ids
                  for ref in references.get((kind, e), ()) if ref[0] == "group"}
        links[family] = names
    charged: dict[str, set[str]] = defaultdict(set)
    unattributed: dict[str, int] = {}
    for kind in ("user", "seller", "client"):
        unattributed[kind] = 0
        for entity in flagged[kind] - malicious[kind]:
            linked = [family for family in family_names if references[(kind, entity)] & links[family]]
            for family in linked:
                charged[family].add(entity)
            unattributed[kind] += not linked

    families: dict[str, dict[str, Any]] = {}
    for family in family_names:
        own = [attack for attack in attacks if attack["family"] == family]
        kind = own[0]["entity_kind"]
        entities = {e for attack in own for e in attack["entities"][kind]}
        targets = {t for attack in own for t in attack["target_items"]}
        caught = len(entities & flagged[kind])
        benign_flagged = len({e for e in charged[family] if e in flagged[kind]})
        event_ids = {e for attack in own for e in attack["event_ids"]}
        held = len(event_ids & events["held_ids"])
        families[family] = {
            "kind": kind, "intents": sorted({str(attack["intent"]) for attack in own}),
            "entities": len(entities), "flagged": caught, "false_positives": benign_flagged,
            **_prf(caught, caught + benign_flagged, len(entities)),
            "targets": len(targets), "targets_flagged": len(targets & flagged["item"]),
            "events": len(event_ids), "events_quarantined": held,
            "events_quarantined_share": round(held / len(event_ids), 4) if event_ids else 0.0}

    entities = {}
    for kind in ("user", "seller", "client"):
        caught = len(flagged[kind] & malicious[kind])
        entities[kind] = {"flagged": len(flagged[kind]), "malicious": len(malicious[kind]),
                          "true_positives": caught, "false_positives": len(flagged[kind]) - caught,
                          "unattributed_false_positives": unattributed[kind],
                          **_prf(caught, len(flagged[kind]), len(malicious[kind]))}
    targets = {t for attack in attacks for t in attack["target_items"]}
    hit = len(targets & flagged["item"])
    items = {"targets": len(targets), "targets_flagged": hit,
             "targets_flagged_share": round(hit / len(targets), 4) if targets else 0.0,
             "other_items_flagged": len(flagged["item"] - targets)}
    false_flags = sum(entities[kind]["false_positives"] for kind in entities)
    events["false_flags"] = false_flags
    events["false_flags_per_million_genuine_events"] = (round(1e6 * false_flags / events["benign"], 2)
                                                        if events["benign"] else 0.0)
    del events["held_ids"]
    groups = {}
    for group in truth.get("benign_groups", []):
        row = groups.setdefault(group["kind"], {"groups": 0, "users": 0, "flagged": 0})
        members = set(group["users"])
        row["groups"] += 1
        row["users"] += len(members)
        row["flagged"] += len(members & flagged["user"])
    return {"users": entities["user"], "sellers": entities["seller"], "clients": entities["client"],
            "families": families, "items": items, "events": events, "benign_groups": groups}


def _held_types(replay: Path) -> dict[str, str]:
    """The type of each event replay held back, from the events in quarantined.jsonl and retractions.jsonl."""
    types: dict[str, str] = {}
    for name in ("quarantined.jsonl", "retractions.jsonl"):
        for record in _read_jsonl(replay / name):
            event = record.get("event")
            if isinstance(event, dict) and record.get("event_id") is not None:
                types[str(record["event_id"])] = str(event.get("type"))
    return types


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
    # Genuine users' events: benign ratings and clicks. A held event whose type the outcome files do not
    # give is counted as one (the conservative side).
    types = _held_types(replay)
    by_type = totals.get("by_type") or {}
    genuine_user_events = (sum(by_type.get(kind, {}).get("benign", 0) for kind in USER_EVENTS) if by_type
                           else totals["benign_events"])
    genuine_user_held = sum(types.get(e, "rating") in USER_EVENTS for e in held_ids - malicious_ids)
    return {
        "lines": totals["lines"], "without_verdict": max(0, totals["lines"] - covered),
        "rejected": sum(verdict == "rejected" for verdict in final.values()) + rejected_anonymous,
        "benign": totals["benign_events"], "benign_quarantined": benign_held,
        "benign_quarantined_share": (round(benign_held / totals["benign_events"], 6)
                                     if totals["benign_events"] else 0.0),
        "benign_retracted": len(retracted - malicious_ids),
        "genuine_user_events": genuine_user_events, "genuine_user_events_quarantined": genuine_user_held,
        "genuine_user_events_quarantined_share": (round(genuine_user_held / genuine_user_events, 6)
                                                  if genuine_user_events else 0.0),
        "malicious": totals["malicious_events"], "malicious_quarantined": malicious_held,
        "malicious_quarantined_share": (round(malicious_held / totals["malicious_events"], 4)
                                        if totals["malicious_events"] else 0.0),
        "malicious_retracted": len(retracted & malicious_ids),
        "held_ids": held_ids,
    }
