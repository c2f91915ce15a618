"""Probabilistic atlases from label images, in one pass over the inputs.

N label images (segmentations, parcellations, annotators' label maps) on one grid go in;
out come, for every label that occurs in any input (the union, not the first file's
labels), the fraction of inputs having that label at each voxel, and the
maximum-probability maps made from those fractions.

How it is computed
------------------
Each input is read once, whatever the number of labels. The accumulator keeps, per
label, an exact integer count volume over that label's bounding box only (uint16 until
65,535 inputs, then uint32), so memory follows what the labels occupy, not ``labels x
grid`` (an aseg-like atlas of 100 labels at 1 mm: about 30 MB of counts instead of
gigabytes), and does not grow with N. Adding an input is, per label,
``box += (data[box] == label)``: a vectorized pass over the box. If the voxels found in
the boxes do not add up to the input's foreground, some label is new or reaches outside
its box: those stray voxels are found in one pass, and only their labels' boxes grow (by
the strays' extent plus a margin of :data:`_BOX_MARGIN` voxels, so that later inputs
rarely make them grow again). Each reader thread counts the files it reads into an
accumulator of its own; accumulators merge exactly (integer counts), so the atlas is the
same for any number of threads and any chunking of the inputs (map-reduce).

Outputs
-------
- **per-label probability maps**: one 4D float32 image, volume ``i`` for the ``i``-th row
  of the label table, value ``count / N`` (computed in float64, stored float32);
- **label table** (a BIDS ``dseg.tsv``): ``index``, ``name``, ``color``, how many inputs
  contain the label (``n_inputs``) and its mean volume over the inputs in mm³
  (``mean_volume_mm3``, the sum of its probability map times the voxel volume); rows by
  ascending index;
- **maximum-probability maps**, one per threshold ``t`` (percent): at each voxel, the
  label with the highest probability, where that probability is ``>= t %`` and ``> 0``;
  the background value elsewhere. Ties go to the lowest label value; how many voxels tie
  is reported. Comparisons are exact (integer counts against ``t * N / 100``);
- **sparse atlas** (:class:`SparseAtlas`): per voxel only the labels with a count above
  zero, most probable first, in one integer NIfTI (see :meth:`SparseAtlas.save`); it
  holds the exact counts, so it round-trips to the dense maps bit for bit, merges with
  other sparse atlases (it is also the partial state of the map-reduce), and answers
  "which labels, with which probability, at this point" (:meth:`SparseAtlas.query`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import nibabel as nb
import numpy as np

from ._version import __version__
from .core import _IMAGE_CLASSES, SourceRecord
from .io import Grid, iter_volumes, read_volume, write_atomic
from .io.reading import Volume, read_nifti_data

LOGGER = logging.getLogger(__name__)

#: Default maximum-probability thresholds, in percent (Harvard-Oxford's).
DEFAULT_THRESHOLDS = (0, 25, 50)

FORMAT = "nipype_heatmap.atlas"
FORMAT_VERSION = 1


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
        the file is not a label image.
    """
    data = volume.data
    if volume.slope is None and data.dtype.kind in "biu":
        return data.astype(np.uint8) if data.dtype.kind == "b" else data
    values = data.astype(np.float64)
    if volume.slope is not None:
        values = values * volume.slope + volume.inter
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{volume.path}: not a label image: value {float(values[where])!r} at voxel "
            f"{where} is not a whole number (label images hold integer labels; was a "
            "probability map or an interpolated image given?)"
        )
    if values.size and (values.min() < -(2**31) or values.max() >= 2**31):
        raise ValueError(f"{volume.path}: label values outside the 32-bit integer range")
    return values.astype(np.int64)


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
        return SourceRecord(
            volume.path,
            (float(min(values)), float(max(values))) if values else None,
            bytes(volume.header.binaryblock),
            volume.image_class.__name__,
            volume.digest,
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
                origin, counts = _bounding_box(np.asarray(dense))
                if counts is None:
                    continue
            mine_origin, mine = self._box(label, origin, origin + counts.shape - 1)
            _view(mine, origin - mine_origin, counts.shape)[...] += counts
        for label, n in other.presence.items():
            self.presence[label] = self.presence.get(label, 0) + n
        self.n_inputs += other.n_inputs
        self.records.extend(other.records)

    # -- results --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
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
            yield memoryview(flat).cast("B")
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
            best = np.zeros(self.shape, self._dtype, order="F")
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


def accumulate_labels(
    files: Iterable[str | os.PathLike[str]],
    *,
    background: int = 0,
    num_threads: int | None = None,
    acc: LabelAtlasAccumulator | None = None,
) -> LabelAtlasAccumulator:
    """Read label images once each and count every label, on several threads.

    Each reader thread counts the files it reads into an accumulator of its own; they are
    merged at the end. Counts are integers, so the result is the same for any number of
    threads and any assignment of files to threads; the records keep the input order.

    Parameters
    ----------
    files : iterable of path-like
        Label images on one grid (up to lossless re-ordering of voxel axes), in order.
    background : int, default=0
        The value that is no label.
    num_threads : int, optional
        Reader threads (default: the cores this process may use).
    acc : LabelAtlasAccumulator, optional
        Add to this one instead of a new one.

    Notes
    -----
    Memory: the boxes of one accumulator per thread, plus ``num_threads + 2`` input
    volumes in flight; flat in the number of files.

    Raises
    ------
    ValueError
        Naming the file: unreadable, not 3D, not a label image, or not on the grid.
    """
    import threading

    from .io import read_header
    from .parallel import resolve_num_threads

    paths = [os.path.abspath(os.fspath(f)) for f in files]
    if not paths:
        raise ValueError("no label image given; an atlas needs at least one input")
    threads = resolve_num_threads(num_threads)
    acc = LabelAtlasAccumulator(background) if acc is None else acc
    if acc.n_inputs and acc.background != background:
        raise ValueError(f"background {background} differs from the atlas's {acc.background}")
    grid = acc.grid
    if grid is None:  # the reference grid, known before the threads start
        header = read_header(paths[0])
        grid = Grid(header.get_data_shape()[:3], header.get_best_affine(), paths[0])
    local = threading.local()
    partials: list[LabelAtlasAccumulator] = []
    lock = threading.Lock()

    def count(volume: Volume) -> SourceRecord:
        mine = getattr(local, "acc", None)
        if mine is None:
            mine = local.acc = LabelAtlasAccumulator(background, grid)
            with lock:
                partials.append(mine)
        return mine.count(volume)

    records = iter_volumes(
        paths, read_ahead=max(2, threads), workers=threads, digest=True, prepare=count
    )
    counted: list[SourceRecord] = []
    try:
        for record in records:
            counted.append(record)
            LOGGER.debug("%s: labels %s", record.path, record.value_range)
    finally:
        records.close()
    if acc.ref_header is None:  # the first input's header, from its record
        acc.ref_header = counted[0].load_header()
        acc.image_class = _IMAGE_CLASSES[counted[0].image_class]
    for part in partials:
        part.ref_header, part.image_class = acc.ref_header, acc.image_class
        acc.merge(part)
    acc.grid = grid
    acc.n_inputs += len(counted)
    acc.records.extend(counted)
    return acc


# -- the sparse form ---------------------------------------------------------------------
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

    shape: tuple[int, int, int]
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
            yield memoryview(flat).cast("B")
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
    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the sparse atlas as one NIfTI-1 file, atomically.

        The file is a 4D integer image of ``2K`` volumes on the atlas grid: volumes
        ``0..K-1`` hold, per voxel, the labels with a non-zero count, most probable first
        (ties: lowest label first), the background value in unused slots (so volume 0 is the
        maximum-probability map at threshold 0); volumes ``K..2K-1`` hold their counts (the
        number of inputs with that label there). The probability of a label is its count
        divided by ``NInputs``. The rest is JSON in a NIfTI comment extension: ``Format``
        (``nipype_heatmap.atlas``), ``FormatVersion``, ``NInputs``, ``Background``,
        ``Slots`` (K), ``Labels`` (every label, ascending) with ``Presence`` (inputs
        containing each), ``Sources`` (the inputs, as in a partial heatmap), ``Affine``,
        ``Shape``, the reference header. The integer type is the narrowest that holds
        every label, the background and N.
        """
        from .state import provenance_to_json, state_head  # one format for every state

        labels = self.label_list
        meta = {
            "Format": FORMAT,
            "FormatVersion": FORMAT_VERSION,
            "NInputs": self.n_inputs,
            "Background": self.background,
            "Slots": self.slots,
            "Labels": labels,
            "Presence": [self.presence[label] for label in labels],
            **provenance_to_json(
                self.records, self.shape, self.affine, self.image_class, self.ref_header
            ),
        }
        dtype = _label_dtype([*labels, self.background, self.n_inputs])
        head = state_head(
            (*self.shape, 2 * self.slots),
            dtype,
            self.affine,
            self.ref_header,
            f"nipype_heatmap sparse atlas, K={self.slots}, N={self.n_inputs}",
            meta,
        )

        def volumes():
            yield head
            size = int(np.prod(self.shape))
            for table, fill in ((self.labels, self.background), (self.counts, 0)):
                flat = np.full(size, fill, dtype)  # one buffer: each slot sets the same voxels
                for slot in range(self.slots):
                    flat[self.index] = table[:, slot]
                    yield memoryview(flat).cast("B")  # compressed before the next slot

        return write_atomic(volumes(), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SparseAtlas:
        """Read a file written by :meth:`save`.

        Raises
        ------
        ValueError
            Naming the file, if it is not a sparse atlas of a version this one reads, or
            its data disagree with its metadata.
        """
        from .state import _metadata_text, provenance_from_json

        path = os.path.abspath(os.fspath(path))
        header, data = read_nifti_data(path)
        try:
            meta = json.loads(_metadata_text(header, Path(path), FORMAT, "sparse atlas"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: unreadable sparse atlas metadata ({err})") from err
        if not isinstance(meta, dict) or meta.get("Format") != FORMAT:
            raise ValueError(f"{path}: not a nipype_heatmap sparse atlas (Format != {FORMAT})")
        if meta.get("FormatVersion") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: sparse atlas format version {meta.get('FormatVersion')} is not "
                f"{FORMAT_VERSION}; read it with the nipype_heatmap version that wrote it"
            )
        try:
            records, shape, affine, klass, ref_header = provenance_from_json(meta)
            slots, n_inputs = int(meta["Slots"]), int(meta["NInputs"])
            background = int(meta["Background"])
            presence = dict(
                zip(
                    (int(v) for v in meta["Labels"]),
                    (int(v) for v in meta["Presence"]),
                    strict=True,
                )
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise ValueError(
                f"{path}: corrupt sparse atlas ({type(err).__name__}: {err})"
            ) from err
        if slots < 1 or data.shape != (*shape, 2 * slots) or len(records) != n_inputs:
            raise ValueError(
                f"{path}: data {data.shape} or sources disagree with the metadata "
                f"(Shape {list(shape)}, Slots {slots}, NInputs {n_inputs})"
            )
        flat = data.reshape(-1, 2 * slots, order="F")
        counts_all = flat[:, slots:]
        index = np.flatnonzero(counts_all[:, 0])
        labels = flat[index, :slots].astype(np.int64)
        counts = counts_all[index].astype(np.uint32)
        if counts.size and (
            int(counts.max()) > n_inputs
            or set(np.unique(labels[counts > 0]).tolist()) - set(presence)
        ):
            raise ValueError(f"{path}: counts above NInputs or labels missing from its metadata")
        return cls(
            shape,
            affine,
            index,
            labels,
            counts,
            n_inputs,
            background,
            presence,
            records,
            ref_header,
            klass,
        )


def _label_dtype(values: Iterable[int]) -> np.dtype:
    values = [int(v) for v in values]
    low, high = min(values), max(values)
    for dtype in ("uint8", "int16", "uint16", "int32"):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    raise ValueError(f"labels from {low} to {high} do not fit a 32-bit integer NIfTI")


def load_atlas(path: str | os.PathLike[str]) -> SparseAtlas:
    """Read a sparse atlas (``--sparse``, :meth:`SparseAtlas.save`)."""
    return SparseAtlas.load(path)


def merge_atlases(paths: Iterable[str | os.PathLike[str]]) -> LabelAtlasAccumulator:
    """Merge sparse atlases (partial atlases of chunks of inputs), in order, exactly.

    Raises
    ------
    ValueError
        If none is given, one is not a sparse atlas, or they are not on one grid or use
        different backgrounds (naming the file).
    """
    paths = list(paths)
    if not paths:
        raise ValueError("no partial atlas given; nothing to merge")
    merged = LabelAtlasAccumulator()
    for path in paths:
        part = SparseAtlas.load(path).to_accumulator()
        try:
            merged.merge(part)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
    return merged


# -- label tables ------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelInfo:
    """A label's name and colour (``#rrggbb``), from a label table."""

    name: str
    color: str | None = None


def read_label_table(path: str | os.PathLike[str]) -> dict[int, LabelInfo]:
    """Read label names (and colours) from a BIDS ``dseg.tsv`` or a FreeSurfer colour LUT.

    A file whose first non-comment line has tab-separated ``index`` and ``name`` columns is
    read as a BIDS table (``color`` as ``#rrggbb``, if present); otherwise every
    non-comment line must be ``index name R G B [A]`` (FreeSurfer's
    ``FreeSurferColorLUT.txt``).

    Raises
    ------
    ValueError
        Naming the file and line, if a row cannot be read or an index repeats.
    """
    path = os.fspath(path)
    text = Path(path).read_text(encoding="utf-8-sig")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)]
    content = [
        (n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")
    ]
    table: dict[int, LabelInfo] = {}
    if not content:
        raise ValueError(f"{path}: empty label table")

    def put(n: int, index: str, info: LabelInfo) -> None:
        try:
            value = int(index)
        except ValueError:
            raise ValueError(
                f"{path}, line {n}: label index {index!r} is not an integer"
            ) from None
        if value in table:
            raise ValueError(f"{path}, line {n}: label {value} is listed twice")
        table[value] = info

    first = content[0][1].rstrip("\n").split("\t")
    if "index" in first and "name" in first:
        rows = csv.DictReader(io.StringIO("\n".join(line for _, line in content)), delimiter="\t")
        for (n, _), row in zip(content[1:], rows, strict=False):  # rows may be fewer
            color = (row.get("color") or "").strip() or None
            if color is not None and not _is_hex_color(color):
                raise ValueError(f"{path}, line {n}: color {color!r} is not #rrggbb")
            put(n, row["index"].strip(), LabelInfo((row["name"] or "").strip(), color))
        return table
    for n, line in content:
        parts = line.split()
        if len(parts) < 5:
            raise ValueError(
                f"{path}, line {n}: expected 'index name R G B [A]' (FreeSurfer LUT) or a "
                "tab-separated table with 'index' and 'name' columns (BIDS dseg.tsv)"
            )
        try:
            rgb = [int(v) for v in parts[2:5]]
        except ValueError:
            raise ValueError(f"{path}, line {n}: R G B must be integers") from None
        put(n, parts[0], LabelInfo(parts[1], "#{:02x}{:02x}{:02x}".format(*rgb)))
    return table


def _is_hex_color(text: str) -> bool:
    return (
        len(text) == 7 and text[0] == "#" and all(c in "0123456789abcdefABCDEF" for c in text[1:])
    )


def default_color(label: int) -> str:
    """A distinct, reproducible colour for a label without one (golden-angle hues)."""
    import colorsys

    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


# -- writing the atlas -------------------------------------------------------------------
def label_rows(
    atlas: SparseAtlas, table: Mapping[int, LabelInfo] | None = None
) -> list[dict[str, object]]:
    """The label table's rows (ascending index): index, name, color, n_inputs,
    mean_volume_mm3. Labels missing from ``table`` are named by their index (and logged)."""
    table = dict(table or {})
    zooms = atlas.ref_header.get_zooms()[:3]
    voxel_mm3 = float(np.prod(np.asarray(zooms, np.float64)))
    totals = atlas.totals()
    missing = [label for label in atlas.label_list if label not in table]
    if table and missing:
        LOGGER.warning(
            "labels %s occur in the inputs but not in the label table; named by their index",
            missing,
        )
    rows = []
    for label in atlas.label_list:
        info = table.get(label, LabelInfo(str(label)))
        rows.append({
            "index": label,
            "name": info.name,
            "color": info.color or default_color(label),
            "n_inputs": atlas.presence[label],
            "mean_volume_mm3": round(totals[label] * voxel_mm3 / atlas.n_inputs, 4),
        })  # fmt: skip
    return rows


def atlas_names(
    atlas_name: str, thresholds: Sequence[float], stem: str | None = None
) -> dict[str, str]:
    """File names of an atlas's outputs, in the BIDS atlas convention (as TemplateFlow).

    ``<stem>_probseg.nii.gz`` (4D), ``<stem>_desc-th<t>_dseg.nii.gz`` per threshold,
    ``<stem>_dseg.tsv``, ``<stem>_desc-sparse_probseg.nii.gz``; the stem is
    ``atlas-<name>`` unless given (a BIDS derivative's has its inputs' entities too).
    """
    if not atlas_name or not atlas_name.isalnum():
        raise ValueError(
            f"atlas name {atlas_name!r} must be letters and digits only (a BIDS label)"
        )
    stem = stem or f"atlas-{atlas_name}"
    names = {
        "probseg": f"{stem}_probseg.nii.gz",
        "table": f"{stem}_dseg.tsv",
        "sparse": f"{stem}_desc-sparse_probseg.nii.gz",
    }
    for t in thresholds:
        names[f"th{_threshold_label(t)}"] = f"{stem}_desc-th{_threshold_label(t)}_dseg.nii.gz"
    return names


def _threshold_label(threshold: float) -> str:
    """``25`` -> ``"25"``, ``12.5`` -> ``"12p5"`` (BIDS labels are alphanumeric)."""
    value = Fraction(str(threshold))
    if not 0 <= value <= 100:
        raise ValueError(f"threshold {threshold} is not a percentage in [0, 100]")
    text = f"{float(value):g}"
    return text.replace(".", "p")


def write_atlas(
    atlas: SparseAtlas | LabelAtlasAccumulator,
    out_dir: str | os.PathLike[str],
    *,
    atlas_name: str = "heatmap",
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    label_table: Mapping[int, LabelInfo] | None = None,
    dense: bool = True,
    sparse: bool = False,
    extra_metadata: Mapping[str, object] | None = None,
    stem: str | None = None,
) -> dict[str, str]:
    """Write an atlas's files into ``out_dir`` (see the module docstring for what they are).

    Each NIfTI gets a JSON sidecar (sample size, sources, parameters, tied voxels; then
    ``extra_metadata``, which overrides them); every file is written atomically, and the
    output names are checked before anything is written. ``stem`` replaces the names'
    ``atlas-<name>`` (see :func:`atlas_names`).

    Returns
    -------
    dict
        ``{"probseg": path, "th25": path, ..., "table": path, "sparse": path}`` of what was
        written.
    """
    from .io import prepare_output

    names = atlas_names(atlas_name, thresholds, stem)
    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    wanted = [k for k in names if (k != "probseg" or dense) and (k != "sparse" or sparse)]
    paths = {  # folder created and proven writable before anything is written
        k: prepare_output(os.path.join(out_dir, names[k]))
        if names[k].endswith(".nii.gz")
        else os.path.join(out_dir, names[k])
        for k in wanted
    }
    if not atlas.label_list:
        raise ValueError(
            f"no label in any of the {atlas.n_inputs} input(s): every voxel is the background "
            f"value {atlas.background}; are these label images, and is --background right?"
        )
    rows = label_rows(atlas, label_table)
    labels = [row["index"] for row in rows]
    common = {
        "SampleSize": atlas.n_inputs,
        "Sources": [r.path for r in atlas.records],
        "Background": atlas.background,
        "GeneratedBy": [{"Name": "nipype_heatmap", "Version": __version__}],
        **(extra_metadata or {}),
    }
    written: dict[str, str] = {}
    # The dense 4D (the largest file) is compressed on a thread of its own while the rest
    # is computed and written here (the compressors release the GIL).
    pool = ThreadPoolExecutor(1, thread_name_prefix="heatmap-atlas-write")
    dense_job = None
    if "probseg" in paths:
        dense_job = pool.submit(
            _write_image,
            paths["probseg"],
            atlas,
            np.float32,
            atlas.iter_probabilities(),
            len(labels),
            {
                **common,
                "Description": "Per-label probability maps: volume i is the fraction of "
                "inputs with the label of row i of the dseg.tsv at each voxel.",
                "Labels": labels,
            },
        )
    try:
        _write_the_rest(atlas, paths, thresholds, labels, rows, common, written)
    finally:
        pool.shutdown(wait=True)
    if dense_job is not None:
        written = {"probseg": dense_job.result(), **written}
    return written


def _write_the_rest(atlas, paths, thresholds, labels, rows, common, written) -> None:
    """The max-probability maps, the table and the sparse atlas, into ``written``."""
    dtype = _label_dtype([*labels, atlas.background])
    for t in thresholds:
        key = f"th{_threshold_label(t)}"
        dseg, tied = atlas.max_probability(t)
        written[key] = _write_image(
            paths[key],
            atlas,
            dtype,
            [dseg],
            None,
            {
                **common,
                "Description": f"Maximum-probability map: the most probable label where its "
                f"probability is >= {t} % (and > 0); ties go to the lowest label.",
                "Threshold": float(t),
                "TiedVoxels": tied,
            },
            intent="label",
            cal=(float(min(labels, default=0)), float(max(labels, default=0))),
        )
        LOGGER.info("maximum-probability map at %g %%: %d tied voxel(s)", t, tied)
    written["table"] = _write_table(paths["table"], rows)
    if "sparse" in paths:
        if isinstance(atlas, LabelAtlasAccumulator):
            atlas = atlas.to_sparse()
        written["sparse"] = atlas.save(paths["sparse"])
        _write_sidecar(
            paths["sparse"],
            {
                **common,
                "Description": "Sparse atlas (nipype_heatmap.atlas format 1): volumes "
                f"0..{atlas.slots - 1} are the labels present at each voxel, most probable "
                f"first; volumes {atlas.slots}..{2 * atlas.slots - 1} the number of inputs "
                "with each; probability = count / SampleSize. Load it with "
                "nipype_heatmap.atlas.load_atlas.",
                "Slots": atlas.slots,
            },
        )


def _write_image(path, atlas, dtype, volumes, n, meta, *, intent="none", cal=(0.0, 1.0)) -> str:
    """Stream volumes into one NIfTI with the first input's header (as the heatmap's: data
    type set, scaling cleared, no extensions), then its JSON sidecar: a 3D image when ``n``
    is None, else 4D with ``n`` volumes (even one)."""
    header = atlas.ref_header.copy()
    header.set_data_shape(atlas.shape if n is None else (*atlas.shape, n))
    header.set_data_dtype(dtype)
    header.set_slope_inter(np.nan, np.nan)
    header["cal_min"], header["cal_max"] = cal
    header["descrip"] = f"nipype_heatmap atlas, N={atlas.n_inputs}".encode()[:80]
    header.set_intent(intent)
    header.extensions.clear()
    if header["sform_code"] == 0 and header["qform_code"] == 0:
        header.set_sform(atlas.affine, code="aligned")
    head = io.BytesIO()
    header.write_to(head)  # sets vox_offset to where the header ends
    padding = int(header["vox_offset"]) - head.tell()
    assert padding >= 0

    def chunks():
        yield head.getvalue() + b"\0" * padding
        for volume in volumes:
            if isinstance(volume, memoryview):
                yield volume
            else:
                yield np.asarray(volume, dtype).tobytes(order="F")

    written = write_atomic(chunks(), path)
    _write_sidecar(path, meta)
    return written


def _write_sidecar(path: str, meta: Mapping[str, object]) -> str:
    sidecar = path.removesuffix(".nii.gz") + ".json"
    text = json.dumps(meta, indent=2) + "\n"
    return write_atomic([text.encode("utf-8")], sidecar)


def _write_table(path: str, rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    columns = ["index", "name", "color", "n_inputs", "mean_volume_mm3"]
    out.write("\t".join(columns) + "\n")
    for row in rows:
        out.write("\t".join(str(row[c]) for c in columns) + "\n")
    return write_atomic([out.getvalue().encode("utf-8")], path)


def build_atlas(
    files: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    background: int = 0,
    label_table: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    **options,
) -> dict[str, str]:
    """Make a probabilistic atlas from label images: one pass, then :func:`write_atlas`.

    Parameters
    ----------
    files : iterable of path-like
        Label images on one grid.
    out_dir : path-like
        Where to write.
    background : int, default=0
        The value that is no label.
    label_table : path-like, optional
        A BIDS ``dseg.tsv`` or FreeSurfer colour LUT naming the labels.
    num_threads : int, optional
        Reader threads.
    **options
        ``atlas_name``, ``thresholds``, ``dense``, ``sparse`` of :func:`write_atlas`.

    Returns
    -------
    dict
        What :func:`write_atlas` wrote.
    """
    table = read_label_table(label_table) if label_table is not None else None
    names = atlas_names(
        options.get("atlas_name", "heatmap"), options.get("thresholds", DEFAULT_THRESHOLDS)
    )
    del names  # checked before any input is read
    acc = accumulate_labels(files, background=background, num_threads=num_threads)
    return write_atlas(acc, out_dir, label_table=table, **options)
