"""Cases: flagged entities grouped by the evidence they share, for the analysts' queue.

Every flagged entity is a node; so is everything its evidence names (the block or group a detector found,
the items a ring pushed, the seller of a drifting listing, the users a target's detector sampled). A case is
a connected component (networkx) of that graph, holding only the flagged entities: the accounts of one dense
block, the items they pushed and their seller are one case. Cases are ordered by risk (the highest fused
score among their entities), then by age (the oldest flag first).

>>> flags = [{"entity": "user:u1", "kind": "user", "id": "u1", "score": 0.9, "detectors": ["dense_block"],
...           "flag": {"evidence": {"dense_block": {"block": "b-1", "items": ["i1"]}}}, "flagged_at": 2.0,
...           "status": "open", "assignee": None},
...          {"entity": "user:u2", "kind": "user", "id": "u2", "score": 0.8, "detectors": ["dense_block"],
...           "flag": {"evidence": {"dense_block": {"block": "b-1"}}}, "flagged_at": 1.0, "status": "open",
...           "assignee": None},
...          {"entity": "client:c1", "kind": "client", "id": "c1", "score": 0.95, "detectors": ["extraction"],
...           "flag": {"evidence": {"extraction": {"queries": 600}}}, "flagged_at": 3.0, "status": "open",
...           "assignee": "ana"}]
>>> [(case["entities"], case["risk"]) for case in build_cases(flags)]
[(['client:c1'], 0.95), (['user:u1', 'user:u2'], 0.9)]
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any, Iterable

import networkx as nx

GROUP_KEYS = ("block", "group", "group_id")  # evidence keys naming a group a detector found
REFERENCE_KEYS = {"item": "item", "items": "item", "items_converging": "item", "targets": "item",
                  "seller": "seller", "sample_users": "user"}  # evidence keys naming other entities
FAMILIES = {"user": "shilling or fake accounts", "item": "item under attack", "seller": "catalog poisoning",
            "client": "model extraction"}


def references(detector: str, evidence: Any) -> set[str]:
    """The nodes a detector's evidence names: groups as `group:detector:name`, entities as `kind:id`."""
    found: set[str] = set()
    if not isinstance(evidence, dict):
        return found
    for key in GROUP_KEYS:
        if evidence.get(key) is not None:
            found.add(f"group:{detector}:{evidence[key]}")
    for key, kind in REFERENCE_KEYS.items():
        value = evidence.get(key)
        values = value if isinstance(value, list) else [value] if isinstance(value, str) else []
        for entry in values:
            if isinstance(entry, dict):
                entry = entry.get(kind)
            if isinstance(entry, str) and entry:
                found.add(f"{kind}:{entry}")
    return found


def case_id(entities: Iterable[str]) -> str:
    """Stable for the same members: the hash of the sorted entities."""
    return "case-" + hashlib.sha256("\n".join(sorted(entities)).encode()).hexdigest()[:10]


