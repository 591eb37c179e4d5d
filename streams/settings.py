"""Settings from the environment (prefix SHILLGUARD_), one object for every driver."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHILLGUARD_", extra="ignore")

    # Decision stage
    hold_seconds: float = 600.0
    flag_threshold: float = 0.5
    retraction_horizon_seconds: float = 30 * 86400.0
    # Pipeline
    batch_size: int = 2048
    detectors: str = "profile,rating_shift"  # comma-separated names, see streams.assembly.DETECTORS
    dedupe_capacity: int = 5_000_000
    # Data
    movielens: Path = PROJECT_ROOT.parent / "shared" / "data" / "movielens-100k"


def get_settings() -> Settings:
    return Settings()
