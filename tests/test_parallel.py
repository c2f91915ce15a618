"""Threads: the cores a process may use, and results identical for any number of reader
threads (reading and inflating are parallel; the voxel-wise work is one thread's)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from benchmarks.reference_loop import reference_heatmap
from nipype_heatmap import _runtime as parallel
from nipype_heatmap import api
from nipype_heatmap.accumulate import HeatmapAccumulator, Reference
from nipype_heatmap.api import accumulate_files, compute_heatmap
from nipype_heatmap.io import read_volume
from nipype_heatmap.maps import cohort_images
from nipype_heatmap.options import CohortOptions, MapOptions

from .conftest import SHAPE, default_affine


def _bits(array):
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


@pytest.fixture
def four_cpus(monkeypatch):
    """Let 1 to 4 reader threads run whatever this machine has."""
    monkeypatch.setattr(parallel, "available_cpus", lambda: 4)


@pytest.fixture
def reader_threads(monkeypatch):
    """The number of reader threads each accumulate_files call starts, in order."""
    seen = []
    real = api.inputs.ReadAhead

    def counting(*args, **kwargs):
        seen.append(kwargs["workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(api.inputs, "ReadAhead", counting)
    return seen


@pytest.fixture
def hard_inputs(make_nifti, rng):
    """Masks, scaled int16, float32 with NaN and Inf, a flipped and a permuted file."""
    files = [make_nifti(f"a{i}.nii.gz") for i in range(2)]
    files.append(
        make_nifti("b.nii.gz", rng.integers(-90, 90, SHAPE).astype(np.int16), slope=0.3, inter=-1)
    )
    for i in range(2):
        data = (rng.standard_normal(SHAPE) * 5).astype(np.float32)
        data[rng.random(SHAPE) < 0.15] = np.nan
        data[1, 2, i] = np.inf
        files.append(make_nifti(f"c{i}.nii", data))
    flipped = np.flip(rng.random(SHAPE).astype(np.float32), axis=1).copy()
    flip = np.eye(4)
    flip[1, 1], flip[1, 3] = -1, SHAPE[1] - 1
    files.append(make_nifti("d_flipped.nii.gz", flipped, affine=default_affine() @ flip))
    swapped = np.transpose((rng.random(SHAPE) > 0.5).astype(np.uint8), (2, 1, 0)).copy()
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1
    files.append(make_nifti("e_permuted.nii.gz", swapped, affine=default_affine() @ perm))
    return [str(f) for f in files]


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_any_thread_count_gives_the_serial_result_bit_for_bit(
    hard_inputs, threads, four_cpus, reader_threads
):
    serial = accumulate_files(hard_inputs, num_threads=1)
    parallel_acc = accumulate_files(hard_inputs, num_threads=threads)
    assert reader_threads == [1, threads]
    by_hand = HeatmapAccumulator(Reference.of(read_volume(hard_inputs[0])))
    for path in hard_inputs:  # on this thread, without any reader thread
        by_hand.add_file(path)
    for acc in (parallel_acc, by_hand):
        assert_array_equal(
            serial.sum.as_float().view(np.uint64), acc.sum.as_float().view(np.uint64)
        )
        assert_array_equal(serial.count.value, acc.count.value)
        assert serial.global_range == acc.global_range
    for flags in ((True, True, False), (False, False, True)):
        assert_array_equal(
            _bits(np.asanyarray(parallel_acc.map_image(MapOptions(*flags)).dataobj)),
            _bits(np.asanyarray(serial.map_image(MapOptions(*flags)).dataobj)),
        )
    # And the result is the plain loop's, on the files the loop can read as they are.
    plain = [f for f in hard_inputs if "flipped" not in f and "permuted" not in f]
    acc = accumulate_files(plain, num_threads=threads)
    assert_array_equal(
        _bits(np.asanyarray(acc.map_image(MapOptions()).dataobj)), _bits(reference_heatmap(plain))
    )


@pytest.mark.parametrize("threads", [1, 3, 4])
def test_integer_masks_are_exact_for_any_thread_count(
    make_nifti, rng, threads, four_cpus, reader_threads
):
    files = [str(make_nifti(f"m{i:02d}.nii.gz")) for i in range(12)]
    acc = accumulate_files(files, num_threads=threads)
    assert reader_threads == [threads]
    expected = sum(np.asanyarray(nb.load(f).dataobj).astype(np.int64) for f in files)
    assert acc.exact
    assert_array_equal(acc.sum.values, expected)


#: 69,120 voxels: more than two blocks of the spread's steps (2**15 voxels)
BIG = (48, 40, 36)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("where", ["last voxel", "last slices", "second half"])
def test_nan_past_the_first_part_of_a_scaled_map_is_missing_for_any_thread_count(
    make_nifti, rng, four_cpus, reader_threads, threads, where
):
    # A float32 map stored with scl_slope/scl_inter has NaN only past the first part of its
    # voxels (past the first block, the first piece read): with any number of reader
    # threads, the heatmap and the cohort maps are one thread's bit for bit, and they are
    # numpy's with the NaN as missing values.
    stored = np.asfortranarray(rng.standard_normal(BIG) * 4 + 20, dtype=np.float32)
    flat = stored.reshape(-1, order="F")  # a view, in the file's order of voxels
    if where == "last voxel":
        flat[-1] = np.nan
    elif where == "last slices":
        stored[..., -3:][rng.random((*BIG[:2], 3)) < 0.5] = np.nan
    else:
        flat[flat.size // 2 + 7 :: 997] = np.nan
    files = [
        str(make_nifti("a_mask.nii.gz", (rng.random(BIG) > 0.5).astype(np.uint8))),
        str(make_nifti("b_scaled.nii.gz", stored, slope=2.5, inter=-1.0)),
        str(make_nifti("c_mask.nii.gz", (rng.random(BIG) > 0.7).astype(np.uint8))),
        str(make_nifti("d_map.nii.gz", (rng.random(BIG) * 10).astype(np.float32))),
    ]
    cohort = CohortOptions(coverage=True, std=True, min_count=2)
    serial = accumulate_files(files, num_threads=1, overlap=True, spread=True)
    threaded = accumulate_files(files, num_threads=threads, overlap=True, spread=True)
    assert reader_threads == [1, threads]
    assert threaded.count.per_voxel is not None  # the NaN were seen as missing
    for options in (MapOptions(), MapOptions(False, False, False), MapOptions(True, False, True)):
        assert_array_equal(
            _bits(np.asanyarray(threaded.map_image(options).dataobj)),
            _bits(np.asanyarray(serial.map_image(options).dataobj)),
        )
    serial_maps, _ = cohort_images(serial, cohort)
    threaded_maps, _ = cohort_images(threaded, cohort)
    for name, img in serial_maps.items():
        mine = np.asanyarray(threaded_maps[name].dataobj)
        assert mine.tobytes() == np.asanyarray(img.dataobj).tobytes(), name

    stack = np.stack([nb.load(f).get_fdata() for f in files])  # scaled as nibabel scales
    assert np.isnan(stack[1]).sum() == np.isnan(stored).sum() > 0
    for use_mean in (True, False):
        assert_array_equal(
            _bits(np.asanyarray(threaded.map_image(MapOptions(use_mean, False)).dataobj)),
            _bits(reference_heatmap(files, use_mean, False)),
        )
    finite = np.isfinite(stack)
    with np.errstate(invalid="ignore"):
        variance = np.nanvar(stack, axis=0, ddof=1)
    assert_array_equal(np.asanyarray(threaded_maps["coverage"].dataobj), finite.sum(0))
    assert_array_equal(
        np.asanyarray(threaded_maps["overlap"].dataobj), (finite & (stack != 0)).sum(0)
    )
    got = np.asanyarray(threaded_maps["variance"].dataobj)
    assert_allclose(got, variance.astype(np.float32), rtol=1e-6)
    assert_allclose(
        np.asanyarray(threaded_maps["std"].dataobj),
        np.sqrt(variance).astype(np.float32),
        rtol=1e-6,
    )


def test_thread_count_honours_the_affinity_mask():
    code = textwrap.dedent(
        """
        import os
        from nipype_heatmap import _runtime as parallel
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        print(parallel.available_cpus(), parallel.resolve_num_threads(None),
              parallel.resolve_num_threads(8))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "1"]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
    ids=["v2-quota", "v2-unlimited", "v1-quota", "v1-half-a-cpu", "v1-unlimited", "none"],
)
def test_cgroup_cpu_quota(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert parallel._cgroup_quota_cpus(tmp_path) == expected


def test_the_smallest_limit_wins(monkeypatch):
    monkeypatch.setattr(parallel, "_affinity_cpus", lambda: 8)
    monkeypatch.setattr(parallel, "_cgroup_quota_cpus", lambda: 4)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert parallel.available_cpus() == 3
    assert parallel.resolve_num_threads(2) == 2  # never more than asked
    assert parallel.resolve_num_threads(16) == 3  # never more than allowed
    assert parallel.resolve_num_threads(None) == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert parallel.available_cpus() == 4
    with pytest.raises(ValueError, match="num_threads"):
        parallel.resolve_num_threads(-1)


def test_threads_of_a_node_are_reserved_by_nipype_and_not_hashed(make_nifti):
    from nipype.pipeline import engine as pe

    from nipype_heatmap.interfaces import HeatmapState, HeatmapVolume, mem_gb

    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(2)]
    for interface in (HeatmapVolume, HeatmapState):
        one, four = interface(in_files=files), interface(in_files=files, num_threads=4)
        assert one.inputs.get_hashval()[1] == four.inputs.get_hashval()[1]
        node = pe.Node(interface(in_files=files, num_threads=4), name="n", mem_gb=mem_gb(4))
        assert node.n_procs == 4 and node.mem_gb == mem_gb(4) > mem_gb(1)


