"""Single node vs MultiProc map-reduce as N grows: wall time and peak memory per process.

Usage::

    python benchmarks/bench_scaleout.py [--sizes 10 100 1000] [--chunk-size 100] [--repeats 3]

Generates N small uint8 masks (64 x 64 x 64, seeded) per size, then runs, each in a fresh
process and alternating: one ``HeatmapVolume`` node (Linear plugin), and
``init_scaled_heatmap_wf(chunk_size=...)`` under MultiProc with 2 workers. Reports median
wall time and the largest peak RSS of the parent process and of any worker process.
Both outputs are checked to be equal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHAPE = (64, 64, 64)

RUNNER = """
import json, resource, sys, time
from nipype.pipeline import engine as pe
from nipype_heatmap.interfaces import HeatmapVolume
from nipype_heatmap.workflows import init_scaled_heatmap_wf
mode, data, work, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
files = sorted(str(p) for p in __import__("pathlib").Path(data).glob("*.nii.gz"))
t = time.perf_counter()
if mode == "single":
    node = pe.Node(HeatmapVolume(in_files=files, use_mean=False), name="single", base_dir=work)
    out = node.run().outputs.out_file
else:
    wf = init_scaled_heatmap_wf(chunk_size=chunk, use_mean=False, name="scaled_wf")
    wf.base_dir = work
    wf.config["execution"]["poll_sleep_duration"] = 0.1
    wf.inputs.inputnode.in_files = files
    graph = wf.run(plugin="MultiProc", plugin_args={{"n_procs": 2}})
    out = [n for n in graph.nodes() if n.name == "merge_heatmaps"][0].result.outputs.out_file
elapsed = time.perf_counter() - t
print(json.dumps({{
    "seconds": elapsed,
    "parent_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "out": out,
}}))
"""


def make_masks(folder: Path, n: int) -> None:
    import nibabel as nb
    import numpy as np

    rng = np.random.default_rng(n)
    folder.mkdir(parents=True, exist_ok=True)
    grid = np.indices(SHAPE)
    for i in range(n):
        center = rng.uniform(16, 48, 3)
        radius = rng.uniform(4, 12)
        mask = sum((g - c) ** 2 for g, c in zip(grid, center, strict=True)) <= radius**2
        nb.Nifti1Image(mask.astype(np.uint8), np.eye(4)).to_filename(folder / f"m{i:05d}.nii.gz")


def main() -> int:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runner = RUNNER.format(root=str(ROOT))
    print(
        f"{SHAPE} uint8 masks, chunk_size={args.chunk_size}, MultiProc n_procs=2, "
        f"{os.cpu_count()} cores; median of {args.repeats}\n"
    )
    print(
        "| N | single node (s) | map-reduce (s) | single peak RSS (MiB) "
        "| map-reduce parent / worker peak RSS (MiB) | equal |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            data = Path(tmp) / f"n{n}"
            make_masks(data, n)
            results: dict[str, list[dict]] = {"single": [], "scaled": []}
            for rep in range(args.repeats):
                for mode in ("single", "scaled"):
                    work = Path(tmp) / f"work_{n}_{mode}_{rep}"
                    cmd = [
                        sys.executable,
                        "-c",
                        runner,
                        mode,
                        str(data),
                        str(work),
                        str(args.chunk_size),
                    ]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                    results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            import nibabel as nb
            import numpy as np

            equal = np.array_equal(
                nb.load(results["single"][0]["out"]).get_fdata(),
                nb.load(results["scaled"][0]["out"]).get_fdata(),
            )
            med = {m: statistics.median(r["seconds"] for r in v) for m, v in results.items()}
            print(
                f"| {n} | {med['single']:.2f} | {med['scaled']:.2f} "
                f"| {max(r['parent_mib'] for r in results['single']):.0f} "
                f"| {max(r['parent_mib'] for r in results['scaled']):.0f} / "
                f"{max(r['worker_mib'] for r in results['scaled']):.0f} | {equal} |"
            )
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
    sys.exit(code)
