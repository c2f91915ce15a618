"""Cohort maps (coverage, spread, minimum overlap, subtraction) against brute-force numpy."""

from __future__ import annotations

import copy
import warnings

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from nipype_heatmap.cohort import (
    cohort_images,
    compute_subtraction,
    overlap_table,
    resolve_min_count,
    write_cohort_maps,
)
from nipype_heatmap import HeatmapAccumulator
from nipype_heatmap.state import load_state, save_state

from .conftest import SHAPE, no_worker_thread_left


def _stack(files):
    return np.stack([nb.load(f).get_fdata() for f in files])


def _accumulate(files, threads=1):
    acc = HeatmapAccumulator(num_threads=threads, overlap=True, spread=True)
    for f in files:
        acc.add_file(f)
    acc.close()
    return acc


def _brute(stack, ddof=1):
    finite = np.isfinite(stack)
    n = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # voxels with too few values
        var = np.nanvar(stack, axis=0, ddof=ddof)
    var = np.where(n - ddof > 0, var, np.nan)
    nonzero = (finite & (np.nan_to_num(stack) != 0)).sum(axis=0)
    return n, var, nonzero


@pytest.fixture
def float_files(make_nifti, rng):
    files = []
    for i in range(6):
        data = (rng.standard_normal(SHAPE) * 3 + 100).astype(np.float32)  # large mean:
        data[rng.random(SHAPE) < 0.25] = np.nan  # a naive sum-of-squares loses digits
        data[rng.random(SHAPE) < 0.1] = 0.0
        files.append(str(make_nifti(f"f{i}.nii", data)))
    return files


@pytest.fixture
def mask_files(make_nifti):
    return [str(make_nifti(f"m{i}.nii.gz")) for i in range(7)]


@pytest.fixture
def int_files(make_nifti, rng):
    return [
        str(make_nifti(f"i{i}.nii.gz", rng.integers(-40, 300, SHAPE).astype(np.int16)))
        for i in range(5)
    ]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("kind", ["floats", "masks", "ints", "ints_then_floats"])
def test_maps_match_numpy(kind, threads, float_files, mask_files, int_files):
    files = {
        "floats": float_files,
        "masks": mask_files,
        "ints": int_files,
        "ints_then_floats": int_files[:3] + float_files[:3],
    }[kind]
    acc = _accumulate(files, threads)
    n, var, nonzero = _brute(_stack(files), ddof=1)
    coverage = acc.count if acc.count is not None else np.full(SHAPE, acc.n_inputs)
    assert_array_equal(coverage, n)
    assert_allclose(
        acc.stats.variance(coverage, acc.total, ddof=1), var, rtol=1e-10, equal_nan=True
    )
    assert_array_equal(acc.stats.nonzero_count(acc.total), nonzero)
    assert acc.stats.exact == (kind in ("masks", "ints"))


def test_integer_variance_is_exact(int_files):
    acc = _accumulate(int_files)
    stack = _stack(int_files).astype(np.int64)
    n = len(int_files)
    exact = (n * (stack**2).sum(0) - stack.sum(0) ** 2) / (n * (n - 1))
    assert_array_equal(acc.stats.variance(n, acc.total, ddof=1), exact)


def test_ddof_zero_is_the_population_variance(float_files):
    acc = _accumulate(float_files)
    _, var, _ = _brute(_stack(float_files), ddof=0)
    assert_allclose(
        acc.stats.variance(acc.count, acc.total, ddof=0), var, rtol=1e-10, equal_nan=True
    )


def test_huge_integers_leave_the_exact_path_without_losing_accuracy(make_nifti, rng):
    files = [
        str(make_nifti(f"h{i}.nii", (rng.integers(0, 1000, SHAPE) + 2**40).astype(np.int64)))
        for i in range(4)
    ]
    acc = _accumulate(files)
    assert not acc.stats.exact  # (2**40)**2 * n would overflow int64
    _, var, _ = _brute(_stack(files))
    # float64 Welford at an offset of 1e12: the mean's last bit is 1e-4, the spread ~300
    assert_allclose(acc.stats.variance(4, acc.total), var, rtol=1e-5)


@pytest.mark.parametrize("split", [1, 3, 5])
def test_merged_parts_equal_one_pass(float_files, int_files, split):
    files = int_files[:2] + float_files + int_files[2:]
    whole = _accumulate(files)
    merged = HeatmapAccumulator(overlap=True, spread=True)
    for part in (files[:split], files[split:]):
        merged.merge(_accumulate(part))
    assert_array_equal(
        merged.stats.nonzero_count(merged.total), whole.stats.nonzero_count(whole.total)
    )
    assert_allclose(
        merged.stats.variance(merged.count, merged.total),
        whole.stats.variance(whole.count, whole.total),
        rtol=1e-10,
        equal_nan=True,
    )


