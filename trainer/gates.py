"""Deployment gates: a candidate version is compared with the promoted one before it may serve.

Each gate reads two `VersionReport`s (what a model does on the same panel of users and the same held-back
slice) and answers a `GateResult`. A version is promoted only if every gate passes.

- `UtilityGate`: HR@10 and NDCG@10 on the held-back slice may not fall more than `margin` (relative), unless
  the fall is within noise: it must also exceed `z` standard errors of the paired per-user difference (both
  versions are scored on the same users), since a slice of a few hundred users moves HR@10 by several percent
  between two equally good models.
- `ExposureGate`: no item's share of top-10 lists may jump by more than `max_jump` (absolute) and by more
  than `max_ratio` times its old share; an item flagged as an attack target may not gain exposure at all
  beyond `flagged_tolerance`. Push attacks (Lam & Riedl, WWW 2004) and their optimised successors exist to
  buy exactly that jump. A jump holds every later version back until its cause is found (the detectors flag
  the accounts, their events are unlearned, the jump is gone) or an analyst clears the item (`cleared`: a
  film in the news); the trainer also tells the detectors about it (`Promoter`'s signals).
- `ExtractionGate` (opt-in): the surrogate fidelity the red team reaches on a fixed query budget may not rise
  above the promoted version's.
- `UniformityGate`: the uniformity of the item embeddings may not drop by more than `margin`. ClusterAttack
  (Yu et al., "Untargeted Attack against Federated Recommendation Systems via Poisonous Item Embeddings and
  the Defense", AAAI 2023) collapses item embeddings into a few clusters; their defence UNION watches
  uniformity (Wang & Isola, ICML 2020), which such a collapse drives down.

>>> base = VersionReport(hr=0.20, ndcg=0.10, uniformity=3.0, shares={"a": 0.1}, n_lists=100)
>>> cand = VersionReport(hr=0.19, ndcg=0.10, uniformity=1.0, shares={"a": 0.5}, n_lists=100)
>>> [g.check(cand, base).passed for g in default_gates()]
[True, False, False]
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class VersionReport:
    """What one model version does: utility on the held-back slice, exposure on the panel, uniformity."""

    hr: float
    ndcg: float
    uniformity: float
    shares: dict[str, float]          # item id -> share of top-10 lists containing it (nonzero only)
    n_lists: int
    n_eval: int = 0
    flagged: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)  # items an analyst cleared: their jump is accepted
    per_user: dict[str, Any] | None = None  # metric -> per-user values on the held-back slice, same order
    extraction: float | None = None  # the red team's surrogate top-10 agreement at a fixed budget, if measured


@dataclass
class GateResult:
    gate: str
    passed: bool
    value: Any
    baseline: Any
    threshold: Any
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Gate(abc.ABC):
    name = "gate"

    @abc.abstractmethod
    def check(self, candidate: VersionReport, baseline: VersionReport) -> GateResult:
        """Compare a candidate with the promoted version."""


class UtilityGate(Gate):
    """Blocks when HR@10 or NDCG@10 falls by more than `margin` of the baseline's value and by more than `z`
    standard errors of the paired per-user difference (where the reports carry per-user values)."""

    name = "utility"

    def __init__(self, margin: float = 0.05, min_eval: int = 20, z: float = 2.0):
        self.margin, self.min_eval, self.z = margin, min_eval, z

    def _noise(self, metric: str, candidate: VersionReport, baseline: VersionReport) -> float:
        a = (candidate.per_user or {}).get(metric)
        b = (baseline.per_user or {}).get(metric)
        if a is None or b is None or len(a) != len(b) or len(a) < 2:
            return 0.0
        diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
        return float(self.z * diff.std(ddof=1) / np.sqrt(len(diff)))

    def check(self, candidate: VersionReport, baseline: VersionReport) -> GateResult:
        floors = {m: getattr(baseline, m) * (1 - self.margin) for m in ("hr", "ndcg")}
        noise = {m: self._noise(m, candidate, baseline) for m in floors}
        failing = [m for m, floor in floors.items() if getattr(candidate, m) < floor - 1e-12
                   and getattr(baseline, m) - getattr(candidate, m) > noise[m]]
        # On a tiny slice one user flips HR by whole percents: too noisy to block on.
        enough = candidate.n_eval >= self.min_eval
        return GateResult(self.name, not (failing and enough),
                          {"hr": candidate.hr, "ndcg": candidate.ndcg},
                          {"hr": baseline.hr, "ndcg": baseline.ndcg}, floors,
                          {"regressed": failing, "n_eval": candidate.n_eval,
                           "noise": {m: round(v, 5) for m, v in noise.items()},
                           **({} if enough else {"skipped": "held-back slice too small"})})


class ExposureGate(Gate):
    """Blocks on an item whose share of top-10 lists jumps, or a flagged target item gaining exposure."""

    name = "exposure"

    def __init__(self, max_jump: float = 0.10, max_ratio: float = 3.0, flagged_tolerance: float = 0.01):
        self.max_jump, self.max_ratio, self.flagged_tolerance = max_jump, max_ratio, flagged_tolerance

    def check(self, candidate: VersionReport, baseline: VersionReport) -> GateResult:
        jumps, flagged_gains, accepted = {}, {}, {}
        cleared = set(candidate.cleared)
        flagged = (set(candidate.flagged) | set(baseline.flagged)) - cleared
        for item, share in candidate.shares.items():
            old = baseline.shares.get(item, 0.0)
            gain = share - old
            if gain > self.max_jump and share > self.max_ratio * old:
                (accepted if item in cleared else jumps)[item] = {"old": round(old, 4), "new": round(share, 4)}
            if item in flagged and gain > self.flagged_tolerance:
                flagged_gains[item] = {"old": round(old, 4), "new": round(share, 4)}
        top = max(((s - baseline.shares.get(i, 0.0)), i) for i, s in candidate.shares.items()) \
            if candidate.shares else (0.0, None)
        return GateResult(self.name, not jumps and not flagged_gains,
                          {"largest_gain": round(top[0], 4), "item": top[1]}, None,
                          {"max_jump": self.max_jump, "max_ratio": self.max_ratio,
                           "flagged_tolerance": self.flagged_tolerance},
                          {"jumps": dict(list(jumps.items())[:20]), "flagged_gains": flagged_gains,
                           "cleared_jumps": accepted, "n_lists": candidate.n_lists})


class UniformityGate(Gate):
    """Blocks when item-embedding uniformity falls by more than `margin` (absolute, in nats)."""

    name = "uniformity"

    def __init__(self, margin: float = 0.25):
        self.margin = margin

    def check(self, candidate: VersionReport, baseline: VersionReport) -> GateResult:
        floor = baseline.uniformity - self.margin
        return GateResult(self.name, candidate.uniformity >= floor, round(candidate.uniformity, 4),
                          round(baseline.uniformity, 4), round(floor, 4))


class ExtractionGate(Gate):
    """Blocks when a surrogate extracted from the candidate by the red team (`trainer.redteam`, a fixed
    `budget` of queries, fixed seed) agrees with it more than one extracted from the promoted version
    does, beyond `tolerance`: a new version may not be easier to clone (a GRO-trained model replaced by an
    undefended one, say). Opt-in: it trains two surrogates per proposal."""

    name = "extraction"
    measures_extraction = True

    def __init__(self, budget: int = 2000, tolerance: float = 0.02):
        self.budget, self.tolerance = budget, tolerance

    def check(self, candidate: VersionReport, baseline: VersionReport) -> GateResult:
        if candidate.extraction is None or baseline.extraction is None:
            return GateResult(self.name, True, candidate.extraction, baseline.extraction, None,
                              {"skipped": "fidelity not measured"})
        ceiling = baseline.extraction + self.tolerance
        return GateResult(self.name, candidate.extraction <= ceiling, round(candidate.extraction, 4),
                          round(baseline.extraction, 4), round(ceiling, 4),
                          {"budget": self.budget, "metric": "surrogate agreement_at_10"})


def default_gates(utility_margin: float = 0.05, max_jump: float = 0.10, max_ratio: float = 3.0,
                  uniformity_margin: float = 0.25, extraction_budget: int = 0) -> list[Gate]:
    gates: list[Gate] = [UtilityGate(utility_margin), ExposureGate(max_jump, max_ratio),
                         UniformityGate(uniformity_margin)]
    if extraction_budget > 0:
        gates.append(ExtractionGate(extraction_budget))
    return gates
