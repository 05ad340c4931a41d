"""The byte-level container helpers refuse what is not their container (with a sentence saying
what is wrong) instead of splicing metadata into the wrong place; XMP merging keeps the source's
properties, replaces its DigitalSourceType wherever it is written, and adds a CreatorTool only
when the source has none."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from editgraph.sharing import metadata

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
IPTC = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
XMP = "http://ns.adobe.com/xap/1.0/"


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format=fmt)
    return buf.getvalue()


def test_each_splicer_refuses_bytes_that_are_not_its_container():
    png, jpeg = _encoded("PNG"), _encoded("JPEG")
    with pytest.raises(ValueError, match="not a PNG"):
        metadata.png_insert(jpeg, after_ihdr=[], before_iend=[])
    with pytest.raises(ValueError, match="not a complete PNG"):
        metadata.png_insert(png[:40], after_ihdr=[], before_iend=[])
    with pytest.raises(ValueError, match="not a JPEG"):
        metadata.jpeg_insert(png, [])
    with pytest.raises(ValueError, match="JPEG segment payload is 65534 bytes; at most 65533 fit"):
        metadata.jpeg_segment(0xE1, b"x" * 65534)
    with pytest.raises(ValueError, match="not a WebP file"):
        metadata.webp_with_metadata(b"", exif=None, icc=None, xmp=b"")
    with pytest.raises(ValueError, match="WebP starts with an unknown chunk b'ABCD'"):
        metadata.webp_with_metadata(b"RIFF\x0c\x00\x00\x00WEBPABCD\x00\x00\x00\x00", exif=None, icc=None, xmp=b"")


def test_a_block_too_big_for_one_segment_is_split_and_read_back_whole():
    block = bytes(range(256)) * 600  # 153,600 bytes: three segments
    segments = metadata.jpeg_chunked(0xEF, b"EDITGRAPH\x00", block)
    assert len(segments) == 3
    jpeg = metadata.jpeg_insert(_encoded("JPEG"), segments)
    assert metadata.jpeg_read_chunked(jpeg, 0xEF, b"EDITGRAPH\x00") == block
    assert Image.open(io.BytesIO(jpeg)).size == (8, 8)  # still a JPEG every reader opens


@pytest.mark.parametrize(
    "packet, says",
    [
        (b"\xff\xfe<x:xmpmeta/>", "XMP packet is not UTF-8"),
        (b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF", "XMP packet is not well-formed XML"),
        (b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><other/></x:xmpmeta>", "XMP packet has no rdf:RDF element"),
    ],
)
def test_a_source_xmp_that_is_not_xmp_is_refused(packet, says):
    with pytest.raises(ValueError, match=says):
        metadata.labelled_xmp(packet, "editgraph 1")


def test_the_label_replaces_a_source_type_written_as_an_element_and_keeps_the_creator_tool():
    import xml.etree.ElementTree as ET

    source = (
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF}">'
        f'<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="{IPTC}" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture</Iptc4xmpExt:DigitalSourceType>"
        "<dc:format>image/jpeg</dc:format></rdf:Description>"
        f'<rdf:Description rdf:about="" xmlns:xmp="{XMP}" xmp:CreatorTool="Camera 2.0"/>'
        "</rdf:RDF></x:xmpmeta>"
    ).encode()
    out = metadata.labelled_xmp(source, "editgraph 1", "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia")
    root = ET.fromstring(out.decode().split("?>", 1)[1].rsplit("<?xpacket", 1)[0])
    first, second = root.iter(f"{{{RDF}}}Description")
    assert first.find(f"{{{IPTC}}}DigitalSourceType") is None  # the capture claim is gone ...
    assert first.get(f"{{{IPTC}}}DigitalSourceType").endswith("/trainedAlgorithmicMedia")  # ... replaced by the label
    assert first.find("{http://purl.org/dc/elements/1.1/}format").text == "image/jpeg"  # other properties kept
    assert second.get(f"{{{XMP}}}CreatorTool") == "Camera 2.0" and first.get(f"{{{XMP}}}CreatorTool") is None

    bare = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF}"><rdf:Description rdf:about=""/></rdf:RDF></x:xmpmeta>'
    graded = metadata.labelled_xmp(bare.encode(), "editgraph 1", None)  # no generative node: no label
    assert b"CreatorTool=\"editgraph 1\"" in graded and b"DigitalSourceType" not in graded
