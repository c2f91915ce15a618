"""Exact incremental updates of a saved state: add and remove files, compare with recomputes."""

from __future__ import annotations

import json
import os
import re

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from nipype_heatmap import CohortOptions, HeatmapAccumulator, MapOptions, accumulate_files, api
from nipype_heatmap.accumulate import Reference
from nipype_heatmap.io import LockTimeout, read_volume
from nipype_heatmap.maps import cohort_images
from nipype_heatmap.state import load_state, read_metadata, save_state

from .conftest import SHAPE, default_affine, no_worker_thread_left, stop_after_the_first_rename

FLIP_X = np.diag([-1.0, 1, 1, 1]) @ np.eye(4)


def _flipped_affine():
    affine = default_affine().copy()
    affine[:3, 0] *= -1
    affine[:3, 3] += default_affine()[:3, 0] * (SHAPE[0] - 1)
    return affine


def _state(files, path, **track):
    acc = accumulate_files(files, digests=True, overlap=True, spread=True, **track)
    return save_state(acc, path)


def update_state(state, **kwargs):
    """The updated accumulator of :func:`nipype_heatmap.api.update_state`."""
    acc, written = api.update_state(state, **kwargs)
    assert set(written) >= {"state"}
    return acc


def _maps(acc, ddof=1):
    """Every map an accumulator gives, as arrays, plus the heatmap's affine and header."""
    cohort = CohortOptions(coverage=True, std=True, ddof=ddof, min_count=1)
    images, table = cohort_images(acc, cohort)
    out = {name: np.asanyarray(img.dataobj) for name, img in images.items()}
    for use_mean in (True, False):
        img = acc.map_image(MapOptions(use_mean=use_mean))
        out["mean" if use_mean else "sum"] = np.asanyarray(img.dataobj)
    out["table"] = [(r.min_count, r.voxels) for r in table]
    out["affine"] = acc.affine
    out["header"] = acc.map_image(MapOptions()).header.binaryblock
    return out


def _assert_same(got, want, exact=True):
    assert got.keys() == want.keys()
    for name in want:
        if name in ("table", "header"):
            assert got[name] == want[name], name
        elif exact or name in ("coverage", "overlap", "mincount", "affine"):
            assert_array_equal(got[name], want[name], err_msg=name)
        else:
            assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.fixture
def masks(make_nifti):
    """Binary masks; every third one stored with a flipped x axis (same grid)."""
    files = []
    for i in range(9):
        path = make_nifti(f"m{i}.nii.gz")
        if i % 3 == 1:
            img = nb.load(path)
            data = np.asarray(img.dataobj)[::-1]
            path = make_nifti(f"m{i}.nii.gz", data, affine=_flipped_affine())
        files.append(str(path))
    return files


@pytest.fixture
def counts(make_nifti, rng):
    """Non-binary integers of several widths (exact sums of squares)."""
    dtypes = [np.uint8, np.int16, np.uint16, np.int32, np.int8, np.int64]
    return [
        str(make_nifti(f"n{i}.nii", rng.integers(0, 120, SHAPE).astype(dtype)))
        for i, dtype in enumerate(dtypes)
    ]


@pytest.fixture
def floats(make_nifti, rng):
    files = []
    for i in range(6):
        data = (rng.standard_normal(SHAPE) * 2 + 50).astype(np.float32)
        data[rng.random(SHAPE) < 0.2] = np.nan
        data[rng.random(SHAPE) < 0.1] = 0.0
        files.append(str(make_nifti(f"f{i}.nii.gz", data)))
    return files


@pytest.mark.parametrize("which", ["masks", "counts"])
def test_integer_updates_equal_a_recompute_bit_for_bit(which, masks, counts, tmp_path):
    files = {"masks": masks, "counts": counts + masks[:3]}[which]
    state = _state(files[:5], tmp_path / "state.nii.gz")
    # remove the first (the reference, so the grid and header move to the next file),
    # one in the middle, add the rest
    acc = update_state(state, add=files[5:], remove=[files[0], files[3]])
    final = [f for i, f in enumerate(files) if i not in (0, 3)]
    assert acc.sources == final
    want = _maps(accumulate_files(final, overlap=True, spread=True))
    _assert_same(_maps(acc), want)
    _assert_same(_maps(load_state(state)), want)  # the saved state gives the same maps


def test_removing_the_reference_takes_the_next_files_grid_and_header(masks, tmp_path):
    # masks[1] is stored flipped: after removing masks[0], the maps are in its voxel order
    state = _state(masks[:3], tmp_path / "state.nii.gz")
    acc = update_state(state, remove=[masks[0]])
    assert_array_equal(acc.affine, nb.load(masks[1]).affine)
    assert acc.reference.grid.source == masks[1]
    _assert_same(_maps(acc), _maps(accumulate_files(masks[1:3], overlap=True, spread=True)))


def test_float_updates_equal_a_recompute_to_rounding(floats, masks, tmp_path):
    files = floats + masks[:2]
    state = _state(files[:4], tmp_path / "state.nii.gz")
    update_state(state, add=[files[4]], remove=[files[1]])
    acc = update_state(state, add=files[5:], remove=[files[0], files[2]])
    final = [files[3], files[4], *files[5:]]
    assert acc.sources == final
    got, want = _maps(acc), _maps(accumulate_files(final, overlap=True, spread=True))
    _assert_same(got, want, exact=False)
    assert_array_equal(np.isnan(got["mean"]), np.isnan(want["mean"]))
    assert_array_equal(np.isnan(got["std"]), np.isnan(want["std"]))


def test_removing_everything_but_one_file(floats, counts, tmp_path):
    for files in (floats[:4], counts[:4]):
        state = _state(files, tmp_path / "state.nii.gz")
        acc = update_state(state, remove=files[:3])
        assert acc.sources == files[3:] and acc.n_inputs == 1
        want = _maps(accumulate_files(files[3:], overlap=True, spread=True), ddof=0)
        _assert_same(_maps(acc, ddof=0), want, exact=files is counts)
        assert acc.global_range[0] == want["mean"][np.isfinite(want["mean"])].min()
        variance, _ = acc.spread.variance_maps(acc.count, acc.sum, ddof=0)
        assert np.all(variance[np.isfinite(variance)] == 0.0)  # one value: exactly none


def test_updates_refuse_and_leave_the_state_unchanged(masks, make_nifti, rng, tmp_path):
    state = tmp_path / "state.nii.gz"
    _state(masks[:4], state)
    before = state.read_bytes()
    outside = str(make_nifti("other.nii.gz"))
    with pytest.raises(ValueError, match=r"other\.nii\.gz: not an input of the state"):
        update_state(state, remove=[outside])
    with pytest.raises(ValueError, match=r"m5\.nii\.gz: not an input"):
        update_state(state, add=[masks[6]], remove=[masks[5]])
    with pytest.raises(ValueError, match=r"m2\.nii\.gz: already an input"):
        update_state(state, add=[masks[2]])
    with pytest.raises(ValueError, match="empty state"):
        update_state(state, remove=masks[:4])
    # a file changed since it was added: same name, other voxels
    changed = np.asarray(nb.load(masks[2]).dataobj).copy()
    changed[0, 0, 0] = 1 - changed[0, 0, 0]
    make_nifti("m2.nii.gz", changed)
    with pytest.raises(ValueError, match=r"m2\.nii\.gz: the file has changed since it was added"):
        update_state(state, add=[masks[5]], remove=[masks[2]])
    assert state.read_bytes() == before


