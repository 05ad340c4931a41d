"""Ray benchmark: the product-variant batch locally, on 1 and 2 Ray workers, and re-run from the
shared tier; what Ray costs per row against the local batch at equal worker count.

    python bench/ray.py [--rows 20] [--steps 8] [--size 128] [--repeats 3]   # prints markdown tables

Needs the extras `ray` and `test` (moto's S3 server is the shared tier, on 127.0.0.1). Every run
starts from an empty local cache; the shared tier starts empty except for the re-run, which reads
what the 2-worker run wrote, with new workers and an empty disk tier (a second machine's view).

Columns: wall is the whole call, workers' start included; "rows" is wall less worker start-up
(the first worker's, as the batch waits for it) and the shared-node prepare run, divided by rows.
Overhead per row compares the 1-worker run's per-row time with the local batch's, whose own
per-row time also excludes its first row's shared nodes (the local batch computes them in row 1).
The local batch and the 1-worker run alternate `--repeats` times (the machine's load drifts); the
overhead is given from the minima and from the medians, and beside it the row time each process
measured itself (a row's own run, shared nodes excluded: what the shared tier adds inside a row,
apart from Ray's scheduling between rows). The last column counts each row's requests to the shared
tier (GET hit / GET miss / PUT, as its worker's SharedStore made them; a row's writes go up as one
bundle, executor/objectstore.py).

Both sides run torch with OMP_WAIT_POLICY=PASSIVE (as the test suite does; Ray's workers inherit
this process's environment): with spinning OpenMP threads a loaded 2-core machine made the local
batch's rows 2-8x slower than the same rows in a Ray worker, and the comparison measured the
machine's load, not Ray. Ray's own default would start the workers at niceness 15; the bench starts
its Ray as `editgraph batch --ray` does (batch/ray.py connect()), at this process's niceness.

Because the load drifts, two more lines compare the steady state only (from the first row's end
to the last's): wall per row, and CPU per row summed over every process the run uses (for Ray:
the driver, Ray's daemons, the worker and the S3 server; for the local batch: its one process),
with the Ray side's CPU broken down by process underneath.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Run as a script, this folder comes first on sys.path, and this file would shadow the `ray` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray on 127.0.0.1 only
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its threads; see above

import torch  # noqa: E402

from editgraph import workflows  # noqa: E402
from editgraph.batch.ray import connect, run_on_ray  # noqa: E402
from editgraph.batch.runner import bind_rows, out_dirs, run_batch  # noqa: E402
from editgraph.executor.cache import Cache  # noqa: E402
from editgraph.executor.run import Executor  # noqa: E402
from editgraph.graph.document import load_workflow  # noqa: E402

SHARED = ("photo", "region", "soft", "crop", "model", "latent")
COLOURS = ("red", "blue", "green", "white", "black", "yellow", "orange", "purple")
FINISHES = ("glossy", "matte", "speckled", "striped", "ceramic")


def start_s3(tmp: Path) -> subprocess.Popen:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    return proc


def bound(rows: int, steps: int, size: int, out: Path):
    wf = load_workflow(workflows.find("product-variant"))
    table = [{"prompt": f"a {c} {f} espresso cup", "output": f"sku-{i:02d}.png"}
             for i, (c, f) in enumerate(((c, f) for f in FINISHES for c in COLOURS), start=1)][:rows]
    graphs = bind_rows(wf, table, {"steps": str(steps), "working_size": str(size)}, base_dir=workflows.HERE, source="bench")
    return graphs, out_dirs(str(out), graphs, {k: p.type for k, p in wf.params.items()})


def cpu_by_process(tree: bool) -> dict[str, float]:
    """CPU seconds (user + system) so far of this process, and with tree of every process it
    started (Ray's daemons and workers, the S3 server), by process name."""
    import psutil

    me = psutil.Process()
    out: dict[str, float] = {}
    for p in [me, *(me.children(recursive=True) if tree else [])]:
        try:
            t = p.cpu_times()
            name = "this process" if p.pid == me.pid else p.name()
        except psutil.Error:
            continue  # ended meanwhile
        out[name] = out.get(name, 0.0) + t.user + t.system
    return out


class Window:
    """Wall and CPU between the first row's end and the last's: the steady state, start-up and the
    shared nodes left out. CPU is every process the run uses (tree) or this one only."""

    def __init__(self, rows: int, tree: bool):
        self.rows, self.tree, self.marks = rows, tree, []

    def __call__(self, *_):
        if len(self.marks) in (0, self.rows - 1):
            self.marks.append((time.perf_counter(), cpu_by_process(self.tree)))
        else:
            self.marks.append(None)

    def result(self) -> dict:
        if self.rows < 2:
            return {"wall_w": 0.0, "cpu_w": 0.0, "cpu_by": {}}
        (t0, c0), (t1, c1) = self.marks[0], self.marks[-1]
        n = self.rows - 1
        by = {k: (v - c0.get(k, 0.0)) / n for k, v in c1.items()}
        return {"wall_w": (t1 - t0) / n, "cpu_w": sum(by.values()), "cpu_by": by}


def local(graphs, dirs, cache_dir: Path) -> dict:
    cache = Cache.default(cache_dir)
    window = Window(len(graphs), tree=False)
    t0 = time.perf_counter()
    results = run_batch(graphs, dirs, Executor(cache), on_row=window)
    wall = time.perf_counter() - t0
    cache.close()
    first_shared = sum(rec["seconds"] for nid, rec in results[0].nodes.items() if nid in SHARED)
    own = [r.seconds for r in results[1:]] or [results[0].seconds]  # row 1 also ran the shared nodes
    return {"wall": wall, "rows": (wall - first_shared) / len(graphs), "ok": sum(r.status == "ok" for r in results), "own": statistics.median(own),
            **window.result()}


def on_ray(graphs, dirs, workers: int, shared: str, disk: Path) -> dict:
    window = Window(len(graphs), tree=True)
    t0 = time.perf_counter()
    batch = run_on_ray(graphs, dirs, workers=workers, shared=shared, disk_dir=str(disk), on_row=window)
    wall = time.perf_counter() - t0
    first_up = min(w["start_s"] for w in batch.workers.values())
    prepare = (batch.prepare or {}).get("seconds", 0.0)
    s = batch.summary()
    # a row's own time as its worker measured it, less the model load a second worker does in its first row
    own = [r.seconds - (r.nodes.get("model", {}).get("seconds", 0) if r.nodes.get("model", {}).get("status") == "ran" else 0) for r in batch.rows]
    requests: Counter[str] = Counter()
    for r in batch.rows:
        requests.update(r.requests)
    per_row = ", ".join(f"{n / len(batch.rows):.2g} {what}" for what, n in sorted(requests.items())) or "none"
    return {"wall": wall, "rows": (wall - first_up - prepare) / len(graphs), "ok": s["ok"], "start": first_up, "prepare": prepare,
            "latent": s["node_runs"].get("latent", 0), "model": s["node_runs"].get("model", 0), "own": statistics.median(own),
            "requests": per_row, **window.result()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=128, help="working_size: the long side of the crop the model sees")
    ap.add_argument("--repeats", type=int, default=3, help="local batch and 1-worker Ray runs, alternated")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="egbench-ray-"))
    os.environ["EDITGRAPH_MODELS_DIR"] = str(tmp / "models")
    s3 = start_s3(tmp)
    import ray

    try:
        # the tiny model is built once, outside every timing
        g, d = bound(1, 1, 64, tmp / "warm")
        local(g, d, tmp / "warm-cache")
        connect(ray, None, num_cpus=2)  # as `editgraph batch --ray` starts a local Ray
        results, pairs = [], []
        for r in range(args.repeats):
            g, d = bound(args.rows, args.steps, args.size, tmp / f"local{r}")
            lo = local(g, d, tmp / f"c-local{r}")
            g, d = bound(args.rows, args.steps, args.size, tmp / f"r1-{r}")
            one = on_ray(g, d, 1, f"s3://bench/one{r}", tmp / f"c-r1-{r}")
            pairs.append((lo, one))
            results += [(f"local batch (1 process), run {r + 1}", lo), (f"Ray, 1 worker, run {r + 1}", one)]
        g, d = bound(args.rows, args.steps, args.size, tmp / "r2")
        results.append(("Ray, 2 workers", on_ray(g, d, 2, "s3://bench/two", tmp / "c-r2")))
        g, d = bound(args.rows, args.steps, args.size, tmp / "r3")
        results.append(("Ray, 2 workers, re-run from the shared tier", on_ray(g, d, 2, "s3://bench/two", tmp / "c-r3")))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        s3.terminate()
        s3.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"product-variant, {args.rows} rows, tiny-sd, {args.steps} steps at {args.size} px, {threads} torch threads per process, "
          f"{os.cpu_count()} CPUs; shared tier: moto S3 on 127.0.0.1; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end\n")
    print("| run | rows ok | wall s | worker start s | prepare s | per row s | row's own s (median) | vae.encode runs | model.load runs "
          "| shared-tier requests per row |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results:
        print(f"| {name} | {r['ok']} | {r['wall']:.1f} | {r.get('start', 0):.1f} | {r.get('prepare', 0):.2f} | {r['rows']:.3f} | {r['own']:.3f} | "
              f"{r.get('latent', 1)} | {r.get('model', 1)} | {r.get('requests', '-')} |")
    print("\n| Ray 1 worker vs local batch, per row | min | median | target |")
    print("|---|---|---|---|")
    for what, label in (("rows", "overhead (wall less start-up and shared nodes)"), ("own", "a row's own time, as each process measured it"),
                        ("wall_w", "wall per row, rows 2-N (steady state)"),
                        ("cpu_w", "CPU per row, rows 2-N, every process the run uses (Ray: driver, daemons, worker, S3 server)")):
        lo = [p[0][what] for p in pairs]
        one = [p[1][what] for p in pairs]
        ratio = lambda f: 100 * (f(one) - f(lo)) / f(lo)  # noqa: E731
        print(f"| {label} | {ratio(min):+.1f}% ({min(one):.3f} vs {min(lo):.3f} s) | {ratio(statistics.median):+.1f}% "
              f"({statistics.median(one):.3f} vs {statistics.median(lo):.3f} s) | <= +5% |")

    print("\n| CPU s per row, rows 2-N, by process | " + " | ".join(f"Ray 1 worker, run {i + 1}" for i in range(len(pairs))) + " |")
    print("|---|" + "---|" * len(pairs))
    names = sorted({n for _, one in pairs for n in one["cpu_by"]}, key=lambda n: -max(one["cpu_by"].get(n, 0) for _, one in pairs))
    for n in names:
        if max(one["cpu_by"].get(n, 0) for _, one in pairs) >= 0.001:
            print(f"| {n} | " + " | ".join(f"{one['cpu_by'].get(n, 0):.3f}" for _, one in pairs) + " |")
    print("| local batch, this process | " + " | ".join(f"{lo['cpu_w']:.3f}" for lo, _ in pairs) + " |")


if __name__ == "__main__":
    main()
