"""Answer comparison: models × reasoning efforts on a question set, optionally judged by an LLM.

Per (model, effort, question): the answer, its reasoning, time to first token, total time,
tokens/s, usage, the cited passages and a citation hit (a cited passage contains one of the
item's evidence strings, whitespace collapsed). A judge model can score correctness against the
reference answer and faithfulness to the passages (1–5, with a rationale). Rows are cached in a
JSONL file keyed by (model, effort, question id), so an interrupted run resumes where it
stopped. Retrieval runs once per question and is shared by every model.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir
from pydantic import BaseModel, Field, ValidationError

from ossrag.config import Settings
from ossrag.engine.index import Index
from ossrag.errors import LLMError
from ossrag.eval.retrieval import EvalItem, first_relevant
from ossrag.generate.answer import Answer, stream_answer
from ossrag.generate.llm import LLMClient
from ossrag.generate.prompts import JUDGE_PROMPT, format_context
from ossrag.retrieve.retriever import SearchResult


class Verdict(BaseModel):
    correctness: int = Field(ge=1, le=5)
    faithfulness: int = Field(ge=1, le=5)
    rationale: str = ""


@dataclass
class Row:
    """One answer of one model at one effort to one question."""

    model: str
    effort: str
    id: str
    question: str
    answer: str
    reasoning_chars: int
    ttft_ms: float
    total_ms: float
    tokens_per_s: float | None
    usage: dict[str, Any] | None
    cited: list[int]
    citation_hit: bool
    error: str = ""
    correctness: int | None = None
    faithfulness: int | None = None
    rationale: str = ""
    lang: str = ""
    reference: str = ""  # the question set's answer
    reasoning: str = ""
    passages: list[dict[str, Any]] = field(default_factory=list)  # the cited ones, with "n"
    claims: int = 0  # cited claims in the answer (ossrag.generate.claims)
    supported: int = 0  # of them, supported by the passages they cite
    unsupported: int = 0

    @property
    def key(self) -> str:
        return cache_key(self.model, self.effort, self.id)


def answers_cache_path(settings: Settings, question_set: Path) -> Path:
    """The default cache of a question set, per LLM server and store."""
    where = f"{settings.base_url}|{settings.db}|{settings.collection}|{question_set.resolve()}"
    digest = hashlib.sha256(where.encode()).hexdigest()[:12]
    return Path(user_cache_dir("ossrag")) / "answers" / f"{question_set.stem}-{digest}.jsonl"


def cache_key(model: str, effort: str, item_id: str) -> str:
    return f"{model}\t{effort}\t{item_id}"


def load_cache(path: Path | None) -> dict[str, Row]:
    """Rows of an earlier run (unreadable lines are skipped: they are simply redone)."""
    rows: dict[str, Row] = {}
    if path is None or not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = Row(**json.loads(line))
        except (ValueError, TypeError):
            continue
        rows[row.key] = row
    return rows


def _row(model: str, effort: str, item: EvalItem, answer: Answer) -> Row:
    usage = answer.usage or {}
    completion = usage.get("completion_tokens")
    timings = answer.timings
    decode_s = (timings["total_ms"] - timings["retrieve_ms"] - timings["ttft_ms"]) / 1000
    texts = [answer.passages[n - 1].text for n in answer.cited]
    return Row(
        model=model,
        effort=effort,
        id=item.id,
        question=item.question,
        answer=answer.text,
        reasoning_chars=len(answer.reasoning),
        ttft_ms=round(answer.timings["ttft_ms"], 1),
        total_ms=round(answer.timings["total_ms"] - answer.timings["retrieve_ms"], 1),
        tokens_per_s=round(completion / decode_s, 1) if completion and decode_s > 0 else None,
        usage=answer.usage,
        cited=answer.cited,
        citation_hit=first_relevant(texts, item.evidence) is not None,
        lang=item.lang,
        reference=item.answer,
        reasoning=answer.reasoning,
        passages=[{"n": n, **answer.passages[n - 1].to_dict()} for n in answer.cited],
        claims=len(answer.claims),
        supported=sum(c.verdict == "supported" for c in answer.claims),
        unsupported=sum(c.verdict == "unsupported" for c in answer.claims),
    )


def judge(judge_llm: LLMClient, item: EvalItem, result: SearchResult, row: Row) -> Row:
    """Scores from the judge model; an unreadable verdict leaves them empty, with the reason."""
    user = (
        f"{format_context(result.passages)}\n\n<question>\n{item.question}\n</question>\n\n"
        f"<reference>\n{item.answer}\n</reference>\n\n<answer>\n{row.answer}\n</answer>"
    )
    messages = [{"role": "system", "content": JUDGE_PROMPT}, {"role": "user", "content": user}]
    try:
        reply = judge_llm.complete(messages, effort="low")
        body = reply.content.strip().removeprefix("```json").removesuffix("```").strip()
        verdict = Verdict.model_validate_json(body)
    except ValidationError as exc:
        return replace(row, rationale=f"judge reply unreadable: {exc.errors()[0]['msg']}")
    except LLMError as exc:
        return replace(row, rationale=f"judge failed: {exc}")
    return replace(
        row,
        correctness=verdict.correctness,
        faithfulness=verdict.faithfulness,
        rationale=verdict.rationale,
    )


def compare(
    index: Index,
    items: Sequence[EvalItem],
    models: Sequence[str],
    efforts: Sequence[str],
    *,
    judge_model: str | None = None,
    cache: Path | None = None,
    progress: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Every (model, effort, question), from the cache when already done."""
    done = load_cache(cache)
    clients = {m: _client(index, m) for m in {*models, *([judge_model] if judge_model else [])}}
    results: dict[str, SearchResult] = {}
    rows: list[Row] = []
    try:
        for model in models:
            for effort in efforts:
                for item in items:
                    key = cache_key(model, effort, item.id)
                    if key in done:
                        rows.append(done[key])
                        continue
                    if item.id not in results:
                        results[item.id] = index.search(item.question)
                    row = _answer_row(index, clients[model], model, effort, item, results[item.id])
                    if judge_model and not row.error:
                        row = judge(clients[judge_model], item, results[item.id], row)
                    rows.append(row)
                    if cache is not None:
                        cache.parent.mkdir(parents=True, exist_ok=True)
                        with cache.open("a", encoding="utf-8") as f:
                            f.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
                    if progress:
                        progress(row)
    finally:
        for client in clients.values():
            client.close()
    return rows


