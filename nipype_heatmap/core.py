"""The heatmap computation: a streaming accumulator and the functions built on it.

numpy and nibabel only; no Nipype. The semantics are written in ``docs/semantics.md`` (§3-§5):
mean or sum, then clipping to the inputs' range, then min-max normalization, in float64,
written as float32 with the first input's affine and header.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import nibabel as nb
import numpy as np

from ._docs import fill_doc
from .cohort import CohortStats
from .io import (
    Grid,
    Volume,
    check_output_filename,
    find_nifti_files,
    iter_volumes,
    min_max,
    prepare_output,
    read_volume,
    same_file,
    save_atomic,
    warn_duplicates,
)
from .parallel import SlabPool, resolve_num_threads

LOGGER = logging.getLogger(__name__)

DEFAULT_OUTPUT_FILENAME = "heatmap_volume.nii.gz"

_IMAGE_CLASSES = {"Nifti1Image": nb.Nifti1Image, "Nifti2Image": nb.Nifti2Image}


@dataclass(frozen=True)
class SourceRecord:
    """What an accumulator remembers of each input, so that it can later be removed.

    Attributes
    ----------
    path : str
        Absolute path of the file.
    value_range : tuple of float or None
        The file's finite value range (after scaling); None when it has no finite value.
    header : bytes
        The file's header block, as read (its own byte order): the reference header and
        grid when this file becomes the first input.
    image_class : str
        ``"Nifti1Image"`` or ``"Nifti2Image"``.
    digest : str or None
        ``"sha256:<hex>"`` of the file's stored bytes, when it was hashed on reading.
    """

    path: str
    value_range: tuple[float, float] | None
    header: bytes | None
    image_class: str = "Nifti1Image"
    digest: str | None = None

    def load_header(self) -> nb.nifti1.Nifti1Header:
        """The header, rebuilt from its bytes (byte order detected, as on reading)."""
        if self.header is None:
            raise ValueError(f"{self.path}: its header was not recorded")
        klass = _IMAGE_CLASSES[self.image_class].header_class
        return klass.from_fileobj(io.BytesIO(self.header))


class HeatmapAccumulator:
    """Accumulate co-registered 3D volumes one at a time into a voxel-wise sum and count.

    The first volume added fixes the reference grid (shape, affine), header and image class.
    Non-finite values (NaN, +/-Inf) are missing: they add nothing to the sum and are not
    counted. Partial accumulators built apart (other processes, cluster jobs) combine
    exactly with :meth:`merge`.

    Attributes
    ----------
    n_inputs : int
        Number of volumes added.
    sources : list of str
        The files added, in order.
    records : list of SourceRecord
        What is kept of each file (range, header, content hash) to remove it later.
    total : numpy.ndarray or None
        float64 voxel-wise sum of finite values (read-only view of the state; see Notes).
    count : numpy.ndarray or None
        uint32 voxel-wise number of finite values, or None while every value added so far
        was finite (then the count is ``n_inputs`` everywhere; this saves memory and time).
    global_min, global_max : float or None
        Extremes over all finite input values (None until one has been seen).

    Notes
    -----
    While every input is an unscaled integer volume (masks, label counts), the sum is kept
    exactly in the smallest integer type that cannot overflow (uint8 for up to 255 binary
    masks), promoted as inputs arrive. The first floating-point or scaled input folds it
    once into the float64 sum, so the order of additions, and therefore every rounding, is
    that of a plain float64 loop over the same files.

    Examples
    --------
    >>> acc = HeatmapAccumulator()
    >>> for path in mask_files:
    ...     value_range = acc.add_file(path)
    >>> img = acc.finalize(use_mean=True)
    >>> img.shape, acc.n_inputs, img.get_data_dtype().name
    ((7, 8, 9), 3, 'float32')
    """

    def __init__(self, num_threads: int = 1, *, overlap: bool = False, spread: bool = False):
        self.num_threads = max(1, int(num_threads))
        self._pool: SlabPool | None = None
        self._track = {"overlap": overlap, "spread": spread}
        self.stats: CohortStats | None = None  # cohort statistics, when tracked
        self.n_inputs = 0
        self.records: list[SourceRecord] = []
        self._float_total: np.ndarray | None = None
        self._int_total: np.ndarray | None = None
        self._int_bounds = (0, 0)  # bounds of any voxel's integer sum, as Python ints
        self.count: np.ndarray | None = None
        self.global_min: float | None = None
        self.global_max: float | None = None
        self.grid: Grid | None = None
        self.ref_header: nb.nifti1.Nifti1Header | None = None
        self.image_class: type = nb.Nifti1Image

    @property
    def sources(self) -> list[str]:
        """The files added, in order."""
        return [record.path for record in self.records]

    @property
    def ref_shape(self) -> tuple[int, int, int] | None:
        """Shape of the reference grid (None before the first volume)."""
        return None if self.grid is None else self.grid.shape

    @property
    def ref_affine(self) -> np.ndarray | None:
        """Affine of the reference grid (None before the first volume)."""
        return None if self.grid is None else self.grid.affine

    @property
    def ref_path(self) -> str | None:
        """The file that set the reference grid and header (None before the first volume)."""
        return None if self.grid is None else self.grid.source

    @classmethod
    def from_parts(
        cls,
        *,
        total: np.ndarray,
        count: np.ndarray | None,
        records: Sequence[SourceRecord],
        global_range: tuple[float, float] | None,
        ref_affine: np.ndarray,
        ref_header: nb.nifti1.Nifti1Header,
        image_class: type = nb.Nifti1Image,
        stats: CohortStats | None = None,
    ) -> HeatmapAccumulator:
        """Rebuild an accumulator from its parts (a saved partial heatmap).

        ``total`` may be a read-only view; it is copied only if more is added to it. An
        integer ``total`` (the exact sum of integer inputs, whose ``records`` all carry
        their value ranges) continues as an exact integer sum, as if the files had been
        added here.
        """
        acc = cls()
        acc.n_inputs = len(records)
        acc.records = list(records)
        if total.dtype.kind in "iu":  # an integer state: continue exactly, as a recompute
            low = sum(min(int(r.value_range[0]), 0) for r in records)  # type: ignore[index]
            high = sum(max(int(r.value_range[1]), 0) for r in records)  # type: ignore[index]
            acc._int_total = total.astype(_int_sum_dtype(low, high), order="F")
            acc._int_bounds = (low, high)
        else:
            acc._float_total = total
        acc.count = count
        if global_range is not None:
            acc.global_min, acc.global_max = global_range
        acc.grid = Grid(tuple(total.shape), ref_affine, acc.records[0].path)  # type: ignore[arg-type]
        acc.ref_header = ref_header
        acc.image_class = image_class
        acc.stats = stats
        if stats is not None:
            acc._track = {"overlap": stats.overlap, "spread": stats.spread}
        return acc

    # -- adding -------------------------------------------------------------------------
    def add_file(self, path: str | os.PathLike[str]) -> tuple[float, float]:
        """Load one NIfTI file, check it against the reference grid and add it.

        Returns
        -------
        tuple of float
            The file's finite value range (NaN, NaN when it has no finite value).

        Raises
        ------
        ValueError
            If the file cannot be read, is not 3D, or is not on the reference grid.
        """
        return self.add_volume(read_volume(path))

    def add_volume(self, volume: Volume) -> tuple[float, float]:
        """Add a loaded volume, checking it against the reference grid (set by the first).

        Returns the volume's finite value range, as :meth:`add_file`. The voxel-wise work
        runs on ``num_threads`` threads, one slab of the grid each (see
        :mod:`nipype_heatmap.parallel`): every voxel gets the same operations, in the same
        order, as with one thread.
        """
        if self.grid is None:
            self._set_reference(volume)
        values_of, kind, lo, hi = self._values(volume)
        summed = False  # whether the cohort statistics added the volume to the sum
        if self.stats is not None:  # before the sum and count change
            summed = self.stats.add(
                values_of,
                self._slab_pool(),
                kind=kind,
                lo=lo,
                hi=hi,
                n_before=self.count if self.count is not None else self.n_inputs,
                s1_before=self._total_or_zeros,
                float_total=self._float_sum,
            )
        complete = True  # every voxel has a finite value
        if kind in "biu" or (np.isfinite(lo) and np.isfinite(hi)):
            if summed:
                pass
            elif kind in "biu":  # integers are always finite
                self._add_integers(values_of, int(lo), int(hi), self._sparse(volume))
            else:
                self._add_floats(values_of)
        else:
            lo, hi = self._add_with_missing(values_of, volume.path, add_sum=not summed)
            complete = False
        if complete and self.count is not None:
            count = self.count
            self._slab_pool().map(lambda i, s: np.add(count[s], np.uint32(1), out=count[s]))
        return self._record(volume, lo, hi)

    def _record(self, volume: Volume, lo: float, hi: float) -> tuple[float, float]:
        """Count an added volume in: its range into the global one, and its record."""
        if np.isfinite(lo):
            self._update_range(float(lo), float(hi))
        self.n_inputs += 1
        self.records.append(
            SourceRecord(
                volume.path,
                (float(lo), float(hi)) if np.isfinite(lo) else None,
                bytes(volume.header.binaryblock),
                volume.image_class.__name__,
                volume.digest,
            )
        )
        return float(lo), float(hi)

    def pairs_volumes(self) -> bool:
        """Whether :meth:`add_volume_pair` may add two volumes in one pass (given that both
        have a finite value at every voxel): the spread is in Welford's form and every
        voxel has had a value in every input so far."""
        return (
            self.grid is not None
            and self.count is None
            and self.stats is not None
            and self.stats.pairs()
        )

    def add_volume_pair(self, first: Volume, second: Volume) -> list[tuple[float, float]]:
        """Add two loaded volumes, in order: the same as :meth:`add_volume` on each.

        When :meth:`pairs_volumes` holds and both have a finite value at every voxel, the
        sum and the spread take both in one pass (see
        :meth:`~nipype_heatmap.cohort.CohortStats.add_pair`: the same sum, the spread to
        float64 round-off); otherwise, or if the second cannot be added (wrong grid...), one
        after the other. Returns each one's finite value range.
        """
        if not self.pairs_volumes():
            return [self.add_volume(first), self.add_volume(second)]
        values_a, _, lo_a, hi_a = self._values(first)
        try:
            values_b, _, lo_b, hi_b = self._values(second)
        except ValueError:  # the first goes in, then the second's error, as one by one
            self.add_volume(first)
            raise
        if not all(np.isfinite(v) for v in (lo_a, hi_a, lo_b, hi_b)):
            return [self.add_volume(first), self.add_volume(second)]
        assert self.stats is not None
        self.stats.add_pair(
            values_a, values_b, self._slab_pool(), n_before=self.n_inputs, total=self._float_sum()
        )
        return [self._record(first, lo_a, hi_a), self._record(second, lo_b, hi_b)]

    def _sparse(self, volume: Volume) -> tuple[np.ndarray, np.ndarray] | None:
        """The non-zero voxels the reader listed, when they can be added as they are: an
        unscaled volume already in the reference grid's voxel order."""
        index = volume.nonzero_index
        if index is None or volume.slope is not None or self.grid is None:
            return None
        if not self.grid.matches(volume.shape, volume.affine):
            return None  # re-ordered onto the grid: the listed positions do not apply
        return index, volume.data.reshape(-1, order="F")[index]

    def _values(self, volume: Volume):
        """The volume's values on the reference grid, slab by slab, with their kind and
        range: ``(values_of(index, slab), kind, lo, hi)``; lo, hi are NaN if a value is."""
        assert self.grid is not None
        data = self.grid.conform(volume.data, volume.affine, volume.path)
        pool = self._slab_pool()
        parts = None  # the scaled values of each slab, for a scaled volume
        if volume.slope is None and volume.value_range is not None:
            lo, hi = volume.value_range  # computed by the reader thread
        elif volume.slope is None:
            lo, hi = _combined_range(pool.map(lambda i, s: min_max(data[s])))
        else:
            scaled = pool.map(lambda i, s: _scaled_with_range(data[s], volume.slope, volume.inter))
            parts = [values for values, _, _ in scaled]
            lo, hi = _combined_range([(a, b) for _, a, b in scaled])

        def values_of(index: int, slab: tuple[slice, ...]) -> np.ndarray:
            return data[slab] if parts is None else parts[index]

        kind = data.dtype.kind if parts is None else parts[0].dtype.kind
        return values_of, kind, lo, hi

    # -- removing -----------------------------------------------------------------------
    def remove_volume(self, volume: Volume, index: int | None = None) -> None:
        """Take a volume that was added back out, exactly (see :meth:`remove_file`).

        ``index`` is its position among :attr:`records` (default: the last record of its
        path). Its content hash must equal the recorded one.

        Raises
        ------
        ValueError
            If the file is not among the inputs, was not hashed when added, has changed
            since, or is the only input left.
        """
        index = self._record_index(volume.path) if index is None else index
        record = self.records[index]
        if record.digest is None:
            raise ValueError(
                f"{volume.path}: no content hash was recorded when it was added, so it cannot "
                "be checked; rebuild the state with this version"
            )
        if volume.digest != record.digest:
            raise ValueError(
                f"{volume.path}: the file has changed since it was added (content hash "
                f"{volume.digest} is not the recorded {record.digest}); removing it would "
                "subtract other values than were added. Restore the original file or "
                "recompute the map"
            )
        if self.n_inputs == 1:
            raise ValueError(
                f"{volume.path}: it is the only input left; a state needs at least one "
                "(delete the state instead)"
            )
        values_of, kind, lo, hi = self._values(volume)
        pool = self._slab_pool()
        n_now = self.count if self.count is not None else self.n_inputs
        if self.stats is not None:  # before the sum and count change
            self.stats.remove(
                values_of, pool, kind=kind, lo=lo, hi=hi, n_now=n_now, s1_now=self._float_sum
            )
        complete = kind in "biu" or (np.isfinite(lo) and np.isfinite(hi))
        if self._int_total is not None and kind in "biu":
            int_total = self._int_total  # any subset's sum stays within the bounds
            pool.map(
                lambda i, s: np.subtract(
                    int_total[s], values_of(i, s), out=int_total[s], casting="unsafe"
                )
            )
        else:
            total = self._float_sum()
            if complete:
                pool.map(lambda i, s: np.subtract(total[s], values_of(i, s), out=total[s]))
            else:

                def subtract(i: int, s: tuple[slice, ...]) -> None:
                    values = values_of(i, s)
                    np.subtract(total[s], values, out=total[s], where=np.isfinite(values))

                pool.map(subtract)
        if self.count is not None:
            count = self.count
            if complete:
                pool.map(lambda i, s: np.subtract(count[s], np.uint32(1), out=count[s]))
            else:
                pool.map(
                    lambda i, s: np.subtract(
                        count[s], np.isfinite(values_of(i, s)), out=count[s], casting="unsafe"
                    )
                )
        del self.records[index]
        self.n_inputs -= 1
        ranges = [r.value_range for r in self.records if r.value_range is not None]
        self.global_min = min(lo for lo, _ in ranges) if ranges else None
        self.global_max = max(hi for _, hi in ranges) if ranges else None
        if index == 0:
            self._rebase(self.records[0])

    def remove_file(self, path: str | os.PathLike[str]) -> None:
        """Read a file that was added and take it back out of the sums and counts.

        The result equals accumulating the remaining files in their order: bit for bit
        while every input that was ever added is an unscaled integer volume (sums and
        counts are exact integers), and to float64 round-off once a floating-point volume
        has been in the sum (subtracting it again rounds as adding did). The file's content
        hash, recorded when it was added, must match: a file that changed since is refused.
        When the first input is removed, the next one becomes the reference: its header
        (recorded when it was added) and its voxel order, as a recompute would have.

        Raises
        ------
        ValueError
            As :meth:`remove_volume`; or the file cannot be read.
        """
        path = os.path.abspath(os.fspath(path))
        index = self._record_index(path)  # before reading anything
        self.remove_volume(read_volume(path, digest=True), index)

    def remove_file_at(self, index: int) -> None:
        """Remove the input at ``index`` of :attr:`records`, read again from its path."""
        self.remove_volume(read_volume(self.records[index].path, digest=True), index)

    def _record_index(self, path: str) -> int:
        for index in range(len(self.records) - 1, -1, -1):
            if self.records[index].path == path:
                return index
        raise ValueError(
            f"{path}: not among the {self.n_inputs} input(s) of this state; nothing to remove "
            "(files are matched by absolute path)"
        )

    def _rebase(self, record: SourceRecord) -> None:
        """Make ``record``'s file the reference: its header, class and voxel order."""
        assert self.grid is not None
        header = record.load_header()
        shape = tuple(int(n) for n in header.get_data_shape()[:3])
        new_grid = Grid(shape, header.get_best_affine(), record.path)  # type: ignore[arg-type]
        old = self.grid

        def move(array: np.ndarray | None) -> np.ndarray | None:
            if array is None:
                return None
            return np.asfortranarray(new_grid.conform(array, old.affine, old.source, "state"))

        if not new_grid.matches(old.shape, old.affine):
            self._int_total = move(self._int_total)
            self._float_total = move(self._float_total)
            self.count = move(self.count)
            if self.stats is not None:
                self.stats.regrid(move)
            self.close()  # slabs follow the new shape
        self.grid = new_grid
        self.ref_header = header
        self.image_class = _IMAGE_CLASSES[record.image_class]

    def _total_or_zeros(self) -> np.ndarray:
        total = self.total
        return total if total is not None else np.zeros(self.ref_shape, order="F")

    def _slab_pool(self) -> SlabPool:
        if self._pool is None:
            assert self.ref_shape is not None
            self._pool = SlabPool(self.ref_shape, self.num_threads)
        return self._pool

    def close(self) -> None:
        """Stop the accumulator's worker threads (they restart if more is added)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _set_reference(self, volume: Volume) -> None:
        self.grid = Grid(volume.shape, volume.affine, volume.path)  # type: ignore[arg-type]
        if any(self._track.values()):
            self.stats = CohortStats(volume.shape, **self._track)
        self.ref_header = volume.header.copy()
        self.image_class = volume.image_class

    @property
    def total(self) -> np.ndarray | None:
        """The float64 voxel-wise sum of finite values (None before the first volume)."""
        if self._int_total is not None:
            return self._int_total.astype(np.float64, order="F")
        return self._float_total

    def integer_bounds(self) -> tuple[int, int] | None:
        """Bounds of every voxel's exact integer sum, or None once the sum is float64."""
        return self._int_bounds if self._float_total is None else None

    @property
    def integer_total(self) -> np.ndarray | None:
        """The exact integer sum while every input was an unscaled integer volume, else
        None (read-only use: it is the state itself)."""
        return self._int_total

    def _float_sum(self) -> np.ndarray:
        """Return the float64 sum to add into, folding the exact integer sum into it once."""
        if self._float_total is not None and not self._float_total.flags.writeable:
            self._float_total = np.array(self._float_total, order="F")  # a loaded view
        if self._float_total is None:
            if self._int_total is not None:
                self._float_total = self._int_total.astype(np.float64, order="F")
                self._int_total = None
            else:
                self._float_total = np.zeros(self.ref_shape, dtype=np.float64, order="F")
        return self._float_total

    def _add_with_missing(self, values_of, source: str, *, add_sum: bool) -> tuple[float, float]:
        """Add the finite values only (unless ``add_sum`` is False: the cohort statistics
        did) and count them; return their range."""
        if self.count is None:
            self.count = np.full(self.ref_shape, self.n_inputs, dtype=np.uint32, order="F")
        total, count = self._float_sum(), self.count

        def add(index: int, slab: tuple[slice, ...]) -> tuple[int, float, float]:
            values = values_of(index, slab)
            finite = np.isfinite(values)
            if add_sum:
                np.add(total[slab], values, out=total[slab], where=finite)
            np.add(count[slab], finite, out=count[slab], casting="unsafe")
            n_finite = int(np.count_nonzero(finite))
            lo, hi = min_max(values[finite]) if n_finite else (np.nan, np.nan)
            return n_finite, lo, hi

        results = self._slab_pool().map(add)
        n_finite = sum(n for n, _, _ in results)
        n_voxels = int(np.prod(self.ref_shape))
        LOGGER.info(
            "%s: %d voxel(s) are NaN or infinite and count as missing",
            source,
            n_voxels - n_finite,
        )
        ranges = [(lo, hi) for n, lo, hi in results if n]
        return _combined_range(ranges) if ranges else (np.nan, np.nan)

    def _add_floats(self, values_of) -> None:
        """Add complete values into the float64 sum, slab by slab."""
        total = self._float_sum()
        self._slab_pool().map(lambda i, s: np.add(total[s], values_of(i, s), out=total[s]))

    def _add_integers(self, values_of, lo: int, hi: int, sparse=None) -> None:
        """Add an integer volume to the exact integer sum (``sparse``: its non-zero voxels
        as flat Fortran-order indices and values, when the reader found few)."""
        if self._float_total is not None:  # a float input came first: stay in float64
            self._add_floats(values_of)
            return
        low, high = self._int_bounds[0] + min(lo, 0), self._int_bounds[1] + max(hi, 0)
        dtype = _int_sum_dtype(low, high)
        if self._int_total is not None:
            dtype = np.promote_types(self._int_total.dtype, dtype)
        if dtype.kind not in "iu":  # beyond exact float64 integers: continue as the loop does
            self._add_floats(values_of)
            return
        if self._int_total is None:
            self._int_total = np.zeros(self.ref_shape, dtype=dtype, order="F")
        elif self._int_total.dtype != dtype:
            self._int_total = self._int_total.astype(dtype, order="F")
        # The bounds prove that no voxel's sum leaves the range of ``dtype``. A narrow
        # integer add (masks) is too quick to pay for handing slabs to other threads: the
        # reader threads, inflating the next files, have the cores.
        int_total = self._int_total
        if sparse is not None:  # only the non-zero voxels: the others add nothing
            index, values = sparse
            flat = int_total.reshape(-1, order="F")  # a view: the sum is Fortran-ordered
            flat[index] += values.astype(dtype, copy=False)
        else:
            pool = self._slab_pool() if dtype.itemsize >= 4 else SlabPool(self.ref_shape, 1)
            pool.map(
                lambda i, s: np.add(
                    int_total[s], values_of(i, s), out=int_total[s], casting="unsafe"
                )
            )
        self._int_bounds = (low, high)

    def _update_range(self, lo: float, hi: float) -> None:
        self.global_min = lo if self.global_min is None else min(self.global_min, lo)
        self.global_max = hi if self.global_max is None else max(self.global_max, hi)

    # -- merging ------------------------------------------------------------------------
    def merge(self, other: HeatmapAccumulator) -> HeatmapAccumulator:
        """Add another accumulator's volumes to this one, exactly, and return self.

        The result equals adding ``other``'s files to this accumulator one by one (sums are
        float64, so it agrees to the last bit whenever the partial sums are exact, as for
        masks and counts, and to float64 round-off otherwise).

        A part on the same grid in another voxel order (its first file flipped or permuted)
        is re-ordered losslessly onto this one's, as inputs are.

        Raises
        ------
        ValueError
            If ``other`` is on a different grid (shape or affine).
        """
        if other.n_inputs == 0:
            return self
        if self.n_inputs == 0:
            threads = self.num_threads
            state = {k: v for k, v in vars(other).items() if k != "_pool"}
            self.__dict__.update(copy.deepcopy(state))
            self.num_threads, self._pool = threads, None
            return self
        assert self.grid is not None and other.grid is not None

        def conform(array: np.ndarray) -> np.ndarray:
            # A part whose first file had flipped or permuted axes on the same grid is
            # re-ordered losslessly, exactly as such an input is; any other grid is an error.
            return self.grid.conform(
                array, other.grid.affine, other.grid.source, "partial heatmap"
            )

        # Both sums exact integers whose total stays exact: add them as integers.
        mine, theirs = self.integer_bounds(), other.integer_bounds()
        int_dtype = None
        if mine is not None and theirs is not None:
            if self._int_total is not None and other._int_total is not None:
                wanted = _int_sum_dtype(mine[0] + theirs[0], mine[1] + theirs[1])
                if wanted.kind in "iu":
                    int_dtype = np.promote_types(wanted, self._int_total.dtype)
        other_sum = conform(other._int_total if int_dtype is not None else other.total)
        other_count = None if other.count is None else conform(other.count)
        if self.stats is not None or other.stats is not None:
            if self.stats is None or other.stats is None:
                raise ValueError(
                    f"{other.ref_path}: partial heatmaps track different cohort statistics"
                )
            self.stats.merge(
                other.stats,
                n_self=self.count if self.count is not None else self.n_inputs,
                n_other=other.count if other.count is not None else other.n_inputs,
                s1_self=self.total,
                s1_other=other.total,
                conform=conform,
            )
        if self.count is None and other_count is not None:
            self.count = np.full(self.ref_shape, self.n_inputs, dtype=np.uint32, order="F")
        if self.count is not None:
            self.count += other_count if other_count is not None else np.uint32(other.n_inputs)
        if int_dtype is not None:
            self._int_total = np.add(
                self._int_total, other_sum, dtype=int_dtype, order="F", casting="unsafe"
            )
            self._int_bounds = (mine[0] + theirs[0], mine[1] + theirs[1])  # type: ignore[index]
        else:
            total = self._float_sum()
            np.add(total, other_sum, out=total)
        if other.global_min is not None:
            self._update_range(other.global_min, other.global_max)  # type: ignore[arg-type]
        self.n_inputs += other.n_inputs
        self.records.extend(other.records)
        return self

    # -- finishing ----------------------------------------------------------------------
    def aggregate(
        self,
        use_mean: bool = True,
        clip_to_input_range: bool = True,
        normalize: bool = False,
        dtype: np.typing.DTypeLike = np.float64,
    ) -> np.ndarray:
        """Return the map: mean or sum, then clipping, then normalization.

        Everything is computed in float64. With ``dtype=np.float32`` (and no normalization)
        the float64 mean or sum is rounded straight into a float32 array and clipped there
        with float32-rounded bounds; rounding is monotonic, so this equals clipping in
        float64 and rounding afterwards, bit for bit, without a float64 temporary.

        Raises
        ------
        ValueError
            If nothing has been added.
        """
        if self.n_inputs == 0 or self.ref_shape is None:
            raise ValueError("no input volume was added; nothing to aggregate")
        source = self._int_total if self._int_total is not None else self._float_total
        work = np.dtype(np.float64) if normalize else np.dtype(dtype)
        result = np.empty(self.ref_shape, dtype=work, order="F")
        bounds = None  # of the clipping, if any
        if clip_to_input_range and self.global_min is None:
            LOGGER.warning("No finite input value anywhere: clipping skipped")
        elif clip_to_input_range:
            bounds = (work.type(self.global_min), work.type(self.global_max))

        def mean_or_sum(index: int, slab: tuple[slice, ...]) -> None:
            # Element by element, so the slabs (on the job's threads) give the same bits.
            out = result[slab]
            if use_mean:
                denominator = self.n_inputs if self.count is None else self.count[slab]
                # A voxel without any finite value has sum 0 and count 0: 0 / 0 is its NaN.
                with np.errstate(invalid="ignore", divide="ignore"):
                    np.divide(
                        source[slab], denominator, out=out, dtype=np.float64, casting="same_kind"
                    )
            else:
                np.copyto(out, source[slab], casting="same_kind")
            if bounds is not None:
                np.clip(out, *bounds, out=out)

        with SlabPool(self.ref_shape, self.num_threads) as pool:
            pool.map(mean_or_sum)
        if normalize:
            lo, hi = _finite_range(result)
            if lo is None or lo == hi:
                LOGGER.info(
                    "Normalization skipped: the map is constant (%s)",
                    "no finite value" if lo is None else f"every finite voxel is {lo:g}",
                )
            else:
                result -= lo
                result /= hi - lo
        return result

    def finalize(
        self,
        use_mean: bool = True,
        clip_to_input_range: bool = True,
        normalize: bool = False,
    ) -> nb.Nifti1Image:
        """Return the heatmap as a float32 image with the first input's affine and header.

        The header is a copy of the first input's, with data type float32, scaling cleared,
        ``cal_min``/``cal_max`` set to the map's finite range, a 3D ``dim`` and a ``descrip``
        saying what was made.
        """
        result = self.aggregate(use_mean, clip_to_input_range, normalize, dtype=np.float32).astype(
            np.float32, copy=False
        )
        return self.make_image(
            result, describe(self.n_inputs, use_mean, clip_to_input_range, normalize)
        )

    def make_image(self, data: np.ndarray, descrip: bytes) -> nb.Nifti1Image:
        """Wrap a map on the reference grid in an image with the first input's header.

        The header is a copy of the first input's, with the data type of ``data``, scaling
        cleared, ``cal_min``/``cal_max`` set to the map's finite range, ``descrip``, no
        intent and no extensions.
        """
        assert self.ref_header is not None
        header = self.ref_header.copy()
        header.set_data_dtype(data.dtype)  # the shape and cleared scaling: nibabel, below
        lo, hi = _finite_range(data)
        header["cal_min"], header["cal_max"] = (lo, hi) if lo is not None else (0.0, 0.0)
        header["descrip"] = descrip[:80]
        # A label or statistic intent, or an extension describing the first input's data
        # (AFNI, CIFTI...), would tell viewers the map is something it is not.
        header.set_intent("none")
        header.extensions.clear()
        return self.image_class(data, self.ref_affine, header)

    def summary(self) -> str:
        """One line on what has been accumulated, for logs."""
        return (
            f"{self.n_inputs} volume(s) on grid {self.ref_shape}, input range "
            f"[{self.global_min}, {self.global_max}], "
            f"missing values: {'yes' if self.count is not None else 'none'}"
        )


