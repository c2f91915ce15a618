"""Cohorts that grow: updating a saved state against recomputing from every file.

Usage::

    python benchmarks/bench_update.py [--n 1000] [--add 10] [--repeats 3] [--data DIR]

Makes ``n + add`` lesion masks on the 1 mm MNI grid of ``bench_heatmap.py`` (once, in
``DIR/masks_<n+add>``), saves the state of the first ``n`` with ``nipype-heatmap
--save-state``, then times, alternating, on the same files:

- **update**: ``nipype-heatmap --update STATE NEW/ -o maps.nii.gz --coverage --std
  --min-count 5`` (reads the state and the ``add`` new files, writes the state and every
  map), on a fresh copy of the state each time;
- **update + withdrawal**: the same, also removing ``add`` files of the state (each read
  again to check its hash);
- **recompute**: ``nipype-heatmap OLD/ NEW/ -o maps.nii.gz --coverage --std --min-count 5``;

as whole processes (with the interpreter's start-up, the same in each) and in-process
(the library calls alone, and, in the same rounds, reading and writing the state with
nothing added: the bound that the state's size puts on any update's speed-up). It checks
that the update's maps equal the recompute's, bit for bit, and prints medians, ratios and
each process's peak RSS, also for a state of n/10 inputs (memory flat in N).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
from bench_heatmap import BIN, ensure_bytecode, make_masks, run

FLAGS = ["--coverage", "--std", "--min-count", "5"]
MAPS = ("", "_coverage", "_std", "_variance", "_overlap", "_mincount5")


def prepare(root: Path, n: int, add: int) -> tuple[Path, Path]:
    """``old/`` (n masks) and ``new/`` (add masks), as links into one generated set."""
    pool = root / f"masks_{n + add}"
    if len(list(pool.glob("*.nii.gz"))) != n + add:
        print(f"generating {pool} ...", file=sys.stderr)
        make_masks(pool, n + add, seed=7)
    files = sorted(pool.glob("*.nii.gz"))
    work = root / f"update_{n}_{add}"
    shutil.rmtree(work, ignore_errors=True)
    for name, chunk in (("old", files[:n]), ("new", files[n:])):
        (work / name).mkdir(parents=True)
        for f in chunk:
            (work / name / f.name).symlink_to(f)
    return work / "old", work / "new"


def same_maps(a: Path, b: Path) -> bool:
    for suffix in MAPS:
        x = np.asanyarray(nb.load(f"{a}{suffix}.nii.gz").dataobj)
        y = np.asanyarray(nb.load(f"{b}{suffix}.nii.gz").dataobj)
        if x.dtype != y.dtype or x.tobytes() != y.tobytes():
            return False
    return Path(f"{a}_overlap.tsv").read_text() == Path(f"{b}_overlap.tsv").read_text()


def in_process(old: Path, new: Path, state: Path, out: Path, repeats: int) -> dict[str, float]:
    """Median seconds of the library calls alone (no interpreter start-up): the state
    update (read state, add, save state) against re-accumulating every file with the same
    statistics, writing the maps (the same work after either), and reading and writing
    the state with nothing added (the part of an update that does not depend on how
    many files it adds)."""
    from nipype_heatmap.cohort import write_maps
    from nipype_heatmap.core import accumulate_files
    from nipype_heatmap.io import find_nifti_files
    from nipype_heatmap.state import load_state, save_state, update_state

    old_files, new_files = find_nifti_files(old), find_nifti_files(new)
    options = {"coverage": True, "std": True, "min_count": 5}
    times: dict[str, list[float]] = {"update": [], "recompute": [], "maps": [], "state": []}
    for _ in range(repeats):
        copy = out / "state_copy.nii.gz"
        shutil.copyfile(state, copy)
        start = time.perf_counter()  # what any update that rewrites the state pays
        save_state(load_state(copy), copy)
        times["state"].append(time.perf_counter() - start)
        start = time.perf_counter()
        updated = update_state(copy, add=new_files, progress=False)
        times["update"].append(time.perf_counter() - start)
        start = time.perf_counter()
        recomputed = accumulate_files(old_files + new_files, overlap=True, spread=True)
        times["recompute"].append(time.perf_counter() - start)
        start = time.perf_counter()
        write_maps(recomputed, out / "lib_recompute.nii.gz", **options)
        times["maps"].append(time.perf_counter() - start)
    write_maps(updated, out / "lib_update.nii.gz", **options)
    assert same_maps(out / "lib_update", out / "lib_recompute"), "in-process maps differ"
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--add", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "nipype_heatmap_bench"
    )
    args = parser.parse_args()
    print(ensure_bytecode())
    exe = str(BIN / "nipype-heatmap")
    rows = []
    rss: dict[int, float] = {}
    for n in (args.n // 10, args.n):
        old, new = prepare(args.data, n, args.add)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            state = out / "state.nii.gz"
            start = time.perf_counter()
            run([exe, str(old), "-q", "-o", str(out / "v1.nii.gz"), "--save-state", str(state)])
            build = time.perf_counter() - start
            withdrawn = [str(p) for p in sorted(old.glob("*.nii.gz"))[: args.add]]
            cmds = {
                "update": [exe, "--update", "{state}", str(new), "-q", "-o", "{out}", *FLAGS],
                "update + withdrawal": [
                    exe,
                    "--update",
                    "{state}",
                    str(new),
                    "--remove",
                    *withdrawn,
                    "-q",
                    "-o",
                    "{out}",
                    *FLAGS,
                ],  # fmt: skip
                "recompute": [exe, str(old), str(new), "-q", "-o", "{out}", *FLAGS],
            }
            times: dict[str, list[float]] = {k: [] for k in cmds}
            peak: dict[str, float] = {}
            for _ in range(args.repeats):
                for label, cmd in cmds.items():
                    copy = out / "state_copy.nii.gz"
                    shutil.copyfile(state, copy)
                    target = out / f"{label.replace(' ', '_').replace('+', '')}.nii.gz"
                    filled = [c.format(state=copy, out=target) for c in cmd]
                    seconds, mib = run(filled)
                    times[label].append(seconds)
                    peak[label] = max(peak.get(label, 0.0), mib)
            assert same_maps(out / "update", out / "recompute"), "update != recompute"
            medians = {k: statistics.median(v) for k, v in times.items()}
            lib = in_process(old, new, state, out, args.repeats) if n == args.n else None
            size = state.stat().st_size / 2**20
            rows.append((n, build, size, medians, peak, lib))
            rss[n] = peak["update"]
    print(f"\n{args.add} new masks (1 mm MNI grid) into a state of N; maps: heatmap, "
          "coverage, std, variance, non-zero count, min-count 5 mask, overlap table\n"
    )  # fmt: skip
    print("| N | state (MiB) | update (s) | update + withdrawal (s) | recompute (s) "
          "| recompute / update | peak RSS update / recompute (MiB) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, _, size, med, peak, _ in rows:
        print(
            f"| {n} | {size:.1f} | {med['update']:.3f} | {med['update + withdrawal']:.3f} | "
            f"{med['recompute']:.3f} | {med['recompute'] / med['update']:.1f}x | "
            f"{peak['update']:.0f} / {peak['recompute']:.0f} |"
        )
    for n, build, _, _, _, lib in rows:
        if lib:
            print(
                f"\nin-process, N={n}: adding {args.add} files to the state (read it, add, "
                f"save it) {lib['update']:.3f} s; re-accumulating all {n + args.add} files "
                f"{lib['recompute']:.3f} s: {lib['recompute'] / lib['update']:.0f}x faster. "
                f"Writing the maps, the same after either: {lib['maps']:.3f} s. Saving the "
                f"first state (reading the {n} files) took {build:.2f} s as a process.\n"
                f"Reading and writing the state alone (nothing added): {lib['state']:.3f} s, "
                f"so no update that rewrites this state can be more than "
                f"{lib['recompute'] / lib['state']:.0f}x faster than this recompute here; "
                f"per input file the recompute took {lib['recompute'] / (n + args.add) * 1e3:.2f}"
                f" ms, so the state costs as much as reading "
                f"{lib['state'] / (lib['recompute'] / (n + args.add)):.0f} of them."
            )
    print("maps of every update equal the recompute's, bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
