"""The computation: docs/semantics.md §3-§5, header rules, NaN handling, merging, atomic output."""

from __future__ import annotations

import itertools
import logging
import os
import re

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from nipype_heatmap import api, io
from nipype_heatmap.accumulate import HeatmapAccumulator, Reference, values_on_grid
from nipype_heatmap.api import (
    accumulate_files,
    compute_heatmap,
    generate_heatmap_volume,
    write_heatmap,
)
from nipype_heatmap.io import read_volume
from nipype_heatmap.options import MapOptions

from .conftest import (
    SHAPE,
    current_umask,
    default_affine,
    file_digest,
    no_worker_thread_left,
    reference_heatmap,
)

FLAGS = list(itertools.product([True, False], repeat=3))
SUM = MapOptions(use_mean=False)  # the clipped sum


def _one_by_one(files, **tracks):
    """An accumulator of ``files`` added one at a time with ``add_file`` (no read-ahead)."""
    acc = HeatmapAccumulator(Reference.of(read_volume(files[0])), **tracks)
    for f in files:
        acc.add_file(f)
    return acc


def _values(path, acc):
    """The values of a file on an accumulator's grid (what ``remove`` takes back out)."""
    return values_on_grid(read_volume(path, digest=True), acc.reference.grid)


@pytest.fixture
def mixed_inputs(make_nifti, rng):
    """uint8 masks, int16 with scl_slope/scl_inter, and float32 maps, on one grid."""
    files = [make_nifti(f"a_mask{i}.nii.gz") for i in range(3)]
    files.append(
        make_nifti(
            "b_scaled.nii.gz",
            rng.integers(-300, 300, SHAPE).astype(np.int16),
            slope=0.01,
            inter=0.5,
        )
    )
    files.append(
        make_nifti("c_prob.nii", rng.random(SHAPE).astype(np.float32) * 3 - 1, dtype=np.float32)
    )
    return files


@pytest.mark.parametrize(("use_mean", "clip", "normalize"), FLAGS)
def test_flag_combinations_match_numpy(mixed_inputs, use_mean, clip, normalize):
    img = compute_heatmap(mixed_inputs, use_mean, clip, normalize)
    expected = reference_heatmap(mixed_inputs, use_mean, clip, normalize)
    out = np.asanyarray(img.dataobj)
    assert out.dtype == np.float32
    assert_allclose(out, expected.astype(np.float32), rtol=1e-6, atol=1e-6)


def test_clipping_happens_before_normalization(make_nifti):
    # Sum of two maps in [0, 1] reaches 2; clipped to 1, then normalized.
    a = np.zeros(SHAPE, np.float32)
    b = np.zeros(SHAPE, np.float32)
    a[0, 0, 0] = b[0, 0, 0] = 1.0
    a[1, 1, 1] = 0.25
    files = [make_nifti("a.nii.gz", a), make_nifti("b.nii.gz", b)]
    out = np.asanyarray(compute_heatmap(files, False, True, True).dataobj)
    assert out[0, 0, 0] == 1.0  # sum 2 clipped to 1
    assert out[1, 1, 1] == np.float32(0.25)  # (0.25 - 0) / (1 - 0), not 0.25 / 2


def test_finite_mean_is_exactly_sum_over_n(make_nifti, rng):
    files = [make_nifti(f"p{i}.nii.gz", rng.random(SHAPE).astype(np.float32)) for i in range(7)]
    total = sum(nb.load(f).get_fdata(dtype=np.float64) for f in files)
    out = np.asanyarray(compute_heatmap(files, True, False).dataobj)
    assert_array_equal(out, (total / 7).astype(np.float32))


def test_uint8_masks_are_not_quantized_to_the_input_dtype(make_nifti):
    ones = np.ones(SHAPE, np.uint8)
    zeros = np.zeros(SHAPE, np.uint8)
    files = [
        make_nifti("a.nii.gz", ones),
        make_nifti("b.nii.gz", zeros),
        make_nifti("c.nii.gz", zeros),
    ]
    img = compute_heatmap(files)
    assert img.get_data_dtype() == np.float32
    assert np.asanyarray(img.dataobj)[0, 0, 0] == np.float32(1 / 3)