def test_merging_masks_stays_exact(mask_files):
    merged = HeatmapAccumulator(overlap=True, spread=True)
    for part in (mask_files[:3], mask_files[3:]):
        merged.merge(_accumulate(part))
    assert merged.stats.exact
    _, var, _ = _brute(_stack(mask_files))
    assert_allclose(merged.stats.variance(len(mask_files), merged.total), var, rtol=1e-12)


def test_overlap_table_and_thresholds():
    nonzero = np.array([0, 1, 1, 2, 3, 3, 3], np.uint32)
    rows = overlap_table(nonzero, 4)
    assert [(r.min_count, r.voxels) for r in rows] == [(1, 6), (2, 4), (3, 3), (4, 0)]
    assert resolve_min_count(20, min_fraction=0.1) == 2
    assert resolve_min_count(21, min_fraction=0.1) == 3
    assert resolve_min_count(20, min_count=5) == 5
    with pytest.raises(ValueError, match="not both"):
        resolve_min_count(20, 5, 0.1)
    with pytest.raises(ValueError, match="min_fraction"):
        resolve_min_count(20, min_fraction=1.5)


def test_write_cohort_maps_beside_the_heatmap(mask_files, tmp_path):
    out = tmp_path / "out" / "lesion.nii.gz"
    written = write_cohort_maps(mask_files, out, coverage=True, std=True, min_count=3)
    stack = _stack(mask_files)
    n, var, nonzero = _brute(stack)
    assert set(written) == {
        "heatmap",
        "coverage",
        "std",
        "variance",
        "overlap",
        "mincount",
        "table",
    }
    assert written["mincount"].endswith("lesion_mincount3.nii.gz")
    assert_array_equal(nb.load(written["mincount"]).get_fdata(), nonzero >= 3)
    assert nb.load(written["mincount"]).get_data_dtype() == np.uint8
    assert_array_equal(nb.load(written["coverage"]).get_fdata(), n)
    assert_allclose(nb.load(written["std"]).get_fdata(), np.sqrt(var), rtol=1e-6)
    assert_allclose(nb.load(written["heatmap"]).get_fdata(), stack.mean(0), rtol=1e-6)
    lines = open(written["table"]).read().splitlines()
    assert lines[0] == "min_count\tfraction\tvoxels"
    assert lines[3].split("\t")[2] == str(int((nonzero >= 3).sum()))
    assert len(lines) == len(mask_files) + 1


def test_subtraction_of_two_groups_of_different_sizes(make_nifti, rng):
    group_a = [str(make_nifti(f"a{i}.nii.gz")) for i in range(5)]
    group_b = [str(make_nifti(f"b{i}.nii.gz")) for i in range(8)]
    maps = compute_subtraction(group_a, group_b)
    pa, pb = _stack(group_a).mean(0) * 100, _stack(group_b).mean(0) * 100
    assert_allclose(maps["percent_a"].get_fdata(), pa, rtol=1e-6)
    assert_allclose(maps["percent_b"].get_fdata(), pb, rtol=1e-6)
    assert_allclose(maps["subtraction"].get_fdata(), pa - pb, rtol=1e-6, atol=1e-4)


def test_cohort_outputs_never_overwrite_an_input(mask_files):
    from pathlib import Path

    first = Path(mask_files[0])
    clash = first.with_name("x_overlap.tsv")  # not an input: fine
    victim = first.with_name(first.name.replace(".nii.gz", "_coverage.nii.gz"))
    victim.write_bytes(first.read_bytes())
    with pytest.raises(ValueError, match="overwrite one of the inputs"):
        write_cohort_maps(
            [*mask_files, str(victim)],
            first.with_name(first.name.replace(".nii.gz", "") + ".nii.gz"),
            coverage=True,
        )
    assert not clash.exists()


def test_command_writes_cohort_maps_and_subtractions(make_nifti, in_dir, tmp_path, capsys):
    from nipype_heatmap.cli.heatmap import main

    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(6)]
    out = tmp_path / "lesion.nii.gz"
    argv = [str(in_dir), "-o", str(out), "--coverage", "--std", "--min-fraction", "0.5", "-q"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "lesion_mincount3.nii.gz") in printed
    assert str(tmp_path / "lesion_overlap.tsv") in printed and len(printed) == 7
    group_b = [str(make_nifti(f"b{i}.nii.gz", folder=tmp_path / "b")) for i in range(3)]
    diff = tmp_path / "diff.nii.gz"
    assert main([str(in_dir), "--group-b", *group_b, "-o", str(diff), "-q"]) == 0
    expected = _stack(files).mean(0) * 100 - _stack(group_b).mean(0) * 100
    assert_allclose(nb.load(diff).get_fdata(), expected, rtol=1e-6, atol=1e-4)
    assert (tmp_path / "diff_percentA.nii.gz").exists()
    assert main([str(in_dir), "-o", str(out), "--min-count", "2", "--min-fraction", "0.5"]) == 1
    assert "not both" in capsys.readouterr().err
    assert main([str(in_dir), "-o", str(out), "--min-fraction", "0"]) == 1  # never ignored
    assert "min_fraction must be in (0, 1]" in capsys.readouterr().err