def _client(index: Index, model: str) -> LLMClient:
    config = replace(index.llm.config, model=model)
    return LLMClient(config)


def _answer_row(
    index: Index, llm: LLMClient, model: str, effort: str, item: EvalItem, result: SearchResult
) -> Row:
    try:
        events = stream_answer(item.question, result, llm, effort=effort, budget=index.budget)
        answer = [e for e in events if isinstance(e, Answer)][-1]
        answer.claims = index.verify(answer.text, answer.passages)
    except LLMError as exc:
        timings = {"ttft_ms": 0.0, "total_ms": 0.0, "retrieve_ms": 0.0}
        empty = Answer(item.question, "", "", [], timings=timings)
        return replace(_row(model, effort, item, empty), error=str(exc))
    return _row(model, effort, item, answer)


def summarise(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per (model, effort): citation hit rate, judge means, latency and speed."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.model, row.effort), []).append(row)
    summary = []
    for (model, effort), group in groups.items():
        ok = [r for r in group if not r.error]
        judged = [r for r in ok if r.correctness is not None]
        speeds = [r.tokens_per_s for r in ok if r.tokens_per_s]
        claims = sum(r.claims for r in ok)
        summary.append(
            {
                "model": model,
                "effort": effort,
                "n": len(group),
                "errors": len(group) - len(ok),
                "citation_hit": _mean([float(r.citation_hit) for r in ok]),
                # Over all cited claims of the group: supported / claims, unsupported / claims.
                "citation_precision": _share(sum(r.supported for r in ok), claims),
                "unsupported_rate": _share(sum(r.unsupported for r in ok), claims),
                "correctness": _mean([float(r.correctness or 0) for r in judged]),
                "faithfulness": _mean([float(r.faithfulness or 0) for r in judged]),
                "ttft_ms_p50": _median([r.ttft_ms for r in ok]),
                "total_ms_p50": _median([r.total_ms for r in ok]),
                "tokens_per_s": _mean(speeds),
                "reasoning_chars": _mean([float(r.reasoning_chars) for r in ok]),
            }
        )
    return summary


EFFORT_GROWTH = 1.1  # reasoning at high effort must be this much longer than at low


def effort_notes(summary: Sequence[dict[str, Any]]) -> list[str]:
    """One line per model whose reasoning did not grow from low to high effort: its server
    most likely ignores the effort the way ossrag sends it."""
    chars = {(s["model"], s["effort"]): s["reasoning_chars"] for s in summary}
    notes = []
    for model in dict.fromkeys(s["model"] for s in summary):
        low, high = chars.get((model, "low")), chars.get((model, "high"))
        if low and high is not None and high <= low * EFFORT_GROWTH:
            notes.append(
                f"{model}: {high:.0f} characters of reasoning at high effort against {low:.0f} "
                "at low: the server seems to ignore the effort; set OSSRAG_EFFORT_STYLE (system "
                "sends harmony's Reasoning line, which every gpt-oss server reads)"
            )
    return notes


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None
