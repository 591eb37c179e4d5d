"""Evidence fusion: each detector's calibrated score becomes a log Bayes factor, and an entity's risk is the
posterior of a naive-Bayes model over detectors, so the flag threshold is a probability and nothing else.

A detector reports `score`, the probability that the entity is malicious given its own evidence alone, at a
reference base rate `prior` (one account in twenty by default). Its evidence is then the log Bayes factor
logit(score) - logit(prior): a score at the prior says nothing, a score below it is ignored (detectors look
for malice and never exonerate), and one detector's evidence is capped at `max_score`, since no single test
is proof. Risk is sigmoid(logit(prior) + sum of weight x evidence over detectors, each with its strongest
score so far): independent evidence multiplies odds, while one detector repeating itself adds nothing.
Weights (1 by default) say how far a detector's evidence is independent of the others'; analysts' labels can
learn them (a logistic regression over the same evidence).

Because a detector states its evidence as a probability, not as a position relative to the threshold, a
weak detector alone (a score of 0.2, say) stays at 0.2 whatever `SHILLGUARD_FLAG_THRESHOLD` is, and two
independent detectors of 0.3 each make about 0.78: the threshold changes how sure the stage must be, not how
the evidence adds up.

Reference: Good, "Probability and the Weighing of Evidence" (1950) for evidence as log odds; the naive-Bayes
combination of independent tests is the one of Heckerman's similarity networks and of spam filters.

>>> fusion = EvidenceFusion()
>>> round(fusion.risk({"a": 0.3, "b": 0.3}), 3), round(fusion.risk({"a": 0.9}), 3)
(0.777, 0.9)
>>> round(fusion.risk({"a": 0.2}), 3), round(fusion.risk({"a": 0.01, "b": 0.2}), 3)  # below the prior: ignored
(0.2, 0.2)
>>> round(EvidenceFusion(weights={"b": 0.5}).risk({"a": 0.3, "b": 0.3}), 3)
0.55
"""

from __future__ import annotations

import math
from typing import Mapping


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


class EvidenceFusion:
    """Parameters: `prior`, the reference base rate at which detectors state their scores; `weights`,
    detector name -> weight of its evidence (missing: 1); `max_score`, the most one detector's score counts
    for."""

    def __init__(self, prior: float = 0.05, weights: Mapping[str, float] | None = None,
                 max_score: float = 0.999):
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be in (0, 1), not {prior}")
        self.prior = prior
        self.weights = dict(weights or {})
        self.max_score = max_score
        self._prior_logit = logit(prior)
        self._cap = logit(max_score) - self._prior_logit

    def evidence(self, score: float) -> float:
        """The log Bayes factor of one detector's score (0 at or below the prior, capped)."""
        if score <= self.prior:
            return 0.0
        return min(logit(min(score, 1.0 - 1e-12)) - self._prior_logit, self._cap)

    def risk(self, scores: Mapping[str, float]) -> float:
        """The posterior of an entity given each detector's strongest score."""
        total = self._prior_logit
        for detector, score in scores.items():
            total += self.weights.get(detector, 1.0) * self.evidence(score)
        return sigmoid(total)
