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
import json
import os
import zlib
from pathlib import Path

import nibabel as nb
import numpy as np

from . import __version__
from .core import HeatmapAccumulator
from .io import save_atomic

FORMAT = "nipype_heatmap.partial"
FORMAT_VERSION = 1


#: NIfTI extension code of the metadata: "comment", readable by every NIfTI library.
ECODE_COMMENT = 6


def read_metadata(state_file: str | os.PathLike[str]) -> str:
    """Return the JSON metadata embedded in a partial heatmap, as text."""
    return _metadata_text(nb.load(state_file), Path(state_file))


def _metadata_text(img: nb.Nifti1Image, path: Path) -> str:
    for ext in img.header.extensions:
        if ext.get_code() == ECODE_COMMENT:
            content = ext.get_content()
            text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
            if FORMAT in text:
                return text
    raise ValueError(f"{path}: not a nipype_heatmap partial heatmap (no {FORMAT} metadata)")


def save_state(acc: HeatmapAccumulator, state_file: str | os.PathLike[str]) -> str:
    """Write an accumulator as a partial heatmap file (see the module docstring), atomically.

    Raises
    ------
    ValueError
        If the accumulator is empty or the name does not end in ``.nii``/``.nii.gz``.
    """
    if acc.n_inputs == 0 or acc.ref_shape is None or acc.ref_header is None:
        raise ValueError("cannot save an empty partial heatmap: no volume was added")
    total = acc.total
    count = (
        acc.count.astype(np.float64)
        if acc.count is not None
        else np.full(acc.ref_shape, float(acc.n_inputs))
    )
    data = np.stack([total, count], axis=-1)
    img = nb.Nifti1Image(data, acc.ref_affine)
    img.header.set_data_dtype(np.float64)
    img.header.set_xyzt_units(*acc.ref_header.get_xyzt_units())
    img.header["descrip"] = f"nipype_heatmap partial: sum, count of {acc.n_inputs}".encode()[:80]
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
    img.header.extensions.append(
        nb.nifti1.Nifti1Extension(ECODE_COMMENT, json.dumps(meta, indent=1).encode("utf-8"))
    )
    return save_atomic(img, state_file)


def load_state(state_file: str | os.PathLike[str]) -> HeatmapAccumulator:
    """Read a partial heatmap written by :func:`save_state` back into an accumulator.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If either is corrupt, of another format or a newer version, or they disagree
        (shape, affine, number of volumes). The message names the file.
    """
    path = Path(state_file).absolute()
    if not path.exists():
        raise FileNotFoundError(f"{path}: partial heatmap file is missing")
    try:
        img = nb.load(path)
        meta = json.loads(_metadata_text(img, path))
    except ValueError as err:
        raise ValueError(f"{path}: unreadable partial heatmap metadata ({err})") from err
    except (OSError, EOFError, nb.filebasedimages.ImageFileError) as err:
        raise ValueError(f"{path}: corrupt partial heatmap ({type(err).__name__}: {err})") from err
    if not isinstance(meta, dict) or meta.get("Format") != FORMAT:
        raise ValueError(f"{path}: not a nipype_heatmap partial heatmap (Format != {FORMAT})")
    if meta.get("FormatVersion") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: partial heatmap format version {meta.get('FormatVersion')} is not "
            f"{FORMAT_VERSION}; merge with the nipype_heatmap version that wrote it"
        )
    try:
        data = np.asanyarray(img.dataobj, dtype=np.float64)
        shape = tuple(int(n) for n in meta["Shape"])
        affine = np.asarray(meta["Affine"], dtype=np.float64)
        klass = {"Nifti1Image": nb.Nifti1Image, "Nifti2Image": nb.Nifti2Image}[meta["ImageClass"]]
        header = klass.header_class(base64.b64decode(meta["ReferenceHeader"]))
        n_inputs = int(meta["NInputs"])
        sources = [str(s) for s in meta["Sources"]]
    except (KeyError, TypeError, ValueError, OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt partial heatmap ({type(err).__name__}: {err})") from err
    if data.shape != (*shape, 2):
        raise ValueError(
            f"{path}: data shape {data.shape} does not match its metadata's {(*shape, 2)}"
        )
    if not np.allclose(img.affine, affine, atol=1e-4):
        raise ValueError(f"{path}: affine differs from the one its metadata records")
    count = data[..., 1]
    if len(sources) != n_inputs or (count.size and count.max() > n_inputs) or count.min() < 0:
        raise ValueError(f"{path}: counts and sources disagree with NInputs={n_inputs}")

    acc = HeatmapAccumulator()
    acc.n_inputs = n_inputs
    acc.sources = sources
    acc.ref_path = meta.get("ReferencePath") or (sources[0] if sources else str(path))
    acc.ref_shape = shape  # type: ignore[assignment]
    acc.ref_affine = affine
    acc.ref_header = header
    acc.image_class = klass
    acc.global_min = None if meta["GlobalMin"] is None else float(meta["GlobalMin"])
    acc.global_max = None if meta["GlobalMax"] is None else float(meta["GlobalMax"])
    acc._float_total = np.asfortranarray(data[..., 0])
    if not np.all(count == n_inputs):
        acc.count = np.asfortranarray(count.astype(np.uint32))
    return acc


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
    return merged
