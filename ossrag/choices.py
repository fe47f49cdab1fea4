"""The choices a setting, a flag or a request field may take, apart from the settings
themselves so that a door can name them without loading pydantic-settings."""

from __future__ import annotations

from typing import Literal

Effort = Literal["low", "medium", "high"]
Mode = Literal["hybrid", "dense", "bm25"]
FusionName = Literal["relative", "weighted", "rrf"]
Rewrite = Literal["off", "foreign", "all"]
