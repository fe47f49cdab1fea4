"""What the benchmarks share: where the shared corpora are, and the FAQ questions they time.

The benchmarks run as scripts, so this folder is on `sys.path` and `from common import …` works.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The shared corpora and question sets: $OSSRAG_SHARED, else ../shared beside the repository.
SHARED = Path(os.environ.get("OSSRAG_SHARED", REPO.parent / "shared"))
FAQ = SHARED / "corpus" / "milvus-docs" / "faq"

#: Questions over the Milvus FAQ, asked in turn by the serving and MCP benchmarks.
FAQ_QUESTIONS = [
    "How much data can Milvus store?",
    "Why is the search slow after inserting data?",
    "Does Milvus support inserting vectors with duplicate primary keys?",
    "What is the maximum vector dimension?",
    "How do I choose an index type?",
    "Why did the query return fewer results than limit?",
    "Can I update a vector in place?",
    "What is the difference between FLAT and IVF_FLAT?",
    "How does Milvus handle deletes?",
    "Why does my collection use so much memory?",
    "Is Milvus available on Windows?",
    "How do I back up data?",
]
