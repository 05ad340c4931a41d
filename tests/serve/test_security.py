"""The token: required to start on a non-loopback host, then checked on every request and socket.

The server under test is configured exactly as `--host 0.0.0.0 --token T` configures it, but uvicorn
binds 127.0.0.1 only: the tests never open a port to the network.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from editgraph.cli.main import main as cli_main
from editgraph.serve.config import ServeConfig, StartRefused, check_start

from .conftest import free_port

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def public_server(tmp_path_factory):
    import uvicorn

    from editgraph.serve.app import create_app

    root = tmp_path_factory.mktemp("public")
    config = ServeConfig(data_dir=root / "data", host="0.0.0.0", token=TOKEN, cache_dir=root / "cache")
    check_start(config)  # what `editgraph serve --host 0.0.0.0 --token T` checks before binding
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def test_non_loopback_host_without_token_refuses_to_start(capsys, monkeypatch):
    monkeypatch.delenv("EDITGRAPH_TOKEN", raising=False)
    # exits before binding anything (the port given is never opened)
    assert cli_main(["serve", "--host", "0.0.0.0", "--port", str(free_port())]) == 2
    assert "refusing to listen on '0.0.0.0' without a token" in capsys.readouterr().err
    with pytest.raises(StartRefused, match="at least 8"):
        check_start(ServeConfig(data_dir=None, host="0.0.0.0", token="T"))  # type: ignore[arg-type]
    check_start(ServeConfig(data_dir=None, host="127.0.0.1"))  # type: ignore[arg-type]


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong-token-123"}, {"authorization": "Basic " + TOKEN}])
def test_http_without_the_right_token_is_401_json(public_server, headers):
    for method, path in (("GET", "/api/health"), ("GET", "/api/jobs"), ("POST", "/api/jobs"), ("GET", "/api/openapi.json")):
        r = httpx.request(method, f"http://{public_server}{path}", headers=headers, json={"workflow": "look"})
        assert r.status_code == 401, (method, path)
        assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"http://{public_server}/api/jobs?token=nope").status_code == 401


def test_socket_without_the_right_token_is_refused_with_401(public_server):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    ok = httpx.post(f"http://{public_server}/api/jobs", json={"workflow": "look"}, headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 202
    job = ok.json()["id"]
    for suffix, headers in (("", {}), ("?token=wrong-token-123", {}), ("", {"authorization": "Bearer wrong-token-123"})):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://{public_server}/api/jobs/{job}/events{suffix}", additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == 401
    # with the token (header or query), the same socket streams the job to its end
    for suffix, headers in (("", {"authorization": f"Bearer {TOKEN}"}), (f"?token={TOKEN}", {})):
        with connect(f"ws://{public_server}/api/jobs/{job}/events{suffix}", additional_headers=headers, open_timeout=10) as ws:
            first = ws.recv(timeout=30)
        assert '"event": "queued"' in first or '"event":"queued"' in first


def test_right_token_passes_and_the_page_shell_is_public(public_server):
    r = httpx.get(f"http://{public_server}/api/health", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["token_required"] is True
    page = httpx.get(f"http://{public_server}/")
    script = httpx.get(f"http://{public_server}/static/app.js")
    assert page.status_code == 200 and "<title>editgraph</title>" in page.text and script.status_code == 200
    assert TOKEN not in page.text and TOKEN not in script.text


def test_cors_is_closed_unless_configured(public_server):
    r = httpx.options(
        f"http://{public_server}/api/jobs",
        headers={"origin": "http://evil.example", "access-control-request-method": "POST", "authorization": f"Bearer {TOKEN}"},
    )
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(f"http://{public_server}/api/health", headers={"origin": "http://evil.example", "authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_the_rate_limit_is_a_sliding_minute_per_client(monkeypatch):
    import types

    from editgraph.serve import security

    now = [1000.0]
    monkeypatch.setattr(security, "time", types.SimpleNamespace(monotonic=lambda: now[0]))  # this module's clock only
    limiter = security.RateLimiter(per_minute=2)
    assert limiter.allow("a")  # t = 0 s
    now[0] += 20
    assert [limiter.allow("a"), limiter.allow("a")] == [True, False]  # t = 20 s: the second, then over
    assert limiter.allow("b")  # per client
    now[0] += 40.5
    assert [limiter.allow("a"), limiter.allow("a")] == [True, False]  # t = 60.5 s: the first left the window
    now[0] += 20
    assert limiter.allow("a")  # t = 80.5 s: the one from t = 20 s left too


def test_a_socket_server_without_the_denial_extension_closes_the_handshake_unauthorised():
    """Behind an ASGI server that cannot send an HTTP response on a socket, a socket without the
    token is refused at the handshake (close 1008), and the app never sees it."""
    import asyncio

    from editgraph.serve.security import TokenMiddleware

    reached = []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    async def receive():
        return {"type": "websocket.connect"}

    async def call(extensions: dict, query: bytes = b"") -> list[dict]:
        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "websocket", "path": "/api/jobs/x/events", "headers": [], "query_string": query, "extensions": extensions}
        await TokenMiddleware(app, TOKEN)(scope, receive, send)
        return sent

    assert asyncio.run(call({})) == [{"type": "websocket.close", "code": 1008}]
    denied = asyncio.run(call({"websocket.http.response": {}}, b"token=wrong-token-123"))
    assert [m["type"] for m in denied] == ["websocket.http.response.start", "websocket.http.response.body"] and denied[0]["status"] == 401
    assert b"wrong token" in denied[1]["body"] and reached == []
    assert asyncio.run(call({}, f"token={TOKEN}".encode())) == [] and reached == ["/api/jobs/x/events"]
