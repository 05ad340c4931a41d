"""On a CUDA machine: the engine equals diffusers' pipelines bit for bit *on the GPU*.

    python bench/gpu_check.py                 # cuda (the default device)
    python bench/gpu_check.py --device cuda:1
    python bench/gpu_check.py --device cpu -k "kontext or euler_a"   # a dry run of the script itself

Runs, with `pytest --device cuda`, the SD img2img and inpaint equivalence tests
(tests/nodes/test_diffusion_equivalence.py) and the flow families' equivalence tests
(tests/diffusion/test_flow_equivalence.py, test_qwen_edit_equivalence.py, and
test_flow_device_api.py, which goes through editgraph.run / the CLI with --device): the models sit
on the GPU, the pipelines are the same components on the same GPU, and both draw from a generator
on that device. Prints one row per comparison with its max abs diff (0.0 is what passes) and
pytest's summary; exits with pytest's status. Without CUDA it prints why and exits 0.

The tests are the CPU suite's own; only `--device` differs (tests/conftest.py). Tiny models, a
few minutes at most.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RUNS = [  # (what, test files, pytest -k selection or None)
    ("SD img2img / inpaint", ["tests/nodes/test_diffusion_equivalence.py"], "img2img or inpaint"),
    ("flow families", ["tests/diffusion/test_flow_equivalence.py", "tests/diffusion/test_qwen_edit_equivalence.py",
                       "tests/diffusion/test_flow_device_api.py"], None),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda or cuda:N (cpu: a dry run of this script, as the CPU suite does)")
    p.add_argument("-k", dest="keyword", default=None, help="only the tests pytest -k selects (within each run's own selection)")
    p.add_argument("--timeout", type=int, default=540, help="seconds for each pytest run")
    args = p.parse_args(argv)

    import torch

    if not args.device.startswith(("cuda", "cpu")):
        p.error(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    if args.device == "cpu":
        print("gpu_check: a dry run on the CPU (the checks the CPU suite makes anyway)")
    elif not torch.cuda.is_available():
        print(f"gpu_check: skipped: no CUDA device here (torch {torch.__version__}, torch.cuda.is_available() is False)")
        return 0
    else:
        index = torch.device(args.device).index or 0
        if index >= torch.cuda.device_count():
            print(f"gpu_check: skipped: {args.device} asked for, {torch.cuda.device_count()} CUDA device(s) here")
            return 0
        print(f"gpu_check on {args.device}: {torch.cuda.get_device_name(index)}; CUDA {torch.version.cuda}")
    import diffusers

    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, {torch.get_num_threads()} CPU threads")

    status = 0
    with tempfile.TemporaryDirectory(prefix="editgraph-gpu-check-") as tmp:
        log = Path(tmp) / "diffs.tsv"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        for what, tests, selection in RUNS:
            t0 = time.perf_counter()
            keyword = " and ".join(f"({k})" for k in (selection, args.keyword) if k)
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", args.device,
                   "--diff-log", str(log), *tests, *(["-k", keyword] if keyword else [])]
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
            summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
            print(f"\n{what}: {summary} ({time.perf_counter() - t0:.0f} s)")
            if proc.returncode:
                status = proc.returncode
                print("\n".join(line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR", "E "))))
        rows = [line.split("\t") for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []
    print("\n| comparison (engine vs pipeline, same device) | shape | max abs diff |\n|---|---|---|")
    for test, shape, diff in rows:
        print(f"| {test} | {shape} | {float(diff):.3g} |")
    worst = max((float(d) for _, _, d in rows), default=float("nan"))
    print(f"\n{len(rows)} comparisons, largest max abs diff {worst:.3g}; pytest status {status}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
