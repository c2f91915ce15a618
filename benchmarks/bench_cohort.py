"""What the cohort maps cost: the command with and without them, on the same files.

Usage::

    python benchmarks/bench_cohort.py [--repeats 5] [--data DIR]

Uses the data sets of ``bench_heatmap.py`` (run it once first, or pass ``--data``). Times,
as whole processes in alternating order, ``nipype-heatmap`` for the plain mean and with
``--coverage --std --min-count 2`` (one pass for all), and prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench_heatmap import BIN, ensure_bytecode, ensure_data, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "nipype_heatmap_bench"
    )
    args = parser.parse_args()
    print(ensure_bytecode())
    data = ensure_data(args.data, quick=False)
    print("| data set | mean only (s) | mean + coverage + std + min-overlap (s) | ratio |")
    print("| --- | --- | --- | --- |")
    for name in ("masks", "probs"):
        with tempfile.TemporaryDirectory() as tmp:
            base = [str(BIN / "nipype-heatmap"), str(data[name]), "-q", "-o"]
            cmds = {
                "plain": [*base, f"{tmp}/plain.nii.gz"],
                "cohort": [*base, f"{tmp}/c.nii.gz", "--coverage", "--std", "--min-count", "2"],
            }
            times: dict[str, list[float]] = {k: [] for k in cmds}
            for _ in range(args.repeats):
                for label, cmd in cmds.items():
                    times[label].append(run(cmd)[0])
        plain, cohort = (statistics.median(times[k]) for k in ("plain", "cohort"))
        n = len(list(data[name].glob("*.nii.gz")))
        print(f"| {name} ({n} files) | {plain:.3f} | {cohort:.3f} | {cohort / plain:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