def test_interface_writes_cohort_maps_in_the_node_folder(make_nifti, tmp_path):
    from nipype_heatmap.interfaces import HeatmapVolume

    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(5)]
    (tmp_path / "work").mkdir()
    res = HeatmapVolume(in_files=files, coverage=True, std=True, min_count=2).run(
        cwd=str(tmp_path / "work")
    )
    out = res.outputs
    assert out.mincount_file == str(tmp_path / "work" / "heatmap_volume_mincount2.nii.gz")
    _, var, nonzero = _brute(_stack(files))
    assert_array_equal(nb.load(out.mincount_file).get_fdata(), nonzero >= 2)
    assert_allclose(nb.load(out.variance_file).get_fdata(), var, rtol=1e-6)
    assert out.overlap_table.endswith("heatmap_volume_overlap.tsv")
    plain = HeatmapVolume(in_files=files).run(cwd=str(tmp_path / "work"))
    assert not isinstance(plain.outputs.coverage_file, str)  # undefined when not asked


def test_rerun_into_the_input_folder_never_reads_its_cohort_maps(make_nifti, in_dir, capsys):
    from nipype_heatmap.cli.heatmap import main

    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(4)]
    out = in_dir / "group.nii.gz"
    argv = [str(in_dir), "-o", str(out), "--coverage", "--std", "--min-count", "2", "-q"]
    assert main(argv) == 0
    first = {p.name: p.read_bytes() for p in in_dir.iterdir()}
    assert main(argv) == 0  # the earlier maps are not inputs: the same maps again
    assert {p.name: p.read_bytes() for p in in_dir.iterdir()} == first
    assert main([str(in_dir), "-o", str(out), "-q"]) == 0  # nor for a plain re-run
    assert b"of 4 volumes" in nb.load(out).header["descrip"].tobytes()
    assert_allclose(nb.load(out).get_fdata(), _stack(files).mean(0), rtol=1e-6)


def test_subtraction_never_overwrites_an_input(make_nifti, in_dir, tmp_path, capsys):
    from nipype_heatmap.cli.heatmap import main

    make_nifti("a0.nii.gz")
    b = make_nifti("b0.nii.gz", folder=tmp_path / "b")
    victim = in_dir / "a0.nii.gz"
    before = victim.read_bytes()
    assert main([str(in_dir), "--group-b", str(b), "-o", str(victim), "-q"]) == 1
    assert "overwrite one of the inputs" in capsys.readouterr().err
    assert victim.read_bytes() == before


@pytest.mark.parametrize("threads", [1, 2])
def test_tracking_the_spread_never_changes_the_mean(float_files, int_files, make_nifti, threads):
    # The spread of floats is updated in the same pass as the sum: the sum must still be
    # the plain float64 loop's, bit for bit, with or without missing values.
    complete = [str(make_nifti(f"c{i}.nii", np.full(SHAPE, 0.1 * i + 0.3, np.float32)))
                for i in range(3)]  # fmt: skip
    files = [*int_files[:2], *complete, *float_files[:3], *complete]
    plain = HeatmapAccumulator(num_threads=threads)
    tracked = HeatmapAccumulator(num_threads=threads, overlap=True, spread=True)
    for f in files:
        plain.add_file(f)
        tracked.add_file(f)
    for use_mean in (True, False):
        a = plain.aggregate(use_mean=use_mean, clip_to_input_range=False)
        b = tracked.aggregate(use_mean=use_mean, clip_to_input_range=False)
        assert_array_equal(a.view(np.uint64), b.view(np.uint64))
    n, var, nonzero = _brute(_stack(files))
    assert_array_equal(tracked.stats.nonzero_count(tracked.total), nonzero)
    assert_allclose(tracked.stats.variance(tracked.count, tracked.total), var, rtol=1e-9)


# -- cases the mutation run (tools/mutate.py) showed untested -------------------------------


