"""One input as the accumulators see it: its values on the reference grid, and its record.

:func:`values_on_grid` turns a read :class:`~nipype_heatmap.io.Volume` into
:class:`Values`: the voxels in the reference grid's voxel order (a view when the file's axes
are only permuted or flipped), scaled as nibabel scales them (``scl_slope``/``scl_inter``,
in float64), with their finite range and whether every voxel is finite. It runs on the
reader threads, ahead of each file's turn, so that the accumulating thread only adds.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nb
import numpy as np

from ..io import Grid, Volume, file_identity

__all__ = [
    "IMAGE_CLASSES",
    "header_from_bytes",
    "records_from_json",
    "records_to_json",
    "Reference",
    "SourceRecord",
    "Values",
    "values_on_grid",
    "volume_record",
]

#: The NIfTI image classes, by the names that records and states store.
IMAGE_CLASSES = {"Nifti1Image": nb.Nifti1Image, "Nifti2Image": nb.Nifti2Image}


@dataclass(frozen=True)
class SourceRecord:
    """What is kept of each input: enough to recognise it, remove it, or re-use its header.

    Attributes
    ----------
    path : str
        Absolute path of the file.
    value_range : tuple of float or None
        The file's finite value range (after scaling); None when it has no finite value.
        Python ints for an integer volume, so that bounds past 2**53 stay exact.
    header : bytes
        The file's header block, as read (its own byte order): the reference header and
        grid when this file becomes the first input.
    image_class : str
        ``"Nifti1Image"`` or ``"Nifti2Image"``.
    digest : str or None
        ``"sha256:<hex>"`` of the file's stored bytes, when it was hashed on reading.
    identity : tuple of int or None
        ``(device, inode)`` of the file when it was read: a link to it is the same file.
    integer : bool
        Whether its values are integers (an unscaled integer volume): sums of such inputs
        are exact.
    """

    path: str
    value_range: tuple[float, float] | None
    header: bytes
    image_class: str = "Nifti1Image"
    digest: str | None = None
    identity: tuple[int, int] | None = None
    integer: bool = False

    @property
    def magnitude(self) -> float:
        """The largest absolute value of the input (0 when it has no finite value)."""
        if self.value_range is None:
            return 0.0
        return max(abs(self.value_range[0]), abs(self.value_range[1]))

    def load_header(self) -> nb.nifti1.Nifti1Header:
        """The header, rebuilt from its bytes (byte order detected, as on reading)."""
        return header_from_bytes(self.header, self.image_class)


def header_from_bytes(block: bytes, image_class: str) -> nb.nifti1.Nifti1Header:
    """A header from its bytes, as a file holds them (either byte order)."""
    return IMAGE_CLASSES[image_class].header_class.from_fileobj(io.BytesIO(block))


@dataclass(frozen=True)
class Reference:
    """The reference of a set of inputs: the first one's grid, header and image class.

    Every map is written on this grid with a copy of this header (see
    :meth:`HeatmapAccumulator.make_image <nipype_heatmap.accumulate.HeatmapAccumulator>`).
    """

    grid: Grid
    header: nb.nifti1.Nifti1Header
    image_class: type

    @classmethod
    def of(cls, volume: Volume) -> Reference:
        """The reference that a first input sets."""
        return cls(
            Grid(volume.shape, volume.affine, volume.path),
            volume.header.copy(),
            volume.image_class,
        )

    @classmethod
    def of_record(cls, record: SourceRecord) -> Reference:
        """The reference an input sets, from its record (after the first one is removed)."""
        header = record.load_header()
        shape = tuple(int(n) for n in header.get_data_shape()[:3])
        return cls(
            Grid(shape, header.get_best_affine(), record.path),
            header,
            IMAGE_CLASSES[record.image_class],
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid's shape (three axes)."""
        return self.grid.shape


