"""Model names that travel: a workflow says "sd15", each machine says where sd15 lives.

Two sources, both optional, read on each lookup (they are small):
- EDITGRAPH_MODELS: folders separated by os.pathsep; every diffusers folder (holding a
  model_index.json) or .safetensors file directly inside one is registered under its folder
  name or file stem. An entry "name=path" registers one model under that name.
- EDITGRAPH_MODELS_FILE, else <user config dir>/editgraph/models.json: {"name": "path", ...}.
  Relative paths in it resolve against the file's folder. A flow model whose transformer comes
  from one file (a GGUF, say) is an object: {"flux2-q4": {"path": "FLUX.2-dev",
  "transformer": "flux2-dev-Q4_K_M.gguf"}}; model.load then uses that file unless it names another.
Explicit entries (name=path, the JSON file) win over folder scans.
"""

from __future__ import annotations

import json
from pathlib import Path

from editgraph.models.errors import ModelError
from editgraph.settings import Settings


def config_file() -> Path:
    return Settings.from_env().models_config


def registered() -> dict[str, Path]:
    """Every model name this machine knows, mapped to its folder or checkpoint file."""
    return _read()[0]


def registered_transformers() -> dict[str, Path]:
    """Registered names whose transformer loads from a file of its own (models.json objects)."""
    return _read()[1]


def _read() -> tuple[dict[str, Path], dict[str, Path]]:
    scanned: dict[str, Path] = {}
    explicit: dict[str, Path] = {}
    for entry in Settings.from_env().model_folders:
        name, eq, target = entry.partition("=")
        if eq:
            explicit[name.strip()] = Path(target).expanduser()
            continue
        folder = Path(entry).expanduser()
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            if (child / "model_index.json").is_file():
                scanned.setdefault(child.name, child)
            elif child.suffix == ".safetensors" and child.is_file():
                scanned.setdefault(child.stem, child)
    transformers: dict[str, Path] = {}
    path = config_file()
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read the model registry {path}: {exc}") from None
        if not isinstance(data, dict) or not all(_entry_ok(v) for v in data.values()):
            raise ModelError(
                f"the model registry {path} must be a JSON object of name -> path strings "
                '(or name -> {"path": ..., "transformer": ...} for a single-file transformer)'
            )
        for name, target in data.items():
            entry = target if isinstance(target, dict) else {"path": target}
            explicit[name] = (path.parent / Path(entry["path"]).expanduser()).resolve()
            if "transformer" in entry:
                transformers[name] = (path.parent / Path(entry["transformer"]).expanduser()).resolve()
    return {**scanned, **explicit}, transformers


def _entry_ok(value: object) -> bool:
    if isinstance(value, str):
        return True
    return (
        isinstance(value, dict) and isinstance(value.get("path"), str) and set(value) <= {"path", "transformer"}
        and isinstance(value.get("transformer", ""), str)
    )
