"""Metadata in an input photo (EXIF, ICC, XMP, C2PA) reaches the outputs made from it, in PNG, JPEG and WebP."""

from __future__ import annotations

import hashlib
import io
import json
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from editgraph.sharing import metadata as filemeta, provenance

from .conftest import pixels

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def photo_with_metadata(path, fmt: str, orientation: int = 6) -> None:
    """A 40x24 gradient whose EXIF says: camera TestCam, rotate 90° clockwise to view."""
    arr = np.zeros((24, 40, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, 40, dtype=np.uint8)[None]
    arr[..., 1] = 128
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x010F] = "TestCam"
    exif[0x0112] = orientation
    im.save(path, format=fmt, icc_profile=ICC, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


def jumbf(size: int) -> bytes:
    """A JUMBF superbox labelled 'c2pa' padded to `size` bytes (stands in for a signed manifest store)."""
    label = b"c2pa\x00"
    jumd = b"jumd" + bytes(16) + b"\x03" + label
    jumd = struct.pack(">I", len(jumd) + 4) + jumd
    pad = size - 8 - len(jumd) - 8
    free = struct.pack(">I", pad + 8) + b"free" + bytes(range(256)) * (pad // 256) + bytes(pad % 256)
    return struct.pack(">I", size) + b"jumb" + jumd + free


def with_jpeg_manifest(data: bytes, box: bytes, split: int) -> bytes:
    """APP11 segments as C2PA writes them: the box split in two, the second repeating its 8-byte header."""
    seg1 = b"JP" + struct.pack(">HI", 1, 1) + box[:split]
    seg2 = b"JP" + struct.pack(">HI", 1, 2) + box[:8] + box[split:]
    return filemeta.jpeg_insert(data, [filemeta.jpeg_segment(filemeta.APP11, seg1), filemeta.jpeg_segment(filemeta.APP11, seg2)])


def run_saves(tmp_path, cli, source, generative: bool = True) -> dict[str, bytes]:
    """Save the photo as PNG, JPEG and WebP; generative: through a denoiser's stand-in (adding no
    noise), so the outputs carry the AI label; else straight from the load (no label)."""
    made = "gen" if generative else "photo"
    doc = {
        "params": {"image": {"type": "path"}},
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": "$image"}},
            "gen": {"type": "sharetest.noise", "inputs": {"image": "photo"}, "params": {"amount": 0.0}},
            "png": {"type": "image.save", "inputs": {"image": made}, "params": {"path": "o.png"}},
            "jpg": {"type": "image.save", "inputs": {"image": made}, "params": {"path": "o.jpg"}},
            "webp": {"type": "image.save", "inputs": {"image": made}, "params": {"path": "o.webp"}},
        },
    }
    (tmp_path / "wf.json").write_text(json.dumps(doc))
    code, _, err = cli("run", tmp_path / "wf.json", "--set", f"image={source}", "--out", tmp_path / "out", "-q")
    assert code == 0, err
    return {ext: (tmp_path / "out" / f"o.{ext}").read_bytes() for ext in ("png", "jpg", "webp")}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_and_icc_reach_png_jpeg_and_webp_outputs(tmp_path, cli, fmt):
    src = tmp_path / f"in.{fmt.lower()}"
    photo_with_metadata(src, fmt)
    outs = run_saves(tmp_path, cli, src)
    for ext, data in outs.items():
        with Image.open(io.BytesIO(data)) as im:
            assert im.info.get("icc_profile") == ICC, ext
            exif = im.getexif()
            assert exif[0x010F] == "TestCam", ext
            assert exif[0x0112] == 1, ext  # the pixels are already upright: viewers must not rotate again
            assert im.size == (24, 40), ext  # turned upright on load (EXIF orientation 6)
        info = provenance.read(data)
        assert info["carried"][ext] == {"from": "photo", "exif": True, "icc_profile": True, "xmp": False}, ext
        assert filemeta.AI_SOURCE_TYPE.encode() in filemeta.read_xmp(data), ext
    # Adding metadata never changes pixels: each output decodes exactly like the save node's own bytes.
    raw = saved_bytes(tmp_path, src)
    for ext, data in outs.items():
        np.testing.assert_array_equal(pixels(io.BytesIO(data)), pixels(io.BytesIO(raw[ext])), err_msg=ext)
        assert provenance.read(raw[ext]) is None
    # ... and the WebP's (lossy) image data is spliced through byte for byte, not re-encoded.
    image_chunks = lambda data: [b for c, b in filemeta.riff_chunks(data) if c in (b"VP8 ", b"VP8L", b"ALPH")]  # noqa: E731
    assert image_chunks(outs["webp"]) == image_chunks(raw["webp"]) != []


def saved_bytes(tmp_path, src) -> dict[str, bytes]:
    """What the save nodes produced, before the executor added any metadata."""
    from editgraph.executor.run import Executor
    from editgraph.graph.document import load_workflow
    from editgraph.graph.validate import bind

    graph = bind(load_workflow(tmp_path / "wf.json"), {"image": str(src)})
    result = Executor().run(graph)
    return {ext: result.value(ext).files[f"o.{ext}"] for ext in ("png", "jpg", "webp")}


def test_input_without_metadata_adds_none_but_still_labels(tmp_path, cli, photo_path):
    outs = run_saves(tmp_path, cli, photo_path)
    with Image.open(io.BytesIO(outs["png"])) as im:
        assert "icc_profile" not in im.info and len(im.getexif()) == 0
    assert provenance.read(outs["jpg"])["carried"]["jpg"] == {"from": "photo", "exif": False, "icc_profile": False, "xmp": False}
    assert filemeta.AI_SOURCE_TYPE.encode() in filemeta.read_xmp(outs["webp"])


PHOTOGRAPHER_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
    ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmp:CreatorTool="TestCam firmware 1.2"'
    ' Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture">'
    '<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">© Ada Photographer</rdf:li></rdf:Alt></dc:rights>'
    "</rdf:Description></rdf:RDF></x:xmpmeta>"
    '<?xpacket end="w"?>'
)


