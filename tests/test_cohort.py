"""Cohort maps (coverage, spread, minimum overlap, subtraction) against brute-force numpy."""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from nipype_heatmap import _runtime
from nipype_heatmap.accumulate import HeatmapAccumulator, Reference
from nipype_heatmap.accumulate import spread as spread_module
from nipype_heatmap.api import (
    accumulate_files,
    compute_subtraction,
    generate_heatmap_volume,
    write_cohort_maps,
    write_heatmap,
)
from nipype_heatmap.io import read_volume
from nipype_heatmap.maps import cohort_images, overlap_table
from nipype_heatmap.options import CohortOptions, MapOptions
from nipype_heatmap.state import load_state, save_state

from .conftest import SHAPE, default_affine, no_worker_thread_left

FLIP_X = np.diag([-2.0, 2.0, 2.0, 1.0])  # the default grid with its x axis stored reversed
FLIP_X[:3, 3] = [-6.0 + 2.0 * (SHAPE[0] - 1), -8.0, -9.0]
SWAP_XZ = default_affine()[:, [2, 1, 0, 3]]  # the default grid stored with x and z swapped


@pytest.fixture(autouse=True)
def _four_cpus(monkeypatch):
    """Let 1 to 4 reader threads run whatever this machine has."""
    monkeypatch.setattr(_runtime, "available_cpus", lambda: 4)


def _stack(files):
    return np.stack([nb.load(f).get_fdata() for f in files])


def _accumulate(files, threads=1):
    return accumulate_files(files, overlap=True, spread=True, num_threads=threads)


def _one_by_one(files, **tracks):
    """An accumulator of ``files`` added one at a time with ``add_file`` (no read-ahead)."""
    acc = HeatmapAccumulator(Reference.of(read_volume(files[0])), **tracks)
    for f in files:
        acc.add_file(f)
    return acc


def _coverage(acc):
    return np.broadcast_to(acc.count.value, acc.shape)


def _nonzero(acc):
    return acc.nonzero.value(acc.sum)


def _variance(acc, ddof=1):
    """The float64 variance that the float32 maps are rounded from, out of the spread's
    state: Welford's ``M2 / (n - ddof)``, or the exact integer numerator
    ``(n S2 - S**2) / (n (n - ddof))`` (``S2 = S`` for binary masks); NaN where
    ``n - ddof <= 0``."""
    stats = acc.spread
    count = np.asarray(acc.count.value)
    n = count.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if stats.m2 is not None:
            var = stats.m2 / (n - ddof)
        else:
            s1 = np.rint(acc.sum.values).astype(np.int64)
            s2 = s1 if stats.squares is None else stats.squares
            numerator = count.astype(np.int64) * s2 - s1 * s1
            var = numerator.astype(np.float64) / (n * (n - ddof))
    return np.where(np.broadcast_to(n - ddof > 0, acc.shape), var, np.nan)


def _maps(acc, ddof=1):
    """The float32 variance and standard deviation maps."""
    return acc.spread.variance_maps(acc.count, acc.sum, ddof)


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
    assert_array_equal(_coverage(acc), n)
    assert_allclose(_variance(acc, ddof=1), var, rtol=1e-10, equal_nan=True)
    var32, std32 = _maps(acc, ddof=1)
    assert_allclose(var32, var.astype(np.float32), rtol=1e-6, equal_nan=True)
    assert_allclose(std32, np.sqrt(var).astype(np.float32), rtol=1e-6, equal_nan=True)
    assert_array_equal(_nonzero(acc), nonzero)
    assert acc.spread.exact == (kind in ("masks", "ints"))


def test_integer_variance_is_exact(int_files):
    acc = _accumulate(int_files)
    stack = _stack(int_files).astype(np.int64)
    n = len(int_files)
    assert_array_equal(acc.spread.squares, (stack**2).sum(0))
    exact = (n * (stack**2).sum(0) - stack.sum(0) ** 2) / (n * (n - 1))
    assert_array_equal(_variance(acc, ddof=1), exact)
    var32, std32 = _maps(acc, ddof=1)
    assert_array_equal(var32, exact.astype(np.float32))
    assert_array_equal(std32, np.sqrt(exact).astype(np.float32))


