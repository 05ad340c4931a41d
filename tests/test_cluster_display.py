"""`editgraph batch --ray`'s progress line: what each worker runs now, in one description."""

from __future__ import annotations

from editgraph.cli.cluster import ClusterDisplay


def test_the_bar_names_each_busy_worker_its_row_node_and_step():
    display = ClusterDisplay(rows=3, quiet=False)
    display.statuses({"w1": {"row": 1}})  # before the bar exists: nothing to update, no error
    with display:
        display.statuses({
            "w2": {"row": 2, "node": "denoise", "step": 3, "total": 20},
            "w1": {"row": None, "node": "latent"},  # the shared-nodes job has no row
            "w3": {},  # idle: not named
        })
        busy = display.progress.tasks[display.overall].description
        display.statuses({"w3": {}})
        idle = display.progress.tasks[display.overall].description
    assert busy == "w1: row shared latent · w2: row 2 denoise 3/20"
    assert idle == "batch"
