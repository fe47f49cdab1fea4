"""Stage 4, store: where chunks live and how they are searched. `milvus.Store` talks to Milvus
(Lite or a server) and keeps `memory.SearchIndex`, the in-memory copy searched on one machine;
both fuse the dense and BM25 routes as `fusion` says. `filters` narrows a search by path, type
and date."""