def test_ddof_zero_is_the_population_variance(float_files):
    acc = _accumulate(float_files)
    _, var, _ = _brute(_stack(float_files), ddof=0)
    assert_allclose(_variance(acc, ddof=0), var, rtol=1e-10, equal_nan=True)
    assert_allclose(_maps(acc, ddof=0)[0], var.astype(np.float32), rtol=1e-6, equal_nan=True)


def test_huge_integers_leave_the_exact_path_without_losing_accuracy(make_nifti, rng):
    files = [
        str(make_nifti(f"h{i}.nii", (rng.integers(0, 1000, SHAPE) + 2**40).astype(np.int64)))
        for i in range(4)
    ]
    acc = _accumulate(files)
    assert not acc.spread.exact  # (2**40)**2 * n would overflow int64
    _, var, _ = _brute(_stack(files))
    # float64 Welford at an offset of 1e12: the mean's last bit is 1e-4, the spread ~300
    assert_allclose(_variance(acc), var, rtol=1e-5)


@pytest.mark.parametrize("split", [1, 3, 5])
def test_merged_parts_equal_one_pass(float_files, int_files, split):
    files = int_files[:2] + float_files + int_files[2:]
    whole = _accumulate(files)
    merged = _accumulate(files[:split]).merge(_accumulate(files[split:]))
    assert_array_equal(_nonzero(merged), _nonzero(whole))
    assert_allclose(_variance(merged), _variance(whole), rtol=1e-10, equal_nan=True)


def test_merging_masks_stays_exact(mask_files):
    merged = _accumulate(mask_files[:3]).merge(_accumulate(mask_files[3:]))
    assert merged.spread.exact
    _, var, _ = _brute(_stack(mask_files))
    assert_allclose(_variance(merged), var, rtol=1e-12)


def test_overlap_table_and_thresholds():
    nonzero = np.array([0, 1, 1, 2, 3, 3, 3], np.uint32)
    rows = overlap_table(nonzero, 4)
    assert [(r.min_count, r.voxels) for r in rows] == [(1, 6), (2, 4), (3, 3), (4, 0)]
    assert CohortOptions(min_fraction=0.1).min_count_for(20) == 2
    assert CohortOptions(min_fraction=0.1).min_count_for(21) == 3
    assert CohortOptions(min_count=5).min_count_for(20) == 5
    with pytest.raises(ValueError, match="not both"):
        CohortOptions(min_count=5, min_fraction=0.1)
    with pytest.raises(ValueError, match="min_fraction"):
        CohortOptions(min_fraction=1.5)


def test_write_cohort_maps_beside_the_heatmap(mask_files, tmp_path):
    out = tmp_path / "out" / "lesion.nii.gz"
    cohort = CohortOptions(coverage=True, std=True, min_count=3)
    written = write_cohort_maps(mask_files, out, cohort=cohort)
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
    first = Path(mask_files[0])
    clash = first.with_name("group_overlap.tsv")  # not an input: fine, but never written
    victim = first.with_name("group_coverage.nii.gz")  # the coverage map's name
    victim.write_bytes(first.read_bytes())
    before = victim.read_bytes()
    cohort = CohortOptions(coverage=True, min_count=2)
    with pytest.raises(ValueError, match=re.escape(f"{victim}: the coverage would overwrite")):
        write_cohort_maps(
            [*mask_files, str(victim)], first.with_name("group.nii.gz"), cohort=cohort
        )
    with pytest.raises(ValueError, match=re.escape(f"{first}: the heatmap would overwrite")):
        write_cohort_maps(mask_files, first, cohort=cohort)
    assert not clash.exists() and not first.with_name("group.nii.gz").exists()
    assert victim.read_bytes() == before


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


