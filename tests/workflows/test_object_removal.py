"""The README's main job, as a user runs it: `editgraph run object-removal` on the bundled photo.

Pixels outside the grown mask are the input's; every filled pixel is within 0.05 (OkLab) of some
colour in the 16 px ring around the hole (tests/nodes/test_fill.py says why 0.05); two runs write
the same bytes; the README's "after" picture is what the command writes today."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from editgraph.cli.main import main
from editgraph.ops.imaging import read_image
from editgraph.ops.fill import hole_of

from tests.conftest import ASSETS
from tests.nodes.test_fill import MAX_OKLAB, colour_distance

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_object_removal_command_keeps_outside_fills_plausibly_and_repeats_bytes(tmp_path):
    assert main(["run", "object-removal", "--out", str(tmp_path / "a"), "-q", "--cache-dir", str(tmp_path / "c1")]) == 0
    assert main(["run", "object-removal", "--out", str(tmp_path / "b"), "-q", "--cache-dir", str(tmp_path / "c2")]) == 0
    a, b = (tmp_path / d / "object-removal.png" for d in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()

    photo = read_image(ASSETS / "coffee.png").image
    out = read_image(a).image
    hole = hole_of(read_image(ASSETS / "coffee-spoon-mask.png").image[:, :1], 4)  # the workflow's grow
    keep = (hole == 0).expand_as(photo)
    assert torch.equal(out[keep], photo[keep])
    assert (out != photo)[~keep].float().mean() > 0.9
    assert colour_distance(out, hole).max() <= MAX_OKLAB

    # the README shows this picture as what the command writes
    shown = np.asarray(read_image(REPO / "docs" / "images" / "object-removal.png").image)
    assert np.array_equal(shown, np.asarray(out)), "docs/images/object-removal.png is stale: rerun the README command"


def test_the_refine_variant_validates_without_a_model_and_asks_for_one(capsys):
    assert main(["validate", "object-removal-refine"]) == 0
    assert "params to set when running: model" in capsys.readouterr().out
    assert main(["run", "object-removal-refine", "-q"]) == 3  # no model given: nothing runs
    assert "required string param has no value; set it with --set model=" in capsys.readouterr().err
