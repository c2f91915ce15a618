"""The BIDS index: the first call on a large dataset, and the later ones with a database.

Usage::

    python benchmarks/bench_bids_index.py [--subjects 120] [--repeats 3] [--data DIR]
                                          [--reference]

Makes (once, in ``DIR/fmriprep_<subjects>``, default ``DIR`` a folder in the system's
temporary folder) an fMRIPrep-like derivatives dataset of ``subjects`` subjects, a third of
them with two sessions: per subject and session, anatomical outputs in T1w and
MNI152NLin2009cAsym res-1/res-2 space (brain masks, GM/WM/CSF probsegs, dseg, T1w), two BOLD
runs (preprocessed series, boldref, brain masks, confounds), transforms, JSON sidecars and
figures: about 77 files per subject and session (9,240 files for 120 subjects). Volumes are
tiny (the index reads names, not voxels).

Then times, as the command does it, ``select_bids_maps(label=["GM", "WM", "CSF"], ...)``:

- **first call**: no index yet (a fresh database folder each time): pybids indexes the
  dataset;
- **second call**: the same database folder (``--bids-database-dir``): the index is reused
  after checking that no folder of the dataset changed.

With ``--reference``, also once: pybids' own default indexing of the dataset (every file,
with its JSON metadata), what ``nipype-heatmap-bids`` did per call before (19.7 s on 9,247
files / 120 subjects in the report of issue 27). Prints medians and writes
``benchmarks/results/bids_index.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
from _common import write_results

SPACE = "MNI152NLin2009cAsym"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=120, help="subjects (default: 120)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each kind")
    parser.add_argument("--data", type=Path, help="where to keep the generated dataset")
    parser.add_argument(
        "--reference", action="store_true", help="also time pybids' default indexing once"
    )
    return parser


def make_dataset(root: Path, subjects: int) -> int:
    """The dataset of the module doc; returns its number of files."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "fMRIPrep", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fMRIPrep", "Version": "25.0.0"}],
    }))  # fmt: skip
    tiny = root / ".tiny.nii.gz"
    nb.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)).to_filename(tiny)
    content = tiny.read_bytes()
    tiny.unlink()
    count = 1
    for n in range(1, subjects + 1):
        sub = f"sub-{n:03d}"
        sessions = ["pre", "post"] if n % 3 == 0 else [None]
        for ses in sessions:
            base = root / sub / (f"ses-{ses}" if ses else "")
            prefix = f"{sub}_ses-{ses}" if ses else sub
            names = {"anat": [], "func": [], "figures": []}
            for space in ("", f"_space-{SPACE}_res-1", f"_space-{SPACE}_res-2"):
                names["anat"] += [f"{prefix}{space}_desc-brain_mask", f"{prefix}{space}_dseg",
                                  f"{prefix}{space}_desc-preproc_T1w"]  # fmt: skip
                names["anat"] += [
                    f"{prefix}{space}_label-{t}_probseg" for t in ("GM", "WM", "CSF")
                ]
            for run in (1, 2):
                for space in ("_space-T1w", f"_space-{SPACE}_res-2"):
                    r = f"{prefix}_task-rest_run-{run}{space}"
                    names["func"] += [
                        f"{r}_desc-preproc_bold",
                        f"{r}_boldref",
                        f"{r}_desc-brain_mask",
                    ]
            for folder, stems in names.items():
                (base / folder).mkdir(parents=True, exist_ok=True)
                for stem in stems:
                    (base / folder / f"{stem}.nii.gz").write_bytes(content)
                    (base / folder / f"{stem}.json").write_text('{"SkullStripped": false}')
                    count += 2
            for run in (1, 2):
                r = base / "func" / f"{prefix}_task-rest_run-{run}_desc-confounds_timeseries"
                r.with_suffix(".tsv").write_text("a\tb\n1\t2\n")
                count += 1
            for extra in ("from-T1w_to-MNI_mode-image_xfm.h5", "desc-summary_T1w.html"):
                (base / "anat" / f"{prefix}_{extra}").write_text("x")
                count += 1
    return count


def first_and_second(dataset: Path, repeats: int, scratch: Path) -> dict[str, list[float]]:
    from nipype_heatmap.bids import select_bids_maps

    query = {"suffix": "probseg", "label": ["GM", "WM", "CSF"], "space": SPACE, "res": "2",
             "several_per_subject": "average"}  # fmt: skip
    times: dict[str, list[float]] = {"first call": [], "second call": []}
    shared = scratch / "db_shared"
    select_bids_maps(dataset, bids_database_dir=shared, **query)  # the shared index, built
    for i in range(repeats):
        fresh = scratch / f"db_{i}"
        start = time.perf_counter()
        selections = select_bids_maps(dataset, bids_database_dir=fresh, **query)
        times["first call"].append(time.perf_counter() - start)
        start = time.perf_counter()
        again = select_bids_maps(dataset, bids_database_dir=shared, **query)
        times["second call"].append(time.perf_counter() - start)
        assert [s.files for s in again] == [s.files for s in selections]
        shutil.rmtree(fresh)
    return times


def reference(dataset: Path) -> float:
    """pybids' default: every file indexed, with its metadata."""
    from bids import BIDSLayout

    start = time.perf_counter()
    BIDSLayout(dataset, validate=False, is_derivative=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    data = args.data or Path(tempfile.gettempdir()) / "nipype_heatmap_bench_bids"
    dataset = data / f"fmriprep_{args.subjects}"
    if not (dataset / "dataset_description.json").exists():
        shutil.rmtree(dataset, ignore_errors=True)
        print(f"generating {dataset} ...", file=sys.stderr)
        n_files = make_dataset(dataset, args.subjects)
    else:
        n_files = sum(1 for p in dataset.rglob("*") if p.is_file())
    print(f"{dataset}: {n_files} files, {args.subjects} subjects")
    with tempfile.TemporaryDirectory(dir=data) as scratch:
        times = first_and_second(dataset, args.repeats, Path(scratch))
    for kind, values in times.items():
        print(f"{kind:12s} median {statistics.median(values):7.3f} s  "
              f"({', '.join(f'{v:.3f}' for v in values)})")  # fmt: skip
    ratio = statistics.median(times["first call"]) / statistics.median(times["second call"])
    print(f"second call {ratio:.0f}x faster than the first")
    medians = {kind: round(statistics.median(values), 4) for kind, values in times.items()}
    if args.reference:
        medians["pybids' default indexing (once)"] = round(reference(dataset), 4)
        print(f"pybids' default indexing (once): {medians[list(medians)[-1]]:.3f} s")
    write_results(
        "bids_index",
        {
            "settings": {"repeats": args.repeats, "subjects": args.subjects, "files": n_files},
            "median_s": medians,
            "times_s": {kind: [round(t, 4) for t in values] for kind, values in times.items()},
            "ratios": {"first call / second call": round(ratio, 1)},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
