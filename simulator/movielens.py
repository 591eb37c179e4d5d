"""Load a MovieLens-100K style directory (u.data, u.item, u.genre) as a `Base`.

The data licence forbids redistribution, so the directory is never copied into the repository: it is found
through the `SHILLGUARD_MOVIELENS` environment variable or next to the project, in
`<project root>/../shared/data/movielens-100k`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from simulator.base import Base

ENV_VAR = "SHILLGUARD_MOVIELENS"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class MovieLensNotFound(FileNotFoundError):
    """The MovieLens directory is missing or incomplete."""


def default_movielens_dir() -> Path:
    """`$SHILLGUARD_MOVIELENS`, else `<project root>/../shared/data/movielens-100k`."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return (PROJECT_ROOT / ".." / "shared" / "data" / "movielens-100k").resolve()


def load_movielens(directory: str | os.PathLike | None = None) -> Base:
    """Read u.data (user, item, rating, ts; tab separated) and u.item (pipe separated, latin-1)."""
    root = Path(directory) if directory is not None else default_movielens_dir()
    missing = [name for name in ("u.data", "u.item", "u.genre") if not (root / name).is_file()]
    if missing:
        raise MovieLensNotFound(
            f"MovieLens-100K not found in {root} (missing {', '.join(missing)}). Download it from "
            f"https://grouplens.org/datasets/movielens/100k/ and point {ENV_VAR} at the unpacked "
            f"directory; its licence forbids copying it into this repository. "
            f"Use `--data synthetic` to run without it.")
    rows = np.array((root / "u.data").read_bytes().split(), dtype=np.int64).reshape(-1, 4)
    genre_names = [line.split("|")[0] for line in
                   (root / "u.genre").read_text("latin-1").splitlines() if line.strip()]
    titles: dict[int, str] = {}
    flags: dict[int, list[bool]] = {}
    for line in (root / "u.item").read_text("latin-1").splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        item_id = int(fields[0])
        titles[item_id] = fields[1].strip() or f"Untitled {item_id}"
        flags[item_id] = [field == "1" for field in fields[5:5 + len(genre_names)]]
    n_items = max(max(titles), int(rows[:, 1].max()))
    title_list = [titles.get(i + 1, f"Untitled {i + 1}") for i in range(n_items)]
    genres = np.zeros((n_items, len(genre_names)), dtype=bool)
    for item_id, row in flags.items():
        genres[item_id - 1, :len(row)] = row
    return Base(name=root.name, user=(rows[:, 0] - 1).astype(np.int32),
                item=(rows[:, 1] - 1).astype(np.int32), rating=rows[:, 2].astype(np.int8),
                ts=rows[:, 3], titles=title_list, genres=genres, genre_names=genre_names,
                n_users=int(rows[:, 0].max()))
