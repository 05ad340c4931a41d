"""Metadata inside image files, edited without re-encoding pixels: PNG chunks, JPEG segments, WebP
RIFF chunks. provenance.py decides what goes in; this module only knows the containers.

What it reads from an input photo (`read_carried`): the EXIF block (orientation reset to 1, since
image.load already turned the pixels upright), the ICC profile, the XMP packet (captions, rights,
keywords: kept, with the AI label merged in), and a C2PA manifest store (PNG `caBX` chunk, JPEG
APP11 JUMBF segments, WebP `C2PA` chunk) as raw bytes.

What it writes: the same EXIF and ICC (PNG `eXIf`/`iCCP`; JPEG APP1/APP2), XMP (PNG iTXt
"XML:com.adobe.xmp"; JPEG APP1 "http://ns.adobe.com/xap/1.0/"), and private blocks for the
editgraph provenance and a carried C2PA manifest. A carried manifest is never written back as the
output's own manifest (it signs the source's pixels, and an edit breaks its hash binding): it goes
in a private chunk (`egMi` in PNG, APP15 "editgraph-c2pa" in JPEG, `EGMI` in WebP) that C2PA
validators ignore, and provenance records it as an ingredient.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from editgraph.filehash import StatMemo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
C2PA_PNG_CHUNK = b"caBX"
# Private ancillary chunk (lowercase 1st/2nd letter: ancillary, private; 4th: safe to copy).
INGREDIENT_PNG_CHUNK = b"egMi"
XMP_KEYWORD = b"XML:com.adobe.xmp"
APP1, APP2, APP11, APP15 = 0xE1, 0xE2, 0xEB, 0xEF
XMP_JPEG_ID = b"http://ns.adobe.com/xap/1.0/\x00"
ICC_JPEG_ID = b"ICC_PROFILE\x00"
JPEG_SEGMENT_MAX = 65533  # payload bytes in one segment (the 2-byte length counts itself)

AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"


def container(data: bytes) -> str | None:
    """"png", "jpeg" or "webp" from a file's first bytes (the containers editgraph reads and
    writes metadata in), else None. The one place that tells them apart."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


@dataclass(frozen=True)
class Slot:
    """Where one payload lives in each container.
    png: a chunk type, or (itxt=True) an iTXt keyword; jpeg: (marker, identifier, chunked: split
    over numbered segments) or a reader of its own; webp: a RIFF chunk type; deflated: the JPEG and
    WebP payloads are zlib-compressed (a PNG iTXt says so itself)."""

    png: bytes
    jpeg: tuple[int, bytes, bool] | Callable[[bytes], bytes | None]
    webp: bytes
    itxt: bool = False
    deflated: bool = False


def read_slot(data: bytes, slot: Slot) -> bytes | None:
    """The payload `slot` names in a PNG, JPEG or WebP file, or None (absent, or another format)."""
    kind = container(data)
    if kind == "png":
        if slot.itxt:
            return png_read_itxt(data, slot.png)
        return next((body for ctype, body in png_chunks(data) if ctype == slot.png), None)
    if kind == "jpeg":
        if callable(slot.jpeg):
            raw = slot.jpeg(data)
        else:
            marker, ident, chunked = slot.jpeg
            if chunked:
                raw = jpeg_read_chunked(data, marker, ident)
            else:
                raw = next((p[len(ident) :] for m, p in jpeg_segments(data) if m == marker and p.startswith(ident)), None)
    elif kind == "webp":
        raw = next((body for ctype, body in riff_chunks(data) if ctype == slot.webp), None)
    else:
        return None
    return zlib.decompress(raw) if raw is not None and slot.deflated else raw


@dataclass(frozen=True)
class Carried:
    """Metadata from an input photo that an output made from it keeps."""

    source_node: str
    path: str
    exif: bytes | None = None  # bare TIFF bytes ("MM\0*..." / "II*\0..."), orientation reset to 1
    icc_profile: bytes | None = None
    c2pa: bytes | None = None  # the source's raw JUMBF manifest store
    xmp: bytes | None = None  # the source's XMP packet, known to parse (see labelled_xmp)
    xmp_dropped: str | None = None  # why an XMP packet the source had could not be kept