def test_a_file_can_be_replaced_by_a_removal_then_an_add(masks, make_nifti, tmp_path):
    state = _state(masks[:4], tmp_path / "state.nii.gz")
    old = nb.load(masks[2])
    fixed = np.asarray(old.dataobj).copy()
    fixed[:2] = 1
    # remove the old version, then add the corrected file under the same name: the
    # removal reads the file, so the old version must still be there when it runs
    update_state(state, remove=[masks[2]])
    make_nifti("m2.nii.gz", fixed)
    acc = update_state(state, add=[masks[2]])
    want = accumulate_files([masks[0], masks[1], masks[3], masks[2]], overlap=True, spread=True)
    _assert_same(_maps(acc), _maps(want))


def test_states_without_hashes_cannot_lose_files(masks, tmp_path):
    acc = accumulate_files(masks[:3], overlap=True)  # no digests: merge only
    state = save_state(acc, tmp_path / "state.nii.gz")
    assert json.loads(read_metadata(state))["Sources"][0]["Digest"] is None
    before = open(state, "rb").read()
    # refused as unhashed, not as "changed since it was added" (the file is unchanged)
    with pytest.raises(ValueError, match=re.escape(masks[1]) + ": .*no content hash"):
        update_state(state, remove=[masks[1]])
    assert open(state, "rb").read() == before
    update_state(state, add=[masks[3]])  # adding is fine
    assert load_state(state).n_inputs == 4


def test_update_writes_elsewhere_when_asked(masks, tmp_path):
    state = _state(masks[:3], tmp_path / "state.nii.gz")
    before = (tmp_path / "state.nii.gz").read_bytes()
    new = tmp_path / "v2" / "state.nii.gz"
    update_state(state, add=[masks[3]], out_state=new)
    assert (tmp_path / "state.nii.gz").read_bytes() == before
    assert load_state(new).sources == masks[:4]


def test_state_records_digest_range_and_header_per_input(masks, floats, tmp_path):
    import hashlib
    from pathlib import Path

    files = [masks[0], floats[0]]
    meta = json.loads(read_metadata(_state(files, tmp_path / "s.nii.gz")))
    first, second = meta["Sources"]
    assert first["Digest"] == "sha256:" + hashlib.sha256(Path(masks[0]).read_bytes()).hexdigest()
    assert first["Range"] == [0.0, 1.0]
    data = nb.load(floats[0]).get_fdata()
    assert second["Range"] == [np.nanmin(data), np.nanmax(data)]
    assert meta["Volumes"] == ["sum", "count", "nonzero", "m2"]
    assert meta["CohortStats"]["SpreadForm"] == "welford"


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_map_reduce_gives_every_cohort_map_of_a_single_pass(chunk, masks, counts, tmp_path):
    from nipype_heatmap.state import merge_states

    files = masks[:5] + counts[:3]
    parts = [
        _state(files[i : i + chunk], tmp_path / f"part{i}.nii.gz")
        for i in range(0, len(files), chunk)
    ]
    merged = merge_states(parts)
    assert merged.sources == files
    _assert_same(_maps(merged), _maps(accumulate_files(files, overlap=True, spread=True)))


def test_scaled_workflow_and_interfaces_write_cohort_maps_and_updates(masks, tmp_path):
    from nipype_heatmap.interfaces import HeatmapVolume, MergeHeatmaps, UpdateHeatmapState
    from nipype_heatmap.workflows import init_scaled_heatmap_wf

    cohort = {"coverage": True, "std": True, "min_count": 2}
    wf = init_scaled_heatmap_wf(chunk_size=3, cohort=cohort)
    wf.base_dir = str(tmp_path / "work")
    wf.inputs.inputnode.in_files = masks[:7]
    graph = wf.run()
    merge = next(n for n in graph.nodes() if n.name == "merge_heatmaps").result.outputs
    for folder in ("single", "update", "maps"):
        (tmp_path / folder).mkdir()
    single = HeatmapVolume(in_files=masks[:7], **cohort).run(cwd=str(tmp_path / "single"))
    for name in ("out_file", "coverage_file", "std_file", "mincount_file", "overlap_file"):
        got = np.asanyarray(nb.load(getattr(merge, name)).dataobj)
        want = np.asanyarray(nb.load(getattr(single.outputs, name)).dataobj)
        assert_array_equal(got, want, err_msg=name)
    assert open(merge.overlap_table).read() == open(single.outputs.overlap_table).read()

    # the biobank step as nodes: update one partial, write the maps from it
    part = sorted((tmp_path / "work").rglob("heatmap_state.nii.gz"))[0]
    before = part.read_bytes()
    updated = UpdateHeatmapState(
        in_file=str(part), add_files=masks[7:], remove_files=[masks[0]]
    ).run(cwd=str(tmp_path / "update"))
    assert part.read_bytes() == before  # the node's input is left as it was
    assert updated.outputs.input_files == [*masks[1:3], *masks[7:]]
    maps = MergeHeatmaps(in_files=[updated.outputs.out_file], std=True).run(
        cwd=str(tmp_path / "maps")
    )
    want = accumulate_files(updated.outputs.input_files, spread=True)
    assert_array_equal(
        np.asanyarray(nb.load(maps.outputs.std_file).dataobj),
        np.asanyarray(cohort_images(want, CohortOptions(std=True))[0]["std"].dataobj),
    )


def _run(argv, capsys):
    from nipype_heatmap.cli.heatmap import main

    status = main([*argv, "-q"])
    out, err = capsys.readouterr()
    return status, out, err


def test_command_saves_updates_and_writes_maps(make_nifti, tmp_path, capsys):
    release1 = [make_nifti(f"sub-{i:02d}.nii.gz", folder=tmp_path / "rel1") for i in range(5)]
    release2 = [make_nifti(f"sub-{i:02d}.nii.gz", folder=tmp_path / "rel2") for i in range(5, 8)]
    state = tmp_path / "state.nii.gz"
    status, out, err = _run(
        [str(tmp_path / "rel1"), "-o", str(tmp_path / "v1.nii.gz"), "--save-state", str(state)],
        capsys,
    )
    assert status == 0, err
    assert str(state) in out and load_state(state).n_inputs == 5
    flags = ["--coverage", "--std", "--min-count", "2"]
    status, out, err = _run(
        ["--update", str(state), str(tmp_path / "rel2"), "--remove", str(release1[0]),
         "-o", str(tmp_path / "v2.nii.gz"), *flags],
        capsys,
    )  # fmt: skip
    assert status == 0, err
    final = [str(f) for f in release1[1:] + release2]
    status, _, err = _run([*final, "-o", str(tmp_path / "ref.nii.gz"), *flags], capsys)
    assert status == 0, err
    for suffix in ("", "_coverage", "_std", "_variance", "_overlap", "_mincount2"):
        got = nb.load(tmp_path / f"v2{suffix}.nii.gz")
        want = nb.load(tmp_path / f"ref{suffix}.nii.gz")
        assert_array_equal(np.asanyarray(got.dataobj), np.asanyarray(want.dataobj), suffix)
        assert got.header["descrip"] == want.header["descrip"]
    assert (tmp_path / "v2_overlap.tsv").read_text() == (tmp_path / "ref_overlap.tsv").read_text()
    assert load_state(state).sources == final

    # a state in the folder of new inputs is never taken for an input
    moved = tmp_path / "rel2" / "state.nii.gz"
    moved.write_bytes(state.read_bytes())
    extra = make_nifti("sub-09.nii.gz", folder=tmp_path / "rel3")
    status, _, err = _run(["--update", str(moved), str(extra.parent)], capsys)
    assert status == 0, err
    assert load_state(moved).sources == [*final, str(extra)]


