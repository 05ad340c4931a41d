"""A node whose code changes without a version bump fails here, by name (see editgraph/nodes/versions.py)."""

from __future__ import annotations

import sys
import types

from editgraph.nodes import versions


def test_every_builtin_node_matches_the_checked_in_table():
    errors, stale = versions.drift(versions.read_table(), versions.current())
    assert errors == []
    assert stale == [], "run `python -m editgraph.nodes.versions --update` and commit editgraph/nodes/versions.json"


def _node_module(body: str) -> type:
    """A throwaway module holding one class, as the hasher reads modules from source."""
    name = f"_versions_probe_{abs(hash(body))}"
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    src = "K = 2\n\ndef helper(x):\n    return x * K\n\n" + body
    import linecache

    linecache.cache[module.__file__] = (len(src), None, src.splitlines(True), module.__file__)
    sys.modules[name] = module
    exec(compile(src, module.__file__, "exec"), module.__dict__)
    return module.Probe


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