def test_spread_in_small_blocks_and_of_reordered_volumes_matches_numpy(
    make_nifti, rng, monkeypatch
):
    # Blocks of a few voxels (block edges everywhere) and a volume stored with its x axis
    # flipped (a slab that is not contiguous on the reference grid) give numpy's values.
    from nipype_heatmap import cohort

    monkeypatch.setattr(cohort, "_BLOCK", 37)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-6.0 + 2.0 * (SHAPE[0] - 1), -8.0, -9.0]
    data = [(rng.standard_normal(SHAPE) * 3 + 50).astype(np.float32) for _ in range(4)]
    for d in data:
        d[rng.random(SHAPE) < 0.2] = 0.0
    files = [str(make_nifti(f"b{i}.nii", d)) for i, d in enumerate(data[:3])]
    files.append(str(make_nifti("flipped.nii", data[3][::-1], affine=affine)))
    acc = _accumulate(files, threads=2)
    n, var, nonzero = _brute(np.stack(data).astype(np.float64))
    assert_allclose(acc.stats.variance(acc.n_inputs, acc.total), var, rtol=1e-10)
    assert_array_equal(acc.stats.nonzero_count(acc.total), nonzero)


def test_overlap_without_spread_never_counts_missing_values(float_files):
    acc = HeatmapAccumulator(overlap=True)
    for f in float_files:
        acc.add_file(f)
    assert_array_equal(acc.stats.nonzero_count(acc.total), _brute(_stack(float_files))[2])


@pytest.mark.parametrize("values", ["probabilities", "zero_one_two"])
def test_only_binary_integers_take_the_sum_as_count_and_square(make_nifti, rng, values):
    # Probabilities in [0, 1] are not binary (their sum is no count of non-zero inputs) and
    # neither are integers up to 2 (their squares are not the values).
    if values == "probabilities":
        data = [np.where(rng.random(SHAPE) < 0.5, 0, rng.random(SHAPE)) for _ in range(4)]
        data = [d.astype(np.float32) for d in data]
    else:
        data = [rng.integers(0, 3, SHAPE).astype(np.uint8) for _ in range(4)]
    files = [str(make_nifti(f"v{i}.nii", d)) for i, d in enumerate(data)]
    acc = _accumulate(files)
    _, var, nonzero = _brute(np.stack(data).astype(np.float64))
    assert_array_equal(acc.stats.nonzero_count(acc.total), nonzero)
    assert_allclose(acc.stats.variance(4, acc.total), var, rtol=1e-10)


def test_complete_volumes_after_missing_ones_count_their_zeros(float_files, make_nifti, rng):
    # After a volume with NaN the count is per voxel: a complete volume's zeros and ones must
    # still be counted right in the fused pass.
    complete = [rng.integers(0, 2, SHAPE).astype(np.float32) for _ in range(2)]
    files = float_files[:2] + [str(make_nifti(f"z{i}.nii", d)) for i, d in enumerate(complete)]
    acc = _accumulate(files)
    n, var, nonzero = _brute(_stack(files))
    assert_array_equal(acc.stats.nonzero_count(acc.total), nonzero)
    assert_allclose(acc.stats.variance(acc.count, acc.total), var, rtol=1e-10, equal_nan=True)


def test_large_integers_keep_the_exact_variance(make_nifti, rng):
    # Sums of squares beyond 2**53 but within int64: the exact integer numerator is used.
    files = [
        str(make_nifti(f"l{i}.nii", rng.integers(2**27, 2**28, SHAPE).astype(np.int32)))
        for i in range(4)
    ]
    acc = _accumulate(files)
    assert acc.stats.exact and 4 * acc.stats.sq_bound >= 2**53
    stack = _stack(files).astype(np.int64)
    numerator = 4 * (stack**2).sum(0) - stack.sum(0) ** 2
    assert_array_equal(acc.stats.variance(4, acc.total), numerator / (4 * 3))


@pytest.mark.parametrize(
    ("a", "b", "variance"),
    [
        # n * S2 and S1**2 between 2**53 and 2**54, numerator 1: float64 arithmetic would
        # round each by one and give 0 or 1, so the exact integer numerator must be used
        (56_000_000, 56_000_001, 0.5),
        # S2 itself between 2**53 and 2**54 and odd: a state must not store it as float64
        (80_000_000, 80_000_001, 0.5),
        # n * S2 = 1.6e19 is beyond int64 and so is the numerator (int64 would wrap
        # around): the spread must leave the exact path before the second input is added
        (2_000_000_000, -2_000_000_000, 8e18),
    ],
)
@pytest.mark.parametrize("how", ["one pass", "two parts merged", "saved and loaded"])
def test_integers_near_the_exactness_limits_keep_the_variance(
    make_nifti, tmp_path, a, b, variance, how
):
    files = [
        str(make_nifti(f"v{i}.nii", np.full(SHAPE, value, np.int32)))
        for i, value in enumerate((a, b))
    ]
    if how == "two parts merged":
        acc = _accumulate(files[:1]).merge(_accumulate(files[1:]))
    else:
        acc = _accumulate(files)
    if how == "saved and loaded":
        acc = load_state(save_state(acc, tmp_path / "state.nii.gz"))
    images, _ = cohort_images(acc, coverage=False)
    assert_array_equal(images["variance"].get_fdata(dtype=np.float32), np.float32(variance))


