"""ossrag: local-first reasoning RAG over your documents with gpt-oss and Milvus."""

from ossrag.config import Settings, load_settings
from ossrag.engine.index import Index
from ossrag.generate.answer import Answer
from ossrag.records import Chunk, Document, Passage

__all__ = ["Answer", "Chunk", "Document", "Index", "Passage", "Settings", "load_settings"]
