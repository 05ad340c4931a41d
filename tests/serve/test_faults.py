"""Faults: the server killed with -9 mid-run, and a job cancelled mid-denoise."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

# A long denoise on the tiny model (a step takes ~0.1 s on a busy 2-core machine): there is time to
# act while it runs. Cancelled runs can be long; the killed one is re-run in full, so it is shorter.
LONG = {"steps": 200, "working_size": 64, "prompt": "a long run"}
KILLED = {"steps": 12, "working_size": 64, "prompt": "killed mid-run"}
UPSTREAM = ["photo", "region", "soft", "crop", "text", "latent"]  # what inpaint's denoise consumes, model aside


def _progress_seen(event) -> bool:
    return event["event"] == "progress" and event["node"] == "denoise" and event["step"] >= 2


@pytest.mark.slow
def test_kill_9_with_jobs_queued_and_one_running_loses_nothing_and_resumes_from_cache(make_server, tmp_path):
    server = make_server()
    running = server.submit("inpaint", KILLED)
    queued = [server.submit("look", {"exposure": e}) for e in (0.1, 0.2)]
    before = server.events(running["id"], until=_progress_seen)  # its denoise is under way
    server.kill9()
    assert [e["event"] for e in before][:2] == ["queued", "started"]

    again = make_server(data_dir=server.data_dir, cache_dir=server.cache_dir)
    results = {j["id"]: again.wait_done(j["id"]) for j in [running, *queued]}
    assert {j: r["state"] for j, r in results.items()} == dict.fromkeys(results, "done")
    assert results[running["id"]]["attempts"] == 2 and all(results[q["id"]]["attempts"] == 1 for q in queued)

    events = again.events(running["id"])
    assert [e["n"] for e in events] == list(range(1, len(events) + 1))  # the first run's events are kept, numbering goes on
    restart = next(i for i, e in enumerate(events) if e["event"] == "requeued")
    second = events[restart:]
    assert [e["event"] for e in second][:2] == ["requeued", "started"] and second[1]["attempt"] == 2
    status = {e["node"]: e["status"] for e in second if e["event"] == "node_finished"}
    assert {n: status[n] for n in UPSTREAM} == dict.fromkeys(UPSTREAM, "cached")  # finished upstream nodes came back from disk
    assert status["denoise"] == "ran"
    with again.client() as c:
        listed = [j["id"] for j in c.get("/api/jobs").json()["jobs"]]
        output = c.get(results[running["id"]]["outputs"][0]["url"])
    assert sorted(listed) == sorted(results) and output.status_code == 200  # none lost, none duplicated


@pytest.mark.slow
def test_cancel_mid_denoise_stops_within_one_step_and_the_worker_takes_the_next_job(make_server):
    server = make_server()
    long = server.submit("inpaint", {**LONG, "prompt": "to be cancelled"})
    after = server.submit("look", {"exposure": 0.3})
    victim = server.submit("look", {"exposure": 0.4})
    live = server.events(long["id"], until=_progress_seen)
    previews = [e["image"] for e in live if e["event"] == "progress" and "image" in e]
    assert previews, "a running denoise sends a latent preview with its steps"
    thumb = Image.open(io.BytesIO(base64.b64decode(previews[-1].removeprefix("data:image/png;base64,"))))
    assert thumb.format == "PNG" and max(thumb.size) == 128  # the 8 px latent of a 64 px crop, scaled up for the page
    with server.client() as c:
        dropped = c.post(f"/api/jobs/{victim['id']}/cancel")  # still queued behind the denoise: ends at once
        r = c.post(f"/api/jobs/{long['id']}/cancel")
    assert dropped.json()["state"] == "cancelled"
    assert [e["event"] for e in server.events(victim["id"])] == ["queued", "finished"]
    assert r.status_code == 200 and r.json()["state"] == "running"
    events = server.events(long["id"])
    kinds = [e["event"] for e in events]
    asked = kinds.index("cancel_requested")
    steps_after = [e for e in events[asked:] if e["event"] == "progress"]
    assert len(steps_after) <= 1  # the flag is checked at every step
    last_step = max(e["step"] for e in events if e["event"] == "progress")
    assert last_step < LONG["steps"]
    assert events[-1]["event"] == "finished" and events[-1]["state"] == "cancelled"
    assert {"event": "node_failed", "node": "denoise", "error": "cancelled"}.items() <= next(e for e in events if e["event"] == "node_failed").items()
    assert "pixels" not in {e.get("node") for e in events if e["event"] == "node_started"}  # nothing after the denoise ran
    nxt = server.wait_done(after["id"])
    assert nxt["state"] == "done" and nxt["outputs"]
    with server.client() as c:
        assert c.get(f"/api/jobs/{long['id']}").json()["state"] == "cancelled"
        assert c.get(f"/api/jobs/{victim['id']}").json()["state"] == "cancelled"
