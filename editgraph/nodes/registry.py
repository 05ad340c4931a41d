"""The node registry. A node is one small class:

    @node("mask.feather", version="1.0.0")
    class FeatherMask(Node):
        \"\"\"Blur a mask's edge so the edit blends into its surroundings.\"\"\"

        class Params(NodeParams):
            radius: float = Field(4, ge=0, le=512, description="Gaussian sigma in pixels")

        def run(self, ctx: RunContext, mask: Mask) -> Mask:
            ...

Input sockets come from run()'s annotated keyword parameters (`X | None = None` makes one
optional); the output socket from its return annotation, or from a NamedTuple of sockets for
several named outputs (the first is the primary one, what a bare "node_id" reference means).
A malformed class fails at registration, naming the class and what is wrong.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from editgraph.errors import NodeDefinitionError
from editgraph.values.sockets import SocketType, socket_of

_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


class NodeParams(BaseModel):
    """Base of every node's Params: frozen, and a misspelled field is an error, never ignored."""

    # NaN and infinity are refused: no edit means them, and JSON keys must spell every value apart.
    # defer_build: a Params class builds its validator the first time it validates, so binding a
    # workflow pays for the node types it uses, not for every type their modules define.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, defer_build=True)


class _Mark:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


INPUT_PATH = _Mark("InputPath")
SEED = _Mark("Seed")

# A file the node reads. Relative values resolve against the workflow file's folder (or the
# working directory for --set values). Not part of the key: the node's source_token() hashes
# what the file holds instead, so the same photo elsewhere keys alike.
InputPath = Annotated[str, INPUT_PATH]

# A colour param: three sRGB values, each checked to lie in 0..1 when the workflow is bound.
Unit = Annotated[float, Field(ge=0, le=1)]
RGB = tuple[Unit, Unit, Unit]

_SEED_MAX = 2**64 - 1  # what torch's generator takes


def _seed_in_range(value: int | str) -> int | str:
    if isinstance(value, int) and not 0 <= value <= _SEED_MAX:
        raise ValueError(f"a seed is 'random' or an integer from 0 to {_SEED_MAX}")
    return value


# A seed: an integer torch's generator takes, or "random", which is drawn before keying and
# recorded in the run report.
Seed = Annotated[Union[int, Literal["random"]], AfterValidator(_seed_in_range), SEED]


@functools.cache
def field_marks(params_cls: type[NodeParams], mark: _Mark) -> tuple[str, ...]:
    """Names of the Params fields annotated with `mark` (InputPath, Seed)."""
    return tuple(name for name, f in params_cls.model_fields.items() if mark in f.metadata or _has_mark(f.annotation, mark))


def _has_mark(annotation: Any, mark: _Mark) -> bool:
    if get_origin(annotation) is Annotated:
        return mark in get_args(annotation)[1:]
    if get_origin(annotation) in (Union, types.UnionType):  # InputPath | None
        return any(_has_mark(member, mark) for member in get_args(annotation))
    return False


@dataclass(frozen=True)
class InputSpec:
    name: str
    socket: SocketType
    optional: bool


