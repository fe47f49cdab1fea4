"""ossrag: local-first reasoning RAG over your documents with gpt-oss and Milvus."""

from ossrag.config import Settings, load_settings
from ossrag.index import Index
from ossrag.models import Chunk, Document, Passage
from ossrag.rag import Answer

__all__ = ["Answer", "Chunk", "Document", "Index", "Passage", "Settings", "load_settings"]
