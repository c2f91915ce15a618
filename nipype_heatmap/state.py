"""Partial heatmaps as files, so that chunks computed apart (cluster jobs) merge exactly.

A partial heatmap ("state") is one float64 NIfTI-1 file of shape ``(X, Y, Z, 2)`` on the
reference grid: volume 0 is the voxel-wise sum of finite input values, volume 1 the
voxel-wise number of finite values. Any NIfTI tool opens it (``fslhd``, ``mrinfo``,
nibabel, a viewer). The rest travels inside the same file, as JSON in a NIfTI comment
extension (code 6), so that nothing can separate them (Nipype deletes undeclared files
from node folders)::

    {
      "Format": "nipype_heatmap.partial",
      "FormatVersion": 1,
      "NInputs": 12,                      # volumes accumulated
      "GlobalMin": 0.0, "GlobalMax": 1.0, # over finite input values (null if none)
      "Sources": ["/abs/path/sub-01.nii.gz", ...],   # in order
      "ReferencePath": "/abs/path/sub-01.nii.gz",    # the first input
      "Shape": [182, 218, 182],
      "Affine": [[...], [...], [...], [...]],
      "ImageClass": "Nifti1Image",        # or "Nifti2Image"
      "ReferenceHeader": "<base64 of the first input's header bytes>",
      "GeneratedBy": {"Name": "nipype_heatmap", "Version": "0.1.0"}
    }

Print it with ``python -c "import sys; from nipype_heatmap.state import read_metadata;
print(read_metadata(sys.argv[1]))" part.nii.gz`` (or ``nib-ls -H``).

The sums are float64 and the counts are exact integers, so merging partials gives the
single-pass heatmap to float64 round-off (exactly, for integer inputs such as masks).
Readers refuse a file of another ``Format`` or a newer ``FormatVersion``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import zlib
from pathlib import Path

import nibabel as nb
import numpy as np

from . import __version__
from .core import HeatmapAccumulator
from .io import check_output_filename, read_nifti_data, write_atomic

FORMAT = "nipype_heatmap.partial"
FORMAT_VERSION = 1


#: NIfTI extension code of the metadata: "comment", readable by every NIfTI library.
ECODE_COMMENT = 6


def read_metadata(state_file: str | os.PathLike[str]) -> str:
    """Return the JSON metadata embedded in a partial heatmap, as text."""
    return _metadata_text(nb.load(state_file).header, Path(state_file))


def _metadata_text(header: nb.Nifti1Header, path: Path) -> str:
    for ext in header.extensions:
        if ext.get_code() == ECODE_COMMENT:
            content = ext.get_content()
            text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
            if FORMAT in text:
                return text
    raise ValueError(f"{path}: not a nipype_heatmap partial heatmap (no {FORMAT} metadata)")


def save_state(acc: HeatmapAccumulator, state_file: str | os.PathLike[str]) -> str:
    """Write an accumulator as a partial heatmap file (see the module docstring), atomically.

    The sum and the count stream from the accumulator's memory into the compressor: no
    4D copy of them is ever made.

    Raises
    ------
    ValueError
        If the accumulator is empty or the name does not end in ``.nii``/``.nii.gz``.
    """
    if acc.n_inputs == 0 or acc.ref_shape is None or acc.ref_header is None:
        raise ValueError("cannot save an empty partial heatmap: no volume was added")
    check_output_filename(os.path.basename(os.fspath(state_file)))
    meta = {
        "Format": FORMAT,
        "FormatVersion": FORMAT_VERSION,
        "NInputs": acc.n_inputs,
        "GlobalMin": acc.global_min,
        "GlobalMax": acc.global_max,
        "Sources": list(acc.sources),
        "ReferencePath": acc.ref_path,
        "Shape": list(acc.ref_shape),
        "Affine": np.asarray(acc.ref_affine).tolist(),
        "ImageClass": acc.image_class.__name__,
        "ReferenceHeader": base64.b64encode(acc.ref_header.binaryblock).decode("ascii"),
        "GeneratedBy": {"Name": "nipype_heatmap", "Version": __version__},
    }
    header = nb.Nifti1Header()
    header.set_data_shape((*acc.ref_shape, 2))
    header.set_data_dtype(np.float64)
    header.set_qform(acc.ref_affine, code="aligned")
    header.set_sform(acc.ref_affine, code="aligned")
    header.set_xyzt_units(*acc.ref_header.get_xyzt_units())
    header["descrip"] = f"nipype_heatmap partial: sum, count of {acc.n_inputs}".encode()[:80]
    header.extensions.append(
        nb.nifti1.Nifti1Extension(ECODE_COMMENT, json.dumps(meta, indent=1).encode("utf-8"))
    )
    head = io.BytesIO()
    header.write_to(head)  # header, extensions; vox_offset is set to where they end
    assert head.tell() == int(header["vox_offset"])
    return write_atomic([head.getvalue(), *_volume_bytes(acc)], state_file)


def _volume_bytes(acc: HeatmapAccumulator, block: int = 1 << 20):
    """The sum then the count, as float64 bytes in NIfTI (Fortran) order, a block at a time."""
    total = acc.total.reshape(-1, order="F")  # a view: the sum is Fortran-contiguous
    yield memoryview(total).cast("B")
    count = acc.count.reshape(-1, order="F") if acc.count is not None else None
    for start in range(0, total.size, block):
        stop = min(start + block, total.size)
        if count is None:
            yield np.full(stop - start, float(acc.n_inputs)).tobytes()
        else:
            yield count[start:stop].astype(np.float64).tobytes()


def load_state(state_file: str | os.PathLike[str]) -> HeatmapAccumulator:
    """Read a partial heatmap written by :func:`save_state` back into an accumulator.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If it is corrupt, of another format or a newer version, or its data disagree with
        its metadata (shape, affine, number of volumes). The message names the file.
    """
    path = Path(state_file).absolute()
    if not path.exists():
        raise FileNotFoundError(f"{path}: partial heatmap file is missing")
    header, data = read_nifti_data(path)  # ValueError naming the file if unreadable
    try:
        meta = json.loads(_metadata_text(header, path))
    except ValueError as err:
        raise ValueError(f"{path}: unreadable partial heatmap metadata ({err})") from err
    if not isinstance(meta, dict) or meta.get("Format") != FORMAT:
        raise ValueError(f"{path}: not a nipype_heatmap partial heatmap (Format != {FORMAT})")
    if meta.get("FormatVersion") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: partial heatmap format version {meta.get('FormatVersion')} is not "
            f"{FORMAT_VERSION}; merge with the nipype_heatmap version that wrote it"
        )
    try:
        shape = tuple(int(n) for n in meta["Shape"])
        affine = np.asarray(meta["Affine"], dtype=np.float64)
        klass = {"Nifti1Image": nb.Nifti1Image, "Nifti2Image": nb.Nifti2Image}[meta["ImageClass"]]
        ref_header = klass.header_class(base64.b64decode(meta["ReferenceHeader"]))
        n_inputs = int(meta["NInputs"])
        sources = [str(s) for s in meta["Sources"]]
        global_min, global_max = meta["GlobalMin"], meta["GlobalMax"]
    except (KeyError, TypeError, ValueError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt partial heatmap ({type(err).__name__}: {err})") from err
    if data.shape != (*shape, 2) or data.dtype != np.float64:
        raise ValueError(
            f"{path}: data {data.shape} {data.dtype} do not match its metadata's "
            f"{(*shape, 2)} float64"
        )
    if not np.allclose(header.get_best_affine(), affine, atol=1e-4):
        raise ValueError(f"{path}: affine differs from the one its metadata records")
    count = data[..., 1]
    if len(sources) != n_inputs or count.max() > n_inputs or count.min() < 0:
        raise ValueError(f"{path}: counts and sources disagree with NInputs={n_inputs}")
    return HeatmapAccumulator.from_parts(
        total=data[..., 0],
        count=None if np.all(count == n_inputs) else count.astype(np.uint32, order="F"),
        n_inputs=n_inputs,
        sources=sources,
        global_range=None if global_min is None else (float(global_min), float(global_max)),
        ref_path=meta.get("ReferencePath") or sources[0],
        ref_affine=affine,
        ref_header=ref_header,
        image_class=klass,
    )


def merge_states(state_files) -> HeatmapAccumulator:
    """Load and merge partial heatmaps, in order.

    Raises
    ------
    ValueError
        If no file is given, a file is not a valid partial heatmap, or the partials are not
        on one grid (naming the one that differs).
    """
    files = list(state_files)
    if not files:
        raise ValueError("no partial heatmap given; nothing to merge")
    merged = HeatmapAccumulator()
    for state_file in files:
        part = load_state(state_file)
        try:
            merged.merge(part)
        except ValueError as err:
            raise ValueError(f"{state_file}: {err}") from err
        del part  # one partial in memory at a time, not two
    return merged
