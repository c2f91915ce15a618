"""Whole-process benchmark of nipype_heatmap against the reference loop and the anchors.

Usage::

    python benchmarks/bench_heatmap.py [--repeats 5] [--data DIR] [--quick] [--only masks]

Generates (once, seeded, cached in ``--data``) the two data sets of issue 3 on the MNI 1 mm
grid (182 x 218 x 182), written by nibabel:

- ``masks``: 100 uint8 binary lesion masks (a few smooth blobs each);
- ``probs``: 30 float32 probability maps (smooth fields in 0..1 inside a brain-shaped
  ellipsoid).

Then times, as whole processes (interpreter start-up and imports included), in alternating
order, each contestant ``--repeats`` times: this package as a function and as the CLI, the
reference nibabel loop (``reference_loop.py``), nidataset's ``generate_heatmap_volume`` and
nilearn's ``mean_img`` + save when installed, and the floor (read + inflate every file with
libdeflate on 2 threads, nothing else). Prints medians, ratios to the reference measured in
the same run, and each process's peak RSS; the command on 1 and 2 cores (``taskset``) and a
projection to 8, 16 and 32 cores from the measured per-core throughput, with the memory and
disk floors; then peak RSS of this package for N=10 and N=100. Also checks that this
package's output equals the reference's. This package is byte-compiled first, as a wheel
install is, and the start-up baseline (Python with numpy and nibabel imported) ends without
the modules' teardown, as the command does.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np

HERE = Path(__file__).resolve().parent
SHAPE = (182, 218, 182)
AFFINE = np.array(
    [[-1.0, 0, 0, 90], [0, 1.0, 0, -126], [0, 0, 1.0, -72], [0, 0, 0, 1]]
)  # MNI152 1 mm
PY = sys.executable
BIN = Path(PY).parent


def _ellipsoid(shape) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    radii = np.array(shape) * np.array([0.42, 0.45, 0.40])
    center = np.array(shape) / 2
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True)) <= 1.0


def make_masks(folder: Path, n: int, seed: int = 1) -> None:
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


def ensure_data(root: Path, quick: bool) -> dict[str, Path]:
    sets = {"masks": (100, make_masks), "probs": (30, make_probs), "masks10": (10, make_masks)}
    if quick:
        sets = {"masks": (10, make_masks), "probs": (4, make_probs), "masks10": (3, make_masks)}
    out = {}
    for name, (n, maker) in sets.items():
        folder = root / f"{name}_{n}"
        if len(list(folder.glob("*.nii.gz"))) != n:
            print(f"generating {folder} ...", file=sys.stderr)
            maker(folder, n)
        out[name] = folder
    return out


def run(cmd: list[str]) -> tuple[float, float]:
    """Run a command; return wall seconds and the process's own peak RSS in MiB."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return elapsed, usage.ru_maxrss / 1024


#: What any program must spend before its first file (without the modules' teardown).
STARTUP = "import os, numpy, nibabel; os._exit(0)"

