"""The heatmap accumulator: the voxel-wise sum ``S`` and count ``n`` of finite values.

Per voxel, for every input ``x``: ``S += x`` where ``x`` is finite, ``n += isfinite(x)``.
The map is then ``S / n`` (mean) or ``S`` (sum), clipped to the inputs' range and
normalized as asked (:meth:`HeatmapAccumulator.aggregate`). Cohort statistics (the
non-zero count and the spread, :mod:`~nipype_heatmap.accumulate.spread`) are kept beside
``S`` and ``n`` when asked for.

**Exactness.** While every input is an unscaled integer volume, ``S`` is exact (kept in an
integer type, see ``_kernels``), and so are removals: a state of masks gives the maps of a
recompute bit for bit after any adds and removes. Once a floating-point input is in it,
``S`` is float64 and every addition or subtraction may round; :attr:`VoxelSum.rounding`
bounds, for every voxel, how far ``S`` can be from the exact sum (each step adds the unit
round-off ``u = 2**-53`` times a bound of its result, the sum of the inputs' largest
absolute values). Callers use it to decide when an update must recompute instead (see
:mod:`nipype_heatmap.state`). When every input left is an integer volume again and the
bound is below one half, ``S`` is rounded back to the exact integers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import nibabel as nb
import numpy as np

from ..io import Volume, read_volume
from . import _kernels
from .spread import NonzeroCount, Spread
from .values import Reference, SourceRecord, Values, values_on_grid

__all__ = [
    "UNIT_ROUNDOFF",
    "finite_range",
    "FiniteCount",
    "HeatmapAccumulator",
    "VoxelSum",
]

LOGGER = logging.getLogger(__name__)

#: The unit round-off of float64.
UNIT_ROUNDOFF = 2.0**-53


class VoxelSum:
    """``S``: the voxel-wise sum of finite input values, exact while it can be.

    Attributes
    ----------
    magnitude : float
        The sum of the inputs' largest absolute values: no voxel's sum exceeds it.
    rounding : float
        How far any voxel of ``S`` can be from the exact sum; 0 while ``S`` is exact.
    low, high : int
        While exact, bounds of every voxel's sum (they choose its integer type).
    """

    def __init__(self, shape: Sequence[int]) -> None:
        self._total = np.zeros(tuple(shape), np.uint8, order="F")
        self.magnitude = 0.0
        self.rounding = 0.0
        self.low = self.high = 0

    @property
    def exact(self) -> bool:
        """Whether ``S`` is exactly the sum (every input so far an integer volume)."""
        return self._total.dtype.kind in "iu"

    @property
    def values(self) -> np.ndarray:
        """``S`` as stored (integers while exact, else float64); read-only use."""
        return self._total

    def as_float(self) -> np.ndarray:
        """``S`` in float64 (a copy while it is kept in integers)."""
        if self.exact and self.low == self.high == 0:  # every voxel is 0: nothing to convert
            return np.zeros(self._total.shape, np.float64, order="F")
        if self.exact:
            return self._total.astype(np.float64, order="F")
        return self._total

    def add(self, x: Values) -> None:
        """``S += x`` where ``x`` is finite."""
        self._step(x, +1)

    def subtract(self, x: Values) -> None:
        """``S -= x`` where ``x`` is finite (an input that was added)."""
        self._step(x, -1)

    def _step(self, x: Values, sign: int) -> None:
        size = x.record.magnitude
        before = self.magnitude
        self.magnitude = max(0.0, before + sign * size)
        ufunc = np.add if sign > 0 else np.subtract
        if self.exact and x.integer:
            lo, hi = (int(v) for v in x.value_range or (0, 0))
            low, high = self.low + sign * min(lo, 0), self.high + sign * max(hi, 0)
            wanted = _kernels.integer_sum_dtype(min(low, self.low), max(high, self.high))
            if wanted is not None:
                if not np.can_cast(wanted, self._total.dtype):
                    self._total = self._total.astype(
                        np.promote_types(self._total.dtype, wanted), order="F"
                    )
                ufunc(
                    self._total, x.array, out=self._total, casting="unsafe"
                )  # a type that holds it
                self.low, self.high = low, high
                return
        total = self._float()
        if x.complete:
            ufunc(total, x.array, out=total, casting="unsafe")
        else:
            ufunc(total, x.array, out=total, where=np.isfinite(x.array))
        self.rounding += UNIT_ROUNDOFF * (before + size)

    def _float(self) -> np.ndarray:
        """Switch ``S`` to float64 for good (an exact conversion) and return it."""
        if self.exact:
            self._total = self.as_float()
        elif not self._total.flags.writeable:  # loaded from a file: a read-only view
            self._total = np.array(self._total, order="F")
        return self._total

    def restore_exact(self, low: int, high: int) -> bool:
        """Round ``S`` back to exact integers, if that is certain: every input is an integer
        volume (the caller knows) with sums in ``[low, high]`` and the rounding bound is
        below one half. Returns whether ``S`` is exact now."""
        wanted = _kernels.integer_sum_dtype(low, high)
        if self.exact or wanted is None or self.rounding >= 0.5:
            return self.exact
        self._total = np.rint(self._total).astype(wanted, order="F")
        self.low, self.high, self.rounding = low, high, 0.0
        return True

    def merge(self, other: VoxelSum, conform) -> None:
        """Add another part's sum (re-ordered onto this grid by ``conform``)."""
        theirs = conform(other.values)
        if self.exact and other.exact:
            low, high = self.low + other.low, self.high + other.high
            wanted = _kernels.integer_sum_dtype(low, high)
            if wanted is not None:
                dtype = np.promote_types(np.promote_types(self._total.dtype, wanted), theirs.dtype)
                self._total = np.add(self._total, theirs, dtype=dtype, order="F")
                self.low, self.high = low, high
                self.magnitude += other.magnitude
                return
        total = self._float()
        np.add(total, theirs, out=total)
        self.rounding += other.rounding + UNIT_ROUNDOFF * (self.magnitude + other.magnitude)
        self.magnitude += other.magnitude

    def regrid(self, move) -> None:
        """Re-order onto a new reference grid (``move`` maps an array)."""
        self._total = move(self._total)

    @classmethod
    def restore(
        cls,
        total: np.ndarray,
        *,
        exact: bool,
        magnitude: float,
        rounding: float,
        low: int,
        high: int,
    ) -> VoxelSum:
        """A sum as saved (see :mod:`nipype_heatmap.state`): exact integers in ``[low,
        high]`` (kept in their integer type), or float64 (used as it is, until changed).

        Raises
        ------
        ValueError
            If an exact sum's bounds leave the exact range.
        """
        made = cls.__new__(cls)
        if exact:
            dtype = _kernels.integer_sum_dtype(low, high)
            if dtype is None:
                raise ValueError(f"an exact sum from {low} to {high}, beyond 2**53")
            total = total.astype(dtype, order="F")
        made._total, made.magnitude, made.rounding = total, magnitude, rounding
        made.low, made.high = low, high
        return made


