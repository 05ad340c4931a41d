"""Sharing benchmark: what provenance costs per saved file, and what one shared cache saves a batch.

    python bench/sharing.py           # prints a markdown table

Rows:
  1. provenance.embed on a 1024 px photo saved as PNG, JPEG and WebP (workflow JSON, XMP, EXIF +
     ICC carried): the per-file cost the executor adds at write time, and the file size before and
     after (metadata is spliced in; the image data is never re-encoded).
  2. A 20-row batch (load a 1536 px photo, resize to a width that varies per row, save) through one
     executor, against 20 separate runs each with a fresh executor and an empty cache (what 20
     invocations of `editgraph run` without a shared cache would do).
  3. The same batch again (resume after everything finished): all rows from the cache.
  4. Signing a C2PA manifest into the 1024 px PNG, JPEG and WebP of row 1 (after the embed), with
     a throwaway ES256 identity and the 1024 px source photo as the parent ingredient: the extra
     per-file cost when a signing identity is configured (target: at most 50 ms each), and the
     cost of checking that file as `editgraph verify` does.
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageCms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from editgraph.batch import runner as batch
from editgraph.sharing import provenance  # noqa: E402
from editgraph.executor.cache import Cache  # noqa: E402
from editgraph.executor.run import Executor  # noqa: E402
from editgraph.sharing.metadata import Carried  # noqa: E402
from editgraph.graph.document import load_workflow  # noqa: E402
from editgraph.graph.validate import bind  # noqa: E402
from editgraph.sharing import c2pa  # noqa: E402
from editgraph.sharing.c2pa_verify import verify  # noqa: E402
from editgraph.testing.c2pa_identity import make_test_identity  # noqa: E402

ROWS = 20


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def photo_1024() -> Image.Image:
    with Image.open(REPO / "editgraph" / "workflows" / "assets" / "coffee.png") as im:
        return im.convert("RGB").resize((1024, 683), Image.Resampling.LANCZOS)


def embed_cost() -> list[tuple[str, str]]:
    pil = photo_1024()
    exif = pil.getexif()
    exif[0x010F] = "BenchCam"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    info = provenance.Provenance({"workflow": load_workflow(REPO / "editgraph" / "workflows" / "inpaint.json").to_dict(), "keys": {str(i): "0" * 64 for i in range(50)}})
    info.carry["save"] = Carried("photo", "x", exif.tobytes()[6:], icc, None)
    rows = []
    for fmt in ("PNG", "JPEG", "WEBP"):
        buf = io.BytesIO()
        pil.save(buf, format=fmt, **({"quality": 95} if fmt != "PNG" else {}))
        data = buf.getvalue()
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            out = provenance.embed("x", data, info, node_id="save")
            times.append(time.perf_counter() - t0)
        size = f"{len(data) / 1024:.0f} KiB -> {len(out) / 1024:.0f} KiB"
        rows.append((f"embed provenance + XMP + EXIF + ICC into a 1024 px {fmt} ({size})", ms(statistics.median(times))))
    return rows


def sign_cost(tmp: Path) -> list[tuple[str, str]]:
    import blake3

    ids = make_test_identity(tmp / "identity")
    identity = c2pa.Identity(ids.chain, ids.key, None, "es256", None, "bench")
    trust = ids.root.read_text()
    pil = photo_1024()
    source = tmp / "source.png"
    pil.save(source)
    parent = c2pa.Ingredient("photo", str(source), "parentOf", blake3.blake3(source.read_bytes()).hexdigest())
    assertion = {"workflow_name": "inpaint", "workflow_sha256": "0" * 64, "seeds": {"denoise.seed": 0}, "models": [{"node": "model", "name": "sd15", "content_hash": "0" * 64}]}
    plan = c2pa.Plan("save", False, c2pa.COMPOSITE_AI, ("denoise", "pixels"), (parent,), assertion)
    info = provenance.Provenance({"workflow": load_workflow(REPO / "editgraph" / "workflows" / "inpaint.json").to_dict(), "keys": {str(i): "0" * 64 for i in range(50)}})
    rows = []
    for fmt in ("PNG", "JPEG", "WEBP"):
        buf = io.BytesIO()
        pil.save(buf, format=fmt, **({"quality": 95} if fmt != "PNG" else {}))
        data = provenance.embed("x", buf.getvalue(), info, node_id="save", signing=True)
        times, checks = [], []
        for _ in range(20):
            t0 = time.perf_counter()
            out = c2pa.sign(f"x.{fmt.lower()}", data, plan, identity, trust=trust)
            times.append(time.perf_counter() - t0)
        for _ in range(5):
            t0 = time.perf_counter()
            summary = verify(out, trust=trust)
            checks.append(time.perf_counter() - t0)
        assert summary["ok"] and summary["state"] == "Trusted", summary
        size = f"{len(data) / 1024:.0f} KiB -> {len(out) / 1024:.0f} KiB"
        rows.append((f"sign a C2PA manifest (ES256, 1 ingredient) into a 1024 px {fmt} ({size})", ms(statistics.median(times))))
        rows.append((f"verify that {fmt} (signature, hard binding, ingredient)", ms(statistics.median(checks))))
    return rows


def batch_cost(tmp: Path) -> list[tuple[str, str]]:
    photo = tmp / "hero.png"
    with Image.open(REPO / "editgraph" / "workflows" / "assets" / "coffee.png") as im:
        im.resize((1536, 1024)).save(photo)
    doc = {
        "params": {"image": {"type": "path", "default": str(photo)}, "width": {"type": "int", "default": 64}},
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": "$image"}},
            "small": {"type": "image.resize", "inputs": {"image": "photo"}, "params": {"width": "$width"}},
            "save": {"type": "image.save", "inputs": {"image": "small"}, "params": {"path": "shot.png"}},
        },
    }
    wf = load_workflow(doc)
    rows = batch.rows_from_zip([f"width={','.join(str(200 + 8 * i) for i in range(ROWS))}"])
    graphs = batch.bind_rows(wf, rows, {}, base_dir=tmp, source="bench")
    dirs = batch.out_dirs(str(tmp / "out"), graphs, {"image": "path", "width": "int"})

    t0 = time.perf_counter()
    for i, row in enumerate(rows):
        cache = Cache.default(tmp / f"solo-{i}")
        Executor(cache).run(bind(wf, row), out_dir=tmp / "solo" / str(i), stamp=provenance.stamp)
        cache.close()
    separate = time.perf_counter() - t0

    cache = Cache.default(tmp / "shared")
    t0 = time.perf_counter()
    results = batch.run_batch(graphs, dirs, Executor(cache))
    shared = time.perf_counter() - t0
    loads = batch.summary(results)["node_runs"]["photo"]
    t0 = time.perf_counter()
    again = batch.run_batch(graphs, dirs, Executor(cache))
    resumed = time.perf_counter() - t0
    cache.close()
    cached = sum(rec["status"] == "cached" for r in again for rec in r.nodes.values())
    return [
        (f"{ROWS} rows, separate runs with empty caches (photo decoded {ROWS}x)", ms(separate)),
        (f"{ROWS} rows, one batch, one executor (photo decoded {loads}x)", ms(shared)),
        (f"{ROWS} rows again, finished batch re-run ({cached} of {3 * ROWS} nodes cached)", ms(resumed)),
    ]


def main() -> None:
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        rows = embed_cost() + batch_cost(Path(tmp)) + sign_cost(Path(tmp))
    width = max(len(r[0]) for r in rows)
    print(f"| {'case':<{width}} | time |\n|{'-' * (width + 2)}|------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
