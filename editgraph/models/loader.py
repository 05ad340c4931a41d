"""Load a diffusion model, offline: a tiny-model name, a diffusers folder, or one .safetensors file.

    model = load_model("tiny-sd")                      # built into <cache>/models/tiny-sd on first use
    model = load_model("/models/sd15")                 # a diffusers folder (model_index.json, unet/, ...)
    model = load_model("/models/v1-5.safetensors")     # a single original-layout checkpoint

Every path ends in the components' own `from_pretrained` (or `from_single_file` with a local
config folder), with `local_files_only=True`, so nothing here reaches a network. Weights are read
from .safetensors only: pickle-based .bin/.ckpt files can run code when loaded.

A model loads once per process (models/cache.py), keyed by its resolved path, its content hash
(models/hashing.py), device and dtype.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from editgraph.models import cache, flow_loader, hashing, names
from editgraph.models.errors import ModelError
from editgraph.models.folders import detect_family, models_root, read_json
from editgraph.models.handle import DiffusionModel
from editgraph.models.tiny import BUILDER_VERSION, MARKER, TINY_NAMES, build_into, quiet_progress, sweep_stale_builds


FOLDER_LAYOUT = "a diffusers folder needs model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".h5", ".pb")
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")

# Components a folder must have, the config file each is read from, and its weight file stem.
_COMPONENTS = {
    "unet": ("config.json", "diffusion_pytorch_model"),
    "vae": ("config.json", "diffusion_pytorch_model"),
    "text_encoder": ("config.json", "model"),
    "tokenizer": (None, None),
    "scheduler": ("scheduler_config.json", None),
}
_SDXL_COMPONENTS = {"text_encoder_2": ("config.json", "model"), "tokenizer_2": (None, None)}

_build_lock = threading.Lock()


def resolve(name_or_path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None, *, build: bool = True) -> Path:
    """The folder or file a model name or path stands for, building a tiny model if needed
    (build=False: where it would be built, which may not exist yet)."""
    text = os.fspath(name_or_path)
    if text in TINY_NAMES:
        return ensure_tiny(text) if build else models_root() / text
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    path = path.resolve()
    if path.exists():
        return path
    # A workflow's "sd15" arrives as <workflow dir>/sd15 (model.load's param is an InputPath):
    # with nothing there, the last part is a name: a built-in tiny model or a registered one.
    if path.name in TINY_NAMES:
        return ensure_tiny(path.name) if build else models_root() / path.name
    known = names.registered()
    if path.name in known:
        target = known[path.name]
        if not target.exists():
            raise ModelError(f"model {path.name!r} is registered at {target}, but nothing is there")
        return target
    listed = ", ".join(sorted(known)) or "none"
    raise ModelError(
        f"model {text!r} not found: nothing at {path}, and no model registered as {path.name!r} "
        f"(registered here: {listed}; built in: {', '.join(TINY_NAMES)}). Register it with "
        f"EDITGRAPH_MODELS=/folder/holding/models or in {names.config_file()}"
    )


def ensure_tiny(name: str) -> Path:
    """<cache>/models/<name>, built there the first time (or when the builder changed). Safe with
    other processes building or loading the same model: see build_into."""
    target = models_root() / name
    sweep_stale_builds(target.parent)  # folders of builds killed mid-write (free lock = dead builder)
    if tiny_is_built(target):
        return target  # a complete build is never replaced: no lock needed to use it
    with _build_lock:  # threads of this process; build_into's file lock covers other processes
        build_into(name, target, tiny_is_built)
    return target


def tiny_is_built(folder: Path) -> bool:
    """Whether `folder` holds a complete tiny-model build from this builder version."""
    return _tiny_version(folder) == BUILDER_VERSION and _complete(folder)


def _complete(folder: Path) -> bool:
    """Whether a cached build still has every file a load needs (someone may have pruned it)."""
    try:
        index = _read_index(folder)
        if flow_loader.is_flow_index(index):
            flow_loader.check_flow_folder(folder, index)
        else:
            _check_folder(folder, index)
    except ModelError:
        return False
    return True


def _tiny_version(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / MARKER).read_text(encoding="utf-8")).get("builder_version"))
    except (OSError, ValueError, TypeError):
        return None


def model_hash(path: Path, config: str | os.PathLike[str] | None = None, transformer: Path | None = None) -> str:
    """Content hash of the files a load of `path` reads: a folder's configs, tokenizer files and
    the weight files chosen; or a checkpoint file and the config folder it loads with; with a
    single-file `transformer` (flow families), that file in place of the folder's transformer weights."""
    if transformer is not None:
        from editgraph.models.flow_single_file import check_transformer_file

        if path.is_file():
            raise ModelError(f"a single-file transformer ({transformer}) goes with a model folder, not with the checkpoint {path}")
        index = _read_index(path)
        if not flow_loader.is_flow_index(index):
            raise ModelError(
                f"a single-file transformer ({transformer}) goes with a Flux 2 / Kontext / Qwen-Image-Edit folder; "
                f"{path} is a {index.get('_class_name')} (load SD checkpoints as one file through `model`)"
            )
        check_transformer_file(transformer)
        folder = hashing.content_hash(path, flow_loader.check_flow_folder(path, index, single_transformer=True))
        return hashing.combine(folder, hashing.content_hash(transformer.parent, [transformer]))
    if path.is_file():
        from editgraph.models.single_file import choose_config

        cfg = choose_config(path, config)
        weights = hashing.content_hash(path, [path])
        configs = hashing.content_hash(cfg, [p for p in sorted(cfg.rglob("*")) if p.is_file() and not p.name.endswith(WEIGHT_SUFFIXES)])
        return hashing.combine(weights, configs)
    index = _read_index(path)
    if flow_loader.is_flow_index(index):  # Flux 2 / Klein, Kontext, Qwen-Image-Edit
        return hashing.content_hash(path, flow_loader.check_flow_folder(path, index))
    _check_folder(path, index)
    return hashing.content_hash(path, _folder_files(path, index))


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: Any = None,
    dtype: Any = None,
    base_dir: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    transformer: str | os.PathLike[str] | None = None,
) -> DiffusionModel:
    """Load (once per process) the model `name_or_path` names, on `device` (default CPU) in `dtype`
    (default float32; a torch.dtype or "float32"/"float16"/"bfloat16").

    `base_dir` resolves a relative path (the workflow file's folder). `config` is a diffusers or
    config-only folder for a single-file checkpoint whose family cannot be told from its weights.
    `transformer` is a .safetensors or .gguf file holding a flow model's transformer, loaded with
    the folder's configs (models/flow_single_file.py).
    Raises ModelError naming the path and what is missing or unreadable.
    """
    import torch

    torch_dtype = parse_dtype(dtype)
    dev = torch.device(device if device is not None else "cpu")
    path = resolve(name_or_path, base_dir)
    single = resolve_transformer(transformer, base_dir, model=name_or_path)
    digest = model_hash(path, config, single)
    dtype_name = str(torch_dtype).removeprefix("torch.")
    key = cache.CacheKey(str(path), digest, str(dev), dtype_name)
    name = os.fspath(name_or_path)
    if path.parent == models_root() and path.name in TINY_NAMES:
        name = path.name  # "<workflow dir>/tiny-sd" fell back to the tiny model: call it that

    if path.is_dir() and flow_loader.is_flow_index(_read_index(path)):
        # Components load lazily, when a node first uses them (models/flow_loader.py).
        def open_flow() -> Any:
            return flow_loader.open_flow_model(
                path, _read_index(path), name=name, content_hash=digest, torch_dtype=torch_dtype, device=dev,
                transformer=single,
            )

        return cache.get_or_load(key, open_flow)

    def load() -> DiffusionModel:
        with quiet_progress():
            if path.is_file():
                from editgraph.models.single_file import load_single_file

                model = load_single_file(path, name=name, content_hash=digest, dtype=torch_dtype, config=config)
            else:
                model = _load_folder(path, name=name, content_hash=digest, dtype=torch_dtype)
        for module in (model.unet, model.vae, model.text_encoder, model.text_encoder_2):
            if module is not None:
                module.to(dev).eval().requires_grad_(False)
        model.dtype = dtype_name
        return model

    return cache.get_or_load(key, load)


