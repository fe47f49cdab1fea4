"""Milvus's "Build RAG with Milvus" tutorial with gpt-oss, in ossrag's library API.

The tutorial loads the Milvus FAQ pages (milvus_docs/en/faq/*.md), stores their embeddings in
Milvus Lite, retrieves the top 3 for "How is data stored in milvus?" and has an LLM answer from
them. Here the LLM is gpt-oss behind any OpenAI-compatible server (Ollama, vLLM, LM Studio,
llama.cpp), chunks follow the markdown headings, and the answer cites the passages it used::

    python examples/milvus_faq_tutorial.py milvus_docs/en/faq \
        --base-url http://localhost:11434/v1 --model gpt-oss:20b

Against the scripted server of tests/llm_server.py (its reasoning and answer are canned;
the FAQ of ../shared/corpus/milvus-docs, the MiniLM embedder and Milvus Lite are real), from an
empty folder, it printed::

    ingested 4 files: 76 chunks into milvus_faq.db
    question: How is data stored in milvus?
    [1] product_faq.md › Product FAQ › Where does Milvus store data? (lines 32-34)
    [2] product_faq.md › Product FAQ › Where does Milvus store data? (lines 38-38)
    [3] product_faq.md › Product FAQ › Why is there no vector data in etcd? (lines 40-42)
    reasoning: Passage [1] answers it: inserted data goes to object storage, metadata to etcd.
    answer: Milvus keeps inserted data as incremental logs in object storage, metadata in etcd [1].
    cited: [1]

tests/test_examples.py checks that it still does. To compare gpt-oss-20b, gpt-oss-120b and
another model on the same documents, see docs/clients.md#the-milvus-faq-tutorial.
"""

from __future__ import annotations

import argparse
import logging

from ossrag import Answer, Index, load_settings
from ossrag.generate.answer import Retrieved
from ossrag.generate.llm import ContentDelta, ReasoningDelta

QUESTION = "How is data stored in milvus?"


def printable(text: str) -> str:
    """Text from documents or the model with control characters (escape sequences) removed."""
    return "".join(c if c.isprintable() or c == "\n" else "\ufffd" for c in text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("faq", help="the FAQ folder: milvus_docs/en/faq")
    parser.add_argument("--db", default="milvus_faq.db", help="Milvus Lite store")
    parser.add_argument("--base-url", default="http://localhost:11434/v1")
    parser.add_argument("--model", default="gpt-oss:20b")
    parser.add_argument("--effort", default="low", choices=["low", "medium", "high"])
    args = parser.parse_args(argv)

    logging.getLogger("pymilvus").setLevel(logging.ERROR)  # Milvus Lite's harmless warnings
    settings = load_settings(db=args.db, base_url=args.base_url, model=args.model, top_k=3)
    index = Index(settings)
    try:
        report = index.ingest([args.faq], include=["*.md"])
        files = report.files_added + report.files_updated + report.files_unchanged
        print(f"ingested {files} files: {index.store.count()} chunks into {args.db}")
        print(f"question: {QUESTION}")
        label = ""
        for event in index.ask_stream(QUESTION, effort=args.effort):
            if isinstance(event, Retrieved):
                for n, p in enumerate(event.result.passages, 1):
                    where = f"{p.source} › {p.heading} (lines {p.start_line}-{p.end_line})"
                    print(printable(f"[{n}] {where}"))
            elif isinstance(event, ReasoningDelta | ContentDelta):
                kind = "reasoning" if isinstance(event, ReasoningDelta) else "answer"
                if kind != label:
                    print(("\n" if label else "") + f"{kind}: ", end="")
                    label = kind
                print(printable(event.text), end="", flush=True)
            elif isinstance(event, Answer):
                print(f"\ncited: {' '.join(f'[{n}]' for n in event.cited) or 'nothing'}")
    finally:
        index.close()


if __name__ == "__main__":
    main()
