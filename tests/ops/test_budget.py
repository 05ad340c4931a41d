"""Pixel and file budgets (issue 10, defect 4): a picture too large for the budget, whether its
size comes from a file's header or from a node's params, and a LUT too large to parse, are each
refused with an error naming the limit, before anything is allocated and with nothing cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image as PILImage

from editgraph.graph.document import load_workflow
from editgraph.graph.sources import check_sources
from editgraph.graph.validate import bind
from editgraph.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PHOTO = REPO / "editgraph" / "workflows" / "assets" / "coffee.png"


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    """13000 x 13000 px in a ~164 KB file: a header that promises 11 GB of float pixels."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    PILImage.new("1", (13000, 13000)).save(path, optimize=True)
    return path


def _cases(tmp: Path, huge_png: Path) -> dict[str, dict]:
    lut = tmp / "huge.cube"
    with open(lut, "wb") as f:  # a 256^3 cube's length (~400 MB), sparse: refused by its length alone
        f.write(b"LUT_3D_SIZE 256\n")
        f.truncate(256**3 * 24)
    save = {"type": "image.save", "inputs": {"image": "x"}, "params": {"path": "out.png"}}
    load = {"type": "image.load", "params": {"path": str(PHOTO)}}
    return {
        "png": {"nodes": {"x": {"type": "image.load", "params": {"path": str(huge_png)}}, "save": save}},
        "rect": {"nodes": {"x": {"type": "mask.rect", "params": {"width": 65536, "height": 65536, "rect_width": 65536, "rect_height": 65536}}}},
        "pad": {"nodes": {"photo": load, "x": {"type": "outpaint.pad", "inputs": {"image": "photo"},
                          "params": {"left": 16384, "right": 16384, "top": 16384, "bottom": 16384}}, "save": save}},
        "lut": {"nodes": {"photo": load, "x": {"type": "grade", "inputs": {"image": "photo"}, "params": {"lut": str(lut)}}, "save": save}},
    }


LIMIT_WORDS = {"png": "EDITGRAPH_MAX_PIXELS", "rect": "EDITGRAPH_MAX_PIXELS", "pad": "EDITGRAPH_MAX_PIXELS", "lut": "LUT_3D_SIZE 65"}


@pytest.mark.slow
def test_oversized_requests_end_with_the_limit_under_an_8_gb_address_space(tmp_path, huge_png):
    """The must-show: under `ulimit -v` 8 GB each request ends with an error naming the limit, and
    the cache holds nothing afterwards. Seconds are printed (for the report), never asserted."""
    cases = _cases(tmp_path, huge_png)
    for name, doc in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"format": "editgraph/1", "name": name, **doc}))
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, resource, sys, time
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
        sys.path.insert(0, {str(REPO)!r})
        from editgraph.cli.main import main
        import torch, editgraph.api, editgraph.executor.run  # imports paid before the clocks start
        from editgraph.nodes.registry import load_builtin_nodes
        load_builtin_nodes()
        out = {{}}
        for name in {sorted(cases)!r}:
            err = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stderr(err):
                code = main(["run", {str(tmp_path)!r} + f"/{{name}}.json", "--out", {str(tmp_path / "out")!r}, "-q"])
            out[name] = [code, err.getvalue(), time.perf_counter() - t0]
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "EDITGRAPH_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (code, err, seconds) in results.items():
        print(f"{name}: exit {code} in {seconds:.2f} s: {err.strip()}")
        assert code in (3, 4), (name, err)  # invalid workflow (checked before any node) or the node's error
        assert LIMIT_WORDS[name] in err and "nodes.x" in err, (name, err)
    blobs = [p for p in (tmp_path / "cache" / "blobs").rglob("*") if p.is_file()] if (tmp_path / "cache").exists() else []
    assert blobs == []
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _issues(doc: dict, settings: Settings) -> list[str]:
    graph = bind(load_workflow({"format": "editgraph/1", "name": "t", **doc}))
    return [f"{i.path}: {i.message}" for i in check_sources(graph, settings=settings)]


def test_validate_refuses_sizes_params_ask_for_and_names_the_limit(tmp_path, huge_png):
    cases = _cases(tmp_path, huge_png)
    settings = Settings.from_env()
    rect, pad, png, lut = (_issues(cases[k], settings) for k in ("rect", "pad", "png", "lut"))
    assert rect == [
        "nodes.x.params: its output would be at least 65536x65536 = 4,294,967,296 px, over the pixel budget of "
        "67,108,864 px per picture (EDITGRAPH_MAX_PIXELS)"
    ]
    assert pad and pad[0].startswith("nodes.x.params: its output would be at least 32769x32769 = 1,073,807,361 px, over")
    assert png == ["nodes.x.params.path: 13000x13000 = 169,000,000 px is over the pixel budget of 67,108,864 px per picture (EDITGRAPH_MAX_PIXELS)"]
    assert lut and lut[0].startswith("nodes.x.params.lut: input file") and "over the limit of 16.0 MiB" in lut[0]
    # the budget is a setting: raised, the same requests pass validation
    roomy = settings.with_options(max_pixels=1 << 40)
    assert _issues(cases["rect"], roomy) == [] and _issues(cases["png"], roomy) == []


