"""The HTTP API in this process (Starlette's TestClient, the app's own lifespan and worker): routes
and error shapes the live-server tests do not reach, without starting a process."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from editgraph import workflows
from editgraph.serve import jobs
from editgraph.serve.app import create_app
from editgraph.serve.config import ServeConfig
from editgraph.serve.queue import FINAL

GOOD_ORIGIN = "http://editor.example"


@pytest.fixture(scope="module")
def app_config(tmp_path_factory) -> ServeConfig:
    root = tmp_path_factory.mktemp("routes")
    return ServeConfig(data_dir=root / "data", cache_dir=root / "cache", cors_origins=(GOOD_ORIGIN,), max_body_bytes=4096)


@pytest.fixture(scope="module")
def client(app_config):
    with TestClient(create_app(app_config), raise_server_exceptions=False) as c:
        yield c


def _error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and "Traceback" not in r.text
    err = r.json()["error"]
    assert err["status"] == status and err["code"] == code and err["message"]
    return err


def test_node_list_and_schema_describe_the_registry(client):
    from editgraph.graph.schema import workflow_schema
    from editgraph.nodes.registry import load_builtin_nodes

    registry = load_builtin_nodes()
    nodes = client.get("/api/nodes").json()["nodes"]
    assert [n["type"] for n in nodes] == sorted(registry)
    by_type = {n["type"]: n for n in nodes}
    feather = by_type["mask.feather"]
    assert feather["version"] == registry["mask.feather"].version
    assert feather["inputs"] == {"mask": {"socket": "Mask", "optional": False}} and feather["outputs"] == {"mask": "Mask"}
    assert "radius" in feather["params"]["properties"] and feather["doc"]
    assert client.get("/api/schema").json() == workflow_schema()


def test_the_library_serves_bundled_assets_and_nothing_beside_them(client):
    photo = client.get("/api/library/assets/coffee.png")
    assert photo.status_code == 200 and photo.content == (workflows.HERE / "assets" / "coffee.png").read_bytes()
    for path in ("look.json", "__init__.py", "assets/nope.png", "assets/..%2F__init__.py", "assets/..%2F..%2Fserve%2Fapp.py"):
        err = _error(client.get(f"/api/library/{path}"), 404, "not_found")
        assert "no bundled asset" in err["message"]


def test_cors_answers_the_configured_origin_only(client):
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    good = client.options("/api/jobs", headers={"origin": GOOD_ORIGIN, **preflight})
    evil = client.options("/api/jobs", headers={"origin": "http://evil.example", **preflight})
    assert good.status_code == 200 and good.headers["access-control-allow-origin"] == GOOD_ORIGIN
    assert "POST" in good.headers["access-control-allow-methods"]
    assert "access-control-allow-origin" not in evil.headers
    simple = client.get("/api/health", headers={"origin": GOOD_ORIGIN})
    assert simple.json()["token_required"] is False and simple.headers["access-control-allow-origin"] == GOOD_ORIGIN


def test_a_body_over_the_limit_is_refused_whether_or_not_it_declares_its_length(client, app_config):
    declared = client.post("/api/uploads", content=b"x" * 5000)
    assert "4096 bytes" in _error(declared, 413, "too_large")["message"]

    def chunks():  # no Content-Length: the limit is enforced while the body is read
        for _ in range(5):
            yield b"x" * 1000

    streamed = client.post("/api/uploads", content=chunks())
    assert "4096 bytes" in _error(streamed, 413, "too_large")["message"]
    assert list(app_config.uploads_dir.iterdir()) == []


def test_provenance_that_is_missing_or_unreadable_is_a_400_saying_so(client):
    from editgraph.sharing import metadata, provenance

    err = _error(client.post("/api/provenance", content=b"plain text, not a picture"), 400, "bad_request")
    assert "carries no editgraph workflow" in err["message"]
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    damaged = metadata.png_insert(buf.getvalue(), after_ihdr=[], before_iend=[metadata.png_itxt(provenance.KEYWORD, b"{not json", compress=True)])
    assert provenance.KEYWORD in damaged
    err = _error(client.post("/api/provenance", content=damaged), 400, "bad_request")
    assert err["message"].startswith("cannot read the editgraph provenance: ")


def test_a_socket_for_an_unknown_job_is_closed_with_4404(client):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/api/jobs/nope/events") as ws:
            ws.receive_json()
    assert closed.value.code == 4404


def test_an_uploaded_camera_jpeg_runs_and_its_outputs_stay_inside_the_job(client, app_config):
    """Upload (a multi-picture JPEG, as phones write), run, fetch, download; a name that climbs
    out of the job's folder is a 404, even to a file that exists."""
    buf = io.BytesIO()
    photo = Image.open(workflows.HERE / "assets" / "coffee.png").convert("RGB").resize((48, 32))
    photo.save(buf, format="MPO", save_all=True, append_images=[photo.resize((24, 16))])
    up = client.post("/api/uploads", content=buf.getvalue())
    assert up.status_code == 201 and up.json()["format"] == "jpeg"
    job = client.post("/api/jobs", json={"workflow": "look", "params": {"image": up.json()["ref"]}})
    assert job.status_code == 202
    job_id = job.json()["id"]
    deadline = time.monotonic() + 120
    while (status := client.get(f"/api/jobs/{job_id}").json())["state"] not in FINAL:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status["state"] == "done", status["error"]
    [out] = status["outputs"]
    served = client.get(out["url"])
    assert Image.open(io.BytesIO(served.content)).size == (48, 32) and len(served.content) == out["bytes"]
    download = client.get(out["url"], params={"download": "true"})
    assert download.headers["content-disposition"] == f'attachment; filename="{out["name"]}"' and download.content == served.content

    assert (app_config.data_dir / "jobs.sqlite").is_file()
    for name in ("..%2F..%2F..%2Fjobs.sqlite", "nope.png"):
        err = _error(client.get(f"/api/jobs/{job_id}/outputs/{name}"), 404, "not_found")
        assert f"job {job_id} has no output" in err["message"]
    _error(client.get("/api/jobs/nope/outputs/look.png"), 404, "not_found")
    _error(client.get("/api/jobs/nope/events"), 404, "not_found")
    _error(client.post("/api/jobs/nope/cancel"), 404, "not_found")
    assert client.post(f"/api/jobs/{job_id}/cancel").json() == {"id": job_id, "state": "done"}  # too late: nothing changes