def test_nan_and_inf_are_missing_values(make_nifti):
    a = np.full(SHAPE, 1.0, np.float32)
    b = np.full(SHAPE, 3.0, np.float32)
    c = np.full(SHAPE, 5.0, np.float32)
    a[0, 0, 0] = np.nan
    b[0, 0, 0] = np.inf
    b[1, 0, 0] = -np.inf
    a[2, 0, 0] = b[2, 0, 0] = c[2, 0, 0] = np.nan  # no finite value at all
    files = [
        make_nifti(n, d, dtype=np.float32) for n, d in (("a.nii", a), ("b.nii", b), ("c.nii", c))
    ]
    mean = np.asanyarray(compute_heatmap(files, True, False).dataobj)
    total = np.asanyarray(compute_heatmap(files, False, False).dataobj)
    assert mean[0, 0, 0] == 5.0  # only c is finite there
    assert mean[1, 0, 0] == 3.0  # (1 + 5) / 2
    assert np.isnan(mean[2, 0, 0])
    assert total[2, 0, 0] == 0.0
    assert mean[3, 3, 3] == 3.0
    assert total[1, 0, 0] == 6.0


def test_clip_range_ignores_non_finite_values(make_nifti):
    a = np.full(SHAPE, 2.0, np.float32)
    a[0, 0, 0] = np.inf
    b = np.full(SHAPE, 4.0, np.float32)
    files = [make_nifti("a.nii", a, dtype=np.float32), make_nifti("b.nii", b, dtype=np.float32)]
    total = np.asanyarray(compute_heatmap(files, False, True).dataobj)
    assert total.max() == 4.0  # 2 + 4 clipped to the finite max 4, not to inf


def test_clipped_sum_of_binary_masks_is_the_union(make_nifti):
    files = [make_nifti(f"m{i}.nii.gz") for i in range(4)]
    union = np.any([nb.load(f).get_fdata() > 0 for f in files], axis=0)
    out = np.asanyarray(compute_heatmap(files, use_mean=False, clip_to_input_range=True).dataobj)
    assert_array_equal(out, union.astype(np.float32))


def test_normalization_skipped_for_constant_map(make_nifti, caplog):
    files = [make_nifti(f"m{i}.nii.gz", np.ones(SHAPE, np.uint8)) for i in range(2)]
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        out = np.asanyarray(compute_heatmap(files, normalize=True).dataobj)
    assert_array_equal(out, np.ones(SHAPE, np.float32))
    assert "Normalization skipped" in caplog.text


def test_header_keeps_first_input_metadata(make_nifti, rng):
    def hook(hdr):
        hdr.set_qform(default_affine(), code=1)
        hdr.set_sform(default_affine(), code=4)
        hdr.set_xyzt_units("mm", "sec")
        hdr.set_dim_info(freq=0, phase=1, slice=2)

    first = make_nifti(
        "a.nii.gz", rng.integers(0, 200, SHAPE).astype(np.uint8), slope=0.5, header_hook=hook
    )
    make_nifti("b.nii.gz")
    img = nb.load(generate_heatmap_volume(first.parent, first.parent.parent / "out"))
    hdr = img.header
    ref = nb.load(first).header
    assert img.get_data_dtype() == np.float32
    assert hdr.get_slope_inter() == (None, None)
    assert_allclose(img.affine, nb.load(first).affine)
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 4)
    assert hdr.get_xyzt_units() == ref.get_xyzt_units()
    assert hdr.get_dim_info() == ref.get_dim_info()
    assert_allclose(hdr.get_zooms(), ref.get_zooms())
    data = img.get_fdata()
    assert (float(hdr["cal_min"]), float(hdr["cal_max"])) == (data.min(), data.max())
    assert hdr["descrip"].tobytes().rstrip(b"\0") == b"nipype_heatmap mean of 2 volumes (clipped)"


def test_output_is_3d_when_first_input_is_4d_with_one_volume(make_nifti, rng):
    first = make_nifti("a.nii.gz", (rng.random(SHAPE + (1,)) > 0.5).astype(np.uint8))
    second = make_nifti("b.nii.gz")
    img = compute_heatmap([first, second])
    assert img.shape == SHAPE
    assert img.header["dim"][0] == 3


def test_nifti2_first_input_gives_nifti2_output(make_nifti, tmp_path):
    make_nifti("a.nii.gz", nifti2=True)
    make_nifti("b.nii.gz")
    out = generate_heatmap_volume(tmp_path / "inputs", tmp_path / "out")
    assert type(nb.load(out)) is nb.Nifti2Image


def test_descrip_says_what_was_made_in_full_within_80_bytes():
    longest = MapOptions(use_mean=False, clip_to_input_range=True, normalize=True).descrip(10**9)
    assert longest == b"nipype_heatmap sum of 1000000000 volumes (clipped, normalized)"
    plain_mean = MapOptions(use_mean=True, clip_to_input_range=False, normalize=False)
    assert plain_mean.descrip(42) == b"nipype_heatmap mean of 42 volumes"
    header = nb.Nifti1Header()
    header["descrip"] = longest  # a NIfTI-1 field of 80 bytes: it must fit unclipped
    assert header["descrip"].tobytes().rstrip(b"\0") == longest


