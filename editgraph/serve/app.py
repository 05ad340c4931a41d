"""The HTTP API and the page, one FastAPI app per server.

    GET  /                               the page (static/index.html; ES modules under /static/)
    GET  /api/health                     queue counts
    GET  /api/workflows                  the library: each workflow's typed params and its graph
    GET  /api/workflows/{name}           one, with the document
    GET  /api/library/{path}             a bundled asset (default photos, masks)
    GET  /api/nodes  GET /api/schema     node types; the workflow JSON Schema
    POST /api/validate                   {workflow, params} -> {valid, issues}
    POST /api/uploads                    raw image bytes -> {ref: "upload:<sha256>.png", ...}
    GET  /api/uploads/{ref}              an uploaded image
    POST /api/provenance                 raw bytes of an image editgraph made -> its workflow and params
    POST /api/jobs                       {workflow: name | document, params} -> 202 {id, state, position}
    GET  /api/jobs                       history, newest first
    GET  /api/jobs/{id}                  status (+ report when done)
    POST /api/jobs/{id}/cancel           cancel (a running denoise stops within one step)
    GET  /api/jobs/{id}/events           the job's events as JSON (?after=N)
    WS   /api/jobs/{id}/events           the same, live (?after=N), then closed after "finished"
    GET  /api/jobs/{id}/outputs/{name}   a saved file, provenance inside
    GET  /api/jobs/{id}/workflow         the resolved workflow (params and seeds written in)

Errors are JSON, `{"error": {"status", "code", "message", "issues"?}}`, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from editgraph.errors import EditgraphError, WorkflowInvalid
from editgraph.serve import jobs, uploads
from editgraph.serve.config import ServeConfig
from editgraph.serve.queue import FINAL, JobQueue, QueueFull
from editgraph.serve.security import BodyLimitMiddleware, BodyTooLarge, RateLimiter, TokenMiddleware
from editgraph.serve.worker import Hub, Worker, invalid_error

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("editgraph.serve")


class SubmitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str | dict[str, Any] = Field(description="a bundled workflow's name, or a workflow document")
    params: dict[str, Any] = Field(default_factory=dict, description="param name -> value; path params take upload refs")


class Server:
    """What the routes share: the queue, the workers and the event hub."""

    def __init__(self, config: ServeConfig):
        self.config = config
        config.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.queue = JobQueue(config.data_dir / "jobs.sqlite")
        self.hub = Hub()
        self.limiter = RateLimiter(config.submits_per_minute)
        self.workers = [Worker(config, self.queue, self.hub, config.device) for _ in range(config.workers)]

    def start(self) -> None:
        self.hub.attach(asyncio.get_running_loop())
        for job_id in self.queue.recover():
            self.emit(job_id, {"event": "requeued", "reason": "the server stopped while it ran; finished nodes come back from the cache"})
        for w in self.workers:
            w.start()

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(timeout=30)
        self.queue.close()

    def emit(self, job_id: str, body: dict[str, Any]) -> None:
        self.workers[0].emit(job_id, body)


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "code": code, "message": message, **extra}}, status_code=status)


def create_app(config: ServeConfig) -> FastAPI:
    server = Server(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        server.start()
        try:
            yield
        finally:
            server.stop()

    app = FastAPI(title="editgraph", lifespan=lifespan, docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.server = server
    _errors(app)
    _routes(app, server)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if config.cors_origins:  # closed unless named: no CORS headers means browsers refuse other origins
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"])
    app.add_middleware(BodyLimitMiddleware, limit=config.max_body_bytes)
    app.add_middleware(TokenMiddleware, token=config.token)  # outermost: nothing runs before the token is checked
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(WorkflowInvalid)
    async def _invalid(request: Request, exc: WorkflowInvalid):
        info = invalid_error(exc)
        return error(422, "invalid_workflow", info["message"], issues=info["issues"])

    @app.exception_handler(uploads.UploadRefused)
    async def _upload(request: Request, exc: uploads.UploadRefused):
        return error(415, "unsupported_upload", str(exc))

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull):
        return error(429, "queue_full", str(exc))

    @app.exception_handler(BodyTooLarge)
    async def _large(request: Request, exc: BodyTooLarge):
        return error(413, "too_large", str(exc))

    @app.exception_handler(EditgraphError)
    async def _editgraph(request: Request, exc: EditgraphError):
        return error(400, "bad_request", str(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        issues = [{"path": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]} for e in exc.errors()]
        return error(422, "invalid_request", "; ".join(f"{i['path']}: {i['message']}" for i in issues), issues=issues)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error(500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")


def _routes(app: FastAPI, server: Server) -> None:
    config, queue = server.config, server.queue

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    @app.get("/api/health")
    async def health():
        return {"ok": True, "jobs": queue.counts(), "token_required": config.token_required}

    @app.get("/api/workflows")
    async def list_workflows():
        from editgraph import workflows
        from editgraph.graph.document import load_workflow

        return {"workflows": [{"name": n, **jobs.describe(load_workflow(workflows.find(n)))} for n in workflows.names()]}

    @app.get("/api/workflows/{name}")
    async def get_workflow(name: str):
        from editgraph.graph.document import load_workflow

        document, _ = jobs.find_workflow(name, config)
        return {"name": name, **jobs.describe(load_workflow(document)), "document": document}

    @app.get("/api/library/{path:path}")
    async def library_file(path: str):
        """A bundled asset (the page shows a workflow's default photo and mask from here)."""
        from editgraph import workflows

        file = (workflows.HERE / path).resolve()
        if not file.is_relative_to(workflows.HERE / "assets") or not file.is_file():
            raise HTTPException(404, f"no bundled asset {path!r}")
        return FileResponse(file)

    @app.get("/api/nodes")
    async def nodes():
        from editgraph.nodes.registry import load_builtin_nodes

        out = []
        for name, cls in sorted(load_builtin_nodes().items()):
            out.append({
                "type": name, "version": cls.version, "deterministic": cls.deterministic, "doc": (cls.__doc__ or "").strip(),
                "inputs": {i.name: {"socket": i.socket.name, "optional": i.optional} for i in cls.inputs.values()},
                "outputs": {n: s.name for n, s in cls.outputs.items()},
                "params": cls.Params.model_json_schema(),
            })
        return {"nodes": out}

    @app.get("/api/schema")
    async def schema():
        from editgraph.graph.schema import workflow_schema

        return workflow_schema()

    @app.post("/api/validate")
    async def validate(body: SubmitBody):
        try:
            await asyncio.to_thread(jobs.submission, body.workflow, dict(body.params), config)
        except WorkflowInvalid as exc:
            return {"valid": False, "issues": invalid_error(exc)["issues"]}
        return {"valid": True, "issues": []}

    @app.post("/api/uploads", status_code=201)
    async def upload(request: Request):
        _rate(request)
        data = await request.body()
        return await asyncio.to_thread(uploads.store, data, config.uploads_dir, config.max_image_pixels)

    @app.get("/api/uploads/{ref}")
    async def get_upload(ref: str):
        return FileResponse(uploads.resolve(ref, config.uploads_dir))

    @app.post("/api/provenance")
    async def read_provenance(request: Request):
        from editgraph.sharing import provenance

        data = await request.body()
        try:
            info = provenance.read(data)
        except ValueError as exc:
            raise EditgraphError(f"cannot read the editgraph provenance: {exc}") from None
        if info is None or not isinstance(info.get("workflow"), dict):
            raise EditgraphError("this image carries no editgraph workflow (it was not made by editgraph, or its metadata was stripped)")
        return _loadable(info, config)

    @app.post("/api/jobs", status_code=202)
    async def submit(body: SubmitBody, request: Request):
        _rate(request)
        sub = await asyncio.to_thread(jobs.submission, body.workflow, dict(body.params), config)
        job, position = queue.submit(sub.label, sub.document, sub.base_dir, sub.params, client=_client(request), max_queued=config.max_queue)
        return {**job.summary(), "position": position, "events": f"/api/jobs/{job.id}/events"}

    @app.get("/api/jobs")
    async def history(limit: int = 50):
        return {"jobs": [j.summary() for j in queue.history(min(max(limit, 1), config.history_limit))]}

    @app.get("/api/jobs/{job_id}")
    async def status(job_id: str):
        job = _job(job_id)
        return {**job.summary(), "position": queue.position(job_id), "report": job.result}

    @app.post("/api/jobs/{job_id}/cancel")
    async def cancel(job_id: str):
        _job(job_id)
        state = queue.request_cancel(job_id)
        if state == "running":
            for w in server.workers:
                w.cancel(job_id)
        server.hub.publish(job_id)
        return {"id": job_id, "state": state}

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, after: int = 0):
        _job(job_id)
        return {"events": queue.events(job_id, after)}

    @app.websocket("/api/jobs/{job_id}/events")
    async def events_socket(ws: WebSocket, job_id: str, after: int = 0):
        if queue.get(job_id) is None:
            await ws.close(code=4404, reason="no such job")
            return
        await ws.accept()
        try:
            await _stream(ws, job_id, after)
        except WebSocketDisconnect:
            pass

    async def _stream(ws: WebSocket, job_id: str, last: int) -> None:
        while True:
            seen = server.hub.version(job_id)
            batch = queue.events(job_id, last)
            preview = server.hub.previews.get(job_id)
            for body in batch:
                if body.get("preview") and preview is not None and preview["step"] == body["step"] and preview["node"] == body["node"]:
                    body["image"] = preview["image"]
                await ws.send_json(body)
                last = body["n"]
                if body["event"] == "finished":
                    await ws.close()
                    return
            if not batch:
                await server.hub.wait(job_id, seen, timeout=2.0)

    @app.get("/api/jobs/{job_id}/outputs/{name:path}")
    async def output(job_id: str, name: str, download: bool = False):
        _job(job_id)
        root = config.output_dir(job_id).resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise HTTPException(404, f"job {job_id} has no output {name!r}")
        headers = {"content-disposition": f'attachment; filename="{path.name}"'} if download else None
        return FileResponse(path, headers=headers)

    @app.get("/api/jobs/{job_id}/workflow")
    async def job_workflow(job_id: str):
        from editgraph.sharing.provenance import portable_document

        job = _job(job_id)
        graph = await asyncio.to_thread(jobs.prepare, job.workflow, job.base_dir, job.params, config, job.label)
        return JSONResponse(portable_document(graph), headers={"content-disposition": f'attachment; filename="{job.label}.json"'})

    def _job(job_id: str):
        job = queue.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    def _rate(request: Request) -> None:
        if not server.limiter.allow(_client(request)):
            raise HTTPException(429, f"more than {config.submits_per_minute} submissions a minute from {_client(request)}; wait a little")


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _loadable(info: dict[str, Any], config: ServeConfig) -> dict[str, Any]:
    """What the page needs to re-run an image's workflow: the library name when it is one of the
    bundled workflows, the params it ran with, file paths turned back into upload refs or paths
    relative to the library (a path outside the server's folders is left as it is, and refused
    if submitted)."""
    from editgraph import workflows

    document = info["workflow"]
    name = document.get("name", "")
    library = name if workflows.find(name) is not None else None
    params = {}
    uploads_root = config.uploads_dir.resolve()
    for pname, spec in (document.get("params") or {}).items():
        value = (info.get("params") or {}).get(pname, spec.get("default"))
        if spec.get("type") == "path" and isinstance(value, str):
            path = Path(value)
            if path.parent == uploads_root:
                value = f"{uploads.PREFIX}{path.name}"
            elif path.is_relative_to(workflows.HERE):
                value = path.relative_to(workflows.HERE).as_posix()
        params[pname] = value
    return {"library": library, "document": document, "params": params, "seeds": info.get("seeds", {}), "keys": info.get("keys", {})}
