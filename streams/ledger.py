"""Final verdicts of a run, line by line: what `replay` writes as it decides and `export` rebuilds from the
output topics, in one bookkeeping so that the two write the same files.

The transitions: an accepted line is decided clean or quarantined; a retraction turns a clean event
quarantined; an analyst's release turns it clean again (from quarantined: released; from retracted:
restored). A flag released by an analyst leaves the flags.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from streams.outcomes import dumps


class Ledger:
    def __init__(self) -> None:
        self.event_ids: dict[int, str | None] = {}  # line -> its event id (None where it has none)
        self.verdicts: dict[int, str] = {}  # line -> clean, quarantined or rejected; undecided lines absent
        self.reasons: dict[int, list[str]] = {}
        self.line_of: dict[str, int] = {}  # event id -> the accepted line that carries it
        self.rejected_lines: set[int] = set()
        self.clean: dict[str, tuple[float, bytes]] = {}  # event id -> (ts, payload) of the clean events standing
        self.flags: dict[tuple[str, str], dict] = {}
        self.rejected_by_reason: dict[str, int] = {}
        # Transitions as they happened; the summaries net them out (`replay_counts`, `export_counts`).
        self.tally: Counter[str] = Counter()

    def line(self, line: int, event_id: str | None) -> None:
        self.event_ids[line] = event_id

    def reject(self, line: int | None, reasons: list[str]) -> None:
        """A dead letter; `line` None where its input line is unknown (export: no source header)."""
        self.tally["rejected"] += 1
        code = (reasons or ["?"])[0].split(":", 1)[0]
        self.rejected_by_reason[code] = self.rejected_by_reason.get(code, 0) + 1
        if line is not None:
            self.rejected_lines.add(line)
            self.verdicts[line] = "rejected"
            self.reasons[line] = reasons

    def decide(self, event_id: str, verdict: str, reasons: list[str], ts: float = 0.0,
               payload: bytes = b"") -> None:
        """The decision stage's verdict, clean (`ts` and `payload` for clean.jsonl) or quarantined."""
        self.tally[verdict] += 1
        line = self.line_of.get(event_id)
        if verdict == "clean":
            self.clean[event_id] = (ts, payload)
            if line is not None:
                self.verdicts[line] = "clean"
        elif line is not None:
            self.verdicts[line] = "quarantined"
            self.reasons[line] = reasons

    def retract(self, event_id: str, reasons: list[str]) -> None:
        """A clean event condemned later: quarantined after all."""
        self.tally["retracted"] += 1
        self.clean.pop(event_id, None)
        line = self.line_of.get(event_id)
        if line is not None:
            self.verdicts[line] = "quarantined"
            self.reasons[line] = [f"retracted: {reason}" for reason in reasons]

    def release(self, event_id: str, reasons: list[str], ts: float, payload: bytes, restored: bool) -> None:
        """An analyst gave the event back: clean, from quarantined or (`restored`) from retracted."""
        self.tally["released"] += 1
        self.tally["restored"] += restored
        self.clean[event_id] = (ts, payload)
        line = self.line_of.get(event_id)
        if line is not None:
            self.verdicts[line] = "clean"
            self.reasons[line] = reasons

    def flag(self, key: tuple[str, str], record: dict | None) -> None:
        """A flag's latest record; None when an analyst released it (until newer evidence flags it again)."""
        if record is None:
            self.flags.pop(key, None)
        else:
            self.flags[key] = record

    @property
    def undecided(self) -> int:
        return len(self.event_ids) - len(self.verdicts)

    def flags_by_kind(self) -> dict[str, int]:
        return dict(Counter(kind for kind, _ in self.flags))

    def _base_counts(self) -> dict[str, int]:
        lines = len(self.event_ids)
        return {"lines": lines, "accepted": lines - len(self.rejected_lines), "rejected": self.tally["rejected"]}

    def replay_counts(self) -> dict[str, int]:
        """Final verdicts: a release moves its event from quarantined (or retracted) to clean."""
        t = self.tally
        counts = {**self._base_counts(), "clean": t["clean"] - t["retracted"] + t["released"],
                  "quarantined": t["quarantined"] - (t["released"] - t["restored"]),
                  "retracted": t["retracted"] - t["restored"]}
        if t["released"]:
            counts["released"] = t["released"]
        return counts

    def export_counts(self) -> dict[str, int]:
        """Messages per output topic, net of retractions and restorations; releases from quarantine are
        counted apart (`released`), their events still among the quarantined."""
        t = self.tally
        return {**self._base_counts(), "clean": t["clean"] - t["retracted"] + t["restored"],
                "quarantined": t["quarantined"], "retracted": t["retracted"] - t["restored"],
                "released": t["released"], "restored": t["restored"]}

    def write(self, out: Path) -> None:
        """verdicts.jsonl, flags.jsonl and clean.jsonl."""
        with open(out / "verdicts.jsonl", "wb") as f:
            for line in sorted(self.event_ids):
                f.write(dumps({"line": line, "event_id": self.event_ids[line], "verdict": self.verdicts.get(line),
                               "reasons": self.reasons.get(line, [])}) + b"\n")
        with open(out / "flags.jsonl", "wb") as f:
            for record in sorted(self.flags.values(), key=lambda r: (-r["score"], r["kind"], r["id"])):
                f.write(dumps(record) + b"\n")
        with open(out / "clean.jsonl", "wb") as f:
            for _, payload in sorted(self.clean.values(), key=lambda pair: pair[0]):
                f.write(payload + b"\n")


def summary_head(counts: dict[str, int], ledger: Ledger) -> dict[str, Any]:
    """The keys replay's and export's summary.json share, in their order."""
    return {"counts": counts, "undecided": ledger.undecided, "rejected_by_reason": ledger.rejected_by_reason,
            "flags": ledger.flags_by_kind()}