def test_command_refuses_bad_updates_naming_the_file(make_nifti, tmp_path, capsys):
    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(3)]
    state = tmp_path / "state.nii.gz"
    assert _run([*files[:2], "-o", str(tmp_path / "m.nii.gz"), "--save-state", str(state)],
                capsys)[0] == 0  # fmt: skip
    before = state.read_bytes()
    status, _, err = _run(["--update", str(state), "--remove", files[2]], capsys)
    assert status == 1 and "m2.nii.gz: not an input of the state" in err
    status, _, err = _run(["--update", str(state), files[0]], capsys)
    assert status == 1 and "m0.nii.gz: already an input" in err
    assert state.read_bytes() == before
    with pytest.raises(SystemExit) as usage:
        _run([files[0], "-o", str(tmp_path / "x.nii.gz"), "--remove", files[0]], capsys)
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as usage:
        _run(["--update", str(state)], capsys)
    assert usage.value.code == 2


def test_integer_states_are_stored_narrow_and_float_states_in_float64(masks, floats, tmp_path):
    small = _state(masks[:4], tmp_path / "m.nii.gz")
    assert nb.load(small).get_data_dtype() == np.uint8  # sums and counts of 4 masks
    wide = _state(floats[:2], tmp_path / "f.nii.gz")
    assert nb.load(wide).get_data_dtype() == np.float64
    # a narrow state loads and updates exactly (its sum continues in float64, exactly)
    acc = update_state(small, add=masks[4:6])
    _assert_same(_maps(acc), _maps(accumulate_files(masks[:6], overlap=True, spread=True)))


def test_a_state_of_more_than_255_masks_is_stored_as_uint16_and_stays_exact(make_nifti, tmp_path):
    files = [str(make_nifti(f"m{i:03d}.nii")) for i in range(257)]
    state = _state(files[:255], tmp_path / "s.nii.gz")
    assert nb.load(state).get_data_dtype() == np.uint8  # a sum of at most 255
    acc = update_state(state, add=files[255:])
    assert nb.load(state).get_data_dtype() == np.uint16  # 257 do not fit a byte
    assert acc.exact
    _assert_same(
        _maps(load_state(state)), _maps(accumulate_files(files, overlap=True, spread=True))
    )
    update_state(state, remove=files[:2])
    assert nb.load(state).get_data_dtype() == np.uint8  # back within a byte


def test_signed_integer_states_stay_exact_through_removals(make_nifti, rng, tmp_path):
    files = [
        str(make_nifti(f"s{i}.nii", rng.integers(-300, 300, SHAPE).astype(np.int16)))
        for i in range(5)
    ]
    files.append(str(make_nifti("big.nii", np.full(SHAPE, 30000, np.int16))))
    state = _state(files[:4], tmp_path / "s.nii.gz")
    assert nb.load(state).get_data_dtype() == np.int32  # the sums of squares need it
    acc = update_state(state, add=files[4:], remove=[files[1], files[2]])
    assert acc.exact  # still the exact integer sum
    want = accumulate_files([files[0], files[3], *files[4:]], overlap=True, spread=True)
    _assert_same(_maps(acc), _maps(want))


def test_merged_integer_partials_stay_integer(masks, tmp_path):
    from nipype_heatmap.state import merge_states

    parts = [_state(masks[i : i + 3], tmp_path / f"p{i}.nii.gz") for i in (0, 3, 6)]
    merged = merge_states(parts)
    assert merged.exact
    saved = save_state(merged, tmp_path / "merged.nii.gz")
    assert nb.load(saved).get_data_dtype() == np.uint8
    _assert_same(
        _maps(load_state(saved)), _maps(accumulate_files(masks, overlap=True, spread=True))
    )


# -- cases the mutation run of state.py showed untested ------------------------------------


def test_state_file_is_a_plain_nifti_with_its_grid_and_a_comment_extension(
    masks, make_nifti, tmp_path
):
    first = make_nifti("units.nii.gz", header_hook=lambda h: h.set_xyzt_units("mm", "sec"))
    acc = accumulate_files([str(first), *masks[:2]], digests=True)
    state = nb.load(save_state(acc, tmp_path / "s.nii.gz"))
    assert_array_equal(state.header.get_sform(), acc.affine)
    assert_array_equal(state.header.get_qform(), acc.affine)
    assert int(state.header["sform_code"]) == int(state.header["qform_code"]) == 2  # aligned
    assert state.header.get_xyzt_units() == ("mm", "sec")
    assert [ext.get_code() for ext in state.header.extensions] == [6]  # "comment"
    with pytest.raises(ValueError, match="nii"):
        save_state(acc, tmp_path / "state.txt")
    empty = HeatmapAccumulator(Reference.of(read_volume(masks[0])))
    with pytest.raises(ValueError, match="empty"):
        save_state(empty, tmp_path / "e.nii.gz")
    assert not (tmp_path / "e.nii.gz").exists()  # not a state that cannot be loaded


def test_corrupt_volume_lists_and_counts_are_refused(make_nifti, rng, tmp_path):
    from .test_state import _rewrite_metadata

    data = rng.random(SHAPE).astype(np.float32)
    data[0] = np.nan
    # b is 0 where a has a value: the sum stays within what a alone allows, so the count
    # (2 where both have a value) is what a state that lost b's record is refused for
    files = [str(make_nifti("a.nii", data)), str(make_nifti("b.nii", data * 0))]
    state = save_state(accumulate_files(files, digests=True), tmp_path / "s.nii.gz")
    for change, message in (
        (lambda m: {**m, "Volumes": ["count", "sum"]}, "volumes"),
        (lambda m: {**m, "Volumes": ["sum", "sum"]}, "volumes"),
        (
            lambda m: {**m, "NInputs": 1, "Sources": m["Sources"][:1]},
            r"a count from \S+ to 2\S*, outside \[0, 1\]",
        ),
    ):
        copy = tmp_path / "copy.nii.gz"
        copy.write_bytes(open(state, "rb").read())
        _rewrite_metadata(copy, change)  # a valid checksum: the fields are what is refused
        with pytest.raises(ValueError, match=re.escape(str(copy)) + ".*" + message):
            load_state(copy)


def test_a_count_below_n_everywhere_is_kept(make_nifti, tmp_path):
    files = [
        str(make_nifti("nan.nii", np.full(SHAPE, np.nan, np.float32))),
        str(make_nifti("one.nii", np.ones(SHAPE, np.float32))),
    ]
    state = save_state(accumulate_files(files, digests=True), tmp_path / "s.nii.gz")
    mean = load_state(state).aggregate(MapOptions(use_mean=True, clip_to_input_range=False))
    assert_array_equal(mean, 1.0)  # 1 / 1, not 1 / 2


