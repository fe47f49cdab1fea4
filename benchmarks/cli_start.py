"""Start-up of the `ossrag` command: wall time of `ossrag --help` and of a one-shot search.

    python benchmarks/cli_start.py [--runs 10] [--search-runs 5] [--question Q] [--json]

Each run is a fresh process, `python -m ossrag ...` (what the `ossrag` script runs) with this
checkout first on PYTHONPATH, started in a temporary directory and timed from spawn to exit, its
output discarded. `--help` is the top-level help. The search is
`ossrag search QUESTION --mode hybrid --json` on a Milvus Lite store in a temporary directory,
built first by `ossrag ingest` from the markdown files of the repository's docs/ folder; one
untimed search runs before the timed ones (it loads the model files into the page cache). The
children get no OSSRAG_* variables and a config file that does not exist: default settings.
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed `ossrag --help` runs")
    parser.add_argument("--search-runs", type=int, default=5, help="timed `ossrag search` runs")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    # In an empty directory: no ./ossrag.toml, and no ./ossrag but this checkout's (PYTHONPATH).
    with tempfile.TemporaryDirectory() as tmp, chdir(tmp):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSSRAG_")}
        path = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env |= {"PYTHONPATH": path, "OSSRAG_CONFIG": str(Path(tmp) / "none.toml"), "COLUMNS": "100"}
        help_times = [wall(["--help"], env) for _ in range(args.runs)]

        docs = Path(tmp) / "docs"
        docs.mkdir()
        for page in sorted((REPO / "docs").glob("*.md")):
            shutil.copy(page, docs / page.name)
        env["OSSRAG_DB"] = str(Path(tmp) / "store.db")
        report = json.loads(
            ossrag(["ingest", str(docs), "--json"], env, capture_output=True).stdout
        )
        search = ["search", args.question, "--mode", "hybrid", "--json"]
        wall(search, env)  # untimed
        search_times = [wall(search, env) for _ in range(args.search_runs)]

    result: dict[str, Any] = {
        "help": figures(help_times),
        "search": {
            **figures(search_times),
            "mode": "hybrid",
            "files": report["files_added"],
            "chunks": report["chunks_embedded"],
        },
        "target_s": {"help": 0.3, "search": 0.6},
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    search_what = f", hybrid, {report['files_added']} files, {report['chunks_embedded']} chunks"
    for name, label, what in (("help", "--help", ""), ("search", "search", search_what)):
        got, target = result[name], result["target_s"][name]
        print(
            f"ossrag {label:<6}  best {got['best_s']:.3f} s  median {got['median_s']:.3f} s  "
            f"({got['runs']} runs{what}; target ≤ {target} s)"
        )
    print(f"load average (1 min) {result['load_average_1m']}")


if __name__ == "__main__":
    main()