def test_counts_of_65536_inputs_do_not_wrap(make_nifti):
    # a mask merged with copies of itself 16 times: 2**16 inputs, one more than uint16 holds
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:5, 3:6, 1:4] = 1
    acc = _accumulate([make_nifti("m.nii.gz", mask)])
    for _ in range(16):
        acc.merge(copy.deepcopy(acc))
    assert acc.n_inputs == 2**16
    images, table = cohort_images(acc, std=False, min_count=2**16)
    assert_array_equal(np.asanyarray(images["coverage"].dataobj), 2**16)
    assert_array_equal(np.asanyarray(images["overlap"].dataobj), mask.astype(np.int64) * 2**16)
    assert_array_equal(np.asanyarray(images["mincount"].dataobj), mask)
    assert table[-1].min_count == 2**16 and table[-1].voxels == mask.sum()


def test_a_part_merged_into_an_empty_accumulator_with_other_threads_keeps_adding(make_nifti, rng):
    # the part's scratch buffers were sized for its slabs (a third of the grid): the
    # accumulator it is copied into works on the whole grid at once
    files = [
        str(make_nifti(f"c{i}.nii", (rng.random(SHAPE) * 5).astype(np.float32))) for i in range(3)
    ]
    acc = HeatmapAccumulator(num_threads=1, overlap=True, spread=True)
    acc.merge(_accumulate(files[:2], threads=3))
    acc.add_file(files[2])
    _, var, _ = _brute(_stack(files))
    assert_allclose(acc.stats.variance(3, acc.total), var, rtol=1e-10)


def test_merging_refuses_parts_that_track_other_statistics(mask_files):
    a = HeatmapAccumulator(overlap=True, spread=True)
    b = HeatmapAccumulator(overlap=True, spread=False)
    a.add_file(mask_files[0])
    b.add_file(mask_files[1])
    with pytest.raises(ValueError, match="different cohort statistics"):
        a.merge(b)


def test_merging_integer_parts_keeps_the_spread_exact_and_float_then_integer_parts_merge(
    int_files, float_files
):
    merged = HeatmapAccumulator(overlap=True, spread=True)
    for part in (int_files[:2], int_files[2:]):
        merged.merge(_accumulate(part))
    assert merged.stats.exact
    # a part still exact (integers) merged into one that is not (floats)
    files = float_files[:3] + int_files[:2]
    mixed = HeatmapAccumulator(overlap=True, spread=True)
    for part in (files[:3], files[3:]):
        mixed.merge(_accumulate(part))
    whole = _accumulate(files)
    assert_allclose(
        mixed.stats.variance(mixed.count, mixed.total),
        whole.stats.variance(whole.count, whole.total),
        rtol=1e-10,
        equal_nan=True,
    )


def test_merging_parts_where_the_first_has_no_value_at_a_voxel(make_nifti, rng):
    first = np.full(SHAPE, np.nan, np.float32)
    first[0] = 1.0  # only one slice has values in the first part
    others = [(rng.random(SHAPE) * 10).astype(np.float32) for _ in range(3)]
    files = [str(make_nifti("first.nii", first))]
    files += [str(make_nifti(f"o{i}.nii", d)) for i, d in enumerate(others)]
    for order in ((files[:1], files[1:]), (files[1:], files[:1])):  # empty in either part
        merged = HeatmapAccumulator(overlap=True, spread=True)
        for part in order:
            merged.merge(_accumulate(part))
        _, var, _ = _brute(_stack([*order[0], *order[1]]))
        assert_allclose(merged.stats.variance(merged.count, merged.total), var, rtol=1e-10)


def test_voxels_empty_in_every_merged_part_take_later_values(make_nifti, rng):
    # a voxel without a value in either part (n = 0 after the merge) must still get a
    # variance from the volumes added after it
    holes = []
    for i in range(2):
        data = (rng.random(SHAPE) * 10).astype(np.float32)
        data[:3] = np.nan
        holes.append(str(make_nifti(f"hole{i}.nii", data)))
    later = [
        str(make_nifti(f"later{i}.nii", (rng.random(SHAPE) * 10).astype(np.float32)))
        for i in range(2)
    ]
    acc = _accumulate(holes[:1]).merge(_accumulate(holes[1:]))
    for f in later:
        acc.add_file(f)
    _, var, _ = _brute(_stack(holes + later))
    assert np.isfinite(var).all()
    assert_allclose(acc.stats.variance(acc.count, acc.total), var, rtol=1e-10)