def build_cases(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cases from the store's entity rows (streams.store.QuarantineStore.entities), riskiest first."""
    graph = nx.Graph()
    by_entity = {row["entity"]: row for row in entities}
    for entity, row in by_entity.items():
        graph.add_node(entity)
        for detector, evidence in ((row.get("flag") or {}).get("evidence") or {}).items():
            for node in references(detector, evidence):
                if node != entity:
                    graph.add_edge(entity, node)
    cases = []
    for component in nx.connected_components(graph):
        members = sorted(node for node in component if node in by_entity)
        if not members:
            continue
        rows = [by_entity[m] for m in members]
        statuses = Counter(row["status"] for row in rows)
        assignees = Counter(row["assignee"] for row in rows if row.get("assignee"))
        detectors = sorted({d for row in rows for d in row.get("detectors") or ()})
        cases.append({
            "id": case_id(members), "entities": members, "risk": max(float(row["score"] or 0) for row in rows),
            "flagged_at": min(row["flagged_at"] for row in rows),
            "first_ts": min((row["first_ts"] for row in rows if row.get("first_ts") is not None), default=None),
            # Open while any entity awaits a decision; else the commonest decision.
            "status": "open" if statuses.get("open") else statuses.most_common(1)[0][0],
            "statuses": dict(statuses),
            "assignee": assignees.most_common(1)[0][0] if assignees else None,
            "detectors": detectors, "families": sorted({FAMILIES.get(row["kind"], row["kind"]) for row in rows}),
            "kinds": dict(Counter(row["kind"] for row in rows)),
            "groups": sorted(node for node in component if node.startswith("group:")),
        })
    cases.sort(key=lambda case: (-case["risk"], case["flagged_at"], case["id"]))
    return cases


def filter_cases(cases: list[dict[str, Any]], detector: str | None = None, family: str | None = None,
                 status: str | None = None, assignee: str | None = None) -> list[dict[str, Any]]:
    """The queue's filters; an empty value does not filter, assignee "none" means unassigned."""
    out = []
    for case in cases:
        if detector and detector not in case["detectors"]:
            continue
        if family and family not in case["families"]:
            continue
        if status and status != "all" and case["status"] != status:
            continue
        if assignee and (case["assignee"] or "none") != assignee:
            continue
        out.append(case)
    return out


def describe(detector: str, evidence: Any) -> str:
    """A detector's evidence in words, for the case page."""
    if not isinstance(evidence, dict):
        return f"{detector}: {evidence}"
    e = evidence
    if detector in ("dense_block", "lockstep") and "users" in e:
        span = e.get("span") or [None, None]
        hours = (span[1] - span[0]) / 3600 if span[0] is not None and span[1] is not None else None
        return (f"{detector}: a block of {e.get('users')} accounts x {e.get('n_items', len(e.get('items') or []))} "
                f"items, density {e.get('density')}, {e.get('lift')}x denser than chance"
                + (f", within {hours:.1f} hours" if hours is not None else "") + f" ({e.get('block')})")
    if detector == "profile" and "anomaly_z" in e:
        targets = ", ".join(f"{t.get('direction')} {t.get('item')}" for t in e.get("targets") or [])
        return (f"profile: rating profile {e['anomaly_z']} standard deviations from the population over "
                f"{e.get('ratings')} ratings" + (f"; targets {targets}" if targets else ""))
    if detector == "profile" and "extreme_raters" in e:
        return (f"profile: {e.get('reason')}: {e['extreme_raters']} extreme raters, {e.get('attack_share', 0):.0%} "
                f"of them odd accounts (z {e.get('z')})")
    if detector == "rating_shift":
        return (f"rating_shift: a {e.get('direction')} campaign on {e.get('item')}: about {e.get('attackers')} "
                f"attackers among {e.get('raters')} raters" + (" in a wave" if e.get("wave") else ""))
    if detector == "coordination":
        return (f"coordination: {e.get('count')} {e.get('newcomer')} accounts rated {e.get('item')} "
                f"{e.get('rating')} within {float(e.get('window_s') or 0) / 3600:.0f} h, {e.get('expected')} expected")
    if detector == "extraction":
        return (f"extraction: {e.get('queries')} queries over {e.get('distinct_seeds')} distinct seeds, "
                f"{float(e.get('catalog_share') or 0):.0%} of the catalogue")
    if detector == "catalog_drift":
        converging = e.get("items_converging")
        if converging is not None:
            return (f"catalog_drift: {len(converging)} of {e.get('items_scored')} listings drift toward "
                    f"other items (p {e.get('p_value')}), seller {e.get('seller_age_days')} days old")
        return f"catalog_drift: listing of seller {e.get('seller')} imitates {e.get('imitates')}"
    if detector == "exposure":
        return f"exposure (trainer): {e.get('why') or e}"
    parts = ", ".join(f"{k} {v}" for k, v in list(e.items())[:6] if not isinstance(v, (dict, list)))
    return f"{detector}: {parts}"
