"""No re-binding of a known document (issue 16): the same document, params and input-file tokens
give back the very graph bound before in this process, through the public API's own path; a
changed param, document or input file binds anew."""

from __future__ import annotations

import os
import shutil

import pytest

import editgraph
from editgraph.graph import memo


@pytest.fixture(autouse=True)
def _fresh_memo():
    memo.forget()
    yield
    memo.forget()


def _doc(photo: str, exposure: float = 0.2) -> dict:
    return {
        "format": "editgraph/1",
        "name": "memo",
        "params": {"strength": {"type": "float", "default": 1.0}},
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": photo}},
            "graded": {"type": "grade", "inputs": {"image": "photo.image"}, "params": {"exposure": exposure, "saturation": "$strength"}},
        },
    }


def _bound(result: editgraph.Result):
    return result._result.graph  # the BoundGraph the executor ran


def test_an_identical_rerun_reuses_the_bound_graph_and_changes_miss(tmp_path, photo_path):
    photo = tmp_path / "photo.png"
    shutil.copyfile(photo_path, photo)
    doc = _doc(str(photo))

    first = editgraph.run(doc, {"strength": 1.1}, cache=tmp_path / "cache")
    second = editgraph.run(doc, {"strength": 1.1}, cache=tmp_path / "cache")
    # 1. the same document, params and file: the run got the graph bound the first time
    assert _bound(second) is _bound(first)
    assert second.cached == ["photo", "graded"] and first.ran == ["photo", "graded"]
    # a copy of the document (equal, not the same object) is the same document
    assert editgraph.open_workflow(dict(doc)).bind({"strength": 1.1}) is _bound(first)

    # 2. a changed param value misses; its own re-run then hits
    other = editgraph.run(doc, {"strength": 1.2}, cache=tmp_path / "cache")
    assert _bound(other) is not _bound(first)
    assert _bound(other).nodes["graded"].params.saturation == 1.2 and other.ran == ["graded"]
    assert _bound(editgraph.run(doc, {"strength": 1.2}, cache=tmp_path / "cache")) is _bound(other)

    # 3. a changed document misses (one node param)
    changed = editgraph.run(_doc(str(photo), exposure=0.3), {"strength": 1.1}, cache=tmp_path / "cache")
    assert _bound(changed) is not _bound(first) and _bound(changed).nodes["graded"].params.exposure == 0.3

    # 4. the input file changed on disk (new bytes, new size and mtime): bound anew, and the new
    # picture is what runs
    from PIL import Image

    Image.new("RGB", (32, 16), (200, 10, 10)).save(photo)
    st = os.stat(photo)
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = editgraph.run(doc, {"strength": 1.1}, cache=tmp_path / "cache")
    assert _bound(after) is not _bound(first)
    assert after.ran == ["photo", "graded"]
    assert tuple(after.value("graded").shape) == (1, 3, 16, 32)


def test_a_graph_that_drew_a_random_seed_is_never_reused():
    wf = editgraph.open_workflow("product-variant")  # its denoise takes the workflow's seed
    assert wf.bind({"seed": 5}) is wf.bind({"seed": 5})
    drawn = [wf.bind({"seed": "random"}) for _ in range(2)]
    assert drawn[0] is not drawn[1] and all(g.seeds for g in drawn)
