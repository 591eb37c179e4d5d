"""Every detector parameter is a setting: read from the environment, validated, documented, and the
false-flag budget scales the significance levels."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.blocks import BlockTest
from streams.assembly import (DEFAULT_FALSE_FLAG_BUDGET, DETECTORS, SIGNIFICANCE, build_detectors,
                              detector_kwargs, settable_parameters)
from streams.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_a_parameter_comes_from_its_environment_variable(monkeypatch):
    monkeypatch.setenv("SHILLGUARD_RATING_SHIFT__THRESHOLD", "12.5")
    monkeypatch.setenv("SHILLGUARD_COORDINATION__WINDOWS", "[3600, 86400]")
    monkeypatch.setenv("SHILLGUARD_DENSE_BLOCK__TEST__MIN_LIFT", "8")
    settings = Settings()
    shift, coordination, blocks = build_detectors(
        "rating_shift,coordination,dense_block",
        {name: getattr(settings, name) for name in ("rating_shift", "coordination", "dense_block")})
    assert shift.threshold == 12.5
    assert coordination.windows == (3600.0, 86400.0)
    assert isinstance(blocks.test, BlockTest) and blocks.test.min_lift == 8.0


def test_an_unknown_or_mistyped_parameter_is_refused_with_its_name():
    with pytest.raises(ValueError, match="SHILLGUARD_PROFILE__NOPE.*min_ratings"):
        detector_kwargs("profile", {"nope": "1"})
    with pytest.raises(ValueError, match="SHILLGUARD_PROFILE__MIN_RATINGS='many'"):
        detector_kwargs("profile", {"min_ratings": "many"})


def test_the_false_flag_budget_scales_every_significance_level():
    for name, levels in SIGNIFICANCE.items():
        defaults = detector_kwargs(name, {})
        doubled = detector_kwargs(name, {}, false_flag_budget=2 * DEFAULT_FALSE_FLAG_BUDGET)
        for dotted in levels:
            head, _, field = dotted.partition(".")
            before, after = defaults[head], doubled[head]
            if field:
                before, after = getattr(before, field), getattr(after, field)
            assert after == pytest.approx(2 * before), (name, dotted)
    with pytest.raises(ValueError, match="FALSE_FLAG_BUDGET"):
        detector_kwargs("coordination", {}, false_flag_budget=0)


def test_every_detector_parameter_is_documented_in_the_readme():
    text = README.read_text()
    missing = [f"SHILLGUARD_{name.upper()}__{param.upper()}" for name in DETECTORS
               for param in settable_parameters(name)
               if f"`{param}`" not in _section(text, f"#### `{name}`")]
    assert missing == []


def _section(text: str, heading: str) -> str:
    start = text.find(heading)
    assert start >= 0, f"README has no section {heading}"
    end = text.find("\n#### ", start + len(heading))
    return text[start:end if end >= 0 else None]
