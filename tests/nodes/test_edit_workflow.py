"""The non-diffusion nodes in a real workflow through bind + Executor, and the registry contract
for every node type this part adds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from editgraph.ops.colour import srgb_to_linear
from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog
from editgraph.executor.persist import ALWAYS
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.ops.imaging import read_image
from editgraph.nodes.registry import load_builtin_nodes

OWN_MODULES = ("editgraph.nodes.builtin.mask", "editgraph.nodes.builtin.canvas", "editgraph.nodes.builtin.grade", "editgraph.nodes.builtin.outpaint")

WORKFLOW = {
    "format": "editgraph/1",
    "name": "spotlight",
    "description": "Brighten an oval around the cup, blended in softly.",
    "params": {
        "image": {"type": "path", "description": "photo"},
        "exposure": {"type": "float", "default": 1.0, "description": "stops inside the oval"},
    },
    "nodes": {
        "photo": {"type": "image.load", "params": {"path": "$image"}},
        "oval": {"type": "mask.ellipse", "inputs": {"image": "photo"}, "params": {"rx": 0.2, "ry": 0.3}},
        "soft": {"type": "mask.feather", "inputs": {"mask": "oval"}, "params": {"radius": 12}},
        "graded": {"type": "grade", "inputs": {"image": "photo"}, "params": {"exposure": "$exposure"}},
        "result": {"type": "image.composite", "inputs": {"base": "photo", "overlay": "graded", "mask": "soft"}},
        "save": {"type": "image.save", "inputs": {"image": "result"}, "params": {"path": "spotlight.png"}},
    },
}


def run(tmp_path, photo_path, **overrides):
    log = EventLog()
    graph = bind(load_workflow(WORKFLOW), {"image": str(photo_path), **overrides}, base_dir=tmp_path)
    # Every output stored: these tests are about keys, and which cheap outputs a fresh executor
    # finds stored otherwise depends on the disk's measured write rate (executor/persist.py).
    result = Executor(Cache.default(tmp_path / "cache"), listeners=[log], persistence=ALWAYS).run(graph, out_dir=tmp_path / "out")
    return result, log


def test_spotlight_workflow_pixels_and_reruns_only_the_grade(tmp_path, photo_path):
    photo = read_image(photo_path).image
    result, log = run(tmp_path, photo_path)
    assert sorted(log.ran()) == sorted(["photo", "oval", "soft", "graded", "result", "save"])
    out = result.value("result")
    soft = result.value("soft")
    # 1. outside the feathered oval the photo is untouched, bit for bit
    keep = (soft == 0).expand_as(photo)
    assert keep.float().mean() > 0.5
    assert torch.equal(out[keep], photo[keep])
    # 2. at the fully-masked centre, +1 stop: linear light doubled where it does not clip
    full = (soft == 1).expand_as(photo) & (srgb_to_linear(photo) < 0.45)
    assert full.sum() > 1000
    assert torch.allclose(srgb_to_linear(out)[full], 2 * srgb_to_linear(photo)[full], rtol=1e-4, atol=1e-6)
    # 3. the file on disk holds the same pixels
    saved = np.asarray(PILImage.open(tmp_path / "out" / "spotlight.png").convert("RGB"))
    expected = (out[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(saved, expected)

    # change only the grade: load, ellipse and feather come from the cache
    result2, log2 = run(tmp_path, photo_path, exposure=-0.5)
    assert sorted(log2.ran()) == ["graded", "result", "save"]
    assert set(log2.cached()) == {"photo", "oval", "soft"}
    darker = result2.value("result")
    assert torch.equal(darker[keep], photo[keep])
    assert darker[full].mean() < photo[full].mean()

    # the same run again: nothing runs
    _, log3 = run(tmp_path, photo_path, exposure=-0.5)
    assert log3.ran() == []


def test_every_own_node_has_a_docstring_and_only_described_params():
    registry = load_builtin_nodes()
    own = {name: cls for name, cls in registry.items() if cls.__module__ in OWN_MODULES}
    assert set(own) == {
        "mask.load", "mask.from_alpha", "mask.rect", "mask.ellipse", "mask.threshold", "mask.from_color",
        "mask.feather", "mask.grow", "mask.invert", "mask.combine",
        "image.crop", "image.pad", "image.blend", "image.crop_to_mask", "image.paste_back",
        "grade", "grade.match", "outpaint.pad",
    }  # fmt: skip
    for name, cls in own.items():
        doc = (cls.__doc__ or "").strip()
        assert len(doc) > 40 and "TODO" not in doc, name
        for field_name, field in cls.Params.model_fields.items():
            assert field.description and len(field.description) > 5, f"{name}.{field_name} has no description"
        # defaults validate: a node can be placed with no params except required paths
        required = [f for f, info in cls.Params.model_fields.items() if info.is_required()]
        assert required in ([], ["path"]), name
        assert cls.outputs, name


@pytest.mark.parametrize("name", ["grade", "mask.feather", "outpaint.pad", "image.crop_to_mask"])
def test_misspelled_param_is_a_workflow_error(tmp_path, name):
    from editgraph.errors import WorkflowInvalid

    doc = {"format": "editgraph/1", "nodes": {"n": {"type": name, "params": {"radiuss": 3}}}}
    with pytest.raises(WorkflowInvalid, match=r"nodes\.n\.params\.radiuss"):
        bind(load_workflow(doc), base_dir=tmp_path)


def test_lut_file_is_keyed_by_its_contents(tmp_path, photo_path):
    from editgraph.ops.lut import identity_cube_text

    (tmp_path / "look.cube").write_text(identity_cube_text(5))
    doc = {
        "format": "editgraph/1",
        "params": {"image": {"type": "path", "description": "photo"}},
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": "$image"}},
            "look": {"type": "grade", "inputs": {"image": "photo"}, "params": {"lut": "look.cube"}},
        },
    }

    def run_once():
        log = EventLog()
        graph = bind(load_workflow(doc), {"image": str(photo_path)}, base_dir=tmp_path)  # lut relative to base_dir
        result = Executor(Cache.default(tmp_path / "cache"), listeners=[log], persistence=ALWAYS).run(graph)  # see run()
        return result.value("look"), log

    first, log = run_once()
    assert sorted(log.ran()) == ["look", "photo"]
    assert (first - read_image(photo_path).image).abs().max() <= 1 / 255
    _, log = run_once()
    assert log.ran() == []
    # same path, new contents: an inverting LUT. Only the grade re-runs, and its pixels follow.
    rows = [f"{1 - r} {1 - g} {1 - b}" for b in (0, 1) for g in (0, 1) for r in (0, 1)]
    (tmp_path / "look.cube").write_text("LUT_3D_SIZE 2\n" + "\n".join(rows) + "\n")
    inverted, log = run_once()
    assert log.ran() == ["look"]
    assert torch.allclose(inverted, 1 - read_image(photo_path).image, atol=1e-5)
