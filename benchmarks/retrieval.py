"""Retrieval quality, ossrag vs the original tutorial's recipe, on one question set.

    python benchmarks/retrieval.py [SET.jsonl] [--corpus DIR] [--mode hybrid] [--json]
        [--rewrite-with TRANSLATIONS.json]

Each recipe ingests the corpus into its own cached throwaway store (reused on the next run), then
answers every question; prints a markdown table (README-ready, with a row per language when the set
has several) or one JSON object. OSSRAG_TRANSLATE=false measures ossrag without cross-lingual
translation.

--rewrite-with adds a row for `--rewrite` with an ideal translator: the scripted LLM
(tests/llm_server.py, real HTTP) answers each rewrite request with the file's English version of
the question ({id: English}) and nothing else, so the row is the ceiling of what an LLM's
translation can bring, not a measurement of any model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from common import REPO, SHARED

from ossrag.config import Settings, load_settings
from ossrag.eval.retrieval import (
    RECALL_AT,
    REWRITTEN,
    EvalItem,
    EvalReport,
    load_items,
    retrieval_reports,
)

sys.path.insert(0, str(REPO / "tests"))
from llm_server import Reply, ScriptedLLMServer

REWRITE_ROW = "ossrag --rewrite, reference translations"


def rewrite_report(
    settings: Settings, items: list[EvalItem], corpus: Path, k: int, translations: Path
) -> EvalReport:
    """ossrag with --rewrite, the LLM's queries being the reference English of each question."""
    english = json.loads(translations.read_text(encoding="utf-8"))
    by_question = {item.question: english[item.id] for item in items if item.id in english}

    def translate(body: dict[str, Any]) -> Reply:
        question = body["messages"][-1]["content"]
        return Reply(content=by_question.get(question, question))

    with ScriptedLLMServer(Reply(respond=translate)) as server:
        scripted = settings.model_copy(update={"base_url": server.base_url, "model": "gpt-oss-20b"})
        report = retrieval_reports(scripted, items, corpus=corpus, k=k, rewrite=True)[0]
    if report.notice != REWRITTEN:
        sys.exit(f"error: {report.notice}")
    report.name = REWRITE_ROW
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "question_set", type=Path, nargs="?", default=SHARED / "eval" / "milvus-docs-dev.jsonl"
    )
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus" / "milvus-docs")
    parser.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--rewrite-with", type=Path, metavar="TRANSLATIONS", help="JSON {question id: English}"
    )
    args = parser.parse_args()
    if not args.question_set.exists() or not args.corpus.is_dir():
        sys.exit(f"error: need {args.question_set} and {args.corpus} (see --help)")
    logging.getLogger("pymilvus").setLevel(logging.ERROR)

    settings = load_settings(mode=args.mode)
    items = load_items(args.question_set)
    reports = retrieval_reports(settings, items, corpus=args.corpus, k=args.k, baseline="tutorial")
    if args.rewrite_with:
        reports.append(rewrite_report(settings, items, args.corpus, args.k, args.rewrite_with))
    summaries = {report.name: report.summary() for report in reports}
    if args.json:
        print(json.dumps(summaries))
        return
    keys = [f"recall@{n}" for n in RECALL_AT] + ["mrr@10"]
    print(f"{args.question_set.name}, n={len(items)}, corpus {args.corpus.name}\n")
    print("| recipe | " + " | ".join(keys) + " | p50 ms | p95 ms |")
    print("|---|" + "---|" * (len(keys) + 2))
    for name, s in summaries.items():
        cells = [f"{s[key]:.3f}" for key in keys]
        cells += [f"{s['latency_ms']['p50']:.1f}", f"{s['latency_ms']['p95']:.1f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
        if len(s["by_lang"]) > 1:
            for lang, part in sorted(s["by_lang"].items()):
                cells = [f"{part[key]:.3f}" for key in keys]
                print(f"| {name}, {lang} (n={part['n']:.0f}) | " + " | ".join(cells) + " | | |")


if __name__ == "__main__":
    main()
