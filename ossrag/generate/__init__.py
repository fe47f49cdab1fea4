"""Stage 6, generate: passages to an answer with gpt-oss through an OpenAI-compatible server:
the client and the dialects of each server (`llm`, `servers`), every prompt (`prompts`), the
token budget, follow-up rewriting, streamed answers with citations (`answer`), structured
output, the agent loop, claim checks and usage."""
