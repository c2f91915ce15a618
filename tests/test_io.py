"""The fast read path: identical to nibabel on every case, and used where it should be."""

from __future__ import annotations

import gzip
import itertools
import os
import re

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from benchmarks.reference_loop import reference_heatmap
from nipype_heatmap import io
from nipype_heatmap.core import HeatmapAccumulator, compute_heatmap

from .conftest import SHAPE, default_affine

pytest.importorskip("deflate", reason="the fast read path needs the 'fast' extra (deflate)")

DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"]


def _random(rng, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(SHAPE) * 10).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), SHAPE).astype(dtype)


def _write(path, data, *, slope=None, inter=None, big_endian=False, nifti2=False):
    klass = nb.Nifti2Image if nifti2 else nb.Nifti1Image
    img = klass(data, default_affine(), dtype=data.dtype)
    if big_endian:
        header = img.header.as_byteswapped(">")
        img = klass(data, default_affine(), header)
    img.header.set_data_dtype(data.dtype)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    img.to_filename(path)
    return path


def _bits(array):
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scaled", [False, True], ids=["raw", "scaled"])
def test_fast_read_equals_nibabel(tmp_path, rng, dtype, scaled):
    data = _random(rng, dtype)
    slope, inter = (0.37, -2.5) if scaled else (None, None)
    path = _write(tmp_path / "a.nii.gz", data, slope=slope, inter=inter)
    assert io._inflate_nifti1(str(path)) is not None, "the fast path should apply here"
    fast = io.read_volume(path)
    plain = io.load_volume(path)
    assert fast.data.dtype == plain.data.dtype
    assert_array_equal(fast.data, plain.data)
    assert (fast.slope, fast.inter) == (plain.slope, plain.inter)
    assert_array_equal(fast.affine, plain.affine)
    assert fast.image_class is plain.image_class


@pytest.mark.parametrize(
    "case", ["uncompressed", "big_endian", "nifti2", "multi_member", "extension", "4d_t1"]
)
def test_unusual_files_fall_back_and_read_the_same(tmp_path, rng, case):
    data = _random(rng, "int16")
    path = tmp_path / ("a.nii" if case == "uncompressed" else "a.nii.gz")
    if case == "big_endian":
        _write(path, data, slope=0.5, inter=1.0, big_endian=True)
    elif case == "nifti2":
        _write(path, data, nifti2=True)
    elif case == "4d_t1":
        _write(path, data[..., None])
    elif case == "extension":
        img = nb.Nifti1Image(data, default_affine())
        img.header.extensions.append(nb.nifti1.Nifti1Extension(6, b"an AFNI-like comment"))
        img.to_filename(path)
    elif case == "multi_member":
        raw = nb.Nifti1Image(data, default_affine()).to_bytes()
        path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    else:
        _write(path, data)
    expected_fast = case in ("extension", "4d_t1")
    assert (io._inflate_nifti1(str(path)) is not None) == expected_fast
    volume = io.read_volume(path)
    assert_array_equal(volume.data, nb.load(path).dataobj.get_unscaled().reshape(SHAPE))
    assert_array_equal(volume.affine, nb.load(path).affine)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "huge_trailer"])
def test_damaged_gzip_falls_back_to_a_clear_error(make_nifti, damage):
    path = make_nifti("a.nii.gz", np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE))
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) * 2 // 3]
    elif damage == "corrupt":
        raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\x00" * 16
    else:
        raw[-4:] = (2**32 - 1).to_bytes(4, "little")  # claims 4 GiB: must not be allocated
    path.write_bytes(bytes(raw))
    assert io._inflate_nifti1(str(path)) is None
    with pytest.raises(ValueError, match=re.escape(str(path))):
        io.read_volume(path)


