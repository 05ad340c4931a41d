"""Node versions that cannot drift: a checked-in table of (node type, version, code hash).

A node's cache entries are keyed by its version, so a node whose code changes must get a new
version or old results are served for new code. `code_hash` reads the node class's code (its
AST: comments, docstrings, formatting and DESCRIPTIVE attributes do not count) together with every function, class and
constant of its own module that it uses, followed transitively, and its base classes (short of
Node) in whatever module they live, each with what it uses of its own module. tests/nodes/test_versions.py
fails when a hash changes under an unchanged version, naming the node.

    python -m editgraph.nodes.versions            # what changed, against the table
    python -m editgraph.nodes.versions --update   # rewrite the table; refused while a changed
                                                  # node still has its old version

The trade-off: other code in other modules (editgraph.ops, editgraph.diffusion) is not followed; a
change there that alters a node's pixels needs its version bumped by hand, and the test of that
op's values is what catches it.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
from pathlib import Path

import blake3

TABLE = Path(__file__).with_name("versions.json")


# Class attributes that describe a node's output to people and labels, never compute it (like a
# docstring): setting one must not demand a version bump, which would void every cached result.
# model_components / wraps_model: which parts of a model a node uses (for releasing memory, and
# for keying: the executor folds a model's LoRAs into the key of the nodes that use the parts they
# change), never what run() computes; a changed declaration changes keys by itself.
# arrays: the kind of array run() is handed (numpy or torch tensors), the same values either way.
# model_kinds: which models validation lets into the node, never what run() computes.
DESCRIPTIVE = frozenset({"generative", "cost_class", "model_components", "wraps_model", "arrays", "model_kinds"})  # cost_class: how outputs are kept (disk or not), never what they are


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.ClassDef):
            node.body = [stmt for stmt in node.body if not _describes(stmt)] or [ast.Pass()]
    return tree


def _describes(stmt: ast.stmt) -> bool:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
    return bool(targets) and all(isinstance(t, ast.Name) and t.id in DESCRIPTIVE for t in targets)


def _module_defs(module: ast.Module) -> dict[str, ast.AST]:
    defs: dict[str, ast.AST] = {}
    for stmt in module.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[stmt.name] = stmt
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    defs[t.id] = stmt
    return defs


# Base classes are followed only into editgraph's own modules, short of the node API's Node, every
# node's base (a change there is the framework's, not a node's): a mixin from the standard library
# or another package is no code of ours, and following it would tie node hashes to its version.
_BASES_NOT_FOLLOWED = frozenset({"editgraph.nodes.registry"})


def _followed(base: type) -> bool:
    return base.__module__.startswith("editgraph.") and base.__module__ not in _BASES_NOT_FOLLOWED


def code_hash(cls: type) -> str:
    """16 hex digits of blake3 over the class's code and the same-module code it uses, and the
    same for each of its base classes short of Node, in whatever module it lives (image.load and
    mask.load share a base that lives in the node API)."""
    parts: list[str] = []
    seen: set[tuple[str, str]] = set()
    trees: dict[str, dict[str, ast.AST]] = {}
    for klass in [cls, *filter(_followed, cls.__mro__[1:])]:
        parts += _module_parts(klass.__module__, klass.__name__, seen, trees)
    return blake3.blake3("\n".join(sorted(parts)).encode()).hexdigest()[:16]


def _module_parts(module_name: str, start: str, seen: set[tuple[str, str]], trees: dict[str, dict[str, ast.AST]]) -> list[str]:
    """The AST dumps of `start` and of every definition of its module it names, transitively."""
    if module_name not in trees:
        tree = _strip_docstrings(ast.parse(inspect.getsource(sys.modules[module_name])))
        trees[module_name] = _module_defs(tree)  # type: ignore[arg-type]
    defs = trees[module_name]
    todo, parts = [start], []
    while todo:
        name = todo.pop()
        if (module_name, name) in seen or name not in defs:
            continue
        seen.add((module_name, name))
        node = defs[name]
        parts.append(ast.dump(node, include_attributes=False))
        todo.extend(sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name)}))  # visited ones are skipped above
    return parts


def current(registry: dict[str, type] | None = None) -> dict[str, dict[str, str]]:
    """{type: {"version", "code"}} for every built-in node."""
    from editgraph.nodes.registry import BUILTIN_MODULES, load_builtin_nodes

    registry = registry if registry is not None else load_builtin_nodes()
    return {
        t: {"version": cls.version, "code": code_hash(cls)}
        for t, cls in sorted(registry.items())
        if cls.__module__ in BUILTIN_MODULES
    }


def read_table() -> dict[str, dict[str, str]]:
    return json.loads(TABLE.read_text()) if TABLE.is_file() else {}


def drift(table: dict[str, dict[str, str]], now: dict[str, dict[str, str]]) -> tuple[list[str], list[str]]:
    """(errors, stale): errors are code changes without a version bump; stale are table rows to
    rewrite (new nodes, bumped versions, removed nodes)."""
    errors, stale = [], []
    for t, row in now.items():
        old = table.get(t)
        if old is None:
            stale.append(f"{t}: new node (version {row['version']})")
        elif old["version"] == row["version"] and old["code"] != row["code"]:
            errors.append(
                f"node '{t}' changed its code but kept version {row['version']}: bump its version "
                f"(its cache entries would otherwise serve the old code's results), then run "
                f"`python -m editgraph.nodes.versions --update`"
            )
        elif old != row:
            stale.append(f"{t}: {old['version']} -> {row['version']}")
    stale += [f"{t}: removed" for t in table if t not in now]
    return errors, stale


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    now = current()
    errors, stale = drift(read_table(), now)
    for line in errors:
        print(f"error: {line}")
    for line in stale:
        print(f"table: {line}")
    if errors:
        return 1
    if "--update" in argv and stale:
        TABLE.write_text("{\n" + ",\n".join(f"  {json.dumps(t)}: {json.dumps(r)}" for t, r in now.items()) + "\n}\n")
        print(f"wrote {TABLE}")
        return 0
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
