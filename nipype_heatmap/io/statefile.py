"""The container of every file this package reads back: a NIfTI image with its metadata as
JSON inside it.

Saved states (:mod:`nipype_heatmap.state`) and sparse atlases
(:mod:`nipype_heatmap.atlas`) are plain NIfTI-1 images on the reference grid, so any NIfTI
tool opens them (``fslhd``, ``mrinfo``, nibabel, a viewer); what else they need travels as
compact JSON in a NIfTI comment extension (code 6) of the same file, so that nothing can
separate them (Nipype deletes undeclared files from node folders). The metadata carries a
``Checksum``, the SHA-256 of the metadata without it and of the voxel bytes as stored: a
file edited or damaged after it was written is refused, whichever part changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator

import nibabel as nb
import numpy as np

from .writing import header_bytes

__all__ = [
    "ECODE_COMMENT",
    "checksum",
    "head_bytes",
    "read_metadata",
    "storage_chunks",
    "verify_checksum",
]

#: NIfTI extension code of the metadata: "comment", readable by every NIfTI library.
ECODE_COMMENT = 6

#: Voxels converted to the stored type per step (no whole converted copy is made).
_STEP = 1 << 20


def storage_chunks(volumes: Iterable[np.ndarray], dtype: np.dtype) -> Iterator[memoryview]:
    """The volumes' voxels as ``dtype`` in NIfTI (Fortran) order, a step at a time: a view
    of a volume stored as it is, converted copies of parts of the others."""
    for values in volumes:
        array = np.asarray(values)
        if array.dtype == dtype and array.flags.f_contiguous:
            yield array.reshape(-1, order="F").data.cast("B")
            continue
        flat = array.reshape(-1, order="F")
        for start in range(0, flat.size, _STEP):
            yield flat[start : start + _STEP].astype(dtype).data


def checksum(meta: dict, chunks: Iterable[bytes | memoryview]) -> str:
    """``"sha256:<hex>"`` of the metadata (without ``Checksum``, as canonical JSON) and the
    voxel bytes."""
    digest = hashlib.sha256(_canonical(meta))
    for chunk in chunks:
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _canonical(meta: dict) -> bytes:
    body = {k: v for k, v in meta.items() if k != "Checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def head_bytes(
    shape: tuple[int, ...],
    dtype: np.dtype,
    affine: np.ndarray,
    xyzt_units: tuple[str, str],
    descrip: str,
    meta: dict,
) -> bytes:
    """The bytes before the voxels: a plain NIfTI-1 header on the grid with ``meta`` as
    compact JSON in a comment extension."""
    header = nb.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(affine, code="aligned")
    header.set_sform(affine, code="aligned")
    header.set_xyzt_units(*xyzt_units)
    header["descrip"] = descrip.encode()[:80]
    text = json.dumps(meta, separators=(",", ":")).encode("utf-8")
    header.extensions.append(nb.nifti1.Nifti1Extension(ECODE_COMMENT, text))
    return header_bytes(header)


def read_metadata(header: nb.nifti1.Nifti1Header, path: str, fmt: str, what: str) -> dict:
    """The JSON metadata of format ``fmt`` in a file's comment extension.

    Raises
    ------
    ValueError
        Naming the file, if there is none, or it is not a JSON object.
    """
    for ext in header.extensions:
        if ext.get_code() != ECODE_COMMENT:
            continue
        content = ext.get_content()
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        if fmt not in text:
            continue
        try:
            meta = json.loads(text)
        except ValueError as err:
            raise ValueError(f"{path}: unreadable {what} metadata ({err})") from err
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: unreadable {what} metadata (not a JSON object)")
        return meta
    raise ValueError(f"{path}: not a nipype_heatmap {what} (no {fmt} metadata)")


def verify_checksum(meta: dict, data: np.ndarray, path: str | os.PathLike[str], what: str) -> None:
    """Refuse a file whose metadata or voxels changed after it was written.

    Raises
    ------
    ValueError
        Naming the file.
    """
    stored = meta.get("Checksum")
    flat = np.asarray(data).reshape(-1, order="F")
    found = checksum(meta, [flat.astype(flat.dtype.newbyteorder("<"), copy=False).data])
    if stored != found:
        raise ValueError(
            f"{path}: this {what} was changed or damaged after it was written (its checksum "
            "does not match its metadata and voxels); use an unaltered copy, or rebuild it "
            "from its inputs"
        )