def describe(n_inputs: int, use_mean: bool, clip_to_input_range: bool, normalize: bool) -> bytes:
    """Return the ``descrip`` header text (at most 80 bytes) for a heatmap."""
    text = f"nipype_heatmap {'mean' if use_mean else 'sum'} of {n_inputs} volumes"
    flags = [f for f, on in (("clipped", clip_to_input_range), ("normalized", normalize)) if on]
    if flags:
        text += " (" + ", ".join(flags) + ")"
    return text.encode("ascii")[:80]


def _scaled(data: np.ndarray, slope: float | None, inter: float | None) -> np.ndarray:
    """Apply scl_slope/scl_inter in float64, as nibabel's get_fdata does."""
    if slope is None:
        return data
    values = data.astype(np.float64)
    if slope != 1.0:
        values *= slope
    if inter:
        values += inter
    return values


_INT_SUM_TYPES = tuple(
    np.dtype(t) for t in ("uint8", "uint16", "uint32", "int16", "int32", "int64")
)

#: Integer sums are kept exactly only while every partial sum is an integer that float64
#: represents exactly; beyond it the plain float64 loop rounds, and so must we.
_EXACT_FLOAT_INT = 2**53


def _int_sum_dtype(low: int, high: int) -> np.dtype:
    """Smallest integer type holding every value in ``[low, high]``.

    float64 when the bounds leave ``[-2**53, 2**53]``: past that, a float64 loop rounds
    (and an integer sum could even wrap), so the sum continues in float64 as the loop does.
    """
    if low < -_EXACT_FLOAT_INT or high > _EXACT_FLOAT_INT:
        return np.dtype(np.float64)
    for dtype in _INT_SUM_TYPES:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return dtype
    return np.dtype(np.float64)


