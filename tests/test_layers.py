"""The folders are the architecture: a module imports only from its own layer or lower ones.

Every `import` in the package is read (module level and inside functions alike, since a lazy
import is still a dependency) and checked against LAYERS. A new package must be placed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "editgraph"

# Lowest first. A module may import from its own layer and any layer before it.
LAYERS: list[tuple[str, ...]] = [
    ("editgraph.errors", "editgraph.atomic", "editgraph.settings", "editgraph.version", "editgraph.filehash", "editgraph.collector",
     "editgraph.allocator"),
    ("editgraph.values",),
    ("editgraph.ops",),
    ("editgraph.nodes.registry", "editgraph.nodes.context", "editgraph.nodes"),  # the node API
    ("editgraph.graph",),
    ("editgraph.workflows",),  # bundled documents, found by name
    ("editgraph.models",),
    ("editgraph.diffusion",),
    ("editgraph.engines",),
    ("editgraph.nodes.builtin",),
    ("editgraph.executor",),
    ("editgraph.sharing",),
    ("editgraph.api",),  # open_workflow, run: what the CLI, batches and the server share
    ("editgraph.batch",),
    ("editgraph.serve",),
    ("editgraph.testing",),
    ("editgraph.cli",),
    ("editgraph",),  # the public API in editgraph/__init__.py
]


def layer_of(module: str) -> int:
    """The layer of the longest prefix in LAYERS that names `module` or a package above it."""
    best, best_len = None, -1
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add its package to LAYERS in {__file__}")
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every editgraph import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from editgraph.x import y` may import the submodule editgraph.x.y
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((node.lineno, sub if _is_module(sub) else base))
    return [(line, m) for line, m in found if m == "editgraph" or m.startswith("editgraph.")]


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        mine = layer_of(here)
        for line, target in imported_modules(path):
            theirs = layer_of(target)
            if theirs > mine:
                bad.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {here} (layer {LAYERS[mine][0]}) "
                    f"imports {target} (higher layer {LAYERS[theirs][0]})"
                )
    return bad


def test_lower_layers_never_import_higher_ones():
    assert violations() == []


def test_the_check_sees_a_wrong_way_import(tmp_path, monkeypatch):
    """The checker itself must be able to fail: a values module importing the executor is caught."""
    fake = tmp_path / "editgraph"
    (fake / "values").mkdir(parents=True)
    (fake / "executor").mkdir()
    for f in ("__init__.py", "values/__init__.py", "executor/__init__.py", "executor/run.py"):
        (fake / f).write_text("")
    (fake / "values" / "bad.py").write_text("def f():\n    from editgraph.executor import run\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", fake)
    assert violations() == [
        "editgraph/values/bad.py:2: editgraph.values.bad (layer editgraph.values) "
        "imports editgraph.executor.run (higher layer editgraph.executor)"
    ]


@pytest.mark.parametrize("module, expected", [("editgraph.nodes.builtin.mask", "editgraph.nodes.builtin"),
                                               ("editgraph.nodes.registry", "editgraph.nodes.registry")])
def test_longest_prefix_decides_the_layer(module, expected):
    assert expected in LAYERS[layer_of(module)]
