"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