# --- reading an input photo ---------------------------------------------------------------------


def read_carried(source_node: str, path: str | Path) -> Carried:
    """EXIF, ICC and C2PA of an image file; fields the file lacks are None. Unreadable -> all None.
    Remembered by (path, size, mtime): a 280-row batch over one hero photo parses it once."""
    import dataclasses

    try:
        found = _carried_memo(path)
    except OSError:
        return Carried(source_node, str(path))
    return dataclasses.replace(found, source_node=source_node)


_carried_memo: StatMemo[Carried] = StatMemo(lambda path: _read_carried("", path))


def _read_carried(source_node: str, path: str | Path) -> Carried:
    from PIL import Image as PILImage

    try:
        data = Path(path).read_bytes()
        with PILImage.open(io.BytesIO(data)) as pil:
            if "exif" not in pil.info and pil.format == "PNG":
                pil.load()  # an eXIf chunk after the pixel data is only seen once they are read
            icc = pil.info.get("icc_profile") or None
            raw = pil.info.get("exif") or None
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError):
        return Carried(source_node, str(path))
    exif = upright_exif(_bare_tiff(raw)) if raw else None
    xmp, dropped = read_xmp(data), None
    if xmp is not None:
        try:
            labelled_xmp(xmp, "check")
        except ValueError as exc:
            xmp, dropped = None, str(exc)
    return Carried(source_node, str(path), exif, icc, c2pa_manifest(data), xmp, dropped)


def _bare_tiff(exif: bytes) -> bytes:
    return exif[6:] if exif.startswith(b"Exif\x00\x00") else exif


