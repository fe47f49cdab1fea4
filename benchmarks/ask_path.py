"""The way of one question through the code (issue #14's figures), for any checkout.

    python benchmarks/ask_path.py [--docs DIR] [--json]

Ingests a folder (default: this repo's docs/) into a temporary Milvus Lite store with the
default settings (MiniLM, hybrid search, the cross-lingual lexicon, rewrite=foreign), starts the
scripted LLM (tests/llm_server.py) and traces three questions through `Index.ask_stream` with
`sys.setprofile`, counting only calls into ossrag's own modules:

1. an English question;
2. the same question in Italian (the rewrite path: the LLM writes English search queries);
3. a follow-up in a conversation (the follow-up is rewritten to stand alone first).

For each it prints: the ossrag modules the question passes through (distinct, in the order
first entered); the distinct caller → callee module pairs; how many of those pairs call back up
(the callee imports the caller, directly or not: a call against the direction of the imports,
measured with grimp on the checkout's own import graph); and how many times the question is
tested for another language (`reads_foreign`) and the store's lexicon is asked for.
A generator resumed by its consumer counts as a call, as Python's profiler reports it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import grimp

from ossrag import Index, load_settings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from llm_server import Reply, ScriptedLLMServer  # noqa: E402

QUESTIONS = {
    "english": "How do I share one store between processes?",
    "italian": "Come posso condividere un archivio tra più processi?",
}
FOLLOW_UP = ("What does a search return?", "And how fast is it?")
# (module suffix, function) -> what a call means; a claim's own language test is not counted
COUNTED = {
    ("crosslingual", "reads_foreign"): "foreign-language tests",
    ("store", "Store.lexicon"): "lexicon fetches",
    ("milvus", "Store.lexicon"): "lexicon fetches",
}


class Tracer:
    """Records calls into ossrag modules while active."""

    def __init__(self) -> None:
        self.modules: dict[str, None] = {}
        self.pairs: set[tuple[str, str]] = set()
        self.counts = dict.fromkeys(COUNTED.values(), 0)
        self._stack: list[str | None] = []

    def __enter__(self) -> Tracer:
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)

    def _profile(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            own = module if module.startswith("ossrag") else None
            if own is not None:
                self.modules.setdefault(own)
                caller = next((m for m in reversed(self._stack) if m is not None), None)
                if caller is not None and caller != own:
                    self.pairs.add((caller, own))
                what = COUNTED.get((own.rsplit(".", 1)[-1], frame.f_code.co_qualname))
                if what and caller != "ossrag.generate.claims" and caller != "ossrag.claims":
                    self.counts[what] += 1
            self._stack.append(own)
        elif event == "return" and self._stack:
            self._stack.pop()


def climbs(pairs: set[tuple[str, str]], graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    """The pairs whose callee imports its caller: calls back up the import graph."""
    return sorted(
        (caller, callee)
        for caller, callee in pairs
        if caller in graph.modules
        and callee in graph.modules
        and graph.chain_exists(importer=callee, imported=caller)
    )


def trace(index: Index, question: str, history: list[dict[str, Any]]) -> Tracer:
    with Tracer() as tracer:
        for _ in index.ask_stream(question, history=history):
            pass
    return tracer


def run(docs: Path) -> dict[str, Any]:
    graph = grimp.build_graph("ossrag")
    answer = Reply(content="It is kept in one place [1].")
    with ScriptedLLMServer(answer) as llm, tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(db=f"{tmp}/store.db", base_url=llm.base_url, model="gpt-oss-20b")
        index = Index(settings)
        index.ingest([docs])
        index.ask("warm up: load the models and the lexicon once")
        runs: dict[str, Tracer] = {}
        for name, question in QUESTIONS.items():
            runs[name] = trace(index, question, [])
        first = index.ask(FOLLOW_UP[0])
        history = [
            {"role": "user", "content": FOLLOW_UP[0]},
            {"role": "assistant", "content": first.text},
        ]
        runs["follow-up"] = trace(index, FOLLOW_UP[1], history)
        index.close()
    report: dict[str, Any] = {}
    for name, tracer in runs.items():
        up = climbs(tracer.pairs, graph)
        report[name] = {
            "modules": list(tracer.modules),
            "module_pairs": len(tracer.pairs),
            "calls_back_up": len(up),
            "back_up": [f"{a} -> {b}" for a, b in up],
            **tracer.counts,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args.docs)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, row in report.items():
        print(f"{name}: {len(row['modules'])} modules, {row['module_pairs']} caller->callee "
              f"module pairs, {row['calls_back_up']} back up the imports, "
              f"{row['foreign-language tests']} foreign-language tests, "
              f"{row['lexicon fetches']} lexicon fetches")  # fmt: skip
        print("  modules: " + ", ".join(m.removeprefix("ossrag.") for m in row["modules"]))
        for pair in row["back_up"]:
            print(f"  back up: {pair}")


if __name__ == "__main__":
    main()
