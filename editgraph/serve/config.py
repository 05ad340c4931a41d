"""What `editgraph serve` was started with. One frozen object, passed to every part of the server."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path  # the server's own folder: jobs.sqlite, uploads/, jobs/<id>/out/
    host: str = "127.0.0.1"  # what the user asked to listen on: decides whether a token is required
    port: int = 8188
    token: str | None = None  # required on every /api request and socket when set
    cache_dir: Path | None = None  # the executor's disk cache (default: EDITGRAPH_CACHE_DIR / user cache)
    allow_dirs: tuple[Path, ...] = ()  # extra folders a workflow may read from (besides uploads and the bundled assets)
    cors_origins: tuple[str, ...] = ()  # closed unless named: a page on another origin cannot drive this server
    max_body_bytes: int = 64 * 2**20  # uploads and documents; a 24 MP PNG is ~40 MB
    max_image_pixels: int = 50_000_000  # decompression-bomb guard for uploads (about 8k x 6k)
    max_queue: int = 100  # unfinished jobs held at once; more are refused with 429
    submits_per_minute: int = 120  # per client address; more are refused with 429
    threads: int | None = None  # torch CPU threads (results are bit-identical only at equal counts)
    device: str | None = None  # "cpu", "cuda", "cuda:1", "mps"; None: the best available
    workers: int = 1  # one per device: two denoises on one device only slow each other down
    history_limit: int = 200  # jobs listed by GET /api/jobs at most

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    def output_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id / "out"

    @property
    def token_required(self) -> bool:
        return self.token is not None

    def read_roots(self) -> tuple[Path, ...]:
        """Folders a workflow run by this server may read files from: nothing else on the machine."""
        from editgraph import workflows

        return (workflows.HERE, self.uploads_dir.resolve(), *(p.resolve() for p in self.allow_dirs))


@dataclass(frozen=True)
class StartRefused(Exception):
    message: str = field(default="")

    def __str__(self) -> str:
        return self.message


def check_start(config: ServeConfig) -> None:
    """Listening beyond this machine without a token would let anyone on the network run jobs
    and read every output: refuse to start, saying how to fix it."""
    if config.host not in LOOPBACK_HOSTS and not config.token:
        raise StartRefused(
            f"refusing to listen on {config.host!r} without a token: anyone who can reach this port could run jobs "
            "and read outputs. Pass --token SECRET (or set EDITGRAPH_TOKEN), or listen on 127.0.0.1"
        )
    if config.token is not None and len(config.token) < 8:
        raise StartRefused("the token must be at least 8 characters (it is the only thing between the network and this machine)")
