"""Every EDITGRAPH_* environment variable, read in this one place.

`Settings.from_env()` reads them; entry points (the CLI, `editgraph.run`, a server) read once per
run and pass the result down. Options are passed, never written back into os.environ.

| variable                  | field             | default                                   |
|---------------------------|-------------------|-------------------------------------------|
| EDITGRAPH_CACHE_DIR       | cache_dir         | the user cache dir (platformdirs)         |
| EDITGRAPH_CACHE_SIZE      | cache_size        | 20G: a working week of latents            |
| EDITGRAPH_MEMORY_CACHE    | memory_cache      | 2G: a few dozen 1024 px images or latents |
| EDITGRAPH_MODELS_DIR      | models_dir        | <cache_dir>/models (tiny builds, memos)   |
| EDITGRAPH_MODELS          | model_folders     | none: folders (os.pathsep) or name=path   |
| EDITGRAPH_MODELS_FILE     | models_file       | <user config dir>/editgraph/models.json   |
| EDITGRAPH_SHARED_CACHE    | shared_cache      | none: s3://bucket/prefix or a shared path |
| EDITGRAPH_S3_ENDPOINT     | s3_endpoint       | AWS_ENDPOINT_URL, else AWS itself         |
| EDITGRAPH_CHECK_INPUTS    | check_inputs      | off; the tests turn it on                 |
| EDITGRAPH_DEBUG           | debug             | off; on shows tracebacks of our own bugs  |
| EDITGRAPH_ENGINES_CONFIG  | engines_config    | <user config dir>/editgraph/engines.json  |
| EDITGRAPH_<P>_BASE_URL    | engine_endpoints  | none: provider P's documented endpoint    |
| EDITGRAPH_<P>_MAX_CONCURRENCY | engine_limits | none: the config file's, else 4           |
| EDITGRAPH_C2PA_CONFIG     | c2pa_config       | <user config dir>/editgraph/c2pa.toml     |
| EDITGRAPH_C2PA_CERT       | c2pa_cert         | none: PEM chain of the signing identity   |
| EDITGRAPH_C2PA_KEY        | c2pa_key          | none: its PEM private key file            |
| EDITGRAPH_C2PA_SIGN_COMMAND | c2pa_sign_command | none: or a command that signs stdin     |
| EDITGRAPH_C2PA_ALG        | c2pa_alg          | none: es256                               |
| EDITGRAPH_C2PA_TSA_URL    | c2pa_tsa_url      | none: no RFC 3161 timestamp               |
| EDITGRAPH_C2PA_TRUST_ANCHORS | c2pa_trust_anchors | none: PEM roots `verify` trusts       |
| EDITGRAPH_TOKEN           | serve_token       | none: `editgraph serve --token` default   |
| EDITGRAPH_OFFLOAD         | offload           | none: or model, group, sequential (--offload) |
| EDITGRAPH_PERSIST         | persist           | cost: or always (see below)               |
| EDITGRAPH_ALLOCATOR       | allocator         | tuned: or system (editgraph/allocator.py) |

The C2PA values are paths and names, never key material; sharing/c2pa.py reads the files.
| EDITGRAPH_MAX_PIXELS      | max_pixels        | 64M px per image (8192x8192): see below   |
| EDITGRAPH_MAX_FILE_SIZE   | max_file_size     | 1G: the largest image/mask file read      |

max_pixels bounds every picture a workflow may ask for (from a file's header, or a node's params),
checked before anything is allocated. An image costs 12 bytes a pixel as float32 RGB (16 with a
mask), and a few live at once in a node chain: at 64 Mpx that is ~0.8 GB a picture, a few GB for
a workflow, which a 24 GB machine survives with room for a model.

persist says which outputs get a disk entry (executor/persist.py). "cost" prices each output at
the disk's measured write rate against the node's measured time: right for users, but a decision
that follows the disk's speed. "always" stores every storable output whatever it cost (a node
declared cheap still is not): what ran in an earlier process is then reused whatever the disk, so
the test suite sets it for reproducible re-run assertions, and tests of the cost decision pass
their own Persistence with a pinned rate.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from editgraph.errors import EditgraphError

__all__ = ["Settings", "format_size", "parse_size"]

def parse_size(text: str | int, what: str = "size") -> int:
    """'10G', '512M', '2048' -> bytes. Anything else is an EditgraphError naming `what`."""
    if isinstance(text, int):
        return text
    clean = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        size = int(float(clean[:-1]) * scale[clean[-1]]) if clean and clean[-1] in scale else int(clean)
    except ValueError:
        size = -1
    if size < 0:
        raise EditgraphError(f"{what} must be a byte count like 2048, 512M or 20G, got {text!r}")
    return size


def format_size(n: int) -> str:
    """Bytes for people, in the largest unit that keeps a digit before the point:
    1048576 -> "1.0 MiB", 409600 -> "400.0 KiB", 512 -> "512 B" (parse_size reads each back)."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# models/offload.py's modes (settings sit below models in the layers, so the list is here).