def test_a_rerun_leaves_out_earlier_cohort_maps_but_not_other_files(make_nifti, in_dir):
    # The maps an earlier run wrote beside the heatmap in the input folder are never
    # inputs, also when this run does not make them (another k, or no cohort map); a file
    # at such a name that is not this tool's, and a map of this tool at another name, are.
    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(4)]
    out = in_dir / "group.nii.gz"
    write_cohort_maps([in_dir], out, cohort=CohortOptions(coverage=True, std=True, min_count=2))
    written = write_cohort_maps([in_dir], out, cohort=CohortOptions(min_count=3))
    _, _, nonzero = _brute(_stack(files))
    assert_array_equal(np.asanyarray(nb.load(written["mincount"]).dataobj), nonzero >= 3)
    for path in written.values():
        if path.endswith(".nii.gz"):
            assert b"of 4 volumes" in nb.load(path).header["descrip"].tobytes(), path
    assert written["mincount"].endswith("group_mincount3.nii.gz")
    out = generate_heatmap_volume(in_dir, in_dir, "group.nii.gz")
    assert b"of 4 volumes" in nb.load(out).header["descrip"].tobytes()
    assert_allclose(nb.load(out).get_fdata(), _stack(files).mean(0), rtol=1e-6)

    (in_dir / "group_variance.nii.gz").unlink()  # a user's mask of that name: an input
    users = str(make_nifti("group_variance.nii.gz"))
    subgroup = write_cohort_maps(files[:2], in_dir / "group_first.nii.gz")["heatmap"]
    out = generate_heatmap_volume(in_dir, in_dir, "group.nii.gz")
    assert b"of 6 volumes" in nb.load(out).header["descrip"].tobytes()
    expected = _stack(sorted([*files, users, subgroup])).mean(0)
    assert_allclose(nb.load(out).get_fdata(), expected, rtol=1e-6)
    # A heatmap of that name in another folder: the maps in the input folder are not
    # beside it, so every NIfTI file there is an input (the 6, and 6 maps of group).
    elsewhere = write_heatmap([in_dir], in_dir.parent / "elsewhere" / "group.nii.gz")
    assert b"of 12 volumes" in nb.load(elsewhere).header["descrip"].tobytes()


def test_subtraction_never_overwrites_an_input(make_nifti, in_dir, tmp_path, capsys):
    from nipype_heatmap.cli.heatmap import main

    make_nifti("a0.nii.gz")
    b = make_nifti("b0.nii.gz", folder=tmp_path / "b")
    victim = in_dir / "a0.nii.gz"
    before = victim.read_bytes()
    assert main([str(in_dir), "--group-b", str(b), "-o", str(victim), "-q"]) == 1
    assert f"{victim}: the subtraction would overwrite" in capsys.readouterr().err
    assert victim.read_bytes() == before


@pytest.mark.parametrize("threads", [1, 2])
def test_tracking_the_spread_never_changes_the_mean(float_files, int_files, make_nifti, threads):
    # The spread of floats is updated in the same pass as the sum: the sum must still be
    # the plain float64 loop's, bit for bit, with or without missing values.
    complete = [str(make_nifti(f"c{i}.nii", np.full(SHAPE, 0.1 * i + 0.3, np.float32)))
                for i in range(3)]  # fmt: skip
    files = [*int_files[:2], *complete, *float_files[:3], *complete]
    plain = accumulate_files(files, num_threads=threads)
    tracked = accumulate_files(files, num_threads=threads, overlap=True, spread=True)
    for use_mean in (True, False):
        options = MapOptions(use_mean=use_mean, clip_to_input_range=False)
        a = plain.aggregate(options)
        b = tracked.aggregate(options)
        assert_array_equal(a.view(np.uint64), b.view(np.uint64))
    n, var, nonzero = _brute(_stack(files))
    assert_array_equal(_nonzero(tracked), nonzero)
    assert_allclose(_variance(tracked), var, rtol=1e-9)


# -- cases the mutation run (tools/mutate.py) showed untested -------------------------------


def test_spread_in_small_blocks_and_of_reordered_volumes_matches_numpy(
    make_nifti, rng, monkeypatch
):
    # Blocks of a few voxels (block edges everywhere) and a volume stored with its x axis
    # flipped (not contiguous on the reference grid) give numpy's values.
    monkeypatch.setattr(spread_module, "BLOCK", 37)
    data = [(rng.standard_normal(SHAPE) * 3 + 50).astype(np.float32) for _ in range(4)]
    for d in data:
        d[rng.random(SHAPE) < 0.2] = 0.0
    files = [str(make_nifti(f"b{i}.nii", d)) for i, d in enumerate(data[:3])]
    files.append(str(make_nifti("flipped.nii", data[3][::-1], affine=FLIP_X)))
    acc = _accumulate(files, threads=2)
    n, var, nonzero = _brute(np.stack(data).astype(np.float64))
    assert_allclose(_variance(acc), var, rtol=1e-10)
    assert_array_equal(_nonzero(acc), nonzero)


def test_overlap_without_spread_never_counts_missing_values(float_files):
    acc = accumulate_files(float_files, overlap=True)
    assert acc.spread is None
    assert_array_equal(_nonzero(acc), _brute(_stack(float_files))[2])


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
    assert_array_equal(_nonzero(acc), nonzero)
    assert_allclose(_variance(acc), var, rtol=1e-10)


