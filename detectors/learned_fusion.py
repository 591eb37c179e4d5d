"""Fusion weights learned from analysts' labels, and a flag threshold held to the false-flag budget.

The same evidence as `EvidenceFusion` (each detector's log Bayes factor, logit(score) - logit(prior)) feeds an
online logistic regression (River) that starts as the fusion itself (every weight 1, intercept logit(prior))
and moves with each label: an analyst's confirmation is a 1, a release as a false or benign positive a 0.
A detector whose evidence analysts keep releasing loses weight; one they keep confirming gains it. Its
output is a probability that an analyst would confirm the entity; the flag threshold on it is the lowest at
which the flags' expected false share (the sum of 1 - p over the entities it would flag) stays within
`budget` false flags per million genuine events (Elkan, 2001: a calibrated probability and a cost make the
threshold). Until `min_labels` labels have come in, it is the plain fusion and threshold.

References: Dal Pozzolo et al., "Credit card fraud detection: a realistic modeling and a novel learning
strategy", IEEE TNNLS 2018 (learning from the alerts investigators label, precision among them as the
measure); River's LogisticRegression (Montiel et al., JMLR 2021).

>>> learned = LearnedFusion(prior=0.05, min_labels=4)
>>> round(learned.risk({"noisy": 0.9}), 2)  # the plain fusion until labels come in
0.9
>>> for _ in range(60):
...     learned.learn({"noisy": 0.9}, False)
...     learned.learn({"solid": 0.9}, True)
>>> learned.risk({"noisy": 0.9}) < 0.5 < learned.risk({"solid": 0.9})
True
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping

from river import linear_model, optim

from detectors.fusion import EvidenceFusion, logit


class LearnedFusion(EvidenceFusion):
    """Parameters: `prior` and `weights` (the starting fusion, as `EvidenceFusion`); `lr`, the learning rate;
    `l2`, how strongly weights are held near the start; `min_labels` before the model takes over; `budget`,
    false flags per million genuine events, and `min_threshold`, the lowest flag threshold, for `calibrate`."""

    @property
    def active(self) -> bool:
        return self.labels >= self.min_labels

    def __init__(self, prior: float = 0.05, weights: Mapping[str, float] | None = None, max_score: float = 0.999,
                 lr: float = 0.05, l2: float = 0.0, min_labels: int = 20, budget: float = 25.0,
                 min_threshold: float = 0.3):
        super().__init__(prior, weights, max_score)
        self.min_labels = min_labels
        self.budget, self.min_threshold = budget, min_threshold
        self.labels = 0
        self.model = linear_model.LogisticRegression(
            optimizer=optim.SGD(lr), l2=l2, intercept_init=logit(prior), intercept_lr=lr,
            initializer=optim.initializers.Constant(1.0))

    def features(self, scores: Mapping[str, float]) -> dict[str, float]:
        weights = self.model._weights  # noqa: SLF001 - River predicts with 0 for a feature never learned
        for name in scores:
            if name not in weights:
                weights[name] = self.weights.get(name, 1.0)  # a new detector starts as the fusion has it
        return {name: self.evidence(score) for name, score in scores.items()}

    def learn(self, scores: Mapping[str, float], confirmed: bool) -> None:
        """An analyst's label on an entity with these detector scores."""
        self.model.learn_one(self.features(scores), bool(confirmed))
        self.labels += 1

    def risk(self, scores: Mapping[str, float]) -> float:
        if self.labels < self.min_labels:
            return super().risk(scores)
        return float(self.model.predict_proba_one(self.features(scores))[True])

    def learned_weights(self) -> dict[str, float]:
        return {name: round(float(weight), 4) for name, weight in self.model.weights.items()}

    def calibrate(self, population: Iterable[Mapping[str, float]], genuine_events: int,
                  budget: float | None = None, floor: float | None = None) -> float:
        """The lowest threshold (not below `floor`) at which the flags' expected false count, the sum of 1 - p
        over the entities of `population` at or above it, stays within `budget` per million genuine events."""
        budget = self.budget if budget is None else budget
        floor = self.min_threshold if floor is None else floor
        allowed = budget * max(genuine_events, 0) / 1e6
        counts = Counter(self.risk(scores) for scores in population)
        expected_false = 0.0
        for risk in sorted(counts, reverse=True):  # all entities at one risk are flagged together, or none
            if risk < floor:
                break
            expected_false += counts[risk] * (1.0 - risk)
            if expected_false > allowed:  # these would break the budget: the threshold goes just above them
                return min(risk + 1e-9, 1.0)
        return floor