def _scaled_with_range(
    data: np.ndarray, slope: float | None, inter: float | None
) -> tuple[np.ndarray, float, float]:
    """Scaled values of a slab and their range (NaN, NaN if a NaN is among them)."""
    values = _scaled(data, slope, inter)
    lo, hi = min_max(values)
    return values, lo, hi


def _combined_range(ranges: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Range of slab ranges; a NaN in any makes both NaN, as ``min_max`` of the whole."""
    if any(lo != lo or hi != hi for lo, hi in ranges):  # NaN is the one value != itself
        return np.nan, np.nan
    return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)


def _finite_range(values: np.ndarray) -> tuple[float | None, float | None]:
    lo, hi = min_max(values)
    if np.isfinite(lo) and np.isfinite(hi):
        return float(lo), float(hi)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None, None
    return float(finite.min()), float(finite.max())


@fill_doc
def compute_heatmap(
    in_files: Sequence[str | os.PathLike[str]],
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    debug: bool = False,
    *,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> nb.Nifti1Image:
    """Compute the heatmap of an explicit list of files, without writing it.

    Parameters
    ----------
    %(in_files)s
    %(use_mean)s
    %(clip_to_input_range)s
    %(normalize)s
    %(debug)s
    %(progress)s
    %(num_threads)s

    Returns
    -------
    nibabel.Nifti1Image
        float32 heatmap (a ``Nifti2Image`` when the first input is NIfTI-2).

    Raises
    ------
    ValueError
        If ``in_files`` is empty, or an input cannot be read, is not 3D or is not on the
        first file's grid (the message names the file).
    FileNotFoundError
        If an input does not exist.
    """
    files = [os.path.abspath(os.fspath(f)) for f in in_files]
    if not files:
        raise ValueError("no input file given; pass at least one 3D NIfTI file")
    warn_duplicates(files)
    acc = accumulate_files(files, debug=debug, progress=progress, num_threads=num_threads)
    img = acc.finalize(use_mean, clip_to_input_range, normalize)
    if debug:
        data = np.asanyarray(img.dataobj)
        lo, hi = _finite_range(data)
        LOGGER.info(
            "%s; output %s range [%s, %s], %d non-zero voxel(s)",
            acc.summary(),
            "mean" if use_mean else "sum",
            lo,
            hi,
            int(np.count_nonzero(np.nan_to_num(data))),
        )
    return img


@fill_doc
def accumulate_files(
    files: Iterable[str],
    *,
    debug: bool = False,
    progress: bool | None = None,
    num_threads: int | None = None,
    read_ahead: int | None = None,
    overlap: bool = False,
    spread: bool = False,
    digests: bool = False,
    acc: HeatmapAccumulator | None = None,
    volumes: Iterable[Volume] | None = None,
) -> HeatmapAccumulator:
    """Add files to a new accumulator in order, reading ahead on other threads.

    Parameters
    ----------
    files : iterable of str
        The files, in order.
    debug : bool, default=False
        Log each file's value range at INFO level (else DEBUG).
    progress : bool or None, default=None
        tqdm progress bar on stderr; None shows it only on a terminal.
    %(num_threads)s
    read_ahead : int, optional
        How many files to read and inflate ahead of the one being added (0: none);
        default: the number of threads, at least 2.
    overlap, spread : bool, default=False
        Also track the per-voxel count of non-zero inputs and the spread (see
        :mod:`nipype_heatmap.cohort`).
    digests : bool, default=False
        Record each file's content hash, so that it can be removed again
        (:meth:`HeatmapAccumulator.remove_file`); a saved state needs them.
    acc : HeatmapAccumulator, optional
        Add to this accumulator (a loaded state) instead of a new one; ``overlap`` and
        ``spread`` are then its own.
    volumes : iterable of Volume, optional
        The volumes of ``files``, already being read (:func:`~nipype_heatmap.io.iter_volumes`),
        instead of reading them here.

    Returns
    -------
    HeatmapAccumulator

    Notes
    -----
    Memory: at most ``read_ahead + 2`` input volumes as stored (one more than read ahead
    waits for a second float map to go in with, when the spread is tracked), plus, for
    scaled inputs, a float64 copy of each volume being added; the float64 sum, and a uint32
    count once an input has a missing value; it does not grow with the number of files.
    """
    files = list(files)
    threads = resolve_num_threads(num_threads)
    ahead = max(2, threads) if read_ahead is None else read_ahead
    if acc is None:
        acc = HeatmapAccumulator(num_threads=threads, overlap=overlap, spread=spread)
    else:
        acc.close()
        acc.num_threads = threads
    level = logging.INFO if debug else logging.DEBUG
    if volumes is None:
        volumes = iter_volumes(files, read_ahead=ahead, workers=threads, digest=digests)
    try:
        with _progress_bar(len(files), progress) as bar:

            def added(ranges: list[tuple[float, float]]) -> None:
                for record, (lo, hi) in zip(acc.records[-len(ranges) :], ranges, strict=True):
                    LOGGER.log(level, "%s: finite value range [%g, %g]", record.path, lo, hi)
                bar.update(len(ranges))

            held: Volume | None = None  # a float map waiting for a second one to pair with
            for volume in volumes:
                if held is None and acc.pairs_volumes():
                    held = volume
                    continue
                added(
                    [acc.add_volume(volume)] if held is None else acc.add_volume_pair(held, volume)
                )
                held = volume = None
            if held is not None:
                added([acc.add_volume(held)])
    finally:
        acc.close()
    return acc


def _progress_bar(total: int, progress: bool | None):
    """A tqdm bar on stderr, or a no-op (tqdm is not even imported) when none is shown."""
    if progress is None:
        progress = sys.stderr is not None and sys.stderr.isatty()
    if not progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="heatmap", unit="vol", file=sys.stderr)


class _NoBar:
    """Stands in for a tqdm bar that is not shown."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        """Do nothing."""


@fill_doc
def write_heatmap(
    in_files: Sequence[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    debug: bool = False,
    *,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> str:
    """Compute the heatmap of an explicit list of files and write it atomically.

    The output location is checked for writability before any input is read; the file is
    replaced only after full success, and a failure leaves no partial file.

    Parameters
    ----------
    %(in_files)s
    out_file : str or os.PathLike
        Where to write; the name must end in ``.nii`` or ``.nii.gz`` (gzip for ``.gz``).
        Missing parent folders are created.
    use_mean, clip_to_input_range, normalize, debug, progress, num_threads
        As in :func:`compute_heatmap`.

    Returns
    -------
    str
        The absolute path of the written heatmap.

    Raises
    ------
    OSError
        If the output location is not writable (raised before any input is read).
    ValueError
        As in :func:`compute_heatmap`, or if ``out_file`` is one of the inputs.
    """
    out_file = prepare_output(out_file)
    _refuse_output_among_inputs(in_files, [out_file])
    img = compute_heatmap(
        in_files,
        use_mean,
        clip_to_input_range,
        normalize,
        debug,
        progress=progress,
        num_threads=num_threads,
    )
    save_atomic(img, out_file, num_threads=resolve_num_threads(num_threads))
    LOGGER.info("Wrote %s", out_file)
    return out_file


def _refuse_output_among_inputs(
    in_files: Sequence[str | os.PathLike[str]], out_files: Sequence[str]
) -> None:
    """Raise ValueError if an output is one of the inputs (by identity)."""
    for path in in_files:
        for out_file in out_files:
            if same_file(path, out_file):
                raise ValueError(
                    f"{out_file}: the output would overwrite one of the inputs; "
                    "choose another output name or folder"
                )


@fill_doc
def generate_heatmap_volume(
    nii_folder: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    output_filename: str = DEFAULT_OUTPUT_FILENAME,
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    debug: bool = False,
    *,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> str:
    """Make the voxel-wise mean or sum of all 3D NIfTI files in a folder and save it.

    Parameters
    ----------
    nii_folder : str or os.PathLike
        Folder whose ``*.nii``/``*.nii.gz`` files (not recursive, hidden files skipped) are
        the inputs, taken in byte order of their names.
    output_path : str or os.PathLike
        Folder to write into; created with parents. It may be ``nii_folder`` itself: the
        output file is then never taken as an input.
    %(output_filename)s
    %(use_mean)s
    %(clip_to_input_range)s
    %(normalize)s
    %(debug)s
    %(progress)s
    %(num_threads)s

    Returns
    -------
    str
        Absolute path of the written heatmap.

    Raises
    ------
    FileNotFoundError
        If ``nii_folder`` is missing, not a folder, or holds no NIfTI file.
    ValueError
        If ``output_filename`` is not a bare NIfTI name, or an input cannot be read, is not
        3D, or is not on the first file's grid (the message names the file).
    OSError
        If the output location is not writable (checked before any input is read).

    Examples
    --------
    >>> from nipype_heatmap import generate_heatmap_volume
    >>> out = generate_heatmap_volume("lesion_masks", "derivatives",
    ...                               "lesion_overlap.nii.gz", use_mean=False,
    ...                               clip_to_input_range=False)
    >>> out  # doctest: +ELLIPSIS
    '.../derivatives/lesion_overlap.nii.gz'
    """
    check_output_filename(output_filename)
    out_file = prepare_output(os.path.join(os.fspath(output_path), output_filename))
    files = find_nifti_files(nii_folder, exclude=out_file)
    LOGGER.info(
        "%s %d volume(s) from %s into %s",
        "Averaging" if use_mean else "Summing",
        len(files),
        nii_folder,
        out_file,
    )
    return write_heatmap(
        files,
        out_file,
        use_mean,
        clip_to_input_range,
        normalize,
        debug,
        progress=progress,
        num_threads=num_threads,
    )
