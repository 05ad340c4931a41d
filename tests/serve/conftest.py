"""A live `editgraph serve` for the tests: a real process on 127.0.0.1, driven over HTTP and WebSocket.

The server is started as `python -m editgraph.cli.main serve` (what `editgraph serve` runs) with its own data
folder and cache folder, the session's tiny models and 2 torch threads (as the test process, so
its outputs compare byte for byte with in-process CLI runs).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import fastapi  # noqa: E402,F401  (the test extra installs the server; a missing one is an error, not a skip)
import uvicorn  # noqa: E402,F401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, data_dir: Path, cache_dir: Path, *extra: str, port: int | None = None):
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        self.extra = extra
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 60) -> "LiveServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "editgraph.cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--cache-dir", str(self.cache_dir), "--threads", "2", "--log-level", "warning", *self.extra]
        env = {**os.environ, "EDITGRAPH_CACHE_DIR": str(self.cache_dir)}
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1, headers=self.auth()).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log.read_text()}")

    def auth(self) -> dict[str, str]:
        if "--token" in self.extra:
            return {"authorization": "Bearer " + self.extra[self.extra.index("--token") + 1]}
        return {}

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    # --- client helpers ------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, headers=self.auth())

    def submit(self, workflow, params=None, client: httpx.Client | None = None) -> dict:
        c = client or self.client()
        r = c.post("/api/jobs", json={"workflow": workflow, "params": params or {}})
        assert r.status_code == 202, r.text
        return r.json()

    def events(self, job_id: str, after: int = 0, until=None) -> list[dict]:
        """Every event of a job over the WebSocket, until the server closes it after "finished"
        (or until `until(event)` is true)."""
        from websockets.sync.client import connect

        out = []
        with connect(f"ws://127.0.0.1:{self.port}/api/jobs/{job_id}/events?after={after}", additional_headers=self.auth(), open_timeout=30) as ws:
            while True:
                try:
                    message = ws.recv(timeout=180)
                except Exception:  # the server closed the socket after "finished"
                    break
                event = json.loads(message)
                out.append(event)
                if event["event"] == "finished" or (until is not None and until(event)):
                    break
        return out

    def wait_done(self, job_id: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < deadline:
                job = c.get(f"/api/jobs/{job_id}").json()
                if job["state"] in ("done", "failed", "cancelled"):
                    return job
                time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish within {timeout} s")


@pytest.fixture
def make_server(tmp_path):
    started: list[LiveServer] = []

    def make(*extra: str, data_dir: Path | None = None, cache_dir: Path | None = None, port: int | None = None) -> LiveServer:
        server = LiveServer(data_dir or tmp_path / "data", cache_dir or tmp_path / "cache", *extra, port=port)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server shared by a module's tests (they use distinct jobs)."""
    root = tmp_path_factory.mktemp("serve")
    s = LiveServer(root / "data", root / "cache").start()
    yield s
    s.stop()
