"""A Hypothesis state machine over saved states: after every step, every map equals numpy.

The machine keeps a pool of small volumes on one world grid, written as files in a fresh
folder (every stored type the package reads: binary masks, counts, signed integers, scaled
int16/uint8/float32, int64 near and beyond 2**53, float32 with NaN/Inf/1e30, float64;
flipped or permuted voxel axes; NIfTI-2, uncompressed, big-endian, 4D with one volume;
equal copies, hard links and symlinks). Its rules make
states (``api.make_maps(state_file=)`` or ``api.accumulate_files`` + ``state.save_state``),
add and remove inputs (``api.update_state``), merge states (``api.merge_and_write``,
``state.merge_states``), write maps, and try outputs that collide with inputs or with each
other. Output names are drawn from the same names as the inputs, so collisions are drawn
too.

The model of a state is the list of its inputs, each a snapshot of the file as nibabel read
it when it was added. After every step, every live state is loaded and compared with a
from-scratch numpy recompute of its list (``get_fdata``, re-ordered onto the first input's
voxel order with ``nibabel.orientations``): bit for bit where the package promises it
(every input an unscaled integer volume with sums within 2**53), else within the documented
bound. Every call that fails must leave every file in the folder as it was (bytes and
inode); every call that succeeds must change nothing but the outputs it reports.

The bugs it found (maps written over a state's kept input, a removal that took out a hard
link recorded under another name, cohort options checked when no map is written, int64
inputs past 2**53 whose float range passed for exact) are fixed, each with its own
regression test in ``test_update.py``.

Run it with ``pytest -s`` to see what a run exercised and the largest deviation it saw as a
fraction of each tolerance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field

import nibabel as nb
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from nibabel import orientations

from nipype_heatmap import api
from nipype_heatmap import state as state_io
from nipype_heatmap.io import Grid
from nipype_heatmap.maps import cohort_images
from nipype_heatmap.options import CohortOptions, MapOptions

SHAPE = (5, 6, 7)
U = 2.0**-53  # float64 unit round-off
EXACT_LIMIT = 2**53

#: What a run exercised (pool kinds, rules and their outcomes), printed at its end.
SEEN: Counter[str] = Counter()

#: Largest deviation seen, as a fraction of the tolerance allowed (<= 1 passes).
DEVIATIONS: dict[str, float] = {}

#: M2's deviation from numpy's two-pass M2, in units of n**2 u M**2 (see _variance_tol).
VAR_C = 32.0


def _note(name: str, ratio: float) -> None:
    if math.isfinite(ratio):
        DEVIATIONS[name] = max(DEVIATIONS.get(name, 0.0), ratio)


# -- the pool -------------------------------------------------------------------------------
def base_affine() -> np.ndarray:
    """An anisotropic grid with an origin, so that every axis is told apart."""
    affine = np.diag([2.0, 3.0, 2.5, 1.0])
    affine[:3, 3] = [-4.0, -7.5, -7.5]
    return affine


#: Voxel orders of the same world grid: ``apply_orientation`` transforms from the base order.
ORIENTS = {
    "same": [[0, 1], [1, 1], [2, 1]],
    "flip_x": [[0, -1], [1, 1], [2, 1]],
    "flip_z": [[0, 1], [1, 1], [2, -1]],
    "swap_xy": [[1, 1], [0, 1], [2, 1]],
    "rotate_flip": [[1, -1], [2, 1], [0, 1]],
    "reverse": [[2, -1], [1, -1], [0, -1]],
}

KINDS = (
    "mask_sparse",  # uint8 0/1, few voxels: the sparse path
    "mask_dense",
    "uint8",  # counts, not binary
    "int16",  # signed
    "int16_scaled",  # scl_slope/scl_inter: float64 values
    "uint8_prob",  # a probability map stored as uint8 with slope 1/255
    "float32_scaled",  # floats with a slope and an intercept
    "int64_near",  # values near 2**53, each within it
    "int64_beyond",  # 2**53 + 1, 2**60 and 1
    "int64_edge",  # 2**53 + 1 (not a float64) without larger values
    "float32_wild",  # NaN, +/-Inf, +/-1e30 among ordinary values
    "float32_prob",
    "float64",
    "float32_nan",  # no finite value at all
)
#: gzip, plain, NIfTI-2, big-endian, and 4D with one volume (which counts as 3D)

STORAGES = ("nii.gz", "nii", "nifti2", "big_endian", "4d_single")

NEAR = [2**53 - 1, 2**53 - 2, 2**52 + 1, -(2**53 - 1), 1, 5]
BEYOND = [2**53 + 1, 2**53 + 3, 2**60, -(2**60), 1, 3]
EDGE = [2**53 + 1, -(2**53 + 1), 1, 5]


def volume_data(kind: str, rng: np.random.Generator):
    """Stored values in the base voxel order, and the scaling (or None)."""
    size = int(np.prod(SHAPE))
    if kind == "mask_sparse":
        flat = np.zeros(size, np.uint8)
        flat[rng.choice(size, 9, replace=False)] = 1
        return flat.reshape(SHAPE), None
    if kind == "mask_dense":
        return (rng.random(SHAPE) < 0.5).astype(np.uint8), None
    if kind == "uint8":
        return rng.integers(0, 256, SHAPE).astype(np.uint8), None
    if kind == "int16":
        return rng.integers(-300, 301, SHAPE).astype(np.int16), None
    if kind == "int16_scaled":
        raw = rng.integers(-1000, 1001, SHAPE).astype(np.int16)
        scaling = [(0.5, -3.0), (0.1, 0.0), (3.0, 7.25)][int(rng.integers(3))]
        return raw, scaling
    if kind == "uint8_prob":
        return rng.integers(0, 256, SHAPE).astype(np.uint8), (1 / 255, 0.0)
    if kind == "float32_scaled":
        flat = rng.normal(0, 3, size).astype(np.float32)
        flat[rng.choice(size, 4, replace=False)] = np.nan
        return flat.reshape(SHAPE), (2.5, -1.0)
    if kind in ("int64_near", "int64_beyond", "int64_edge"):
        flat = np.zeros(size, np.int64)
        where = rng.choice(size, 12, replace=False)
        values = {"int64_near": NEAR, "int64_beyond": BEYOND, "int64_edge": EDGE}[kind]
        flat[where] = rng.choice(values, 12)
        return flat.reshape(SHAPE), None
    if kind == "float32_wild":
        flat = rng.normal(0, 10, size).astype(np.float32)
        where = rng.choice(size, 24, replace=False)
        flat[where[:15]] = np.nan
        flat[where[15:18]] = np.inf
        flat[where[18:21]] = -np.inf
        flat[where[21:23]] = 1e30
        flat[where[23]] = -1e30
        return flat.reshape(SHAPE), None
    if kind == "float32_prob":
        return rng.random(SHAPE).astype(np.float32), None
    if kind == "float64":
        flat = rng.normal(0, 1e3, size)
        flat[rng.choice(size, 5, replace=False)] = np.nan
        return flat.reshape(SHAPE), None
    if kind == "float32_nan":
        return np.full(SHAPE, np.nan, np.float32), None
    raise AssertionError(kind)


def write_volume(path: str, stored: np.ndarray, scaling, orient: str, storage: str) -> None:
    """Write a volume in a voxel order of the base grid; check Grid re-orders it back."""
    ornt = np.array(ORIENTS[orient])
    data = orientations.apply_orientation(stored, ornt)
    affine = base_affine() @ orientations.inv_ornt_aff(ornt, SHAPE)
    back = Grid(SHAPE, base_affine(), "base").conform(data, affine, path)
    assert np.array_equal(back, stored, equal_nan=stored.dtype.kind == "f"), orient
    klass = nb.Nifti2Image if storage == "nifti2" else nb.Nifti1Image
    header = klass.header_class(endianness=">" if storage == "big_endian" else "<")
    if storage == "4d_single":
        data = data[..., np.newaxis]
    img = klass(np.ascontiguousarray(data), affine, header=header, dtype=data.dtype)
    img.header.set_data_dtype(data.dtype)
    if scaling is not None:
        img.header.set_slope_inter(*scaling)
    img.to_filename(path)


# -- what numpy sees of a file ----------------------------------------------------------------
def sha256(path: str) -> str:
    with open(path, "rb") as fobj:
        return hashlib.sha256(fobj.read()).hexdigest()


def identity(path: str):
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def same_file(a: str, b: str) -> bool:
    """One file on disk: the same path after links, or the same inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    ida = identity(a)
    return ida is not None and ida == identity(b)


