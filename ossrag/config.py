"""Settings: flags override `OSSRAG_*` environment variables, which override the config file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from platformdirs import user_config_dir
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ossrag.choices import Effort, FusionName, Mode, Rewrite
from ossrag.errors import ConfigError, setting

# Copy-paste settings for the servers people run gpt-oss on.
LLM_PRESETS: dict[str, dict[str, str]] = {
    "ollama": {"base_url": "http://localhost:11434/v1", "model": "gpt-oss:20b"},
    "vllm": {"base_url": "http://localhost:8000/v1", "model": "openai/gpt-oss-20b"},
    "lmstudio": {"base_url": "http://localhost:1234/v1", "model": "openai/gpt-oss-20b"},
    "llamacpp": {"base_url": "http://localhost:8080/v1", "model": "gpt-oss-20b"},
    "openrouter": {"base_url": "https://openrouter.ai/api/v1", "model": "openai/gpt-oss-120b"},
}


def config_file() -> Path:
    """The config file in use: `OSSRAG_CONFIG`, else `./ossrag.toml`, else the user config dir."""
    if explicit := os.environ.get("OSSRAG_CONFIG"):
        return Path(explicit)
    local = Path("ossrag.toml")
    if local.exists():
        return local
    return Path(user_config_dir("ossrag")) / "config.toml"


class Settings(BaseSettings):
    """Every ossrag setting; each is also `OSSRAG_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="OSSRAG_", extra="ignore")

    # Store
    db: str = Field("./ossrag.db", description="Milvus Lite path, or a server URI (http://…)")
    token: str = Field("", description="Milvus server / Zilliz Cloud token")
    collection: str = "ossrag"
    collections: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="collections ossrag serve offers, each as model ossrag/<name> "
        "(the first is the default; none: collection alone)",
    )
    # Embedding and chunking
    embedder: str = Field(
        "minilm",
        description="minilm | st:<sentence-transformers name or path> | "
        "openai:<model> | pymilvus-default",
    )
    encoder: Literal["auto", "fp32", "int8"] = Field(
        "auto",
        description="MiniLM's precision: int8 or fp32; auto follows the store, else the default",
    )
    embed_base_url: str = Field("", description="endpoint for openai:<model> embedders")
    embed_api_key: str = ""
    chunk_tokens: int = Field(256, ge=32, description="max tokens a chunk may send the embedder")
    chunk_overlap: int = Field(32, ge=0)
    # Retrieval
    mode: Mode = "hybrid"
    fusion: FusionName = Field(
        "relative", description="hybrid fusion: relative (Lite) or weighted scores, or rrf"
    )
    dense_weight: float | None = Field(
        None, ge=0, le=1, description="dense share of relative / weighted fusion (0.8 / 0.6)"
    )
    top_k: int = Field(5, ge=1, le=100)
    reranker: str = Field(
        "", description="st:<cross-encoder name or path> rescoring the first stage's best passages"
    )
    rerank_depth: int = Field(20, ge=1, le=200, description="passages the reranker rescores")
    translate: bool = Field(
        True, description="search questions in other languages with the corpus's words (Lite)"
    )
    rewrite: Rewrite = Field(
        "foreign",
        description="questions `ask` and chat have the LLM turn into English search queries "
        "first: off, foreign (questions in another language), all",
    )
    # Generation
    llm: str = Field("", description="preset: " + ", ".join(LLM_PRESETS))
    base_url: str = LLM_PRESETS["ollama"]["base_url"]
    model: str = LLM_PRESETS["ollama"]["model"]
    api_key: str = Field("", description="falls back to OPENAI_API_KEY")
    effort: Effort = "medium"
    effort_style: Literal[
        "auto", "reasoning_effort", "openrouter", "chat_template_kwargs", "system", "none"
    ] = Field(
        "auto",
        description="how the effort is sent: auto follows the llm preset (LM Studio: the "
        "harmony system line, llama.cpp: chat_template_kwargs), else reasoning_effort",
    )
    max_tokens: int | None = Field(None, ge=1)
    timeout: float = Field(120.0, gt=0)
    # Context budget (ossrag.generate.budget) and the agent (ossrag.generate.agent)
    context_window: int | None = Field(
        None, ge=1024, description="model context in tokens: 131072 (gpt-oss), 8192 on Ollama"
    )
    answer_tokens: int | None = Field(
        None, ge=16, description="kept free for reasoning + answer: max_tokens, else ≤ 8192"
    )
    agent_max_calls: int = Field(6, ge=1, le=50, description="tool calls per agent answer")
    agent_timeout: float = Field(120.0, gt=0, description="seconds before the agent must answer")
    # HTTP server (ossrag serve); list settings take commas in the environment
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="keys clients send as Authorization: Bearer"
    )
    api_keys_file: str = Field("", description="file with one API key a line")
    allowed_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="directories POST /v1/ingest may read"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed by CORS (none: CORS off)"
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header names the server answers besides loopback and the bound "
        "address (DNS-rebinding defence; '*' turns the check off)",
    )
    insecure: bool = Field(False, description="allow a non-loopback host without API keys")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies get 413")
    max_upload_bytes: int = Field(
        50_000_000, ge=1024, description="larger files dropped on the web UI get 413"
    )
    request_timeout: float = Field(300.0, gt=0, description="seconds a request may take")

    watch: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="directories ossrag serve keeps in sync as they change"
    )

    @field_validator(
        "api_keys",
        "allowed_roots",
        "allowed_hosts",
        "cors_origins",
        "watch",
        "collections",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """A preset fills base_url and model unless they were given explicitly."""
        if isinstance(data, dict) and data.get("llm"):
            preset = LLM_PRESETS.get(str(data["llm"]))
            if preset is None:
                raise ValueError(
                    f"unknown llm preset {data['llm']!r}: use {', '.join(LLM_PRESETS)}"
                )
            for key, value in preset.items():
                data.setdefault(key, value)
        if isinstance(data, dict) and not data.get("api_key"):
            data["api_key"] = os.environ.get("OPENAI_API_KEY", "")
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, config_file()))

    @property
    def is_server(self) -> bool:
        return self.db.startswith(("http://", "https://", "tcp://", "grpc://"))


def load_settings(**overrides: Any) -> Settings:
    """Settings from flags (non-None overrides), env and file; a bad value raises ConfigError."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(part) for part in err["loc"]) or "settings"
        raise ConfigError(
            f"bad setting {setting(field) if field in Settings.model_fields else field}: "
            f"{err['msg']}"
        ) from None
    except Exception as exc:  # a malformed config file
        raise ConfigError(f"cannot read config file {config_file()}: {exc}") from None
