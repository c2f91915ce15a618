"""What the benchmarks share: the data sets, timing whole processes, and the results files.

Every benchmark times whole processes (interpreter start-up included), in alternating
order (one run of each contestant per round, starting each round one contestant further,
so that a slow minute of this shared machine hits all of them alike), and reports medians,
ratios measured in the same run (also per round: the median and quartiles of the paired
ratios), and each process's peak RSS. Results go to ``benchmarks/results/<name>.json``
with the date, the machine and the versions, which the documentation's performance page
renders; a ``--quick`` run (tiny data, to check that a script works) writes
``<name>-quick.json`` instead, which is never committed.

The process that times the others stays small: data are generated and outputs compared in
child processes (on Linux a child's reported peak RSS can include its parent's at the fork).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import nibabel as nb
import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHAPE = (182, 218, 182)  # the MNI152 1 mm grid
AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -126], [0, 0, 1.0, -72], [0, 0, 0, 1]])
PY = sys.executable
BIN = Path(PY).parent
DEFAULT_DATA = Path(tempfile.gettempdir()) / "nipype_heatmap_bench"


#: Every child process runs in an empty folder: ``python -c``/``-m`` put the working
#: folder first on ``sys.path``, so that from a clone's root another install's interpreter
#: (``--before``) would import the clone's package instead of its own.
@functools.cache
def neutral_cwd() -> str:
    folder = tempfile.mkdtemp(prefix="nipype_heatmap_bench_cwd_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# -- data ----------------------------------------------------------------------------------
def _ellipsoid(shape) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    radii = np.array(shape) * np.array([0.42, 0.45, 0.40])
    center = np.array(shape) / 2
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True)) <= 1.0


def make_masks(folder: Path, n: int, seed: int = 1) -> None:
    """``n`` uint8 lesion masks (a few smooth blobs each, inside a brain-shaped ellipsoid).

    The first ``k`` masks of a seed are the same for any ``n``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    brain = _ellipsoid(SHAPE)
    inside = np.argwhere(brain)
    for i in range(n):
        mask = np.zeros(SHAPE, np.uint8)
        for _ in range(rng.integers(1, 6)):
            c = inside[rng.integers(len(inside))]
            r = rng.uniform(3, 12)
            lo = np.maximum(c - int(r) - 1, 0)
            hi = np.minimum(c + int(r) + 2, SHAPE)
            sub = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
            ball = sum((g - cc) ** 2 for g, cc in zip(sub, c, strict=True)) <= r * r
            mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] |= ball.astype(np.uint8)
        nb.Nifti1Image(mask * brain, AFFINE).to_filename(folder / f"sub-{i:03d}_mask.nii.gz")


def make_probs(folder: Path, n: int, seed: int = 2) -> None:
    """``n`` float32 probability maps (smooth fields in 0..1 inside the ellipsoid)."""
    from scipy.ndimage import gaussian_filter, zoom

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    brain = _ellipsoid(SHAPE)
    small = tuple(s // 4 for s in SHAPE)
    for i in range(n):
        field = gaussian_filter(rng.standard_normal(small), 2.0)
        field = zoom(field, np.array(SHAPE) / np.array(small), order=1)[
            : SHAPE[0], : SHAPE[1], : SHAPE[2]
        ]
        prob = 1.0 / (1.0 + np.exp(-field / max(field.std(), 1e-6) * 2))
        prob = (prob * brain).astype(np.float32)
        nb.Nifti1Image(prob, AFFINE).to_filename(folder / f"sub-{i:03d}_probseg.nii.gz")


def make_labels(folder: Path, n: int, n_labels: int = 100, seed: int = 3) -> None:
    """``n`` aseg-like int16 label images: one Voronoi parcellation of the ellipsoid into
    ``n_labels`` compact regions, shifted by up to 3 voxels per subject."""
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


MAKERS: dict[str, Callable[..., None]] = {
    "masks": make_masks,
    "probs": make_probs,
    "labels": make_labels,
}

#: The data sets: name -> (maker, files, files with --quick).
DATA_SETS: dict[str, tuple[str, int, int]] = {
    "masks": ("masks", 100, 6),
    "probs": ("probs", 30, 3),
    "masks10": ("masks", 10, 3),  # the first 10 of "masks": peak RSS against N
    "labels": ("labels", 100, 4),
}


def ensure_folder(folder: Path, maker: str, n: int, **options: object) -> Path:
    """Generate ``n`` files with ``MAKERS[maker](folder, n, **options)`` unless ``folder``
    holds ``n`` already; in a child process (see the module doc)."""
    folder = Path(folder)
    if len(list(folder.glob("*.nii.gz"))) != n:
        cmd = [PY, str(HERE / "_common.py"), "generate", str(folder), maker, str(n)]
        subprocess.run([*cmd, json.dumps(options)], check=True, cwd=neutral_cwd())
    return folder


def ensure_data(root: Path, names: Sequence[str], quick: bool = False) -> dict[str, Path]:
    """Generate (once, seeded) and return the data sets' folders, ``ROOT/<name>_<n>``."""
    folders = {}
    for name in names:
        maker, n, n_quick = DATA_SETS[name]
        n = n_quick if quick else n
        folders[name] = ensure_folder(Path(root) / f"{name}_{n}", maker, n)
    return folders


def nifti_files(folder: Path) -> list[Path]:
    """A folder's NIfTI files, sorted by name (as the command lists them)."""
    return sorted(Path(folder).glob("*.nii.gz"))


# -- timing --------------------------------------------------------------------------------
def run(cmd: Sequence[str]) -> tuple[float, float]:
    """Run a command; return wall seconds and the process's own peak RSS in MiB."""
    with tempfile.TemporaryFile() as stderr:  # a pipe could fill up (progress bars)
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), stdout=subprocess.DEVNULL, stderr=stderr, cwd=neutral_cwd()
        )
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            stderr.seek(0)
            err = stderr.read().decode(errors="replace")
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({code}):\n{err}")
    return elapsed, usage.ru_maxrss / 1024