class Node:
    """Base class. Instances hold only their validated params; everything else comes from ctx."""

    type: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[NodeParams]] = NodeParams
    deterministic: ClassVar[bool] = True  # False: never served from cache
    # False: cached by its content key like any node (a re-run never pays twice), but its output
    # cannot be reproduced from a seed (hosted engines); provenance says so.
    replayable: ClassVar[bool] = True
    billing: ClassVar[str | None] = None  # the output holding a CallLog of paid engine calls
    inputs: ClassVar[dict[str, InputSpec]]
    outputs: ClassVar[dict[str, SocketType]]  # ordered; the first is the primary output
    multi_output: ClassVar[bool]
    unkeyed: ClassVar[tuple[str, ...]] = ()  # params that only guard (a pinned hash), never change the output
    # True: its output is made by a trained generative model (a denoiser, a VAE decoder, a hosted
    # image model). Decides the AI disclosure of every file saved downstream (C2PA, IPTC XMP).
    generative: ClassVar[bool] = False
    # Components of the model on each Model input that run() uses, e.g. {"model": ("vae",)}: with
    # Executor(free_components=True) the rest are released once no later node needs them.
    model_components: ClassVar[dict[str, tuple[str, ...]]] = {}
    # For a node whose output is its input model with something on top (model.lora): that input's
    # name. Components the output's users need are then kept loaded in the input's model too.
    wraps_model: ClassVar[str | None] = None
    key_exclude: ClassVar[set[str] | None]  # params left out of the content key: input paths and `unkeyed`
    # Whether outputs get a disk entry (editgraph.executor.persist): "measured" (stored when
    # recomputing would cost more than writing and reading back), "expensive" (always: model
    # work), "cheap" (never).
    cost_class: ClassVar[str] = "measured"
    # The arrays run() is handed for Image and Mask inputs: "torch" (tensors, on ctx.device) or
    # "numpy" (numpy arrays; a node that declares it may return either kind). A run whose nodes
    # all take numpy never imports torch (1.3 s of the README's object removal, issue 13); the
    # executor converts between the two, sharing memory, wherever a "torch" node meets an array.
    arrays: ClassVar[str] = "torch"

    def __init__(self, params: NodeParams):
        self.params = params

    @classmethod
    def source_token(cls, params: NodeParams) -> str | None:
        """For nodes that read outside the graph: a hash of what they read (file bytes, model files)."""
        return None

    @classmethod
    def check_sources(cls, params: NodeParams, *, deep: bool = True, settings: Any = None) -> list[tuple[str, str]]:
        """What the node reads, checked before anything runs: (param field, problem) pairs.

        The default checks that every InputPath param names an existing regular file. `deep`
        (editgraph validate) lets a node look further without loading anything: model.load checks
        its files' layout and pinned hash."""
        import os

        from editgraph.ops.budget import file_kind

        problems = []
        for fname in field_marks(cls.Params, INPUT_PATH):
            value = getattr(params, fname, None)
            if not isinstance(value, str) or not value:
                continue  # an unbound $param: nothing to look for yet
            try:
                kind = file_kind(os.stat(value).st_mode)
            except FileNotFoundError:
                problems.append((fname, f"input file not found: {value}"))
                continue
            except OSError as exc:
                problems.append((fname, f"cannot read input file {value}: {exc.strerror}"))
                continue
            if kind is not None:
                problems.append((fname, f"input {value} is {kind}, not a regular file"))
        return problems

    @classmethod
    def planned_size(cls, params: NodeParams, connected: frozenset[str]) -> tuple[int, int] | None:
        """The smallest (width, height) the node's picture output can have, known from its
        params alone (`connected`: the names of its inputs that are wired), or None when the size
        comes from its inputs. Validation and every run check it against the pixel budget before
        anything is allocated; run() checks the actual size again (ops.budget.check_pixels)."""
        return None

    # The model kinds ("base", "inpaint", "instruct") the node's `model` input can run; None: any.
    # Where the wired model's kind is known without loading it (Node.model_kind), a wiring the
    # node cannot run is refused by validation, not after the model has loaded.
    model_kinds: ClassVar[frozenset[str] | None] = None

    @classmethod
    def model_kind(cls, params: NodeParams) -> tuple[str, str] | None:
        """For a node whose output is a model: (its name, its kind) when known without loading
        anything (a built-in model's name, a folder's UNet config), else None."""
        return None

    # Its InputPath files may be looked for again by name and hash when an image's workflow runs
    # on another machine (model.load: no, its names resolve through the model registry).
    relocatable: ClassVar[bool] = True

    @classmethod
    def estimate_cost(cls, params: NodeParams, connected: frozenset[str]) -> tuple[str, float] | None:
        """For paid nodes: (engine, estimated USD) from params and which inputs are connected,
        before anything runs. None: the node costs nothing."""
        return None

    @classmethod
    def key_params(cls, params: NodeParams) -> str:
        """The params that go into the content key, as JSON in field order: all but input paths
        (source_token hashes what they read) and the `unkeyed` ones."""
        return params.model_dump_json(exclude=cls.key_exclude)


REGISTRY: dict[str, type[Node]] = {}
COST_CLASSES = ("measured", "expensive", "cheap")
ARRAY_KINDS = ("torch", "numpy")


def node(type_name: str, *, version: str, deterministic: bool = True):
    """Class decorator registering a node type. See the module docstring."""

    def register(cls: type) -> type:
        where = f"{cls.__module__}.{cls.__qualname__}"

        def bad(why: str) -> NodeDefinitionError:
            return NodeDefinitionError(f"node class {where} ('{type_name}'): {why}")

        if not isinstance(cls, type) or not issubclass(cls, Node):
            raise bad("must subclass editgraph.nodes.registry.Node")
        if not _TYPE_NAME.match(type_name):
            raise bad("type name must be dotted lowercase words, e.g. 'mask.feather'")
        if not _SEMVER.match(version):
            raise bad(f"version must be semver MAJOR.MINOR.PATCH, got {version!r}")
        if not (cls.__doc__ or "").strip():
            raise bad("needs a docstring saying what it does to the picture")
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, NodeParams)):
            raise bad("Params must subclass NodeParams")
        if cls.Params.model_config.get("extra") != "forbid" or not cls.Params.model_config.get("frozen"):
            raise bad("Params must keep NodeParams' config (frozen, extra='forbid')")
        inputs, outputs, multi = _sockets(cls.run, bad)
        if field_marks(cls.Params, INPUT_PATH) and cls.source_token.__func__ is Node.source_token.__func__:
            raise bad("reads an InputPath, so it must define source_token() hashing what it reads")
        previous = REGISTRY.get(type_name)
        if previous is not None and (previous.__module__, previous.__qualname__) != (cls.__module__, cls.__qualname__):
            raise bad(f"type already registered by {previous.__module__}.{previous.__qualname__}")
        cls.type = type_name
        cls.version = version
        cls.deterministic = deterministic
        cls.inputs = inputs
        cls.outputs = outputs
        cls.multi_output = multi
        if cls.cost_class not in COST_CLASSES:
            raise bad(f"cost_class must be one of {COST_CLASSES}, got {cls.cost_class!r}")
        if cls.arrays not in ARRAY_KINDS:
            raise bad(f"arrays must be one of {ARRAY_KINDS}, got {cls.arrays!r}")
        unknown = set(cls.unkeyed) - set(cls.Params.model_fields)
        if unknown:
            raise bad(f"unkeyed names unknown params {sorted(unknown)}")
        cls.key_exclude = set(field_marks(cls.Params, INPUT_PATH)) | set(cls.unkeyed) or None
        REGISTRY[type_name] = cls
        return cls

    return register


