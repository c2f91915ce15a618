"""What each speed trick that the package keeps buys: the realistic job with and without it.

Usage::

    python benchmarks/bench_tricks.py [--repeats 9] [--data DIR] [--quick]

Each trick is switched off by a patch applied in a small runner (``_variant.py VARIANT --
ARGS``) that then runs the ``nipype-heatmap`` command, so that every variant is a whole
process like the real command; the trick's cost is measured on the job it is for, with the
command as shipped (``shipped``, through the same runner) in the same alternating rounds:

- narrow exact integer sums (``int64-sums``: ``_kernels.integer_sum_dtype`` gives int64
  within the exact range, None beyond) on the 100 masks, time and peak RSS;
- ``retain_freed_memory`` (``no-retain``: ``cli._base.retain_freed_memory`` does nothing)
  on the 100 masks and the 30 probability maps;
- the libdeflate reader (``isal-reader``: the same rules with ISA-L's inflater, see
  ``_variant.py``) on both.

The job is ``nipype-heatmap DATA -o OUT -q``. A trick's gain is the time that the job takes
longer without it, in % of the job as shipped: the median over rounds of (without / with)
- 1, with its quartiles (a slow minute of the machine hits both runs of a round); the
ratio of the medians is printed too. The verdict: **keep** if it buys >= 10 % of a job's
time, or if it keeps the memory promise (peak RSS >= 10 % lower with it); otherwise
**remove**. Each variant's map is checked to equal the shipped command's, voxel for voxel
(a trick must not change a result). Writes ``results/tricks.json``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import (
    HERE,
    PY,
    alternate,
    common_parser,
    compare,
    contestants_json,
    describe_difference,
    ensure_bytecode,
    ensure_data,
    nifti_files,
    paired,
    table,
    write_results,
)

SHIPPED = "shipped"

#: variant -> (the trick it switches off, what runs instead, the jobs it is measured on)
TRICKS = {
    "int64-sums": (
        "narrow exact integer sums (_kernels.integer_sum_dtype)",
        "exact integer sums in int64",
        ("masks",),
    ),
    "no-retain": (
        "retain_freed_memory (glibc mallopt, in the commands)",
        "glibc's default allocator settings",
        ("masks", "probs"),
    ),
    "isal-reader": (
        "libdeflate's gzip C API for inflating (io.inflating)",
        "ISA-L's inflater, member by member (the fallback)",
        ("masks", "probs"),
    ),
}

#: Keep a trick that buys at least this share of a job's time, or of its peak RSS.
THRESHOLD = 0.10


def job_commands(data: Path, out: Path, variants) -> dict[str, list[str]]:
    """The job, ``nipype-heatmap DATA -o OUT -q``, as each variant."""
    return {
        v: [
            PY,
            str(HERE / "_variant.py"),
            v,
            "--",
            str(data),
            "-o",
            str(out / f"{v}.nii.gz"),
            "-q",
        ]
        for v in variants
    }


def measure(name: str, data: Path, repeats: int) -> dict:
    """Time the job on one data set as shipped and as every variant measured on it."""
    variants = [SHIPPED, *(v for v, (_, _, jobs) in TRICKS.items() if name in jobs)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cmds = job_commands(data, out, variants)
        medians, rss, times = alternate(cmds, repeats)
        found = compare([(out / f"{SHIPPED}.nii.gz", out / f"{v}.nii.gz") for v in variants[1:]])
    gains = {}
    for variant in variants[1:]:
        per_round = paired(times, variant, SHIPPED)
        gains[variant] = {
            "time_gain": round(per_round["median"] - 1, 4),
            "time_gain_quartiles": [round(per_round["q1"] - 1, 4), round(per_round["q3"] - 1, 4)],
            "time_gain_of_medians": round(medians[variant] / medians[SHIPPED] - 1, 4),
            "rss_gain": round(rss[variant] / rss[SHIPPED] - 1, 4),
        }
    return {
        "files": len(nifti_files(data)),
        "contestants": contestants_json(cmds, medians, rss, times),
        "gains": gains,
        "same_map": dict(zip(variants[1:], found, strict=True)),
    }


def verdict(variant: str, jobs: dict) -> tuple[str, str]:
    """Keep or remove, and why."""
    measured = {
        name: job["gains"][variant] for name, job in jobs.items() if variant in job["gains"]
    }
    best_time = max(measured, key=lambda name: measured[name]["time_gain"])
    best_rss = max(measured, key=lambda name: measured[name]["rss_gain"])
    time_gain, rss_gain = measured[best_time]["time_gain"], measured[best_rss]["rss_gain"]
    q1, q3 = measured[best_time]["time_gain_quartiles"]
    if time_gain >= THRESHOLD:
        why = f"buys {time_gain:.1%} of the {best_time} job's time"
        if q1 < THRESHOLD:
            why += f" (borderline: the rounds' lower quartile is {q1:.1%})"
        return "keep", why
    if rss_gain >= THRESHOLD:
        return "keep", (
            f"keeps the memory promise: the {best_rss} job's peak RSS is {rss_gain:.1%} "
            f"higher without it (time: {time_gain:.1%})"
        )
    why = f"buys {time_gain:.1%} of a job's time and {rss_gain:.1%} of its peak RSS"
    if q3 >= THRESHOLD:
        why += f" (borderline: the rounds' upper quartile is {q3:.1%})"
    return "remove", why


def main() -> int:
    parser = common_parser(__doc__.split("\n")[0], repeats=9)
    args = parser.parse_args()
    data = ensure_data(args.data, ["masks", "probs"], args.quick)
    print(ensure_bytecode())
    jobs = {name: measure(name, data[name], args.repeats) for name in ("masks", "probs")}

    print(f"\n### each trick on its job, medians of {args.repeats} alternating rounds\n")
    rows = []
    for variant, (trick, _, names) in TRICKS.items():
        for name in names:
            job, gain = jobs[name], jobs[name]["gains"][variant]
            with_, without = job["contestants"][SHIPPED], job["contestants"][variant]
            q1, q3 = gain["time_gain_quartiles"]
            rows.append(
                (
                    trick,
                    f"{name} ({job['files']} files)",
                    f"{with_['median_s']:.3f} / {without['median_s']:.3f}",
                    f"{gain['time_gain']:+.1%} [{q1:+.1%} to {q3:+.1%}]",
                    f"{gain['time_gain_of_medians']:+.1%}",
                    f"{with_['peak_rss_mib']:.0f} / {without['peak_rss_mib']:.0f}",
                    describe_difference(job["same_map"][variant]),
                )
            )
    header = (
        "trick",
        "job",
        "with / without (s)",
        "gain, per round [quartiles]",
        "gain, of medians",
        "peak RSS with / without (MiB)",
        "map without = with",
    )
    print(table(rows, header))

    print("\n### verdicts (keep: >= 10 % of a job's time, or >= 10 % of its peak RSS)\n")
    verdicts = {}
    for variant, (trick, instead, _) in TRICKS.items():
        decision, why = verdict(variant, jobs)
        verdicts[variant] = {"trick": trick, "without": instead, "verdict": decision, "why": why}
    print(
        table(
            [(v["trick"], v["verdict"], v["why"]) for v in verdicts.values()],
            ("trick", "verdict", "why"),
        )
    )
    write_results(
        "tricks",
        {
            "settings": {"repeats": args.repeats, "threshold": THRESHOLD},
            "jobs": jobs,
            "verdicts": verdicts,
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
