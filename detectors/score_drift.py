"""Each detector's score distribution watched for change (ADWIN), so that a detector that drifts (new traffic,
an upstream change, an attacker who learned its threshold) is noticed before its flags go wrong.

ADWIN keeps a window of recent values and cuts it where two sub-windows' means differ by more than chance
allows (Bifet and Gavaldà, "Learning from time-changing data with adaptive windowing", SDM 2007; River's
`drift.ADWIN`). One detector per name, fed the scores of its signals in order.

>>> import random
>>> rng = random.Random(7)
>>> watch = ScoreDrift()
>>> found = [r for t in range(3000) for r in watch.observe("profile", rng.gauss(0.3 if t < 1500 else 0.7, 0.05), t)]
>>> [(r["detector"], 1500 <= r["at"] < 1700, r["mean_before"] < r["mean_after"]) for r in found]
[('profile', True, True)]
"""

from __future__ import annotations

from typing import Any

from river import drift


class ScoreDrift:
    """Parameters: `delta`, ADWIN's confidence (smaller: fewer, surer alarms)."""

    def __init__(self, delta: float = 0.002):
        self.delta = delta
        self.detectors: dict[str, drift.ADWIN] = {}
        self.drifts: dict[str, int] = {}
        self.last: dict[str, dict[str, Any]] = {}

    def observe(self, detector: str, score: float, at: float) -> list[dict[str, Any]]:
        """Feed one score; a report when the detector's score distribution changed there."""
        adwin = self.detectors.get(detector)
        if adwin is None:
            adwin = self.detectors[detector] = drift.ADWIN(delta=self.delta)
        before = adwin.estimation
        adwin.update(float(score))
        if not adwin.drift_detected:
            return []
        self.drifts[detector] = self.drifts.get(detector, 0) + 1
        report = {"detector": detector, "at": at, "mean_before": round(float(before), 4),
                  "mean_after": round(float(adwin.estimation), 4), "window": int(adwin.width),
                  "drifts": self.drifts[detector]}
        self.last[detector] = report
        return [report]
