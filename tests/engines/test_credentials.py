"""Provider keys and limits: environment first, then the engines config file, then defaults; a
malformed config is an error naming the file and the setting; a key never prints."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest

from editgraph.engines import credentials
from editgraph.engines.errors import NotConfigured
from editgraph.errors import EditgraphError

KEY = "sk-config-0123456789abcdef"


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "engines.json"
    monkeypatch.setenv("EDITGRAPH_ENGINES_CONFIG", str(path))
    for provider in credentials.PROVIDERS.values():
        for name in provider.key_env:
            monkeypatch.delenv(name, raising=False)
    return path


def test_without_a_key_the_error_says_where_to_put_one(config_file):
    assert credentials.load_user_config() == {}  # no file: no settings
    config = credentials.provider_config("gemini")
    assert config.api_key is None and config.base_url == "https://generativelanguage.googleapis.com/v1beta" and config.max_concurrency == 4
    with pytest.raises(NotConfigured) as missing:
        config.key()
    assert str(missing.value) == f"no API key for gemini: set GEMINI_API_KEY or GOOGLE_API_KEY or add providers.gemini.api_key to {config_file}"


def test_the_config_file_gives_key_endpoint_and_limits_and_the_environment_wins(config_file, monkeypatch):
    config_file.write_text(json.dumps({"providers": {"openai": {
        "api_key": KEY, "base_url": "http://127.0.0.1:9/v1/", "max_concurrency": "2", "retries": "1", "backoff_s": 0.25}}}))
    config = credentials.provider_config("openai")
    assert config.key() == KEY and config.base_url == "http://127.0.0.1:9/v1" and config.max_concurrency == 2
    assert config.retries == 1 and config.backoff_s == 0.25 and config.read_timeout_s == 120.0
    assert KEY not in repr(config) and str(config.api_key) == "Secret('***')"
    assert credentials.known_secrets() == [KEY]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment-42")
    assert credentials.provider_config("openai").key() == "sk-from-the-environment-42"
    assert credentials.known_secrets() == ["sk-from-the-environment-42", KEY]


@pytest.mark.parametrize(
    "content, says",
    [
        ("{not json", "not JSON (Expecting property name enclosed in double quotes at line 1)"),
        ("[1, 2]", "expected a JSON object at the top, got list"),
        ('{"providers": {"bfl": "key"}}', "providers.bfl must be an object"),
        ('{"providers": {"bfl": {"max_concurrency": 0}}}', "bfl max_concurrency must be a whole number >= 1, got 0"),
        ('{"providers": {"bfl": {"max_concurrency": "many"}}}', "bfl max_concurrency must be a whole number >= 1, got 'many'"),
        ('{"providers": {"bfl": {"retries": "often"}}}', "providers.bfl.retries must be a number"),
    ],
)
def test_a_malformed_config_is_an_error_naming_the_file_and_setting(config_file, content, says):
    config_file.write_text(content)
    with pytest.raises(EditgraphError) as bad:
        credentials.provider_config("bfl")
    assert says in str(bad.value)
    if "max_concurrency" not in says:
        assert str(config_file) in str(bad.value)


def test_an_unreadable_config_or_an_unknown_provider_is_an_error(config_file):
    config_file.mkdir()  # a folder where the file should be
    with pytest.raises(EditgraphError, match=f"cannot read the engines config {config_file}"):
        credentials.load_user_config()
    with pytest.raises(EditgraphError, match="unknown provider 'dall-e'; known: openai, gemini, bfl"):
        credentials.provider_config("dall-e", user={})


def test_a_secret_is_neither_printed_nor_pickled_nor_copied():
    secret = credentials.Secret(KEY)
    assert repr(secret) == str(secret) == "Secret('***')" and secret.reveal() == KEY
    for leak in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError, match="cannot be pickled"):
            leak(secret)


def test_redaction_hides_a_key_whole_and_in_pieces_but_leaves_short_values():
    text = f"key {KEY}; head {KEY[:8]}...; echoed sk-****{KEY[-5:]}; pin 1234"
    assert credentials.redact(text, [KEY, "1234"]) == "key ***; head ***...; echoed sk-***; pin 1234"
