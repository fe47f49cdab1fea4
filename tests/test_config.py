"""Where a setting comes from: flags over `OSSRAG_*` variables over the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ossrag.config import Settings, load_settings
from ossrag.errors import ConfigError


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ossrag.toml"
    monkeypatch.setenv("OSSRAG_CONFIG", str(path))
    return path


def test_a_flag_beats_the_environment_which_beats_the_file(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text('top_k = 4\nmode = "dense"\nport = 9000\n')
    monkeypatch.setenv("OSSRAG_TOP_K", "3")
    monkeypatch.setenv("ossrag_mode", "bm25")  # any case, as pydantic-settings read it
    settings = load_settings(top_k=2, port=None)  # None: not given
    assert (settings.top_k, settings.mode, settings.port) == (2, "bm25", 9000)
    assert Settings().top_k == 3  # the library's own Settings() reads them too


def test_lists_take_commas_in_the_environment_and_arrays_in_the_file(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text('allowed_roots = ["/a", "/b"]\nunknown_key = 1\n')  # unknown keys ignored
    monkeypatch.setenv("OSSRAG_API_KEYS", " k1, k2 ,,")
    monkeypatch.setenv("OSSRAG_NOT_A_SETTING", "x")
    settings = load_settings()
    assert (settings.allowed_roots, settings.api_keys) == (["/a", "/b"], ["k1", "k2"])
    assert (settings.translate, settings.collections) == (True, [])  # defaults


def test_a_bad_value_names_its_setting_and_a_bad_file_its_path(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OSSRAG_TRANSLATE", "maybe")
    with pytest.raises(
        ConfigError, match=r"^bad setting translate: Input should be a valid boolean"
    ):
        load_settings()
    monkeypatch.delenv("OSSRAG_TRANSLATE")
    config.write_text("top_k = [\n")
    with pytest.raises(ConfigError, match=rf"^cannot read config file {config}: "):
        load_settings()
