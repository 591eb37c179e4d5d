"""Builds the pipeline from settings: the one place that chooses, configures and constructs detectors.

Detectors are pure; anything they need from the outside world (a text encoder's weights) is loaded here and
handed to them. Every parameter of a detector's constructor is a setting (`SHILLGUARD_<DETECTOR>__<NAME>`,
see streams.settings), validated here against the constructor's own annotations, so that a misspelt or
mistyped setting stops the pipeline from starting instead of being ignored. The false-flag budget scales
every detector's significance levels (`SIGNIFICANCE`) by the same factor: a test's false alarms under its
null are proportional to its level.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import typing
from typing import Any, Mapping

from pydantic import TypeAdapter, ValidationError

from detectors.base import Detector
from detectors.decision import DecisionStage
from detectors.fusion import EvidenceFusion
from detectors.pipeline import Pipeline, SeenIds
from detectors.stages import SignalLog
from streams.settings import Settings

DETECTORS: dict[str, str] = {
    "profile": "detectors.profiles:ProfileDetector",
    "rating_shift": "detectors.rating_shift:RatingShiftDetector",
    "dense_block": "detectors.dense_block:DenseBlockDetector",
    "lockstep": "detectors.lockstep:LockstepDetector",
    "coordination": "detectors.coordination:CoordinationDetector",
    "midas": "detectors.midas:MidasDetector",
    "catalog_drift": "detectors.catalog_drift:CatalogDriftDetector",
    "extraction": "detectors.extraction:ExtractionDetector",
    "copies": "detectors.copies:CopyDetector",
    "sweep_coverage": "detectors.sweep_coverage:SweepCoverageDetector",
    "review_rings": "detectors.review_rings:ReviewRingDetector",
}
# Detectors that read the catalog's text embeddings (item_vectors) when they run in catalog_drift's process
# (else they hash item ids instead). Extraction must run there; sweep_coverage only reports its distances.
READS_EMBEDDINGS = ("extraction", "sweep_coverage")
# Constructor arguments that are collaborators, not settings: handed over here.
WIRED = {"encoder", "item_vectors"}
# The significance levels of each detector's tests (dotted: a field of a nested parameter).
SIGNIFICANCE: dict[str, tuple[str, ...]] = {
    "profile": ("target_alpha",), "rating_shift": ("alpha", "wave_alpha", "thin_alpha", "tie_alpha"),
    "dense_block": ("test.alpha",), "lockstep": ("test.alpha",), "coordination": ("alpha",),
    "midas": ("alpha",), "copies": ("alpha",), "review_rings": ("alpha",),
}
DEFAULT_FALSE_FLAG_BUDGET = 25.0  # per million genuine events: the defaults' levels are tuned for it


def detector_class(name: str) -> type[Detector]:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {sorted(DETECTORS)}")
    module, cls = DETECTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def settable_parameters(name: str) -> dict[str, tuple[Any, Any]]:
    """A detector's settings: constructor parameter -> (annotation, default)."""
    cls = detector_class(name)
    hints = typing.get_type_hints(cls.__init__)
    return {p.name: (hints.get(p.name, Any), p.default)
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.name not in WIRED and p.default is not inspect.Parameter.empty}


def detector_kwargs(name: str, raw: Mapping[str, Any] | None = None,
                    false_flag_budget: float = DEFAULT_FALSE_FLAG_BUDGET) -> dict[str, Any]:
    """Validated constructor arguments for one detector from its raw settings (strings from the
    environment are read as JSON where they parse as such), with its significance levels scaled to the
    false-flag budget."""
    params = settable_parameters(name)
    kwargs: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        if key not in params:
            raise ValueError(f"SHILLGUARD_{name.upper()}__{key.upper()}: {name} has no parameter {key!r}; "
                             f"its parameters: {', '.join(sorted(params))}")
        adapter = TypeAdapter(params[key][0])
        try:
            if isinstance(value, str):
                try:
                    kwargs[key] = adapter.validate_json(value)
                except ValidationError:
                    kwargs[key] = adapter.validate_python(value)
            else:
                kwargs[key] = adapter.validate_python(value)
        except ValidationError as error:
            raise ValueError(f"SHILLGUARD_{name.upper()}__{key.upper()}={value!r}: "
                             f"{error.errors(include_url=False)[0]['msg']}") from None
    scale = false_flag_budget / DEFAULT_FALSE_FLAG_BUDGET
    if scale <= 0:
        raise ValueError(f"SHILLGUARD_FALSE_FLAG_BUDGET must be positive, not {false_flag_budget}")
    for dotted in SIGNIFICANCE.get(name, ()):
        head, _, field = dotted.partition(".")
        current = kwargs.get(head, params[head][1])
        if field:
            kwargs[head] = dataclasses.replace(current, **{field: min(0.5, getattr(current, field) * scale)})
        else:
            kwargs[head] = min(0.5, current * scale)
    return kwargs