def test_complete_volumes_after_missing_ones_count_their_zeros(float_files, make_nifti, rng):
    # After a volume with NaN the count is per voxel: a complete volume's zeros and ones must
    # still be counted right.
    complete = [rng.integers(0, 2, SHAPE).astype(np.float32) for _ in range(2)]
    files = float_files[:2] + [str(make_nifti(f"z{i}.nii", d)) for i, d in enumerate(complete)]
    acc = _accumulate(files)
    n, var, nonzero = _brute(_stack(files))
    assert_array_equal(_nonzero(acc), nonzero)
    assert_allclose(_variance(acc), var, rtol=1e-10, equal_nan=True)


def test_large_integers_keep_the_exact_variance(make_nifti, rng):
    # Sums of squares beyond 2**53 but within int64: the exact integer numerator is used.
    files = [
        str(make_nifti(f"l{i}.nii", rng.integers(2**27, 2**28, SHAPE).astype(np.int32)))
        for i in range(4)
    ]
    acc = _accumulate(files)
    assert acc.spread.exact and 4 * acc.spread.square_bound >= 2**53
    stack = _stack(files).astype(np.int64)
    numerator = 4 * (stack**2).sum(0) - stack.sum(0) ** 2
    assert_array_equal(_variance(acc), numerator / (4 * 3))
    assert_array_equal(_maps(acc)[0], (numerator / (4 * 3)).astype(np.float32))


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
    if a == 2_000_000_000:  # folded into Welford's form: no bound of exact squares left
        assert acc.spread.form == "welford" and acc.spread.square_bound == 0
    if how == "saved and loaded":
        acc = load_state(save_state(acc, tmp_path / "state.nii.gz"))
    images, _ = cohort_images(acc, CohortOptions(std=True))
    assert_array_equal(images["variance"].get_fdata(dtype=np.float32), np.float32(variance))


def test_counts_of_65536_inputs_do_not_wrap(make_nifti):
    # a mask merged with copies of itself 16 times: 2**16 inputs, one more than uint16 holds
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:5, 3:6, 1:4] = 1
    acc = _accumulate([make_nifti("m.nii.gz", mask)])
    for _ in range(16):
        acc.merge(copy.deepcopy(acc))
    assert acc.n_inputs == 2**16
    images, table = cohort_images(acc, CohortOptions(coverage=True, min_count=2**16))
    assert_array_equal(np.asanyarray(images["coverage"].dataobj), 2**16)
    assert_array_equal(np.asanyarray(images["overlap"].dataobj), mask.astype(np.int64) * 2**16)
    assert_array_equal(np.asanyarray(images["mincount"].dataobj), mask)
    assert table[-1].min_count == 2**16 and table[-1].voxels == mask.sum()


def test_merging_refuses_parts_that_track_other_statistics(mask_files):
    a = accumulate_files(mask_files[:1], overlap=True, spread=True)
    b = accumulate_files(mask_files[1:2], overlap=True, spread=False)
    with pytest.raises(ValueError, match="different cohort statistics"):
        a.merge(b)


def test_merging_integer_parts_keeps_the_spread_exact_and_float_then_integer_parts_merge(
    int_files, float_files
):
    merged = _accumulate(int_files[:2]).merge(_accumulate(int_files[2:]))
    assert merged.spread.exact
    # a part still exact (integers) merged into one that is not (floats)
    files = float_files[:3] + int_files[:2]
    mixed = _accumulate(files[:3]).merge(_accumulate(files[3:]))
    whole = _accumulate(files)
    assert_allclose(_variance(mixed), _variance(whole), rtol=1e-10, equal_nan=True)


def test_merging_parts_where_the_first_has_no_value_at_a_voxel(make_nifti, rng):
    first = np.full(SHAPE, np.nan, np.float32)
    first[0] = 1.0  # only one slice has values in the first part
    others = [(rng.random(SHAPE) * 10).astype(np.float32) for _ in range(3)]
    files = [str(make_nifti("first.nii", first))]
    files += [str(make_nifti(f"o{i}.nii", d)) for i, d in enumerate(others)]
    for order in ((files[:1], files[1:]), (files[1:], files[:1])):  # empty in either part
        merged = _accumulate(order[0]).merge(_accumulate(order[1]))
        _, var, _ = _brute(_stack([*order[0], *order[1]]))
        assert_allclose(_variance(merged), var, rtol=1e-10)


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
    assert_allclose(_variance(acc), var, rtol=1e-10)


