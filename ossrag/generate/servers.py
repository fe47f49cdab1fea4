"""What each gpt-oss server does its own way, in one place: which server a base URL is, how it
takes a reasoning effort, where it wants earlier reasoning back, and its default context.

A server is known by the preset the settings came from (`llm`), else guessed from the base URL:
OpenRouter by its host, a local server by its default port (config.LLM_PRESETS).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ossrag.config import LLM_PRESETS

# How each server takes an effort. LM Studio ignores `reasoning_effort` on chat completions (its
# UI setting wins), so harmony's own `Reasoning: high` system line is sent; llama.cpp reads it
# from the chat template's kwargs (newer builds also take the field).
SERVER_EFFORT_STYLES = {
    "ollama": "reasoning_effort",
    "vllm": "reasoning_effort",
    "lmstudio": "system",
    "llamacpp": "chat_template_kwargs",
    "openrouter": "openrouter",
}
DEFAULT_EFFORT_STYLE = "reasoning_effort"  # OpenAI's field, for servers not known
# Servers that want an assistant's earlier reasoning back as `reasoning_content`.
REASONING_CONTENT = frozenset({"lmstudio", "llamacpp"})
GPT_OSS_CONTEXT = 131_072  # gpt-oss's own window
OLLAMA_CONTEXT = 8_192  # Ollama's default num_ctx for gpt-oss, unless the user raised it

_PORTS = {
    port: name
    for name, preset in LLM_PRESETS.items()
    if (port := urlsplit(preset["base_url"]).port) and name != "vllm"  # 8000 is too common
}


def server_of(base_url: str, preset: str = "") -> str:
    """The server a preset names, else the one the base URL looks like; "" when unknown."""
    if preset in LLM_PRESETS:
        return preset
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if host == "openrouter.ai" or host.endswith(".openrouter.ai"):
        return "openrouter"
    return _PORTS.get(parts.port, "") if parts.port else ""


def effort_style(base_url: str, preset: str = "") -> str:
    """How this server takes a reasoning effort (one of llm.EFFORT_STYLES)."""
    return SERVER_EFFORT_STYLES.get(server_of(base_url, preset), DEFAULT_EFFORT_STYLE)


def reasoning_field(base_url: str, preset: str = "") -> str:
    """Where the server expects earlier reasoning in an assistant message."""
    server = server_of(base_url, preset)
    return "reasoning_content" if server in REASONING_CONTENT else "reasoning"


def default_context(base_url: str, preset: str = "") -> int:
    """The context window to assume when none is set."""
    return OLLAMA_CONTEXT if server_of(base_url, preset) == "ollama" else GPT_OSS_CONTEXT
