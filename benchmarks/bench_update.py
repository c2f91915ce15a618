"""Cohorts that grow: updating a saved state against recomputing from every file.

Usage::

    python benchmarks/bench_update.py [--n 1000] [--add 10] [--repeats 3] [--data DIR]
        [--quick] [--before PYTHON]

Makes ``n + add`` lesion masks on the 1 mm MNI grid (once, in ``DIR/update_pool_<n+add>``),
saves the state of the first ``n`` with ``nipype-heatmap OLD/ -o v1.nii.gz --save-state
STATE``, then times as whole processes, in alternating rounds, on the same files:

- **update**: ``nipype-heatmap --update STATE NEW/ -o maps.nii.gz --coverage --std
  --min-count 5`` (reads the state and the ``add`` new files, writes the state and every
  map), on a fresh copy of the state each time;
- **update + withdrawal**: the same, also ``--remove`` of ``add`` inputs of the state (at
  most half of them; each read again to check its hash);
- **recompute**: ``nipype-heatmap OLD/ NEW/ -o maps.nii.gz --coverage --std --min-count 5``;
- with ``--before PYTHON``, the same three runs of another install (``PYTHON -m
  nipype_heatmap.cli``), from a state that it saved itself (state formats differ between
  versions), in the same rounds;

for a state of ``n / 10`` inputs too (peak RSS flat in N). Then, in a child process, the
library calls alone (no start-up): :func:`nipype_heatmap.api.update_state` (read the
state, add, write the state and the maps) against :func:`nipype_heatmap.api.make_maps` on
every file, and, in the same rounds, reading and writing the state with nothing added and
writing the maps from an accumulator: no update that rewrites the state and the maps can be
faster than those two, which bounds its speed-up. Checks that the update's maps equal the
recompute's, bit for bit (and the before version's, when given). Prints the tables and the
targets (this <= 1.10 x before); writes ``results/update.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    BIN,
    HERE,
    PY,
    add_before_option,
    alternate,
    common_parser,
    compare,
    contestants_json,
    describe_difference,
    describe_install,
    ensure_bytecode,
    ensure_folder,
    heatmap_command,
    neutral_cwd,
    paired,
    print_targets,
    run,
    table,
    target,
    write_results,
)

FLAGS = ["--coverage", "--std", "--min-count", "5"]
MAPS = ("", "_coverage", "_std", "_variance", "_overlap", "_mincount5")
RUNS = ("update", "update + withdrawal", "recompute")


def prepare(root: Path, n: int, add: int) -> tuple[Path, Path]:
    """``old/`` (n masks) and ``new/`` (add masks), as links into one generated set."""
    pool = ensure_folder(root / f"update_pool_{n + add}", "masks", n + add, seed=7)
    files = sorted(pool.glob("*.nii.gz"))
    work = root / f"update_{n}_{add}"
    shutil.rmtree(work, ignore_errors=True)
    for name, chunk in (("old", files[:n]), ("new", files[n:])):
        (work / name).mkdir(parents=True)
        for f in chunk:
            (work / name / f.name).symlink_to(f)
    return work / "old", work / "new"


def map_pairs(a: Path, b: Path) -> list[tuple[str, str]]:
    """The maps and the table beside ``a.nii.gz`` and ``b.nii.gz``, paired."""
    pairs = [(f"{a}{suffix}.nii.gz", f"{b}{suffix}.nii.gz") for suffix in MAPS]
    return [*pairs, (f"{a}_overlap.tsv", f"{b}_overlap.tsv")]


def slug(label: str) -> str:
    return label.replace("before: ", "before_").replace(" + ", "_").replace(" ", "_")


def whole_processes(old: Path, new: Path, out: Path, args: argparse.Namespace) -> dict:
    """Save the states, time the runs, compare the maps; return the results."""
    installs = {"": [str(BIN / "nipype-heatmap")]}
    if args.before:
        installs["before: "] = heatmap_command(args.before)
    # at most half of the state: removing every input is refused even when others are added
    old_files = sorted(old.glob("*.nii.gz"))
    withdrawn = [str(p) for p in old_files[: min(args.add, len(old_files) // 2)]]
    cmds, states, builds = {}, {}, {}
    for prefix, exe in installs.items():
        state = out / f"{slug(prefix)}state.nii.gz"
        build = [*exe, str(old), "-q", "-o", str(out / f"{slug(prefix)}v1.nii.gz")]
        builds[f"{prefix}save the state"] = run([*build, "--save-state", str(state)])[0]
        copy = out / f"{slug(prefix)}state_copy.nii.gz"
        maps = {label: out / f"{slug(prefix + label)}.nii.gz" for label in RUNS}
        update = [*exe, "--update", str(copy), str(new), "-q", *FLAGS, "-o"]
        cmds[f"{prefix}update"] = [*update, str(maps["update"])]
        cmds[f"{prefix}update + withdrawal"] = [
            *update,
            str(maps["update + withdrawal"]),
            "--remove",
            *withdrawn,
        ]
        cmds[f"{prefix}recompute"] = [*exe, str(old), str(new), "-q", *FLAGS, "-o"]
        cmds[f"{prefix}recompute"].append(str(maps["recompute"]))
        for label in RUNS:
            states[f"{prefix}{label}"] = (state, copy)

    def fresh_state(label: str) -> None:
        shutil.copyfile(*states[label])

    medians, rss, times = alternate(cmds, args.repeats, before_each=fresh_state)
    checks = {"update = recompute": (out / "update", out / "recompute")}
    if args.before:
        checks["before: update = before: recompute"] = (
            out / "before_update",
            out / "before_recompute",
        )
        checks["update = before: update"] = (out / "update", out / "before_update")
    found = {}
    for name, (a, b) in checks.items():
        found[name] = dict(zip(MAPS + ("_overlap.tsv",), compare(map_pairs(a, b)), strict=True))
    return {
        "withdrawn": len(withdrawn),
        "state_mib": round((out / "state.nii.gz").stat().st_size / 2**20, 2),
        "save_state_s": {k: round(v, 3) for k, v in builds.items()},
        "contestants": contestants_json(cmds, medians, rss, times),
        "ratios": ratios_of(medians, times, args.before),
        "outputs": found,
    }


def ratios_of(medians: dict, times: dict, before: str | None) -> dict[str, float]:
    ratios = {"recompute / update": medians["recompute"] / medians["update"]}
    ratios["recompute / (update + withdrawal)"] = (
        medians["recompute"] / medians["update + withdrawal"]
    )
    if before:
        for label in RUNS:
            ratios[f"{label}: this / before"] = medians[label] / medians[f"before: {label}"]
            ratios[f"{label}: this / before, per round"] = paired(
                times, label, f"before: {label}"
            )["median"]
    return {k: round(v, 3) for k, v in ratios.items()}


def in_process(old: Path, new: Path, state: Path, out: Path, repeats: int) -> dict:
    """Median seconds of the library calls alone (run in a child process: see the module
    doc), and whether the update's maps equal the recompute's."""
    from _compare import compare_files

    from nipype_heatmap import api
    from nipype_heatmap.io import OutputPlan, find_nifti_files
    from nipype_heatmap.options import CohortOptions, MapOptions
    from nipype_heatmap.state import load_state, save_state

    cohort = CohortOptions(coverage=True, std=True, min_count=5)
    old_files, new_files = find_nifti_files(old), find_nifti_files(new)
    times: dict[str, list[float]] = {"update": [], "recompute": [], "state": [], "maps": []}
    copy = out / "lib_state.nii.gz"
    for _ in range(repeats):
        shutil.copyfile(state, copy)
        start = time.perf_counter()  # what any update that rewrites the state pays
        save_state(load_state(copy), copy)
        times["state"].append(time.perf_counter() - start)
        start = time.perf_counter()
        api.update_state(
            copy, add=new_files, out_file=out / "lib_update.nii.gz", cohort=cohort, progress=False
        )
        times["update"].append(time.perf_counter() - start)
        start = time.perf_counter()
        acc, _ = api.make_maps(
            old_files + new_files, out / "lib_recompute.nii.gz", cohort=cohort, progress=False
        )
        times["recompute"].append(time.perf_counter() - start)
        start = time.perf_counter()  # what any run pays after its accumulating
        with OutputPlan() as plan:
            api.plan_maps(plan, out / "lib_maps.nii.gz", cohort, acc.n_inputs)
            api.write_maps(acc, plan, MapOptions(), cohort)
            plan.commit()
        times["maps"].append(time.perf_counter() - start)
    found = [compare_files(a, b) for a, b in map_pairs(out / "lib_update", out / "lib_recompute")]
    return {
        "median_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "update = recompute": all(f["identical"] for f in found),
    }


def in_child(old: Path, new: Path, state: Path, out: Path, repeats: int) -> dict:
    cmd = [PY, str(HERE / "bench_update.py"), "--in-process", str(old), str(new), str(state)]
    done = run_capturing([*cmd, str(out), str(repeats)])
    return json.loads(done)


def run_capturing(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=neutral_cwd())
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def report(rows: dict, lib: dict, args: argparse.Namespace) -> list[dict]:
    print(
        f"\n{args.add} new masks (1 mm MNI grid) into a state of N; maps: heatmap, coverage, "
        f"std, variance, non-zero count, min-count 5 mask, overlap table; medians of "
        f"{args.repeats} alternating rounds\n"
    )
    lines = []
    for n, result in rows.items():
        c = result["contestants"]
        for label in c:
            lines.append(
                (n, label, f"{c[label]['median_s']:.3f}", f"{c[label]['peak_rss_mib']:.0f}")
            )
    print(table(lines, ("N", "run", "median (s)", "peak RSS (MiB)")))
    targets = []
    for n, result in rows.items():
        print(f"\nN={n}: state {result['state_mib']} MiB; saving it took {result['save_state_s']}")
        for key, value in result["ratios"].items():
            print(f"N={n}: {key}: {value:.2f}")
        for check, maps in result["outputs"].items():
            same = all(m["identical"] for m in maps.values())
            print(f"N={n}: {check}: {'bit for bit' if same else 'DIFFERENT'}")
            for suffix, m in maps.items():
                if not m["identical"]:
                    print(f"    {suffix or '(heatmap)'}: {describe_difference(m)}")
    n = max(rows)
    if args.before:
        for label in RUNS:
            value = rows[n]["ratios"][f"{label}: this / before"]
            targets.append(target(f"N={n}, {label}: this / before", value, 1.10, at_least=False))
    med = lib["median_s"]
    total = n + args.add
    print(
        f"\nin-process, N={n}: update_state (read the state, add {args.add} files, write the "
        f"state and the maps) {med['update']:.3f} s; make_maps on all {total} files "
        f"{med['recompute']:.3f} s: {med['recompute'] / med['update']:.1f}x faster. Reading "
        f"and writing the state alone {med['state']:.3f} s, writing the maps alone "
        f"{med['maps']:.3f} s: no update that rewrites both can be more than "
        f"{med['recompute'] / (med['state'] + med['maps']):.1f}x faster here. Maps of the "
        f"update = the recompute's: {'bit for bit' if lib['update = recompute'] else 'NO'}"
    )
    return targets


def main() -> int:
    if sys.argv[1:2] == ["--in-process"]:
        old, new, state, out = (Path(p) for p in sys.argv[2:6])
        print(json.dumps(in_process(old, new, state, out, int(sys.argv[6]))))
        return 0
    parser = common_parser(__doc__.split("\n")[0], repeats=3)
    parser.add_argument("--n", type=int, default=1000, help="inputs of the state")
    parser.add_argument("--add", type=int, default=10, help="files added (and withdrawn)")
    add_before_option(parser)
    args = parser.parse_args()
    if args.quick:
        args.n, args.add = 10, 2
    print(ensure_bytecode())
    before = None
    if args.before:
        print(ensure_bytecode(args.before))
        before = describe_install(args.before)
    rows: dict[int, dict] = {}
    lib: dict = {}
    for n in (max(2, args.n // 10), args.n):
        old, new = prepare(args.data, n, args.add)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            rows[n] = whole_processes(old, new, out, args)
            if n == args.n:
                lib = in_child(old, new, out / "state.nii.gz", out, args.repeats)
    targets = report(rows, lib, args)
    checks = [
        {"check": f"N={n}: {name}", "holds": all(m["identical"] for m in maps.values())}
        for n, result in rows.items()
        for name, maps in result["outputs"].items()
    ]
    checks.append({"check": "in-process: update = recompute", "holds": lib["update = recompute"]})
    if targets:
        print_targets(targets)
    write_results(
        "update",
        {
            "settings": {"repeats": args.repeats, "n": args.n, "add": args.add, "flags": FLAGS},
            "before": before,
            "sizes": {str(n): result for n, result in rows.items()},
            "in_process": lib,
            "targets": targets,
            "checks": checks,
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