def test_overlap_table_fractions_and_thresholds_by_fraction():
    rows = overlap_table(np.array([0, 1, 2, 3, 3], dtype=np.uint32), 3)
    assert [(r.min_count, r.fraction, r.voxels) for r in rows] == [
        (1, 0.333333, 4),
        (2, 0.666667, 3),
        (3, 1.0, 2),
    ]
    assert CohortOptions(min_fraction=1.0).min_count_for(10) == 10
    assert CohortOptions(min_fraction=0.01).min_count_for(10) == 1
    assert CohortOptions(min_fraction=0.25).min_count_for(10) == 3


def test_default_maps_and_missing_statistics(mask_files, tmp_path):
    plain = accumulate_files(mask_files)
    with pytest.raises(ValueError, match="spread was not tracked"):
        cohort_images(plain, CohortOptions(std=True))
    with pytest.raises(ValueError, match="overlap was not tracked"):
        cohort_images(plain, CohortOptions(min_count=2))
    assert cohort_images(_accumulate(mask_files), CohortOptions()) == ({}, None)  # none asked
    images, table = cohort_images(_accumulate(mask_files), CohortOptions(coverage=True, std=True))
    assert set(images) == {"coverage", "std", "variance"} and table is None
    written = write_cohort_maps(mask_files, tmp_path / "c.nii.gz")  # the heatmap only
    assert set(written) == {"heatmap"}
    assert_array_equal(  # the clipped mean
        np.asanyarray(nb.load(written["heatmap"]).dataobj),
        np.asanyarray(plain.map_image(MapOptions()).dataobj),
    )


def test_subtraction_needs_both_groups(mask_files):
    with pytest.raises(ValueError, match="both groups"):
        compute_subtraction([], mask_files)
    with pytest.raises(ValueError, match="both groups"):
        compute_subtraction(mask_files, [])


def test_infinite_values_without_nan_are_missing_for_the_overlap(make_nifti, rng):
    data = rng.integers(0, 2, SHAPE).astype(np.float32)
    data[0, 0, 0] = np.inf  # infinite (the lowest value is finite), and no NaN anywhere
    files = [str(make_nifti("inf.nii", data)), str(make_nifti("ones.nii", np.ones(SHAPE, "f4")))]
    acc = accumulate_files(files, overlap=True)
    assert_array_equal(_nonzero(acc), _brute(_stack(files))[2])


def test_cohort_options_default_ddof_is_one(float_files, tmp_path):
    assert CohortOptions().ddof == 1
    written = write_cohort_maps(float_files, tmp_path / "m.nii.gz", cohort=CohortOptions(std=True))
    _, var, _ = _brute(_stack(float_files), ddof=1)
    got = np.asanyarray(nb.load(written["variance"]).dataobj)
    assert_allclose(got, var.astype(np.float32), rtol=1e-6, equal_nan=True)


def test_cohort_maps_leave_no_worker_thread_behind(make_nifti, tmp_path):
    files = [
        make_nifti(f"p{i}.nii", np.full(SHAPE, i / 3, np.float32), dtype=np.float32)
        for i in range(3)
    ]
    cohort = CohortOptions(coverage=True, std=True, min_count=2)
    with no_worker_thread_left():
        written = write_cohort_maps(files, tmp_path / "m.nii.gz", cohort=cohort, num_threads=2)
    assert {"heatmap", "coverage", "std"} <= set(written)


@pytest.mark.parametrize("step", [100, 400])  # 400: 2.5 steps' worth, a short last one
def test_overlap_table_in_steps_counts_every_voxel(monkeypatch, step):
    from nipype_heatmap import maps

    monkeypatch.setattr(maps, "_TABLE_STEP", step)
    rng = np.random.default_rng(3)
    nonzero = rng.integers(0, 8, (13, 11, 7)).astype(np.uint16)  # 1001 voxels
    nonzero[nonzero > 4] = 0  # mostly empty, as lesion overlap is
    nonzero[0, 0, 0] = nonzero[-1, -1, -1] = 3  # the first and the last voxel count too
    rows = overlap_table(np.asfortranarray(nonzero), 6)
    assert [(r.min_count, r.voxels) for r in rows] == [
        (k, int(np.count_nonzero(nonzero >= k))) for k in range(1, 7)
    ]


