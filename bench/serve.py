"""Server load benchmark: many concurrent submissions of a cheap workflow (`look`).

    python bench/serve.py                         # 50 jobs from 10 clients, 5 distinct param sets
    python bench/serve.py --jobs 200 --clients 20 --distinct 20

Starts `editgraph serve` on 127.0.0.1 with fresh data and cache folders (cold cache: each distinct
param set runs once, the rest come from the cache, as repeated submissions would in production),
submits from `--clients` threads, each with its own HTTP connection, and waits for every job.
Prints a markdown table: submissions per second (the API's own throughput: validate + persist),
jobs finished per second end to end, and p50 / p95 / max latency from submit to done.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "editgraph.cli.main", "serve", "--port", str(port), "--data-dir", str(root / "data"),
           "--cache-dir", str(root / "cache"), "--threads", "2", "--log-level", "warning", "--rate", "100000", "--max-queue", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "wb"), cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start; see {root / 'server.log'}")


def drive(url: str, jobs: int, clients: int, distinct: int) -> dict:
    """Submit `jobs` look runs from `clients` threads; return the timings."""
    ids: list[str] = []
    submit_s: list[float] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            for i in range(k, jobs, clients):
                t0 = time.perf_counter()
                r = c.post("/api/jobs", json={"workflow": "look", "params": {"match_strength": round(0.1 + 0.8 * (i % distinct) / distinct, 4)}})
                r.raise_for_status()
                with lock:
                    submit_s.append(time.perf_counter() - t0)
                    ids.append(r.json()["id"])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    submitted = time.perf_counter() - t0
    pending = set(ids)
    done: dict[str, dict] = {}
    with httpx.Client(base_url=url, timeout=120) as c:
        while pending:
            listing = c.get("/api/jobs", params={"limit": 200}).json()["jobs"]
            for j in listing:
                if j["id"] in pending and j["state"] in ("done", "failed", "cancelled"):
                    done[j["id"]] = j
                    pending.discard(j["id"])
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    latency = sorted(j["finished"] - j["created"] for j in done.values())
    return {
        "jobs": jobs, "clients": clients, "distinct": distinct,
        "failed": sum(j["state"] != "done" for j in done.values()),
        "submit_rps": jobs / submitted, "submit_p50_ms": 1000 * statistics.median(submit_s),
        "jobs_per_s": jobs / wall, "p50": statistics.median(latency), "p95": latency[max(0, round(0.95 * len(latency)) - 1)], "max": latency[-1],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=50)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--distinct", type=int, default=5, help="distinct param sets (each runs once; the rest are cache hits)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("EDITGRAPH_MODELS_DIR", str(Path(tmp) / "models"))
        proc, url = start_server(Path(tmp))
        try:
            r = drive(url, args.jobs, args.clients, args.distinct)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"editgraph serve, `look` workflow, {r['jobs']} jobs from {r['clients']} clients, {r['distinct']} distinct param sets, cold cache\n")
    print("| submissions/s | submit p50 | jobs done/s | submit→done p50 | p95 | max | failed |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {r['submit_rps']:.1f} | {r['submit_p50_ms']:.0f} ms | {r['jobs_per_s']:.2f} | {r['p50']:.2f} s | {r['p95']:.2f} s | {r['max']:.2f} s | {r['failed']} |")


if __name__ == "__main__":
    main()
