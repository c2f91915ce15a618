"""Probabilistic atlases from label images: exact per-label counts in one pass.

N label images (segmentations, parcellations, annotators' label maps) on one grid go in;
for every label that occurs in any input (the union, not the first file's labels), the
accumulator counts at each voxel how many inputs have that label. The probability of a
label is its count over N.

The accumulator keeps, per label, an exact integer count volume over that label's bounding
box only (uint16 until 65,535 inputs, then uint32), so memory follows what the labels
occupy, not ``labels x grid`` (an aseg-like atlas of 100 labels at 1 mm: about 30 MB of
counts instead of gigabytes), and does not grow with N. Adding an input is, per label,
``box += (data[box] == label)``: a vectorized pass over the box. If the voxels found in
the boxes do not add up to the input's foreground, some label is new or reaches outside
its box: those stray voxels are found in one pass, and only their labels' boxes grow (by
the strays' extent plus a margin of :data:`_BOX_MARGIN` voxels, so that later inputs
rarely make them grow again). Accumulators merge exactly (integer counts), so the atlas is
the same for any chunking of the inputs (map-reduce).

:class:`SparseAtlas` is the same counts as per-voxel lists of (label, count), most probable
first: it answers "which labels, with which probability, at this point", and is what a
partial atlas file holds (:mod:`nipype_heatmap.atlas`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import nibabel as nb
import numpy as np

from ..io import Grid, Volume, read_volume
from .values import SourceRecord, volume_record

__all__ = [
    "label_data",
    "LabelAtlasAccumulator",
    "probability",
    "SparseAtlas",
]

LOGGER = logging.getLogger(__name__)


# -- one input -------------------------------------------------------------------------
def label_data(volume: Volume) -> np.ndarray:
    """The label values of a volume as an integer array, on its own voxel order.

    Integer data are taken as stored. Scaled or floating-point data are accepted only if
    every (scaled) value is a whole number (as written by tools that store labels as
    float32).

    Raises
    ------
    ValueError
        Naming the file, if a value is not a whole number (NaN, infinite or fractional):
        the file is not a label image; or a label is outside the 32-bit integer range that
        atlas files store.
    """
    data = volume.data
    if volume.slope is None and data.dtype.kind in "biu":
        if data.dtype.kind == "b":
            return data.astype(np.uint8)
        if data.dtype.itemsize >= 4 and data.size:  # wider than any 32-bit label: check
            _check_label_range(volume.path, int(data.min()), int(data.max()))
        return data
    values = data.astype(np.float64)
    if volume.slope is not None:
        values = values * volume.slope + (volume.inter or 0.0)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{volume.path}: not a label image: value {float(values[where])!r} at voxel "
            f"{where} is not a whole number (label images hold integer labels; was a "
            "probability map or an interpolated image given?)"
        )
    if values.size:
        _check_label_range(volume.path, values.min(), values.max())
    return values.astype(np.int64)


def _check_label_range(path: str, low: float, high: float) -> None:
    if low < -(2**31) or high >= 2**31:
        raise ValueError(
            f"{path}: labels from {low:g} to {high:g} are outside the 32-bit integer range "
            "that atlas files store; renumber the labels first"
        )


#: Voxels added on each side when a label's box grows, so that the next inputs (shifted
#: by registration) rarely make it grow again.
_BOX_MARGIN = 3


# -- the accumulator ---------------------------------------------------------------------
class LabelAtlasAccumulator:
    """Exact per-label voxel counts over label images, each in its label's bounding box.

    Parameters
    ----------
    background : int, default=0
        The value that is no label.
    grid : Grid, optional
        The reference grid; default: the first input's.

    Attributes
    ----------
    n_inputs : int
        Images added.
    records : list of SourceRecord
        One per input, in order (path, label range, header, image class, content hash).
    boxes : dict
        ``label -> (origin, counts)``: the voxel index of the box's first corner and a
        count array over the box (Fortran order; uint16, uint32 once 65,535 volumes have
        been counted).
    presence : dict
        ``label -> number of inputs that contain it``.
    grid : Grid
        The reference grid (the first input's).
    """

    def __init__(self, background: int = 0, grid: Grid | None = None) -> None:
        if not -(2**31) <= int(background) < 2**31:
            raise ValueError(
                f"background {background} is outside the 32-bit integer range of labels"
            )
        self.background = int(background)
        self.n_inputs = 0
        self.records: list[SourceRecord] = []
        self.boxes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.presence: dict[int, int] = {}
        self.grid: Grid | None = grid
        self.ref_header: nb.nifti1.Nifti1Header | None = None
        self.image_class: type = nb.Nifti1Image
        # Counts are uint16 (half the memory traffic of uint32) until 65535 volumes have
        # been counted into these boxes, then uint32.
        self._dtype: type = np.uint16
        self._counted = 0
        self._argmax_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _widen(self) -> None:
        """Switch the count boxes to uint32 (before a count could pass 65535)."""
        self._dtype = np.uint32
        self.boxes = {
            label: (origin, counts.astype(np.uint32, order="F"))
            for label, (origin, counts) in self.boxes.items()
        }

    # -- adding ---------------------------------------------------------------------------
    def add_file(self, path: str | os.PathLike[str]) -> SourceRecord:
        """Read one label image, check it against the reference grid and add it."""
        return self.add_volume(read_volume(path, digest=True))

    def add_volume(self, volume: Volume) -> SourceRecord:
        """Add one label image (see :func:`label_data` for what is accepted).

        Raises
        ------
        ValueError
            If it is not a label image, or not on the reference grid (set by the first),
            up to a lossless re-ordering of its voxel axes; nothing is added then.
        """
        record = self.count(volume)
        self.n_inputs += 1
        self.records.append(record)
        return record

    def count(self, volume: Volume) -> SourceRecord:
        """Add a label image's counts and presence, and return its record; the caller keeps
        the records in input order (:func:`accumulate_labels` counts on several threads,
        one accumulator each).

        Each label present is added over its bounding box: ``box += (data[box] == label)``,
        a vectorized pass over the box only. A label with voxels outside its box (a new
        label, or one reaching further than before) is counted again over its grown box
        (:meth:`_add_strays`).
        """
        if self.grid is None:
            self.grid = Grid(volume.shape, volume.affine, volume.path)
        if self.ref_header is None:
            self.ref_header = volume.header.copy()
            self.image_class = volume.image_class
        data = self.grid.conform(label_data(volume), volume.affine, volume.path, "label image")
        self._argmax_cache = None
        if self._counted >= np.iinfo(self._dtype).max:
            self._widen()
        # Fast path: each label's voxels in its box are added while they are in cache; if
        # they add up to the whole foreground, no label reaches outside its box and none is
        # new. Otherwise (rare once the boxes have grown) the labels that do are found,
        # taken back out, and added again over their grown boxes.
        found: dict[int, int] = {}
        for label, (origin, counts) in self.boxes.items():
            hit = _view(data, origin, counts.shape) == label
            n = int(np.count_nonzero(hit))
            if n:
                counts += hit
                found[label] = n
        foreground = int(np.count_nonzero(data != self.background))
        if sum(found.values()) != foreground:  # some label is new or reaches further
            self._add_strays(data, found)
        for label in found:
            self.presence[label] = self.presence.get(label, 0) + 1
        self._counted += 1
        values = [*found, *([self.background] if foreground < data.size else [])]
        return dataclasses.replace(
            volume_record(volume),
            value_range=(float(min(values)), float(max(values))) if values else None,
        )

    def _add_strays(self, data: np.ndarray, found: dict[int, int]) -> None:
        """Add the labels that have voxels outside their boxes (or no box yet): those
        voxels (few, once the boxes have grown) are found in one pass; each such label's
        in-box part is taken back out and added again over its box, grown (by
        :meth:`_box`) to take in the strays plus a margin."""
        covered = np.zeros(data.shape, bool, order="F")
        for label in found:
            origin, counts = self.boxes[label]
            _view(covered, origin, counts.shape)[...] |= _view(data, origin, counts.shape) == label
        stray = np.nonzero((data != self.background) & ~covered)
        del covered
        stray_values = data[stray]
        limit = np.asarray(data.shape) - 1
        for label in np.unique(stray_values).tolist():
            where = stray_values == label
            lo = np.array([axis[where].min() for axis in stray], np.int64)
            hi = np.array([axis[where].max() for axis in stray], np.int64)
            if label in self.boxes:
                origin, counts = self.boxes[label]
                if label in found:  # take the part inside the old box back out
                    counts -= _view(data, origin, counts.shape) == label
            lo = np.maximum(lo - _BOX_MARGIN, 0)
            hi = np.minimum(hi + _BOX_MARGIN, limit)
            origin, counts = self._box(label, lo, hi)
            hit = _view(data, origin, counts.shape) == label
            counts += hit
            found[label] = int(np.count_nonzero(hit))

    def _box(self, label: int, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The count box of ``label``, grown (copied once) to cover ``lo..hi``."""
        if label not in self.boxes:
            self.boxes[label] = (lo.copy(), np.zeros(tuple(hi - lo + 1), self._dtype, order="F"))
            return self.boxes[label]
        origin, counts = self.boxes[label]
        end = origin + counts.shape - 1
        if np.all(lo >= origin) and np.all(hi <= end):
            return origin, counts
        new_lo, new_hi = np.minimum(lo, origin), np.maximum(hi, end)
        grown = np.zeros(tuple(new_hi - new_lo + 1), self._dtype, order="F")
        _view(grown, origin - new_lo, counts.shape)[...] = counts
        self.boxes[label] = (new_lo, grown)
        return self.boxes[label]

    def merge(self, other: LabelAtlasAccumulator) -> None:
        """Add another accumulator's counts (its inputs come after this one's), exactly.

        Raises
        ------
        ValueError
            If the grids differ (beyond a lossless re-ordering) or the backgrounds do.
        """
        if other.n_inputs == 0 and not other.boxes:
            return
        if self.n_inputs and other.background != self.background:
            raise ValueError(
                f"background {other.background} differs from {self.background}; "
                "partial atlases must use one background value"
            )
        if self.grid is None:
            self.background = other.background
            self.grid = other.grid
        if self.ref_header is None:
            self.ref_header, self.image_class = other.ref_header, other.image_class
        assert other.grid is not None and self.grid is not None
        self._argmax_cache = None
        if self._counted + other._counted > np.iinfo(self._dtype).max:
            self._widen()
        self._counted += other._counted
        same = self.grid.matches(other.grid.shape, other.grid.affine)
        for label, (origin, counts) in sorted(other.boxes.items()):
            if not same:  # re-ordered: through a dense volume, one label at a time
                dense = np.zeros(other.grid.shape, np.uint32, order="F")
                _paste(dense, origin, counts)
                dense = self.grid.conform(dense, other.grid.affine, other.grid.source, "atlas")
                origin, box = _bounding_box(np.asarray(dense))
                if box is None:
                    continue
                counts = box
            mine_origin, mine = self._box(label, origin, origin + counts.shape - 1)
            _view(mine, origin - mine_origin, counts.shape)[...] += counts
        for label, n in other.presence.items():
            self.presence[label] = self.presence.get(label, 0) + n
        self.n_inputs += other.n_inputs
        self.records.extend(other.records)

    # -- results --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The reference grid's shape."""
        if self.grid is None:
            raise ValueError("no label image was added")
        return self.grid.shape

    def counts_of(self, label: int) -> np.ndarray:
        """The dense uint32 count volume of one label (how many inputs have it per voxel)."""
        dense = np.zeros(self.shape, np.uint32, order="F")
        _paste(dense, *self.boxes[label])
        return dense

    def probability_of(self, label: int) -> np.ndarray:
        """The dense float32 probability map of one label: ``count / N``."""
        return probability(self.counts_of(label), self.n_inputs)

    def totals(self) -> dict[int, int]:
        """``label -> sum of its counts`` (its voxels over all inputs)."""
        return {label: int(self.boxes[label][1].sum(dtype=np.uint64)) for label in self.label_list}

    @property
    def label_list(self) -> list[int]:
        """Every label seen, ascending (the order of the 4D maps and the table)."""
        return sorted(self.boxes)

    @property
    def affine(self) -> np.ndarray:
        """The reference grid's affine."""
        if self.grid is None:
            raise ValueError("no label image was added")
        return self.grid.affine

    def iter_probabilities(self):
        """As :meth:`SparseAtlas.iter_probabilities`, from the boxes."""
        flat = np.zeros(int(np.prod(self.shape)), np.float32)
        dense = flat.reshape(self.shape, order="F")
        for label in self.label_list:
            origin, counts = self.boxes[label]
            view = _view(dense, origin, counts.shape)
            view[...] = probability(counts, self.n_inputs)
            yield flat.data.cast("B")
            view[...] = 0

    def max_probability(self, threshold: float) -> tuple[np.ndarray, int]:
        """As :meth:`SparseAtlas.max_probability` (the same map and ties), from the boxes."""
        best, winner, tie = self._argmax()
        limit = Fraction(str(threshold)) * self.n_inputs / 100  # exact: counts >= t N / 100
        top = best.astype(np.int64)
        keep = (top * limit.denominator >= limit.numerator) & (top > 0)
        return np.where(keep, winner, self.background), int(np.count_nonzero(keep & tie))

    def _argmax(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per voxel: the highest count, its label (ties: the lowest label, since labels
        come in ascending order and only a higher count replaces), and whether it ties."""
        if self._argmax_cache is None:
            best: np.ndarray = np.zeros(self.shape, self._dtype, order="F")
            winner = np.full(self.shape, self.background, np.int64, order="F")
            tie = np.zeros(self.shape, bool, order="F")
            for label in self.label_list:
                origin, counts = self.boxes[label]
                b, w, t = (_view(a, origin, counts.shape) for a in (best, winner, tie))
                greater = counts > b
                t[(counts == b) & (counts > 0)] = True
                t[greater] = False
                w[greater] = label
                np.maximum(b, counts, out=b)
            self._argmax_cache = (best, winner, tie)
        return self._argmax_cache

    def to_sparse(self) -> SparseAtlas:
        """The sparse form: per voxel, the labels with a non-zero count, most probable first."""
        if self.grid is None or self.ref_header is None:
            raise ValueError("no label image was added; an atlas needs at least one input")
        shape = self.shape
        n_labels = np.zeros(shape, np.uint16, order="F")
        for origin, counts in self.boxes.values():
            view = _view(n_labels, origin, counts.shape)
            view += counts > 0
        flat_n = n_labels.reshape(-1, order="F")
        index = np.flatnonzero(flat_n)
        slots = int(flat_n.max()) if flat_n.size else 0
        row_of = np.full(flat_n.size, -1, np.int64)
        row_of[index] = np.arange(index.size)
        del n_labels, flat_n
        # Labels and the background are 32-bit integers (label_data and __init__ check).
        labels = np.full((index.size, max(slots, 1)), self.background, np.int32)
        counts_out = np.zeros((index.size, max(slots, 1)), np.uint32)
        filled = np.zeros(index.size, np.uint16)
        nx, ny = shape[0], shape[1]
        for label in self.label_list:  # ascending: equal counts stay in label order below
            origin, counts = self.boxes[label]
            local = np.flatnonzero(counts.reshape(-1, order="F"))
            li, lj, lk = np.unravel_index(local, counts.shape, order="F")
            flat = (li + origin[0]) + nx * ((lj + origin[1]) + ny * (lk + origin[2]))
            rows = row_of[flat]
            cols = filled[rows]
            labels[rows, cols] = label
            counts_out[rows, cols] = counts.reshape(-1, order="F")[local]
            filled[rows] += 1
        del row_of, filled
        multi = np.flatnonzero(counts_out[:, 1] > 0) if slots > 1 else np.zeros(0, np.int64)
        step = 1 << 18  # most probable first, a block of voxels at a time (bounded memory)
        for start in range(0, multi.size, step):
            part = multi[start : start + step]
            order = np.argsort(-counts_out[part].astype(np.int64), axis=1, kind="stable")
            labels[part] = np.take_along_axis(labels[part], order, axis=1)
            counts_out[part] = np.take_along_axis(counts_out[part], order, axis=1)
        return SparseAtlas(
            shape=shape,
            affine=self.grid.affine,
            index=index,
            labels=labels[:, : max(slots, 1)],  # one slot at least: a file needs a volume
            counts=counts_out[:, : max(slots, 1)],
            n_inputs=self.n_inputs,
            background=self.background,
            presence={label: self.presence[label] for label in self.label_list},
            records=list(self.records),
            ref_header=self.ref_header,
            image_class=self.image_class,
        )


def _view(dense: np.ndarray, origin, shape) -> np.ndarray:
    o = [int(v) for v in origin]
    return dense[o[0] : o[0] + shape[0], o[1] : o[1] + shape[1], o[2] : o[2] + shape[2]]


def _paste(dense: np.ndarray, origin, counts: np.ndarray) -> None:
    _view(dense, origin, counts.shape)[...] = counts


def _bounding_box(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    hit = np.nonzero(dense)
    if not hit[0].size:
        return np.zeros(3, np.int64), None
    lo = np.array([a.min() for a in hit], np.int64)
    hi = np.array([a.max() for a in hit], np.int64)
    return lo, np.asfortranarray(_view(dense, lo, tuple(hi - lo + 1)))


def probability(counts: np.ndarray, n_inputs: int) -> np.ndarray:
    """``count / N`` in float64, stored float32: the one formula of every probability map."""
    return (np.asarray(counts, np.float64) / n_inputs).astype(np.float32)


@dataclass
class SparseAtlas:
    """An atlas as per-voxel lists of (label, count), most probable first.

    Attributes
    ----------
    shape : tuple of int
        The grid.
    affine : numpy.ndarray
        Its voxel-to-world affine.
    index : numpy.ndarray
        Flat (Fortran-order) positions of the voxels where some label has a count.
    labels, counts : numpy.ndarray
        ``(len(index), K)``: the labels at each of those voxels, by descending count then
        ascending label, and their counts; unused slots hold the background and 0. ``K``
        is the largest number of labels any voxel has.
    n_inputs : int
        N, the number of label images.
    background : int
        The value that is no label.
    presence : dict
        ``label -> number of inputs containing it``, for every label (ascending).
    records : list of SourceRecord
        The inputs.
    ref_header : nibabel.nifti1.Nifti1Header
        The first input's header.
    image_class : type
        Its class.
    """

    shape: tuple[int, ...]
    affine: np.ndarray
    index: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    n_inputs: int
    background: int
    presence: dict[int, int]
    records: list[SourceRecord]
    ref_header: nb.nifti1.Nifti1Header
    image_class: type = nb.Nifti1Image
    _groups: dict | None = dataclasses.field(default=None, init=False, repr=False)

    @property
    def label_list(self) -> list[int]:
        """Every label of the atlas, ascending (the order of the 4D maps and the table)."""
        return sorted(self.presence)

    @property
    def slots(self) -> int:
        """K, the most labels any voxel has (at least 1, so that the file has volumes)."""
        return int(self.labels.shape[1])

    def probabilities(self) -> np.ndarray:
        """The dense 4D float32 probability maps, one volume per label, ascending."""
        labels = self.label_list
        out = np.zeros((*self.shape, len(labels)), np.float32, order="F")
        for n, label in enumerate(labels):
            out[..., n] = self.probability_of(label)
        return out

    def entries(self, label: int) -> tuple[np.ndarray, np.ndarray]:
        """One label's voxels (flat, Fortran order, ascending) and their counts."""
        if self._groups is None:  # every label's entries at once, sorted by label
            rows, cols = np.nonzero(self.counts > 0)
            found = self.labels[rows, cols]
            order = np.argsort(found, kind="stable")  # rows stay ascending within a label
            rows, cols, found = rows[order], cols[order], found[order]
            bounds = np.searchsorted(found, self.label_list + [np.iinfo(np.int64).max])
            self._groups = {
                label: (rows[a:b], cols[a:b])
                for label, a, b in zip(self.label_list, bounds[:-1], bounds[1:], strict=True)
            }
        rows, cols = self._groups[label]
        return self.index[rows], self.counts[rows, cols]

    def iter_probabilities(self):
        """Each label's probability map in turn (ascending labels), as the bytes of a
        float32 volume in NIfTI order: one buffer, reused, so each must be consumed (written)
        before the next is asked for."""
        flat = np.zeros(int(np.prod(self.shape)), np.float32)
        for label in self.label_list:
            positions, counts = self.entries(label)
            flat[positions] = probability(counts, self.n_inputs)
            yield flat.data.cast("B")
            flat[positions] = 0

    def counts_of(self, label: int) -> np.ndarray:
        """One label's dense uint32 count volume."""
        flat = np.zeros(int(np.prod(self.shape)), np.uint32)
        positions, counts = self.entries(label)
        flat[positions] = counts
        return flat.reshape(self.shape, order="F")

    def totals(self) -> dict[int, int]:
        """``label -> sum of its counts`` (its voxels over all inputs)."""
        return {
            label: int(self.entries(label)[1].sum(dtype=np.uint64)) for label in self.label_list
        }

    def probability_of(self, label: int) -> np.ndarray:
        """One label's dense float32 probability map (``count / N``)."""
        flat = np.zeros(int(np.prod(self.shape)), np.float32)
        positions, counts = self.entries(label)
        flat[positions] = probability(counts, self.n_inputs)
        return flat.reshape(self.shape, order="F")

    def max_probability(self, threshold: float) -> tuple[np.ndarray, int]:
        """The maximum-probability map at ``threshold`` percent, and its tied voxels.

        Returns
        -------
        dseg : numpy.ndarray
            int64 labels: at each voxel the most probable label (ties: the lowest label),
            kept where its probability is ``>= threshold %`` and ``> 0``; the background
            elsewhere.
        tied : int
            Kept voxels where another label has the same, highest, probability.
        """
        limit = Fraction(str(threshold)) * self.n_inputs / 100  # exact: counts >= t N / 100
        flat = np.full(int(np.prod(self.shape)), self.background, np.int64)
        top = self.counts[:, 0].astype(np.int64)
        keep = (top * limit.denominator >= limit.numerator) & (top > 0)
        flat[self.index[keep]] = self.labels[keep, 0]
        tied = 0
        if self.slots > 1:
            tied = int(np.count_nonzero(keep & (self.counts[:, 1] == self.counts[:, 0])))
        return flat.reshape(self.shape, order="F"), tied

    def query(self, xyz_mm: Sequence[float]) -> list[tuple[int, float]]:
        """The labels at a world coordinate, with their probabilities, most probable first.

        The point is taken at the nearest voxel centre; an empty list outside the grid or
        where no input has a label.
        """
        ijk = np.linalg.solve(self.affine, np.array([*map(float, xyz_mm), 1.0]))[:3]
        voxel = np.round(ijk).astype(np.int64)
        if np.any(voxel < 0) or np.any(voxel >= self.shape):
            return []
        flat = int(voxel[0] + self.shape[0] * (voxel[1] + self.shape[1] * voxel[2]))
        row = np.searchsorted(self.index, flat)
        if row >= self.index.size or self.index[row] != flat:
            return []
        return [
            (int(label), float(probability(np.array([count]), self.n_inputs)[0]))
            for label, count in zip(self.labels[row], self.counts[row], strict=True)
            if count > 0
        ]

    def to_accumulator(self) -> LabelAtlasAccumulator:
        """Back to an accumulator (to merge with others or add more inputs)."""
        acc = LabelAtlasAccumulator(self.background)
        acc.grid = Grid(self.shape, self.affine, self.records[0].path)
        acc.ref_header, acc.image_class = self.ref_header, self.image_class
        acc.n_inputs, acc.records = self.n_inputs, list(self.records)
        acc.presence = dict(self.presence)
        acc._counted = self.n_inputs
        if self.n_inputs > np.iinfo(acc._dtype).max:
            acc._widen()
        for label in self.label_list:
            flat, values = self.entries(label)
            ijk = np.stack(np.unravel_index(flat, self.shape, order="F"))
            origin, box = acc._box(label, ijk.min(axis=1), ijk.max(axis=1))
            local = np.ravel_multi_index(tuple(ijk - origin[:, None]), box.shape, order="F")
            box.reshape(-1, order="F")[local] = values
        return acc

    # -- the file ----------------------------------------------------------------------