def test_nifti2_inputs_keep_their_class_when_the_reference_goes(make_nifti, rng, tmp_path):
    files = [str(make_nifti(f"n{i}.nii", nifti2=True)) for i in range(3)]
    state = _state(files, tmp_path / "s.nii.gz")
    acc = update_state(state, remove=[files[0]])
    assert isinstance(acc.map_image(MapOptions()), nb.Nifti2Image)


def test_added_files_can_be_removed_by_a_later_update(masks, tmp_path):
    state = _state(masks[:3], tmp_path / "s.nii.gz")
    update_state(state, add=masks[3:5])
    acc = update_state(state, remove=[masks[4]])  # its hash was recorded when added
    assert acc.sources == masks[:4]


def test_update_messages_and_warnings(masks, tmp_path, caplog):
    state = _state(masks[:3], tmp_path / "s.nii.gz")
    with pytest.raises(
        ValueError,
        match=r"m2\.nii\.gz: already an input of the state .*\(input 3, " + re.escape(masks[2]),
    ):
        update_state(state, add=[masks[2]])
    with pytest.raises(ValueError, match=re.escape(str(state)) + ": the state would overwrite"):
        update_state(state, add=[masks[3], str(state)])
    with caplog.at_level("WARNING", logger="nipype_heatmap"):
        update_state(state, add=[masks[3], masks[3]])
    assert "m3.nii.gz" in caplog.text and "more than once" in caplog.text


def test_removing_the_reference_moves_every_statistic_to_the_next_files_voxel_order(
    make_nifti, rng, tmp_path
):
    # Non-binary integers and a float: the non-zero count, the sums of squares or M2 are
    # arrays of their own, and must follow the sum onto the flipped next file's grid.
    for last in ("int", "float"):
        data = [rng.integers(0, 9, SHAPE).astype(np.int16) for _ in range(3)]
        files = [str(make_nifti(f"{last}0.nii", data[0]))]
        files.append(str(make_nifti(f"{last}1.nii", data[1][::-1], affine=_flipped_affine())))
        third = data[2] if last == "int" else data[2].astype(np.float32) / 3
        files.append(str(make_nifti(f"{last}2.nii", third)))
        state = _state(files, tmp_path / f"{last}.nii.gz")
        acc = update_state(state, remove=[files[0]])
        want = accumulate_files(files[1:], overlap=True, spread=True)
        _assert_same(_maps(acc), _maps(want), exact=last == "int")


def test_an_update_leaves_no_worker_thread_behind(make_nifti, tmp_path):
    # Mutant: the updated accumulator's close() removed.
    files = [
        str(make_nifti(f"p{i}.nii", np.full(SHAPE, i / 3, np.float32), dtype=np.float32))
        for i in range(4)
    ]
    state = save_state(accumulate_files(files[:2], digests=True), tmp_path / "s.nii.gz")
    with no_worker_thread_left():
        acc = update_state(state, add=files[2:], remove=files[:1], num_threads=2)
    assert acc.n_inputs == 3


# -- the seams of saved states: concurrent updates ------------------------------------------
_COMMAND = "import sys; from nipype_heatmap.cli.heatmap import main; sys.exit(main(sys.argv[1:]))"


def _python(code, *argv, **popen):
    """Python code in a process of its own (this Python, this package)."""
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, argv)], text=True, env=env, **popen
    )