def test_overlap_table_fractions_and_thresholds_by_fraction():
    rows = overlap_table(np.array([0, 1, 2, 3, 3], dtype=np.uint32), 3)
    assert [(r.min_count, r.fraction, r.voxels) for r in rows] == [
        (1, 0.333333, 4),
        (2, 0.666667, 3),
        (3, 1.0, 2),
    ]
    assert resolve_min_count(10, min_fraction=1.0) == 10
    assert resolve_min_count(10, min_fraction=0.01) == 1
    assert resolve_min_count(10, min_fraction=0.25) == 3


def test_default_maps_and_missing_statistics(mask_files, tmp_path):
    from nipype_heatmap.cohort import cohort_images, write_maps

    plain = HeatmapAccumulator()
    for f in mask_files:
        plain.add_file(f)
    with pytest.raises(ValueError, match="spread was not tracked"):
        cohort_images(plain, std=True)
    with pytest.raises(ValueError, match="overlap was not tracked"):
        cohort_images(plain, coverage=False, std=False, min_count=2)
    images, table = cohort_images(_accumulate(mask_files))  # coverage and std by default
    assert set(images) == {"coverage", "std", "variance"} and table is None
    written = write_maps(plain, tmp_path / "m.nii.gz")  # the heatmap only, clipped mean
    assert set(written) == {"heatmap"}
    assert_array_equal(
        np.asanyarray(nb.load(written["heatmap"]).dataobj), np.asanyarray(plain.finalize().dataobj)
    )
    written = write_cohort_maps(mask_files, tmp_path / "c.nii.gz")
    assert set(written) == {"heatmap"}


def test_subtraction_needs_both_groups(mask_files):
    with pytest.raises(ValueError, match="both groups"):
        compute_subtraction([], mask_files)
    with pytest.raises(ValueError, match="both groups"):
        compute_subtraction(mask_files, [])


def test_infinite_values_without_nan_are_missing_for_the_overlap(make_nifti, rng):
    data = rng.integers(0, 2, SHAPE).astype(np.float32)
    data[0, 0, 0] = np.inf  # infinite (the lowest value is finite), and no NaN anywhere
    files = [str(make_nifti("inf.nii", data)), str(make_nifti("ones.nii", np.ones(SHAPE, "f4")))]
    acc = HeatmapAccumulator(overlap=True)
    for f in files:
        acc.add_file(f)
    assert_array_equal(acc.stats.nonzero_count(acc.total), _brute(_stack(files))[2])


def test_write_maps_default_ddof_is_one(float_files, tmp_path):
    from nipype_heatmap.cohort import write_maps

    acc = _accumulate(float_files)
    written = write_maps(acc, tmp_path / "m.nii.gz", std=True)
    _, var, _ = _brute(_stack(float_files), ddof=1)
    got = np.asanyarray(nb.load(written["variance"]).dataobj)
    assert_allclose(got, var.astype(np.float32), rtol=1e-6, equal_nan=True)


def test_cohort_maps_leave_no_worker_thread_behind(make_nifti, tmp_path):
    from nipype_heatmap.api import write_cohort_maps

    files = [
        make_nifti(f"p{i}.nii", np.full(SHAPE, i / 3, np.float32), dtype=np.float32)
        for i in range(3)
    ]
    with no_worker_thread_left():
        written = write_cohort_maps(
            files, tmp_path / "m.nii.gz", coverage=True, std=True, min_count=2, num_threads=2
        )
    assert {"heatmap", "coverage", "std"} <= set(written)


@pytest.mark.parametrize("block", [100, 400])  # 400: 2.5 blocks' worth, fewer than 3 threads
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_overlap_table_over_blocks_and_threads_counts_every_voxel(monkeypatch, threads, block):
    from nipype_heatmap import cohort

    monkeypatch.setattr(cohort, "_BLOCK", block)  # many blocks, a short last one per thread
    rng = np.random.default_rng(3)
    nonzero = rng.integers(0, 8, (13, 11, 7)).astype(np.uint16)  # 1001 voxels
    nonzero[nonzero > 4] = 0  # mostly empty, as lesion overlap is
    nonzero[0, 0, 0] = nonzero[-1, -1, -1] = 3  # the first and the last voxel count too
    rows = overlap_table(np.asfortranarray(nonzero), 6, threads)
    assert [(r.min_count, r.voxels) for r in rows] == [
        (k, int(np.count_nonzero(nonzero >= k))) for k in range(1, 7)
    ]


@pytest.mark.parametrize("ddof", [0, 1, 2])
@pytest.mark.parametrize("n_files", [1, 2])
def test_variance_is_nan_exactly_where_too_few_values_for_ddof(float_files, ddof, n_files):
    acc = _accumulate(float_files[:n_files])
    n = acc.count if acc.count is not None else acc.n_inputs
    var = acc.stats.variance(n, acc.total, ddof=ddof)
    too_few = np.broadcast_to(np.asarray(n, dtype=np.int64) - ddof <= 0, var.shape)
    assert_array_equal(np.isnan(var), too_few)
    assert np.isfinite(var[~too_few]).all()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("kind", ["floats", "masks", "ints", "large ints"])