FLOOR = """
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

NIDATASET = """
import sys
from nidataset.volume import generate_heatmap_volume
generate_heatmap_volume(sys.argv[1], sys.argv[2], "nidataset.nii.gz")
"""

NILEARN = """
import sys, os
from nilearn.image import mean_img
d = sys.argv[1]
files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith('.nii.gz'))
mean_img(files, copy_header=True).to_filename(os.path.join(sys.argv[2], 'nilearn.nii.gz'))
"""


COMPARE = """
import sys, numpy as np, nibabel as nb
a = np.asanyarray(nb.load(sys.argv[1] + '/function.nii.gz').dataobj)
b = np.asanyarray(nb.load(sys.argv[1] + '/ref.nii.gz').dataobj)
print('bit for bit' if np.array_equal(a.view(np.uint32), b.view(np.uint32)) else 'DIFFERENT')
"""


def ensure_bytecode() -> str:
    """Byte-compile this package's modules, as ``pip install`` does for a wheel; return a
    line saying so.

    An editable install (``pip install -e``) compiles nothing, and where
    ``PYTHONDONTWRITEBYTECODE`` is set (as on these machines) no ``__pycache__`` is ever
    written: every process would then compile the package's sources again (~50 ms), which
    the contestants installed from wheels never pay. Python still reads existing bytecode
    when that variable is set, so compiling once here makes the comparison fair.
    """
    import nipype_heatmap

    folder = str(Path(nipype_heatmap.__file__).parent)
    subprocess.run([PY, "-m", "compileall", "-q", folder], check=True)
    return f"byte-compiled {folder} (as a wheel install is)"


def _importable(module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec('{module}') is None)"
    return subprocess.run([PY, "-c", code]).returncode == 0


def contestants(data: Path, out: Path) -> dict[str, list[str]]:
    cmds = {
        "nipype_heatmap (function)": [
            PY,
            "-c",
            "import sys; from nipype_heatmap import generate_heatmap_volume as g; "
            "g(sys.argv[1], sys.argv[2], 'function.nii.gz', progress=False)",
            str(data),
            str(out),
        ],
        "nipype_heatmap (CLI)": [
            str(BIN / "nipype-heatmap"),
            str(data),
            "-o",
            str(out / "cli.nii.gz"),
            "-q",
        ],
        "reference nibabel loop": [
            PY,
            str(HERE / "reference_loop.py"),
            str(data),
            str(out / "ref.nii.gz"),
        ],
        "floor: read + inflate (libdeflate, 2 threads)": [PY, "-c", FLOOR, str(data)],
        "interpreter start-up (python -c pass)": [PY, "-c", "pass"],
        # Without the interpreter's teardown of those modules (~55 ms), which the command
        # skips (cli.exit_quickly): what any program must spend before its first file.
        "start-up + import numpy, nibabel": [PY, "-c", STARTUP],
    }
    if _importable("nidataset"):
        cmds["nidataset generate_heatmap_volume"] = [PY, "-c", NIDATASET, str(data), str(out)]
    if _importable("nilearn"):
        cmds["nilearn mean_img + save"] = [PY, "-c", NILEARN, str(data), str(out)]
    return cmds


def bench(name: str, data: Path, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cmds = contestants(data, out)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        rss: dict[str, float] = {k: 0.0 for k in cmds}
        for _ in range(repeats):
            for label, cmd in cmds.items():  # alternating: one run of each per round
                t, m = run(cmd)
                times[label].append(t)
                rss[label] = max(rss[label], m)
        # Compared in a child process: a large parent would inflate every later child's
        # peak RSS (Linux carries the forking parent's high-water mark across exec).
        identical = subprocess.run(
            [PY, "-c", COMPARE, str(out)], capture_output=True, text=True
        ).stdout.strip()
    n = len(list(data.glob("*.nii.gz")))
    ref_median = statistics.median(times["reference nibabel loop"])
    print(f"\n### {name}: {n} files, {SHAPE}, median of {repeats} alternating runs\n")
    print("| contestant | median (s) | reference / this | peak RSS (MiB) |")
    print("| --- | --- | --- | --- |")
    for label in cmds:
        med = statistics.median(times[label])
        print(f"| {label} | {med:.3f} | {ref_median / med:.1f}x | {rss[label]:.0f} |")
    print(f"\nthis package's output vs the reference loop's (float32 data): {identical}")
    medians = {label: statistics.median(values) for label, values in times.items()}
    cli = medians["nipype_heatmap (CLI)"]
    floor = medians["floor: read + inflate (libdeflate, 2 threads)"]
    startup = medians["start-up + import numpy, nibabel"]
    print(f"\nCLI / (floor + start-up): {cli / (floor + startup):.2f}")
    if "nidataset generate_heatmap_volume" in medians:
        print(f"nidataset / CLI: {medians['nidataset generate_heatmap_volume'] / cli:.1f}x")
    return medians


#: Memory-bound NumPy work alone: a float32 volume added into a float64 sum (what the
#: probability maps' sum does per file), on 1 thread and on 2 threads at once.
STREAMING = """
import time, statistics, numpy as np
from concurrent.futures import ThreadPoolExecutor
n = 182 * 218 * 182
sums = [np.zeros(n) for _ in range(2)]
vols = [np.ones(n, np.float32) for _ in range(2)]
def work(i):
    for _ in range(10):
        np.add(sums[i], vols[i], out=sums[i])
ones, twos = [], []
with ThreadPoolExecutor(2) as pool:
    for _ in range(7):
        start = time.perf_counter()
        work(0), work(1)
        ones.append(time.perf_counter() - start)
        start = time.perf_counter()
        list(pool.map(work, [0, 1]))
        twos.append(time.perf_counter() - start)
