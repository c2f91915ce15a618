"""Label atlases: ``nipype-heatmap-atlas`` against the heatmap and the common recipes.

Usage::

    python benchmarks/bench_atlas.py [--n 100] [--labels 100] [--repeats 3] [--data DIR]

Makes ``n`` aseg-like label images on the 1 mm MNI grid (once, in ``DIR/labels_<n>``):
``labels`` compact regions (a Voronoi parcellation of a brain-shaped ellipsoid), each
subject's map shifted by up to 3 voxels, stored int16 as FreeSurfer/SynthSeg outputs are.
Then times, as whole processes in alternating order:

- ``nipype-heatmap`` on the same files (the reference the target is stated against);
- ``nipype-heatmap-atlas`` (dense 4D, max-probability maps at 0/25/50 %, table) and
  ``nipype-heatmap-atlas --sparse`` (the sparse form instead of the dense 4D);

and, in this process, the two common recipes written in numpy, on a subset of the labels
(``--recipe-labels``), extrapolated linearly to every label: **per-label passes** (for each
label, read every file and add ``data == label``) and the **FSL-style** recipe (load the
whole 4D stack, then the mean of ``stack == label`` per label). It checks that the
atlas's maps equal the recipes' on that subset, prints medians, ratios, peak RSS (also for
``n/5`` inputs: flat in N) and the dense and sparse file sizes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
from bench_heatmap import AFFINE, BIN, SHAPE, _ellipsoid, ensure_bytecode, run


def make_labels(folder: Path, n: int, n_labels: int, seed: int = 3) -> None:
    """``n`` aseg-like label images: one Voronoi parcellation, shifted per subject."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    brain = _ellipsoid(SHAPE)
    inside = np.argwhere(brain)
    seeds = inside[rng.choice(len(inside), n_labels, replace=False)].astype(np.float32)
    base = np.zeros(SHAPE, np.int16)
    best = np.full(len(inside), np.inf, np.float32)
    owner = np.zeros(len(inside), np.int16)
    for label, point in enumerate(seeds, start=1):
        dist = ((inside - point) ** 2).sum(axis=1, dtype=np.float32)
        closer = dist < best
        best[closer], owner[closer] = dist[closer], label
    base[tuple(inside.T)] = owner
    for i in range(n):
        shift = rng.integers(-3, 4, 3)
        img = np.roll(base, tuple(shift), axis=(0, 1, 2)) * brain
        nb.Nifti1Image(img.astype(np.int16), AFFINE).to_filename(
            folder / f"sub-{i:03d}_dseg.nii.gz"
        )


def ensure_labels(root: Path, n: int, n_labels: int) -> Path:
    folder = root / f"labels_{n}_{n_labels}"
    if len(list(folder.glob("*.nii.gz"))) != n:
        print(f"generating {folder} ...", file=sys.stderr)
        make_labels(folder, n, n_labels)
    return folder


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--recipe-labels", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "nipype_heatmap_bench"
    )
    args = parser.parse_args()
    print(ensure_bytecode())
    data = ensure_labels(args.data, args.n, args.labels)
    small = ensure_labels(args.data, max(2, args.n // 5), args.labels)
    files = sorted(data.glob("*.nii.gz"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        heatmap, atlas = str(BIN / "nipype-heatmap"), str(BIN / "nipype-heatmap-atlas")
        cmds = {
            "nipype-heatmap": [heatmap, str(data), "-q", "-o", str(out / "h.nii.gz")],
            "atlas (dense 4D)": [atlas, str(data), "-q", "-o", str(out / "dense")],
            "atlas --sparse": [atlas, str(data), "-q", "-o", str(out / "sparse"), "--sparse"],
        }
        times: dict[str, list[float]] = {k: [] for k in cmds}
        peak: dict[str, float] = {}
        for _ in range(args.repeats):
            for label, cmd in cmds.items():
                seconds, mib = run(cmd)
                times[label].append(seconds)
                peak[label] = max(peak.get(label, 0.0), mib)
        _, small_peak = run(
            [str(BIN / "nipype-heatmap-atlas"), str(small), "-q", "-o", str(out / "s")]
        )
        med = {k: statistics.median(v) for k, v in times.items()}

        from nipype_heatmap.atlas import load_atlas

        atlas = load_atlas(out / "sparse" / "atlas-heatmap_desc-sparse_probseg.nii.gz")
        subset = atlas.label_list[: args.recipe_labels]
        recipe_times = {}
        for name, recipe in (
            ("per-label passes", per_label_passes),
            ("FSL-style 4D stack", fsl_style),
        ):
            start = time.perf_counter()
            maps = recipe(files, subset)
            recipe_times[name] = (
                (time.perf_counter() - start) * len(atlas.label_list) / len(subset)
            )
            for label in subset:
                assert np.array_equal(maps[label], atlas.probability_of(label)), (name, label)
        dense_mib = os.path.getsize(out / "dense" / "atlas-heatmap_probseg.nii.gz") / 2**20
        sparse_mib = (
            os.path.getsize(out / "sparse" / "atlas-heatmap_desc-sparse_probseg.nii.gz") / 2**20
        )

    base = med["nipype-heatmap"]
    n_labels = len(atlas.label_list)
    print(
        f"\n{args.n} aseg-like label images ({n_labels} labels, 1 mm MNI grid, int16), "
        f"{args.repeats} alternating runs, medians; recipes timed on {len(subset)} labels "
        f"and scaled to {n_labels}\n"
    )
    print("| run | time (s) | / nipype-heatmap | peak RSS (MiB) |")
    print("| --- | --- | --- | --- |")
    for label, seconds in med.items():
        print(f"| `{label}` | {seconds:.2f} | {seconds / base:.2f}x | {peak[label]:.0f} |")
    for name, seconds in recipe_times.items():
        ratio = seconds / med["atlas (dense 4D)"]
        row = f"| {name} (numpy) | {seconds:.1f} | {seconds / base:.1f}x"
        print(f"{row} (the atlas is {ratio:.0f}x faster) | - |")
    raw_mib = float(np.prod(SHAPE)) * n_labels * 4 / 2**20
    print(
        f"\npeak RSS of the atlas: {small_peak:.0f} MiB for {max(2, args.n // 5)} inputs, "
        f"{peak['atlas (dense 4D)']:.0f} MiB for {args.n}. Files: dense 4D {dense_mib:.1f} MiB "
        f"gzipped ({raw_mib:.0f} MiB as .nii), sparse {sparse_mib:.1f} MiB gzipped: "
        f"{dense_mib / sparse_mib:.1f}x smaller than the gzipped dense 4D, "
        f"{raw_mib / sparse_mib:.0f}x smaller than the dense 4D as .nii. The recipes' maps "
        "equal the atlas's, bit for bit."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