def test_spread_maps_in_blocks_equal_the_whole_volume_variance(
    monkeypatch, make_nifti, rng, float_files, mask_files, int_files, kind, threads
):
    # The float32 maps are computed a block at a time on threads, from the exact integer
    # sum where there is one: every voxel must get the bits of the whole-volume variance
    # (and its square root) rounded once to float32, in each of the four forms.
    from nipype_heatmap import cohort

    if kind == "large ints":  # n * S2 beyond 2**53: the exact int64 numerator
        files = [
            str(make_nifti(f"l{i}.nii", rng.integers(2**27, 2**28, SHAPE).astype(np.int32)))
            for i in range(4)
        ]
    else:
        files = {"floats": float_files, "masks": mask_files, "ints": int_files}[kind]
    acc = _accumulate(files)
    stats = acc.stats
    n = acc.count if acc.count is not None else acc.n_inputs
    form = {"floats": "welford", "masks": "binary", "ints": "squares", "large ints": "integers"}
    assert stats._variance_form(n) == form[kind]
    monkeypatch.setattr(cohort, "_BLOCK", 37)  # many blocks, a short last one per slab
    for ddof in (0, 1, 4, len(files)):  # 4: NaN where a float voxel has 4 values or fewer
        want = stats.variance(n, acc.total, ddof=ddof)
        assert np.isnan(want).all() == (ddof == len(files))
        if kind == "floats" and ddof == 4:
            assert np.isnan(want).any()  # the voxels with 4 finite values or fewer
        elif kind != "floats":  # as many values at every voxel
            assert np.isnan(want).any() == (ddof == len(files))
        for s1 in (acc.total, acc.integer_total):
            if s1 is None:
                continue
            var, sd = stats.spread_maps(n, s1, ddof, num_threads=threads)
            assert var.dtype == sd.dtype == np.float32 and var.flags.f_contiguous
            assert_array_equal(var, want.astype(np.float32))
            assert_array_equal(sd, np.sqrt(want).astype(np.float32))


@pytest.fixture
def complete_float_files(make_nifti, rng):
    """Float maps with a value at every voxel (zeros among them), around a large mean."""
    files = []
    for i in range(7):
        data = (rng.standard_normal(SHAPE) * 3 + 100).astype(np.float32)
        data[rng.random(SHAPE) < 0.2] = 0.0
        files.append(str(make_nifti(f"c{i}.nii.gz", data)))
    return files


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n_files", [3, 6, 7])  # a pair or two after the first, one left over
def test_float_maps_go_in_pairs_with_the_same_sum_and_spread(
    monkeypatch, complete_float_files, threads, n_files
):
    # accumulate_files adds complete float maps two at a time (one pass for both): the sum
    # must be the one-by-one sum bit for bit (the mean never depends on the statistics),
    # the non-zero count exact, the variance numpy's to float64 round-off.
    from nipype_heatmap import cohort
    from nipype_heatmap.api import accumulate_files

    files = complete_float_files[:n_files]
    pairs = []
    add_pair = cohort.CohortStats.add_pair
    monkeypatch.setattr(
        cohort.CohortStats,
        "add_pair",
        lambda self, *a, **k: pairs.append(k["n_before"]) or add_pair(self, *a, **k),
    )
    monkeypatch.setattr(cohort, "_BLOCK", 37)  # many blocks, a short last one per slab
    paired = accumulate_files(files, num_threads=threads, overlap=True, spread=True)
    assert pairs == list(range(1, n_files - 1, 2))  # after the first: pairs, in order
    single = _accumulate(files, threads)  # add_file, one by one
    assert_array_equal(paired.total, single.total)
    assert paired.count is None and paired.n_inputs == n_files
    assert [r.path for r in paired.records] == files
    assert [r.value_range for r in paired.records] == [r.value_range for r in single.records]
    assert (paired.global_min, paired.global_max) == (single.global_min, single.global_max)
    n, var, nonzero = _brute(_stack(files), ddof=1)
    assert_array_equal(paired.stats.nonzero_count(paired.total), nonzero)
    assert_allclose(paired.stats.variance(n_files, paired.total), var, rtol=1e-12)
    assert_allclose(paired.stats.m2, single.stats.m2, rtol=1e-12)


