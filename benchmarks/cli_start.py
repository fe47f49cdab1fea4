"""Start-up of the `ossrag` command: wall time of `ossrag --help` and of a one-shot search.

    python benchmarks/cli_start.py [--runs 10] [--search-runs 5] [--question Q]
                                   [--db STORE [--db-question Q]] [--no-bytecode-cache] [--json]

Each run is a fresh process, `python -m ossrag ...` (what the `ossrag` script runs) with this
checkout first on PYTHONPATH, started in a temporary directory and timed from spawn to exit, its
output discarded. `--help` is the top-level help. The search is
`ossrag search QUESTION --mode hybrid --json` on a Milvus Lite store in a temporary directory,
built first by `ossrag ingest` from the markdown files of the repository's docs/ folder. Timed:

- `first`: the first search after that ingest (the ingest left the index and its sidecar);
- `search`: the searches after it (the figure with the target);
- `no sidecar`: searches each started with the store's sidecar deleted, so each opens Milvus
  Lite to read the collection info (what every search cost before the sidecar);
- with `--db`, also the same search (`--db-question`) on an existing store, e.g. one ingested
  from the milvus-docs corpus, after one untimed run (which leaves its sidecar if it had none).

The children get no OSSRAG_* variables and a config file that does not exist: default settings.
They compile to a bytecode cache of their own, in the temporary directory (as an installed
ossrag has its .pyc files; untimed runs fill it first), unless `--no-bytecode-cache`: then they
inherit this environment's (with PYTHONDONTWRITEBYTECODE set, every run compiles the checkout).
Prints the best and the median of each (targets: help ≤ 0.3 s, search ≤ 0.6 s) and the load
average, since other work on the machine slows every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import chdir
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUESTION = "How are dense and BM25 results fused in hybrid search?"
DB_QUESTION = "How do I back up data?"
TARGETS = {"help": 0.3, "search": 0.6}


def ossrag(args: list[str], env: dict[str, str], **run: Any) -> subprocess.CompletedProcess[str]:
    """`python -m ossrag ARGS`, in the current directory (a temporary one); it must succeed."""
    cmd = [sys.executable, "-m", "ossrag", *args]
    return subprocess.run(cmd, env=env, text=True, check=True, **run)


def wall(args: list[str], env: dict[str, str]) -> float:
    """Seconds from spawning `python -m ossrag ARGS` to its exit."""
    started = time.perf_counter()
    ossrag(args, env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def figures(times: list[float]) -> dict[str, Any]:
    return {
        "runs": len(times),
        "best_s": round(min(times), 3),
        "median_s": round(statistics.median(times), 3),
    }


def without_sidecar(db: Path, search: list[str], env: dict[str, str]) -> float:
    """One search with the store's sidecars deleted first: it opens Milvus Lite."""
    for sidecar in (db / "ossrag-search").glob("*.current.json"):
        sidecar.unlink()
    return wall(search, env)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed `ossrag --help` runs")
    parser.add_argument("--search-runs", type=int, default=5, help="timed runs of each search")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--db", type=Path, help="an existing Lite store to time a search on too")
    parser.add_argument("--db-question", default=DB_QUESTION)
    parser.add_argument("--no-bytecode-cache", action="store_true", help="inherit PYTHON* vars")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    # In an empty directory: no ./ossrag.toml, and no ./ossrag but this checkout's (PYTHONPATH).
    with tempfile.TemporaryDirectory() as tmp, chdir(tmp):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSSRAG_")}
        path = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env |= {"PYTHONPATH": path, "OSSRAG_CONFIG": str(Path(tmp) / "none.toml"), "COLUMNS": "100"}
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "bytecode")
            wall(["--help"], env)  # untimed: compiles what --help imports
        help_times = [wall(["--help"], env) for _ in range(args.runs)]

        docs = Path(tmp) / "docs"
        docs.mkdir()
        for page in sorted((REPO / "docs").glob("*.md")):
            shutil.copy(page, docs / page.name)
        db = Path(tmp) / "store.db"
        env["OSSRAG_DB"] = str(db)
        report = json.loads(
            ossrag(["ingest", str(docs), "--json"], env, capture_output=True).stdout
        )
        search = ["search", args.question, "--mode", "hybrid", "--json"]
        first = wall(search, env)
        search_times = [wall(search, env) for _ in range(args.search_runs)]
        slow_times = [without_sidecar(db, search, env) for _ in range(args.search_runs)]
        wall(search, env)  # leaves the sidecar again

        store_times: list[float] = []
        if args.db is not None:
            on_db = ["search", args.db_question, "--db", str(args.db.resolve()), "--json"]
            wall(on_db, env)  # untimed
            store_times = [wall(on_db, env) for _ in range(args.search_runs)]

    result: dict[str, Any] = {
        "help": figures(help_times),
        "search": {
            **figures(search_times),
            "first_s": round(first, 3),
            "mode": "hybrid",
            "files": report["files_added"],
            "chunks": report["chunks_embedded"],
        },
        "search_no_sidecar": figures(slow_times),
        "bytecode_cache": not args.no_bytecode_cache,
        "target_s": TARGETS,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if store_times:
        result["search_db"] = {**figures(store_times), "db": str(args.db), "mode": "hybrid"}
    if args.json:
        print(json.dumps(result))
        return
    rows = [
        ("--help", result["help"], "", TARGETS["help"]),
        (
            "search",
            result["search"],
            f", hybrid, {report['files_added']} files, {report['chunks_embedded']} chunks; "
            f"the first after the ingest {first:.3f} s",
            TARGETS["search"],
        ),
        ("search", result["search_no_sidecar"], ", the same, each with no sidecar", None),
    ]
    if store_times:
        rows.append(("search", result["search_db"], f", hybrid, on {args.db}", TARGETS["search"]))
    for label, got, what, target in rows:
        aim = f"; target ≤ {target} s" if target else ""
        print(
            f"ossrag {label:<6}  best {got['best_s']:.3f} s  median {got['median_s']:.3f} s  "
            f"({got['runs']} runs{what}{aim})"
        )
    cache = "own bytecode cache" if result["bytecode_cache"] else "no bytecode cache of their own"
    print(f"children: {cache}; load average (1 min) {result['load_average_1m']}")


if __name__ == "__main__":
    main()
