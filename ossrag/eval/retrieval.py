"""Retrieval evaluation: question sets in, Recall@k / MRR@10 / latency out.

A retrieved passage is relevant when its text contains one of the item's evidence strings after
collapsing runs of whitespace, so scores do not depend on how the corpus was chunked.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from platformdirs import user_cache_dir
from pydantic import BaseModel, ValidationError

from ossrag.choices import Mode
from ossrag.chunk.chunker import chunk_id
from ossrag.config import Settings
from ossrag.embed.encoders import DEFAULT_ENCODER, Embedder
from ossrag.engine.index import Index
from ossrag.engine.ingest import ProgressCallback
from ossrag.errors import EvalError
from ossrag.generate.rewrite import REWRITE_OFF
from ossrag.records import Chunk, Document, Passage
from ossrag.retrieve.retriever import Retriever
from ossrag.store.filters import Filter
from ossrag.store.milvus import SCHEMA_VERSION

RECALL_AT = (1, 3, 5, 10)
MISS_AT = 5  # a question whose evidence is not in this many passages is a miss
REWRITTEN = "queries rewritten by the LLM"  # a report's notice when every rewrite went through
_SPACE = re.compile(r"\s+")


class EvalItem(BaseModel):
    """One question of a set (format: ../shared/eval/README.md)."""

    id: str
    question: str
    lang: str = "en"
    source: str = ""
    evidence: list[str]
    answer: str = ""


def load_items(path: Path) -> list[EvalItem]:
    """Read a JSONL question set; a bad line is a one-line error naming file, line and field."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalError(f"{path}: {exc.strerror or exc}") from None
    items: list[EvalItem] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = EvalItem.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            raise EvalError(f"{path}:{number}: not JSON ({exc.msg})") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(part) for part in err["loc"]) or "item"
            raise EvalError(f"{path}:{number}: field {where!r}: {err['msg']}") from None
        if not item.evidence or not all(e.strip() for e in item.evidence):
            raise EvalError(f"{path}:{number}: field 'evidence' needs non-empty strings")
        items.append(item)
    if not items:
        raise EvalError(f"{path}: no questions")
    return items


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def first_relevant(texts: Sequence[str], evidence: Sequence[str]) -> int | None:
    """1-based rank of the first text holding any evidence string, or None."""
    wanted = [normalise(e) for e in evidence]
    for rank, text in enumerate(texts, 1):
        flat = normalise(text)
        if any(e in flat for e in wanted):
            return rank
    return None


def metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    """Recall@1/3/5/10 and MRR@10 from first-relevant ranks."""
    n = len(ranks)
    found = [r for r in ranks if r is not None]
    result: dict[str, float] = {"n": n}
    for k in RECALL_AT:
        result[f"recall@{k}"] = sum(1 for r in found if r <= k) / n if n else 0.0
    result["mrr@10"] = sum(1.0 / r for r in found if r <= 10) / n if n else 0.0
    return result


@dataclass
class Outcome:
    """How one question went."""

    item: EvalItem
    rank: int | None
    seconds: float
    top: list[Passage]
    expect: dict[str, Any] | None = None  # for a miss: where its source ranked (Index.expect)


@dataclass
class EvalReport:
    """Metrics overall and per language, latency, and the misses."""

    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    notice: str = ""

    def summary(self) -> dict[str, Any]:
        ranks = [o.rank for o in self.outcomes]
        by_lang: dict[str, list[int | None]] = {}
        for o in self.outcomes:
            by_lang.setdefault(o.item.lang, []).append(o.rank)
        latencies = np.array([o.seconds * 1000 for o in self.outcomes]) if self.outcomes else None
        return {
            **({"notice": self.notice} if self.notice else {}),
            **{k: _round(v) for k, v in metrics(ranks).items()},
            "by_lang": {
                lang: {k: _round(v) for k, v in metrics(r).items()}
                for lang, r in sorted(by_lang.items())
            },
            "latency_ms": {
                "p50": _round(float(np.percentile(latencies, 50))) if latencies is not None else 0,
                "p95": _round(float(np.percentile(latencies, 95))) if latencies is not None else 0,
                "mean": _round(float(latencies.mean())) if latencies is not None else 0,
            },
        }

    def misses(self, k: int = MISS_AT) -> list[dict[str, Any]]:
        """Questions whose evidence was not in the top k, with what came back instead."""
        return [
            {
                "id": o.item.id,
                "question": o.item.question,
                "expected": o.item.source,
                "rank": o.rank,
                "got": [f"{p.source} › {p.heading}" for p in o.top[:3]],
                **({"expect": o.expect} if o.expect else {}),
            }
            for o in self.outcomes
            if o.rank is None or o.rank > k
        ]


def _round(value: float) -> float:
    return round(float(value), 4)


SearchFn = Callable[[str, int], list[Passage]]