@dataclass(frozen=True, eq=False)
class Snap:
    """A file as nibabel read it when it became an input."""

    path: str
    volume: bool  # one 3D volume
    data: np.ndarray | None  # get_fdata, float64, the file's voxel order
    ints: np.ndarray | None  # the stored integers of an unscaled integer volume
    affine: np.ndarray
    klass: type
    sha: str
    identity: tuple[int, int]
    header: nb.nifti1.Nifti1Header

    @property
    def integer(self) -> bool:
        return self.ints is not None

    def changed(self) -> bool:
        return not os.path.exists(self.path) or sha256(self.path) != self.sha


def snap(path: str) -> Snap:
    img = nb.load(path, mmap=False)
    shape = img.shape
    volume = len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)
    data = ints = None
    if volume:
        data = np.asarray(img.get_fdata(dtype=np.float64)).reshape(shape[:3])
        proxy = img.dataobj
        unscaled = float(proxy.slope) == 1.0 and float(proxy.inter) == 0.0
        if img.get_data_dtype().kind in "iu" and unscaled:
            ints = np.asarray(proxy.get_unscaled()).reshape(shape[:3]).astype(np.int64)
    return Snap(
        path,
        volume,
        data,
        ints,
        img.affine.copy(),
        type(img),
        sha256(path),
        identity(path),
        img.header.copy(),
    )


def on_grid(array: np.ndarray, affine: np.ndarray, ref: Snap) -> np.ndarray:
    """An array re-ordered onto the reference's voxel order (nibabel.orientations)."""
    ornt = orientations.ornt_transform(
        orientations.io_orientation(affine), orientations.io_orientation(ref.affine)
    )
    moved = orientations.apply_orientation(array, ornt)
    aff = affine @ orientations.inv_ornt_aff(ornt, array.shape)
    assert moved.shape == ref.data.shape and np.allclose(aff, ref.affine, atol=1e-5)
    return moved


# -- ground truth -----------------------------------------------------------------------------
class Truth:
    """A from-scratch numpy recompute of a list of inputs."""

    def __init__(self, snaps: list[Snap]) -> None:
        ref = snaps[0]
        self.ref = ref
        self.n = len(snaps)
        xs = [on_grid(s.data, s.affine, ref) for s in snaps]
        self.xs = xs
        finite = [np.isfinite(x) for x in xs]
        self.count = np.sum(finite, axis=0).astype(np.int64) if xs else None
        total = np.zeros(ref.data.shape)
        for x, f in zip(xs, finite, strict=True):
            total += np.where(f, x, 0.0)  # in input order, as a plain loop
        self.S = total
        self.nonzero = np.sum([f & (x != 0) for x, f in zip(xs, finite, strict=True)], axis=0)
        lows, highs, mags = [], [], []
        for x, f in zip(xs, finite, strict=True):
            if f.any():
                lows.append(float(x[f].min()))
                highs.append(float(x[f].max()))
                mags.append(max(abs(lows[-1]), abs(highs[-1])))
        self.range = (min(lows), max(highs)) if lows else None
        self.M = math.fsum(mags)
        self.B = 3 * self.n * U * self.M  # documented bound on |S_state - S_numpy|
        self.integer = all(s.integer for s in snaps)
        self.exact = self.exact_spread = False
        if self.integer:
            ints = [on_grid(s.ints, s.affine, ref).astype(object) for s in snaps]
            low = sum(min(int(a.min()), 0) for a in ints)
            high = sum(max(int(a.max()), 0) for a in ints)
            self.exact = max(-low, high) <= EXACT_LIMIT
            self.S_exact = sum(ints[1:], ints[0].copy())
            self.S2_exact = sum((a * a for a in ints[1:]), ints[0] * ints[0])
            bound = sum(max(int(a.min()) ** 2, int(a.max()) ** 2) for a in ints)
            self.exact_spread = self.n * bound < 2**62

    # the sum and the maps -----------------------------------------------------------------
    def total(self) -> tuple[np.ndarray, np.ndarray]:
        """S in float64 and its tolerance per voxel (0: bit for bit)."""
        if self.exact:
            return self.S_exact.astype(np.float64), np.zeros(self.S.shape)
        return self.S, np.full(self.S.shape, self.B)

    def heatmap(self, options: MapOptions):
        """The map in float64, and its tolerance (0: bit for bit; None: NaN pattern only)."""
        total, tol = self.total()
        exact = self.exact  # then S / n is one correctly rounded division, as numpy's
        with np.errstate(invalid="ignore", divide="ignore"):
            if options.use_mean:
                value = total / self.count
                tol = tol / self.count + 2 * U * np.abs(value)
            else:
                value = total.copy()
        if options.clip_to_input_range and self.range is not None:
            value = np.clip(value, *self.range)
        if options.normalize:
            finite = np.isfinite(value)
            if finite.any():
                lo, hi = float(value[finite].min()), float(value[finite].max())
                delta = float(np.nanmax(np.where(finite, tol, 0.0)))
                spread = hi - lo
                if exact:
                    if spread > 0:
                        value = (value - lo) / spread
                elif spread > 4 * delta:
                    # each of v, lo, hi is off by at most delta: the quotient by 4 delta / D'
                    value = (value - lo) / spread
                    tol = np.full(value.shape, 4 * delta / (spread - 2 * delta) + 8 * U)
                else:
                    return value, None
        return value, (0.0 if exact else tol)

    def variance(self, ddof: int):
        """The variance (float64, NaN where n - ddof <= 0) and its tolerance per voxel."""
        count = self.count
        denominator = count - ddof
        if self.integer and self.exact_spread:
            n = self.n
            num = n * self.S2_exact - self.S_exact * self.S_exact
            var = np.full(self.S.shape, np.nan)
            if n - ddof > 0:
                for index in np.ndindex(var.shape):
                    var[index] = int(num[index]) / (n * (n - ddof))  # correctly rounded
            return var, np.zeros(var.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(denominator > 0, self.m2() / denominator, np.nan)
            tol = _variance_tol(self) / denominator
        return var, tol

    def m2(self) -> np.ndarray:
        """The sum of squared deviations from the mean, two-pass in float64 (0 where no
        value)."""
        if not hasattr(self, "_m2"):
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(self.count > 0, self.S / self.count, 0.0)
            m2 = np.zeros(self.S.shape)
            for x in self.xs:
                d = np.where(np.isfinite(x), x - mean, 0.0)
                m2 += d * d
            self._m2 = m2
        return self._m2


def _variance_tol(truth: Truth) -> float:
    """Bound on |M2_state - M2_numpy|, where M2 = sum of squared deviations from the mean.

    Every Welford step (an add, a removal, a merge) changes M2 by a product of two
    deviations, each at most ``m = magnitude before + magnitude of the step`` (the sum of
    the inputs' largest absolute values: no mean exceeds it), with a few roundings each:
    an error of at most ``c u m**2``, plus the sum's own error (the rounding bound R) times
    two deviations. The accumulator adds ``u m`` to R at every step, and an update keeps a
    state only while ``R <= 2 n u M`` (``within_promise``; else it recomputes): so every
    ``m <= R / u <= 2 n M`` and the steps' ``sum(u m) <= 2 n u M``; the total error is at
    most ``c * sum(u m) * max(m) <= 4 c n**2 u M**2``. numpy's two-pass M2 is within
    ``(n + 2) u sum(x - mean)**2 <= (n + 2) u n M**2`` of the exact one. Hence
    ``VAR_C n**2 u M**2`` with a small constant (VAR_C = 32, i.e. c = 4 with room for
    numpy's share); DEVIATIONS["variance"] reports how much of it a run used.
    """
    return VAR_C * truth.n**2 * U * truth.M**2


def map_names(out_file: str, cohort: CohortOptions, n_inputs: int) -> dict[str, str]:
    """The documented names of a run's maps (make_maps' docstring)."""
    folder, name = os.path.split(out_file)
    ending = ".nii.gz" if name.endswith(".nii.gz") else ".nii"
    stem = name[: -len(ending)]
    names = {"heatmap": out_file}
    for kind in cohort.maps():
        if kind != "mincount":
            names[kind] = os.path.join(folder, f"{stem}_{kind}{ending}")
    if cohort.overlap:
        names["table"] = os.path.join(folder, f"{stem}_overlap.tsv")
        k = cohort.min_count_for(n_inputs)
        names["mincount"] = os.path.join(folder, f"{stem}_mincount{k}{ending}")
    return names


# -- comparing ----------------------------------------------------------------------------------
def assert_close32(what: str, actual: np.ndarray, expected: np.ndarray, tol) -> None:
    """A float32 map against a float64 expectation: NaN where it is NaN, and equal to its
    float32 rounding (tol == 0), or within ``tol`` plus that rounding (tol None: NaN
    pattern only)."""
    actual = np.asarray(actual)
    assert _native(actual.dtype) == np.float32, f"{what}: dtype {actual.dtype}"
    actual = actual.astype(np.float32)
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(nan_a, nan_e), (
        f"{what}: NaN at {np.argwhere(nan_a != nan_e)[:5].tolist()} (actual NaN there: "
        f"{nan_a[nan_a != nan_e][:5].tolist()})"
    )
    if tol is None:
        return
    keep = ~nan_e
    with np.errstate(over="ignore"):
        expected32 = expected.astype(np.float32)
    if np.isscalar(tol) and tol == 0:
        bad = keep & (actual != expected32)
        assert not bad.any(), (
            f"{what}: not bit for bit at {np.argwhere(bad)[:3].tolist()}: "
            f"{actual[bad][:3].tolist()} != {expected32[bad][:3].tolist()} "
            f"(float64 {expected[bad][:3].tolist()})"
        )
        return
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), expected.shape)
    a64 = actual.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        rounding = np.spacing(np.abs(expected32)).astype(np.float64)
        infinite = np.isinf(expected32) | np.isinf(actual)
        # a value at float32's edge may round to inf or not, within its tolerance
        edge = np.abs(expected) + tol >= np.finfo(np.float32).max
        both_inf = (actual == expected32) & infinite
        diff = np.abs(a64 - expected)
        allowed = tol + np.where(np.isfinite(rounding), rounding, 0.0)
        ok = ~keep | both_inf | (edge & infinite) | (~infinite & (diff <= allowed))
    assert ok.all(), (
        f"{what}: off by more than allowed at {np.argwhere(~ok)[:3].tolist()}: "
        f"{actual[~ok][:3].tolist()} vs {expected[~ok][:3].tolist()} (allowed "
        f"{allowed[~ok][:3].tolist()})"
    )
    # how much of the tolerance the float64 value used: |f32(a) - e| - (half a float32 step)
    used = keep & ~infinite & (tol > 0)
    if used.any():
        excess = np.maximum(diff - rounding / 2, 0.0)
        _note(what.split(":")[-1].strip().split(" ")[0], float((excess[used] / tol[used]).max()))