# -- unreadable inputs -----------------------------------------------------------------
@pytest.mark.parametrize(
    "damage",
    ["truncated_gzip", "corrupt_gzip", "not_nifti_gz", "not_nifti", "truncated_nii", "empty"],
)
def test_unreadable_file_raises_value_error_naming_it(make_nifti, in_dir, damage):
    make_nifti("a.nii.gz")
    good = make_nifti("b.nii")
    if damage == "truncated_gzip":
        raw = (in_dir / "a.nii.gz").read_bytes()
        bad = in_dir / "c.nii.gz"
        bad.write_bytes(raw[: len(raw) // 2])
    elif damage == "corrupt_gzip":
        raw = bytearray((in_dir / "a.nii.gz").read_bytes())
        raw[40:60] = b"\xff" * 20
        bad = in_dir / "c.nii.gz"
        bad.write_bytes(bytes(raw))
    elif damage == "not_nifti_gz":
        import gzip

        bad = in_dir / "c.nii.gz"
        bad.write_bytes(gzip.compress(b"this is a text file, not an image" * 20))
    elif damage == "not_nifti":
        bad = in_dir / "c.nii"
        bad.write_text("subject,lesion_volume\n01,3.2\n")
    elif damage == "truncated_nii":
        raw = good.read_bytes()
        bad = in_dir / "c.nii"
        bad.write_bytes(raw[: len(raw) - 100])
    else:
        bad = in_dir / "c.nii.gz"
        bad.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        generate_heatmap_volume(in_dir, in_dir.parent / "out")
    assert not (in_dir.parent / "out" / "heatmap_volume.nii.gz").exists()


def test_empty_file_list_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="no input file"):
        write_heatmap([], tmp_path / "out.nii.gz")


def test_missing_input_file_raises_file_not_found(make_nifti, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        compute_heatmap([make_nifti("a.nii.gz"), tmp_path / "missing.nii.gz"])


# -- output ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["sub/out.nii.gz", "../out.nii.gz", "out.mgz", "out", ".nii.gz", "..", ".hidden.nii"]
)
def test_bad_output_filename_raises_value_error(make_nifti, in_dir, tmp_path, name, monkeypatch):
    make_nifti("a.nii.gz")
    monkeypatch.setattr(io.reading, "_read_regular_file", _must_not_read)  # voxels
    monkeypatch.setattr(api.inputs, "read_header", _must_not_read)  # headers checked first
    monkeypatch.setattr(api.inputs, "read_volume", _must_not_read)
    with pytest.raises(ValueError, match=re.escape(f"output_filename {name!r}")):
        generate_heatmap_volume(in_dir, tmp_path / "out", name)
    assert not (tmp_path / "out").exists()


def _must_not_read(path, *args, **kwargs):
    raise AssertionError(f"input {path} was read before the output was checked")


def test_output_folder_is_created_with_parents(make_nifti, in_dir, tmp_path):
    make_nifti("a.nii.gz")
    out = generate_heatmap_volume(in_dir, tmp_path / "a" / "b" / "c", "x.nii")
    assert out == str(tmp_path / "a" / "b" / "c" / "x.nii")
    assert nb.load(out).shape == SHAPE
    assert (tmp_path / "a" / "b" / "c" / "x.nii").read_bytes()[344:348] != b"\x1f\x8b\x08\x00"


def test_gzip_output_is_gzip_and_uncompressed_is_not(make_nifti, in_dir, tmp_path):
    make_nifti("a.nii.gz")
    gz = generate_heatmap_volume(in_dir, tmp_path, "h.nii.gz")
    plain = generate_heatmap_volume(in_dir, tmp_path, "h.nii")
    assert open(gz, "rb").read(2) == b"\x1f\x8b"
    assert open(plain, "rb").read(2) != b"\x1f\x8b"
    assert_array_equal(nb.load(gz).get_fdata(), nb.load(plain).get_fdata())


def test_output_mode_follows_umask(make_nifti, in_dir, tmp_path):
    make_nifti("a.nii.gz")
    out = generate_heatmap_volume(in_dir, tmp_path)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~current_umask()


def test_rerun_into_input_folder_is_idempotent(make_nifti, in_dir):
    files = [make_nifti(f"m{i}.nii.gz") for i in range(3)]
    first = generate_heatmap_volume(in_dir, in_dir)
    first_bytes = open(first, "rb").read()
    second = generate_heatmap_volume(in_dir, in_dir)
    assert first == second
    assert open(second, "rb").read() == first_bytes
    assert_allclose(nb.load(second).get_fdata(), reference_heatmap(files), rtol=1e-6)
    assert b"of 3 volumes" in nb.load(second).header["descrip"].tobytes()


def test_failed_rerun_leaves_previous_output_byte_identical(make_nifti, in_dir, tmp_path):
    make_nifti("a.nii.gz")
    make_nifti("b.nii.gz")
    out = generate_heatmap_volume(in_dir, tmp_path / "out")
    before = file_digest(out)
    make_nifti("c.nii.gz", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="c.nii.gz"):
        generate_heatmap_volume(in_dir, tmp_path / "out")
    assert file_digest(out) == before
    assert os.listdir(tmp_path / "out") == ["heatmap_volume.nii.gz"]  # no temp file left


def test_inputs_are_never_modified(mixed_inputs, tmp_path):
    before = {f: (file_digest(f), os.stat(f).st_mtime_ns) for f in mixed_inputs}
    write_heatmap(mixed_inputs, tmp_path / "out.nii.gz", normalize=True)
    assert {f: (file_digest(f), os.stat(f).st_mtime_ns) for f in mixed_inputs} == before


def test_output_that_is_an_input_is_refused(make_nifti, in_dir):
    a = make_nifti("a.nii.gz")
    b = make_nifti("b.nii.gz")
    before = file_digest(a)
    with pytest.raises(ValueError, match=re.escape(f"{a}: the heatmap would overwrite the input")):
        write_heatmap([a, b], a)
    assert file_digest(a) == before


# -- accumulator -----------------------------------------------------------------------
@pytest.mark.parametrize("split", [1, 2, 4])
def test_merged_partials_equal_single_pass(mixed_inputs, make_nifti, split):
    nan_map = np.full(SHAPE, 0.5, np.float32)
    nan_map[:2] = np.nan
    files = [*mixed_inputs, make_nifti("d_nan.nii", nan_map, dtype=np.float32)]
    single = _one_by_one(files)
    merged = _one_by_one(files[:split]).merge(_one_by_one(files[split:]))
    assert merged.n_inputs == single.n_inputs == len(files)
    assert merged.sources == [str(f) for f in files]
    for flags in FLAGS:
        options = MapOptions(*flags)
        assert_allclose(merged.aggregate(options), single.aggregate(options), rtol=1e-12)
    assert_array_equal(merged.count.value, single.count.value)


def test_merge_refuses_another_grid(make_nifti):
    a = _one_by_one([make_nifti("a.nii.gz")])
    b = _one_by_one([make_nifti("b.nii.gz", np.zeros((7, 8, 10), np.uint8))])
    with pytest.raises(ValueError, match=r"b\.nii\.gz.*one grid"):
        a.merge(b)


def test_aggregate_of_empty_accumulator_raises_value_error(make_nifti):
    # An accumulator has a reference grid from its creation, but no input until one is
    # added: it has no map (not a map of NaN, nor a sum of zeros).
    empty = HeatmapAccumulator(Reference.of(read_volume(make_nifti("a.nii.gz"))))
    for options in (MapOptions(), SUM):
        with pytest.raises(ValueError, match="no input volume"):
            empty.aggregate(options)
        with pytest.raises(ValueError, match="no input volume"):
            empty.map_image(options)


# -- progress and logging --------------------------------------------------------------
def test_progress_bar_goes_to_stderr(make_nifti, in_dir, tmp_path, capsys):
    make_nifti("a.nii.gz")
    generate_heatmap_volume(in_dir, tmp_path, progress=True)
    captured = capsys.readouterr()
    assert "1/1" in captured.err
    assert captured.out == ""


def test_debug_logs_per_file_ranges_and_statistics(mixed_inputs, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        write_heatmap(mixed_inputs, tmp_path / "o.nii.gz", debug=True)
    for f in mixed_inputs:
        assert f"{f}: finite value range" in caplog.text
    assert "5 volume(s) on grid (7, 8, 9)" in caplog.text


def test_without_debug_statistics_stay_at_debug_level(mixed_inputs, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        write_heatmap(mixed_inputs, tmp_path / "o.nii.gz")
    assert "finite value range" not in caplog.text


# -- exact integer sums never wrap (issue: two int64 2**63-1 summed to 0) -----------------
@pytest.mark.parametrize(
    "values",
    [
        [2**63 - 1, 2**63 - 1],
        [2**64 - 1, 2**64 - 1, 1],
        [-(2**63), -(2**63), 5],
        [2**53, 1, 1],
        [2**52, 2**52, 2**52, -1],
        [1, 2**53 + 1, -(2**53)],
    ],
    ids=["int64_max", "uint64_max", "int64_min", "past_2_53", "at_2_53", "mixed"],
)
def test_integer_sums_equal_the_float64_loop_and_never_wrap(make_nifti, values):
    files = []
    for index, value in enumerate(values):
        dtype = np.uint64 if value >= 2**63 else np.int64
        data = np.full(SHAPE, value, dtype)
        data[0, 0, 0] = 0
        files.append(make_nifti(f"v{index}.nii", data, dtype=dtype))
    for use_mean in (True, False):
        out = np.asanyarray(compute_heatmap(files, use_mean, False).dataobj)
        expected = _plain_float64_loop(files, use_mean)
        assert_array_equal(out, expected)
        if all(v >= 0 for v in values):  # a wrapped sum would be small or negative
            assert np.all(out[1:] >= np.float32(max(values)) / (len(values) if use_mean else 1))
        if all(v <= 5 for v in values) and values[0] < 0:
            assert np.all(out[1:] < 0)


def _plain_float64_loop(files, use_mean):
    total = np.zeros(SHAPE)
    for f in files:
        total += nb.load(f).get_fdata()
    return (total / len(files) if use_mean else total).astype(np.float32)


def test_exact_integer_sum_stays_exact_below_2_53(make_nifti):
    # 2**52 + 1 three times: exact in integers and in float64 (< 2**53 + 2**52 ...).
    files = [
        make_nifti(f"v{i}.nii", np.full(SHAPE, 2**50 + 1, np.int64), dtype=np.int64)
        for i in range(3)
    ]
    out = np.asanyarray(compute_heatmap(files, False, False).dataobj)
    assert out[0, 0, 0] == np.float32(3 * (2**50 + 1))


# -- counts after missing values (mutants: count not updated, clip broken by all-NaN) ------
def test_count_is_updated_for_complete_volumes_after_one_with_nan(make_nifti):
    with_nan = np.full(SHAPE, 1.0, np.float32)
    with_nan[0] = np.nan
    files = [
        make_nifti("a.nii", with_nan, dtype=np.float32),
        make_nifti("b.nii", np.full(SHAPE, 3.0, np.float32), dtype=np.float32),
        make_nifti("c.nii", np.full(SHAPE, 5.0, np.float32), dtype=np.float32),
    ]
    out = np.asanyarray(compute_heatmap(files, True, False).dataobj)
    assert out[0, 0, 0] == 4.0  # (3 + 5) / 2
    assert out[1, 0, 0] == 3.0  # (1 + 3 + 5) / 3


def test_all_nan_input_before_finite_ones_keeps_the_clip_range(make_nifti):
    files = [
        make_nifti("a.nii", np.full(SHAPE, np.nan, np.float32), dtype=np.float32),
        make_nifti("b.nii", np.full(SHAPE, 0.25, np.float32), dtype=np.float32),
        make_nifti("c.nii", np.full(SHAPE, 0.75, np.float32), dtype=np.float32),
    ]
    out = np.asanyarray(compute_heatmap(files, False, True).dataobj)
    assert np.all(out == 0.75)  # sum 1.0 clipped to the finite input range [0.25, 0.75]


@pytest.mark.parametrize("num_threads", [1, 2])
def test_no_volume_outlives_its_turn_the_first_included(make_nifti, rng, monkeypatch, num_threads):
    # Memory does not grow with the files: a volume's voxels go once it is added (the
    # first file's too, which is read before the others to set the grid).
    import weakref

    files = [make_nifti(f"p{i}.nii.gz", rng.random(SHAPE).astype(np.float32)) for i in range(7)]
    alive = []
    real_add = HeatmapAccumulator.add

    def add(self, x):
        real_add(self, x)
        # the volume added before the previous one must be gone (the previous one may be
        # the loop's until the next read is asked for)
        assert all(ref() is None for ref in alive[:-1]), [ref() is None for ref in alive]
        alive.append(weakref.ref(x.array))

    monkeypatch.setattr(HeatmapAccumulator, "add", add)
    acc = accumulate_files(files, num_threads=num_threads)
    assert acc.n_inputs == 7 and len(alive) == 7


# Gaps found by the mutation run of the former core.py (tools/mutate.py; the code is now in
# accumulate/ and api.py): each test below went red on the mutant named in its comment.


def test_normalization_ignores_voxels_without_any_finite_value(make_nifti):
    # A voxel NaN in every input has a NaN mean; normalization runs over the finite voxels
    # only (not: the whole map NaN, or normalization skipped), and cal_min/cal_max are the
    # finite range. Mutants: `_finite_range`'s fast-path test negated / `and` -> `or`, its
    # empty test negated.
    a = np.full(SHAPE, 1.0, np.float32)
    b = np.full(SHAPE, 3.0, np.float32)
    a[1, 2, 3] = 5.0
    a[0, 0, 0] = b[0, 0, 0] = np.nan
    files = [make_nifti("a.nii", a, dtype=np.float32), make_nifti("b.nii", b, dtype=np.float32)]
    img = compute_heatmap(files, use_mean=True, clip_to_input_range=False, normalize=True)
    out = np.asanyarray(img.dataobj)
    assert np.isnan(out[0, 0, 0])
    assert out[1, 2, 3] == 1.0  # mean 4, the finite maximum
    assert out[2, 2, 2] == 0.0  # mean 2, the finite minimum
    assert np.count_nonzero(np.isnan(out)) == 1
    assert (float(img.header["cal_min"]), float(img.header["cal_max"])) == (0.0, 1.0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_cal_max_is_the_finite_maximum_when_the_float32_sum_overflows(make_nifti):
    # Two values near the float32 maximum sum to more than float32 can hold: that voxel is
    # +inf in the float32 map; the header's display range stays finite (viewers scale by it).
    a = np.full(SHAPE, 1.0, np.float32)
    a[0, 0, 0] = 3e38
    files = [make_nifti(n, a, dtype=np.float32) for n in ("a.nii", "b.nii")]
    img = compute_heatmap(files, use_mean=False, clip_to_input_range=False)
    out = np.asanyarray(img.dataobj)
    assert out[0, 0, 0] == np.inf
    assert (float(img.header["cal_min"]), float(img.header["cal_max"])) == (2.0, 2.0)


def test_output_header_drops_the_first_inputs_intent_and_extensions(make_nifti):
    # A label intent, or an extension describing the first input (AFNI, CIFTI), would make
    # viewers misread the map. Mutants: `set_intent("none")` and `extensions.clear()` removed.
    def hook(hdr):
        hdr.set_intent("label")
        hdr.extensions.append(nb.nifti1.Nifti1Extension(6, b"describes the first input"))

    files = [make_nifti("a.nii.gz", header_hook=hook), make_nifti("b.nii.gz")]
    out = write_heatmap(files, files[0].parent.parent / "out" / "map.nii.gz")
    hdr = nb.load(out).header
    assert hdr.get_intent()[0] == "none"
    assert len(hdr.extensions) == 0
    assert nb.load(files[0]).header.get_intent()[0] == "label"  # the input is untouched


def test_write_heatmap_defaults_are_the_clipped_mean_without_normalization(make_nifti, rng):
    # The documented defaults of the function most scripts call (mutants: the mean and
    # normalization defaults flipped; clipping cannot change a mean). A sum would be 1.0
    # or 0.5, normalization would stretch 0.25..0.5 to 0..1.
    a = np.full(SHAPE, 0.25, np.float32)
    b = np.full(SHAPE, 0.75, np.float32)
    a[0, 0, 0] = b[0, 0, 0] = 0.25
    files = [make_nifti("a.nii", a, dtype=np.float32), make_nifti("b.nii", b, dtype=np.float32)]
    out = nb.load(write_heatmap(files, files[0].parent.parent / "out.nii.gz")).get_fdata()
    assert out[0, 0, 0] == 0.25
    assert np.count_nonzero(out == 0.5) == out.size - 1


def test_no_worker_thread_outlives_the_computation(make_nifti):
    # Mutant: the reader threads' close() removed.
    files = [
        make_nifti(f"p{i}.nii", np.full(SHAPE, i / 4, np.float32), dtype=np.float32)
        for i in range(3)
    ]
    kept = []  # accumulators a caller keeps (to merge, save or update) hold no threads
    with no_worker_thread_left():
        for _ in range(2):
            compute_heatmap(files, num_threads=3)
            kept.append(accumulate_files([str(f) for f in files], num_threads=2, overlap=True))
    assert all(acc.n_inputs == 3 for acc in kept)


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (np.uint8, (200, 200, 100)),
        (np.int16, (30000, 30000, -30000)),
        (np.int16, (-30000,) * 3),
        (np.int16, (-32768, -1, 0)),  # one below int16: the bounds must not be off by one
    ],
)
def test_integer_sums_widen_before_they_would_wrap(make_nifti, dtype, values):
    # The exact integer sum starts in the input's width and must widen as the bounds grow
    # (mutant: the widening skipped, and the sum wraps silently).
    files = [make_nifti(f"v{i}.nii.gz", np.full(SHAPE, v, dtype)) for i, v in enumerate(values)]
    total = compute_heatmap(files, use_mean=False, clip_to_input_range=False).get_fdata()
    assert np.all(total == sum(values))
    mean = np.asanyarray(compute_heatmap(files, clip_to_input_range=False).dataobj)
    assert np.all(mean == np.float32(sum(values) / 3))


def test_one_finite_voxel_gives_the_range_and_the_display_range(make_nifti):
    # A volume whose only finite value is one voxel still has a range (mutant: one-element
    # arrays treated as empty), and a map with one finite voxel has it as cal_min/cal_max.
    a = np.full(SHAPE, np.nan, np.float32)
    a[3, 3, 3] = 5.0
    b = np.full(SHAPE, 1.0, np.float32)
    files = [make_nifti("a.nii", a, dtype=np.float32), make_nifti("b.nii", b, dtype=np.float32)]
    out = np.asanyarray(compute_heatmap(files, use_mean=False, clip_to_input_range=True).dataobj)
    assert out[3, 3, 3] == 5.0  # 6 clipped to the range [1, 5], not to [1, 1]
    assert out[0, 0, 0] == 1.0
    img = compute_heatmap([files[0]], use_mean=True, clip_to_input_range=False)
    assert (float(img.header["cal_min"]), float(img.header["cal_max"])) == (5.0, 5.0)


def test_map_options_default_to_the_clipped_mean_without_normalization(make_nifti):
    files = [make_nifti(f"m{i}.nii.gz", np.full(SHAPE, i + 1, np.uint8)) for i in range(3)]
    acc = accumulate_files([str(f) for f in files])
    assert MapOptions() == MapOptions(use_mean=True, clip_to_input_range=True, normalize=False)
    assert np.all(acc.aggregate(MapOptions()) == 2.0)
    assert np.all(np.asanyarray(acc.map_image(MapOptions()).dataobj) == 2.0)


def test_progress_bar_by_default_only_when_stderr_is_a_terminal(make_nifti, capsys, monkeypatch):
    # Under Nipype, SLURM or a pipe, stderr is a log: no bar unless asked for; in a
    # terminal, the bar by default.
    import io as _io

    files = [make_nifti(f"m{i}.nii.gz") for i in range(2)]
    compute_heatmap(files)
    assert capsys.readouterr().err == ""
    compute_heatmap(files, progress=True)
    assert "heatmap" in capsys.readouterr().err

    class Terminal(_io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    compute_heatmap(files)
    assert "heatmap: 100%" in terminal.getvalue()


def test_merging_partials_with_and_without_cohort_statistics_is_refused(make_nifti):
    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(4)]
    for first, second in (({"spread": True}, {}), ({}, {"overlap": True})):
        tracked = accumulate_files(files[:2], **first)
        other = accumulate_files(files[2:], **second)
        with pytest.raises(ValueError, match="different cohort statistics") as err:
            tracked.merge(other)
        assert str(err.value).startswith(f"{files[2]}: ")  # names the partial's first file


def test_merged_integer_partials_keep_an_exact_integer_sum(make_nifti, rng):
    files = [
        str(make_nifti(f"v{i}.nii.gz", rng.integers(-9, 99, SHAPE).astype(np.int16)))
        for i in range(4)
    ]
    merged = accumulate_files(files[:2]).merge(accumulate_files(files[2:]))
    assert merged.exact and merged.sum.values.dtype.kind == "i"
    expected = sum(nb.load(f).get_fdata() for f in files)
    assert_array_equal(merged.sum.values, expected)


def test_a_removal_that_changes_the_grids_axis_order_keeps_every_voxel(make_nifti, rng):
    # The first input is stored with x and z swapped (same grid in the world); removing it
    # makes the next input the reference, in its own voxel order with a deeper last axis:
    # every statistic must follow that shape (the last voxels of the new axis added again).
    data = [rng.random(SHAPE).astype(np.float32) for _ in range(4)]
    swapped = default_affine()[:, [2, 1, 0, 3]]
    files = [make_nifti("a.nii", data[0].transpose(2, 1, 0), dtype=np.float32, affine=swapped)]
    files += [
        make_nifti(f"{n}.nii", d, dtype=np.float32) for n, d in zip("bcd", data[1:], strict=True)
    ]
    files = [str(f) for f in files]
    acc = accumulate_files(files[:3], num_threads=2, digests=True)
    assert acc.shape == SHAPE[::-1]
    acc.remove(_values(files[0], acc), 0)
    acc.add_file(files[3])
    expected = accumulate_files(files[1:], num_threads=2)
    assert acc.shape == SHAPE
    assert_array_equal(acc.aggregate(SUM), expected.aggregate(SUM))


@pytest.mark.parametrize("value", [2**30, -(2**30) - 1])  # both beyond int32 once merged
def test_a_merged_integer_sum_widens_when_more_is_added(make_nifti, value):
    # The merged partial's bounds are the sum of both partials' bounds: adding a third
    # volume must widen int32 to int64 (mutant: the bounds subtracted, the sum wraps).
    files = [
        str(make_nifti(f"v{i}.nii.gz", np.full(SHAPE, value, np.int32), dtype=np.int32))
        for i in range(3)
    ]
    merged = accumulate_files(files[:1]).merge(accumulate_files(files[1:2]))
    merged.add_file(files[2])
    assert merged.exact and np.all(merged.sum.values == 3 * value)
    assert np.all(merged.aggregate(MapOptions(False, False)) == 3 * value)


def test_removing_the_reference_when_the_next_input_is_a_one_volume_4d_file(make_nifti, rng):
    # The next input becomes the reference from its recorded header, whose dim is 4D with
    # one volume: the grid stays 3D (mutant: four dimensions taken from the header).
    data = [rng.random(SHAPE).astype(np.float32) for _ in range(3)]
    files = [
        str(make_nifti("a.nii", data[0], dtype=np.float32)),
        str(make_nifti("b.nii", data[1][..., None], dtype=np.float32)),
        str(make_nifti("c.nii", data[2], dtype=np.float32)),
    ]
    acc = accumulate_files(files, digests=True)
    acc.remove(_values(files[0], acc), 0)
    assert acc.shape == SHAPE
    img = acc.map_image(MapOptions(use_mean=True, clip_to_input_range=False))
    assert img.shape == SHAPE
    assert_allclose(
        np.asanyarray(img.dataobj),
        ((data[1] + data[2].astype(np.float64)) / 2).astype(np.float32),
        rtol=1e-6,  # the sum after removing a float input: float64 round-off
    )


def test_removing_a_middle_input_equals_a_recompute_exactly(make_nifti):
    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(3)]
    acc = accumulate_files(files, digests=True)
    acc.remove(_values(files[1], acc), 1)
    expected = accumulate_files([files[0], files[2]])
    assert [r.path for r in acc.records] == [files[0], files[2]]
    assert acc.exact
    assert_array_equal(acc.sum.values, expected.sum.values)


@pytest.mark.parametrize("removed", [1, 2, 3])
def test_removals_with_missing_values_equal_a_recompute(make_nifti, rng, removed):
    # A NaN-bearing input makes the count per voxel; removing a complete input must count
    # it out everywhere, removing one with an infinity (no NaN) only where it was finite
    # (mutants: the count of a complete removal left as it was, an infinity taken for
    # complete).
    data = [rng.random(SHAPE).astype(np.float32) for _ in range(4)]
    data[0][0, 0, 0] = np.nan
    data[2][1, 1, 1] = -np.inf
    files = [str(make_nifti(f"p{i}.nii", d, dtype=np.float32)) for i, d in enumerate(data)]
    acc = accumulate_files(files, digests=True)
    acc.remove(_values(files[removed], acc), removed)
    kept = [f for i, f in enumerate(files) if i != removed]
    expected = accumulate_files(kept)
    assert_array_equal(acc.count.value, expected.count.value)
    assert_allclose(acc.aggregate(MapOptions()), expected.aggregate(MapOptions()), rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_every_header_is_checked_before_the_first_voxel_is_added(make_nifti, monkeypatch, threads):
    # A last file on another grid is refused before any volume is added (no minutes of
    # reading before an error that its header gave away), naming the file.
    files = [str(make_nifti(f"m{i}.nii")) for i in range(4)]
    files.append(str(make_nifti("other.nii", np.zeros((3, 3, 3), np.uint8))))
    added = []
    monkeypatch.setattr(HeatmapAccumulator, "add", lambda self, x: added.append(x.path))
    with pytest.raises(ValueError, match=re.escape(files[-1])):
        accumulate_files(files, num_threads=threads)
    assert added == []


def test_accumulating_hashes_no_file_and_logs_each_at_debug_level_by_default(make_nifti, caplog):
    # Content hashes cost a pass over every file: only states ask for them. Per-file lines
    # are debug output unless asked for (a cohort of 300 files must not flood the log).
    files = [str(make_nifti(f"m{i}.nii")) for i in range(3)]
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        acc = accumulate_files(files)
        assert [r.digest for r in acc.records] == [None] * 3
        api.add_files(acc, [str(make_nifti("more.nii"))])
    assert acc.records[-1].digest is None
    assert "finite value range" not in caplog.text
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        accumulate_files(files, debug=True)
    assert caplog.text.count("finite value range") == 3
