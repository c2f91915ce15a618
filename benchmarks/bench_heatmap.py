"""Whole-process benchmark of nipype-heatmap against the reference, the floor and others.

The others are the tools a user would otherwise reach for.

Usage::

    python benchmarks/bench_heatmap.py [--repeats 5] [--data DIR] [--quick]
        [--only {masks,probs}] [--no-reference] [--before PYTHON]
        [--nidataset-python PYTHON]

On the two data sets of ``_common.py`` (MNI 1 mm grid: 100 uint8 lesion masks, 30 float32
probability maps; generated once, seeded), times as whole processes (start-up and imports
included), in alternating rounds:

- this package's command (``nipype-heatmap DATA -o OUT -q``) and function
  (``generate_heatmap_volume``);
- the reference algorithm as a plain nibabel loop (``reference_loop.py``; slow,
  ``--no-reference`` skips it);
- the floor: reading and inflating every file with libdeflate (``deflate.gzip_decompress``)
  on 2 threads, nothing else; and the start-up (``python -c "import numpy, nibabel"``);
- when available: nilearn's ``mean_img`` + save, nidataset's ``generate_heatmap_volume``
  (in this interpreter or ``--nidataset-python``: nidataset pulls in ~1 GB of
  dependencies, so it gets a venv of its own), MRtrix3's ``mrmath ... mean``;
- with ``--before PYTHON``, another install's command (``PYTHON -m nipype_heatmap.cli DATA
  -o OUT -q``), e.g. the previous version's;
- on the masks, also the command on the first 10 masks (peak RSS against N).

Prints medians, ratios to the command (also per round), peak RSS, the targets with their
verdicts (masks: nidataset / command >= 10; probability maps: command / (floor +
start-up) <= 1.4; with ``--before``: command <= 1.10 x before), and checks that the
command's map equals the reference loop's, the function's and the before version's, bit
for bit. Writes ``results/heatmap.json``. This package is byte-compiled first, as a wheel
install is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from _common import (
        BIN,
        HERE,
        PY,
        SHAPE,
        add_before_option,
        alternate,
        common_parser,
        compare,
        contestants_json,
        describe_difference,
        describe_install,
        ensure_bytecode,
        ensure_data,
        heatmap_command,
        importable,
        nifti_files,
        package_version,
        paired,
        print_targets,
        table,
        target,
        write_results,
    )
except ModuleNotFoundError:  # imported as benchmarks.bench_heatmap (tests read get_parser)
    from benchmarks._common import (
        BIN,
        HERE,
        PY,
        SHAPE,
        add_before_option,
        alternate,
        common_parser,
        compare,
        contestants_json,
        describe_difference,
        describe_install,
        ensure_bytecode,
        ensure_data,
        heatmap_command,
        importable,
        nifti_files,
        package_version,
        paired,
        print_targets,
        table,
        target,
        write_results,
    )

CLI = "nipype-heatmap (CLI)"
FUNCTION = "generate_heatmap_volume (function)"
REFERENCE = "reference nibabel loop"
FLOOR = "floor: read + inflate (libdeflate, 2 threads)"
STARTUP = "start-up: import numpy, nibabel"
NILEARN = "nilearn mean_img + save"
NIDATASET = "nidataset generate_heatmap_volume"
MRMATH = "MRtrix3 mrmath mean"
BEFORE = "before: nipype-heatmap"
CLI_10 = "nipype-heatmap (CLI), first 10 masks"

FUNCTION_CODE = """
import sys
from nipype_heatmap import generate_heatmap_volume
generate_heatmap_volume(sys.argv[1], sys.argv[2], "function.nii.gz", progress=False)
"""

FLOOR_CODE = """
import sys, os, deflate
from concurrent.futures import ThreadPoolExecutor
d = sys.argv[1]
files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith('.nii.gz'))
def inflate(p):
    with open(p, 'rb') as f:
        return len(deflate.gzip_decompress(f.read()))
with ThreadPoolExecutor(2) as ex:
    sum(ex.map(inflate, files))
