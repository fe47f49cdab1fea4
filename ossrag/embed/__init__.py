"""Stage 3, embed: text to vectors. `encoders` (MiniLM, ONNX fp32/int8, OpenAI-compatible
endpoints), `lexical` (BM25 terms, the sparse side), `crosslingual` (the word lexicon that
carries a question in another language to the words of the corpus), `rerank` (the
cross-encoder)."""