def _sockets(run: Any, bad) -> tuple[dict[str, InputSpec], dict[str, SocketType], bool]:
    if run is Node.__dict__.get("run"):
        raise bad("must define run(self, ctx, ...)")
    try:
        hints = typing.get_type_hints(run, include_extras=True)
    except Exception as exc:
        raise bad(f"run() annotations do not resolve: {exc}") from exc
    params = list(inspect.signature(run).parameters.values())
    if len(params) < 2 or params[0].name != "self" or params[1].name != "ctx":
        raise bad("run must be declared as run(self, ctx, <inputs>...)")
    inputs: dict[str, InputSpec] = {}
    for p in params[2:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise bad(f"run() input '{p.name}' must be a named parameter, not *args/**kwargs")
        ann = hints.get(p.name)
        optional = False
        if get_origin(ann) in (Union, types.UnionType):
            members = [a for a in get_args(ann) if a is not type(None)]
            if len(members) == 1 and len(get_args(ann)) == 2:
                ann, optional = members[0], True
        sock = socket_of(ann)
        if sock is None:
            raise bad(f"run() input '{p.name}' has no socket type annotation (got {ann!r})")
        if optional and p.default is not None:
            raise bad(f"optional input '{p.name}' must default to None")
        inputs[p.name] = InputSpec(p.name, sock, optional)
    ret = hints.get("return")
    single = socket_of(ret)
    if single is not None:
        return inputs, {single.name.lower(): single}, False
    if isinstance(ret, type) and issubclass(ret, tuple) and hasattr(ret, "_fields"):
        outs: dict[str, SocketType] = {}
        for name, ann in typing.get_type_hints(ret, include_extras=True).items():
            sock = socket_of(ann)
            if sock is None:
                raise bad(f"output '{name}' of {ret.__name__} has no socket type annotation")
            outs[name] = sock
        if not outs:
            raise bad("the NamedTuple of outputs is empty")
        return inputs, outs, True
    raise bad(f"run() return annotation must be a socket type or a NamedTuple of them, got {ret!r}")


BUILTIN_MODULES = (
    "editgraph.nodes.builtin.image",
    "editgraph.nodes.builtin.mask",
    "editgraph.nodes.builtin.canvas",
    "editgraph.nodes.builtin.grade",
    "editgraph.nodes.builtin.outpaint",
    "editgraph.nodes.builtin.model",
    "editgraph.nodes.builtin.diffusion",
    "editgraph.nodes.builtin.fill",
    "editgraph.nodes.builtin.hosted",
    "editgraph.nodes.builtin.flow",
    "editgraph.nodes.builtin.ip_adapter",
)


def load_builtin_nodes() -> dict[str, type[Node]]:
    """Import the built-in node modules (idempotent) and return the registry."""
    import importlib

    for name in BUILTIN_MODULES:
        importlib.import_module(name)
    return REGISTRY


@functools.cache
def builtin_index() -> dict[str, str]:
    """{node type: the built-in module that defines it}, read from the modules' source (each
    node's `@node("type", ...)` line) without importing them. tests/nodes/test_registry.py checks
    it against what importing them registers."""
    import importlib.util
    from pathlib import Path

    declared = re.compile(r'\n@node\("([^"]+)"')  # a literal to search for: ^ with re.M tries every position
    index: dict[str, str] = {}
    for name in BUILTIN_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        for type_name in declared.findall(Path(spec.origin).read_text(encoding="utf-8")):
            index.setdefault(type_name, name)
    return index


def load_nodes(type_names: Iterable[str]) -> dict[str, type[Node]]:
    """The registry, with the built-in modules that define `type_names` imported: what binding a
    workflow needs. Importing all eleven (and building every Params model) was a third of
    `editgraph validate`'s time (issue 9). A type no built-in module declares (a typo, or a node
    other code registers) imports them all, so errors still suggest the near names."""
    import importlib

    index = builtin_index()
    wanted: set[str] = set()
    for type_name in type_names:
        if type_name in REGISTRY:
            continue
        module = index.get(type_name)
        if module is None:
            return load_builtin_nodes()
        wanted.add(module)
    for name in BUILTIN_MODULES:
        if name in wanted:
            importlib.import_module(name)
    return REGISTRY
