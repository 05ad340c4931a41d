"""Load: 50 concurrent submissions from 10 clients all finish, correctly, none lost or duplicated.
(Throughput and latency are measured by bench/serve.py, not asserted here.)"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from editgraph.sharing import provenance

JOBS, CLIENTS, DISTINCT = 50, 10, 5


def _strength(i: int) -> float:
    return round(0.1 + 0.8 * (i % DISTINCT) / DISTINCT, 4)


@pytest.mark.slow
def test_fifty_concurrent_submissions_from_ten_clients_all_finish_once_with_their_own_output(server):
    submitted: dict[str, float] = {}  # job id -> the match_strength it asked for
    lock = threading.Lock()
    errors: list[str] = []

    def client(k: int) -> None:
        with server.client() as c:
            for i in range(k, JOBS, CLIENTS):
                r = c.post("/api/jobs", json={"workflow": "look", "params": {"match_strength": _strength(i)}})
                if r.status_code != 202:
                    errors.append(r.text)
                    continue
                with lock:
                    submitted[r.json()["id"]] = _strength(i)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(submitted) == JOBS  # 50 distinct ids

    finals = {job_id: server.wait_done(job_id) for job_id in submitted}
    assert Counter(j["state"] for j in finals.values()) == {"done": JOBS}
    assert all(j["attempts"] == 1 for j in finals.values())  # each ran exactly once

    by_strength: dict[float, set[bytes]] = {}
    with server.client() as c:
        for job_id, strength in submitted.items():
            events = c.get(f"/api/jobs/{job_id}/events").json()["events"]
            assert [e["event"] for e in events].count("finished") == 1 and [e["event"] for e in events].count("started") == 1
            data = c.get(finals[job_id]["outputs"][0]["url"]).content
            assert provenance.read(data)["params"]["match_strength"] == strength  # its own params, not a neighbour's
            by_strength.setdefault(strength, set()).add(data)
        listed = {j["id"] for j in c.get("/api/jobs", params={"limit": 200}).json()["jobs"]}
    assert set(submitted) <= listed
    assert all(len(outputs) == 1 for outputs in by_strength.values())  # the same params gave the same bytes
    assert len({next(iter(o)) for o in by_strength.values()}) == DISTINCT  # and different params different ones
