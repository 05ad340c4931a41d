"""A node whose code changes without a version bump fails here, by name (see editgraph/nodes/versions.py)."""

from __future__ import annotations

import sys
import types

from editgraph.nodes import versions


def test_every_builtin_node_matches_the_checked_in_table():
    errors, stale = versions.drift(versions.read_table(), versions.current())
    assert errors == []
    assert stale == [], "run `python -m editgraph.nodes.versions --update` and commit editgraph/nodes/versions.json"


def _module(name: str, src: str) -> types.ModuleType:
    """A throwaway module from source, readable by inspect as the hasher reads modules."""
    import linecache

    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    linecache.cache[module.__file__] = (len(src), None, src.splitlines(True), module.__file__)
    sys.modules[name] = module
    exec(compile(src, module.__file__, "exec"), module.__dict__)
    return module


def _node_module(body: str) -> type:
    """A throwaway module holding one class, as the hasher reads modules from source."""
    src = "K = 2\n\ndef helper(x):\n    return x * K\n\n" + body
    return _module(f"_versions_probe_{abs(hash(body))}", src).Probe


def test_a_changed_body_or_helper_changes_the_hash_and_prose_does_not():
    base = _node_module('class Probe:\n    """Doubles."""\n    def run(self, x):\n        return helper(x)\n')
    reworded = _node_module('class Probe:\n    """Doubles the picture."""\n    def run(self, x):\n        # a comment\n        return helper(x)\n')
    changed = _node_module('class Probe:\n    """Doubles."""\n    def run(self, x):\n        return helper(x) + 1\n')
    assert versions.code_hash(base) == versions.code_hash(reworded)
    assert versions.code_hash(base) != versions.code_hash(changed)
    # Declaring what made the output (the AI disclosure) computes nothing: no version bump.
    flagged = _node_module('class Probe:\n    """Doubles."""\n    generative = True\n    def run(self, x):\n        return helper(x)\n')
    assert versions.code_hash(base) == versions.code_hash(flagged)


def test_drift_names_the_node_changed_without_a_bump():
    table = {"mask.feather": {"version": "1.0.0", "code": "aaaa"}, "grade": {"version": "1.0.0", "code": "bbbb"}}
    now = {"mask.feather": {"version": "1.0.0", "code": "cccc"}, "grade": {"version": "1.1.0", "code": "dddd"}}
    errors, stale = versions.drift(table, now)
    assert len(errors) == 1 and errors[0].startswith("node 'mask.feather' changed its code but kept version 1.0.0")
    assert stale == ["grade: 1.0.0 -> 1.1.0"]


def test_a_base_class_in_another_module_counts_with_what_it_uses_there():
    """image.load and mask.load share PictureFile from the node API: a change to it (or to a helper
    of its module) must change both hashes."""

    def probe(base_src: str, package: str = "editgraph.") -> type:
        tag = abs(hash((base_src, package)))
        _module(f"{package}_versions_base_{tag}", "LIMIT = 8\n\ndef check(p):\n    return p < LIMIT\n\n" + base_src)
        return _module(
            f"_versions_sub_{tag}",
            f"from {package}_versions_base_{tag} import Base\n\nclass Probe(Base):\n    def run(self, x):\n        return x\n",
        ).Probe

    base = probe("class Base:\n    def ok(self, p):\n        return check(p)\n")
    assert versions.code_hash(base) == versions.code_hash(probe("class Base:\n    def ok(self, p):\n        # why\n        return check(p)\n"))
    assert versions.code_hash(base) != versions.code_hash(probe("class Base:\n    def ok(self, p):\n        return not check(p)\n"))
    other_limit = probe("class Base:\n    def ok(self, p):\n        return check(p)\n\nLIMIT = 9\n")
    assert versions.code_hash(base) != versions.code_hash(other_limit)
    # A base from outside editgraph (the standard library's, another package's) is no code of
    # ours: following it would tie node hashes to that package's version.
    outside = probe("class Base:\n    def ok(self, p):\n        return check(p)\n", package="")
    assert versions.code_hash(outside) == versions.code_hash(probe("class Base:\n    def ok(self, p):\n        return not check(p)\n", package=""))