def alternate(
    cmds: Mapping[str, Sequence[str]], repeats: int, before_each=None, warm_up: bool = True
) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """Time each command ``repeats`` times, one run of each per round (each round starts
    one contestant further); return medians, peak RSS and the raw times (in round order).
    ``before_each(label)`` runs (untimed) before each run. With ``warm_up``, one untimed
    run of each comes first (files in the page cache, outputs existing)."""
    labels = list(cmds)
    times: dict[str, list[float]] = {k: [] for k in labels}
    rss: dict[str, float] = {k: 0.0 for k in labels}
    for label in labels if warm_up else ():
        if before_each is not None:
            before_each(label)
        run(cmds[label])
    for round_ in range(repeats):
        start = round_ % len(labels)
        for label in labels[start:] + labels[:start]:
            if before_each is not None:
                before_each(label)
            seconds, mib = run(cmds[label])
            times[label].append(seconds)
            rss[label] = max(rss[label], mib)
    return {k: statistics.median(v) for k, v in times.items()}, rss, times


def paired(times: Mapping[str, Sequence[float]], a: str, b: str) -> dict[str, float]:
    """The ratio ``a / b`` of two contestants' times, round by round: its median and
    quartiles (robust to a slow minute of the machine, which hits both of a round)."""
    ratios = sorted(x / y for x, y in zip(times[a], times[b], strict=True))
    if len(ratios) > 1:
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    else:
        q1 = q3 = ratios[0]
    return {"median": statistics.median(ratios), "q1": q1, "q3": q3, "rounds": len(ratios)}


def contestants_json(
    cmds: Mapping[str, Sequence[str]],
    medians: Mapping[str, float],
    rss: Mapping[str, float],
    times: Mapping[str, Sequence[float]],
) -> dict[str, dict[str, object]]:
    """The timings of :func:`alternate`, as written to the results."""
    return {
        label: {
            "command": [str(c) for c in cmds[label]],
            "median_s": round(medians[label], 4),
            "times_s": [round(t, 4) for t in times[label]],
            "peak_rss_mib": round(rss[label], 1),
        }
        for label in cmds
    }


def ensure_bytecode(python: str = PY) -> str:
    """Byte-compile the ``nipype_heatmap`` that ``python`` imports, as installing a wheel
    does (an editable install compiles nothing, and this machine sets
    ``PYTHONDONTWRITEBYTECODE``: every process would compile the sources again, ~50 ms
    that no wheel user pays)."""
    code = "import nipype_heatmap, os; print(os.path.dirname(nipype_heatmap.__file__))"
    folder = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, cwd=neutral_cwd()
    ).stdout.strip()
    subprocess.run([python, "-m", "compileall", "-q", folder], check=True, cwd=neutral_cwd())
    return f"byte-compiled {folder} (as a wheel install is)"


def importable(module: str, python: str = PY) -> bool:
    """Whether ``python`` can import ``module``."""
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec('{module}') is None)"
    done = subprocess.run([python, "-c", code], stderr=subprocess.DEVNULL, cwd=neutral_cwd())
    return done.returncode == 0


