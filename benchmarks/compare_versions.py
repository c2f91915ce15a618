"""Every map of this version against another install's, voxel by voxel.

Usage::

    python benchmarks/compare_versions.py --before PYTHON [--data DIR] [--quick]

Runs this install's commands and those of another install (``--before PYTHON``: ``PYTHON
-m nipype_heatmap.cli``, and its atlas command) on the benchmark data of ``_common.py``:

- ``nipype-heatmap`` on the 100 masks and the 30 probability maps, as the plain mean,
  ``--sum``, ``--sum --no-clip``, ``--normalize``, and ``--coverage --std --min-count 5``
  (mean, coverage, std, variance, non-zero count, minimum-overlap mask, overlap table);
- ``nipype-heatmap-atlas`` on the 100 label images (4D probabilities, maximum-probability
  maps, label table and sidecars);

then compares every file that both wrote: NIfTI voxel by voxel (bit for bit, or the
voxels that differ, the largest absolute difference and, for float32, in ulps), others
byte by byte. Known and expected: the std and variance of float inputs may differ at
round-off (a paired Welford step was removed); everything else should be bit for bit.
Prints a table and writes ``results/compare.json``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import (
    BIN,
    PY,
    add_before_option,
    atlas_command,
    common_parser,
    compare,
    describe_difference,
    describe_install,
    ensure_data,
    heatmap_command,
    run,
    table,
    write_results,
)

#: Heatmap runs: name -> flags.
RUNS = {
    "mean": [],
    "sum": ["--sum"],
    "sum-no-clip": ["--sum", "--no-clip"],
    "normalize": ["--normalize"],
    "cohort": ["--coverage", "--std", "--min-count", "5"],
}


def expected_difference(data_set: str, name: str) -> bool:
    """Whether a difference in this file is the known one (std/variance of float maps)."""
    return data_set == "probs" and ("_std." in name or "_variance." in name)


def outputs(folder: Path) -> dict[str, Path]:
    """Every file a run wrote (atlas sidecars and tables included), by name."""
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}


def run_both(root: Path, jobs: dict[str, tuple[list[str], list[str]]]) -> None:
    """Run each job's two commands (this, before)."""
    for label, (this, before) in jobs.items():
        print(f"running {label} ...", file=sys.stderr)
        run(this)
        run(before)


def main() -> int:
    parser = common_parser(__doc__.split("\n")[0], repeats=1)
    add_before_option(parser, required=True)
    args = parser.parse_args()
    data = ensure_data(args.data, ["masks", "probs", "labels"], args.quick)
    before = describe_install(args.before)
    print(f"before: {before}")
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jobs, folders = {}, {}
        for data_set in ("masks", "probs"):
            for name, flags in RUNS.items():
                key = f"{data_set} {name}"
                this, other = root / "this" / key, root / "before" / key
                this.mkdir(parents=True)
                other.mkdir(parents=True)
                out = f"{data_set}.nii.gz"
                jobs[key] = (
                    [str(BIN / "nipype-heatmap"), str(data[data_set]), "-q", *flags],
                    heatmap_command(args.before, data[data_set], "-q", *flags),
                )
                jobs[key][0].extend(["-o", str(this / out)])
                jobs[key][1].extend(["-o", str(other / out)])
                folders[key] = (this, other)
        this, other = root / "this" / "atlas", root / "before" / "atlas"
        jobs["labels atlas"] = (
            atlas_command(PY, data["labels"], "-q", "-o", this),
            atlas_command(args.before, data["labels"], "-q", "-o", other),
        )
        folders["labels atlas"] = (this, other)
        run_both(root, jobs)

        for key, (this, other) in folders.items():
            mine, theirs = outputs(this), outputs(other)
            both = [name for name in mine if name in theirs]
            found = compare([(mine[name], theirs[name]) for name in both])
            results[key] = {name: result for name, result in zip(both, found, strict=True)}
            for name in sorted(set(mine) - set(theirs)):
                results[key][name] = {"identical": False, "note": "written by this version only"}
            for name in sorted(set(theirs) - set(mine)):
                results[key][name] = {"identical": False, "note": "written before only"}

    rows, unexpected = [], []
    for key, files in results.items():
        data_set = key.split()[0]
        for name, result in files.items():
            result["expected_difference"] = expected_difference(data_set, name)
            if not result["identical"] and not result["expected_difference"]:
                unexpected.append(f"{key}: {name}")
            known = result["expected_difference"] and not result["identical"]
            note = " (known: paired Welford step removed)" if known else ""
            rows.append((key, name, describe_difference(result) + note))
    print(f"\nthis version against {before['version']} ({before['commit']}), voxel by voxel\n")
    print(table(rows, ("run", "file", "comparison")))
    print(
        "\nevery other file bit for bit"
        if not unexpected
        else f"\nUNEXPECTED differences in {len(unexpected)} file(s): " + "; ".join(unexpected)
    )
    write_results(
        "compare",
        {
            "before": before,
            "runs": {k: " ".join(v) for k, v in RUNS.items()},
            "results": results,
            "unexpected": unexpected,
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