def upright_exif(tiff: bytes) -> bytes:
    """The EXIF block with IFD0's Orientation set to 1, every other byte unchanged (re-serializing
    would move maker notes that use absolute offsets). A block that does not parse is kept as is."""
    if len(tiff) < 8 or tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return tiff
    end = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(end + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return tiff
    (count,) = struct.unpack_from(end + "H", tiff, ifd)
    out = bytearray(tiff)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(tiff):
            break
        tag, kind, n = struct.unpack_from(end + "HHI", tiff, entry)
        if tag == 0x0112 and kind == 3 and n == 1:  # Orientation, SHORT, one value (in the entry itself)
            struct.pack_into(end + "H", out, entry + 8, 1)
    return bytes(out)


def c2pa_manifest(data: bytes) -> bytes | None:
    """The C2PA manifest store (JUMBF bytes) embedded in a PNG, JPEG or WebP file, or None."""
    return read_slot(data, C2PA)


def _jpeg_jumbf(data: bytes) -> bytes | None:
    """Reassemble APP11 JUMBF segments (ISO 19566-5): each carries CI 'JP', a 2-byte box instance,
    a 4-byte sequence number, then the box; continuation segments repeat the box header (LBox,
    TBox and XLBox if used), which is dropped when joining."""
    boxes: dict[int, list[tuple[int, bytes]]] = {}
    for marker, payload in jpeg_segments(data):
        if marker != APP11 or not payload.startswith(b"JP") or len(payload) < 16:
            continue
        instance, seq = struct.unpack(">HI", payload[2:8])
        boxes.setdefault(instance, []).append((seq, payload[8:]))
    for instance in sorted(boxes):
        parts = sorted(boxes[instance])
        first = parts[0][1]
        if first[4:8] != b"jumb":
            continue
        header = 16 if struct.unpack(">I", first[:4])[0] == 1 else 8
        return first + b"".join(p[header:] for _, p in parts[1:])
    return None


# --- PNG ----------------------------------------------------------------------------------------


def png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        yield ctype, data[pos + 8 : pos + 8 + length]
        if ctype == b"IEND":
            return
        pos += 12 + length


def png_chunk_types(data: bytes) -> set[bytes]:
    """The chunk types present, reading only chunk headers (no body copies: outputs are megabytes)."""
    types, pos = set(), len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        ctype = data[pos + 4 : pos + 8]
        types.add(ctype)
        if ctype == b"IEND":
            break
        pos += 12 + length
    return types


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png_itxt(keyword: bytes, text: bytes, *, compress: bool) -> bytes:
    # keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
    payload = zlib.compress(text, 9) if compress else text
    return png_chunk(b"iTXt", keyword + b"\x00" + (b"\x01" if compress else b"\x00") + b"\x00" + b"\x00" + b"\x00" + payload)


def png_read_itxt(data: bytes, keyword: bytes) -> bytes | None:
    for ctype, body in png_chunks(data):
        if ctype == b"iTXt" and body.startswith(keyword + b"\x00"):
            rest = body[len(keyword) + 1 :]
            compressed = rest[0] == 1
            rest = rest[2:]
            rest = rest[rest.index(b"\x00") + 1 :]  # language tag
            rest = rest[rest.index(b"\x00") + 1 :]  # translated keyword
            return zlib.decompress(rest) if compressed else rest
    return None


def png_insert(data: bytes, *, after_ihdr: list[bytes], before_iend: list[bytes]) -> bytes:
    """Splice whole chunks in. iCCP must precede PLTE/IDAT and eXIf is read before IDAT by most
    readers, so those go right after IHDR; text chunks go before IEND."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG (no IHDR chunk after the signature)")
    ihdr_end = len(PNG_SIGNATURE) + 12 + struct.unpack(">I", data[8:12])[0]
    # IEND is the last 12 bytes of any well-formed PNG; searching backwards for it is slow on megabytes.
    iend = len(data) - 12 if data[-8:-4] == b"IEND" else data.rfind(b"IEND") - 4
    if iend < ihdr_end:
        raise ValueError("not a complete PNG (no IEND chunk)")
    view = memoryview(data)
    return b"".join([view[:ihdr_end], *after_ihdr, view[ihdr_end:iend], *before_iend, view[iend:]])


# --- JPEG ---------------------------------------------------------------------------------------


def jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, payload) for each header segment up to the start of scan."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01 or marker == 0xFF:
            pos += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        yield marker, data[pos + 4 : pos + 2 + length]
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return
        pos += 2 + length


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    if len(payload) > JPEG_SEGMENT_MAX:
        raise ValueError(f"JPEG segment payload is {len(payload)} bytes; at most {JPEG_SEGMENT_MAX} fit")
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_chunked(marker: int, ident: bytes, data: bytes) -> list[bytes]:
    """Split a block over segments: ident, 2-byte index, 2-byte count, then a slice (ICC's layout
    uses 1-byte index/count: see jpeg_icc)."""
    room = JPEG_SEGMENT_MAX - len(ident) - 4
    parts = [data[i : i + room] for i in range(0, len(data), room)] or [b""]
    return [jpeg_segment(marker, ident + struct.pack(">HH", i + 1, len(parts)) + p) for i, p in enumerate(parts)]


def jpeg_read_chunked(data: bytes, marker: int, ident: bytes) -> bytes | None:
    parts = [(struct.unpack(">H", p[len(ident) : len(ident) + 2])[0], p[len(ident) + 4 :]) for m, p in jpeg_segments(data) if m == marker and p.startswith(ident)]
    return b"".join(p for _, p in sorted(parts)) if parts else None


def jpeg_icc(profile: bytes) -> list[bytes]:
    room = JPEG_SEGMENT_MAX - len(ICC_JPEG_ID) - 2
    parts = [profile[i : i + room] for i in range(0, len(profile), room)]
    if len(parts) > 255:
        raise ValueError(f"ICC profile of {len(profile)} bytes does not fit in 255 JPEG segments")
    return [jpeg_segment(APP2, ICC_JPEG_ID + bytes((i + 1, len(parts))) + p) for i, p in enumerate(parts)]


def jpeg_insert(data: bytes, segments: list[bytes]) -> bytes:
    """Segments after SOI and a leading JFIF APP0 (which must stay first)."""
    if not data.startswith(JPEG_SOI):
        raise ValueError("not a JPEG (no SOI marker)")
    pos = 2
    if data[2:4] == b"\xff\xe0":
        pos = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:pos] + b"".join(segments) + data[pos:]


# --- WebP ---------------------------------------------------------------------------------------


def riff_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = 12
    while pos + 8 <= len(data):
        ctype = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        yield ctype, data[pos + 8 : pos + 8 + length]
        pos += 8 + length + (length & 1)


def riff_append(data: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    """Unknown chunks after the image data are skipped by WebP decoders (extended format)."""
    extra = b"".join(_riff_chunk(c, b) for c, b in chunks)
    body = data[8:] + extra
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _riff_chunk(ctype: bytes, body: bytes) -> bytes:
    return ctype + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


_VP8X_ICC, _VP8X_ALPHA, _VP8X_EXIF, _VP8X_XMP = 0x20, 0x10, 0x08, 0x04


def _vp8x_canvas(width: int, height: int) -> bytes:
    """VP8X's canvas field: width - 1 and height - 1, 24 bits each, little endian."""
    return (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")


def webp_with_metadata(data: bytes, *, exif: bytes | None, icc: bytes | None, xmp: bytes) -> bytes:
    """The WebP with EXIF (bare TIFF), ICC and XMP chunks spliced in, its image data untouched.

    Metadata needs the extended format: a simple file (one VP8 or VP8L chunk) gets a VP8X header
    whose canvas size and alpha flag are read from the bitstream header. Chunk order follows the
    container spec: VP8X, ICCP, image data, EXIF, XMP. A file's own ICC or EXIF is kept; its XMP
    is replaced by `xmp`, which already merges what the source photo had.
    """
    chunks = list(riff_chunks(data))
    if not chunks:
        raise ValueError("not a WebP file (no chunks)")
    first, body = chunks[0]
    if first == b"VP8X":
        flags, canvas, rest = body[0], body[4:10], chunks[1:]
    elif first == b"VP8L" and body[:1] == b"\x2f" and len(body) >= 5:
        bits = int.from_bytes(body[1:5], "little")
        w, h = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        flags, canvas, rest = _VP8X_ALPHA if (bits >> 28) & 1 else 0, _vp8x_canvas(w, h), chunks
    elif first == b"VP8 " and body[3:6] == b"\x9d\x01\x2a" and len(body) >= 10:
        w = int.from_bytes(body[6:8], "little") & 0x3FFF
        h = int.from_bytes(body[8:10], "little") & 0x3FFF
        flags, canvas, rest = 0, _vp8x_canvas(w, h), chunks
    else:
        raise ValueError(f"WebP starts with an unknown chunk {first!r}")
    own = {ctype: b for ctype, b in rest if ctype in (b"ICCP", b"EXIF")}
    icc, exif = own.get(b"ICCP", icc), own.get(b"EXIF", exif)
    image = [(c, b) for c, b in rest if c not in (b"ICCP", b"EXIF", b"XMP ")]
    flags |= _VP8X_XMP | (_VP8X_ICC if icc else 0) | (_VP8X_EXIF if exif else 0)
    out = [_riff_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + canvas)]
    if icc:
        out.append(_riff_chunk(b"ICCP", icc))
    out += [_riff_chunk(c, b) for c, b in image]
    if exif:
        out.append(_riff_chunk(b"EXIF", exif))
    out.append(_riff_chunk(b"XMP ", xmp))
    body = b"WEBP" + b"".join(out)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- XMP ----------------------------------------------------------------------------------------


_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
_XMP = "http://ns.adobe.com/xap/1.0/"
_XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_XPACKET_END = '\n<?xpacket end="w"?>'


def ai_label_xmp(tool: str, source_type: str | None = AI_SOURCE_TYPE) -> bytes:
    """XMP naming the tool and, when a trained model made the pixels, saying so (IPTC digital
    source type). source_type None: no source type is claimed (a grade is not generative)."""
    claim = f'    Iptc4xmpExt:DigitalSourceType="{source_type}"\n' if source_type else ""
    return (
        _XPACKET_BEGIN + '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:Iptc4xmpExt="{_IPTC_EXT}"\n'
        f'    xmlns:xmp="{_XMP}"\n'
        + claim
        + f'    xmp:CreatorTool="{tool}"/>\n'
        " </rdf:RDF>\n"
        "</x:xmpmeta>" + _XPACKET_END
    ).encode()


def labelled_xmp(source: bytes | None, tool: str, source_type: str | None = AI_SOURCE_TYPE) -> bytes:
    """The output's XMP: the source's packet with every property kept and the AI label set
    (DigitalSourceType replaced, since the pixels are no longer what it described; CreatorTool
    kept if present, as XMP defines it as the first tool). Without a source, the label alone.
    source_type None (no generative node made the pixels): the source's own DigitalSourceType,
    if any, is kept and none is added: a graded photograph is still a photograph.
    Raises ValueError for a packet that is not XMP, or declares a DOCTYPE (XMP never needs one,
    and entity tricks are how XML attacks a parser)."""
    import xml.etree.ElementTree as ET

    if source is None:
        return ai_label_xmp(tool, source_type)
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("XMP packet is not UTF-8") from None
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ValueError("XMP packet declares a DOCTYPE or entities")
    prefixes: dict[str, str] = {}
    try:
        parser = ET.iterparse(io.StringIO(text), events=("start-ns",))  # one parse: prefixes and tree
        for _, (prefix, uri) in parser:
            prefixes.setdefault(prefix, uri)
        root = parser.root
    except ET.ParseError as exc:
        raise ValueError(f"XMP packet is not well-formed XML ({exc})") from None
    rdf = root if root.tag == f"{{{_RDF}}}RDF" else root.find(f"{{{_RDF}}}RDF")
    if rdf is None:
        raise ValueError("XMP packet has no rdf:RDF element")
    descriptions = rdf.findall(f"{{{_RDF}}}Description")
    kind, creator = f"{{{_IPTC_EXT}}}DigitalSourceType", f"{{{_XMP}}}CreatorTool"
    has_creator = False
    for d in descriptions:  # a property may be an attribute or a child element, in any Description
        if source_type is not None:
            d.attrib.pop(kind, None)
            for child in d.findall(kind):
                d.remove(child)
        has_creator |= creator in d.attrib or d.find(creator) is not None
    target = descriptions[0] if descriptions else ET.SubElement(rdf, f"{{{_RDF}}}Description", {f"{{{_RDF}}}about": ""})
    if source_type is not None:
        target.set(kind, source_type)
    if not has_creator:
        target.set(creator, tool)
    for prefix, uri in {**prefixes, "Iptc4xmpExt": _IPTC_EXT, "xmp": _XMP, "rdf": _RDF, "x": "adobe:ns:meta/"}.items():
        try:
            ET.register_namespace(prefix, uri)  # keep the source's prefixes (process-wide, harmless)
        except ValueError:
            pass  # a reserved-looking prefix (ns0 ...): ElementTree picks its own
    return (_XPACKET_BEGIN + ET.tostring(root, encoding="unicode") + _XPACKET_END).encode()


def read_xmp(data: bytes) -> bytes | None:
    return read_slot(data, XMP)


# The payloads other tools write that editgraph reads (its own are in provenance.py).
XMP = Slot(XMP_KEYWORD, (APP1, XMP_JPEG_ID, False), b"XMP ", itxt=True)
C2PA = Slot(C2PA_PNG_CHUNK, _jpeg_jumbf, b"C2PA")