def _native(dtype) -> np.dtype:
    return np.dtype(dtype).newbyteorder("=")


def check_image_header(what: str, img, truth: Truth, dtype) -> None:
    ref = truth.ref
    assert type(img) is ref.klass, f"{what}: {type(img).__name__} for a {ref.klass.__name__}"
    assert img.shape == ref.data.shape, f"{what}: shape {img.shape}, first input {ref.path}"
    assert np.allclose(img.affine, ref.affine, atol=1e-6), (
        f"{what}: affine {img.affine.tolist()} is not the first input's {ref.affine.tolist()}"
    )
    # the first input's header, byte order included (a big-endian input: a big-endian map)
    assert _native(img.get_data_dtype()) == np.dtype(dtype), (
        f"{what}: dtype {img.get_data_dtype()}"
    )
    header, first = img.header, ref.header
    assert header.get_zooms()[:3] == first.get_zooms()[:3], f"{what}: voxel sizes"
    assert header.get_xyzt_units() == first.get_xyzt_units(), f"{what}: xyzt_units"
    assert int(header["sform_code"]) == int(first["sform_code"]), f"{what}: sform_code"
    assert int(header["qform_code"]) == int(first["qform_code"]), f"{what}: qform_code"
    scaling = header.get_slope_inter()
    assert scaling in ((None, None), (1.0, 0.0)), f"{what}: scaling {scaling} kept"
    data = np.asanyarray(img.dataobj)
    finite = data[np.isfinite(data)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    assert (float(header["cal_min"]), float(header["cal_max"])) == (low, high), (
        f"{what}: cal_min/cal_max {header['cal_min']}, {header['cal_max']} are not the "
        f"map's finite range {low}, {high}"
    )


def check_heatmap(what: str, img, truth: Truth, options: MapOptions) -> None:
    check_image_header(what, img, truth, np.float32)
    descrip = bytes(img.header["descrip"].tobytes()).rstrip(b"\0")
    assert descrip == options.descrip(truth.n), f"{what}: descrip {descrip!r}"
    expected, tol = truth.heatmap(options)
    assert_close32(f"{what}: heatmap", np.asanyarray(img.dataobj), expected, tol)


def check_cohort(what: str, images: dict, truth: Truth, cohort: CohortOptions, table=None):
    """Cohort images (nibabel images, from memory or loaded) against the truth."""
    if cohort.coverage:
        img = images["coverage"]
        check_image_header(f"{what}: coverage", img, truth, np.uint16)
        assert np.array_equal(np.asanyarray(img.dataobj), truth.count), f"{what}: coverage"
    if cohort.std:
        var, tol = truth.variance(cohort.ddof)
        for name in ("variance", "std"):
            img = images[name]
            check_image_header(f"{what}: {name}", img, truth, np.float32)
            if name == "std":
                with np.errstate(invalid="ignore"):
                    expected = np.sqrt(var)
                    # |sqrt(a) - sqrt(b)| <= min(sqrt(|a - b|), |a - b| / sqrt(b))
                    tol = np.where(
                        expected > 0,
                        np.minimum(np.sqrt(tol), tol / np.where(expected > 0, expected, 1.0)),
                        np.sqrt(tol),
                    )
                    if not np.any(tol):
                        tol = np.spacing(expected.astype(np.float32)).astype(np.float64)
            else:
                expected = var
                if not np.any(tol):  # exact integer spread: one float32 rounding (double)
                    with np.errstate(over="ignore"):
                        tol = np.spacing(np.abs(var).astype(np.float32)).astype(np.float64)
            assert_close32(
                f"{what}: {name} ddof={cohort.ddof}", np.asanyarray(img.dataobj), expected, tol
            )
    if cohort.overlap:
        img = images["overlap"]
        check_image_header(f"{what}: overlap", img, truth, np.uint16)
        assert np.array_equal(np.asanyarray(img.dataobj), truth.nonzero), f"{what}: overlap"
        k = cohort.min_count_for(truth.n)
        mask = images["mincount"]
        check_image_header(f"{what}: mincount", mask, truth, np.uint8)
        assert np.array_equal(np.asanyarray(mask.dataobj), truth.nonzero >= k), (
            f"{what}: mincount{k}"
        )
        if table is not None:
            lines = table.strip().split("\n")
            assert lines[0] == "min_count\tfraction\tvoxels", what
            rows = [line.split("\t") for line in lines[1:]]
            assert [int(r[0]) for r in rows] == list(range(1, truth.n + 1)), what
            assert [int(r[2]) for r in rows] == [
                int(np.count_nonzero(truth.nonzero >= k)) for k in range(1, truth.n + 1)
            ], f"{what}: overlap table"


#: Truths of the lists of inputs seen in this run (the snapshots are kept: ids stay valid).
_TRUTHS: dict[tuple[int, ...], tuple[list[Snap], Truth]] = {}


def truth_of(entries: list[Snap]) -> Truth:
    key = tuple(id(e) for e in entries)
    if key not in _TRUTHS:
        _TRUTHS[key] = (list(entries), Truth(entries))
    return _TRUTHS[key][1]


def check_accumulator(what: str, acc, entries: list[Snap], tracks: dict) -> Truth:
    """An accumulator (in memory or loaded) against a recompute of its inputs."""
    assert acc.sources == [e.path for e in entries], (
        f"{what}: sources {acc.sources} != model {[e.path for e in entries]}"
    )
    for record, entry in zip(acc.records, entries, strict=True):
        assert record.digest == f"sha256:{entry.sha}", f"{what}: digest of {entry.path}"
        # the file when it was read: a recompute reads it again, and a file replaced by
        # equal bytes (a map written twice) is another inode with the same content
        assert record.identity == entry.identity or (
            record.identity == identity(entry.path) and not entry.changed()
        ), f"{what}: identity {record.identity} of {entry.path}, recorded {entry.identity}"
        assert record.integer == entry.integer, f"{what}: integer flag of {entry.path}"
    assert acc.tracks == tracks, f"{what}: tracks {acc.tracks} != {tracks}"
    truth = truth_of(entries)
    assert acc.shape == truth.ref.data.shape, f"{what}: grid {acc.shape}"
    assert np.allclose(acc.affine, truth.ref.affine, atol=1e-6), f"{what}: reference affine"
    total = acc.sum.as_float()
    expected, tol = truth.total()
    if truth.exact:
        bad = total != expected
        assert not bad.any(), (
            f"{what}: integer sum not exact at {np.argwhere(bad)[:3].tolist()}: "
            f"{total[bad][:3].tolist()} != {expected[bad][:3].tolist()}"
        )
    else:
        diff = np.abs(total - expected)
        assert (diff <= tol).all(), (
            f"{what}: |S_state - S_numpy| = {diff.max()} > 3 n u M = {truth.B} "
            f"(n={truth.n}, M={truth.M})"
        )
        if truth.B > 0:
            _note("sum", float(diff.max() / truth.B))
    count = acc.count.value
    assert np.array_equal(np.broadcast_to(count, truth.count.shape), truth.count), f"{what}: count"
    if tracks["overlap"]:
        assert np.array_equal(acc.nonzero.value(acc.sum), truth.nonzero), f"{what}: nonzero"
    m2 = acc.spread.m2 if tracks["spread"] else None
    if m2 is not None:  # Welford's M2 in float64, before any map rounds it to float32
        assert np.isfinite(m2).all() and (m2 >= 0).all(), f"{what}: M2 negative or not finite"
        deviation = float(np.abs(m2 - truth.m2()).max())
        unit = truth.n**2 * U * truth.M**2
        assert deviation <= _variance_tol(truth), (
            f"{what}: |M2_state - M2_numpy| = {deviation} > {VAR_C} n^2 u M^2 = "
            f"{_variance_tol(truth)} (n={truth.n}, M={truth.M})"
        )
        if unit > 0:
            _note("M2 / (n^2 u M^2)", deviation / unit)
    return truth


def assert_same_accumulator(what: str, loaded, acc) -> None:
    """A state loaded back equals the accumulator that was saved."""
    assert loaded.records == acc.records, f"{what}: records differ after loading"
    assert loaded.tracks == acc.tracks, what
    assert loaded.shape == acc.shape and np.array_equal(loaded.affine, acc.affine), what
    assert loaded.reference.image_class is acc.reference.image_class, what
    assert bytes(loaded.reference.header.binaryblock) == bytes(acc.reference.header.binaryblock), (
        f"{what}: reference header"
    )
    assert loaded.exact == acc.exact, f"{what}: exact {loaded.exact} != {acc.exact}"
    a, b = loaded.sum.values, acc.sum.values
    if loaded.exact:
        equal = np.array_equal(a.astype(np.int64), b.astype(np.int64))
    else:
        equal = np.array_equal(a, b)
    assert equal, f"{what}: the sum differs after loading (max {np.abs(a - b).max()})"
    assert loaded.sum.rounding == acc.sum.rounding, f"{what}: rounding"
    assert np.array_equal(
        np.broadcast_to(loaded.count.value, acc.shape), np.broadcast_to(acc.count.value, acc.shape)
    ), f"{what}: count differs after loading"
    if acc.nonzero is not None:
        assert np.array_equal(loaded.nonzero.value(loaded.sum), acc.nonzero.value(acc.sum)), (
            f"{what}: nonzero differs after loading"
        )
    if acc.spread is not None:
        mine, theirs = loaded.spread, acc.spread
        assert mine.form == theirs.form, f"{what}: spread form {mine.form} != {theirs.form}"
        for part in ("squares", "m2"):
            x, y = getattr(mine, part), getattr(theirs, part)
            assert (x is None) == (y is None) and (x is None or np.array_equal(x, y)), (
                f"{what}: {part} differs after loading"
            )


# -- the files on disk -------------------------------------------------------------------------
def disk(root: str) -> dict[str, tuple]:
    """Every entry of the folder: a link's target, or a file's bytes hash and inode
    (lock files are left out: they are taken and left by design)."""
    found = {}
    for name in os.listdir(root):
        if name.endswith(".lock"):
            continue
        path = os.path.join(root, name)
        if os.path.islink(path):
            found[name] = ("link", os.readlink(path))
        else:
            found[name] = ("file", sha256(path), os.lstat(path).st_ino)
    return found


@dataclass
class Expect:
    """What a call should do: errors it must raise (one of them), and errors it may raise."""

    errors: list[tuple[type, list[str]]] = field(default_factory=list)
    maybe: list[tuple[type, list[str]]] = field(default_factory=list)

    def error(self, needles, exc=ValueError) -> None:
        self.errors.append((exc, [n for n in needles if n]))

    def matches(self, err: BaseException) -> bool:
        text = str(err)
        return any(
            isinstance(err, exc) and (not needles or any(n in text for n in needles))
            for exc, needles in [*self.errors, *self.maybe]
        )


@dataclass
class ModelState:
    path: str
    entries: list[Snap]
    tracks: dict


# -- strategies ----------------------------------------------------------------------------------
cohorts = st.builds(
    lambda coverage, std, ddof, threshold: CohortOptions(
        coverage=coverage, std=std, ddof=ddof, min_count=threshold[0], min_fraction=threshold[1]
    ),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2),
    st.one_of(
        st.just((None, None)),
        st.tuples(st.integers(1, 4), st.none()),
        st.tuples(st.none(), st.sampled_from([0.25, 1 / 3, 0.5, 0.6, 1.0])),
    ),
)
map_options = st.builds(MapOptions, st.booleans(), st.booleans(), st.booleans())
threads = st.integers(1, 3)

