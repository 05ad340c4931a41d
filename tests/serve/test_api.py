"""The HTTP API against a live server: results equal the CLI's, errors are JSON, limits hold."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from editgraph import workflows
from editgraph.cli.main import main as cli_main
from editgraph.sharing import provenance

ASSETS = workflows.HERE / "assets"


def test_submit_streams_events_in_order_and_output_equals_the_cli_byte_for_byte(server, tmp_path, capsys):
    params = {"match_strength": 0.3, "exposure": 0.25}
    job = server.submit("look", params)
    assert job["state"] == "queued" and job["position"] >= 1
    events = server.events(job["id"])
    kinds = [e["event"] for e in events]
    assert [e["n"] for e in events] == list(range(1, len(events) + 1))  # numbered, none skipped
    assert kinds[:3] == ["queued", "started", "planned"] and kinds[-1] == "finished"
    planned = events[2]["nodes"]
    assert planned == ["photo", "graded", "ref", "matched", "save"]
    # each node starts before it finishes, and nodes finish in the planned order
    finished = [e["node"] for e in events if e["event"] == "node_finished"]
    assert finished == planned
    for node in planned:
        started_at = next(i for i, e in enumerate(events) if e["event"] == "node_started" and e["node"] == node)
        finished_at = next(i for i, e in enumerate(events) if e["event"] == "node_finished" and e["node"] == node)
        assert started_at < finished_at
    assert events[-1]["state"] == "done" and [o["name"] for o in events[-1]["outputs"]] == ["look.png"]

    with server.client() as c:
        served = c.get(events[-1]["outputs"][0]["url"])
        status = c.get(f"/api/jobs/{job['id']}").json()
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert status["state"] == "done" and set(status["report"]["nodes"]) == set(planned)

    out = tmp_path / "cli"
    sets = [a for k, v in params.items() for a in ("--set", f"{k}={v}")]
    assert cli_main(["run", "look", "--out", str(out), "-q", "--cache-dir", str(tmp_path / "cli-cache"), *sets]) == 0
    capsys.readouterr()
    assert served.content == (out / "look.png").read_bytes()
    info = provenance.read(served.content)
    assert info["params"]["match_strength"] == 0.3 and info["params"]["exposure"] == 0.25


def test_second_identical_job_comes_from_the_cache(server):
    first = server.submit("look", {"exposure": -0.5})
    server.wait_done(first["id"])
    again = server.submit("look", {"exposure": -0.5})
    events = server.events(again["id"])
    statuses = {e["node"]: e["status"] for e in events if e["event"] == "node_finished"}
    assert statuses == dict.fromkeys(["photo", "graded", "ref", "matched", "save"], "cached")


def test_workflow_list_describes_typed_params_for_the_form(server):
    with server.client() as c:
        listing = c.get("/api/workflows").json()["workflows"]
        one = c.get("/api/workflows/inpaint").json()
    assert {w["name"] for w in listing} == set(workflows.names())
    params = {p["name"]: p for p in one["params"]}
    assert params["image"]["widget"] == "image" and params["mask"]["widget"] == "mask"
    assert params["seed"]["widget"] == "seed"
    assert params["steps"] == {**params["steps"], "widget": "slider", "minimum": 1, "maximum": 200, "default": 20}
    assert params["prompt"]["widget"] == "text"
    assert one["layers"][0] == ["model", "photo", "region"] and {"from": "denoise", "to": "pixels", "input": "latent"} in one["edges"]


def test_validate_returns_issues_with_json_paths(server):
    with server.client() as c:
        bad = c.post("/api/validate", json={"workflow": "inpaint", "params": {"steps": 0, "colour": 1}}).json()
        good = c.post("/api/validate", json={"workflow": "look", "params": {}}).json()
    assert good == {"valid": True, "issues": []}
    paths = {i["path"] for i in bad["issues"]}
    assert bad["valid"] is False and {"--set steps", "--set colour"} <= paths


@pytest.mark.parametrize(
    "document, path, says",
    [
        ({"nodes": {"a": {"type": "image.load", "params": {"path": "/etc/passwd"}},
                    "s": {"type": "image.save", "inputs": {"image": "a"}, "params": {"path": "x.png"}}}},
         "nodes.a.params.path", "refused: /etc/passwd"),
        ({"nodes": {"a": {"type": "image.load", "params": {"path": str(ASSETS / "coffee.png")}},
                    "s": {"type": "image.save", "inputs": {"image": "a"}, "params": {"path": "../x.png"}}}},
         "nodes.s.params.path", "no '..'"),
    ],
)
def test_reading_outside_the_servers_folders_or_saving_outside_the_job_is_refused(server, document, path, says):
    with server.client() as c:
        before = c.get("/api/jobs").json()["jobs"]
        r = c.post("/api/jobs", json={"workflow": document})
        after = c.get("/api/jobs").json()["jobs"]
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_workflow" and "Traceback" not in r.text
    assert [i["path"] for i in err["issues"]] == [path] and says in err["issues"][0]["message"]
    assert after == before  # refused before queueing: no job was created


def test_a_library_param_pointing_outside_is_refused_and_names_the_param(server):
    with server.client() as c:
        r = c.post("/api/jobs", json={"workflow": "look", "params": {"image": "../../../../../../etc/passwd"}})
    issue = r.json()["error"]["issues"][0]
    assert r.status_code == 422 and issue["path"] == "nodes.photo.params.path" and issue["node_type"] == "image.load"


def test_uploads_are_content_addressed_sniffed_and_bomb_guarded(server):
    png = (ASSETS / "coffee.png").read_bytes()
    with server.client() as c:
        first = c.post("/api/uploads", content=png, headers={"content-type": "text/plain"})  # the bytes decide, not the header
        second = c.post("/api/uploads", content=png)
        text = c.post("/api/uploads", content=b"#!/bin/sh\necho hi\n")
        bomb = c.post("/api/uploads", content=_png_header_only(60_000, 60_000))
        fetched = c.get(f"/api/uploads/{first.json()['ref']}")
        escape = c.get("/api/uploads/..%2F..%2Fjobs.sqlite")
    assert first.status_code == 201 and first.json() == second.json()
    assert first.json()["ref"].startswith("upload:") and first.json()["format"] == "png" and first.json()["width"] == 600
    assert (server.data_dir / "uploads" / first.json()["ref"].removeprefix("upload:")).read_bytes() == png
    assert text.status_code == 415 and text.json()["error"]["code"] == "unsupported_upload"
    assert bomb.status_code == 415 and "pixels" in bomb.json()["error"]["message"]
    assert fetched.content == png
    assert escape.status_code in (404, 415) and "error" in escape.json()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring a huge image, with almost no data (a 'bomb')."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_uploaded_photo_runs_and_provenance_loads_back(server):
    buf = io.BytesIO()
    Image.open(ASSETS / "coffee.png").convert("RGB").resize((96, 64)).save(buf, format="PNG")
    with server.client() as c:
        ref = c.post("/api/uploads", content=buf.getvalue()).json()["ref"]
        job = server.submit("look", {"image": ref, "match_strength": 0.7}, client=c)
        done = server.wait_done(job["id"])
        out = c.get(done["outputs"][0]["url"]).content
        loaded = c.post("/api/provenance", content=out).json()
        plain = c.post("/api/provenance", content=buf.getvalue())
    assert Image.open(io.BytesIO(out)).size == (96, 64)
    assert loaded["library"] == "look" and loaded["params"]["image"] == ref and loaded["params"]["match_strength"] == 0.7
    assert loaded["params"]["lut"] == "assets/warm.cube"
    assert plain.status_code == 400 and "no editgraph workflow" in plain.json()["error"]["message"]


def test_errors_are_json_without_tracebacks(server):
    with server.client() as c:
        missing = c.get("/api/jobs/nope")
        route = c.get("/api/nothing-here")
        not_json = c.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"})
        unknown_field = c.post("/api/jobs", json={"workflow": "look", "parms": {}})
        unknown_workflow = c.post("/api/jobs", json={"workflow": "nope"})
    for r, status in ((missing, 404), (route, 404), (not_json, 422), (unknown_field, 422), (unknown_workflow, 422)):
        assert r.status_code == status and r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["error"]["status"] == status and body["error"]["message"] and "Traceback" not in r.text
    assert "parms" in unknown_field.json()["error"]["message"]
    assert "no bundled workflow 'nope'" in unknown_workflow.json()["error"]["message"]


def test_resolved_workflow_download_reproduces_the_job(server):
    job = server.submit("look", {"exposure": 0.5})
    done = server.wait_done(job["id"])
    with server.client() as c:
        doc = c.get(f"/api/jobs/{job['id']}/workflow").json()
        again = server.submit(doc, {}, client=c)
        redone = server.wait_done(again["id"])
        a, b = (c.get(j["outputs"][0]["url"]).content for j in (done, redone))
    assert doc["params"]["exposure"]["default"] == 0.5
    assert a == b


def test_body_queue_and_rate_limits(make_server):
    s = make_server("--max-body", "2000", "--max-queue", "1", "--rate", "3")
    with s.client() as c:
        big = c.post("/api/uploads", content=b"x" * 5000)
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
        # the queue holds 1 unfinished job: a long denoise keeps it busy while the next is refused
        slow = c.post("/api/jobs", json={"workflow": "inpaint", "params": {"steps": 200, "working_size": 64}})
        assert slow.status_code == 202
        full = c.post("/api/jobs", json={"workflow": "look"})
        assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
        c.post(f"/api/jobs/{slow.json()['id']}/cancel")
        s.wait_done(slow.json()["id"])
        third = c.post("/api/jobs", json={"workflow": "look"})  # 3rd submission this minute: allowed
        fourth = c.post("/api/jobs", json={"workflow": "look"})
        assert third.status_code == 202 and fourth.status_code == 429 and "a minute" in fourth.json()["error"]["message"]