print(statistics.median(ones) / statistics.median(twos))
"""


def core_scaling(name: str, data: Path, repeats: int) -> dict[int, float]:
    """The CLI on 1 and on 2 cores (taskset), alternating; returns its medians.

    Beside it, on the same cores and in the same rounds, what this machine gives any
    program: the floor (inflating on 2 threads, no GIL, nothing shared: what scales
    best) and the start-up (one thread whatever the cores). From them, two bounds on the
    command's speed-up: Amdahl's with the start-up serial and all the rest halved, and
    the same with the rest scaling only as well as the floor does here.
    """
    cpus = sorted(os.sched_getaffinity(0))
    counts = [1, 2] if len(cpus) >= 2 else [1]
    with tempfile.TemporaryDirectory() as tmp:
        cmds = {
            "CLI": [str(BIN / "nipype-heatmap"), str(data), "-o", f"{tmp}/o.nii.gz", "-q"],
            "floor": [PY, "-c", FLOOR, str(data)],
            "start-up": [PY, "-c", STARTUP],
        }
        times: dict[tuple[str, int], list[float]] = {(c, k): [] for c in cmds for k in counts}
        for _ in range(repeats):
            for k in counts:
                cores = ",".join(str(c) for c in cpus[:k])
                for label, cmd in cmds.items():
                    times[label, k].append(run(["taskset", "-c", cores, *cmd])[0])
    med = {key: statistics.median(v) for key, v in times.items()}
    medians = {k: med["CLI", k] for k in counts}
    line = " | ".join(f"{k} core(s): {medians[k]:.3f} s" for k in counts)
    speedup = f", speed-up {medians[1] / medians[2]:.2f}x" if 2 in medians else ""
    print(f"\n{name}, CLI under taskset, median of {repeats}: {line}{speedup}")
    if 2 not in medians:
        return medians
    floor = med["floor", 1] / med["floor", 2]
    t1, s = med["CLI", 1], med["start-up", 1]
    streaming = float(subprocess.run([PY, "-c", STREAMING], capture_output=True, text=True).stdout)
    print(
        f"what this machine gives, same rounds: the floor {med['floor', 1]:.3f} -> "
        f"{med['floor', 2]:.3f} s ({floor:.2f}x); a float64 += float32 volume on 1 -> 2 "
        f"threads (memory-bound NumPy) {streaming:.2f}x; start-up {s:.3f} s "
        f"({med['start-up', 2]:.3f} s on 2 cores)"
    )
    halved, as_floor = t1 / (s + (t1 - s) / 2), t1 / (s + (t1 - s) / floor)
    print(
        f"bounds on the CLI's speed-up, start-up serial: the rest halved {halved:.2f}x; "
        f"the rest scaling as the floor {as_floor:.2f}x"
    )
    return medians


def work_speedup(medians: dict[int, float], startup: float) -> str:
    """Speed-up of the part that can scale: the whole run less the start-up and imports."""
    if 2 not in medians:
        return "n/a (one core)"
    return f"{(medians[1] - startup) / (medians[2] - startup):.2f}x"


PROJECTION_CORES = (1, 2, 8, 16, 32)


def projection(name: str, data: Path, medians: dict[int, float], startup: float) -> None:
    """Project the CLI's time to more cores from the measured per-core throughput.

    Work per file on one core is (t1 - start-up) / N; with k cores the reading, inflating
    and adding split k ways, at the parallel efficiency measured from 1 to 2 cores. Two
    floors bind instead: the disk (compressed bytes / read bandwidth) and memory bandwidth
    (the inflated bytes read and the float64 sum read and written, per file).
    """
    files = sorted(data.glob("*.nii.gz"))
    n = len(files)
    compressed = sum(f.stat().st_size for f in files)
    inflated = int(np.prod(SHAPE)) * nb.load(files[0]).get_data_dtype().itemsize * n
    work1 = medians[1] - startup
    efficiency = (work1 / (medians[2] - startup)) / 2 if 2 in medians else 1.0
    mem_bw = _memory_bandwidth()
    print(
        f"\nprojection for {name}: {n} files, {compressed / 2**20:.0f} MiB compressed, "
        f"{inflated / 2**20:.0f} MiB inflated; measured 1->2 core efficiency "
        f"{efficiency:.2f}, memory bandwidth ~{mem_bw / 2**30:.1f} GiB/s (numpy copy)"
    )
    print(
        "\n| cores | compute (s) | memory floor (s) | disk floor at 0.5 / 2 GB/s (s) | "
        "projected (s) | bound by |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    # Bytes moved per run: the inflated inputs, and the sum read and written once per file
    # (an integer sum as narrow as the inputs for masks; float64 otherwise).
    itemsize = nb.load(files[0]).get_data_dtype().itemsize
    sum_bytes = itemsize if nb.load(files[0]).get_data_dtype().kind in "iu" else 8
    touched = inflated + 2 * sum_bytes * int(np.prod(SHAPE)) * n
    for k in PROJECTION_CORES:
        compute = work1 / (k * (efficiency if k > 1 else 1.0))
        memory = touched / mem_bw
        disk_slow, disk_fast = compressed / 0.5e9, compressed / 2e9
        bound = max(compute, memory, disk_fast)
        which = {compute: "cores", memory: "memory bandwidth", disk_fast: "disk"}[bound]
        print(
            f"| {k} | {compute:.3f} | {memory:.3f} | {disk_slow:.3f} / {disk_fast:.3f} | "
            f"{startup + bound:.3f} | {which} |"
        )


MEMORY_BANDWIDTH = """
import time, numpy as np
a = np.ones(64 << 20, np.uint8)
b = np.empty_like(a)
best = float("inf")
for _ in range(5):
    start = time.perf_counter()
    np.copyto(b, a)
    best = min(best, time.perf_counter() - start)
