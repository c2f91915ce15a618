"""What the benchmarks share: the data sets, timing whole processes, and the results files.

Every benchmark times whole processes (interpreter start-up included), in alternating
order (one run of each contestant per round, so that a slow minute of this shared machine
hits all of them alike), and reports medians, ratios measured in the same run, and each
process's peak RSS. Results go to ``benchmarks/results/<name>.json`` with the date, the
machine and the versions, which the documentation's performance page renders.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nb
import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHAPE = (182, 218, 182)  # the MNI152 1 mm grid
AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -126], [0, 0, 1.0, -72], [0, 0, 0, 1]])
PY = sys.executable
BIN = Path(PY).parent


# -- data ----------------------------------------------------------------------------------
def _ellipsoid(shape) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    radii = np.array(shape) * np.array([0.42, 0.45, 0.40])
    center = np.array(shape) / 2
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True)) <= 1.0


def make_masks(folder: Path, n: int, seed: int = 1) -> None:
    """``n`` uint8 lesion masks (a few smooth blobs each, inside a brain-shaped ellipsoid)."""
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


#: The data sets: name -> (files, maker).
DATA_SETS = {"masks": (100, make_masks), "probs": (30, make_probs), "masks10": (10, make_masks)}


def ensure_data(root: Path, names: Sequence[str] = ("masks", "probs")) -> dict[str, Path]:
    """Generate (once, seeded) and return the data sets' folders."""
    out = {}
    for name in names:
        n, maker = DATA_SETS[name]
        folder = root / f"{name}_{n}"
        if len(list(folder.glob("*.nii.gz"))) != n:
            print(f"generating {folder} ...", file=sys.stderr)
            maker(folder, n)
        out[name] = folder
    return out


# -- timing --------------------------------------------------------------------------------
def run(cmd: Sequence[str]) -> tuple[float, float]:
    """Run a command; return wall seconds and the process's own peak RSS in MiB."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if code != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({code}):\n{err}")
    return elapsed, usage.ru_maxrss / 1024


def alternate(
    cmds: Mapping[str, Sequence[str]], repeats: int, before_each=None
) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """Time each command ``repeats`` times, one run of each per round; return medians,
    peak RSS and the raw times. ``before_each(label)`` runs (untimed) before each run."""
    times: dict[str, list[float]] = {k: [] for k in cmds}
    rss: dict[str, float] = {k: 0.0 for k in cmds}
    for _ in range(repeats):
        for label, cmd in cmds.items():
            if before_each is not None:
                before_each(label)
            seconds, mib = run(cmd)
            times[label].append(seconds)
            rss[label] = max(rss[label], mib)
    return {k: statistics.median(v) for k, v in times.items()}, rss, times


def ensure_bytecode() -> str:
    """Byte-compile this package's modules, as installing a wheel does (an editable install
    compiles nothing, and this machine sets ``PYTHONDONTWRITEBYTECODE``: every process would
    compile the sources again, ~50 ms that no wheel user pays)."""
    import nipype_heatmap

    folder = str(Path(nipype_heatmap.__file__).parent)
    subprocess.run([PY, "-m", "compileall", "-q", folder], check=True)
    return f"byte-compiled {folder} (as a wheel install is)"


def importable(module: str, python: str = PY) -> bool:
    """Whether ``python`` can import ``module``."""
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec('{module}') is None)"
    return subprocess.run([python, "-c", code]).returncode == 0


# -- results -------------------------------------------------------------------------------
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
        "python": platform.python_version(),
        "numpy": np.__version__,
        "nibabel": nb.__version__,
        "nipype_heatmap": f"{nipype_heatmap.__version__} ({commit})",
    }


def write_results(name: str, payload: Mapping[str, object]) -> Path:
    """Write ``benchmarks/results/<name>.json`` (with the machine) and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    content = {"benchmark": name, "machine": machine(), **payload}
    path.write_text(json.dumps(content, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