def with_xmp(path, packet: str) -> None:
    data = path.read_bytes()
    if data.startswith(filemeta.PNG_SIGNATURE):
        data = filemeta.png_insert(data, after_ihdr=[filemeta.png_itxt(filemeta.XMP_KEYWORD, packet.encode(), compress=False)], before_iend=[])
    else:
        data = filemeta.jpeg_insert(data, [filemeta.jpeg_segment(filemeta.APP1, filemeta.XMP_JPEG_ID + packet.encode())])
    path.write_bytes(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_the_inputs_xmp_is_kept_with_the_ai_label_merged_in(tmp_path, cli, fmt):
    import xml.etree.ElementTree as ET

    src = tmp_path / f"in.{fmt.lower()}"
    photo_with_metadata(src, fmt)
    with_xmp(src, PHOTOGRAPHER_XMP)
    for ext, data in run_saves(tmp_path, cli, src).items():
        xmp = filemeta.read_xmp(data).decode()
        root = ET.fromstring(xmp)
        (desc,) = root.iter("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description")
        rights = desc.find("{http://purl.org/dc/elements/1.1/}rights")
        assert rights is not None and "".join(rights.itertext()) == "© Ada Photographer", ext
        assert desc.get("{http://ns.adobe.com/xap/1.0/}CreatorTool") == "TestCam firmware 1.2", ext  # the first tool stays
        assert desc.get("{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType") == filemeta.AI_SOURCE_TYPE, ext
        assert xmp.count("DigitalSourceType") == 1 and "digitalCapture" not in xmp, ext  # no longer a plain capture
        assert provenance.read(data)["carried"][ext] == {"from": "photo", "exif": True, "icc_profile": True, "xmp": True}, ext


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_without_a_generative_node_the_inputs_source_type_stays_and_no_ai_label_is_added(tmp_path, cli, fmt):
    src = tmp_path / f"in.{fmt.lower()}"
    photo_with_metadata(src, fmt)
    with_xmp(src, PHOTOGRAPHER_XMP)
    for ext, data in run_saves(tmp_path, cli, src, generative=False).items():
        xmp = filemeta.read_xmp(data).decode()
        assert "digitalsourcetype/digitalCapture" in xmp and "TrainedAlgorithmicMedia" not in xmp, ext
        assert "© Ada Photographer" in xmp, ext
        assert provenance.read(data)["digital_source_type"] == {"png": None, "jpg": None, "webp": None}, ext


def test_an_unreadable_xmp_is_reported_not_silently_dropped(tmp_path, cli, photo_path):
    src = tmp_path / "odd.png"
    src.write_bytes(photo_path.read_bytes())
    with_xmp(src, '<!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&a;</x:xmpmeta>')
    outs = run_saves(tmp_path, cli, src)
    xmp = filemeta.read_xmp(outs["png"])
    assert filemeta.AI_SOURCE_TYPE.encode() in xmp and b"ENTITY" not in xmp  # the label alone
    carried = provenance.read(outs["png"])["carried"]["png"]
    assert carried["xmp"] is False and carried["xmp_dropped"] == "XMP packet declares a DOCTYPE or entities"
    code, text, _ = cli("show", tmp_path / "out" / "o.png")
    assert code == 0 and "not carried: the input's XMP (XMP packet declares a DOCTYPE or entities)" in text


def test_png_c2pa_manifest_becomes_an_ingredient_not_the_outputs_manifest(tmp_path, cli, photo_path, capsys):
    box = jumbf(3000)
    src = tmp_path / "signed.png"
    src.write_bytes(filemeta.png_insert(photo_path.read_bytes(), after_ihdr=[], before_iend=[filemeta.png_chunk(b"caBX", box)]))
    assert filemeta.c2pa_manifest(src.read_bytes()) == box
    outs = run_saves(tmp_path, cli, src)
    for ext, data in outs.items():
        (ing,) = provenance.read(data)["ingredients"]
        assert ing["c2pa_manifest"] == {"sha256": hashlib.sha256(box).hexdigest(), "bytes": 3000}, ext
        assert ing["node"] == "photo" and ing["relationship"] == "parentOf"
        assert provenance.carried_manifest(data) == box, ext
        assert filemeta.c2pa_manifest(data) is None, ext  # not presented as the output's own (it would not validate)
    code, text, _ = cli("show", tmp_path / "out" / "o.png")
    assert code == 0 and f"C2PA ingredient: {src}" in text and hashlib.sha256(box).hexdigest() in text


def test_jpeg_c2pa_manifest_split_over_app11_segments_is_reassembled_and_carried(tmp_path, cli):
    src = tmp_path / "signed.jpg"
    photo_with_metadata(src, "JPEG", orientation=1)
    box = jumbf(90_000)  # > one JPEG segment: exercises reassembly and the chunked private copy
    src.write_bytes(with_jpeg_manifest(src.read_bytes(), box, split=60_000))
    assert filemeta.c2pa_manifest(src.read_bytes()) == box
    outs = run_saves(tmp_path, cli, src)
    assert provenance.carried_manifest(outs["jpg"]) == box
    assert provenance.read(outs["jpg"])["ingredients"][0]["c2pa_manifest"]["bytes"] == 90_000
    with Image.open(io.BytesIO(outs["jpg"])) as im:
        assert im.size == (40, 24) and im.getexif()[0x010F] == "TestCam"


def test_large_provenance_spans_jpeg_segments(tmp_path):
    data = io.BytesIO()
    Image.new("RGB", (8, 8)).save(data, format="JPEG")
    info = provenance.Provenance({"workflow": {"note": "x" * 200_000}, "n": list(range(30_000))})
    out = provenance.embed("a.jpg", data.getvalue(), info)
    assert provenance.read(out) == dict(info)
    with Image.open(io.BytesIO(out)) as im:
        assert im.size == (8, 8)


def test_each_output_inherits_from_its_own_source(tmp_path, cli, photo_path):
    a = tmp_path / "a.jpg"
    photo_with_metadata(a, "JPEG", orientation=1)
    doc = {
        "nodes": {
            "first": {"type": "image.load", "params": {"path": str(a)}},
            "second": {"type": "image.load", "params": {"path": str(photo_path)}},
            "from_a": {"type": "image.save", "inputs": {"image": "first"}, "params": {"path": "a.png"}},
            "from_b": {"type": "image.save", "inputs": {"image": "second"}, "params": {"path": "b.png"}},
        }
    }
    (tmp_path / "wf.json").write_text(json.dumps(doc))
    assert cli("run", tmp_path / "wf.json", "--out", tmp_path / "o", "-q")[0] == 0
    with Image.open(tmp_path / "o" / "a.png") as im:
        assert im.info["icc_profile"] == ICC and im.getexif()[0x010F] == "TestCam"
    with Image.open(tmp_path / "o" / "b.png") as im:
        assert "icc_profile" not in im.info and len(im.getexif()) == 0
    assert provenance.read_file(tmp_path / "o" / "b.png")["carried"] == {
        "from_a": {"from": "first", "exif": True, "icc_profile": True, "xmp": False},
        "from_b": {"from": "second", "exif": False, "icc_profile": False, "xmp": False},
    }


@pytest.mark.parametrize("order", ["<", ">"])
def test_orientation_is_reset_in_place_leaving_every_other_exif_byte(order):
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    entries = struct.pack(order + "HHI4s", 0x010F, 2, 4, b"Cam\x00") + struct.pack(order + "HHIHH", 0x0112, 3, 1, 8, 0)
    tiff = magic + struct.pack(order + "I", 8) + struct.pack(order + "H", 2) + entries + struct.pack(order + "I", 0) + b"MAKERNOTE\x01\x02"
    out = filemeta.upright_exif(tiff)
    assert len(out) == len(tiff)
    changed = [i for i in range(len(tiff)) if out[i] != tiff[i]]
    assert changed == [8 + 2 + 12 + 8 + (0 if order == "<" else 1)]  # the low byte of the one value
    assert struct.unpack_from(order + "H", out, 8 + 2 + 12 + 8)[0] == 1
    assert filemeta.upright_exif(b"garbage") == b"garbage"


@pytest.mark.parametrize("kind", ["lossy", "lossless-alpha", "extended"])
def test_webp_splice_keeps_the_image_data_and_adds_readable_metadata(kind):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = np.arange(30, dtype=np.uint8)[None] * 8
    rgba[..., 3] = 255
    rgba[5:10, 5:10, 3] = 40  # some transparency
    im = Image.fromarray(rgba if kind == "lossless-alpha" else rgba[..., :3].copy())
    buf = io.BytesIO()
    extra = {"exif": Image.Exif().tobytes()} if kind == "extended" else {}
    im.save(buf, format="WEBP", lossless=kind == "lossless-alpha", quality=80, **extra)
    src = buf.getvalue()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    tiff = exif.tobytes().removeprefix(b"Exif\x00\x00")  # WebP's EXIF chunk holds bare TIFF
    xmp = filemeta.labelled_xmp(None, "test")
    out = filemeta.webp_with_metadata(src, exif=tiff, icc=ICC, xmp=xmp)
    image = lambda data: [b for c, b in filemeta.riff_chunks(data) if c in (b"VP8 ", b"VP8L", b"ALPH")]  # noqa: E731
    assert image(out) == image(src) != []
    assert next(iter(filemeta.riff_chunks(out)))[0] == b"VP8X"
    with Image.open(io.BytesIO(out)) as a, Image.open(io.BytesIO(src)) as b:
        assert a.size == (30, 20) and a.mode == b.mode
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.info.get("icc_profile") == ICC
        assert filemeta.read_xmp(out) == xmp
        if kind != "extended":  # an extended file keeps its own (here empty) EXIF
            assert a.getexif()[0x010F] == "TestCam"