print(2 * a.nbytes / best)
"""


def _memory_bandwidth() -> float:
    """Bytes per second of a large numpy copy (read + write), one thread, in a child (a
    large allocation here would raise every later child's reported peak RSS)."""
    done = subprocess.run([PY, "-c", MEMORY_BANDWIDTH], capture_output=True, text=True)
    return float(done.stdout.strip())


def memory_scaling(small: Path, large: Path) -> None:
    print("\n### peak RSS of nipype_heatmap (CLI) against N\n")
    print("| N | peak RSS (MiB) |")
    print("| --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for data in (small, large):
            n = len(list(data.glob("*.nii.gz")))
            peaks = [
                run([str(BIN / "nipype-heatmap"), str(data), "-o", f"{tmp}/o.nii.gz", "-q"])[1]
                for _ in range(3)
            ]
            print(f"| {n} | {max(peaks):.0f} |")


def get_parser() -> argparse.ArgumentParser:
    """The command line (also read by the README test: every option it shows exists)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "nipype_heatmap_bench"
    )
    parser.add_argument("--quick", action="store_true", help="tiny data sets, to check the script")
    parser.add_argument(
        "--only", choices=["masks", "probs"], help="time one data set (and skip the memory table)"
    )
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    return parser


def main() -> int:
    args = get_parser().parse_args()
    if args.generate_only:
        ensure_data(args.data, args.quick)
        return 0
    # Generate in a child process, so that this one stays small (see COMPARE).
    cmd = [PY, __file__, "--generate-only", "--data", str(args.data)]
    subprocess.run(cmd + (["--quick"] if args.quick else []), check=True)
    data = ensure_data(args.data, args.quick)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {np.__version__}, "
        f"nibabel {nb.__version__}"
    )
    # Which read and write path this install takes (a plain ``pip install`` brings both).
    from nipype_heatmap._optional import have_deflate, have_isal

    print(
        "read path: "
        + ("libdeflate one-shot inflate" if have_deflate else "zlib (deflate not importable)")
        + "; write path: "
        + ("ISA-L" if have_isal else "zlib (isal not importable)")
    )
    print(ensure_bytecode())
    for label, key in (("lesion masks (uint8)", "masks"), ("probability maps (float32)", "probs")):
        if args.only not in (None, key):
            continue
        medians = bench(label, data[key], args.repeats)
        cores = core_scaling(label, data[key], args.repeats)
        startup = medians["start-up + import numpy, nibabel"]
        print(
            f"speed-up 1 -> 2 cores without the start-up ({startup:.3f} s): "
            f"{work_speedup(cores, startup)}"
        )
        projection(label, data[key], cores, startup)
    if args.only is None:
        memory_scaling(data["masks10"], data["masks"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