def test_sizes_from_inputs_are_checked_at_run_time_before_allocating(tmp_path):
    """outpaint.pad with an aspect: its canvas follows the photo, known only when it runs."""
    from editgraph.errors import WorkflowInvalid  # noqa: F401
    from editgraph.executor.cache import Cache
    from editgraph.executor.run import Executor
    from editgraph.errors import NodeFailed

    doc = {"format": "editgraph/1", "name": "t", "nodes": {
        "photo": {"type": "image.load", "params": {"path": str(PHOTO)}},
        "x": {"type": "outpaint.pad", "inputs": {"image": "photo"}, "params": {"aspect": "16:9"}},
    }}
    graph = bind(load_workflow(doc))
    tight = Settings.from_env().with_options(max_pixels=250_000)  # the photo is 600x400 = 240,000 px
    with pytest.raises(NodeFailed) as info:
        Executor(Cache(None, None), use_cache=False, settings=tight).run(graph)
    assert "outpaint.pad: 712x400 = 284,800 px is over the pixel budget of 250,000 px" in str(info.value)


def test_a_cube_over_the_size_cap_is_refused_at_its_header(tmp_path):
    from editgraph.errors import NodeError
    from editgraph.ops.lut import load_cube

    path = tmp_path / "big.cube"
    path.write_text("LUT_3D_SIZE 256\n0 0 0\n")
    with pytest.raises(NodeError, match=r"LUT_3D_SIZE must be one integer in 2\.\.65"):
        load_cube(path)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_special_files_are_named_for_what_they_are(tmp_path, kind):
    """/dev/zero or a FIFO given as an input is said to be one, not "not found" (defect 8)."""
    if kind == "fifo":
        path = tmp_path / "pipe.png"
        os.mkfifo(path)
        words = "is a FIFO (named pipe), not a regular file"
    else:
        path, words = Path("/dev/zero"), "is a character device, not a regular file"
    doc = {"nodes": {"x": {"type": "image.load", "params": {"path": str(path)}}}}
    assert _issues(doc, Settings.from_env()) == [f"nodes.x.params.path: input {path} {words}"]


def _pictures(tmp: Path) -> dict[str, Path]:
    """PNGs and JPEGs of several kinds and odd sizes, as Pillow writes them."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for mode, size in (("RGB", (37, 23)), ("RGBA", (1, 1)), ("L", (4097, 3)), ("P", (3, 4097)), ("I;16", (64, 48)), ("1", (300, 7))):
        path = out[f"png-{mode}"] = tmp / f"{mode.replace(';', '')}.png"
        PILImage.new(mode, size).save(path)
    photo = PILImage.fromarray(rng.integers(0, 255, (301, 203, 3), dtype=np.uint8))
    photo.save(out.setdefault("jpeg", tmp / "base.jpg"), quality=90)
    photo.save(out.setdefault("jpeg-progressive", tmp / "prog.jpg"), progressive=True)
    photo.convert("L").save(out.setdefault("jpeg-grey", tmp / "grey.jpg"))
    photo.convert("CMYK").save(out.setdefault("jpeg-cmyk", tmp / "cmyk.jpg"))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotated: the stored size is still what the header says
    # a 60 KB ICC profile (several APP2 segments' worth) and EXIF before the frame header
    photo.save(out.setdefault("jpeg-exif-icc", tmp / "exif.jpg"), exif=exif, icc_profile=bytes(rng.integers(0, 255, 60_000, dtype=np.uint8)))
    return out


def test_png_and_jpeg_sizes_are_read_from_their_headers_as_pillow_reads_them(tmp_path):
    from editgraph.ops.budget import common_header_size

    pictures = _pictures(tmp_path)
    for name, path in pictures.items():
        with PILImage.open(path) as pil:
            assert common_header_size(path) == pil.size, name


def test_other_formats_and_odd_headers_are_left_to_pillow(tmp_path):
    from editgraph.ops.budget import common_header_size, image_problem

    pictures = _pictures(tmp_path)
    small = Settings.from_env({"EDITGRAPH_MAX_PIXELS": "1000"})
    for fmt in ("gif", "webp", "tiff", "bmp"):
        path = tmp_path / f"pic.{fmt}"
        PILImage.new("RGB", (50, 40)).save(path)
        assert common_header_size(path) is None, fmt
        # Pillow reads its header: the budget still holds
        assert image_problem(path, small) == "50x40 = 2,000 px is over the pixel budget of 1,000 px per picture (EDITGRAPH_MAX_PIXELS)"
    png, jpeg = pictures["png-RGB"].read_bytes(), pictures["jpeg"].read_bytes()
    cut = {"short.png": png[:20], "no-frame.jpg": jpeg[:20], "not-a-marker.jpg": b"\xff\xd8\x00\x00" + jpeg[4:]}
    for name, data in cut.items():
        (tmp_path / name).write_bytes(data)
        assert common_header_size(tmp_path / name) is None, name
        assert image_problem(tmp_path / name, small) is None, name  # undecodable: the decoder's error says more
    # a JPEG's size counts against the budget like any other
    assert image_problem(pictures["jpeg"], small) == "203x301 = 61,103 px is over the pixel budget of 1,000 px per picture (EDITGRAPH_MAX_PIXELS)"
