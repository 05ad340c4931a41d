"""A stand-in provider server per test, engines pointed at it through the environment, and a
config file with short timeouts and backoff so fault tests take milliseconds."""

from __future__ import annotations

import json

import pytest

from editgraph.testing.standin import StandIn

KEYS = {"OPENAI_API_KEY": "sk-test-SECRET-0123456789abcdef", "GEMINI_API_KEY": "gm-test-SECRET-0123456789abcdef",
        "BFL_API_KEY": "bfl-test-SECRET-0123456789abcdef"}
FAST = {"retries": 3, "backoff_s": 0.01, "backoff_max_s": 0.05, "poll_interval_s": 0.01, "read_timeout_s": 10,
        "connect_timeout_s": 10, "total_timeout_s": 60, "poll_deadline_s": 60}


def engines_config(tmp_path, **extra) -> dict:
    cfg = {"providers": {p: dict(FAST) for p in ("openai", "gemini", "bfl")}, **extra}
    path = tmp_path / "engines.json"
    path.write_text(json.dumps(cfg))
    return cfg


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """A running stand-in (no delay), keys in the environment, the fast config file in place."""
    with StandIn(key=None) as s:
        for k, v in {**s.environ(), **KEYS}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("EDITGRAPH_ENGINES_CONFIG", str(tmp_path / "engines.json"))
        engines_config(tmp_path)
        yield s