@pytest.mark.parametrize("ddof", [0, 1, 2])
@pytest.mark.parametrize("n_files", [1, 2])
def test_variance_is_nan_exactly_where_too_few_values_for_ddof(float_files, ddof, n_files):
    acc = _accumulate(float_files[:n_files])
    var, std = _maps(acc, ddof=ddof)
    n = np.broadcast_to(np.asarray(acc.count.value, dtype=np.int64), var.shape)
    too_few = n - ddof <= 0
    assert_array_equal(np.isnan(var), too_few)
    assert_array_equal(np.isnan(std), too_few)
    assert np.isfinite(var[~too_few]).all() and np.isfinite(std[~too_few]).all()


@pytest.mark.parametrize("kind", ["floats", "masks", "ints", "large ints"])
def test_spread_maps_in_blocks_equal_the_whole_volume_variance(
    monkeypatch, make_nifti, rng, float_files, mask_files, int_files, kind
):
    # The float32 maps are computed a block at a time: every voxel must get the bits of
    # the whole-volume float64 variance (and its square root) rounded once to float32, in
    # each form of the spread.
    if kind == "large ints":  # n * S2 beyond 2**53: the exact int64 numerator
        files = [
            str(make_nifti(f"l{i}.nii", rng.integers(2**27, 2**28, SHAPE).astype(np.int32)))
            for i in range(4)
        ]
    else:
        files = {"floats": float_files, "masks": mask_files, "ints": int_files}[kind]
    acc = _accumulate(files)
    form = {"floats": "welford", "masks": "binary", "ints": "squares", "large ints": "squares"}
    assert acc.spread.form == form[kind]
    monkeypatch.setattr(spread_module, "BLOCK", 37)  # many blocks, a short last one
    for ddof in (0, 1, 4, len(files)):  # 4: NaN where a float voxel has 4 values or fewer
        want = _variance(acc, ddof=ddof)
        assert np.isnan(want).all() == (ddof == len(files))
        if kind == "floats" and ddof == 4:
            assert np.isnan(want).any()  # the voxels with 4 finite values or fewer
        elif kind != "floats":  # as many values at every voxel
            assert np.isnan(want).any() == (ddof == len(files))
        var, sd = _maps(acc, ddof=ddof)
        assert var.dtype == sd.dtype == np.float32 and var.flags.f_contiguous
        assert_array_equal(var, want.astype(np.float32))
        assert_array_equal(sd, np.sqrt(want).astype(np.float32))


@pytest.mark.parametrize("n_files", [5, 6])
def test_every_input_shows_in_the_progress_bar_and_the_log(float_files, capsys, caplog, n_files):
    import logging

    files = float_files[:n_files]
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        accumulate_files(files, overlap=True, spread=True, progress=True, debug=True)
    assert f"{n_files}/{n_files}" in capsys.readouterr().err
    logged = [
        r.getMessage().split(":")[0] for r in caplog.records if "value range" in r.getMessage()
    ]
    assert logged == files


def test_every_kind_of_input_after_a_float_map_matches_numpy(make_nifti, rng, monkeypatch):
    # After a float map (the spread in Welford's form): a flipped float map (re-ordered onto
    # the grid), a scaled int16 volume (float64 values), a mask and an unscaled int16
    # volume (integers into Welford's form), in blocks of a few voxels.
    monkeypatch.setattr(spread_module, "BLOCK", 37)
    first = (rng.standard_normal(SHAPE) * 3 + 50).astype(np.float32)
    flipped = (rng.standard_normal(SHAPE) * 3 + 50).astype(np.float32)
    flipped[rng.random(SHAPE) < 0.3] = 0.0
    stored = rng.integers(-300, 300, SHAPE).astype(np.int16)
    mask = (rng.random(SHAPE) > 0.5).astype(np.uint8)
    ints = rng.integers(-5, 60, SHAPE).astype(np.int16)
    files = [
        str(make_nifti("first.nii", first)),
        str(make_nifti("flipped.nii", flipped[::-1], affine=FLIP_X)),
        str(make_nifti("scaled.nii", stored, slope=0.25, inter=10.0)),
        str(make_nifti("mask.nii.gz", mask)),
        str(make_nifti("ints.nii", ints)),
    ]
    acc = accumulate_files(files, num_threads=2, overlap=True, spread=True)
    values = [first, flipped, stored * 0.25 + 10.0, mask, ints]
    stack = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    n, var, nonzero = _brute(stack)
    assert_allclose(acc.sum.as_float(), stack.sum(0), rtol=1e-14)
    assert_allclose(_variance(acc), var, rtol=1e-10)
    assert_array_equal(_nonzero(acc), nonzero)
    assert acc.global_range == (stack.min(), stack.max())


