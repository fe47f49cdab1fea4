"""Mutation testing of the code that decides what users see, with mutmut, and its kill rate.

    python benchmarks/mutation.py [--area NAME ...] [--jobs 2] [--fresh] [--json]

mutmut (configured in pyproject.toml, [tool.mutmut]) copies ossrag into ./mutants, makes one
mutant per small change of each function (a `<` for a `<=`, a `+ 1` for a `- 1`, a string or
constant changed, an argument dropped, ...) and runs the fast tests that reach the function
against each: a mutant the tests let pass ("survived") is a change users could see that no test
notices. Only the functions listed in AREAS are run (the rest of each file is mutated but not
tested, to keep the run short), with the pure tests of those modules (no model, no store: the
`store` marker). Results are cached in ./mutants: a second run re-tests only what changed;
`--fresh` starts over. Prints the kill rate per area and the surviving mutants (`mutmut show
NAME` prints one's diff); the target is 85 % per area, and docs/testing.md lists the survivors
that are equivalent to the original.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.85

RANKING = "__init__ from_rows dense bm25 hybrid _relative _query_terms _bm25_scores _top".split()
# area -> mutmut names of its functions (module.x_function, module.xǁClassǁmethod), globbed
AREAS: dict[str, list[str]] = {
    "fusion and ranking": [
        "ossrag.embed.lexical.x_bm25_terms",
        *(f"ossrag.store.memory.xǁSearchIndexǁ{name}" for name in RANKING),
        "ossrag.retrieve.retriever.x_score_fusion",
    ],
    "neighbour merging and de-duplication": [
        "ossrag.retrieve.retriever.x_merge_neighbours",
        "ossrag.retrieve.retriever.x__continues",
        "ossrag.retrieve.retriever.x__opens_section",
        "ossrag.retrieve.retriever.x__joined",
    ],
    "chunk line ranges and heading paths": [
        "ossrag.chunk.markup.x__front_matter_end",
        "ossrag.chunk.markup.x_parse_markdown",
        "ossrag.chunk.markup.x__sections",
        *(
            f"ossrag.chunk.pack.xǁPackerǁ{name}"
            for name in ("line_of", "line_end", "render", "run", "shorten_path")
        ),
    ],
    "citation numbering": [
        "ossrag.generate.answer.x_cited_numbers",
        "ossrag.generate.structured.x_citation_numbers",
        "ossrag.generate.structured.x_validate",
    ],
    "reasoning splitter": [
        "ossrag.generate.llm.x__partial_marker_start",
        "ossrag.generate.llm.x_split_reasoning",
        *(
            f"ossrag.generate.llm.xǁReasoningSplitterǁ{name}"
            for name in ("__init__", "feed", "flush", "_emit", "_on_marker")
        ),
    ],
    "incremental-sync decisions": [
        "ossrag.engine.ingest.x_file_change",
        "ossrag.engine.ingest.x_files_removed",
        "ossrag.engine.ingest.x__is_under",
        "ossrag.engine.ingest.x_plan_chunks",
        "ossrag.engine.ingest.xǁChunkPlanǁvectors",
    ],
}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped"}
STATUS |= {36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout"}
STATUS |= {37: "caught by type check", -11: "segfault", -9: "segfault"}


def run_mutmut(patterns: list[str], jobs: int) -> float:
    """mutmut over the mutants of these functions; the wall time in seconds."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # test the mutated copy
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *patterns],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"mutmut failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - started


def results() -> dict[str, str]:
    """Every mutant's status, from mutmut's metadata files in ./mutants."""
    statuses: dict[str, str] = {}
    for meta in (REPO / "mutants").rglob("*.py.meta"):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses |= {name: STATUS.get(code, "suspicious") for name, code in codes.items()}
    return statuses


def report(areas: list[str], statuses: dict[str, str]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for area in areas:
        functions = AREAS[area]
        mine = {
            name: status
            for name, status in statuses.items()
            if re.sub(r"__mutmut_\d+$", "", name) in functions
        }
        tested = [name for name, status in mine.items() if status not in ("skipped",)]
        killed = sorted(name for name in tested if mine[name] in KILLED)
        survived = sorted(
            (name for name in tested if mine[name] not in KILLED),
            key=lambda n: (n.rsplit("__mutmut_", 1)[0], int(n.rsplit("_", 1)[1])),
        )
        rows[area] = {
            "mutants": len(tested),
            "killed": len(killed),
            "kill_rate": round(len(killed) / len(tested), 3) if tested else None,
            "survived": {name: mine[name] for name in survived},
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--area", action="append", choices=list(AREAS), help="default: all")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--fresh", action="store_true", help="forget cached results first")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    areas = args.area or list(AREAS)
    if args.fresh:
        shutil.rmtree(REPO / "mutants", ignore_errors=True)
    patterns = [f"{function}__mutmut_*" for area in areas for function in AREAS[area]]
    seconds = run_mutmut(patterns, args.jobs)
    rows = report(areas, results())
    if args.json:
        print(json.dumps({"seconds": round(seconds, 1), "areas": rows}, indent=2))
        return
    print(f"mutmut: {seconds:.0f} s with {args.jobs} jobs\n")
    print(f"{'area':<40} {'mutants':>8} {'killed':>8} {'rate':>7}")
    for area, row in rows.items():
        rate = f"{row['kill_rate']:.1%}" if row["kill_rate"] is not None else "-"
        mark = "" if row["kill_rate"] is not None and row["kill_rate"] >= TARGET else "  < 85 %"
        print(f"{area:<40} {row['mutants']:>8} {row['killed']:>8} {rate:>7}{mark}")
    for area, row in rows.items():
        if row["survived"]:
            print(f"\nsurvived in {area} (mutmut show NAME):")
            for name, status in row["survived"].items():
                print(f"  {name}  [{status}]")


if __name__ == "__main__":
    main()
