"""The reference grid: same-grid tolerance, lossless re-ordering, errors naming the file."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from nipype_heatmap import io
from nipype_heatmap.api import compute_heatmap

from .conftest import SHAPE, default_affine


# -- grid validation ---------------------------------------------------------------------
def test_shape_mismatch_names_offending_file(make_nifti):
    ref = make_nifti("a.nii.gz")
    bad = make_nifti("b.nii.gz", np.zeros((7, 8, 10), np.uint8))
    with pytest.raises(ValueError, match=re.escape(str(bad))) as err:
        compute_heatmap([ref, bad])
    assert "(7, 8, 10)" in str(err.value) and "(7, 8, 9)" in str(err.value)
    assert str(ref) in str(err.value)


def test_affine_mismatch_names_offending_file(make_nifti):
    ref = make_nifti("a.nii.gz")
    shifted = default_affine()
    shifted[0, 3] += 1.0  # half a voxel
    bad = make_nifti("b.nii.gz", affine=shifted)
    with pytest.raises(ValueError, match=re.escape(str(bad))) as err:
        compute_heatmap([ref, bad])
    assert str(ref) in str(err.value) and "resample" in str(err.value)


def test_whole_voxel_shift_is_an_error_not_a_reordering(make_nifti):
    ref = make_nifti("a.nii.gz")
    shifted = default_affine()
    shifted[0, 3] += 2.0
    bad = make_nifti("b.nii.gz", affine=shifted)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        compute_heatmap([ref, bad])


def test_affine_within_tolerance_is_accepted(make_nifti):
    ref = make_nifti("a.nii.gz")
    nearly = default_affine()
    nearly[:3, 3] += 2e-5
    other = make_nifti("b.nii.gz", affine=nearly)
    assert compute_heatmap([ref, other]).shape == SHAPE


def test_flipped_and_permuted_inputs_are_reordered_losslessly(make_nifti, rng, caplog):
    data = rng.random(SHAPE).astype(np.float32)
    ref = make_nifti("a.nii.gz", data)
    affine = default_affine()
    # Input voxel (i, j, k) of the reordered file holds reference voxel (k, n1-1-j, i):
    # axes permuted (2, 1, 0) and the middle one flipped, on exactly the same world grid.
    swapped = np.flip(np.transpose(data, (2, 1, 0)), axis=1)
    vox = np.zeros((4, 4))
    vox[0, 2] = vox[2, 0] = 1
    vox[1, 1] = -1
    vox[1, 3] = SHAPE[1] - 1
    vox[3, 3] = 1
    other = make_nifti("b.nii.gz", swapped.copy(), affine=affine @ vox)
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        out = np.asanyarray(compute_heatmap([ref, other], True, False).dataobj)
    assert_array_equal(out, data)  # mean of data with itself
    assert "re-ordered" in caplog.text and str(other) in caplog.text


def test_4d_with_several_volumes_is_rejected(make_nifti):
    ref = make_nifti("a.nii.gz")
    bad = make_nifti("b.nii.gz", np.zeros(SHAPE + (2,), np.uint8))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*3D"):
        compute_heatmap([ref, bad])


def test_2d_image_is_rejected(make_nifti):
    bad = make_nifti("a.nii.gz", np.zeros((7, 8), np.uint8))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*3D"):
        compute_heatmap([bad])


def test_complex_data_is_rejected(make_nifti):
    bad = make_nifti("a.nii", np.zeros(SHAPE, np.complex64), dtype=np.complex64)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*real number"):
        compute_heatmap([bad])


@pytest.mark.parametrize(("offset_mm", "accepted"), [(5e-5, True), (2e-4, False)])
def test_grid_tolerance_is_1e_4_mm(make_nifti, offset_mm, accepted):
    ref = make_nifti("a.nii.gz")
    moved = default_affine()
    moved[0, 3] += offset_mm
    other = make_nifti("b.nii.gz", affine=moved)
    if accepted:
        assert compute_heatmap([ref, other]).shape == SHAPE
    else:
        with pytest.raises(ValueError, match=re.escape(str(other)) + ".*tolerance 0.0001 mm"):
            compute_heatmap([ref, other])


def _orientations():
    """All 48 axis permutations and flips of the reference grid, as (data, affine) makers."""
    import itertools

    for perm in itertools.permutations(range(3)):
        for flips in itertools.product([False, True], repeat=3):
            yield perm, flips


@pytest.mark.parametrize(("perm", "flips"), list(_orientations()))
def test_every_lossless_reordering_is_recognised(rng, perm, flips):
    """Each of the 48 voxel orders of one world grid is mapped back exactly."""
    data = rng.random(SHAPE)
    affine = default_affine()
    grid = io.Grid(SHAPE, affine, "ref.nii.gz")
    # Build the other file: voxel (i, j, k) of it is reference voxel vox @ (i, j, k).
    stored = np.transpose(data, perm)
    vox = np.zeros((4, 4))
    vox[3, 3] = 1
    for new_axis, old_axis in enumerate(perm):
        vox[old_axis, new_axis] = 1
    for axis, flip in enumerate(flips):
        if flip:
            stored = np.flip(stored, axis=axis)
            column = vox[:, axis].copy()
            vox[:, 3] += column * (stored.shape[axis] - 1)
            vox[:, axis] = -column
    back = grid.conform(stored, affine @ vox, "other.nii.gz")
    assert_array_equal(back, data)
    assert np.shares_memory(back, stored), "re-ordering must be a view, not a copy"


def test_grid_is_immutable():
    grid = io.Grid(SHAPE, default_affine(), "ref.nii.gz")
    with pytest.raises(ValueError):
        grid.affine[0, 0] = 5.0
    with pytest.raises(AttributeError):
        grid.shape = (1, 2, 3)


@pytest.mark.parametrize("moved", ["far_corner", "origin"])
@pytest.mark.parametrize(("distance_mm", "accepted"), [(0.9e-4, True), (1.05e-4, False)])
def test_tolerance_is_measured_at_both_corners(make_nifti, moved, distance_mm, accepted):
    """A voxel-size difference moves the far corner, not the origin; an origin moved with
    the far corner kept in place moves only voxel 0. Either distance counts."""
    ref = make_nifti("a.nii.gz")
    affine = default_affine()
    if moved == "far_corner":
        affine[0, 0] += distance_mm / (SHAPE[0] - 1)  # grows along x, origin fixed
    else:
        affine[0, 3] += distance_mm
        affine[0, 0] -= distance_mm / (SHAPE[0] - 1)  # the far corner along x stays
    other = make_nifti("b.nii.gz", affine=affine)
    if accepted:
        assert compute_heatmap([ref, other]).shape == SHAPE
    else:
        with pytest.raises(ValueError, match=re.escape(str(other))):
            compute_heatmap([ref, other])


def test_a_grid_made_from_a_list_or_numpy_integers_is_the_same_grid():
    # Shapes come as JSON lists (saved states) or numpy integers (headers): the grid holds
    # a tuple of Python ints, so it matches, compares and prints as one (mutant: the
    # shape kept as given).
    for shape in (list(SHAPE), tuple(np.int64(n) for n in SHAPE), np.array(SHAPE)):
        grid = io.Grid(shape, default_affine(), "ref.nii.gz")
        assert grid.shape == SHAPE and type(grid.shape) is tuple
        assert all(type(n) is int for n in grid.shape)
        assert grid.matches(SHAPE, default_affine())


# -- the header-only check (before any voxel is read) agrees with conform ----------------
def _reordered_affine(perm, flips):
    vox = np.zeros((4, 4))
    vox[3, 3] = 1
    shape = [SHAPE[axis] for axis in perm]
    for new_axis, old_axis in enumerate(perm):
        vox[old_axis, new_axis] = 1
    for axis, flip in enumerate(flips):
        if flip:
            column = vox[:, axis].copy()
            vox[:, 3] += column * (shape[axis] - 1)
            vox[:, axis] = -column
    return default_affine() @ vox, tuple(shape)


@pytest.mark.parametrize(("perm", "flips"), list(_orientations()))
def test_the_header_check_accepts_every_lossless_reordering(make_nifti, perm, flips):
    ref = make_nifti("a.nii.gz")
    affine, shape = _reordered_affine(perm, flips)
    other = make_nifti("b.nii", np.zeros(shape, np.uint8), affine=affine)
    grid = io.Grid(SHAPE, default_affine(), str(ref))
    io.check_volume_header(str(other), io.read_header(other), grid)  # no error


@pytest.mark.parametrize("change", ["shape", "shift", "voxel_size", "4d", "complex"])
def test_the_header_check_refuses_what_conform_refuses_naming_both_files(make_nifti, change):
    ref = make_nifti("a.nii.gz")
    affine = default_affine()
    data = np.zeros(SHAPE, np.uint8)
    if change == "shape":
        data = np.zeros((7, 8, 10), np.uint8)
    elif change == "shift":
        affine[1, 3] += 1.0
    elif change == "voxel_size":
        affine[2, 2] = 2.5
    elif change == "4d":
        data = np.zeros(SHAPE + (2,), np.uint8)
    else:
        data = np.zeros(SHAPE, np.complex64)
    other = make_nifti("b.nii", data, affine=affine)
    grid = io.Grid(SHAPE, default_affine(), str(ref))
    expected = {"shape": "(7, 8, 10)", "4d": "3D", "complex": "real number"}.get(change, "grid")
    with pytest.raises(ValueError, match=re.escape(str(other)) + ".*" + re.escape(expected)):
        io.check_volume_header(str(other), io.read_header(other), grid)
    if change in ("shape", "shift", "voxel_size"):  # named with the reference's file
        with pytest.raises(ValueError, match=re.escape(str(ref))):
            io.check_volume_header(str(other), io.read_header(other), grid)


def test_a_singular_affine_has_no_reordering():
    grid = io.Grid(SHAPE, default_affine(), "ref.nii.gz")
    singular = default_affine()
    singular[0, 0] = 0.0
    assert grid.reordering(SHAPE, singular) is None
    assert not grid.matches(SHAPE, singular)
