"""Fill benchmark: what the README's main job (object-removal) costs on the bundled 600x400 photo.

    python bench/fill.py            # prints markdown tables; torch pinned to 2 threads (2 cores)

Rows, each the median of 3 runs in a fresh cache (every node runs):
  1. the `fill` node alone, patchmatch (the default) and smooth: wall and CPU seconds;
  2. the whole object-removal workflow through the executor (load, fill, save), in process;
then a table of `editgraph run object-removal --out DIR` as a new process, python start-up and imports
included (issue 13's figure, target < 3 s): min and median of 7 runs, wall and CPU, both cold (a
fresh cache: every node runs) and re-run (the cache of the run before: every node cached), and
whether the process imported torch (it must not: every node of the workflow takes numpy arrays,
Node.arrays). On a shared machine quote the CPU seconds and the load average beside the wall time.
PyPatchMatch runs on one thread, so on an idle machine the fill's wall time is its CPU time.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

torch.set_num_threads(2)

from editgraph import workflows  # noqa: E402
from editgraph.nodes.context import RunContext  # noqa: E402
from editgraph.executor.cache import Cache  # noqa: E402
from editgraph.executor.run import Executor  # noqa: E402
from editgraph.graph.document import load_workflow  # noqa: E402
from editgraph.graph.validate import bind  # noqa: E402
from editgraph.ops.imaging import read_image  # noqa: E402
from editgraph.nodes.builtin.fill import Fill  # noqa: E402

ASSETS = REPO / "editgraph" / "workflows" / "assets"
RUNS = 3


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(RUNS):
        c0, t0 = cpu(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    photo = read_image(ASSETS / "coffee.png").image
    mask = read_image(ASSETS / "coffee-spoon-mask.png").image[:, :1]
    rows = []
    for method in ("patchmatch", "smooth"):
        node = Fill(Fill.Params(method=method))
        wall, used = timed(lambda: node.run(RunContext("fill", "fill"), image=photo, mask=mask))
        rows.append((f"fill node, {method}", wall, used))

    def workflow() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            graph = bind(load_workflow(workflows.find("object-removal")), base_dir=workflows.HERE)
            Executor(Cache.default(Path(tmp) / "cache")).run(graph, out_dir=Path(tmp) / "out")

    rows.append(("object-removal workflow, in process", *timed(workflow)))


    load = os.getloadavg()[0]
    print(f"object removal on the bundled photo (600x400, spoon mask), median of {RUNS}, torch threads 2, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} (wall time above CPU time = waiting for a core)\n")
    print("| what | wall s | CPU s |")
    print("|---|---:|---:|")
    for what, wall, used in rows:
        print(f"| {what} | {wall:.2f} | {used:.2f} |")
    print_command_table()


CHILD = (
    "import runpy, sys\n"
    "sys.argv = ['editgraph'] + sys.argv[1:]\n"
    "try:\n    runpy.run_module('editgraph.cli.main', run_name='__main__')\n"
    "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
    "print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def command_times(runs: int, *, cold: bool) -> tuple[list[float], float, float, list[float], bool]:
    """`editgraph run object-removal --out DIR` (no -q, as a user types it) as new processes:
    (walls, median wall, median CPU, CPUs, imported torch). cold: a fresh cache each run; else
    one cache, filled by a run before the timed ones."""
    walls, cpus, torch_seen = [], [], False
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "EDITGRAPH_CACHE_DIR": str(Path(tmp) / "cache")}

        def once(i: int) -> None:
            nonlocal torch_seen
            if cold:
                env["EDITGRAPH_CACHE_DIR"] = str(Path(tmp) / f"cache{i}")
            c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", CHILD, "run", "object-removal", "--out", str(Path(tmp) / "out")],
                                  check=True, env=env, cwd=REPO, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
            torch_seen = torch_seen or "torch imported: True" in done.stderr

        if not cold:
            once(-1)
            walls.clear(), cpus.clear()
        for i in range(runs):
            once(i)
    return walls, statistics.median(walls), statistics.median(cpus), cpus, torch_seen


def print_command_table(runs: int = 7) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n`editgraph run object-removal --out DIR` as a new process, {runs} runs; load average {load}\n")
    print("| run | wall min s | wall median s | CPU min s | CPU median s | imported torch | target |")
    print("|---|---:|---:|---:|---:|---|---|")
    for label, cold in (("cold (fresh cache, every node runs)", True), ("re-run (every node cached)", False)):
        walls, wall, used, cpus, seen = command_times(runs, cold=cold)
        print(f"| {label} | {min(walls):.2f} | {wall:.2f} | {min(cpus):.2f} | {used:.2f} | {'yes' if seen else 'no'} | < 3 s |")


if __name__ == "__main__":
    main()
