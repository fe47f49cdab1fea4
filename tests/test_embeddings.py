"""Embedders: the offline default, an OpenAI-compatible endpoint, and their failures."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from llm_server import ScriptedLLMServer

from ossrag.config import load_settings
from ossrag.embed.encoders import (
    Embedder,
    MiniLMEmbedder,
    QueryBatcher,
    SentenceTransformerEmbedder,
    Vectors,
    load_embedder,
    minilm_model_dir,
    onnx_cache_dir,
)
from ossrag.engine.index import Index
from ossrag.errors import EmbedderError, StoreError


def test_default_embedder_is_normalised_and_semantic(embedder: Embedder) -> None:
    vectors = embedder.embed(["Where is data stored?", "Data is kept in object storage.", "Pizza"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_passages_get_sentence_transformers_vectors(embedder: Embedder) -> None:
    """The ONNX encoder gives PyTorch's vectors, in any batch order, also past the window."""
    texts = ["BM25", "Milvus flushes growing segments to object storage. " * 8, "word " * 400]
    texts += [f"passage {i} about partitions" for i in range(10)]
    pytorch = SentenceTransformerEmbedder.embed(embedder, texts)  # type: ignore[arg-type]
    assert np.allclose(embedder.embed(texts), pytorch, atol=1e-4)
    assert embedder.embed([]).shape == (0, 384)


def test_query_path_matches_batch_path(embedder: Embedder) -> None:
    text = "How does Milvus flush data to persistent storage?"
    assert float(embedder.embed_query(text) @ embedder.embed([text])[0]) > 0.9999


def test_padded_query_batch_matches_one_by_one(embedder: Embedder) -> None:
    texts = ["Where?", "How does Milvus flush data to persistent storage in a cluster?", "BM25"]
    batch = embedder.embed_queries(texts)
    single = np.stack([embedder.embed_query(text) for text in texts])
    assert batch.shape == (3, 384)
    assert np.allclose(batch, single, atol=1e-5)


class SlowRecorder:
    """The real embedder, slowed down on its first batch so that other queries queue up."""

    def __init__(self, inner: Embedder, fail: bool = False) -> None:
        self.inner, self.fail = inner, fail
        self.name, self.max_tokens, self.dim = inner.name, inner.max_tokens, inner.dim
        self.batches: list[int] = []

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        self.batches.append(len(texts))
        if len(self.batches) == 1:
            time.sleep(0.3)
        if self.fail:
            raise EmbedderError("embedding endpoint down")
        return self.inner.embed_queries(texts)


def test_query_batcher_shares_one_call_between_concurrent_queries(embedder: Embedder) -> None:
    recorder = SlowRecorder(embedder)
    batcher = QueryBatcher(recorder)  # type: ignore[arg-type]
    texts = [f"question number {i} about vector search" for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(batcher.embed_query, "warm")
        time.sleep(0.05)  # the worker is now busy with "warm": the rest queue behind it
        vectors = list(pool.map(batcher.embed_query, texts))
    assert first.result().shape == (384,)
    assert recorder.batches[0] == 1 and sum(recorder.batches) == 13
    assert max(recorder.batches[1:]) > 1 and len(recorder.batches) < 13
    assert np.allclose(np.stack(vectors), embedder.embed_queries(texts), atol=1e-5)


def test_query_batcher_gives_each_caller_the_embedders_error(embedder: Embedder) -> None:
    batcher = QueryBatcher(SlowRecorder(embedder, fail=True))  # type: ignore[arg-type]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.embed_query, f"q{i}") for i in range(4)]
    for future in futures:
        with pytest.raises(EmbedderError, match="endpoint down"):
            future.result()


def test_token_count_includes_special_tokens_and_no_padding(embedder: Embedder) -> None:
    assert embedder.count_tokens("hello world") == 4  # [CLS] hello world [SEP]
    assert embedder.count_tokens("word " * 400) == 402  # not truncated at the window


def test_tampered_weights_are_refused_when_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights are read, and checked, only to export the encoder (a search through an
    export of the pinned ones reads none): with no export yet, tampered ones stop the first
    question."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model_dir = tmp_path / "model"
    shutil.copytree(minilm_model_dir(), model_dir)
    with (model_dir / "model.safetensors").open("r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    tampered = MiniLMEmbedder(model_dir=model_dir)
    with pytest.raises(EmbedderError, match="does not match the pinned"):
        tampered.embed_query("Where is data kept?")
    assert not list((tmp_path / "cache").rglob("model.onnx"))  # nothing exported


def test_openai_compatible_endpoint() -> None:
    with ScriptedLLMServer(embedding_dim=32) as server:
        embedder = load_embedder("openai:test-embed", server.base_url)
        vectors = embedder.embed(["object storage", "object storage", "pizza"])
        assert embedder.dim == 32 and vectors.shape == (3, 32)
        assert np.allclose(vectors[0], vectors[1])
        assert embedder.embed_query("object storage") @ vectors[0] == pytest.approx(1.0)


def test_openai_endpoint_down_is_one_line() -> None:
    embedder = load_embedder("openai:test-embed", "http://127.0.0.1:9/v1")
    with pytest.raises(
        EmbedderError, match=r"127\.0\.0\.1:9.*\(set embed_base_url / embedder\)"
    ) as caught:
        embedder.embed(["x"])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonsense", "unknown embedder 'nonsense'"),
        ("openai:x", "needs embed_base_url"),
        ("pymilvus-default", "pymilvus"),
        ("st:/no/such/model", "cannot load sentence-transformers model"),
    ],
)
def test_bad_embedder_specs_fail_fast_and_clearly(spec: str, message: str) -> None:
    with pytest.raises(EmbedderError, match=message):
        load_embedder(spec)