@dataclass(frozen=True)
class Values:
    """One input on the reference grid: the ``x`` that the accumulators add.

    Attributes
    ----------
    array : numpy.ndarray
        The values in the reference grid's voxel order: the stored integers, or floats
        (float64 once scaled).
    value_range : tuple of float or None
        Min and max of the finite values; None when none is finite.
    complete : bool
        Whether every voxel is finite (integers always are).
    record : SourceRecord
        What is kept of the input.
    """

    array: np.ndarray
    value_range: tuple[float, float] | None
    complete: bool
    record: SourceRecord

    @property
    def integer(self) -> bool:
        """Whether the values are integers (unscaled integer data)."""
        return self.array.dtype.kind in "biu"

    @property
    def path(self) -> str:
        """The input's file."""
        return self.record.path


def values_on_grid(volume: Volume, grid: Grid) -> Values:
    """The values of a read volume on a reference grid, with their range and record.

    Raises
    ------
    ValueError
        If the volume is not on the grid, up to a lossless re-ordering of its voxel axes
        (naming the file, its shape or affine, and the reference's).
    """
    array = grid.conform(volume.data, volume.affine, volume.path)
    if volume.slope is not None:  # as nibabel's get_fdata: float64, slope then intercept
        array = array.astype(np.float64)
        if volume.slope != 1.0:
            array *= volume.slope
        if volume.inter:
            array += volume.inter
    integer = array.dtype.kind in "biu"
    value_range, complete = _finite_range(array)
    record = SourceRecord(
        volume.path,
        value_range,
        bytes(volume.header.binaryblock),
        volume.image_class.__name__,
        volume.digest,
        file_identity(volume.path),
        integer,
    )
    return Values(array, value_range, complete, record)


def _finite_range(array: np.ndarray) -> tuple[tuple[float, float] | None, bool]:
    """The finite range of an array, and whether every value is finite."""
    lo, hi = array.min(), array.max()
    if np.isfinite(lo) and np.isfinite(hi):
        return (lo.item(), hi.item()), True  # ints for integers (exact past 2**53)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return None, False
    return (finite.min().item(), finite.max().item()), False


def volume_record(volume: Volume) -> SourceRecord:
    """The record of a volume read outside an accumulator (label images)."""
    return SourceRecord(
        volume.path,
        None,
        bytes(volume.header.binaryblock),
        volume.image_class.__name__,
        volume.digest,
        file_identity(os.fspath(volume.path)),
        volume.data.dtype.kind in "biu" and volume.slope is None,
    )


def records_to_json(records: Sequence[SourceRecord]) -> dict:
    """The inputs as saved files record them: ``Sources`` (one object per input, in order)
    and ``Headers`` (each distinct header once, base64: inputs of one pipeline share one)."""
    index: dict[bytes, int] = {}
    for record in records:
        index.setdefault(record.header, len(index))
    return {
        "Headers": [base64.b64encode(block).decode("ascii") for block in index],
        "Sources": [
            {
                "Path": r.path,
                "Digest": r.digest,
                "Identity": None if r.identity is None else list(r.identity),
                "Range": None if r.value_range is None else list(r.value_range),
                "Integer": r.integer,
                "Header": index[r.header],
                "ImageClass": r.image_class,
            }
            for r in records
        ],
    }


def records_from_json(meta: dict) -> list[SourceRecord]:
    """Read :func:`records_to_json`'s fields back.

    Raises
    ------
    KeyError, TypeError, ValueError, IndexError, binascii.Error
        If a field is missing or malformed (the caller names the file).
    """
    headers = [base64.b64decode(h, validate=True) for h in meta["Headers"]]
    records = []
    for item in meta["Sources"]:
        value_range = item["Range"]
        identity = item["Identity"]
        image_class = str(item["ImageClass"])
        if image_class not in IMAGE_CLASSES:
            raise ValueError(f"unknown ImageClass {image_class!r}")
        if value_range is not None:
            lo, hi = (v if type(v) is int else float(v) for v in value_range)
            if not lo <= hi:
                raise ValueError(f"the Range of {item['Path']} is not [min, max]: {value_range}")
            value_range = (lo, hi)
        records.append(
            SourceRecord(
                str(item["Path"]),
                value_range,
                headers[int(item["Header"])],
                image_class,
                None if item["Digest"] is None else str(item["Digest"]),
                None if identity is None else (int(identity[0]), int(identity[1])),
                bool(item["Integer"]),
            )
        )
    return records
