"""Stage 2, chunk: cut a `Document` into `Chunk`s that follow its headings, with line numbers.
Interface: `chunker.chunk_document`."""