class FiniteCount:
    """``n``: per voxel, how many inputs have a finite value there.

    While every input is complete (finite everywhere: integers always are), ``n`` is the
    number of inputs and no array is kept.
    """

    def __init__(self, shape: Sequence[int], n_inputs: int = 0) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.n_inputs = n_inputs
        self.per_voxel: np.ndarray | None = None  # uint32, once an input has missing values

    @property
    def value(self) -> int | np.ndarray:
        """``n``: a number, or the uint32 array of counts."""
        return self.n_inputs if self.per_voxel is None else self.per_voxel

    def add(self, x: Values) -> None:
        """``n += isfinite(x)``."""
        self._step(x, +1)

    def subtract(self, x: Values) -> None:
        """``n -= isfinite(x)`` (an input that was added)."""
        self._step(x, -1)

    def _step(self, x: Values, sign: int) -> None:
        self.n_inputs += sign
        if x.complete and self.per_voxel is None:
            return
        if self.per_voxel is None:
            self.per_voxel = np.full(self.shape, self.n_inputs - sign, np.uint32, order="F")
        ufunc = np.add if sign > 0 else np.subtract
        if x.complete:
            ufunc(self.per_voxel, np.uint32(1), out=self.per_voxel)
        else:
            ufunc(self.per_voxel, np.isfinite(x.array), out=self.per_voxel, casting="unsafe")

    def merge(self, other: FiniteCount, conform) -> None:
        """Add another part's counts."""
        if self.per_voxel is None and other.per_voxel is None:
            self.n_inputs += other.n_inputs
            return
        if self.per_voxel is None:
            self.per_voxel = np.full(self.shape, self.n_inputs, np.uint32, order="F")
        self.per_voxel += (
            np.uint32(other.n_inputs) if other.per_voxel is None else conform(other.per_voxel)
        )
        self.n_inputs += other.n_inputs

    def regrid(self, move, shape: Sequence[int]) -> None:
        """Re-order onto a new reference grid."""
        self.shape = tuple(int(s) for s in shape)
        if self.per_voxel is not None:
            self.per_voxel = move(self.per_voxel)