def evaluate(name: str, items: Sequence[EvalItem], search: SearchFn, k: int = 10) -> EvalReport:
    """Run every question through `search` (warmed up once) and score it."""
    report = EvalReport(name)
    if items:
        search(items[0].question, k)  # load indexes and the model before timing
    for item in items:
        started = time.perf_counter()
        passages = search(item.question, k)
        elapsed = time.perf_counter() - started
        rank = first_relevant([p.text for p in passages], item.evidence)
        report.outcomes.append(Outcome(item, rank, elapsed, passages))
    return report


def tutorial_chunks(doc: Document) -> list[Chunk]:
    """The original tutorial's recipe: the file split on "# ", each piece stored whole."""
    chunks: list[Chunk] = []
    line = 1
    for ordinal, piece in enumerate(doc.text.split("# ")):
        start, line = line, line + piece.count("\n")
        if piece.strip():
            chunks.append(
                Chunk(
                    id=chunk_id(doc.doc_id, ordinal, piece),
                    doc_id=doc.doc_id,
                    source=doc.source,
                    heading_path=(),
                    start_line=start,
                    end_line=line,
                    text=piece,
                )
            )
    return chunks


def eval_store_path(corpus: Path, variant: str) -> Path:
    """A throwaway store per corpus and recipe, reused while its manifest matches."""
    key = hashlib.sha256(f"{corpus.resolve()}\0{variant}".encode()).hexdigest()[:16]
    return Path(user_cache_dir("ossrag")) / "eval" / f"{corpus.name}-{key}.db"


class _Searcher:
    """The retrieval path as a SearchFn, remembering the questions whose rewrite failed."""

    def __init__(self, index: Index, mode: Mode, rewrite: bool, where: Filter | None) -> None:
        self.index, self.mode, self.rewrite, self.where = index, mode, rewrite, where
        self.failures: dict[str, str] = {}  # question → notice (the warm-up repeats one)

    def __call__(self, query: str, k: int) -> list[Passage]:
        result = self.index.search(query, k, self.mode, rewrite=self.rewrite, where=self.where)
        if self.rewrite and result.notice.startswith(REWRITE_OFF):
            self.failures.setdefault(query, result.notice)
        return result.passages


def _stored_pieces(retriever: Retriever) -> SearchFn:
    """The tutorial's search: the k nearest pieces as stored, dense only, none merged."""
    return lambda query, k: retriever.chunks(query, k, "dense").passages


def retrieval_reports(
    settings: Settings,
    items: Sequence[EvalItem],
    *,
    corpus: Path | None = None,
    k: int = 10,
    baseline: str | None = None,
    embedder: Embedder | None = None,
    progress: ProgressCallback | None = None,
    rewrite: bool = False,
    where: Filter | None = None,
    explain_misses: bool = False,
) -> list[EvalReport]:
    """ossrag's retriever (and optionally the tutorial's recipe) over one question set.

    With `explain_misses`, each ossrag question missed in the top 5 gets where its source
    ranked in each route (Index.expect).

    With `corpus`, each recipe gets its own throwaway store, synced incrementally so a second
    run reuses it; without, ossrag's configured store is used as it is. `where` restricts
    ossrag's searches to some files (see ossrag.store.filters).
    """
    recipes = ["ossrag"] + ([baseline] if baseline else [])
    reports = []
    for recipe in recipes:
        if recipe not in ("ossrag", "tutorial"):
            raise EvalError(f"unknown baseline {recipe!r}: use 'tutorial'")
        # The tutorial searched questions as written.
        recipe_settings = settings.model_copy(
            update={"translate": settings.translate and recipe == "ossrag"}
        )
        if corpus is not None:
            encoder = DEFAULT_ENCODER if settings.encoder == "auto" else settings.encoder
            variant = (
                f"{recipe}:{settings.embedder}:{encoder}:{settings.chunk_tokens}"
                f":{settings.chunk_overlap}:schema{SCHEMA_VERSION}"
            )
            recipe_settings = recipe_settings.model_copy(
                update={
                    "db": str(eval_store_path(corpus, variant)),
                    "collection": "eval",
                    "encoder": encoder,
                }
            )
        index = Index(recipe_settings, embedder=embedder)
        embedder = index.embedder
        try:
            if corpus is not None:
                chunker = tutorial_chunks if recipe == "tutorial" else None
                index.ingest([corpus], chunker=chunker, progress=progress)
            if recipe == "tutorial":
                report = evaluate(recipe, items, _stored_pieces(index.retriever), k)
            else:
                expand, notice = rewrite, ""
                if expand:
                    expand, detail = index.llm.check()
                    notice = REWRITTEN if expand else f"rewrite off: {detail}"
                searcher = _Searcher(index, settings.mode, expand, where)
                report = evaluate(recipe, items, searcher, k)
                if failures := list(searcher.failures.values()):
                    notice = (
                        f"{len(failures)} of {len(items)} rewrites failed (those questions were "
                        f"searched as written); the first: {failures[0]}"
                    )
                report.notice = notice
                if explain_misses:
                    for o in report.outcomes:
                        if (o.rank is None or o.rank > MISS_AT) and o.item.source:
                            o.expect = index.expect(o.item.question, o.item.source, k, where=where)
            reports.append(report)
        finally:
            index.close()
    return reports
