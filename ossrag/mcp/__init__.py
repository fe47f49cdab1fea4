"""The MCP door: the engine's search, sources and answers as MCP tools and resources."""
