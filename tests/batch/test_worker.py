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


def test_a_rows_failure_is_reported_in_its_result_and_the_worker_goes_on(tmp_path: Path):
    """What the Ray driver records per row: a node failing, a row that no longer binds where the
    worker runs, a cancel mid-row; each is a result naming what happened (only a dead worker makes
    the driver retry), and the same worker then runs the next row."""
    from PIL import Image

    from editgraph.executor.events import NodeStarted
    from editgraph.graph.validate import bind

    wf = load_workflow(workflows.find("look"))
    photo = tmp_path / "photo.png"
    Image.open(workflows.HERE / "assets" / "coffee.png").convert("RGB").resize((48, 32)).save(photo)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)  # a PNG signature, then nothing decodable
    gone = tmp_path / "gone.png"
    gone.write_bytes(photo.read_bytes())

    def job(row: int, image: Path) -> dict:
        graph = bind(wf, {"image": str(image)}, base_dir=workflows.HERE, source="look")
        return {"row": row, "document": graph.resolved_document(), "seeds": dict(graph.seeds), "base_dir": str(workflows.HERE), "source": "look"}

    worker = Worker("w1", {"threads": 2, "device": "cpu", "disk_dir": str(tmp_path / "disk"), "shared": None})
    try:
        assert worker.info()["worker"] == "w1" and worker.info()["device"] == "cpu" and worker.info()["torch_threads"] == 2

        failed = worker.run(job(1, broken))
        assert failed["status"] == "failed" and str(broken) in failed["error"] and failed["files"] == {}
        assert failed["nodes"]["photo"]["status"] == "failed" and failed["nodes"]["photo"]["type"] == "image.load"
        assert {r["status"] for n, r in failed["nodes"].items() if n != "photo"} <= {"ran", "cached"}  # the LUT and reference

        moved = job(2, gone)
        gone.unlink()  # the row's picture is not on this machine
        unbound = worker.run(moved)
        assert unbound["status"] == "failed" and str(gone) in unbound["error"] and unbound["nodes"] == {}

        seen = []

        def cancel_at_the_grade(event) -> None:  # as the driver's cancel arrives from another thread
            if isinstance(event, NodeStarted) and event.node_id == "graded":
                seen.append(worker.status())
                worker.cancel()

        worker.executor.listeners.append(cancel_at_the_grade)
        cancelled = worker.run(job(3, photo))
        worker.executor.listeners.remove(cancel_at_the_grade)
        assert cancelled["status"] == "cancelled" and cancelled["error"] == "cancelled" and cancelled["files"] == {}
        assert seen == [{"row": 3, "node": "graded", "type": "grade", "step": None}]
        assert worker.status() == {}  # between rows: nothing running

        ok = worker.run(job(4, photo))  # the same worker, after all three
        assert ok["status"] == "ok" and ok["error"] is None and list(ok["files"]) == ["look.png"]
        assert ok["nodes"]["photo"]["status"] in ("ran", "cached") and ok["pid"] == failed["pid"]
    finally:
        worker.close()


def test_a_row_folder_a_killed_worker_left_is_removed_by_the_next_worker_a_live_ones_kept(tmp_path: Path, monkeypatch):
    """A worker writes a row's outputs in a scratch folder before sending them back. SIGKILLed mid-row
    (a Ray node lost, a cancelled cluster) it cannot remove it: the next worker on the machine
    does, and leaves alone the folder of a worker still running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from editgraph.atomic import scratch_dir
    from editgraph.batch import worker as worker_module

    parent = tmp_path / "rows"
    monkeypatch.setattr(worker_module, "SCRATCH", parent)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from editgraph.atomic import scratch_dir\n"
         "with scratch_dir(Path(sys.argv[1])) as p:\n"
         "    (p / 'sku-01.png').write_bytes(b'x' * 4096); print(p, flush=True); time.sleep(120)", str(parent)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    dead = Path(holder.stdout.readline().strip())
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (dead / "sku-01.png").is_file()  # what a killed worker leaves
    with scratch_dir(parent) as live:
        old = time.time() - 3600
        for folder in (dead, live):  # both past the grace that covers a folder not locked yet
            os.utime(folder, (old, old))
        Worker("w1", {"threads": None, "device": "cpu", "disk_dir": str(tmp_path / "disk"), "shared": None}).close()  # threads: the suite's own
        assert not dead.exists() and live.is_dir()
    assert not live.exists() and list(parent.iterdir()) == []
