from __future__ import annotations

import pytest

from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind

from . import testnodes  # noqa: F401  (registers test.* node types)


class Runner:
    """Runs workflow dicts against one cache directory; each call may use a fresh executor."""

    def __init__(self, cache_dir):
        self.cache_dir = cache_dir
        self.executor = None

    def __call__(self, doc, fresh: bool = False, **kw):
        if self.executor is None or fresh:
            if self.executor is not None:
                self.executor.cache.close()
            self.log = EventLog()
            self.executor = Executor(Cache.default(self.cache_dir), listeners=[self.log])
        self.log.clear()
        result = self.executor.run(bind(load_workflow(doc)), **kw)
        return result


@pytest.fixture
def runner(tmp_path):
    r = Runner(tmp_path / "cache")
    yield r
    if r.executor is not None:
        r.executor.cache.close()
