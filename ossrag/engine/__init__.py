"""The engine every door calls: `index.Index` (ingest, search, ask, conversations, agent),
`ingest` (folders into the store, incrementally) and `watch` (live sync)."""