"""

NIDATASET_CODE = """
import sys
from nidataset.volume import generate_heatmap_volume
generate_heatmap_volume(sys.argv[1], sys.argv[2], "nidataset.nii.gz")
"""

NILEARN_CODE = """
import sys, os
from nilearn.image import mean_img
d = sys.argv[1]
files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith('.nii.gz'))
mean_img(files, copy_header=True).to_filename(os.path.join(sys.argv[2], 'nilearn.nii.gz'))
"""

#: Each contestant's map, in the output folder (None: writes none).
OUTPUTS = {
    CLI: "cli.nii.gz",
    FUNCTION: "function.nii.gz",
    REFERENCE: "ref.nii.gz",
    NILEARN: "nilearn.nii.gz",
    NIDATASET: "nidataset.nii.gz",
    MRMATH: "mrmath.nii.gz",
    BEFORE: "before.nii.gz",
}


def get_parser() -> argparse.ArgumentParser:
    """The command line (also read by the README test: every option it shows exists)."""
    parser = common_parser(__doc__.split("\n")[0], repeats=5)
    parser.add_argument(
        "--only", choices=["masks", "probs"], help="time one data set (default: both)"
    )
    parser.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip the reference nibabel loop (slow)",
    )
    add_before_option(parser)
    parser.add_argument(
        "--nidataset-python",
        metavar="PYTHON",
        type=os.path.abspath,
        help="an interpreter that imports nidataset (default: this one, if it does)",
    )
    return parser


def mrmath_version() -> str | None:
    """MRtrix3's version, when ``mrmath`` is on PATH."""
    if not shutil.which("mrmath"):
        return None
    done = subprocess.run(["mrmath", "--version"], capture_output=True, text=True)
    return done.stdout.split("\n")[0].strip("= ") if done.returncode == 0 else None


def contestants(
    data: Path, out: Path, args: argparse.Namespace, nidataset_python: str | None
) -> dict[str, list[str]]:
    """The commands to time on one data set, writing their maps into ``out``."""
    cmds = {
        CLI: [str(BIN / "nipype-heatmap"), str(data), "-o", str(out / OUTPUTS[CLI]), "-q"],
        FUNCTION: [PY, "-c", FUNCTION_CODE, str(data), str(out)],
    }
    if args.reference:
        cmds[REFERENCE] = [PY, str(HERE / "reference_loop.py"), str(data), str(out / "ref.nii.gz")]
    cmds[FLOOR] = [PY, "-c", FLOOR_CODE, str(data)]
    cmds[STARTUP] = [PY, "-c", "import numpy, nibabel"]
    if importable("nilearn"):
        cmds[NILEARN] = [PY, "-c", NILEARN_CODE, str(data), str(out)]
    if nidataset_python:
        cmds[NIDATASET] = [nidataset_python, "-c", NIDATASET_CODE, str(data), str(out)]
    if shutil.which("mrmath"):
        files = [str(f) for f in nifti_files(data)]
        cmds[MRMATH] = ["mrmath", *files, "mean", str(out / OUTPUTS[MRMATH]), "-quiet", "-force"]
    if args.before:
        cmds[BEFORE] = heatmap_command(args.before, data, "-o", out / OUTPUTS[BEFORE], "-q")
    return cmds