CASES = {
    "masks": lambda rng: [(rng.random(SHAPE) > 0.7).astype(np.uint8) for _ in range(4)],
    "int16_scaled": lambda rng: [_random(rng, "int16") for _ in range(3)],
    "float32_nan": lambda rng: [
        np.where(rng.random(SHAPE) > 0.1, rng.random(SHAPE), np.nan).astype(np.float32)
        for _ in range(3)
    ],
    "mixed_order": lambda rng: [
        (rng.random(SHAPE) > 0.5).astype(np.uint8),
        rng.random(SHAPE).astype(np.float32),
        _random(rng, "int16"),
        (rng.random(SHAPE) > 0.5).astype(np.uint8),
        rng.random(SHAPE).astype(np.float64),
    ],
    "big_endian_mix": lambda rng: [_random(rng, "int16"), _random(rng, "float32")],
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    ("use_mean", "clip", "normalize"), list(itertools.product([True, False], repeat=3))
)
def test_fast_path_equals_plain_loop_bit_for_bit(tmp_path, rng, case, use_mean, clip, normalize):
    arrays = CASES[case](rng)
    files = []
    for index, data in enumerate(arrays):
        scaled = case == "int16_scaled" or (case == "mixed_order" and data.dtype == np.int16)
        files.append(
            str(
                _write(
                    tmp_path / f"f{index}.nii.gz",
                    data,
                    slope=0.125 * (index + 1) if scaled else None,
                    inter=index - 1.5 if scaled else None,
                    big_endian=case == "big_endian_mix" and index == 0,
                )
            )
        )
    fast = np.asanyarray(compute_heatmap(files, use_mean, clip, normalize).dataobj)
    assert_array_equal(_bits(fast), _bits(reference_heatmap(files, use_mean, clip, normalize)))


def test_integer_sum_is_promoted_before_it_overflows(tmp_path):
    # 200 x 255 exceeds uint8 but fits uint16; 2 x 40000 more needs uint32.
    acc = HeatmapAccumulator()
    full = np.full(SHAPE, 255, np.uint8)
    path = _write(tmp_path / "full.nii.gz", full)
    volume = io.read_volume(path)
    acc.add_volume(volume)
    assert acc._int_total.dtype == np.uint8
    for _ in range(199):
        acc.add_volume(volume)
    assert acc._int_total.dtype == np.uint16
    assert acc.total.max() == 200 * 255
    big = io.read_volume(_write(tmp_path / "big.nii.gz", np.full(SHAPE, 40000, np.uint16)))
    for _ in range(2):
        acc.add_volume(big)
    assert acc._int_total.dtype == np.uint32
    assert acc.total.max() == 200 * 255 + 80000
    negative = io.read_volume(_write(tmp_path / "neg.nii.gz", np.full(SHAPE, -7, np.int8)))
    acc.add_volume(negative)
    assert acc._int_total.dtype.kind == "i"
    assert acc.total.max() == 200 * 255 + 80000 - 7


def test_read_ahead_yields_in_order_and_stops_on_error(tmp_path, rng):
    paths = [str(_write(tmp_path / f"v{i}.nii.gz", np.full(SHAPE, i, np.uint8))) for i in range(6)]
    bad = tmp_path / "v3.nii.gz"
    bad.write_bytes(b"not a gzip file")
    seen = []
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        for volume in io.iter_volumes(paths, read_ahead=2):
            seen.append(int(volume.data.max()))
    assert seen == [0, 1, 2]


def test_read_ahead_of_zero_reads_in_the_calling_thread(tmp_path):
    paths = [str(_write(tmp_path / f"v{i}.nii.gz", np.full(SHAPE, i, np.uint8))) for i in range(3)]
    assert [int(v.data.max()) for v in io.iter_volumes(paths, read_ahead=0)] == [0, 1, 2]


def test_output_drops_extensions_and_intent(tmp_path, rng):
    img = nb.Nifti1Image((rng.random(SHAPE) > 0.5).astype(np.uint8), default_affine())
    img.header.set_intent("label")
    img.header.extensions.append(nb.nifti1.Nifti1Extension(6, b"labels: 1=lesion"))
    img.to_filename(tmp_path / "a.nii.gz")
    out = compute_heatmap([tmp_path / "a.nii.gz"])
    assert out.header.get_intent()[0] == "none"
    assert len(out.header.extensions) == 0


def test_gzip_output_is_reproducible(tmp_path):
    payload = os.urandom(1000) * 50
    first = io.write_atomic([payload[:7], memoryview(payload)[7:]], tmp_path / "a.bin.gz")
    data = open(first, "rb").read()
    assert gzip.decompress(data) == payload
    assert data[4:8] == b"\0\0\0\0"  # mtime 0: the same map gives the same bytes
    second = io.write_atomic([payload], tmp_path / "b.bin.gz")
    assert open(second, "rb").read() == data
