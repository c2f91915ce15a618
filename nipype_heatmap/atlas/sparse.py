"""The sparse atlas file: exact per-voxel label counts, mergeable, readable by any NIfTI tool.

A 4D integer NIfTI-1 image of ``2K`` volumes on the atlas grid: volumes ``0..K-1`` hold,
per voxel, the labels with a non-zero count, most probable first (ties: lowest label
first), the background value in unused slots (so volume 0 is the maximum-probability map
at threshold 0); volumes ``K..2K-1`` hold their counts (the number of inputs with that
label there). The probability of a label is its count divided by ``NInputs``. The rest is
JSON inside the file (see :mod:`nipype_heatmap.io.statefile`): ``Format``
(``nipype_heatmap.atlas``), ``FormatVersion``, ``NInputs``, ``Background``, ``Slots``
(K), ``Labels`` (every label, ascending) with ``Presence`` (inputs containing each),
``Sources`` (the inputs, as in a saved state), ``Affine``, ``Shape``, the reference header
and a ``Checksum``. The integer type is the narrowest that holds every label, the
background and N.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Iterator

import numpy as np

from .._version import __version__
from ..accumulate import (
    IMAGE_CLASSES,
    LabelAtlasAccumulator,
    header_from_bytes,
    records_from_json,
    records_to_json,
)
from ..accumulate.labels import SparseAtlas
from ..io import read_nifti_data, statefile, write_atomic

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "label_dtype",
    "load_atlas",
    "merge_atlases",
    "save_atlas",
    "sparse_chunks",
]

FORMAT = "nipype_heatmap.atlas"
FORMAT_VERSION = 2


def sparse_chunks(atlas: SparseAtlas) -> Iterator[bytes | memoryview]:
    """The bytes of an atlas's sparse file, for an output plan (see the module doc)."""
    labels = atlas.label_list
    dtype = label_dtype([*labels, atlas.background, atlas.n_inputs])
    meta = {
        "Format": FORMAT,
        "FormatVersion": FORMAT_VERSION,
        "NInputs": atlas.n_inputs,
        "Background": atlas.background,
        "Slots": atlas.slots,
        "Labels": labels,
        "Presence": [atlas.presence[label] for label in labels],
        **records_to_json(atlas.records),
        "Shape": [int(n) for n in atlas.shape],
        "Affine": np.asarray(atlas.affine).tolist(),
        "ImageClass": atlas.image_class.__name__,
        "ReferenceHeader": base64.b64encode(atlas.ref_header.binaryblock).decode("ascii"),
        "GeneratedBy": {"Name": "nipype_heatmap", "Version": __version__},
    }
    meta["Checksum"] = statefile.checksum(meta, _slot_chunks(atlas, dtype))
    yield statefile.head_bytes(
        (*atlas.shape, 2 * atlas.slots),
        dtype,
        atlas.affine,
        atlas.ref_header.get_xyzt_units(),
        f"nipype_heatmap sparse atlas, K={atlas.slots}, N={atlas.n_inputs}",
        meta,
    )
    yield from _slot_chunks(atlas, dtype)


def _slot_chunks(atlas: SparseAtlas, dtype: np.dtype) -> Iterator[memoryview]:
    """The voxels of each slot in turn (one reused buffer: each is consumed before the next)."""
    size = int(np.prod(atlas.shape))
    for table, fill in ((atlas.labels, atlas.background), (atlas.counts, 0)):
        flat = np.full(size, fill, dtype)  # every slot sets the same voxels
        for slot in range(atlas.slots):
            flat[atlas.index] = table[:, slot]
            yield flat.data.cast("B")


def save_atlas(atlas: SparseAtlas, path: str | os.PathLike[str]) -> str:
    """Write a sparse atlas file, atomically; return its absolute path."""
    return write_atomic(sparse_chunks(atlas), path)


def label_dtype(values: Iterable[int]) -> np.dtype:
    """The narrowest NIfTI integer type holding every value.

    Raises
    ------
    ValueError
        If a value does not fit a 32-bit integer.
    """
    values = [int(v) for v in values]
    low, high = min(values), max(values)
    for dtype in ("uint8", "int16", "uint16", "int32"):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    raise ValueError(f"labels from {low} to {high} do not fit a 32-bit integer NIfTI")


def load_atlas(path: str | os.PathLike[str]) -> SparseAtlas:
    """Read a sparse atlas file (``--sparse``, :func:`sparse_chunks`).

    Raises
    ------
    ValueError
        Naming the file, if it is not a sparse atlas of the version this one reads, was
        changed after it was written, or its data disagree with its metadata.
    """
    path = os.path.abspath(os.fspath(path))
    header, data = read_nifti_data(path)
    meta = statefile.read_metadata(header, path, FORMAT, "sparse atlas")
    if meta.get("Format") != FORMAT:
        raise ValueError(f"{path}: not a nipype_heatmap sparse atlas (Format != {FORMAT})")
    if meta.get("FormatVersion") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: sparse atlas format version {meta.get('FormatVersion')} is not "
            f"{FORMAT_VERSION}; rebuild it with this version (nipype-heatmap-atlas --sparse)"
        )
    statefile.verify_checksum(meta, data, path, "sparse atlas")
    try:
        records = records_from_json(meta)
        shape = tuple(int(n) for n in meta["Shape"])
        affine = np.asarray(meta["Affine"], dtype=np.float64).reshape(4, 4)
        klass = IMAGE_CLASSES[meta["ImageClass"]]
        block = base64.b64decode(meta["ReferenceHeader"], validate=True)
        ref_header = header_from_bytes(block, meta["ImageClass"])
        slots, n_inputs = int(meta["Slots"]), int(meta["NInputs"])
        background = int(meta["Background"])
        presence = dict(
            zip(
                (int(v) for v in meta["Labels"]),
                (int(v) for v in meta["Presence"]),
                strict=True,
            )
        )
    except (KeyError, TypeError, ValueError, IndexError, binascii.Error) as err:
        raise ValueError(f"{path}: corrupt sparse atlas ({type(err).__name__}: {err})") from err
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
        int(counts.max()) > n_inputs or set(np.unique(labels[counts > 0]).tolist()) - set(presence)
    ):
        raise ValueError(f"{path}: counts above NInputs or labels missing from its metadata")
    return SparseAtlas(
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
        part = load_atlas(path).to_accumulator()
        try:
            merged.merge(part)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
    return merged
