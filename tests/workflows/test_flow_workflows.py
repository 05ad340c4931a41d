"""The flow-family workflows as a catalogue job: product-swap over a 20-row table of references,
what runs once, what runs per row, what a changed row reruns, and what is read from disk."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image as PILImage

from editgraph import workflows
from editgraph.sharing import provenance
from editgraph.cli.main import main
from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog
from editgraph.executor.run import Executor
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.models import cache as model_cache
from editgraph.models import flow_loader

FAST = ["--set", "steps=1", "--set", "working_size=64", "--set", "out_width=64"]
ONCE = {"photo", "region", "soft", "crop", "model", "text", "source", "bgtext"}  # the same in every row
PER_ROW = {"product", "ref", "refs", "swap", "swapped", "result", "small"} | {
    f"{stage}_{tag}" for stage in ("pad", "source", "fill", "pixels", "out", "save") for tag in ("1x1", "4x5", "9x16")
}


def _reference(path, i: int) -> str:
    """A distinct 64 px 'product shot' per SKU: a coloured bottle shape on white."""
    img = PILImage.new("RGB", (64, 64), (255, 255, 255))
    colour = ((37 * i) % 256, (91 * i + 40) % 256, (173 * i + 80) % 256)
    img.paste(colour, (20, 8 + i % 5, 44, 60))
    img.save(path)
    return str(path)


def _batch(tmp_path, table, report, capsys) -> dict:
    code = main(["batch", "product-swap", "--table", str(table), *FAST, "--out", str(tmp_path / "out"), "--report", str(report), "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(report.read_text())


@pytest.fixture
def one_thread():
    """Tiny models make many small ops, which two threads only slow down on a shared CPU; both
    batches of a test run with the same count, so their cache keys and bytes agree."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _ran(row: dict) -> set[str]:
    return {n for n, r in row["nodes"].items() if r["status"] == "ran"}


@pytest.mark.slow
def test_product_swap_batch_encodes_shared_things_once_and_each_reference_once(tmp_path, capsys, one_thread):
    refs = [_reference(tmp_path / f"sku-{i}.png", i) for i in range(1, 21)]
    table = tmp_path / "skus.csv"
    table.write_text("reference\n" + "\n".join(refs) + "\n")

    # 1. twenty rows: the hero, the mask chain and both prompt encodes once; each reference once
    report = _batch(tmp_path, table, tmp_path / "one.json", capsys)
    s = report["summary"]
    assert (s["rows"], s["ok"]) == (20, 20)
    assert set(s["node_runs"]) == ONCE | PER_ROW
    assert {n: s["node_runs"][n] for n in ONCE} == dict.fromkeys(ONCE, 1)
    # every reference is different, so its encode and the swap run in every row
    assert all(s["node_runs"][n] == 20 for n in ("product", "ref", "refs", "swap", "swapped", "result", "small"))
    # (further down, two rows' small outpaint crops may come out the same bytes and share a denoise)
    assert all(s["node_runs"][n] + s["node_cached"][n] == 20 for n in PER_ROW)
    assert sorted(s["shared"]) == sorted(ONCE)
    assert _ran(report["rows"][0]) == ONCE | PER_ROW
    # model.load's output lives in memory only: when the memory tier evicts it, the next row that
    # needs it makes it again (a lazy open: nothing is read from disk). Nothing else shared reruns.
    assert all({"ref", "swap"} <= _ran(row) <= PER_ROW | {"model"} for row in report["rows"][1:])
    for i in range(1, 21):
        assert sorted(p.name for p in (tmp_path / "out" / f"row-{i}").iterdir()) == [
            "product-1x1.png", "product-4x5.png", "product-9x16.png"
        ]

    # 2. replace row 7's reference, in a fresh process's state (no model held in memory): only
    # row 7's reference encode and what depends on it run; the text encoder is never read
    refs[6] = _reference(tmp_path / "sku-7-new.png", 77)
    table.write_text("reference\n" + "\n".join(refs) + "\n")
    model_cache.release_all()
    loads_before = len(flow_loader.LOADS)
    report = _batch(tmp_path, table, tmp_path / "two.json", capsys)
    ran = {row["row"]: _ran(row) for row in report["rows"]}
    assert {"product", "ref", "refs", "swap", "swapped", "result", "small", "save_1x1"} <= ran[7] <= PER_ROW | {"model"}
    # every other row comes back from the cache whole (model.load, memory-only, is made again
    # where a running node first needs it: a lazy open that reads nothing)
    assert all(ran[r] == set() for r in ran if r != 7)
    read = {comp for _, comp in flow_loader.LOADS[loads_before:]}
    assert read == {"transformer", "vae"}, read  # prompt encodes all cached: no text encoder, no tokenizer


@pytest.mark.slow
def test_product_swap_leaves_everything_outside_the_feathered_mask_untouched(tmp_path, one_thread):
    graph = bind(
        load_workflow(workflows.find("product-swap")), {"steps": "1", "working_size": "64", "out_width": "64"},
        base_dir=workflows.HERE,
    )
    log = EventLog()
    result = Executor(Cache.default(tmp_path / "cache"), listeners=[log]).run(graph, out_dir=tmp_path / "out", stamp=provenance.stamp)
    photo, soft, swapped = result.value("photo"), result.value("soft"), result.value("result")
    keep = (soft == 0).expand_as(photo)
    assert keep.float().mean() > 0.5
    assert torch.equal(swapped[keep], photo[keep])
    assert not torch.equal(swapped[~keep], photo[~keep])  # the masked product did change