def test_query_encoder_is_exported_once_and_a_damaged_copy_replaced(
    embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    text = "How does Milvus flush data to persistent storage?"
    fresh = MiniLMEmbedder()
    assert float(fresh.embed_query(text) @ embedder.embed([text])[0]) > 0.9999
    (exported,) = (tmp_path / "ossrag" / "models").glob("minilm-*/model.onnx")
    weights = exported.with_name("model.onnx.data")  # beside the graph: the session maps them
    assert exported.stat().st_size < 100_000 and weights.stat().st_size > 80_000_000
    exported.write_bytes(b"not a model")
    again = MiniLMEmbedder()
    assert float(again.embed_query(text) @ embedder.embed([text])[0]) > 0.9999
    assert exported.stat().st_size > 1_000 and weights.stat().st_size > 80_000_000
    assert [p.name for p in exported.parents[1].iterdir()] == [exported.parent.name]


# --------------------------------------------------------------------------- int8 encoder


@pytest.fixture(scope="module")
def int8() -> MiniLMEmbedder:
    return MiniLMEmbedder(encoder="int8")


def test_int8_encoder_stays_close_to_fp32(embedder: Embedder, int8: MiniLMEmbedder) -> None:
    texts = ["BM25", "Milvus flushes growing segments to object storage. " * 8, "word " * 400]
    texts += ["Where does Milvus store data?", "Come si crea una partizione?"]
    cosines = (embedder.embed(texts) * int8.embed(texts)).sum(axis=1)
    assert cosines.min() > 0.98, cosines
    queries = (embedder.embed_queries(texts) * int8.embed_queries(texts)).sum(axis=1)
    assert queries.min() > 0.98, queries
    assert int8.name == "minilm-int8" and int8.dim == 384
    assert int8.embed([]).shape == (0, 384)
    cached = sorted(p.parent.name for p in onnx_cache_dir().glob("minilm-*-int8-ort*/model.onnx"))
    assert any(name.endswith(f"-fused-int8-ort{onnxruntime.__version__}") for name in cached)


def test_a_new_store_is_built_int8_by_default(
    tmp_path: Path, docs: Path, int8: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OSSRAG_ENCODER")  # OSSRAG_ENCODER=auto, the default
    index = Index(load_settings(db=str(tmp_path / "s.db")))
    index.ingest([docs])
    assert index.store.info().embedder == "minilm-int8"  # type: ignore[union-attr]
    passages = index.search("Where does the engine keep data?").passages
    assert passages[0].source == "guide/storage.md"
    index.close()


def test_a_store_keeps_the_encoder_it_was_built_with(
    tmp_path: Path, docs: Path, int8: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OSSRAG_ENCODER")  # auto: follow the store
    db = str(tmp_path / "s.db")
    built = Index(load_settings(db=db, encoder="int8"))
    built.ingest([docs])
    assert built.store.info().embedder == "minilm-int8"  # type: ignore[union-attr]
    built.close()
    auto = Index(load_settings(db=db))  # OSSRAG_ENCODER=auto follows the store
    assert auto.embedder.name == "minilm-int8"
    assert auto.search("Where does the engine keep data?").passages[0].source == "guide/storage.md"
    auto.close()
    forced = Index(load_settings(db=db, encoder="fp32"))
    with pytest.raises(StoreError, match=r"built with embedder minilm-int8 .*, not minilm "):
        forced.search("Where does the engine keep data?")
    forced.close()


def test_encoder_specs() -> None:
    assert load_embedder("minilm-int8").name == "minilm-int8"
    assert load_embedder("minilm", encoder="int8").name == "minilm-int8"
    assert load_embedder("minilm-fp32").name == "minilm"
    with pytest.raises(EmbedderError, match="unknown encoder 'int4'"):
        MiniLMEmbedder(encoder="int4")  # type: ignore[arg-type]