OFFLOAD_MODES = ("none", "model", "group", "sequential")
PERSIST_MODES = ("cost", "always")  # executor/persist.py's DEFAULT and ALWAYS
ALLOCATOR_MODES = ("tuned", "system")  # editgraph/allocator.py

_ENGINE_VAR = re.compile(r"^EDITGRAPH_([A-Z0-9]+)_(BASE_URL|MAX_CONCURRENCY)$")


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "") == "1"


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    cache_size: int = parse_size("20G")  # a working week of latents at 512-1024 px
    memory_cache: int = parse_size("2G")  # a few dozen 1024 px images or SD latents
    models_dir: Path | None = None  # None: <cache_dir>/models
    model_folders: tuple[str, ...] = ()  # EDITGRAPH_MODELS entries: folders, or name=path
    models_file: Path | None = None  # None: the user config dir's models.json
    shared_cache: str | None = None  # the tier a cluster's workers share (--cache); None: local tiers only
    s3_endpoint: str | None = None  # an S3-compatible server (MinIO, Ceph ...); None: boto3's own default
    check_inputs: bool = False  # re-hash a node's inputs after it ran: catches writes into cached values
    debug: bool = False  # tracebacks for errors that are editgraph bugs
    allow_model_mismatch: bool = False  # a CLI/API option, never an environment variable
    # Content Credentials (sharing/c2pa.py): where the signing identity is, never what it holds.
    c2pa_config: Path | None = None  # None: the user config dir's c2pa.toml
    c2pa_cert: str | None = None
    c2pa_key: str | None = None
    c2pa_sign_command: str | None = None
    c2pa_alg: str | None = None
    c2pa_tsa_url: str | None = None
    c2pa_trust_anchors: str | None = None
    engines_config: Path | None = None  # hosted engines' keys, endpoints, limits, routes, prices
    engine_endpoints: dict[str, str] = field(default_factory=dict)  # provider -> base URL (proxy, gateway, stand-in)
    engine_limits: dict[str, str] = field(default_factory=dict)  # provider -> calls in flight (validated where used)
    serve_token: str | None = None  # the server's access token (a secret: env or --token, never a file we write)
    max_pixels: int = 64 << 20  # per picture: 8192x8192 is ~0.8 GB as float32 RGB; a 24 GB machine survives a workflow of them
    max_file_size: int = parse_size("1G")  # an image or mask file larger than this is refused before it is read
    # CPU offload mode for model weights (models/offload.py): none, model, group, sequential. A run
    # option like the device: it changes where weights sit, never a result or a key.
    offload: str = "none"
    # Which outputs get a disk entry: "cost" (what storing saves against what it costs, at the
    # disk's measured rate) or "always" (reproducible across disks: the test suite's).
    persist: str = "cost"
    # glibc's malloc thresholds (editgraph/allocator.py): "tuned" keeps a run's working memory
    # between nodes instead of faulting it back in; "system" leaves them as the process has them.
    allocator: str = "tuned"

    def __post_init__(self) -> None:
        if self.offload not in OFFLOAD_MODES:
            raise EditgraphError(f"offload (--offload, EDITGRAPH_OFFLOAD) must be one of {', '.join(OFFLOAD_MODES)}, got {self.offload!r}")
        if self.persist not in PERSIST_MODES:
            raise EditgraphError(f"persist (EDITGRAPH_PERSIST) must be one of {', '.join(PERSIST_MODES)}, got {self.persist!r}")
        if self.allocator not in ALLOCATOR_MODES:
            raise EditgraphError(f"allocator (EDITGRAPH_ALLOCATOR) must be one of {', '.join(ALLOCATOR_MODES)}, got {self.allocator!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        cache_dir = env.get("EDITGRAPH_CACHE_DIR")
        if not cache_dir:
            import platformdirs

            cache_dir = platformdirs.user_cache_dir("editgraph")
        models_dir = env.get("EDITGRAPH_MODELS_DIR")
        models_file = env.get("EDITGRAPH_MODELS_FILE")
        engines_config = env.get("EDITGRAPH_ENGINES_CONFIG")
        per_provider = [(m.group(1).lower(), m.group(2), v) for k, v in env.items() if v and (m := _ENGINE_VAR.match(k))]
        return cls(
            cache_dir=Path(cache_dir),
            cache_size=parse_size(env.get("EDITGRAPH_CACHE_SIZE", "20G"), "EDITGRAPH_CACHE_SIZE"),
            memory_cache=parse_size(env.get("EDITGRAPH_MEMORY_CACHE", "2G"), "EDITGRAPH_MEMORY_CACHE"),
            models_dir=Path(models_dir) if models_dir else None,
            model_folders=tuple(filter(None, env.get("EDITGRAPH_MODELS", "").split(os.pathsep))),
            models_file=Path(models_file) if models_file else None,
            shared_cache=env.get("EDITGRAPH_SHARED_CACHE") or None,
            s3_endpoint=env.get("EDITGRAPH_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL") or None,
            check_inputs=_flag(env, "EDITGRAPH_CHECK_INPUTS"),
            debug=_flag(env, "EDITGRAPH_DEBUG"),
            c2pa_config=Path(env["EDITGRAPH_C2PA_CONFIG"]).expanduser() if env.get("EDITGRAPH_C2PA_CONFIG") else None,
            c2pa_cert=env.get("EDITGRAPH_C2PA_CERT") or None,
            c2pa_key=env.get("EDITGRAPH_C2PA_KEY") or None,
            c2pa_sign_command=env.get("EDITGRAPH_C2PA_SIGN_COMMAND") or None,
            c2pa_alg=env.get("EDITGRAPH_C2PA_ALG") or None,
            c2pa_tsa_url=env.get("EDITGRAPH_C2PA_TSA_URL") or None,
            c2pa_trust_anchors=env.get("EDITGRAPH_C2PA_TRUST_ANCHORS") or None,
            engines_config=Path(engines_config) if engines_config else None,
            engine_endpoints={p: v for p, what, v in per_provider if what == "BASE_URL"},
            engine_limits={p: v for p, what, v in per_provider if what == "MAX_CONCURRENCY"},
            serve_token=env.get("EDITGRAPH_TOKEN") or None,
            max_pixels=parse_size(env.get("EDITGRAPH_MAX_PIXELS", "64M"), "EDITGRAPH_MAX_PIXELS"),
            max_file_size=parse_size(env.get("EDITGRAPH_MAX_FILE_SIZE", "1G"), "EDITGRAPH_MAX_FILE_SIZE"),
            offload=env.get("EDITGRAPH_OFFLOAD") or "none",
            persist=env.get("EDITGRAPH_PERSIST") or "cost",
            allocator=env.get("EDITGRAPH_ALLOCATOR") or "tuned",
        )

    @property
    def models_root(self) -> Path:
        """Where tiny models are built on first use, and model hash memos kept."""
        return self.models_dir if self.models_dir is not None else self.cache_dir / "models"

    @property
    def models_config(self) -> Path:
        if self.models_file is not None:
            return self.models_file
        import platformdirs

        return Path(platformdirs.user_config_dir("editgraph")) / "models.json"

    @property
    def c2pa_config_file(self) -> Path:
        if self.c2pa_config is not None:
            return self.c2pa_config
        import platformdirs

        return Path(platformdirs.user_config_dir("editgraph")) / "c2pa.toml"

    def with_options(self, **changes) -> "Settings":
        return replace(self, **changes)