def test_cli_nprocs_is_passed_through(make_nifti, in_dir, tmp_path, monkeypatch):
    from nipype_heatmap.cli.heatmap import main

    make_nifti("a.nii.gz")
    seen = {}
    real = api.write_cohort_maps
    monkeypatch.setattr(api, "write_cohort_maps", lambda *a, **k: seen.update(k) or real(*a, **k))
    assert main([str(in_dir), "-o", str(tmp_path / "o.nii.gz"), "--nprocs", "1", "-q"]) == 0
    assert seen["num_threads"] == 1
    img = compute_heatmap([in_dir / "a.nii.gz"], num_threads=1)
    assert_array_equal(nb.load(tmp_path / "o.nii.gz").get_fdata(), img.get_fdata())


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50000 100000\n", 1), ("100000 100000\n", 1), ("100001 100000\n", 2), ("bad\n", None)],
)
def test_fractional_quotas_round_up_to_whole_cpus(tmp_path, text, expected):
    (tmp_path / "cpu.max").write_text(text)
    assert parallel._cgroup_quota_cpus(tmp_path) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [("4", 4), ("1", 1), ("0", None), ("", None), ("x", None)]
)
def test_slurm_cpus_per_task(monkeypatch, value, expected):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", value)
    assert parallel._slurm_cpus() == expected


