"""Builds the pipeline from settings: the one place that chooses and constructs detectors.

Detectors are pure; anything they need from the outside world (a text encoder's weights) is loaded here
and handed to them.
"""

from __future__ import annotations

import os
from typing import Callable

from detectors.base import Detector
from detectors.decision import DecisionStage
from detectors.pipeline import Pipeline, SeenIds
from streams.settings import Settings


def _profile() -> Detector:
    from detectors.profiles import ProfileDetector

    return ProfileDetector()


def _rating_shift() -> Detector:
    from detectors.rating_shift import RatingShiftDetector

    return RatingShiftDetector()


def _dense_block() -> Detector:
    from detectors.dense_block import DenseBlockDetector

    return DenseBlockDetector()


def _lockstep() -> Detector:
    from detectors.lockstep import LockstepDetector

    return LockstepDetector()


def _coordination() -> Detector:
    from detectors.coordination import CoordinationDetector

    return CoordinationDetector()


def _midas() -> Detector:
    from detectors.midas import MidasDetector

    return MidasDetector()


def _catalog_drift() -> Detector:
    from detectors.catalog_drift import CatalogDriftDetector
    from models.text_encoder import load_text_encoder

    # One intra-op thread: the pipeline's other processes keep the other cores busy, and threads that wait
    # for each other stall whenever one is descheduled (benchmarks/encoders.py measures both).
    return CatalogDriftDetector(load_text_encoder(threads=1))


def _copies() -> Detector:
    from detectors.copies import CopyDetector

    return CopyDetector()


def _extraction() -> Detector:
    from detectors.extraction import ExtractionDetector

    return ExtractionDetector()


DETECTORS: dict[str, Callable[[], Detector]] = {
    "profile": _profile, "rating_shift": _rating_shift, "dense_block": _dense_block, "lockstep": _lockstep,
    "coordination": _coordination, "midas": _midas, "catalog_drift": _catalog_drift,
    "extraction": _extraction, "copies": _copies,
}


def build_detectors(names: str) -> list[Detector]:
    chosen = _names(names)
    unknown = sorted(set(chosen) - set(DETECTORS))
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; known: {sorted(DETECTORS)}")
    detectors = {name: DETECTORS[name]() for name in chosen}
    if "catalog_drift" in detectors and "extraction" in detectors:
        # Extraction's distance test reads the catalog's text embeddings; catalog runs first to fill them.
        detectors["extraction"].item_vectors = detectors["catalog_drift"]
        chosen.sort(key=lambda name: name != "catalog_drift")
    one_blas_thread()  # after the detectors' imports: it limits the BLAS libraries loaded so far
    return [detectors[name] for name in chosen]


def one_blas_thread() -> None:
    """The BLAS and OpenMP libraries loaded in this process (NumPy's and SciPy's OpenBLAS, torch's OpenMP)
    compute on one thread from now on. Their default is a thread per core, and idle threads spin for a
    while after each call: a detector's small matmuls then kept a
    second core busy, the one the pipeline's other process needed (measured: a third of replay's speed
    with MiniLM in a detector process)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _names(names: str) -> list[str]:
    return [name.strip() for name in names.split(",") if name.strip()]


def build_pipeline(settings: Settings) -> Pipeline:
    """The configured detectors; the groups named in `offload_detectors` (`;` between processes) each in a
    process of their own (streams.parallel) when the machine has more than one core. Close the pipeline when
    done with it."""
    decision = DecisionStage(hold_seconds=settings.hold_seconds, flag_threshold=settings.flag_threshold,
                             retraction_horizon=settings.retraction_horizon_seconds,
                             recent_retraction=settings.recent_retraction_seconds)
    chosen = _names(settings.detectors)
    unknown = sorted(set(chosen) - set(DETECTORS))
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; known: {sorted(DETECTORS)}")
    groups = [[name for name in chosen if name in _names(group)]
              for group in settings.offload_detectors.split(";")]
    groups = [group for group in groups if group]
    if (len(groups) == 1 and len(groups[0]) == len(chosen)) or (os.cpu_count() or 1) < 2:
        groups = []  # nothing would run beside them, or no core to run them on
    shared = {"catalog_drift", "extraction"}  # extraction reads the catalog's embeddings
    if shared <= set(chosen) and any(len(shared & set(group)) == 1 for group in groups):
        raise ValueError("catalog_drift and extraction share embeddings: run them in the same process")
    offloaded_names = {name for group in groups for name in group}
    local = build_detectors(",".join(name for name in chosen if name not in offloaded_names))
    offloaded = []
    if groups:
        from streams.parallel import DetectorProcess

        offloaded = [DetectorProcess(group) for group in groups]
    order = list(chosen)  # the order build_detectors gives them, whichever process they run in
    if {"catalog_drift", "extraction"} <= set(order):
        order.sort(key=lambda name: name != "catalog_drift")
    return Pipeline(local, decision, SeenIds(settings.dedupe_capacity), offloaded=offloaded, order=order,
                    decide_every=settings.decide_every)