def _command(*argv):
    """``nipype-heatmap ARGV`` in a process of its own."""
    import subprocess

    return _python(_COMMAND, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _first_line(stream, timeout=60.0):
    """The first line a process writes to a pipe, waiting at most ``timeout`` seconds."""
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"nothing written in {timeout} s"
    return stream.readline()


def test_concurrent_updates_wait_for_each_other_and_lose_nothing(make_nifti, tmp_path):
    from nipype_heatmap.io import locked

    files = [str(make_nifti(f"m{i:02d}.nii.gz")) for i in range(10)]
    state = _state(files[:2], tmp_path / "state.nii.gz")
    before = open(state, "rb").read()
    batches = [files[2:6], files[6:10]]
    with locked(f"{state}.lock", what="the state, held by the test"):
        updaters = [_command("--update", state, *batch) for batch in batches]
        # each waits on <state>.lock (its first words), and has not touched the state
        for process in updaters:
            line = _first_line(process.stderr)
            assert line.startswith(f"INFO: Waiting for another run (pid {os.getpid()} "), line
            assert line.rstrip().endswith(f"to release the state {state}"), line
        assert [p.poll() for p in updaters] == [None, None]
        assert open(state, "rb").read() == before
    # released: both go through, one after the other, and each keeps the other's inputs
    for process in updaters:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    acc = load_state(state)
    assert acc.sources[:2] == files[:2]
    assert acc.sources[2:] in (batches[0] + batches[1], batches[1] + batches[0])
    _assert_same(_maps(acc), _maps(accumulate_files(acc.sources, overlap=True, spread=True)))

    # and racing each other from the start (-q: nothing logged), still nothing is lost
    more = [str(make_nifti(f"n{i:02d}.nii.gz")) for i in range(6)]
    racers = [_command("--update", state, *more[i::2], "-q") for i in range(2)]
    for process in racers:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    assert sorted(load_state(state).sources) == sorted(files + more)


def test_an_update_gives_up_naming_the_state_and_the_holder_of_its_lock(make_nifti, tmp_path):
    import subprocess

    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(3)]
    state = _state(files[:2], tmp_path / "state.nii.gz")
    before = open(state, "rb").read()
    hold = (
        "import sys\nfrom nipype_heatmap.io import locked\n"
        "with locked(sys.argv[1], what='the state'):\n"
        "    print('held', flush=True)\n    sys.stdin.read()\n"
    )
    holder = _python(hold, f"{state}.lock", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(LockTimeout) as timeout:
            update_state(state, add=files[2:], lock_timeout=0.3)
    finally:
        holder.communicate("", timeout=30)
    message = str(timeout.value)
    assert str(state) in message
    assert f"pid {holder.pid} on " in message  # the holder, as its lock file records it
    assert open(state, "rb").read() == before
    update_state(state, add=files[2:], lock_timeout=0.3)  # released: it goes through
    assert load_state(state).sources == files


# -- removals that cancel: the update recomputes from the remaining files --------------------
@pytest.fixture
def huge_among_small(make_nifti, rng):
    """Float maps of values ~1 with missing values; the second has 1e30 in a third of its
    voxels (an outlier that a subtraction cannot take back out of float64 sums)."""
    files = []
    for i in range(4):
        data = (rng.random(SHAPE) + 0.5).astype(np.float32)
        if i == 1:
            data[rng.random(SHAPE) < 0.3] = 1e30
        data[rng.random(SHAPE) < 0.1] = np.nan
        files.append(str(make_nifti(f"f{i}.nii.gz", data)))
    return files


def test_removing_a_huge_input_recomputes_from_the_remaining_files(
    huge_among_small, tmp_path, caplog
):
    files = huge_among_small
    state = _state(files, tmp_path / "state.nii.gz")
    with caplog.at_level("WARNING", logger="nipype_heatmap"):
        acc = update_state(state, remove=[files[1]])
    assert "recomputing the state from its 3 remaining input(s)" in caplog.text
    rest = [f for f in files if f != files[1]]
    assert acc.sources == rest
    stack = np.stack([nb.load(f).get_fdata() for f in rest])
    with np.errstate(invalid="ignore"):
        mean = acc.aggregate(MapOptions(clip_to_input_range=False))
        assert_allclose(mean, np.nanmean(stack, axis=0), rtol=1e-15, equal_nan=True)
        got = _maps(acc, ddof=0)
        assert_allclose(got["std"], np.nanstd(stack, axis=0), rtol=2e-7, equal_nan=True)
    # the saved state is the recompute's, bit for bit, and so are its maps
    want = _maps(accumulate_files(rest, overlap=True, spread=True), ddof=0)
    _assert_same(got, want)
    _assert_same(_maps(load_state(state), ddof=0), want)


def test_a_recompute_refuses_a_remaining_input_that_changed(
    huge_among_small, make_nifti, tmp_path
):
    files = huge_among_small
    state = _state(files, tmp_path / "state.nii.gz")
    before = open(state, "rb").read()
    changed = np.asarray(nb.load(files[2]).dataobj).copy()
    changed[0, 0, 0] = 7.0
    make_nifti("f2.nii.gz", changed)  # edited on disk after it was added
    with pytest.raises(
        ValueError,
        match=re.escape(files[2]) + ": the file has changed since it was added .*recompute",
    ):
        update_state(state, remove=[files[1]])
    assert open(state, "rb").read() == before


def test_removing_2_to_the_60_from_an_int64_state_leaves_exactly_1(make_nifti, tmp_path):
    big = str(make_nifti("big.nii", np.full(SHAPE, 2**60, np.int64)))
    one = str(make_nifti("one.nii", np.ones(SHAPE, np.int64)))
    state = _state([big, one], tmp_path / "state.nii.gz")
    assert not load_state(state).exact  # 2**60 + 1 is beyond float64's integers: 2**60
    acc = update_state(state, remove=[big])
    assert acc.exact
    assert_array_equal(acc.sum.values, 1)
    assert_array_equal(acc.aggregate(MapOptions(use_mean=False), np.float64), 1.0)
    _assert_same(_maps(acc), _maps(accumulate_files([one], overlap=True, spread=True)))


# -- the promise's edges: when an updated state is kept, when it is recomputed --------------
def test_a_float_state_is_kept_up_to_the_documented_rounding_bound(make_nifti, rng):
    # R <= 2 n u M keeps the state (equality included); a hair above, it is recomputed
    floats = [(rng.random(SHAPE) * 100).astype(np.float32) for _ in range(3)]
    acc = accumulate_files([str(make_nifti(f"f{i}.nii", x)) for i, x in enumerate(floats)])
    bound = 2 * acc.n_inputs * 2.0**-53 * acc.sum.magnitude
    assert 0 < acc.sum.rounding <= bound
    acc.sum.rounding = bound
    assert api.within_promise(acc)
    acc.sum.rounding = bound * (1 + 2**-40)
    assert not api.within_promise(acc)


def test_integer_sums_past_2_to_the_53_are_held_to_the_rounding_bound_only(make_nifti):
    # Sums beyond 2**53 cannot be exact, in a recompute either: such a float sum is kept
    # within the rounding bound (a bound at 2**54 would recompute it for nothing)...
    acc = accumulate_files([str(make_nifti("big.nii", np.full(SHAPE, 2**53 + 2, np.int64)))])
    assert not acc.exact and acc.sum.rounding > 0
    assert api.within_promise(acc)
    # ...while sums within 2**53 that are no longer exact integers are never kept
    acc = accumulate_files([str(make_nifti("one.nii", np.ones(SHAPE, np.int64)))])
    acc.sum._float()  # as after adding and removing a huge input
    assert not acc.exact and acc.sum.rounding == 0
    assert not api.within_promise(acc)


def test_an_integer_spread_in_welford_form_is_kept_only_where_exact_squares_overflow(
    make_nifti,
):
    # n * max(x**2) == 2**62 is the first product that does not fit the exact int64 form:
    # the spread went to Welford's form, as a recompute's would, and the state is kept
    one_big = str(make_nifti("b.nii", np.full(SHAPE, 2**31, np.int64)))
    acc = accumulate_files([one_big], spread=True)
    assert acc.exact and not acc.spread.exact
    assert api.within_promise(acc)
    # below it, a recompute keeps the exact form: a state in Welford's form is recomputed
    small = str(make_nifti("s.nii", np.full(SHAPE, 2**31 - 1, np.int64)))
    acc = accumulate_files([small], spread=True)
    assert acc.spread.exact
    acc.spread._fold(acc.count, acc.sum)  # as after adding and removing a huge input
    assert not api.within_promise(acc)


# -- representation changes: reference moves, exactness comes back ---------------------------
def _reordered(make_nifti, name, data, how):
    """The same image stored with its voxel axes flipped and/or permuted (x and y
    swapped), on the same world grid as ``data`` on the default affine."""
    affine = default_affine()
    if how in ("flip", "both"):
        data = data[::-1]
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
        affine = affine @ flip
    if how in ("permute", "both"):
        data = data.transpose(1, 0, 2)
        affine = affine[:, [1, 0, 2, 3]]
    return str(make_nifti(name, np.ascontiguousarray(data), affine=affine))


@pytest.mark.parametrize("how", ["flip", "permute", "both"])
@pytest.mark.parametrize("kind", ["masks", "integers", "floats"])
def test_removing_the_reference_before_a_reordered_file_equals_a_recompute(
    make_nifti, rng, tmp_path, how, kind
):
    def data(i):
        if kind == "masks":
            return (rng.random(SHAPE) > 0.6).astype(np.uint8)
        if kind == "integers":
            return rng.integers(0, 9, SHAPE).astype(np.int16)
        values = rng.random(SHAPE).astype(np.float32)
        values[rng.random(SHAPE) < 0.2] = np.nan
        return values

    files = [str(make_nifti("a0.nii.gz", data(0)))]
    files.append(_reordered(make_nifti, "a1.nii.gz", data(1), how))
    files += [str(make_nifti(f"a{i}.nii.gz", data(i))) for i in (2, 3)]
    state = _state(files, tmp_path / "state.nii.gz")
    acc = update_state(state, remove=[files[0]])
    assert acc.shape == nb.load(files[1]).shape  # the next file's voxel order
    want = _maps(accumulate_files(files[1:], overlap=True, spread=True))
    for got in (_maps(acc), _maps(load_state(state))):
        assert {k: np.shape(v) for k, v in got.items()} == {
            k: np.shape(v) for k, v in want.items()
        }
        _assert_same(got, want, exact=kind != "floats")


@pytest.mark.parametrize("scale", [1, 2**50])
def test_an_integer_state_is_exact_again_once_a_float_input_is_removed(
    make_nifti, rng, tmp_path, scale
):
    # scale 1: masks, the sum is rounded back to its integers; 2**50: the float sum is off
    # by up to 0.5 after the round trip, so the state must be recomputed to be exact again
    dtype = np.uint8 if scale == 1 else np.int64
    ints = [
        str(make_nifti(f"i{i}.nii", (rng.random(SHAPE) > 0.5).astype(dtype) * scale))
        for i in range(4)
    ]
    state = _state(ints, tmp_path / "state.nii.gz")
    stored = nb.load(state).get_data_dtype()
    floating = str(make_nifti("f.nii", (rng.random(SHAPE) + 0.25).astype(np.float32)))
    update_state(state, add=[floating])
    assert not load_state(state).exact
    acc = update_state(state, remove=[floating])
    assert acc.exact and acc.sources == ints
    assert nb.load(state).get_data_dtype() == stored  # stored as integers again
    recompute = accumulate_files(ints, overlap=True, spread=True)
    assert_array_equal(acc.sum.values, recompute.sum.values)
    _assert_same(_maps(acc), _maps(recompute))  # heatmap, std and variance bit for bit
    _assert_same(_maps(load_state(state)), _maps(recompute))


# -- identity: links are the file, copies are other inputs --------------------------------------
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_adding_a_link_to_an_input_is_refused_naming_both(masks, tmp_path, link):
    state = _state(masks[:3], tmp_path / "state.nii.gz")
    before = open(state, "rb").read()
    alias = tmp_path / "links" / "alias.nii.gz"
    alias.parent.mkdir()
    (os.symlink if link == "symlink" else os.link)(masks[1], alias)
    with pytest.raises(
        ValueError,
        match=re.escape(str(alias)) + ": already an input of the state .*" + re.escape(masks[1]),
    ):
        update_state(state, add=[masks[3], str(alias)])
    assert open(state, "rb").read() == before


def test_an_identical_copy_of_an_input_is_added_and_logged(masks, tmp_path, caplog):
    import shutil

    state = _state(masks[:3], tmp_path / "state.nii.gz")
    copy = tmp_path / "copies" / "m1_copy.nii.gz"
    copy.parent.mkdir()
    shutil.copyfile(masks[1], copy)  # same bytes, another inode
    with caplog.at_level("INFO", logger="nipype_heatmap"):
        acc = update_state(state, add=[str(copy)])
    assert acc.sources == [*masks[:3], str(copy)]
    assert f"{copy}: identical content to the input {masks[1]}" in caplog.text
    _assert_same(_maps(acc), _maps(accumulate_files(acc.sources, overlap=True, spread=True)))


def test_an_input_can_be_removed_through_a_link_to_it(masks, tmp_path):
    state = _state(masks[:4], tmp_path / "state.nii.gz")
    alias = tmp_path / "alias.nii.gz"
    os.symlink(masks[2], alias)
    acc = update_state(state, remove=[str(alias)])
    assert acc.sources == [masks[0], masks[1], masks[3]]
    want = accumulate_files(acc.sources, overlap=True, spread=True)
    _assert_same(_maps(acc), _maps(want))


def _new_inode(path):
    """Give a file a new inode with the same bytes (restored from a backup, re-synced)."""
    import shutil

    shutil.copyfile(path, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def test_a_link_to_an_input_restored_under_its_path_is_still_that_input(masks, tmp_path):
    # The state recorded each input's inode; the files were restored since (same paths,
    # same bytes, new inodes). A link to one is still that input: adding it is refused,
    # removing through it works.
    state = _state(masks[:4], tmp_path / "state.nii.gz")
    for path in masks[:4]:
        _new_inode(path)
    alias = tmp_path / "alias.nii.gz"
    os.symlink(masks[1], alias)
    with pytest.raises(
        ValueError,
        match=re.escape(str(alias)) + ": already an input of the state .*" + re.escape(masks[1]),
    ):
        update_state(state, add=[str(alias)])
    assert load_state(state).n_inputs == 4
    acc = update_state(state, remove=[str(alias)])
    assert acc.sources == [masks[0], masks[2], masks[3]]


def test_a_recorded_inode_now_of_another_file_does_not_remove_that_one(masks, tmp_path):
    # Inode numbers are reused: the inode recorded for m2 may now be m1's. Removing m1
    # through a link must remove m1, never m2 (whose unchanged bytes would pass the check).
    from .test_state import _rewrite_metadata

    state = _state(masks[:4], tmp_path / "state.nii.gz")
    reused = list(os.stat(masks[1])[1:3][::-1])  # [device, inode] of m1 now

    def reuse(meta):
        meta["Sources"][2]["Identity"] = reused
        return meta

    _rewrite_metadata(state, reuse)
    alias = tmp_path / "alias.nii.gz"
    os.symlink(masks[1], alias)
    acc = update_state(state, remove=[str(alias)])
    assert acc.sources == [masks[0], masks[2], masks[3]]


# -- transactions: the state and its maps change together or not at all ----------------------
_COHORT = CohortOptions(coverage=True, std=True, min_count=2)


def _snapshot(folder):
    """Every file under a folder (hidden ones too), with its bytes; not the state's lock
    file, which stays (see nipype_heatmap.io.locking)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def _saved_with_maps(masks, tmp_path):
    """A state of masks[:3] with its maps, in out/; return the state and the heatmap."""
    out = tmp_path / "out"
    api.make_maps(masks[:3], out / "map.nii.gz", cohort=_COHORT, state_file=out / "state.nii.gz")
    return out / "state.nii.gz", out / "map.nii.gz"


def _assert_maps_of(written, files):
    want = api.make_maps(files, written["heatmap"].replace("map", "ref"), cohort=_COHORT)[1]
    for role, path in written.items():
        if role in ("state", "table"):
            continue
        got, ref = nb.load(path), nb.load(want[role])
        assert_array_equal(np.asanyarray(got.dataobj), np.asanyarray(ref.dataobj), role)


@pytest.mark.parametrize("failing", ["coverage", "state"])
def test_a_failed_write_of_an_update_leaves_the_state_and_its_maps_as_they_were(
    masks, tmp_path, monkeypatch, failing
):
    import errno

    from nipype_heatmap.io import writing

    state, heatmap = _saved_with_maps(masks, tmp_path)
    before = _snapshot(tmp_path / "out")
    real_write = writing.Temporary.write

    def full_disk(self, chunks):
        if os.path.basename(self.out_file).startswith(
            ("map_coverage", "state")[failing == "state"]
        ):
            raise OSError(errno.ENOSPC, f"{self.out_file}: cannot write the output (full)")
        return real_write(self, chunks)

    with monkeypatch.context() as patch:
        patch.setattr(writing.Temporary, "write", full_disk)
        with pytest.raises(OSError, match="full"):
            api.update_state(
                state, add=masks[3:5], remove=[masks[0]], out_file=heatmap, cohort=_COHORT
            )
    assert _snapshot(tmp_path / "out") == before  # no file changed, no temporary left
    # the same command again, the disk no longer full: it goes through
    acc, written = api.update_state(
        state, add=masks[3:5], remove=[masks[0]], out_file=heatmap, cohort=_COHORT
    )
    assert acc.sources == [masks[1], masks[2], masks[3], masks[4]]
    assert load_state(state).sources == acc.sources
    _assert_maps_of(written, acc.sources)


def test_a_folder_in_the_way_of_a_map_leaves_the_state_and_its_maps_as_they_were(
    masks, tmp_path, monkeypatch
):
    state, _ = _saved_with_maps(masks, tmp_path)
    before = _snapshot(tmp_path / "out")
    heatmap = tmp_path / "out" / "v2.nii.gz"  # the updated maps, beside the old ones
    in_the_way = tmp_path / "out" / "v2_std.nii.gz"
    real_write_maps = api.states.write_maps

    def then_a_folder(acc, plan, options, cohort):
        real_write_maps(acc, plan, options, cohort)
        os.mkdir(in_the_way)  # after planning and writing: in the way of its rename

    with monkeypatch.context() as patch:
        patch.setattr(api.states, "write_maps", then_a_folder)
        with pytest.raises(OSError, match=re.escape(str(in_the_way))):
            api.update_state(state, add=masks[3:5], out_file=heatmap, cohort=_COHORT)
    os.rmdir(in_the_way)
    assert _snapshot(tmp_path / "out") == before  # no new map, no temporary, the old state
    acc, written = api.update_state(state, add=masks[3:5], out_file=heatmap, cohort=_COHORT)
    assert load_state(state).sources == masks[:5]
    _assert_maps_of(written, masks[:5])


def _interrupted_update(masks, tmp_path, monkeypatch):
    """A state of masks[:3] with its maps, then an update adding masks[3] stopped by Ctrl-C
    after its first rename; return the state, the heatmap and the renamed files."""
    state, heatmap = _saved_with_maps(masks, tmp_path)
    with monkeypatch.context() as patch:
        renamed = stop_after_the_first_rename(patch)
        with pytest.raises(KeyboardInterrupt):
            api.update_state(state, add=[masks[3]], out_file=heatmap, cohort=_COHORT)
    return state, heatmap, renamed


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
def test_the_next_run_completes_a_set_interrupted_between_its_renames(
    masks, tmp_path, monkeypatch, caplog, exception
):
    out, ref = tmp_path / "out", tmp_path / "ref"
    api.make_maps(masks[:3], out / "map.nii.gz", cohort=_COHORT, state_file=out / "s.nii.gz")
    older = _snapshot(out)
    api.make_maps(masks[:5], ref / "map.nii.gz", cohort=_COHORT, state_file=ref / "s.nii.gz")
    newer = _snapshot(ref)
    with monkeypatch.context() as patch:
        renamed = stop_after_the_first_rename(patch, exception)
        with pytest.raises(exception):
            api.make_maps(
                masks[:5], out / "map.nii.gz", cohort=_COHORT, state_file=out / "s.nii.gz"
            )
    assert len(renamed) == 1
    # the next run into that folder, whatever it writes, first completes that set
    with caplog.at_level("WARNING", logger="nipype_heatmap"):
        api.write_heatmap(masks[:2], out / "other.nii.gz")
    assert "Completed an earlier run's interrupted write of 7 file(s)" in caplog.text
    now = _snapshot(out)
    assert not [name for name in now if name.startswith(".")]  # no journal, no temporary
    assert {name: now[name] for name in newer} == newer  # the whole interrupted set
    assert set(now) == {*older, "other.nii.gz"}


def test_an_update_after_an_interrupted_one_starts_from_its_completed_state(
    masks, tmp_path, monkeypatch, caplog
):
    state, heatmap, renamed = _interrupted_update(masks, tmp_path, monkeypatch)
    assert renamed == [str(heatmap)]  # the new heatmap, beside the old state
    assert load_state(state).sources == masks[:3]
    # the next update of that state takes the interrupted one's set, state included, as
    # its start: nothing that run added is lost
    with caplog.at_level("WARNING", logger="nipype_heatmap"):
        acc, written = api.update_state(state, add=[masks[4]], out_file=heatmap, cohort=_COHORT)
    assert "Completed an earlier run's interrupted write" in caplog.text
    assert acc.sources == masks[:5]
    assert load_state(state).sources == masks[:5]
    _assert_maps_of(written, masks[:5])


def test_maps_merged_after_an_interrupted_update_are_those_of_its_completed_state(
    masks, tmp_path, monkeypatch
):
    state, heatmap, _ = _interrupted_update(masks, tmp_path, monkeypatch)
    # the maps of the state, written where the interrupted update wrote them
    acc, written = api.merge_and_write([state], heatmap, cohort=_COHORT)
    assert acc.sources == masks[:4] and load_state(state).sources == masks[:4]
    _assert_maps_of(written, masks[:4])


def test_an_update_into_another_folder_starts_from_the_completed_state(
    masks, tmp_path, monkeypatch
):
    # The interrupted set is beside the state; this update writes elsewhere (its outputs'
    # folders hold no journal): it must still complete that set before reading the state.
    state, heatmap, _ = _interrupted_update(masks, tmp_path, monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    acc, written = api.update_state(
        state,
        add=[masks[4]],
        out_state=elsewhere / "s.nii.gz",
        out_file=elsewhere / "map.nii.gz",
        cohort=_COHORT,
    )
    assert acc.sources == masks[:5]
    assert load_state(state).sources == masks[:4]  # the interrupted set, completed
    _assert_maps_of(written, masks[:5])


def test_merged_maps_never_overwrite_a_state_they_merge(masks, tmp_path):
    first = _state(masks[:2], tmp_path / "a.nii.gz")
    second = _state(masks[2:4], tmp_path / "b.nii.gz")
    before = open(first, "rb").read()
    with pytest.raises(ValueError, match=re.escape(str(first))):
        api.merge_and_write([first, second], first)
    assert open(first, "rb").read() == before


# -- collisions: no output of an update is a file it reads ------------------------------------
COLLISIONS = {
    # name: (update_state arguments from the state, the masks and their folder; the file
    # the message names; what it says of it)
    "out_state is an input to add": (
        lambda s, m, out: {"add": [m[4]], "out_state": m[4]},
        lambda s, m, out: m[4],
        "the state would overwrite the input there",
    ),
    "out_state is a link to an input to add": (
        lambda s, m, out: {"add": [m[4]], "out_state": out / "link_to_m4.nii.gz"},
        lambda s, m, out: out / "link_to_m4.nii.gz",
        "the state would overwrite the input there (the same file as",
    ),
    "out_state is an input to remove": (
        lambda s, m, out: {"remove": [m[1]], "out_state": m[1]},
        lambda s, m, out: m[1],
        "the state would overwrite the input to remove there",
    ),
    "out_file is the state": (
        lambda s, m, out: {"add": [m[4]], "out_file": s},
        lambda s, m, out: s,
        "both the state and the heatmap would be written to this file",
    ),
    "out_file is the state, the state written elsewhere": (
        lambda s, m, out: {"add": [m[4]], "out_file": s, "out_state": out / "new.nii.gz"},
        lambda s, m, out: s,
        "the heatmap would overwrite the state being updated there",
    ),
    "a cohort map is the state": (
        lambda s, m, out: {"add": [m[4]], "out_file": out / "maps.nii.gz", "cohort": _COHORT},
        lambda s, m, out: s,
        "both the state and the std would be written to this file",
    ),
    "out_file is an input to add": (
        lambda s, m, out: {"add": [m[4]], "out_file": m[4]},
        lambda s, m, out: m[4],
        "the heatmap would overwrite the input there",
    ),
    "out_file is an input to remove": (
        lambda s, m, out: {"remove": [m[1]], "out_file": m[1]},
        lambda s, m, out: m[1],
        "the heatmap would overwrite the input to remove there",
    ),
    "out_file is an input the state keeps": (
        lambda s, m, out: {"add": [m[4]], "out_file": m[2]},
        lambda s, m, out: m[2],
        "the heatmap would overwrite the input of the state there",
    ),
    "out_file is a link to an input the state keeps": (
        lambda s, m, out: {"remove": [m[3]], "out_file": out / "link_to_m2.nii.gz"},
        lambda s, m, out: out / "link_to_m2.nii.gz",
        "the heatmap would overwrite the input of the state there (the same file as",
    ),
    "out_file is an input the state keeps, deleted since": (
        lambda s, m, out: (os.unlink(m[2]), {"add": [m[4]], "out_file": m[2]})[1],
        lambda s, m, out: m[2],
        "the heatmap would overwrite the input of the state there",
    ),
    "out_state is an input the state keeps": (
        lambda s, m, out: {"remove": [m[3]], "out_state": m[0]},
        lambda s, m, out: m[0],
        "the state would overwrite the input of the state there",
    ),
}


@pytest.mark.parametrize("collision", list(COLLISIONS))
def test_an_update_whose_output_is_a_file_it_reads_is_refused_before_writing(
    masks, tmp_path, collision
):
    arguments, named, message = COLLISIONS[collision]
    out = tmp_path / "out"
    out.mkdir()
    state = _state(masks[:4], out / "maps_std.nii.gz")
    os.symlink(masks[4], out / "link_to_m4.nii.gz")
    os.symlink(masks[2], out / "link_to_m2.nii.gz")
    kwargs = arguments(state, masks, out)
    path = re.escape(str(named(state, masks, out)))

    def files():
        return {**_snapshot(out), **{m: open(m, "rb").read() for m in masks if os.path.exists(m)}}

    before = files()
    with pytest.raises(ValueError, match=path + ": " + re.escape(message)):
        api.update_state(state, **kwargs)
    assert files() == before


@pytest.mark.parametrize("option", ["--save-state", "-o"])
def test_the_command_refuses_to_save_over_an_input_of_its_folder(
    make_nifti, tmp_path, capsys, option
):
    masks = [make_nifti(f"sub-{i:02d}_mask.nii.gz", folder=tmp_path / "masks") for i in (1, 2)]
    target = masks[0]
    argv = [str(tmp_path / "masks"), "-o", str(tmp_path / "m.nii.gz")]
    argv += ["--save-state", str(tmp_path / "state.nii.gz")]
    argv[argv.index(option) + 1] = str(target)
    before = {p: p.read_bytes() for p in masks}
    status, out, err = _run(argv, capsys)
    assert status == 1 and out == ""
    role = "state" if option == "--save-state" else "heatmap"
    assert f"{target}: the {role} would overwrite the input there" in err
    assert {p: p.read_bytes() for p in masks} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "masks"]  # nothing written
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [p.name for p in masks]


def test_a_read_only_state_updates_into_another_file_without_a_lock_beside_it():
    # A state that is only read (a released cohort, another node's output) is not locked:
    # its folder may be read-only, and nothing replaces it. Run as an unprivileged user
    # (root ignores permissions).
    from .conftest import run_unprivileged

    out = run_unprivileged(
        """
        import os, numpy as np, nibabel as nb
        from nipype_heatmap import accumulate_files, load_state, save_state, update_state
        released = os.path.join(WORK, "released")
        os.mkdir(released)
        files = []
        for i in range(3):
            files.append(os.path.join(WORK, f"m{i}.nii"))
            nb.Nifti1Image(np.full((3, 4, 5), i, np.uint8), np.eye(4)).to_filename(files[-1])
        state = save_state(accumulate_files(files[:2], digests=True), f"{released}/s.nii.gz")
        os.chmod(released, 0o555)
        acc, written = update_state(state, add=files[2:], out_state=f"{WORK}/new.nii.gz")
        print(load_state(written["state"]).n_inputs, sorted(os.listdir(released)))
        """
    )
    assert out.split("\n")[0] == "3 ['s.nii.gz']"


def test_an_update_may_remove_every_input_it_had_while_it_adds_others(masks, tmp_path):
    # The additions go in first: the state is never empty on the way (mutant: removals
    # first, refused as "the only input left").
    state = _state(masks[:3], tmp_path / "state.nii.gz")
    acc, _ = api.update_state(state, add=masks[3:5], remove=masks[:3])
    assert acc.sources == masks[3:5]
    want = accumulate_files(masks[3:5], overlap=True, spread=True)
    _assert_same(_maps(acc), _maps(want))
    assert_array_equal(acc.affine, want.affine)  # the new first input is the reference


# -- found by the state machine (tests/test_state_machine.py) ----------------------------------
def test_merged_maps_refuse_to_overwrite_an_input_of_a_merged_state(masks, tmp_path):
    # The inputs of the merged states are inputs of the maps, though this run does not
    # read them: writing a map over one would lose it (its hash no longer matches).
    state = _state(masks[:3], tmp_path / "state.nii.gz")
    before = open(masks[1], "rb").read()
    with pytest.raises(
        ValueError,
        match=re.escape(masks[1]) + ": the heatmap would overwrite the input of a merged state",
    ):
        api.merge_and_write([state], masks[1])
    assert open(masks[1], "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["inputs", "state.nii.gz"]


def test_a_state_updated_without_maps_ignores_cohort_options_it_cannot_make(masks, tmp_path):
    # No out_file, no map: the state saved without cohort statistics is updated all the same.
    state = save_state(accumulate_files(masks[:2], digests=True), tmp_path / "state.nii.gz")
    acc, written = api.update_state(
        state, add=masks[2:3], cohort=CohortOptions(min_count=1, std=True)
    )
    assert written == {"state": state}
    assert load_state(state).sources == masks[:3]
    # With maps the options matter, and are refused before anything is written.
    with pytest.raises(ValueError, match="not tracked"):
        api.update_state(
            state, add=masks[3:4], out_file=tmp_path / "m.nii.gz", cohort=CohortOptions(std=True)
        )
    assert load_state(state).sources == masks[:3]


def test_removing_a_path_takes_out_the_input_recorded_under_it_not_its_link(masks, tmp_path):
    link = tmp_path / "inputs" / "m0_link.nii.gz"
    os.link(masks[0], link)
    state = _state([masks[0], str(link), masks[1]], tmp_path / "state.nii.gz")
    assert update_state(state, remove=[masks[0]]).sources == [str(link), masks[1]]
    state = _state([masks[0], str(link), masks[1]], tmp_path / "state2.nii.gz")
    assert update_state(state, remove=[str(link)]).sources == [masks[0], masks[1]]


def test_an_int64_input_past_2_to_the_53_keeps_its_exact_range_in_the_state(make_nifti, tmp_path):
    # float(2**53 + 1) == 2**53: a float range said the sum was within 2**53 and exact, the
    # state stored it as float64 (2**53), and removing the input left -1.
    data = np.zeros(SHAPE, np.int64)
    data[1, 2, 3] = 2**53 + 1
    big = str(make_nifti("big.nii", data))
    other = str(make_nifti("other.nii", np.zeros(SHAPE, np.uint8)))
    acc = accumulate_files([big, other], digests=True)
    assert acc.records[0].value_range == (0, 2**53 + 1)
    assert not acc.exact
    state = save_state(acc, tmp_path / "state.nii.gz")
    assert load_state(state).records[0].value_range == (0, 2**53 + 1)
    after = update_state(state, remove=[big])
    assert after.exact
    assert_array_equal(after.sum.values, 0)
