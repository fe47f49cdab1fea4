"""ossrag: local-first reasoning RAG over your documents with gpt-oss and Milvus.

The public names load on first use (PEP 562), so `import ossrag.cli` and `import ossrag.config`
do not bring in the engine, pymilvus or openai.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ossrag.config import Settings, load_settings
    from ossrag.engine.index import Index
    from ossrag.generate.answer import Answer
    from ossrag.records import Chunk, Document, Passage

_HOMES = {
    "Answer": "ossrag.generate.answer",
    "Chunk": "ossrag.records",
    "Document": "ossrag.records",
    "Index": "ossrag.engine.index",
    "Passage": "ossrag.records",
    "Settings": "ossrag.config",
    "load_settings": "ossrag.config",
}

__all__ = ["Answer", "Chunk", "Document", "Index", "Passage", "Settings", "load_settings"]


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module 'ossrag' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
