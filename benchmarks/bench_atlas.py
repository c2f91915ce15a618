"""Label atlases: ``nipype-heatmap-atlas`` against the heatmap and the common recipes.

Usage::

    python benchmarks/bench_atlas.py [--n 100] [--labels 100] [--recipe-labels 5]
        [--repeats 3] [--data DIR] [--quick]

Makes ``n`` aseg-like label images on the 1 mm MNI grid (once, in
``DIR/labels_<n>_<labels>``): ``labels`` compact regions (a Voronoi parcellation of a
brain-shaped ellipsoid), each subject's map shifted by up to 3 voxels, stored int16 as
FreeSurfer/SynthSeg outputs are. Then times, as whole processes in alternating rounds:

- ``nipype-heatmap`` on the same files (the reference the target is stated against);
- ``nipype-heatmap-atlas`` (dense 4D, max-probability maps at 0/25/50 %, table) and
  ``nipype-heatmap-atlas --sparse`` (the sparse form instead of the dense 4D);

and, in this process, the two common recipes written in numpy, on a subset of the labels
(``--recipe-labels``), extrapolated linearly to every label: **per-label passes** (for each
label, read every file and add ``data == label``) and the **FSL-style** recipe (load the
whole 4D stack, then the mean of ``stack == label`` per label). Checks that the atlas's
maps (read back with :func:`nipype_heatmap.atlas.load_atlas`) equal the recipes' on that
subset, prints medians, ratios, peak RSS (also for ``n/5`` inputs: flat in N) and the
dense and sparse file sizes. Writes ``results/atlas.json``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
from _common import (
    BIN,
    SHAPE,
    alternate,
    common_parser,
    contestants_json,
    ensure_bytecode,
    ensure_folder,
    run,
    table,
    write_results,
)

DENSE = "atlas-heatmap_probseg.nii.gz"
SPARSE = "atlas-heatmap_desc-sparse_probseg.nii.gz"


def ensure_labels(root: Path, n: int, n_labels: int) -> Path:
    return ensure_folder(root / f"labels_{n}_{n_labels}", "labels", n, n_labels=n_labels)


def per_label_passes(files: list[Path], labels: list[int]) -> dict[int, np.ndarray]:
    """The common recipe: one pass over every file per label."""
    out = {}
    for label in labels:
        counts = np.zeros(SHAPE, np.uint32)
        for path in files:
            counts += np.asanyarray(nb.load(path).dataobj) == label
        out[label] = (counts / len(files)).astype(np.float32)
    return out


def fsl_style(files: list[Path], labels: list[int]) -> dict[int, np.ndarray]:
    """FSL's recipe in numpy: the whole 4D stack first, then a mean per label."""
    stack = np.stack([np.asanyarray(nb.load(path).dataobj) for path in files])
    return {
        label: (stack == label).mean(axis=0, dtype=np.float64).astype(np.float32)
        for label in labels
    }


def main() -> int:
    parser = common_parser(__doc__.split("\n")[0], repeats=3)
    parser.add_argument("--n", type=int, default=100, help="label images")
    parser.add_argument("--labels", type=int, default=100, help="labels in each image")
    parser.add_argument(
        "--recipe-labels", type=int, default=5, help="labels the numpy recipes are timed on"
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.labels, args.recipe_labels = 5, 10, 2
    print(ensure_bytecode())
    data = ensure_labels(args.data, args.n, args.labels)
    n_small = max(2, args.n // 5)
    small = ensure_labels(args.data, n_small, args.labels)
    files = sorted(data.glob("*.nii.gz"))
    heatmap, atlas_exe = str(BIN / "nipype-heatmap"), str(BIN / "nipype-heatmap-atlas")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cmds = {
            "nipype-heatmap": [heatmap, str(data), "-q", "-o", str(out / "h.nii.gz")],
            "atlas (dense 4D)": [atlas_exe, str(data), "-q", "-o", str(out / "dense")],
            "atlas --sparse": [atlas_exe, str(data), "-q", "-o", str(out / "sparse"), "--sparse"],
        }
        medians, peak, times = alternate(cmds, args.repeats)
        _, small_peak = run([atlas_exe, str(small), "-q", "-o", str(out / "s")])

        from nipype_heatmap.atlas import load_atlas

        atlas = load_atlas(out / "sparse" / SPARSE)
        subset = atlas.label_list[: args.recipe_labels]
        recipe_times, recipes_equal = {}, True
        for name, recipe in (
            ("per-label passes", per_label_passes),
            ("FSL-style 4D stack", fsl_style),
        ):
            start = time.perf_counter()
            maps = recipe(files, subset)
            recipe_times[name] = (
                (time.perf_counter() - start) * len(atlas.label_list) / len(subset)
            )
            recipes_equal &= all(
                np.array_equal(maps[label], atlas.probability_of(label)) for label in subset
            )
        dense_mib = os.path.getsize(out / "dense" / DENSE) / 2**20
        sparse_mib = os.path.getsize(out / "sparse" / SPARSE) / 2**20

    base = medians["nipype-heatmap"]
    n_labels = len(atlas.label_list)
    print(
        f"\n{args.n} aseg-like label images ({n_labels} labels, 1 mm MNI grid, int16), "
        f"medians of {args.repeats} alternating rounds; recipes timed on {len(subset)} "
        f"labels and scaled to {n_labels}\n"
    )
    rows = [
        (f"`{label}`", f"{seconds:.2f}", f"{seconds / base:.2f}x", f"{peak[label]:.0f}")
        for label, seconds in medians.items()
    ]
    for name, seconds in recipe_times.items():
        ratio = seconds / medians["atlas (dense 4D)"]
        rows.append(
            (
                f"{name} (numpy, in-process)",
                f"{seconds:.1f}",
                f"{seconds / base:.1f}x (the atlas is {ratio:.1f}x faster)",
                "-",
            )
        )
    print(table(rows, ("run", "time (s)", "/ nipype-heatmap", "peak RSS (MiB)")))
    raw_mib = float(np.prod(SHAPE)) * n_labels * 4 / 2**20
    print(
        f"\npeak RSS of the atlas: {small_peak:.0f} MiB for {n_small} inputs, "
        f"{peak['atlas (dense 4D)']:.0f} MiB for {args.n}. Files: dense 4D {dense_mib:.1f} MiB "
        f"gzipped ({raw_mib:.0f} MiB as .nii), sparse {sparse_mib:.1f} MiB gzipped: "
        f"{dense_mib / sparse_mib:.1f}x smaller than the gzipped dense 4D, "
        f"{raw_mib / sparse_mib:.0f}x smaller than the dense 4D as .nii. The recipes' maps "
        + ("equal the atlas's, bit for bit." if recipes_equal else "DIFFER from the atlas's.")
    )
    write_results(
        "atlas",
        {
            "settings": {
                "repeats": args.repeats,
                "n": args.n,
                "labels": n_labels,
                "recipe_labels": len(subset),
            },
            "contestants": contestants_json(cmds, medians, peak, times),
            "recipes_s": {k: round(v, 2) for k, v in recipe_times.items()},
            "atlas_peak_rss_mib": {
                str(n_small): round(small_peak, 1),
                str(args.n): round(peak["atlas (dense 4D)"], 1),
            },
            "file_mib": {
                "dense": round(dense_mib, 2),
                "sparse": round(sparse_mib, 2),
                "dense_nii": round(raw_mib, 1),
            },
            "checks": [{"check": "recipes = atlas, bit for bit", "holds": recipes_equal}],
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
