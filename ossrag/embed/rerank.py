"""Optional second-stage ranking by a cross-encoder (`OSSRAG_RERANKER`), off by default.

A cross-encoder reads the question and a passage together, which ranks better than comparing two
vectors but costs a forward pass per passage, so it only rescores the first stage's top
`rerank_depth`. No cross-encoder ships inside a PyPI package, so ossrag has none to turn on
offline; with one on disk (or a reachable hub), `st:<name or path>` loads it through
sentence-transformers, for example `st:cross-encoder/ms-marco-MiniLM-L-6-v2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ossrag.embed.encoders import quiet_offline_transformers
from ossrag.errors import EmbedderError, setting

__all__ = ["CrossEncoderReranker", "Reranker", "RerankerError", "load_reranker"]


class RerankerError(EmbedderError):
    """The reranker cannot be loaded; the message says what to change."""


class Reranker(Protocol):
    """What the retriever needs from a second-stage ranker."""

    name: str

    def score(self, question: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        """One relevance score a passage, higher is better, in [0, 1]."""


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder with one output (a sigmoid turns it into [0, 1])."""

    def __init__(self, model: str) -> None:
        quiet_offline_transformers()
        from sentence_transformers import CrossEncoder

        self.name = f"st:{model}"
        try:
            self._model = CrossEncoder(model, device="cpu")
        except Exception as exc:
            raise RerankerError(
                f"cannot load cross-encoder {model!r} (set {setting('reranker')}): "
                f"{str(exc).splitlines()[0]}"
            ) from None
        if self._model.num_labels != 1:
            raise RerankerError(
                f"{model!r} has {self._model.num_labels} outputs, a reranker needs one "
                f"(set {setting('reranker')})"
            )

    def score(self, question: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        scores = self._model.predict(
            [(question, passage) for passage in passages],
            batch_size=32,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.asarray(scores, dtype=np.float32).reshape(len(passages))


@lru_cache(maxsize=2)
def load_reranker(spec: str) -> Reranker | None:
    """The reranker named by `OSSRAG_RERANKER` ("" for none), loaded once per process."""
    if not spec:
        return None
    kind, _, ref = spec.partition(":")
    if kind == "st" and ref:
        return CrossEncoderReranker(ref)
    raise RerankerError(
        f"unknown reranker {spec!r} ({setting('reranker')}): use st:<cross-encoder name or path>, "
        "or leave it empty"
    )
