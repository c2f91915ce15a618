"""What the cohort maps cost: the command with and without them, on the same files.

Usage::

    python benchmarks/bench_cohort.py [--repeats 5] [--data DIR] [--quick] [--before PYTHON]

On the two data sets of ``_common.py`` (100 lesion masks, 30 probability maps), times as
whole processes in alternating rounds ``nipype-heatmap DATA -o OUT -q`` for the plain mean
and with ``--coverage --std --min-count 2`` (the mean, coverage, std, variance, non-zero
count, minimum-overlap mask and table, from one pass), and, with ``--before PYTHON``,
the same two runs of another install (``PYTHON -m nipype_heatmap.cli``) in the same
rounds. Prints medians, the ratio cohort / plain, and the target of issue 26 (each run
within 10 % of before's: this <= 1.10 x before). Writes ``results/cohort.json``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import (
    BIN,
    add_before_option,
    alternate,
    common_parser,
    contestants_json,
    describe_install,
    ensure_bytecode,
    ensure_data,
    heatmap_command,
    nifti_files,
    paired,
    print_targets,
    table,
    target,
    write_results,
)

COHORT = ["--coverage", "--std", "--min-count", "2"]


def commands(data: Path, out: Path, before: str | None) -> dict[str, list[str]]:
    """Plain and cohort runs of this install (and of ``before``)."""
    this = [str(BIN / "nipype-heatmap"), str(data), "-q", "-o"]
    cmds = {
        "plain": [*this, str(out / "plain.nii.gz")],
        "cohort": [*this, str(out / "cohort.nii.gz"), *COHORT],
    }
    if before:
        cmds["before: plain"] = heatmap_command(before, data, "-q", "-o", out / "b_plain.nii.gz")
        cmds["before: cohort"] = heatmap_command(
            before, data, "-q", "-o", out / "b_cohort.nii.gz", *COHORT
        )
    return cmds


def main() -> int:
    parser = common_parser(__doc__.split("\n")[0], repeats=5)
    add_before_option(parser)
    args = parser.parse_args()
    data = ensure_data(args.data, ["masks", "probs"], args.quick)
    print(ensure_bytecode())
    before = None
    if args.before:
        print(ensure_bytecode(args.before))
        before = describe_install(args.before)
    results, rows, targets = {}, [], []
    for name in ("masks", "probs"):
        with tempfile.TemporaryDirectory() as tmp:
            cmds = commands(data[name], Path(tmp), args.before)
            medians, rss, times = alternate(cmds, args.repeats)
        ratios = {"cohort / plain": medians["cohort"] / medians["plain"]}
        if args.before:
            ratios["before: cohort / plain"] = medians["before: cohort"] / medians["before: plain"]
            for run in ("plain", "cohort"):
                ratios[f"{run}: this / before"] = medians[run] / medians[f"before: {run}"]
                ratios[f"{run}: this / before, per round"] = paired(times, run, f"before: {run}")[
                    "median"
                ]
                targets.append(
                    target(
                        f"{name}, {run}: this / before",
                        ratios[f"{run}: this / before"],
                        1.10,
                        at_least=False,
                    )
                )
        n = len(nifti_files(data[name]))
        for label in cmds:
            rows.append(
                (f"{name} ({n} files)", label, f"{medians[label]:.3f}", f"{rss[label]:.0f}")
            )
        results[name] = {
            "files": n,
            "contestants": contestants_json(cmds, medians, rss, times),
            "ratios": {k: round(v, 3) for k, v in ratios.items()},
        }
    print(f"\nmedians of {args.repeats} alternating rounds; cohort: {' '.join(COHORT)}\n")
    print(table(rows, ("data set", "run", "median (s)", "peak RSS (MiB)")))
    print()
    for name, result in results.items():
        for key, value in result["ratios"].items():
            print(f"{name}: {key}: {value:.2f}")
    if targets:
        print_targets(targets)
    write_results(
        "cohort",
        {
            "settings": {"repeats": args.repeats, "cohort_flags": COHORT},
            "before": before,
            "data_sets": results,
            "targets": targets,
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
