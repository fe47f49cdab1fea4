"""The optional cross-encoder reranker, with a small cross-encoder built here (no hub needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_docs
from test_cli import run
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from ossrag.config import Settings
from ossrag.embed.encoders import Embedder, minilm_model_dir
from ossrag.embed.rerank import RerankerError, load_reranker
from ossrag.engine.index import Index
from ossrag.retrieve.retriever import Retriever

QUESTION = "Where does the engine keep inserted vectors?"


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer BERT cross-encoder with random weights and MiniLM's tokenizer, on disk."""
    folder = tmp_path_factory.mktemp("cross-encoder")
    torch.manual_seed(7)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=1,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(minilm_model_dir())).save_pretrained(folder)
    return folder


def test_the_reranker_orders_the_first_stage_by_its_own_scores(
    cross_encoder: Path, settings: Settings, embedder: Embedder, docs: Path
) -> None:
    spec = f"st:{cross_encoder}"
    ix = Index(settings.model_copy(update={"reranker": spec, "rerank_depth": 6}), embedder=embedder)
    try:
        ix.ingest([docs])
        first_stage = Retriever(ix.store, ix.embedder).search(QUESTION, k=6).passages
        reranker = load_reranker(spec)
        assert reranker is not None
        scores = reranker.score(QUESTION, [f"{p.heading}\n{p.text}" for p in first_stage])
        expected = sorted(zip(first_stage, scores, strict=True), key=lambda pair: -pair[1])[:3]

        result = ix.search(QUESTION, k=3)
        assert [p.chunk_id for p in result.passages] == [p.chunk_id for p, _ in expected]
        assert [p.score for p in result.passages] == pytest.approx([float(s) for _, s in expected])
        assert [p.rank for p in result.passages] == [1, 2, 3]
        assert all(0.0 <= p.score <= 1.0 for p in result.passages)
        # this model disagrees with the first stage, so the order above is the reranker's doing
        assert [p.chunk_id for p in result.passages] != [p.chunk_id for p in first_stage[:3]]
    finally:
        ix.close()


def test_a_bad_reranker_setting_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(RerankerError, match="unknown reranker 'onnx:x' \\(reranker\\)"):
        load_reranker("onnx:x")
    with pytest.raises(RerankerError, match=r"cannot load cross-encoder .*\(set reranker\)"):
        load_reranker(f"st:{tmp_path / 'missing'}")
    env = {"OSSRAG_DB": str(tmp_path / "s.db"), "OSSRAG_CONFIG": str(tmp_path / "none.toml")}
    docs = write_docs(tmp_path / "docs")
    assert run(["ingest", str(docs)], env)[0] == 0
    code, stdout, stderr = run(["search", "vectors"], env, OSSRAG_RERANKER="st:/no/such/model")
    assert code == 1 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and "OSSRAG_RERANKER" in stderr
