"""`editgraph batch --ray` on a local Ray (2 CPUs) with a local S3 as the shared tier: the same bytes
as the local batch, shared nodes computed once in the whole cluster, models once per worker, a
killed worker's row retried elsewhere, a corrupt object recomputed, a cancelled batch resumed."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import boto3
import pytest

from editgraph import workflows
from editgraph.batch.ray import run_on_ray
from editgraph.batch.runner import bind_rows, out_dirs, rows_from_table
from editgraph.cli.main import main
from editgraph.graph.document import load_workflow

from .conftest import FAST, files_under

import ray  # noqa: E402,F401  (in the test extra: a missing Ray fails, it is not skipped)


def bound_rows(table, out, n: int | None = None, **sets):
    wf = load_workflow(workflows.find("product-variant"))
    rows = rows_from_table(table, wf)[:n]
    graphs = bind_rows(wf, rows, {"steps": "2", "working_size": "64", **sets}, base_dir=workflows.HERE, source="product-variant")
    return graphs, out_dirs(str(out), graphs, {k: p.type for k, p in wf.params.items()})


def statuses(row) -> dict[str, str]:
    return {n: r["status"] for n, r in row["nodes"].items()}


@pytest.mark.slow
def test_twenty_rows_on_ray_equal_the_local_batch_and_share_the_encode(ray_local, s3_bucket, table, local_outputs, cli, tmp_path):
    code, out, err = cli(
        "batch", "product-variant", "--table", table, *FAST, "--ray", "--workers", "2", "--cache", f"s3://{s3_bucket}/tier",
        "--cache-dir", tmp_path / "disk", "--out", tmp_path / "out", "--report", tmp_path / "r.json", "-q",
    )
    assert code == 0, err
    assert files_under(tmp_path / "out") == local_outputs  # byte for byte, provenance included
    assert len(local_outputs) == 20
    report = json.loads((tmp_path / "r.json").read_text())
    s = report["summary"]
    assert (s["rows"], s["ok"], s["workers"], s["retries"]) == (20, 20, 2, 0)
    # the hero photo's chain and its VAE encode: once in the whole cluster, before the rows fanned out
    prep = report["ray"]["prepare"]
    assert statuses(prep) == {n: "ran" for n in ("photo", "region", "soft", "crop", "model", "latent")}
    assert s["node_runs"]["latent"] == 1 and s["node_runs"]["photo"] == 1
    assert all(statuses(r)["latent"] == "cached" and statuses(r)["denoise"] == "ran" for r in report["rows"])
    assert s["shared"] == ["photo", "region", "soft", "crop", "latent"] and "computed once for all rows: photo, region, soft, crop, latent" in out
    # model.load: once per worker that ran anything, never per row
    workers = report["ray"]["workers"]
    assert sorted(workers) == ["w1", "w2"]
    for name, w in workers.items():
        assert w["node_runs"].get("model", 0) == (1 if w["rows"] or name == prep["worker"] else 0), (name, w)
        assert w["torch_threads"] == 2 and w["pid"] != os.getpid()
    assert s["node_runs"]["model"] == sum(1 for n, w in workers.items() if w["rows"] or n == prep["worker"])
    assert sorted(r for w in workers.values() for r in w["rows"]) == list(range(1, 21))
    assert {r["worker"] for r in report["rows"]} <= {"w1", "w2"}
    # and the shared tier holds what the rows made: a second run on fresh workers and an empty disk tier reads it all
    code, _, err = cli(
        "batch", "product-variant", "--table", table, *FAST, "--ray", "--workers", "1", "--cache", f"s3://{s3_bucket}/tier",
        "--cache-dir", tmp_path / "disk2", "--out", tmp_path / "again", "--report", tmp_path / "r2.json", "-q",
    )
    assert code == 0, err
    again = json.loads((tmp_path / "r2.json").read_text())
    assert all(set(statuses(r).values()) == {"cached"} for r in again["rows"])
    assert files_under(tmp_path / "again") == local_outputs


STEPS, POLL_S = 20, 0.05  # the killed-worker test's denoise and status interval (see there)


@pytest.mark.slow
def test_a_worker_killed_mid_row_has_its_row_retried_on_another(ray_local, s3_bucket, table, tmp_path):
    # The 20 rows with a denoise of 20 steps (a few tenths of a second, longer under load), polled every
    # POLL_S: every denoise's first half spans two or more status polls, so the kill always lands
    # inside one, with half its steps still to go. (It was 60 steps at the default 0.5 s poll: the
    # same guarantee at three times the denoising, twice over: the local reference and the Ray run.)
    slow = ["--set", f"steps={STEPS}", "--set", "working_size=64"]
    assert main(["batch", "product-variant", "--table", str(table), *slow, "--out", str(tmp_path / "local"), "-q"]) == 0
    expected = files_under(tmp_path / "local")
    assert len(expected) == 20

    graphs, dirs = bound_rows(table, tmp_path / "out", steps=str(STEPS))
    killed: dict = {}

    def on_status(now):  # kill -9 the first worker seen in the first half of a row's denoise, once
        for name, st in now.items():
            early = st.get("step") is None or st["step"] <= st.get("total", 0) // 2
            if not killed and st.get("node") == "denoise" and st.get("row", 0) >= 2 and early:
                killed.update(worker=name, pid=st["pid"], row=st["row"])
                os.kill(st["pid"], signal.SIGKILL)

    batch = run_on_ray(graphs, dirs, workers=2, shared=f"s3://{s3_bucket}/k", disk_dir=str(tmp_path / "disk"), on_status=on_status,
                       poll_s=POLL_S)
    assert killed, "no worker was caught inside a denoise"
    assert [r.status for r in batch.rows] == ["ok"] * 20
    assert files_under(tmp_path / "out") == expected  # the retried row too, byte for byte
    row = batch.rows[killed["row"] - 1]
    assert [a["worker"] for a in row.attempts] == [killed["worker"]] and "died" in row.attempts[0]["error"]
    assert row.worker != killed["worker"]  # retried on another worker
    assert batch.summary()["retries"] == 1
    assert batch.workers[killed["worker"]]["died"].startswith(f"worker {killed['worker']} (pid {killed['pid']}) died")
    # the retry started from the shared tier: the hero photo's encode still ran once in the cluster
    assert batch.summary()["node_runs"]["latent"] == 1
    assert statuses({"nodes": row.nodes})["latent"] == "cached"


@pytest.mark.slow
def test_a_corrupt_object_in_the_shared_tier_is_recomputed_never_served(ray_local, s3_bucket, table, local_outputs, tmp_path):
    import blake3

    from editgraph.executor.objectstore import unpack_bundle

    url = f"s3://{s3_bucket}/c"
    graphs, dirs = bound_rows(table, tmp_path / "first", 3)
    first = run_on_ray(graphs, dirs, workers=1, shared=url, disk_dir=str(tmp_path / "d1"))
    assert [r.status for r in first.rows] == ["ok"] * 3
    # The encode's latent, wherever the shared tier holds it (inside the bundle of the run that made
    # it, under each key that run missed): flip one byte of it.
    s3 = boto3.client("s3")
    latent = first.prepare["nodes"]["latent"]["key"]
    holders = {}
    for obj in s3.list_objects_v2(Bucket=s3_bucket, Prefix="c/refs/")["Contents"]:
        got = unpack_bundle(obj["Key"].rsplit("/", 1)[1], s3.get_object(Bucket=s3_bucket, Key=obj["Key"])["Body"].read())
        if got is not None and latent in got[0]:
            holders[obj["Key"]] = got
    assert holders, "no object holds the latent's ref"
    fp = next(iter(holders.values()))[0][latent]["latent"]
    for name, (refs, blobs) in holders.items():
        assert blake3.blake3(blobs[fp]).hexdigest() == fp  # the latent rides inline in the bundle
        data = bytearray(s3.get_object(Bucket=s3_bucket, Key=name)["Body"].read())
        at = bytes(data).index(blobs[fp]) + len(blobs[fp]) // 2
        data[at] ^= 0x01
        s3.put_object(Bucket=s3_bucket, Key=name, Body=bytes(data))

    # three new SKUs (rows 4-6) need the latent; a new worker with an empty disk tier
    graphs, dirs = bound_rows(table, tmp_path / "second", 6)
    second = run_on_ray(graphs, dirs, workers=1, shared=url, disk_dir=str(tmp_path / "d2"))
    assert [r.status for r in second.rows] == ["ok"] * 6
    assert second.prepare["nodes"]["latent"]["status"] == "ran"  # recomputed, not served
    assert [statuses({"nodes": r.nodes})["latent"] for r in second.rows] == ["cached"] * 6
    assert [set(statuses({"nodes": r.nodes}).values()) for r in second.rows[:3]] == [{"cached"}] * 3  # their rows' bundles were intact
    assert sorted(second.workers["w1"]["rejected"]) == sorted(n.removeprefix("c/") for n in holders)
    assert files_under(tmp_path / "second") == {k: v for k, v in local_outputs.items() if int(k.split("/")[0][4:]) <= 6}
    for name in holders:  # repaired: the recomputed latent is back, verified, under the same keys
        got = unpack_bundle(name.rsplit("/", 1)[1], s3.get_object(Bucket=s3_bucket, Key=name)["Body"].read())
        assert got is not None and blake3.blake3(got[1][fp]).hexdigest() == fp


@pytest.mark.slow
def test_a_row_failing_on_its_own_input_fails_once_and_the_rest_finish(ray_local, tmp_path, table, local_outputs, photo_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    rows = tmp_path / "rows.csv"
    lines = table.read_text().splitlines()
    rows.write_text("\n".join([lines[0] + ",image", lines[1] + f",{photo_path}", lines[2] + f",{broken}", lines[3] + f",{photo_path}"]) + "\n")
    wf = load_workflow(workflows.find("product-variant"))
    graphs = bind_rows(wf, rows_from_table(rows, wf), {"steps": "2", "working_size": "64"}, base_dir=workflows.HERE, source="t")
    dirs = out_dirs(str(tmp_path / "out"), graphs, {k: p.type for k, p in wf.params.items()})
    batch = run_on_ray(graphs, dirs, workers=2, disk_dir=str(tmp_path / "d"), keep_going=True)
    assert [r.status for r in batch.rows] == ["ok", "failed", "ok"]
    bad = batch.rows[1]
    assert bad.attempts == [] and "node 'photo' (image.load)" in bad.error
    assert batch.prepare["nodes"].keys() == {"region", "soft", "model"}  # the photo differs by row: not shared
    assert files_under(tmp_path / "out") == {k: v for k, v in local_outputs.items() if k.startswith("row-1/")} | {
        "row-3/sku-03.png": local_outputs["row-3/sku-03.png"]
    }


@pytest.mark.slow
def test_a_cancelled_batch_keeps_what_finished_and_the_same_run_resumes(ray_local, s3_bucket, table, local_outputs, tmp_path):
    url = f"s3://{s3_bucket}/r"
    graphs, dirs = bound_rows(table, tmp_path / "out", 8)
    stop = threading.Event()

    def on_row(row, batch):  # Ctrl-C, as the API sees it, once three rows are done
        if sum(r.status == "ok" for r in batch.rows) >= 3:
            stop.set()

    first = run_on_ray(graphs, dirs, workers=2, shared=url, disk_dir=str(tmp_path / "d1"), cancel=stop, on_row=on_row)
    assert first.cancelled
    done = [r.row for r in first.rows if r.status == "ok"]
    assert 3 <= len(done) < 8 and {r.status for r in first.rows} <= {"ok", "cancelled", "not run"}
    again = run_on_ray(graphs, dirs, workers=2, shared=url, disk_dir=str(tmp_path / "d2"))
    assert [r.status for r in again.rows] == ["ok"] * 8, [(r.row, r.status, r.error, r.attempts) for r in again.rows]
    for r in again.rows:
        if r.row in done:  # finished before the stop: nothing recomputed
            assert set(statuses({"nodes": r.nodes}).values()) == {"cached"}, r.nodes
    assert files_under(tmp_path / "out") == {k: v for k, v in local_outputs.items() if int(k.split("/")[0][4:]) <= 8}


def test_without_ray_the_flag_says_how_to_install_it(cli, tmp_path, table, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    code, _, err = cli("batch", "product-variant", "--table", table, *FAST, "--ray", "--out", tmp_path / "o", "-q")
    assert code == 5 and "Ray is not installed here: pip install 'editgraph[ray]'" in err
    assert not (tmp_path / "o").exists()