def bench(name: str, data: Path, args: argparse.Namespace, extra: dict, nidataset_python):
    """Time one data set; print its table and return its results."""
    n = len(nifti_files(data))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cmds = contestants(data, out, args, nidataset_python)
        for label, folder in extra.items():
            cmds[label] = [str(BIN / "nipype-heatmap"), str(folder), "-o", f"{tmp}/n.nii.gz", "-q"]
        medians, rss, times = alternate(cmds, args.repeats)
        pairs = [(CLI, FUNCTION), (CLI, REFERENCE), (CLI, BEFORE)]
        pairs += [(REFERENCE, other) for other in (NILEARN, NIDATASET, MRMATH)]
        pairs = [(a, b) for a, b in pairs if a in cmds and b in cmds]
        found = compare([(out / OUTPUTS[a], out / OUTPUTS[b]) for a, b in pairs])
    outputs = {f"{a} vs {b}": result for (a, b), result in zip(pairs, found, strict=True)}

    cli = medians[CLI]
    print(f"\n### {name}: {n} files, {SHAPE}, medians of {args.repeats} alternating rounds\n")
    rows = []
    for label in cmds:
        ratio = paired(times, label, CLI)
        rows.append(
            (
                label,
                f"{medians[label]:.3f}",
                f"{medians[label] / cli:.2f}",
                f"{ratio['median']:.2f} [{ratio['q1']:.2f}-{ratio['q3']:.2f}]",
                f"{rss[label]:.0f}",
            )
        )
    print(
        table(
            rows,
            ("contestant", "median (s)", "/ CLI", "/ CLI per round [quartiles]", "peak RSS (MiB)"),
        )
    )
    floor_startup = medians[FLOOR] + medians[STARTUP]
    ratios = {"CLI / (floor + start-up)": cli / floor_startup}
    for label in (REFERENCE, NIDATASET, NILEARN, MRMATH):
        if label in medians:
            ratios[f"{label} / CLI"] = medians[label] / cli
    if BEFORE in medians:
        ratios["CLI / before"] = cli / medians[BEFORE]
        ratios["CLI / before, per round"] = paired(times, CLI, BEFORE)["median"]
    print()
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}")
    for key, result in outputs.items():
        print(f"map of {key}: {describe_difference(result)}")
    if CLI_10 in rss:
        k = len(nifti_files(extra[CLI_10]))
        print(f"peak RSS of the CLI: {rss[CLI_10]:.0f} MiB for {k} files, {rss[CLI]:.0f} for {n}")
    return {
        "files": n,
        "folder": str(data),
        "contestants": contestants_json(cmds, medians, rss, times),
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "outputs": outputs,
    }


def main() -> int:
    args = get_parser().parse_args()
    names = [args.only] if args.only else ["masks", "probs"]
    data = ensure_data(args.data, names + (["masks10"] if "masks" in names else []), args.quick)
    print(ensure_bytecode())
    before = None
    if args.before:
        print(ensure_bytecode(args.before))
        before = describe_install(args.before)
        print(f"before: {before}")
    nidataset_python = args.nidataset_python
    if nidataset_python is None and importable("nidataset"):
        nidataset_python = PY
    if nidataset_python is None:
        print("nidataset: not importable here (give --nidataset-python); not timed")
    versions = {
        "nilearn": package_version("nilearn"),
        "nidataset": package_version("nidataset", nidataset_python) if nidataset_python else None,
        "mrmath": mrmath_version(),
    }
    print(f"versions of the others: {versions}")
    results = {}
    for name in names:
        extra = {CLI_10: data["masks10"]} if name == "masks" else {}
        results[name] = bench(name, data[name], args, extra, nidataset_python)

    targets, checks = [], []
    if "masks" in results:
        value = results["masks"]["ratios"].get(f"{NIDATASET} / CLI")
        targets.append(target("masks: nidataset / CLI", value, 10, at_least=True))
    if "probs" in results:
        value = results["probs"]["ratios"]["CLI / (floor + start-up)"]
        targets.append(target("probs: CLI / (floor + start-up)", value, 1.4, at_least=False))
    for name, result in results.items():
        if args.before:
            value = result["ratios"]["CLI / before"]
            targets.append(target(f"{name}: CLI / before", value, 1.10, at_least=False))
        for key, found in result["outputs"].items():
            if not key.startswith(REFERENCE):  # the anchors' maps are for information
                checks.append({"check": f"{name}: {key}", "holds": found["identical"]})
    print_targets(targets)
    print("\n### outputs, bit for bit\n")
    rows = [(c["check"], "holds" if c["holds"] else "MISSED") for c in checks]
    print(table(rows, ("check", "verdict")))
    write_results(
        "heatmap",
        {
            "settings": {"repeats": args.repeats, "reference": args.reference},
            "before": before,
            "nidataset_python": nidataset_python,
            "versions": versions,
            "data_sets": results,
            "targets": targets,
            "checks": checks,
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
