"""Single node against MultiProc map-reduce as N grows: wall time and peak memory per process.

Usage::

    python benchmarks/bench_scaleout.py [--sizes 10 100 1000] [--chunk-size 100]
        [--repeats 3] [--data DIR] [--quick]

Generates N small uint8 masks (64 x 64 x 64, seeded) per size, then runs, each in a fresh
process and in alternating order: one ``HeatmapVolume`` node (Linear plugin), and
``init_scaled_heatmap_wf(chunk_size=...)`` (a ``HeatmapState`` MapNode over the chunks,
then ``MergeHeatmaps``) under MultiProc with 2 workers. Reports the median wall time of the
run itself (measured in the process, after its imports) and the largest peak RSS of the
parent process and of any worker process, and checks that both maps are equal. Writes
``results/scaleout.json``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
from _common import PY, common_parser, compare, neutral_cwd, table, write_results

SHAPE = (64, 64, 64)

RUNNER = """
import json, resource, sys, time
from pathlib import Path
from nipype.pipeline import engine as pe
from nipype_heatmap.interfaces import HeatmapVolume
from nipype_heatmap.workflows import init_scaled_heatmap_wf
mode, data, work, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
files = sorted(str(p) for p in Path(data).glob("*.nii.gz"))
start = time.perf_counter()
if mode == "single node":
    node = pe.Node(HeatmapVolume(in_files=files, use_mean=False), name="single", base_dir=work)
    out = node.run().outputs.out_file
else:
    wf = init_scaled_heatmap_wf(chunk_size=chunk, use_mean=False, name="scaled_wf")
    wf.base_dir = work
    wf.config["execution"]["poll_sleep_duration"] = 0.1
    wf.inputs.inputnode.in_files = files
    graph = wf.run(plugin="MultiProc", plugin_args={"n_procs": 2})
    out = [n for n in graph.nodes() if n.name == "merge_heatmaps"][0].result.outputs.out_file
elapsed = time.perf_counter() - start
print(json.dumps({
    "seconds": elapsed,
    "parent_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "out": out,
}))
"""
MODES = ("single node", "map-reduce")


def make_masks(folder: Path, n: int) -> None:
    rng = np.random.default_rng(n)
    folder.mkdir(parents=True, exist_ok=True)
    grid = np.indices(SHAPE)
    for i in range(n):
        center = rng.uniform(16, 48, 3)
        radius = rng.uniform(4, 12)
        mask = sum((g - c) ** 2 for g, c in zip(grid, center, strict=True)) <= radius**2
        nb.Nifti1Image(mask.astype(np.uint8), np.eye(4)).to_filename(folder / f"m{i:05d}.nii.gz")


def run_mode(mode: str, data: Path, work: Path, chunk_size: int) -> dict:
    cmd = [PY, "-c", RUNNER, mode, str(data), str(work), str(chunk_size)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=neutral_cwd())
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = common_parser(__doc__.split("\n")[0], repeats=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--chunk-size", type=int, default=100)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.chunk_size = [4], 2
    print(
        f"{SHAPE} uint8 masks, chunk_size={args.chunk_size}, MultiProc n_procs=2; "
        f"medians of {args.repeats} alternating rounds\n"
    )
    rows, sizes = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            data = args.data / f"scaleout_{n}"
            if len(list(data.glob("*.nii.gz"))) != n:
                make_masks(data, n)
            runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
            for rep in range(args.repeats):
                order = MODES if rep % 2 == 0 else MODES[::-1]
                for mode in order:
                    work = Path(tmp) / f"work_{n}_{mode.replace(' ', '_')}_{rep}"
                    runs[mode].append(run_mode(mode, data, work, args.chunk_size))
            equal = compare([(runs["single node"][0]["out"], runs["map-reduce"][0]["out"])])[0]
            med = {m: statistics.median(r["seconds"] for r in v) for m, v in runs.items()}
            parent = {m: max(r["parent_mib"] for r in v) for m, v in runs.items()}
            worker = max(r["worker_mib"] for r in runs["map-reduce"])
            rows.append(
                (
                    n,
                    f"{med['single node']:.2f}",
                    f"{med['map-reduce']:.2f}",
                    f"{parent['single node']:.0f}",
                    f"{parent['map-reduce']:.0f} / {worker:.0f}",
                    "bit for bit" if equal["identical"] else "DIFFERENT",
                )
            )
            sizes[str(n)] = {
                "median_s": {m: round(v, 3) for m, v in med.items()},
                "times_s": {m: [round(r["seconds"], 3) for r in v] for m, v in runs.items()},
                "parent_peak_rss_mib": {m: round(v, 1) for m, v in parent.items()},
                "worker_peak_rss_mib": round(worker, 1),
                "equal": equal["identical"],
            }
    header = (
        "N",
        "single node (s)",
        "map-reduce (s)",
        "single peak RSS (MiB)",
        "map-reduce parent / worker peak RSS (MiB)",
        "maps",
    )
    print(table(rows, header))
    write_results(
        "scaleout",
        {
            "settings": {
                "repeats": args.repeats,
                "chunk_size": args.chunk_size,
                "shape": SHAPE,
                "n_procs": 2,
            },
            "sizes": sizes,
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