# -- regression tests of the restructuring --------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "n_inputs", "k"),
    [
        (0.3333333334, 3, 2),  # F N = 1.0000000002: above 1
        (0.3333333333, 3, 1),  # 1/3 written to ten digits: F N = 0.9999999999
        (0.5, 7, 4),
        (1.0, 1, 1),
        (1.0, 7, 7),
        (1.0, 1000, 1000),
        (0.07, 100, 7),  # in floats 0.07 * 100 = 7.000000000000001, whose ceil is 8
        (0.28, 25, 7),  # in floats 0.28 * 25 = 7.000000000000001
        (0.6666666666666667, 3, 3),  # in floats 2.0 exactly; as written, 2.0000000000000001
        (0.1, 10, 1),  # the binary value of 0.1 is above 1/10: ceil(Fraction(0.1) * 10) is 2
        (0.2, 5, 1),
        (0.001, 10, 1),  # at least one input
    ],
)
def test_min_fraction_is_the_ceiling_of_f_n_in_exact_decimal_arithmetic(fraction, n_inputs, k):
    assert CohortOptions(min_fraction=fraction).min_count_for(n_inputs) == k
    assert CohortOptions(min_fraction=fraction, coverage=True).as_parameters(n_inputs) == {
        "MinimumCount": k
    }


@pytest.mark.parametrize(
    ("fraction", "n_inputs", "k"),
    [(0.3333333334, 3, 2), (0.3333333333, 3, 1), (0.5, 7, 4), (1.0, 3, 3), (0.28, 25, 7)],
)
def test_min_fraction_names_the_mask_with_its_exact_count(
    make_nifti, tmp_path, fraction, n_inputs, k
):
    files = [str(make_nifti(f"m{i:02d}.nii.gz")) for i in range(n_inputs)]
    written = write_cohort_maps(
        files, tmp_path / "lesion.nii.gz", cohort=CohortOptions(min_fraction=fraction)
    )
    assert written["mincount"] == str(tmp_path / f"lesion_mincount{k}.nii.gz")
    assert sorted(p.name for p in tmp_path.glob("lesion_mincount*")) == [
        f"lesion_mincount{k}.nii.gz"
    ]
    _, _, nonzero = _brute(_stack(files))
    assert_array_equal(np.asanyarray(nb.load(written["mincount"]).dataobj), nonzero >= k)
    assert f"overlap >= {k}".encode() in nb.load(written["mincount"]).header["descrip"].tobytes()


def test_min_fraction_of_the_command_is_read_exactly(make_nifti, in_dir, tmp_path, capsys):
    from nipype_heatmap.cli.heatmap import main

    for i in range(3):
        make_nifti(f"m{i}.nii.gz")
    for fraction, k in (("0.3333333334", 2), ("0.3333333333", 1)):
        out = tmp_path / f"k{k}" / "lesion.nii.gz"
        assert main([str(in_dir), "-o", str(out), "--min-fraction", fraction, "-q"]) == 0
        assert str(out.with_name(f"lesion_mincount{k}.nii.gz")) in capsys.readouterr().out.split()


def _nan_in_later_volumes(make_nifti, rng, positions):
    """Six float maps around a large mean; those at ``positions`` have NaN (some voxels
    left with one value or none)."""
    files = []
    for i in range(6):
        data = (rng.standard_normal(SHAPE) * 3 + 100).astype(np.float32)
        data[rng.random(SHAPE) < 0.1] = 0.0
        if i in positions:
            data[rng.random(SHAPE) < 0.3] = np.nan
            data[0, 0, :4] = np.nan  # missing in each of them: the fewest values
        files.append(str(make_nifti(f"v{i}.nii", data)))
    return files