def test_a_missing_upload_and_a_missing_input_file_are_422_naming_the_param(client):
    missing_upload = client.post("/api/jobs", json={"workflow": "look", "params": {"image": "upload:" + "0" * 64 + ".png"}})
    [issue] = _error(missing_upload, 422, "invalid_workflow")["issues"]
    assert issue["path"] == "params.image" and "no upload" in issue["message"]
    missing_file = client.post("/api/jobs", json={"workflow": "look", "params": {"image": "assets/no-such-photo.png"}})
    [issue] = _error(missing_file, 422, "invalid_workflow")["issues"]
    assert issue["path"] == "nodes.photo.params.path" and "no-such-photo.png" in issue["message"]


def test_a_bug_in_a_route_is_a_500_json_without_the_traceback(app_config, tmp_path, caplog):
    """The catch-all handler: the client gets a sentence, the log gets the traceback."""
    app = create_app(ServeConfig(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"))

    @app.get("/api/boom")
    async def boom():
        raise ZeroDivisionError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/boom")
    err = _error(r, 500, "internal_error")
    assert err["message"] == "internal error (ZeroDivisionError); see the server log" and "a bug" not in r.text
    assert any(rec.exc_info and rec.exc_info[0] is ZeroDivisionError for rec in caplog.records)


def test_submissions_that_are_neither_a_name_nor_a_document_are_refused(app_config):
    from editgraph.errors import WorkflowInvalid

    with pytest.raises(WorkflowInvalid) as refused:
        jobs.submission(["look"], {}, app_config)
    assert [i.path for i in refused.value.issues] == ["workflow"] and "got list" in refused.value.issues[0].message
    with pytest.raises(WorkflowInvalid) as refused:
        jobs.submission("look", [("exposure", 1)], app_config)  # type: ignore[arg-type]
    assert [i.path for i in refused.value.issues] == ["params"] and "got list" in refused.value.issues[0].message


def test_random_seeds_are_drawn_at_submission_and_written_into_the_job(app_config):
    """A job may wait across a restart: the seeds it will use are fixed when it is accepted, as a
    param (`$seed`) or in the node that asked for one."""
    sub = jobs.submission("inpaint", {"seed": "random"}, app_config)
    assert isinstance(sub.params["seed"], int)

    from editgraph.graph.document import load_workflow

    document = load_workflow(workflows.find("inpaint")).to_dict()
    seeded = [nid for nid, n in document["nodes"].items() if n.get("params", {}).get("seed") == "$seed"]
    assert seeded, "the bundled inpaint workflow no longer binds a seed"
    for nid in seeded:
        document["nodes"][nid]["params"]["seed"] = "random"
    assets = workflows.HERE / "assets"  # a document's relative paths would name files in the uploads folder
    sub = jobs.submission(document, {"image": str(assets / "coffee.png"), "mask": str(assets / "coffee-spoon-mask.png")}, app_config)
    drawn = [sub.document["nodes"][nid]["params"]["seed"] for nid in seeded]
    assert all(isinstance(s, int) for s in drawn)
    assert document["nodes"][seeded[0]]["params"]["seed"] == "random"  # the client's document is not changed


def test_a_bool_param_is_a_checkbox_on_the_form(app_config):
    from editgraph.graph.document import load_workflow

    document = load_workflow(workflows.find("look")).to_dict()
    document["params"]["flag"] = {"type": "bool", "default": True, "description": "a switch"}
    described = {p["name"]: p for p in jobs.describe(load_workflow(document))["params"]}
    assert described["flag"] == {"name": "flag", "type": "bool", "widget": "checkbox", "description": "a switch", "required": False, "default": True}
