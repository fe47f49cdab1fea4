"""The HTTP door: an OpenAI-compatible API (chat completions, Responses), search, ingest jobs,
the web UI and the MCP mount, over the engine."""