# -- another install (--before) ------------------------------------------------------------
def add_before_option(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """``--before PYTHON``: another install's command, run beside this one's."""
    parser.add_argument(
        "--before",
        metavar="PYTHON",
        type=os.path.abspath,  # not resolved: a venv's python is a link out of the venv
        required=required,
        help="the interpreter of another install of nipype_heatmap (e.g. a venv of the "
        "previous version, see benchmarks/README.md): its command runs beside this one's",
    )


def heatmap_command(python: str, *args: object) -> list[str]:
    """``python -m nipype_heatmap.cli ARGS``: the heatmap command of any version."""
    return [python, "-m", "nipype_heatmap.cli", *(str(a) for a in args)]


def atlas_command(python: str, *args: object) -> list[str]:
    """The atlas command of the install of ``python`` (its module moved into ``cli/``)."""
    module = (
        "nipype_heatmap.cli.atlas"
        if importable("nipype_heatmap.cli.atlas", python)
        else "nipype_heatmap.cli_atlas"
    )
    return [python, "-m", module, *(str(a) for a in args)]


def package_version(distribution: str, python: str = PY) -> str | None:
    """The version of a distribution installed for ``python`` (None if it is not)."""
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=neutral_cwd())
    return done.stdout.strip() if done.returncode == 0 else None


def describe_install(python: str) -> dict[str, str]:
    """Which nipype_heatmap ``python`` imports: version, folder and git commit."""
    code = "import nipype_heatmap, os; print(nipype_heatmap.__version__); "
    code += "print(os.path.dirname(nipype_heatmap.__file__))"
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, cwd=neutral_cwd()
    )
    version, folder = out.stdout.split("\n")[:2]
    commit = subprocess.run(
        ["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {"python": python, "version": version, "folder": folder, "commit": commit or "?"}


# -- comparing outputs ---------------------------------------------------------------------
def compare(pairs: Sequence[tuple[object, object]]) -> list[dict[str, object]]:
    """Compare pairs of files voxel by voxel (NIfTI) or byte by byte (text), in a child
    process; see ``_compare.py``."""
    if not pairs:
        return []
    cmd = [PY, str(HERE / "_compare.py"), *(str(p) for pair in pairs for p in pair)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=neutral_cwd())
    if done.returncode != 0:
        raise RuntimeError(f"comparing outputs failed:\n{done.stderr}")
    return json.loads(done.stdout)


def describe_difference(result: Mapping[str, object]) -> str:
    """One line for a comparison of :func:`compare`."""
    if result["identical"]:
        return "bit for bit"
    if "note" in result:
        return f"DIFFERENT: {result['note']}"
    text = f"DIFFERENT: {result['voxels_differing']} voxels, max |diff| {result['max_abs']:.3g}"
    if result.get("max_ulps") is not None:
        text += f" ({result['max_ulps']} float32 ulps)"
    if result.get("nan_mismatch"):
        text += f", NaN in one only at {result['nan_mismatch']} voxels"
    return text


# -- targets -------------------------------------------------------------------------------
def target(name: str, value: float | None, limit: float, at_least: bool) -> dict[str, object]:
    """A performance target and whether it holds (None when it was not measured)."""
    holds = None if value is None else (value >= limit if at_least else value <= limit)
    return {
        "target": name,
        "value": None if value is None else round(value, 3),
        "limit": ("at least " if at_least else "at most ") + f"{limit:g}",
        "holds": holds,
    }


def print_targets(targets: Sequence[Mapping[str, object]]) -> None:
    print("\n### targets\n")
    rows = []
    for t in targets:
        verdict = {True: "holds", False: "MISSED", None: "not measured"}[t["holds"]]
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        rows.append((t["target"], value, t["limit"], verdict))
    print(table(rows, ("target", "value", "limit", "verdict")))


# -- results -------------------------------------------------------------------------------
def common_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options every benchmark has: --repeats, --data, --quick."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"alternating rounds (default {repeats})"
    )
    parser.add_argument(
        "--data",
        type=lambda path: Path(path).resolve(),
        default=DEFAULT_DATA,
        help=f"where the generated data sets are cached (default {DEFAULT_DATA})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny data sets, to check that the script works (writes <name>-quick.json)",
    )
    return parser


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import nipype_heatmap

    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory, 1),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "nibabel": nb.__version__,
        "nipype_heatmap": f"{nipype_heatmap.__version__} ({commit})",
    }


def write_results(name: str, payload: Mapping[str, object], quick: bool = False) -> Path:
    """Write ``benchmarks/results/<name>.json`` (``<name>-quick.json`` for a quick run),
    with the machine, and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'-quick' if quick else ''}.json"
    content = {"benchmark": name, "quick": quick, "machine": machine(), **payload}
    path.write_text(json.dumps(content, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "generate":
        sys.exit("usage: _common.py generate FOLDER MAKER N OPTIONS_JSON")
    _folder, _maker, _n = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    print(f"generating {_folder} ...", file=sys.stderr)
    shutil.rmtree(_folder, ignore_errors=True)
    MAKERS[_maker](_folder, _n, **json.loads(sys.argv[5]))
