"""Versioned checkpoints in safetensors: weights, Adam moments, the clean log, and metadata as JSON.

One file per version, `MODELDIR/versions/vNNNNNN.safetensors`, written to a temporary name and renamed so a
crash never leaves a torn file. The safetensors header carries the metadata (config, source offsets covered,
metrics, gate results, promotion) as one JSON string; `vNNNNNN.json` beside it is a readable copy.
`MODELDIR/PROMOTED` names the served version. Because the log and the offsets are saved together, a restart
resumes exactly: events past the offsets are read again, and the log's event ids drop any it already has.

>>> import tempfile
>>> from trainer.incremental import Trainer, TrainConfig
>>> store = CheckpointStore(tempfile.mkdtemp())
>>> t = Trainer(TrainConfig(model="bpr", dim=4))
>>> _ = t.ingest([{"type": "click", "event_id": "e1", "ts": 1, "user_id": "u", "item_id": "i"}])
>>> store.save(t, {"offsets": {"clean": 1}})
'v000001'
>>> restored, meta = store.load("v000001")
>>> restored.log.event_ids, meta["offsets"]
(['e1'], {'clean': 1})
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from trainer.incremental import Trainer, config_from_dict
from trainer.log import InteractionLog

_VERSION = re.compile(r"^v(\d{6})\.safetensors$")


def pack_strings(values: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Strings as one UTF-8 byte tensor plus end offsets (safetensors stores tensors only)."""
    encoded = [v.encode("utf-8") for v in values]
    ends = np.cumsum([len(e) for e in encoded], dtype=np.int64) if encoded else np.zeros(0, np.int64)
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return torch.from_numpy(blob), torch.from_numpy(ends)


def unpack_strings(blob: torch.Tensor, ends: torch.Tensor) -> list[str]:
    data, ends = blob.numpy().tobytes(), ends.tolist()
    starts = [0] + ends[:-1]
    return [data[s:e].decode("utf-8") for s, e in zip(starts, ends)]


def _tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = trainer.state()
    out = {f"model/{k}": v.detach().cpu().contiguous() for k, v in state["model"].items()}
    for name, moments in state["optim"].items():
        for key, value in moments.items():
            out[f"optim/{name}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    # GRO's student (trainer.gro), so that a resumed run goes on misleading the same imitator.
    for k, v in state.get("student", {}).items():
        out[f"student/{k}"] = v.detach().cpu().contiguous()
    for name, moments in state.get("student_optim", {}).items():
        for key, value in moments.items():
            out[f"student_optim/{name}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    out["rng/generator"] = state["generator"]
    arrays, strings = trainer.log.state()
    for name, array in arrays.items():
        out[f"log/{name}"] = torch.from_numpy(array.astype(np.uint8) if array.dtype == bool else array)
    for name, values in strings.items():
        out[f"str/{name}/blob"], out[f"str/{name}/ends"] = pack_strings(values)
    out["counters"] = torch.tensor([state["samples_trained"], state["epochs_trained"], state["learned_rows"]],
                                   dtype=torch.int64)
    return out


def _defence(config) -> dict[str, Any] | None:
    """The defence trained into a version and its parameters (also in `config`; here to be read at a glance)."""
    if not config.defence:
        return None
    return {"name": config.defence, **{k[len("gro_"):]: v for k, v in config.to_dict().items()
                                       if k.startswith("gro_")}}


class CheckpointStore:
    """The versions of one model directory. `keep` bounds how many unpromoted versions stay on disk."""

    def __init__(self, directory: str | os.PathLike, keep: int = 5):
        self.dir = Path(directory)
        self.versions_dir = self.dir / "versions"
        self.keep = keep

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name.split(".")[0] for p in self.versions_dir.iterdir() if _VERSION.match(p.name))

    def latest(self) -> str | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def promoted(self) -> str | None:
        path = self.dir / "PROMOTED"
        return path.read_text().strip() if path.is_file() else None

    def next_version(self) -> str:
        latest = self.latest()
        return f"v{(int(latest[1:]) + 1 if latest else 1):06d}"

    def save(self, trainer: Trainer, meta: dict[str, Any], version: str | None = None) -> str:
        version = version or self.next_version()
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        meta = {"version": version, "created": time.time(), "config": trainer.config.to_dict(),
                "defence": _defence(trainer.config),
                "events_learned": trainer.log.n, "events_active": trainer.log.n_active,
                "users": len(trainer.log.users), "items": len(trainer.log.items),
                "samples_trained": trainer.samples_trained, **meta}
        path = self.versions_dir / f"{version}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(_tensors(trainer), str(tmp), metadata={"shillguard": json.dumps(meta)})
        os.replace(tmp, path)
        self.write_meta(version, meta)
        self._prune()
        return version

    def write_meta(self, version: str, meta: dict[str, Any]) -> None:
        """The readable copy (and the record of gate results and promotion, which come after the save)."""
        path = self.versions_dir / f"{version}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        os.replace(tmp, path)

    def meta(self, version: str) -> dict[str, Any]:
        readable = self.versions_dir / f"{version}.json"
        if readable.is_file():
            return json.loads(readable.read_text())
        with safe_open(str(self.versions_dir / f"{version}.safetensors"), "pt") as f:
            return json.loads(f.metadata()["shillguard"])

    def promote(self, version: str) -> None:
        tmp = self.dir / "PROMOTED.tmp"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.dir / "PROMOTED")

    def load(self, version: str | None = None, device: str | None = None) -> tuple[Trainer, dict[str, Any]]:
        """A trainer restored from `version` ("promoted", "latest" or a name; default latest)."""
        if version in (None, "latest"):
            version = self.latest()
        elif version == "promoted":
            version = self.promoted()
        if version is None:
            raise FileNotFoundError(f"no checkpoint in {self.dir}")
        meta = self.meta(version)
        tensors = load_file(str(self.versions_dir / f"{version}.safetensors"))
        strings = {}
        for key in [k for k in tensors if k.startswith("str/") and k.endswith("/blob")]:
            name = key.split("/")[1]
            strings[name] = unpack_strings(tensors[key], tensors[f"str/{name}/ends"])
        arrays = {k.split("/", 1)[1]: v.numpy() for k, v in tensors.items() if k.startswith("log/")}
        arrays["active"] = arrays["active"].astype(bool)
        log = InteractionLog.from_state(arrays, strings)
        config = config_from_dict(meta["config"], device=device)
        trainer = Trainer(config, log)
        optim: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim/"):
                name, moment = key[len("optim/"):].rsplit("/", 1)
                optim.setdefault(name, {})[moment] = value
        student_optim: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("student_optim/"):
                name, moment = key[len("student_optim/"):].rsplit("/", 1)
                student_optim.setdefault(name, {})[moment] = value
        counters = tensors["counters"].tolist()
        trainer.load_state({"model": {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")},
                            "optim": optim, "generator": tensors["rng/generator"],
                            "samples_trained": counters[0], "epochs_trained": counters[1],
                            "learned_rows": counters[2],
                            "student": {k[len("student/"):]: v for k, v in tensors.items() if k.startswith("student/")},
                            "student_optim": student_optim})
        return trainer, meta

    def _prune(self) -> None:
        keep = set(self.versions()[-self.keep:]) | {self.promoted()}
        for version in self.versions():
            if version not in keep:
                for suffix in (".safetensors", ".json"):
                    (self.versions_dir / f"{version}{suffix}").unlink(missing_ok=True)
