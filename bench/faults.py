"""Page faults a run takes, with glibc's malloc as a process starts and as editgraph tunes it
(editgraph/allocator.py, EDITGRAPH_ALLOCATOR): issue 16.

Each setting runs in its own process (malloc's thresholds are per process). Rows:
  - the 500-node 64 px graph of bench/engine.py, cold, memory tier only: alone, and with a disk
    tier open beside it that the run never uses (its SQLite connections change the heap's layout);
  - 10 grades of a 4096 px photo with --no-cache: arrays past 32 MiB, which glibc mmaps whatever
    the setting.
Faults and CPU seconds are the main thread's (getrusage RUSAGE_THREAD), median of the rounds.

    python bench/faults.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = """
import json, resource, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {repo!r})
import torch
torch.set_num_threads(2)
import bench.engine as b
from editgraph.executor.store import DiskStore

def measure(kind, doc, root):
    side = DiskStore(root / "side", 1 << 40) if kind == "beside" else None
    ex = b._tiers("none" if kind == "grades" else "memory", root)
    r0, c0 = resource.getrusage(resource.RUSAGE_THREAD), time.thread_time()
    b.run_all_in(ex, doc)
    c1, r1 = time.thread_time(), resource.getrusage(resource.RUSAGE_THREAD)
    if side is not None:
        side.close()
    return r1.ru_minflt - r0.ru_minflt, c1 - c0, r1.ru_stime - r0.ru_stime

out = {{}}
with tempfile.TemporaryDirectory() as tmp:
    for kind, doc, rounds in (("alone", b.wide_graph(), 24), ("beside", b.wide_graph(), 24), ("grades", b.grade_chain(), 2)):
        runs = [measure(kind, doc, Path(tmp) / f"{{kind}}{{i}}") for i in range(rounds + 1)][1:]  # the first warms up
        out[kind] = [statistics.median(x) for x in zip(*runs)]
print(json.dumps(out))
"""


def measure(mode: str) -> dict:
    env = os.environ | {"EDITGRAPH_ALLOCATOR": mode, "OPENBLAS_NUM_THREADS": "1"}
    code = _CHILD.format(repo=str(REPO))
    return json.loads(subprocess.check_output([sys.executable, "-c", code], text=True, cwd=REPO, env=env))


def main() -> None:
    results = {mode: measure(mode) for mode in ("system", "tuned")}
    print("### Page faults of a run's main thread (issue 16), median\n")
    print("| run | malloc | faults | CPU | of it in the kernel |")
    print("|---|---|---|---|---|")
    rows = (("alone", "500 nodes of 64 px, cold, memory tier only"),
            ("beside", "same, a disk tier open beside it, unused"),
            ("grades", "10 grades of a 4096 px photo, --no-cache"))
    for kind, label in rows:
        for mode in ("system", "tuned"):
            faults, cpu, sys_s = results[mode][kind]
            print(f"| {label} | {mode} | {faults:,.0f} | {cpu * 1e3:.1f} ms | {sys_s * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