def test_pairs_fall_back_to_one_by_one_for_missing_values_and_errors(
    complete_float_files, float_files, make_nifti
):
    from nipype_heatmap.api import accumulate_files
    from nipype_heatmap.io import read_volume

    # A map with missing values among complete ones: the count becomes per voxel and the
    # pairs stop; every map still counts as numpy says.
    files = complete_float_files[:3] + float_files[:1] + complete_float_files[3:5]
    acc = accumulate_files(files, overlap=True, spread=True)
    n, var, nonzero = _brute(_stack(files), ddof=1)
    assert_array_equal(acc.count, n)
    assert_array_equal(acc.stats.nonzero_count(acc.total), nonzero)
    assert_allclose(acc.stats.variance(acc.count, acc.total), var, rtol=1e-12)
    # The second of a pair on another grid: the first is added, the error names the second.
    acc = _accumulate(complete_float_files[:1])
    assert acc.pairs_volumes()
    wrong = make_nifti("wrong.nii", np.ones((5, 5, 5), np.float32))
    with pytest.raises(ValueError, match="wrong.nii"):
        acc.add_volume_pair(read_volume(complete_float_files[1]), read_volume(wrong))
    assert acc.n_inputs == 2 and acc.records[-1].path == complete_float_files[1]
    _, var, _ = _brute(_stack(complete_float_files[:2]), ddof=1)
    assert_allclose(acc.stats.variance(2, acc.total), var, rtol=1e-12)


def test_only_welford_spreads_of_complete_inputs_pair(
    mask_files, complete_float_files, float_files
):
    assert not _accumulate(mask_files).pairs_volumes()  # exact: integers stay one by one
    assert _accumulate(complete_float_files[:1]).pairs_volumes()
    assert not _accumulate(float_files[:1]).pairs_volumes()  # a count per voxel
    for overlap, spread in ((True, False), (False, False)):
        acc = HeatmapAccumulator(overlap=overlap, spread=spread)
        assert not acc.pairs_volumes()  # no grid yet
        acc.add_file(complete_float_files[0])
        assert not acc.pairs_volumes()  # no spread to pair for
    acc = HeatmapAccumulator(overlap=False, spread=True)
    acc.add_file(complete_float_files[0])
    assert acc.pairs_volumes()  # the spread without any count: pairs too


@pytest.mark.parametrize("n_files", [5, 6])  # the last one paired, or held and added alone
def test_paired_inputs_each_show_in_the_progress_bar_and_log(
    complete_float_files, capsys, caplog, n_files
):
    import logging

    from nipype_heatmap.api import accumulate_files

    files = complete_float_files[:n_files]
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        accumulate_files(files, overlap=True, spread=True, progress=True, debug=True)
    assert f"{n_files}/{n_files}" in capsys.readouterr().err
    logged = [
        r.getMessage().split(":")[0] for r in caplog.records if "value range" in r.getMessage()
    ]
    assert logged == files


def test_pairs_of_every_kind_of_input_match_numpy(make_nifti, rng, monkeypatch):
    # After a float map, pairs of: a flipped float map (re-ordered onto the grid, slabs not
    # contiguous) with a scaled int16 volume (float64 values computed per slab), and a mask
    # with an unscaled int16 volume (integers into Welford's form).
    from nipype_heatmap import cohort
    from nipype_heatmap.api import accumulate_files

    monkeypatch.setattr(cohort, "_BLOCK", 37)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-6.0 + 2.0 * (SHAPE[0] - 1), -8.0, -9.0]
    first = (rng.standard_normal(SHAPE) * 3 + 50).astype(np.float32)
    flipped = (rng.standard_normal(SHAPE) * 3 + 50).astype(np.float32)
    flipped[rng.random(SHAPE) < 0.3] = 0.0
    stored = rng.integers(-300, 300, SHAPE).astype(np.int16)
    mask = (rng.random(SHAPE) > 0.5).astype(np.uint8)
    ints = rng.integers(-5, 60, SHAPE).astype(np.int16)
    files = [
        str(make_nifti("first.nii", first)),
        str(make_nifti("flipped.nii", flipped[::-1], affine=affine)),
        str(make_nifti("scaled.nii", stored, slope=0.25, inter=10.0)),
        str(make_nifti("mask.nii.gz", mask)),
        str(make_nifti("ints.nii", ints)),
    ]
    pairs = []
    add_pair = cohort.CohortStats.add_pair
    monkeypatch.setattr(
        cohort.CohortStats,
        "add_pair",
        lambda self, *a, **k: pairs.append(1) or add_pair(self, *a, **k),
    )
    acc = accumulate_files(files, num_threads=2, overlap=True, spread=True)
    assert len(pairs) == 2
    values = [first, flipped, stored * 0.25 + 10.0, mask, ints]
    stack = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    n, var, nonzero = _brute(stack)
    assert_allclose(acc.total, stack.sum(0), rtol=1e-14)
    assert_allclose(acc.stats.variance(5, acc.total), var, rtol=1e-10)
    assert_array_equal(acc.stats.nonzero_count(acc.total), nonzero)
    assert (acc.global_min, acc.global_max) == (stack.min(), stack.max())