class HeatmapAccumulator:
    """Add co-registered 3D volumes one at a time: ``S += x; n += isfinite(x)``.

    Parameters
    ----------
    reference : Reference
        The grid, header and image class of the maps (the first input's:
        :meth:`Reference.of`).
    overlap, spread : bool, default=False
        Also keep, per voxel, how many inputs are non-zero, and the spread (see
        :mod:`~nipype_heatmap.accumulate.spread`), for the cohort maps.

    Attributes
    ----------
    reference : Reference
        The maps' grid, header and image class.
    records : list of SourceRecord
        One per input, in order (path, value range, header, content hash, identity).

    Notes
    -----
    Non-finite values (NaN, +/-Inf) are missing: they add nothing and are not counted.
    Accumulators of parts of the inputs (other processes, cluster jobs) combine with
    :meth:`merge`, exactly for integer inputs.

    Examples
    --------
    >>> from nipype_heatmap.io import read_volume
    >>> first = read_volume(mask_files[0])
    >>> acc = HeatmapAccumulator(Reference.of(first))
    >>> for path in mask_files:
    ...     acc.add_file(path)
    >>> acc.n_inputs, acc.exact
    (3, True)
    """

    def __init__(self, reference: Reference, *, overlap: bool = False, spread: bool = False):
        self.reference = reference
        self.records: list[SourceRecord] = []
        self._sum = VoxelSum(reference.shape)
        self._count = FiniteCount(reference.shape)
        self._nonzero = NonzeroCount() if overlap else None
        self._spread = Spread(reference.shape) if spread else None

    @classmethod
    def restore(
        cls,
        reference: Reference,
        records: Sequence[SourceRecord],
        *,
        sum: VoxelSum,  # noqa: A002 - the name of the statistic
        count: FiniteCount,
        nonzero: NonzeroCount | None = None,
        spread: Spread | None = None,
    ) -> HeatmapAccumulator:
        """An accumulator from its parts, as a saved state holds them."""
        acc = cls(reference)
        acc.records = list(records)
        acc._sum, acc._count, acc._nonzero, acc._spread = sum, count, nonzero, spread
        return acc

    # -- what it holds ------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        """How many volumes are in the sum."""
        return len(self.records)

    @property
    def sources(self) -> list[str]:
        """The inputs' files, in order."""
        return [record.path for record in self.records]

    @property
    def shape(self) -> tuple[int, ...]:
        """The reference grid's shape."""
        return self.reference.shape

    @property
    def affine(self) -> np.ndarray:
        """The reference grid's affine."""
        return self.reference.grid.affine

    @property
    def global_range(self) -> tuple[float, float] | None:
        """Min and max over all finite input values; None when no input has one."""
        ranges = [r.value_range for r in self.records if r.value_range is not None]
        if not ranges:
            return None
        return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)

    @property
    def tracks(self) -> dict[str, bool]:
        """Which cohort statistics are kept: ``{"overlap": ..., "spread": ...}``."""
        return {"overlap": self._nonzero is not None, "spread": self._spread is not None}

    @property
    def exact(self) -> bool:
        """Whether the sum is exact (every input so far an integer volume)."""
        return self._sum.exact

    @property
    def sum(self) -> VoxelSum:
        """``S``."""
        return self._sum

    @property
    def count(self) -> FiniteCount:
        """``n``."""
        return self._count

    @property
    def nonzero(self) -> NonzeroCount | None:
        """The non-zero count, when tracked."""
        return self._nonzero

    @property
    def spread(self) -> Spread | None:
        """The spread, when tracked."""
        return self._spread

    # -- adding -------------------------------------------------------------------------
    def add(self, x: Values) -> None:
        """Add one input's values (on the reference grid: :func:`values_on_grid`)."""
        if self._spread is not None:  # before S and n change
            self._spread.add(x, self._count, self._sum)
        if self._nonzero is not None:
            self._nonzero.add(x, self._sum)
        self._sum.add(x)
        self._count.add(x)
        self.records.append(x.record)

    def add_volume(self, volume: Volume) -> None:
        """Add a read volume, checking it against the reference grid.

        Raises
        ------
        ValueError
            If the volume is not on the reference grid (up to a lossless re-ordering of its
            voxel axes); nothing is added then.
        """
        self.add(values_on_grid(volume, self.reference.grid))

    def add_file(self, path: str | os.PathLike[str]) -> None:
        """Read a NIfTI file and add it (see :meth:`add_volume`)."""
        self.add_volume(read_volume(path, digest=True))

    # -- removing -----------------------------------------------------------------------
    def remove(self, x: Values, index: int) -> None:
        """Take the input at ``index`` of :attr:`records` back out, given its values.

        Integer states stay exact; a floating-point sum changes by a subtraction, which
        may round (see :attr:`VoxelSum.rounding`). Removing the first input makes the next
        one the reference (its header and voxel order), as a recompute would.

        Raises
        ------
        ValueError
            If it is the only input left.
        """
        if self.n_inputs == 1:
            raise ValueError(
                f"{x.path}: it is the only input left; a state needs at least one "
                "(delete the state instead)"
            )
        if self._spread is not None:
            self._spread.subtract(x, self._count, self._sum)
        if self._nonzero is not None:
            self._nonzero.subtract(x, self._sum)
        self._sum.subtract(x)
        self._count.subtract(x)
        del self.records[index]
        if all(r.integer for r in self.records):  # back to exact integers, when certain
            low = sum(min(int(r.value_range[0]), 0) for r in self.records if r.value_range)
            high = sum(max(int(r.value_range[1]), 0) for r in self.records if r.value_range)
            self._sum.restore_exact(low, high)
        if index == 0:
            self._rebase(Reference.of_record(self.records[0]))

    def _rebase(self, reference: Reference) -> None:
        """Make ``reference`` the maps' reference; re-order every per-voxel array onto its
        grid when its voxel order differs."""
        old = self.reference.grid
        new = reference.grid
        if not new.matches(old.shape, old.affine):

            def move(array: np.ndarray) -> np.ndarray:
                return np.asfortranarray(new.conform(array, old.affine, old.source, "state"))

            self._sum.regrid(move)
            self._count.regrid(move, new.shape)
            if self._nonzero is not None:
                self._nonzero.regrid(move)
            if self._spread is not None:
                self._spread.regrid(move, new.shape)
        self.reference = reference

    # -- merging ------------------------------------------------------------------------
    def merge(self, other: HeatmapAccumulator) -> HeatmapAccumulator:
        """Add another accumulator's inputs after this one's, and return self.

        The result equals adding ``other``'s files to this accumulator one by one: exactly
        for integer inputs, to the rounding bound otherwise. A part on the same grid in
        another voxel order is re-ordered losslessly onto this one's, as inputs are.

        Raises
        ------
        ValueError
            If ``other`` is on a different grid, or tracks other cohort statistics.
        """
        if self.tracks != other.tracks:
            raise ValueError(
                f"{other.reference.grid.source}: the parts track different cohort statistics "
                f"({other.tracks} against {self.tracks})"
            )
        mine, theirs = self.reference.grid, other.reference.grid

        def conform(array: np.ndarray) -> np.ndarray:
            return mine.conform(array, theirs.affine, theirs.source, "partial heatmap")

        conform(np.zeros(theirs.shape, np.uint8))  # a grid error, before anything changes
        if self._spread is not None and other._spread is not None:
            self._spread.merge(
                other._spread, self._count, self._sum, other._count, other._sum, conform
            )
        if self._nonzero is not None and other._nonzero is not None:
            self._nonzero.merge(other._nonzero, self._sum, other._sum, conform)
        self._sum.merge(other._sum, conform)
        self._count.merge(other._count, conform)
        self.records.extend(other.records)
        return self

    # -- the maps ------------------------------------------------------------------------
    def aggregate(self, options, dtype: np.typing.DTypeLike = np.float64) -> np.ndarray:
        """The map: mean or sum, then clipping, then normalization (``options``:
        :class:`~nipype_heatmap.options.MapOptions`).

        Computed in float64. With ``dtype=np.float32`` (and no normalization) the mean or
        sum is rounded straight into a float32 array and clipped there with the bounds
        rounded to float32: rounding is monotonic, so this equals clipping in float64 and
        rounding afterwards, bit for bit, without a float64 volume.

        Raises
        ------
        ValueError
            If no input has been added (there is no map of nothing).
        """
        if self.n_inputs == 0:
            raise ValueError("no input volume was added; nothing to aggregate")
        work = np.dtype(np.float64) if options.normalize else np.dtype(dtype)
        result = np.empty(self.shape, dtype=work, order="F")
        total = self._sum.values
        if options.use_mean:
            # A voxel without any finite value has sum 0 and count 0: 0 / 0 is its NaN.
            with np.errstate(invalid="ignore", divide="ignore"):
                np.divide(
                    total, self._count.value, out=result, dtype=np.float64, casting="same_kind"
                )
        else:
            np.copyto(result, total, casting="same_kind")
        bounds = self.global_range
        if options.clip_to_input_range and bounds is None:
            LOGGER.warning("No finite input value anywhere: clipping skipped")
        elif options.clip_to_input_range and bounds is not None:
            low, high = np.asarray(bounds, dtype=work)  # the bounds rounded to the map's type
            np.clip(result, low, high, out=result)
        if options.normalize:
            lo, hi = finite_range(result)
            if lo is None or hi is None or lo == hi:
                LOGGER.info(
                    "Normalization skipped: the map is constant (%s)",
                    "no finite value" if lo is None else f"every finite voxel is {lo:g}",
                )
            else:
                result -= lo
                result /= hi - lo
        return result

    def map_image(self, options) -> nb.Nifti1Image:
        """The map as a float32 image with the first input's affine and header."""
        data = self.aggregate(options, dtype=np.float32).astype(np.float32, copy=False)
        return self.make_image(data, options.descrip(self.n_inputs))

    def make_image(self, data: np.ndarray, descrip: bytes) -> nb.Nifti1Image:
        """Wrap a map on the reference grid in an image with the first input's header.

        The header is a copy of the first input's, with the data type of ``data``, scaling
        cleared, ``cal_min``/``cal_max`` set to the map's finite range, ``descrip``, no
        intent and no extensions (a label or statistic intent, or an AFNI/CIFTI extension
        describing the first input's data, would tell viewers the map is something else).
        """
        header = self.reference.header.copy()
        header.set_data_dtype(data.dtype)  # the shape and cleared scaling: nibabel, below
        lo, hi = finite_range(data)
        header["cal_min"], header["cal_max"] = (lo, hi) if lo is not None else (0.0, 0.0)
        header["descrip"] = descrip[:80]
        header.set_intent("none")
        header.extensions.clear()
        return self.reference.image_class(data, self.affine, header)

    def summary(self) -> str:
        """One line on what has been accumulated, for logs."""
        return (
            f"{self.n_inputs} volume(s) on grid {self.shape}, input range "
            f"{self.global_range}, missing values: "
            f"{'yes' if self._count.per_voxel is not None else 'none'}"
        )


def finite_range(values: np.ndarray) -> tuple[float | None, float | None]:
    """Min and max of the finite values of an array; (None, None) when none is finite."""
    lo, hi = values.min(), values.max()
    if np.isfinite(lo) and np.isfinite(hi):
        return float(lo), float(hi)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None, None
    return float(finite.min()), float(finite.max())