def resolve_transformer(
    transformer: str | os.PathLike[str] | None, base_dir: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | None = None,
) -> Path | None:
    """A single-file transformer's path (relative ones against `base_dir`), checked to be a
    .safetensors or .gguf file; with none given, the one the registry gives the name `model`
    (models.json {"name": {"path": ..., "transformer": ...}}); None when there is neither."""
    if transformer is None or os.fspath(transformer) == "":
        if model is None:
            return None
        where = Path(os.fspath(model)).expanduser()
        if where.exists() or os.fspath(model) in TINY_NAMES:
            return None  # a path, not a registered name
        path = names.registered_transformers().get(where.name)
        if path is None:
            return None
    else:
        path = Path(transformer).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        path = path.resolve()
    from editgraph.models.flow_single_file import check_transformer_file  # only with a file to check

    check_transformer_file(path)
    return path


def parse_dtype(dtype: Any):
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    found = names.get(str(dtype).lower().removeprefix("torch."))
    if found is None:
        raise ModelError(f"dtype {dtype!r} is not supported; use one of float32, float16, bfloat16")
    return found


# --- diffusers folders ------------------------------------------------------------------------


def _read_index(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise ModelError(f"{root} is neither a diffusers folder nor a .safetensors file")
    index_file = root / "model_index.json"
    if not index_file.is_file():
        raise ModelError(f"no model_index.json in {root} ({FOLDER_LAYOUT})")
    return read_json(index_file)


def _components(index: dict[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    wanted = dict(_COMPONENTS)
    if isinstance(index.get("text_encoder_2"), list) and index["text_encoder_2"][0]:
        wanted.update(_SDXL_COMPONENTS)
    return wanted


def _check_folder(root: Path, index: dict[str, Any]) -> dict[str, str | None]:
    """Raise ModelError naming the first missing piece; return each weighted component's variant
    (None for the plain files, "fp16" where a component holds only fp16 weights)."""
    variants: dict[str, str | None] = {}
    for comp, (config_name, weight_stem) in _components(index).items():
        folder = root / comp
        if not folder.is_dir():
            raise ModelError(f"no {comp}/ folder in {root} ({FOLDER_LAYOUT})")
        if comp.startswith("tokenizer"):
            if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()) and not (folder / "tokenizer.json").is_file():
                raise ModelError(f"no vocab.json + merges.txt (or tokenizer.json) in {folder}")
            continue
        if not (folder / config_name).is_file():
            raise ModelError(f"no {comp}/{config_name} in {root} ({FOLDER_LAYOUT})")
        if weight_stem is None:
            continue
        found = _weights(folder, weight_stem)
        if found is None:
            pickled = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
            why = ""
            if pickled:
                why = f"; it holds only {', '.join(pickled)}, and editgraph loads .safetensors only (pickle files can run code)"
            raise ModelError(f"no {comp}/{weight_stem}.safetensors in {root}{why}")
        variants[comp] = found[1]
    return variants


def _weights(folder: Path, stem: str) -> tuple[list[Path], str | None] | None:
    """The safetensors file(s) of a component, plain preferred over the fp16 variant, and a
    sharded checkpoint's shards (listed by its index file)."""
    for variant in (None, "fp16"):
        name = stem + (f".{variant}" if variant else "")
        single = folder / f"{name}.safetensors"
        if single.is_file():
            return [single], variant
        index = folder / f"{name}.safetensors.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelError(f"cannot read shard index {index}: {exc}") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise ModelError(f"{index} lists {missing[0]}, which is not in {folder}")
            return [index, *(folder / s for s in shards)], variant
    return None


def _folder_files(root: Path, index: dict[str, Any]) -> list[Path]:
    files = [root / "model_index.json"]
    if (root / MARKER).is_file():
        files.append(root / MARKER)
    for comp, (_, weight_stem) in _components(index).items():
        folder = root / comp
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES) and not path.name.endswith(".index.json"):
                files.append(path)  # configs, tokenizer files
        if weight_stem is not None:
            found = _weights(folder, weight_stem)
            assert found is not None  # _check_folder saw it
            files.extend(found[0])
    return files


def _load_folder(root: Path, *, name: str, content_hash: str, dtype) -> DiffusionModel:
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    index = _read_index(root)
    variants = _check_folder(root, index)
    marker = read_json(root / MARKER) if (root / MARKER).is_file() else None
    family, kind = detect_family(read_json(root / "unet" / "config.json"), marker, where=str(root))
    scheduler_config = read_json(root / "scheduler" / "scheduler_config.json")
    common = {"local_files_only": True, "use_safetensors": True}

    def component(comp: str, load):
        try:
            return load()
        except ModelError:
            raise
        except Exception as exc:  # a torn or corrupt file: name it, keep the loader's reason
            raise ModelError(f"cannot load {comp} from {root / comp}: {type(exc).__name__}: {exc}") from exc

    def text_encoder(comp: str):
        entry = index.get(comp)
        cls_name = entry[1] if isinstance(entry, list) and len(entry) == 2 else "CLIPTextModel"
        if cls_name not in ("CLIPTextModel", "CLIPTextModelWithProjection"):
            raise ModelError(
                f"{root / 'model_index.json'}: {comp} is {cls_name}; editgraph loads CLIPTextModel or CLIPTextModelWithProjection"
            )
        cls = getattr(transformers, cls_name)
        return component(comp, lambda: cls.from_pretrained(root, subfolder=comp, dtype=dtype, variant=variants[comp], **common))

    def diffusers_model(comp: str, cls):
        return component(comp, lambda: cls.from_pretrained(root, subfolder=comp, torch_dtype=dtype, variant=variants[comp], **common))

    def tokenizer(comp: str):
        return component(comp, lambda: CLIPTokenizer.from_pretrained(root, subfolder=comp, local_files_only=True))

    unet = diffusers_model("unet", UNet2DConditionModel)
    vae = diffusers_model("vae", AutoencoderKL)
    sdxl = "text_encoder_2" in _components(index)
    return DiffusionModel(
        name=name,
        path=str(root),
        family=family,  # type: ignore[arg-type]
        kind=kind,  # type: ignore[arg-type]
        content_hash=content_hash,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder("text_encoder"),
        tokenizer=tokenizer("tokenizer"),
        scheduler_config=scheduler_config,
        text_encoder_2=text_encoder("text_encoder_2") if sdxl else None,
        tokenizer_2=tokenizer("tokenizer_2") if sdxl else None,
        extra={"pipeline": index.get("_class_name"), "variants": {k: v for k, v in variants.items() if v}},
    )