FRESH = ("out.nii.gz", "out.nii", "st_a.nii.gz", "st_b.nii", "st_c.nii.gz")
FRESH_STATES = ("st_a.nii.gz", "st_b.nii", "st_c.nii.gz")
FRESH_MAPS = ("out.nii.gz", "out.nii")
MAX_STATES = 4


class StateMachine(RuleBasedStateMachine):
    """Saved states under random adds, removals, merges and collisions (module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.root = os.path.realpath(tempfile.mkdtemp(prefix="nh_state_machine_"))
        self.pool: list[str] = []  # names of the pool's files (volumes and links)
        self.states: dict[str, ModelState] = {}
        self.checks = 0

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        _TRUTHS.clear()

    # -- helpers --------------------------------------------------------------------------
    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def names(self) -> list[str]:
        """Every name a rule may use: the pool's and the fresh output names."""
        return [*self.pool, *FRESH]

    def existing(self) -> list[str]:
        return [n for n in self.names() if os.path.exists(self.path(n))]

    def output_name(self, data, label: str, kind: str = "map") -> str:
        """A name for an output: mostly a fresh one of its kind, often one of the pool's (an
        input), sometimes any fresh one (two outputs of one name)."""
        own = st.sampled_from(FRESH_STATES if kind == "state" else FRESH_MAPS)
        names = st.one_of(own, own, st.sampled_from(self.pool), st.sampled_from(FRESH))
        return data.draw(names, label=label)

    def input_names(self, data, label: str, max_size: int) -> list[str]:
        """Names of inputs: mostly the pool's, sometimes any existing file (a state, a map)."""
        pool = st.sampled_from([n for n in self.pool if os.path.exists(self.path(n))])
        names = st.one_of(pool, pool, pool, st.sampled_from(self.existing()))
        size = data.draw(st.sampled_from([1, 2, 3, 4, 5][:max_size] + [3]), label="size")
        return data.draw(st.lists(names, min_size=size, max_size=size), label=label)

    def attempt(self, call, expect: Expect, where: str):
        """Run a call; return (result, disk before) on success, None on an expected error.

        Any error leaves every file as it was; a success changes only what it wrote."""
        before = disk(self.root)
        try:
            result = call()
            SEEN[f"{where.split(' of ')[0]}: ok"] += 1
        except Exception as err:
            SEEN[f"{where.split(' of ')[0]}: {type(err).__name__}"] += 1
            after = disk(self.root)
            assert after == before, (
                f"{where}: a failed call ({type(err).__name__}: {err}) changed files: "
                f"{sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k))}"
            )
            if not expect.matches(err):
                raise AssertionError(
                    f"{where}: unexpected {type(err).__name__}: {err}\n expected {expect}"
                ) from err
            return None
        if expect.errors:
            raise AssertionError(f"{where}: succeeded; expected an error: {expect.errors}")
        return result, before

    def check_written(self, before: dict, written: dict, where: str) -> None:
        after = disk(self.root)
        changed = {k for k in set(after) | set(before) if after.get(k) != before.get(k)}
        outputs = {os.path.relpath(p, self.root) for p in written.values()}
        assert changed <= outputs, (
            f"{where}: changed files it did not report: {changed - outputs} "
            f"({[(k, before.get(k), after.get(k)) for k in sorted(changed - outputs)]}); "
            f"written {written}"
        )
        for name in outputs:
            assert after.get(name, ("missing",))[0] == "file", f"{where}: {name} not written"

    def forget_overwritten(self, written: dict) -> None:
        """States whose file an output replaced are gone."""
        for path in written.values():
            self.states.pop(path, None)

    def check_outputs(self, where, written, truth, options, cohort) -> None:
        if "heatmap" in written:
            check_heatmap(where, nb.load(written["heatmap"], mmap=False), truth, options)
        images = {
            role: nb.load(path, mmap=False)
            for role, path in written.items()
            if role not in ("heatmap", "state", "table")
        }
        table = None
        if "table" in written:
            with open(written["table"]) as fobj:
                table = fobj.read()
        if images:
            check_cohort(where, images, truth, cohort, table)
        expected = (
            set(map_names(written["heatmap"], cohort, truth.n)) if "heatmap" in written else set()
        )
        assert set(written) - {"state"} == expected, f"{where}: roles {sorted(written)}"
        if "heatmap" in written:
            for role, path in map_names(written["heatmap"], cohort, truth.n).items():
                assert written[role] == path, f"{where}: {role} at {written[role]}, not {path}"

    def collisions(
        self,
        outputs: dict,
        reads: list[tuple[str, str]],
        expect: Expect,
        *,
        replaced=("state", "state"),
    ) -> None:
        """Outputs that are one file, or an output that is a file read: errors."""
        items = list(outputs.items())
        for i, (role, path) in enumerate(items):
            for _, other in items[:i]:
                if same_file(path, other):
                    expect.error([path, other])
            for read_role, read in reads:
                if (role, read_role) == replaced:
                    continue
                if same_file(path, read):
                    expect.error([path, read])

    def spec_refusals(self, outputs: dict, kept: list[Snap], expect: Expect) -> None:
        """SPEC: no run overwrites an input of its maps (a state's kept inputs included)."""
        for path in outputs.values():
            for entry in kept:
                if same_file(path, entry.path):
                    expect.error([path, entry.path])

    def cohort_for(self, data, tracks: dict) -> CohortOptions:
        """Cohort options, mostly of maps the state can make (else: refused)."""
        cohort = data.draw(cohorts, label="cohort")
        if data.draw(st.sampled_from([True, True, True, False]), label="trackable"):
            cohort = CohortOptions(
                coverage=cohort.coverage,
                std=cohort.std and tracks["spread"],
                ddof=cohort.ddof,
                min_count=cohort.min_count if tracks["overlap"] else None,
                min_fraction=cohort.min_fraction if tracks["overlap"] else None,
            )
        return cohort

    def untracked(self, tracks: dict, cohort: CohortOptions, expect: Expect) -> None:
        if (cohort.std and not tracks["spread"]) or (cohort.overlap and not tracks["overlap"]):
            expect.error(["not tracked"])

    def adopt(self, where: str, acc, state_path: str, entries, tracks) -> Truth:
        """A state a call returned and wrote: check it, load it back, make it live."""
        truth = check_accumulator(f"{where} (returned)", acc, entries, tracks)
        loaded = state_io.load_state(state_path)
        assert_same_accumulator(f"{where} (loaded)", loaded, acc)
        entries = [  # a recompute records the identity of the file it read (see above)
            e if r.identity == e.identity else dataclasses.replace(e, identity=r.identity)
            for e, r in zip(entries, acc.records, strict=True)
        ]
        self.states[state_path] = ModelState(state_path, entries, dict(tracks))
        return truth

    # -- the pool -----------------------------------------------------------------------------
    @initialize(
        bases=st.lists(
            st.tuples(
                st.sampled_from(KINDS),
                st.sampled_from(sorted(ORIENTS)),
                st.sampled_from(STORAGES),
            ),
            min_size=3,
            max_size=7,
        ),
        links=st.lists(
            st.tuples(st.sampled_from(["copy", "hardlink", "symlink"]), st.integers(0, 6)),
            max_size=3,
        ),
        seed=st.integers(0, 2**32 - 1),
    )
    def make_pool(self, bases, links, seed) -> None:
        rng = np.random.default_rng(seed)
        names = []
        for i, (kind, orient, storage) in enumerate(bases):
            ending = ".nii" if storage in ("nii", "big_endian") else ".nii.gz"
            # two inputs named as cohort maps of "out": a run writing out's maps collides
            stem = {0: "out_coverage", 1: "out_std"}.get(i, f"v{i}_{kind}")
            name = f"{stem}{ending}"
            SEEN[f"pool {kind}"] += 1
            SEEN[f"pool {orient}"] += 1
            stored, scaling = volume_data(kind, rng)
            write_volume(self.path(name), stored, scaling, orient, storage)
            names.append(name)
        for j, (how, target) in enumerate(links):
            source = names[target % len(bases)]
            ending = ".nii" if source.endswith(".nii") else ".nii.gz"
            name = f"{how}{j}{ending}"
            if how == "copy":
                shutil.copyfile(self.path(source), self.path(name))
            elif how == "hardlink":
                os.link(self.path(source), self.path(name))
            else:
                os.symlink(source, self.path(name))
            names.append(name)
        self.pool = names

    # -- making states ------------------------------------------------------------------------
    @precondition(lambda self: len(self.states) < MAX_STATES)
    @rule(data=st.data(), num_threads=threads)
    def create_with_make_maps(self, data, num_threads) -> None:
        names = self.input_names(data, "inputs", 5)
        files = [self.path(n) for n in names]
        out_file = self.path(self.output_name(data, "out_file"))
        state_file = self.path(self.output_name(data, "state_file", "state"))
        cohort, options = data.draw(cohorts, label="cohort"), data.draw(map_options, "options")
        snaps = [snap(f) for f in files]
        expect = Expect()
        for s in snaps:
            if not s.volume:
                expect.error([s.path])
        outputs = {"state": state_file, **map_names(out_file, cohort, len(files))}
        self.collisions(outputs, [("input", f) for f in files], expect, replaced=None)
        got = self.attempt(
            lambda: api.make_maps(
                files,
                out_file,
                options=options,
                cohort=cohort,
                state_file=state_file,
                num_threads=num_threads,
            ),
            expect,
            "make_maps",
        )
        if got is None:
            return
        (acc, written), before = got
        self.check_written(before, written, "make_maps")
        self.forget_overwritten(written)
        tracks = {"overlap": True, "spread": True}
        truth = self.adopt("make_maps", acc, written["state"], snaps, tracks)
        self.check_outputs("make_maps", written, truth, options, cohort)

    @precondition(lambda self: len(self.states) < MAX_STATES)
    @rule(
        data=st.data(),
        num_threads=threads,
        tracks=st.sampled_from(
            [(True, True), (True, True), (False, False), (True, False), (False, True)]
        ),
    )
    def create_with_accumulate(self, data, num_threads, tracks) -> None:
        overlap, spread = tracks
        names = self.input_names(data, "inputs", 5)
        files = [self.path(n) for n in names]
        # save_state is the low-level writer: it refuses nothing, so it gets a free name
        free = [n for n in FRESH_STATES if not any(same_file(self.path(n), f) for f in files)]
        free = [
            n
            for n in free
            if not any(
                same_file(self.path(n), e.path) for s in self.states.values() for e in s.entries
            )
        ]
        if not free:
            return
        state_file = self.path(data.draw(st.sampled_from(free), label="state_file"))
        snaps = [snap(f) for f in files]
        expect = Expect()
        for s in snaps:
            if not s.volume:
                expect.error([s.path])

        def call():
            acc = api.accumulate_files(
                files, overlap=overlap, spread=spread, digests=True, num_threads=num_threads
            )
            return acc, {"state": state_io.save_state(acc, state_file)}

        got = self.attempt(call, expect, "accumulate_files + save_state")
        if got is None:
            return
        (acc, written), before = got
        self.check_written(before, written, "save_state")
        self.forget_overwritten(written)
        self.adopt(
            "save_state", acc, written["state"], snaps, {"overlap": overlap, "spread": spread}
        )

    # -- updating -------------------------------------------------------------------------------
    # one rule per kind of update: updates are what states are for, so they are drawn most
    @precondition(lambda self: self.states)
    @rule(data=st.data(), num_threads=threads)
    def update_add(self, data, num_threads) -> None:
        self.update(data, num_threads, "add")

    @precondition(lambda self: self.states)
    @rule(data=st.data(), num_threads=threads)
    def update_remove(self, data, num_threads) -> None:
        self.update(data, num_threads, "remove")

    @precondition(lambda self: self.states)
    @rule(data=st.data(), num_threads=threads)
    def update_remove_first(self, data, num_threads) -> None:
        self.update(data, num_threads, "remove_first")

    @precondition(lambda self: self.states)
    @rule(data=st.data(), num_threads=threads)
    def update_add_and_remove(self, data, num_threads) -> None:
        self.update(data, num_threads, "both")

    @precondition(lambda self: self.states)
    @rule(data=st.data(), num_threads=threads)
    def write_maps_of_state(self, data, num_threads) -> None:
        self.update(data, num_threads, "maps")

    def update(self, data, num_threads, mode) -> None:
        model = self.states[data.draw(st.sampled_from(sorted(self.states)), label="state")]
        entries = model.entries
        add, remove = [], []
        if mode in ("add", "both"):
            # mostly files that are not inputs yet; sometimes any (already an input: refused)
            new = [
                n
                for n in self.pool
                if os.path.exists(self.path(n))
                and not any(same_file(self.path(n), e.path) for e in entries)
            ]
            fresh = st.sampled_from(new or self.pool)
            names = st.one_of(fresh, fresh, fresh, st.sampled_from(self.existing()))
            add = data.draw(st.lists(names, min_size=1, max_size=3), label="add")
            add = [self.path(n) for n in add]
        if mode in ("remove", "both", "remove_first"):
            # mostly inputs of the state, by path or through a link to them; sometimes not
            # (files as they are now: inode numbers are reused, draws must not depend on them)
            links = sorted(
                {
                    self.path(n)
                    for n in self.existing()
                    for e in entries
                    if same_file(self.path(n), e.path) and not e.changed()
                }
            )
            paths = [e.path for e in entries]
            # mostly leaving some inputs; sometimes every one (refused, unless adding)
            every = data.draw(st.sampled_from([False] * 5 + [True]), label="every")
            size = len(paths) if every else min(3, max(1, len(paths) - 1))
            remove = data.draw(
                st.lists(st.sampled_from(paths), min_size=1, max_size=size, unique=True),
                label="remove",
            )
            other = data.draw(st.sampled_from(["none"] * 6 + ["link", "any"]), label="other")
            if other == "link" and links:  # through a link to an input (or the input)
                remove[-1] = data.draw(st.sampled_from(links), label="link")
            elif other == "any":  # maybe not an input at all
                remove.append(data.draw(st.sampled_from(self.existing()), label="any"))
                remove[-1] = self.path(remove[-1])
            if mode == "remove_first":  # the reference goes: the next input's grid and header
                remove = [paths[0], *[r for r in remove[:1] if r != paths[0]]]
        out_state = None
        if data.draw(st.booleans(), label="out_state?"):
            out_state = self.path(self.output_name(data, "out_state", "state"))
        out_file = None
        if mode == "maps" or data.draw(st.booleans(), label="out_file?"):
            out_file = self.path(self.output_name(data, "out_file"))
        cohort = self.cohort_for(data, model.tracks)
        options = data.draw(map_options, "options")
        add_snaps = [snap(a) for a in add]

        expect = Expect()
        removed = self.match_removals(entries, remove, expect)
        kept = [e for i, e in enumerate(entries) if i not in removed]
        n_after = len(kept) + len(add)
        if n_after < 1:
            expect.error([model.path])
        for a, s in zip(add, add_snaps, strict=True):
            if not s.volume:
                expect.error([a])
            for i, e in enumerate(entries):
                # The documented rule: the same path, or the file at the recorded path now.
                # Not the recorded inode: numbers are reused, so a file with it and the same
                # content may be an equal copy (accepted and logged, as copies are).
                same = a == e.path or (s.identity is not None and identity(e.path) == s.identity)
                if same:  # removing and adding it in one update: either is fair
                    (expect.maybe if i in removed else expect.errors).append((ValueError, [a]))
        for i in removed:
            if entries[i].changed():
                expect.error([entries[i].path])
        for e in kept:
            if e.changed():  # only read if the update recomputes
                expect.maybe.append((ValueError, [e.path]))
        state_out = out_state or model.path
        outputs = {"state": state_out}
        if out_file is not None:
            outputs.update(map_names(out_file, cohort, n_after))
            self.untracked(model.tracks, cohort, expect)
        reads = [
            ("state", model.path),
            *[("add", a) for a in add],
            *[("remove", entries[i].path) for i in removed],
        ]
        self.collisions(outputs, reads, expect)
        self.spec_refusals(outputs, kept, expect)

        where = f"update_state({mode})"
        context = (
            f"{where} of {os.path.basename(model.path)}: inputs "
            f"{[(os.path.basename(e.path), e.identity[1]) for e in entries]}, remove "
            f"{[(os.path.basename(r), (identity(r) or (0, 0))[1]) for r in remove]}, add "
            f"{[os.path.basename(a) for a in add]}, out_state "
            f"{out_state and os.path.basename(out_state)}, out_file "
            f"{out_file and os.path.basename(out_file)}"
        )
        got = self.attempt(
            lambda: api.update_state(
                model.path,
                add=add,
                remove=remove,
                out_state=out_state,
                out_file=out_file,
                options=options,
                cohort=cohort,
                num_threads=num_threads,
            ),
            expect,
            context,
        )
        if got is None:
            return
        (acc, written), before = got
        self.check_written(before, written, context)
        self.forget_overwritten(written)
        new_entries = kept + add_snaps
        truth = self.adopt(context, acc, written["state"], new_entries, model.tracks)
        self.check_outputs(where, written, truth, options, cohort)

    def match_removals(self, entries, remove, expect) -> list[int]:
        """The documented matching: the recorded path, or a link to the same file; each
        input once. An input recorded under the path itself goes before one that is a link
        to it; of several, the last (the first input, the reference, stays while it can)."""
        removed: list[int] = []
        for item in remove:
            path = os.path.abspath(item)
            ident = identity(path)
            found = [
                i
                for i, e in enumerate(entries)
                if i not in removed and (e.path == path or (ident and identity(e.path) == ident))
            ]
            if not found:
                expect.error([path])
                continue
            exact = [i for i in found if entries[i].path == path]
            removed.append(exact[-1] if exact else found[-1])
        return removed

    # -- merging -------------------------------------------------------------------------------
    def disjoint_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for a in sorted(self.states):
            for b in sorted(self.states):
                if a == b:
                    continue
                ea, eb = self.states[a].entries, self.states[b].entries
                # the same file: the same path, or the same inode and content (a freed inode
                # is reused by another file: identity alone is not stable between runs)
                if not any(
                    x.path == y.path or (x.identity, x.sha) == (y.identity, y.sha)
                    for x in ea
                    for y in eb
                ):
                    pairs.append((a, b))
        return pairs

    @precondition(lambda self: self.disjoint_pairs())
    @rule(data=st.data(), how=st.sampled_from(["merge_and_write", "merge_states"]))
    def merge(self, data, how) -> None:
        a, b = data.draw(st.sampled_from(self.disjoint_pairs()), label="pair")
        self.merge_pair(data, a, b, how)

    @precondition(lambda self: len(self.states) <= MAX_STATES - 2)
    @rule(
        data=st.data(),
        how=st.sampled_from(["merge_and_write", "merge_states"]),
        tracks=st.sampled_from([(True, True), (True, False), (False, True), (False, False)]),
        num_threads=threads,
    )
    def merge_parts(self, data, how, tracks, num_threads) -> None:
        """Map-reduce: two states of a disjoint split of some files, then merged."""
        volumes = [n for n in self.pool if nb.load(self.path(n)).shape[3:] in ((), (1,))]
        names = data.draw(
            st.lists(st.sampled_from(volumes), min_size=2, max_size=6, unique=True), label="files"
        )
        files = []
        for name in names:  # one name per file: the parts are disjoint
            if not any(same_file(self.path(name), f) for f in files):
                files.append(self.path(name))
        free = [
            self.path(n)
            for n in FRESH_STATES
            if not any(
                same_file(self.path(n), e.path) for s in self.states.values() for e in s.entries
            )
        ]
        if len(files) < 2 or len(free) < 2:
            return
        split = data.draw(st.integers(1, len(files) - 1), label="split")
        parts = []
        for target, chunk in zip(free[:2], (files[:split], files[split:]), strict=True):
            overlap, spread = tracks
            acc = api.accumulate_files(
                chunk, overlap=overlap, spread=spread, digests=True, num_threads=num_threads
            )
            state_io.save_state(acc, target)
            self.forget_overwritten({"state": target})
            self.adopt(
                "part",
                acc,
                target,
                [snap(f) for f in chunk],
                {"overlap": overlap, "spread": spread},
            )
            parts.append(target)
        self.merge_pair(data, *parts, how)

    def merge_pair(self, data, a: str, b: str, how: str) -> None:
        ma, mb = self.states[a], self.states[b]
        entries = ma.entries + mb.entries
        expect = Expect()
        if ma.tracks != mb.tracks:
            expect.error([b])
        if how == "merge_and_write":
            out_file = self.path(self.output_name(data, "out_file"))
            cohort = self.cohort_for(data, ma.tracks)
            options = data.draw(map_options, "options")
            outputs = map_names(out_file, cohort, len(entries))
            self.collisions(outputs, [("state", a), ("state", b)], expect, replaced=None)
            self.spec_refusals(outputs, entries, expect)
            self.untracked(ma.tracks, cohort, expect)
            got = self.attempt(
                lambda: api.merge_and_write([a, b], out_file, options=options, cohort=cohort),
                expect,
                how,
            )
            if got is None:
                return
            (acc, written), before = got
            self.check_written(before, written, how)
            self.forget_overwritten(written)
            truth = check_accumulator(how, acc, entries, ma.tracks)
            self.check_outputs(how, written, truth, options, cohort)
            return
        free = [
            n
            for n in FRESH_STATES
            if not any(
                same_file(self.path(n), e.path) for s in self.states.values() for e in s.entries
            )
        ]
        if not free:
            return
        target = self.path(data.draw(st.sampled_from(free), label="target"))

        def call():
            acc = state_io.merge_states([a, b])
            return acc, {"state": state_io.save_state(acc, target)}

        got = self.attempt(call, expect, how)
        if got is None:
            return
        (acc, written), before = got
        self.check_written(before, written, how)
        self.forget_overwritten(written)
        self.adopt(how, acc, target, entries, ma.tracks)

    # -- collisions on purpose --------------------------------------------------------------
    @precondition(lambda self: self.states)
    @rule(
        data=st.data(),
        how=st.sampled_from(
            [
                "map_over_input",
                "map_over_state",
                "state_over_add",
                "map_over_add",
                "map_over_removed",
                "state_is_map",
                "sidecar_over_input",
            ]
        ),
    )
    def collide(self, data, how) -> None:
        """Outputs that are inputs or each other: refused, naming the file, nothing changed."""
        model = self.states[data.draw(st.sampled_from(sorted(self.states)), label="state")]
        entries = model.entries
        candidates = [
            self.path(n)
            for n in self.existing()
            if not any(same_file(self.path(n), e.path) for e in entries)
            and snap(self.path(n)).volume
        ]
        if how in ("map_over_input", "sidecar_over_input", "state_is_map"):
            names = data.draw(
                st.lists(st.sampled_from(self.existing()), min_size=1, max_size=3), label="inputs"
            )
            files = [self.path(n) for n in names]
            victim = data.draw(st.sampled_from(files), label="victim")
            cohort = CohortOptions(std=True, coverage=True)
            out_file, state_file = victim, None
            if how == "state_is_map":
                out_file = state_file = self.path(self.output_name(data, "both"))
            elif how == "sidecar_over_input":
                # out_std / out_coverage are inputs named as out's cohort maps
                sidecar = [f for f in files if os.path.basename(f).startswith("out_")]
                if not sidecar:
                    files.append(self.path(self.pool[1]))
                    sidecar = [files[-1]]
                victim = sidecar[0]
                ending = ".nii" if victim.endswith(".nii") else ".nii.gz"
                out_file = self.path(f"out{ending}")
            outputs = map_names(out_file, cohort, len(files))
            if state_file is not None:
                outputs["state"] = state_file
            expect = Expect()
            self.collisions(outputs, [("input", f) for f in files], expect, replaced=None)
            for f in files:
                if not snap(f).volume:
                    expect.error([f])
            assert expect.errors, f"{how}: no collision drawn ({outputs}, {files})"
            self.attempt(
                lambda: api.make_maps(files, out_file, cohort=cohort, state_file=state_file),
                expect,
                how,
            )
            return
        add, remove, out_state, out_file = [], [], None, None
        if how == "map_over_state":
            out_file = model.path
        elif how in ("state_over_add", "map_over_add"):
            if not candidates:
                return
            add = [data.draw(st.sampled_from(candidates), label="add")]
            target = add[0]
            if data.draw(st.booleans(), label="through a link"):
                links = [self.path(n) for n in self.existing() if same_file(self.path(n), target)]
                target = data.draw(st.sampled_from(links), label="link")
            if how == "state_over_add":
                out_state = target
            else:
                out_file = target
        else:  # map_over_removed
            if len(entries) < 2:
                return
            victim = data.draw(st.sampled_from(entries), label="removed")
            remove, out_file = [victim.path], victim.path
        expect = Expect()
        removed = self.match_removals(entries, remove, expect)
        kept = [e for i, e in enumerate(entries) if i not in removed]
        cohort = CohortOptions()
        outputs = {"state": out_state or model.path}
        if out_file is not None:
            outputs.update(map_names(out_file, cohort, len(kept) + len(add)))
        reads = [
            ("state", model.path),
            *[("add", a) for a in add],
            *[("remove", entries[i].path) for i in removed],
        ]
        self.collisions(outputs, reads, expect)
        for i in removed:
            if entries[i].changed():
                expect.error([entries[i].path])
        assert expect.errors, f"{how}: no collision drawn"
        self.attempt(
            lambda: api.update_state(
                model.path, add=add, remove=remove, out_state=out_state, out_file=out_file
            ),
            expect,
            how,
        )

    # -- after every step ----------------------------------------------------------------------
    @invariant()
    def every_state_equals_a_recompute(self) -> None:
        for path, model in sorted(self.states.items()):
            where = f"state {os.path.basename(path)}"
            acc = state_io.load_state(path)
            truth = check_accumulator(where, acc, model.entries, model.tracks)
            self.checks += 1
            every = [
                MapOptions(m, c, z)
                for m in (True, False)
                for c in (True, False)
                for z in (False, True)
            ]
            for options in every:  # the arrays of every map; one image (making one is slow)
                expected, tol = truth.heatmap(options)
                data = acc.aggregate(options, dtype=np.float32).astype(np.float32, copy=False)
                assert_close32(f"{where} {options}: heatmap", data, expected, tol)
            options = every[self.checks % len(every)]
            check_heatmap(f"{where} {options}", acc.map_image(options), truth, options)
            ddof = self.checks % 3
            cohort = CohortOptions(
                coverage=True,
                std=model.tracks["spread"],
                ddof=ddof,
                min_fraction=0.5 if model.tracks["overlap"] else None,
            )
            images, _ = cohort_images(acc, cohort)
            check_cohort(f"{where} ddof={ddof}", images, truth, cohort)
            if model.tracks["spread"]:
                for other in {0, 1, 2} - {ddof}:
                    var, std = acc.spread.variance_maps(acc.count, acc.sum, other)
                    images = {
                        "variance": acc.make_image(var, b""),
                        "std": acc.make_image(std, b""),
                    }
                    check_cohort(
                        f"{where} ddof={other}", images, truth, CohortOptions(std=True, ddof=other)
                    )

    @invariant()
    def no_temporary_left(self) -> None:
        if not self.pool:
            return
        left = [n for n in os.listdir(self.root) if n.startswith(".") and not n.endswith(".lock")]
        assert not left, f"temporary or journal files left: {left}"


def _run(max_examples: int, steps: int, **overrides) -> None:
    DEVIATIONS.clear()
    SEEN.clear()
    run_state_machine_as_test(
        StateMachine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=True,
            database=None,
            print_blob=True,  # a failure prints @reproduce_failure(...) to replay it
            # A step writes and reads real files: slower than Hypothesis expects of a draw.
            suppress_health_check=[HealthCheck.too_slow],
            **overrides,
        ),
    )
    print(f"\nseen: {dict(sorted(SEEN.items()))}")
    print(
        "largest deviation / tolerance: "
        + ", ".join(f"{k} {v:.3g}" for k, v in sorted(DEVIATIONS.items()))
    )


def test_state_machine():
    """Saved states stay a from-scratch recompute through random updates (CI budget)."""
    _run(max_examples=150, steps=20)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("NIPYPE_HEATMAP_LONG_TESTS"),
    reason="the long state machine (15-20 min) runs with NIPYPE_HEATMAP_LONG_TESTS=1",
)
def test_state_machine_long():
    """The same machine with ten times the budget (before a release, after a change to the
    accumulator, the state or the update)."""
    _run(max_examples=1500, steps=20)