def build_detectors(names: str, configs: Mapping[str, Mapping[str, Any]] | None = None,
                    false_flag_budget: float = DEFAULT_FALSE_FLAG_BUDGET,
                    encoder_options: Mapping[str, Any] | None = None) -> list[Detector]:
    """The named detectors (comma-separated), each configured from `configs[name]` (raw settings);
    `encoder_options` go to catalog_drift's text encoder (`text_encoder_options`)."""
    chosen = _names(names)
    configs = configs or {}
    detectors: dict[str, Detector] = {}
    for name in chosen:
        kwargs = detector_kwargs(name, configs.get(name), false_flag_budget)
        if name == "catalog_drift":
            from models.text_encoder import load_text_encoder

            # One intra-op thread: the pipeline's other processes keep the other cores busy, and threads
            # that wait for each other stall whenever one is descheduled (benchmarks/encoders.py).
            kwargs["encoder"] = load_text_encoder(threads=1, **(encoder_options or {}))
        detectors[name] = detector_class(name)(**kwargs)
    readers = [name for name in READS_EMBEDDINGS if name in detectors]
    if "catalog_drift" in detectors and readers:
        # Their distance statistics read the catalog's text embeddings; catalog runs first to fill them.
        for name in readers:
            detectors[name].item_vectors = detectors["catalog_drift"]
        chosen.sort(key=lambda name: name != "catalog_drift")
    one_blas_thread()  # after the detectors' imports: it limits the BLAS libraries loaded so far
    return [detectors[name] for name in chosen]


def text_encoder_options(settings: Settings) -> dict[str, Any]:
    """The text encoder's settings, as `load_text_encoder` takes them (JSON-safe: they travel to the
    detector processes)."""
    return {"backend": settings.text_encoder_backend,
            "onnx_dir": str(settings.model_cache_dir) if settings.model_cache_dir else None}


def detector_configs(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every detector's raw settings, by name."""
    return {name: dict(getattr(settings, name)) for name in DETECTORS}


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


def fusion_of(settings: Settings) -> EvidenceFusion:
    """The fusion of detectors' evidence: learning from analysts' labels unless turned off (it is the plain
    fusion until `analyst_min_labels` labels have come in; detectors.learned_fusion)."""
    if not settings.learn_from_analysts:
        return EvidenceFusion(settings.prior, settings.detector_weights)
    from detectors.learned_fusion import LearnedFusion

    return LearnedFusion(settings.prior, settings.detector_weights, min_labels=settings.analyst_min_labels,
                         budget=settings.false_flag_budget)


def build_decision(settings: Settings) -> DecisionStage:
    """The decision stage: one pipeline's, or one actor partition's where the stages are split."""
    return DecisionStage(hold_seconds=settings.hold_seconds, flag_threshold=settings.flag_threshold,
                         retraction_horizon=settings.retraction_horizon_seconds,
                         recent_retraction=settings.recent_retraction_seconds, fusion=fusion_of(settings))


def build_pipeline(settings: Settings, detection_only: bool = False) -> Pipeline:
    """The configured detectors; the groups named in `offload_detectors` (`;` between processes) each in a
    process of their own (streams.parallel) when the machine has more than one core. With `detection_only`
    its decision stage is a `detectors.stages.SignalLog` (the detection stage of a split topology). Close the
    pipeline when done with it."""
    decision = SignalLog(settings.hold_seconds) if detection_only else build_decision(settings)
    chosen = _names(settings.detectors)
    unknown = sorted(set(chosen) - set(DETECTORS))
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; known: {sorted(DETECTORS)}")
    configs = detector_configs(settings)
    for name in chosen:  # refuse bad settings here, before any process is started
        detector_kwargs(name, configs[name], settings.false_flag_budget)
    groups = [[name for name in chosen if name in _names(group)]
              for group in settings.offload_detectors.split(";")]
    groups = [group for group in groups if group]
    if (len(groups) == 1 and len(groups[0]) == len(chosen)) or (os.cpu_count() or 1) < 2:
        groups = []  # nothing would run beside them, or no core to run them on
    shared = {"catalog_drift", "extraction"}  # extraction reads the catalog's embeddings
    if shared <= set(chosen) and any(len(shared & set(group)) == 1 for group in groups):
        raise ValueError("catalog_drift and extraction share embeddings: run them in the same process")
    offloaded_names = {name for group in groups for name in group}
    encoder = text_encoder_options(settings)
    local = build_detectors(",".join(name for name in chosen if name not in offloaded_names), configs,
                            settings.false_flag_budget, encoder)
    offloaded = []
    if groups:
        from streams.parallel import DetectorProcess

        offloaded = [DetectorProcess(group, {name: configs[name] for name in group}, settings.false_flag_budget,
                                     encoder) for group in groups]
    order = list(chosen)  # the order build_detectors gives them, whichever process they run in
    if "catalog_drift" in order and set(READS_EMBEDDINGS) & set(order):
        order.sort(key=lambda name: name != "catalog_drift")
    return Pipeline(local, decision, SeenIds(settings.dedupe_capacity), offloaded=offloaded, order=order,
                    decide_every=settings.decide_every, lagged=_names(settings.lagged_detectors),
                    lag=settings.detector_lag)