@pytest.mark.parametrize(
    "positions",
    [(1,), (2,), (5,), (1, 2), (1, 3, 5)],
    ids=lambda p: "nan_in_" + "_".join(map(str, p)),
)
@pytest.mark.parametrize("how", ["1 thread", "3 threads", "one by one", "two parts merged"])
def test_nan_in_a_later_float_volume_gives_numpys_nan_aware_spread(
    make_nifti, rng, positions, how
):
    # The first volume is complete and a later one is not: from then on the count is per
    # voxel, and the spread must use each voxel's own count (the class of the old paired
    # steps' bug, where two volumes were added with one count).
    with_nan = set(positions) | {4}
    files = _nan_in_later_volumes(make_nifti, rng, with_nan)
    if how == "one by one":
        acc = _one_by_one(files, overlap=True, spread=True)
    elif how == "two parts merged":
        acc = _accumulate(files[:3]).merge(_accumulate(files[3:]))
    else:
        acc = _accumulate(files, threads=int(how[0]))
    stack = _stack(files)
    assert np.isfinite(stack[0]).all() and not np.isfinite(stack[1:]).all()
    for ddof in (0, 1, len(files) - len(with_nan)):  # the last: NaN where fewest values
        n, var, nonzero = _brute(stack, ddof=ddof)
        assert (n - ddof <= 0).any() == (ddof > 1)
        assert_allclose(_variance(acc, ddof), var, rtol=1e-10, equal_nan=True)
        images, _ = cohort_images(acc, CohortOptions(coverage=True, std=True, ddof=ddof))
        assert_array_equal(np.asanyarray(images["coverage"].dataobj), n)
        got_var = np.asanyarray(images["variance"].dataobj)
        got_std = np.asanyarray(images["std"].dataobj)
        assert_array_equal(np.isnan(got_var), np.isnan(var))
        assert_array_equal(np.isnan(got_std), np.isnan(var))
        assert_allclose(got_var, var.astype(np.float32), rtol=1e-6, equal_nan=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # voxels with too few values
            std = np.nanstd(stack, axis=0, ddof=ddof)
        assert_allclose(got_std, np.where(n - ddof > 0, std, np.nan), rtol=1e-6, equal_nan=True)
    assert_array_equal(_nonzero(acc), _brute(stack)[2])


@pytest.mark.parametrize(
    "stored",
    ["b first flipped", "b later flipped", "b later swapped", "a first swapped"],
)
def test_subtraction_reorders_files_stored_in_another_voxel_order(make_nifti, rng, stored):
    # One file stored in another voxel order of the same grid (x flipped, or x and z
    # swapped): its values are re-ordered onto group A's first file's grid before they
    # count, in group B as in group A.
    a_data = [(rng.random(SHAPE) > 0.5).astype(np.uint8) for _ in range(3)]
    b_data = [(rng.random(SHAPE) > 0.6).astype(np.uint8) for _ in range(4)]
    b_data[1][rng.random(SHAPE) < 0.5] = 2  # not only masks: the values, not just the hits
    which = {"b first flipped": ("b", 0), "b later flipped": ("b", 2)}
    which |= {"b later swapped": ("b", 3), "a first swapped": ("a", 0)}
    group, index = which[stored]

    def write(name, data, here):
        if not here:
            return str(make_nifti(name, data))
        if "flipped" in stored:
            return str(make_nifti(name, data[::-1], affine=FLIP_X))
        return str(make_nifti(name, data.transpose(2, 1, 0), affine=SWAP_XZ))

    group_a = [write(f"a{i}.nii.gz", d, group == "a" and i == index) for i, d in enumerate(a_data)]
    group_b = [write(f"b{i}.nii.gz", d, group == "b" and i == index) for i, d in enumerate(b_data)]
    maps = compute_subtraction(group_a, group_b)

    sa = np.sum(a_data, axis=0, dtype=np.float64)
    sb = np.sum(b_data, axis=0, dtype=np.float64)
    percent_a, percent_b = sa / len(a_data) * 100, sb / len(b_data) * 100
    expected = {
        "subtraction": percent_a - percent_b,
        "percent_a": percent_a,
        "percent_b": percent_b,
    }
    reference = nb.load(group_a[0])
    for name, want in expected.items():
        if stored == "a first swapped":  # the maps are on A's first file's voxel order
            want = want.transpose(2, 1, 0)
        img = maps[name]
        assert_array_equal(np.asanyarray(img.dataobj), want.astype(np.float32), err_msg=name)
        assert_array_equal(img.affine, reference.affine)
