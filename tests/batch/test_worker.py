"""The batch worker without Ray (it is plain Python): what its shared-nodes job leaves behind."""

from __future__ import annotations

from pathlib import Path

from editgraph import workflows
from editgraph.batch.ray import shared_nodes
from editgraph.batch.runner import bind_rows, rows_from_table
from editgraph.batch.worker import Worker
from editgraph.graph.document import load_workflow


def _job(graph, row: int, targets=None) -> dict:
    return {"row": row, "document": graph.resolved_document(), "seeds": dict(graph.seeds),
            "base_dir": str(workflows.HERE), "source": "product-variant", "targets": targets}


def test_the_shared_nodes_job_stores_every_shared_node_however_cheap(tmp_path: Path, monkeypatch):
    """A row on another worker must find all the shared nodes stored: on a disk whose measured
    write rate makes cheap outputs not worth storing, the prepare job still stores them (else
    every worker made the cheap ones again: mask.feather ran once per worker, not once)."""
    table = tmp_path / "rows.csv"
    table.write_text("prompt,output\na red cup,sku-01.png\na blue cup,sku-02.png\n")
    wf = load_workflow(workflows.find("product-variant"))
    graphs = bind_rows(wf, rows_from_table(table, wf), {"steps": "2", "working_size": "64"}, base_dir=workflows.HERE, source="product-variant")
    shared = shared_nodes(graphs)
    assert {"photo", "region", "soft", "crop", "latent"} <= set(shared)

    monkeypatch.setenv("EDITGRAPH_PERSIST", "cost")  # the users' mode, which a cheap output would fail without ALWAYS
    options = {"threads": 2, "device": "cpu", "disk_dir": str(tmp_path / "disk"), "shared": None}
    first = Worker("w1", options)
    first.cache.disk.write_bps = 1.0  # measured: a byte a second, so no file is worth writing by cost
    prep = first.run(_job(graphs[0], 0, shared))
    assert prep["status"] == "ok" and {n: r["status"] for n, r in prep["nodes"].items()} == {n: "ran" for n in shared}
    first.close()

    # a second worker (a new memory tier) on the same disk: the row finds every shared node stored
    second = Worker("w2", options)
    row = second.run(_job(graphs[1], 2))
    second.close()
    assert row["status"] == "ok", row["error"]
    ran = sorted(n for n, r in row["nodes"].items() if r["status"] == "ran")
    assert "soft" not in ran and "region" not in ran and "latent" not in ran
    assert ran == sorted(n for n in graphs[1].nodes if n not in shared or n == "model")