def test_without_any_limit_every_cpu_counts(monkeypatch):
    for probe in ("_affinity_cpus", "_cgroup_quota_cpus", "_slurm_cpus"):
        monkeypatch.setattr(parallel, probe, lambda: None)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 6)
    assert parallel.available_cpus() == 6
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: None)
    assert parallel.available_cpus() == 1


def test_zero_means_every_available_cpu(monkeypatch):
    monkeypatch.setattr(parallel, "available_cpus", lambda: 5)
    assert parallel.resolve_num_threads(0) == 5
    assert parallel.resolve_num_threads(5) == 5
    assert parallel.resolve_num_threads(1) == 1


_FAULTS = """
import resource, sys
from nipype_heatmap.api import accumulate_files
from nipype_heatmap._runtime import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
accumulate_files(sys.argv[2:], num_threads=2, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


@pytest.mark.slow  # 45 volumes of 7 MB written, then read twice in other processes
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt's thresholds are glibc's: elsewhere retain_freed_memory changes nothing",
)
def test_retained_memory_lets_each_volume_reuse_the_last_ones_pages(tmp_path):
    """45 masks of 7 MB: by default the inflated buffers come as fresh pages (~700 page
    faults a file: 20,000-33,000 for 30 files); with freed memory retained, the first few
    buffers' pages are reused (5,500-7,300 for 30 files, nearly what 6 files take)."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(45):
        mask = np.zeros((192, 192, 192), np.uint8)
        x, y, z = rng.integers(20, 170, 3)
        mask[x : x + 15, y : y + 15, z : z + 15] = 1
        files.append(str(tmp_path / f"sub-{i:02d}_mask.nii.gz"))
        nb.Nifti1Image(mask, np.eye(4)).to_filename(files[-1])
    # The median of three runs of each, alternated: glibc's dynamic threshold lets the
    # default reuse some pages too, depending on how the threads' frees interleave.
    faults: dict[str, list[int]] = {"default": [], "retain": []}
    for _ in range(3):
        for mode in faults:
            run = [sys.executable, "-c", _FAULTS, mode, *files]
            faults[mode].append(int(subprocess.run(run, check=True, capture_output=True).stdout))
    assert np.median(faults["retain"]) < np.median(faults["default"]) / 2, faults


def test_retain_freed_memory_changes_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(parallel.sys, "platform", "darwin")
    assert parallel.retain_freed_memory() is False

    class Musl:  # mallopt exists but does nothing
        @staticmethod
        def mallopt(param, value):
            return 0

    monkeypatch.setattr(parallel.sys, "platform", "linux")
    monkeypatch.setattr(parallel.ctypes, "CDLL", lambda name: Musl())
    assert parallel.retain_freed_memory() is False

    def no_library(name):  # a static interpreter without a C library to open
        raise OSError("cannot open shared object")

    monkeypatch.setattr(parallel.ctypes, "CDLL", no_library)
    assert parallel.retain_freed_memory() is False


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("cli.heatmap", ["{missing}", "-o", "{out}/map.nii.gz", "-q"]),
        ("cli.atlas", ["{missing}", "-o", "{out}/atlas", "-q"]),
        ("cli.bids", ["{missing}", "{out}/derivatives", "group"]),
    ],
)
def test_every_command_retains_freed_memory_before_reading(module, argv, tmp_path, monkeypatch):
    import importlib

    from nipype_heatmap.cli import _base as cli

    command = importlib.import_module(f"nipype_heatmap.{module}")
    calls = []
    monkeypatch.setattr(cli, "retain_freed_memory", lambda: calls.append(module))
    filled = [a.format(missing=tmp_path / "missing", out=tmp_path) for a in argv]
    assert command.main(filled) == 1  # the missing input is reported after the call
    assert calls == [module]
