"""ossrag: local-first reasoning RAG over your documents with gpt-oss and Milvus."""
