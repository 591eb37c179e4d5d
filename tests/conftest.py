"""Shared fixtures, and CI's rule that no integration or MovieLens test may be skipped.

With SHILLGUARD_REQUIRE_INTEGRATION set (`.ci/run` sets it), a test marked `integration` or `movielens`
(or using the `movielens_dir` fixture) that skips is reported as a failure with its skip reason: CI cannot
go green without them. Elsewhere they skip, each with its named reason, on a machine without the broker,
PostgreSQL or the data set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRED_MARKERS = ("integration", "movielens")


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    """The MovieLens-100K directory ($SHILLGUARD_MOVIELENS or ../shared/data/movielens-100k); skips if absent."""
    from simulator.movielens import default_movielens_dir

    directory = default_movielens_dir()
    if not (directory / "u.data").is_file():
        if os.environ.get("SHILLGUARD_REQUIRE_DATA"):  # CI: absence is a failure, not a skip
            pytest.fail(f"MovieLens-100K not found in {directory} and SHILLGUARD_REQUIRE_DATA is set")
        pytest.skip(f"MovieLens-100K not found in {directory}: set SHILLGUARD_MOVIELENS to run this test")
    return directory


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # a test that reads MovieLens is a movielens test, marked or not
        if "movielens_dir" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("movielens"):
            item.add_marker(pytest.mark.movielens)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and os.environ.get("SHILLGUARD_REQUIRE_INTEGRATION")):
        return
    required = [name for name in REQUIRED_MARKERS if item.get_closest_marker(name)]
    if required:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} is marked {', '.join(required)} and was skipped, which "
                           f"SHILLGUARD_REQUIRE_INTEGRATION forbids: {reason}")
