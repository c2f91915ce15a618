"""Partial heatmaps as files: chunks computed apart merge exactly, and a saved cohort can
grow and shrink without re-reading it.

A partial heatmap ("state") is one NIfTI-1 file of shape ``(X, Y, Z, K)`` on the
reference grid, float64 or, when every value is an integer (masks, labels), the narrowest
integer type that holds them all exactly. Volume 0 is the voxel-wise sum of finite input
values, volume 1 the voxel-wise number of finite values (the coverage; left out when every
input had a finite value everywhere: it is then ``NInputs``); the cohort statistics follow
when they were tracked (``Volumes`` names them): ``nonzero`` (inputs with a non-zero
value, unless every input was a binary mask: then it is the sum), ``sumsq`` (the exact
integer sum of squares, for integer inputs) or ``m2`` (Welford's sum of squared deviations
from the mean, ``sum / count``, once a floating-point input arrived). Any NIfTI tool opens
it (``fslhd``, ``mrinfo``, nibabel, a viewer). The rest travels inside the same file, as JSON
in a NIfTI comment extension (code 6), so that nothing can separate them (Nipype deletes
undeclared files from node folders)::

    {
      "Format": "nipype_heatmap.partial",
      "FormatVersion": 2,
      "NInputs": 12,                      # volumes accumulated
      "GlobalMin": 0.0, "GlobalMax": 1.0, # over finite input values (null if none)
      "Volumes": ["sum", "count", "m2"],  # what the 4th axis holds, in order
      "CohortStats": {"Overlap": true, "NonzeroIsSum": true,
                      "Spread": true, "SpreadForm": "binary", "SquareBound": 12},
      "Headers": ["<base64 header>", ...],  # the inputs' distinct headers
      "Sources": [                        # every input, in order
        {"Path": "/abs/sub-01.nii.gz",
         "Digest": "sha256:9f2c...",      # of the file's bytes, to recognise it on removal
         "Range": [0, 1],                 # its finite value range (null if none)
         "Header": 0,                     # its header, in "Headers" (each stored once):
                                          # the reference if the inputs before it go
         "ImageClass": "Nifti1Image"},
        ...],
      "Shape": [182, 218, 182],
      "Affine": [[...], [...], [...], [...]],
      "ImageClass": "Nifti1Image",        # or "Nifti2Image"
      "ReferenceHeader": "<base64 of the first input's header bytes>",
      "GeneratedBy": {"Name": "nipype_heatmap", "Version": "0.1.0"}
    }

Print it with ``python -c "import sys; from nipype_heatmap.state import read_metadata;
print(read_metadata(sys.argv[1]))" part.nii.gz | python -m json.tool`` (it is stored
compact).

The sums are float64 and the counts are exact integers, so merging partials gives the
single-pass maps to float64 round-off (exactly, for integer inputs such as masks), and so
does :func:`update_state` after any sequence of additions and removals. Readers refuse a
file of another ``Format`` or a newer ``FormatVersion``; version 1 files (no cohort
statistics, no per-input hashes) are still read and merged, but nothing can be removed
from them.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nb
import numpy as np

from ._version import __version__
from .cohort import CohortStats
from .core import _IMAGE_CLASSES, HeatmapAccumulator, SourceRecord
from .io import check_output_filename, read_nifti_data, write_atomic

FORMAT = "nipype_heatmap.partial"
FORMAT_VERSION = 2

#: Versions this module reads.
READABLE_VERSIONS = (1, 2)


#: NIfTI extension code of the metadata: "comment", readable by every NIfTI library.
ECODE_COMMENT = 6


def read_metadata(state_file: str | os.PathLike[str]) -> str:
    """Return the JSON metadata embedded in a partial heatmap, as text."""
    return _metadata_text(nb.load(state_file).header, Path(state_file))


def _metadata_text(
    header: nb.Nifti1Header, path: Path, fmt: str = FORMAT, what: str = "partial heatmap"
) -> str:
    """The JSON of format ``fmt`` in a state file's comment extension (partial heatmaps,
    sparse atlases); ValueError naming the file if there is none."""
    for ext in header.extensions:
        if ext.get_code() == ECODE_COMMENT:
            content = ext.get_content()
            text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
            if fmt in text:
                return text
    raise ValueError(f"{path}: not a nipype_heatmap {what} (no {fmt} metadata)")


def state_head(
    shape: Sequence[int],
    dtype: np.dtype,
    affine: np.ndarray,
    ref_header: nb.nifti1.Nifti1Header,
    descrip: str,
    meta: dict,
) -> bytes:
    """The header of a state file (a plain NIfTI-1 image on the reference grid) with its
    metadata as compact JSON in a comment extension: the bytes before the voxels."""
    header = nb.Nifti1Header()
    header.set_data_shape(tuple(shape))
    header.set_data_dtype(dtype)
    header.set_qform(affine, code="aligned")
    header.set_sform(affine, code="aligned")
    header.set_xyzt_units(*ref_header.get_xyzt_units())
    header["descrip"] = descrip.encode()[:80]
    header.extensions.append(
        nb.nifti1.Nifti1Extension(
            ECODE_COMMENT, json.dumps(meta, separators=(",", ":")).encode("utf-8")
        )
    )
    head = io.BytesIO()
    header.write_to(head)  # header, extensions; vox_offset is set to where they end
    assert head.tell() == int(header["vox_offset"])
    return head.getvalue()


def save_state(acc: HeatmapAccumulator, state_file: str | os.PathLike[str]) -> str:
    """Write an accumulator as a partial heatmap file (see the module docstring), atomically.

    The volumes stream from the accumulator's memory into the compressor, a block at a
    time: no 4D copy of them is ever made.

    Raises
    ------
    ValueError
        If the accumulator is empty or the name does not end in ``.nii``/``.nii.gz``.
    """
    if acc.n_inputs == 0 or acc.ref_shape is None or acc.ref_header is None:
        raise ValueError("cannot save an empty partial heatmap: no volume was added")
    check_output_filename(os.path.basename(os.fspath(state_file)))
    exact = acc.integer_total  # stored as it is when integers: no float64 round trip
    total = exact if exact is not None else acc.total
    count = acc.count if acc.count is not None else acc.n_inputs
    volumes: list[tuple[str, np.ndarray]] = [("sum", total)]
    if acc.count is not None:  # else every input had a value everywhere: NInputs
        volumes.append(("count", acc.count))
    stats_meta = None
    if acc.stats is not None:
        stats_meta, stats_volumes = acc.stats.to_state(count, lambda: acc.total)
        volumes += stats_volumes
    meta = {
        "Format": FORMAT,
        "FormatVersion": FORMAT_VERSION,
        "NInputs": acc.n_inputs,
        "GlobalMin": acc.global_min,
        "GlobalMax": acc.global_max,
        "Volumes": [name for name, _ in volumes],
        "CohortStats": stats_meta,
        **provenance_to_json(
            acc.records, acc.ref_shape, acc.ref_affine, acc.image_class, acc.ref_header
        ),
    }
    dtype = _storage_dtype(acc, volumes)
    names = ", ".join(name for name, _ in volumes)
    head = state_head(
        (*acc.ref_shape, len(volumes)),
        dtype,
        acc.ref_affine,
        acc.ref_header,
        f"nipype_heatmap partial: {names} of {acc.n_inputs}",
        meta,
    )
    return write_atomic(
        [head, *(b for _, v in volumes for b in _volume_bytes(v, dtype))],
        state_file,
        num_threads=acc.num_threads,
    )


#: Types a state's volumes are stored in: the narrowest that holds every value exactly.
_STORAGE_TYPES = tuple(np.dtype(t) for t in ("uint8", "uint16", "int16", "uint32", "int32"))


def _storage_dtype(acc: HeatmapAccumulator, volumes) -> np.dtype:
    """The narrowest integer type holding every volume exactly, else float64.

    While the sum is exact integers (every input an unscaled integer volume: masks,
    labels), so are the counts and the sums of squares: stored in uint8 or uint16 they take
    a fraction of the space and time of float64 (a state of 1000 masks: uint16),
    losslessly. The bounds come from the inputs' value ranges, not from scanning the data.
    Anything else (a floating-point input's sum, Welford's M2) keeps float64 for all.
    """
    bounds = acc.integer_bounds()
    names = {name for name, _ in volumes}
    if bounds is None or "m2" in names:
        return np.dtype(np.float64)
    low, high = min(bounds[0], 0), max(bounds[1], acc.n_inputs)
    if "sumsq" in names:
        high = max(high, acc.stats.sq_bound)  # type: ignore[union-attr]
    for dtype in _STORAGE_TYPES:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return dtype
    return np.dtype(np.float64)


def provenance_to_json(records, shape, affine, image_class, ref_header) -> dict:
    """The metadata every state file carries (partial heatmaps, sparse atlases): the inputs
    (``Sources``, each distinct header once in ``Headers``), the grid, the image class, the
    reference header and what wrote it."""
    header_index: dict[bytes | None, int] = {}
    for record in records:  # inputs of one pipeline share one header: store it once
        header_index.setdefault(record.header, len(header_index))
    return {
        "Headers": [
            None if block is None else base64.b64encode(block).decode("ascii")
            for block in header_index
        ],
        "Sources": [_record_to_json(r, header_index) for r in records],
        "Shape": [int(n) for n in shape],
        "Affine": np.asarray(affine).tolist(),
        "ImageClass": image_class.__name__,
        "ReferenceHeader": base64.b64encode(ref_header.binaryblock).decode("ascii"),
        "GeneratedBy": {"Name": "nipype_heatmap", "Version": __version__},
    }


def provenance_from_json(meta: dict):
    """Read :func:`provenance_to_json`'s fields back: ``(records, shape, affine,
    image_class, ref_header)``.

    Raises
    ------
    KeyError, TypeError, ValueError, IndexError
        If a field is missing or malformed (the caller names the file).
    """
    shape = tuple(int(n) for n in meta["Shape"])
    affine = np.asarray(meta["Affine"], dtype=np.float64)
    klass = _IMAGE_CLASSES[meta["ImageClass"]]
    ref_bytes = base64.b64decode(meta["ReferenceHeader"])
    ref_header = klass.header_class.from_fileobj(io.BytesIO(ref_bytes))
    headers = [None if h is None else base64.b64decode(h) for h in meta.get("Headers", [])]
    records = [_record_from_json(item, headers) for item in meta["Sources"]]
    if records and records[0].header is None:
        records[0] = SourceRecord(records[0].path, None, ref_bytes, meta["ImageClass"])
    return records, shape, affine, klass, ref_header


def _record_to_json(record: SourceRecord, header_index: dict[bytes | None, int]) -> dict:
    return {
        "Path": record.path,
        "Digest": record.digest,
        "Range": None if record.value_range is None else list(record.value_range),
        "Header": header_index[record.header],
        "ImageClass": record.image_class,
    }


def _record_from_json(item, headers: list[bytes | None]) -> SourceRecord:
    if isinstance(item, str):  # format version 1: the path only
        return SourceRecord(item, None, None)
    value_range = item["Range"]
    header = item["Header"]
    return SourceRecord(
        str(item["Path"]),
        None if value_range is None else (float(value_range[0]), float(value_range[1])),
        None if header is None else headers[int(header)],
        str(item.get("ImageClass") or "Nifti1Image"),
        item.get("Digest"),
    )


def _volume_bytes(values: np.ndarray, dtype: np.dtype, block: int = 1 << 20):
    """A volume as ``dtype`` bytes in NIfTI (Fortran) order, a block at a time; no whole
    copy is made."""
    array = np.asarray(values)
    if array.dtype == dtype and array.flags.f_contiguous:
        yield memoryview(array.reshape(-1, order="F")).cast("B")  # a view, no copy
        return
    flat = array.reshape(-1, order="F")
    for start in range(0, flat.size, block):
        yield flat[start : start + block].astype(dtype).tobytes()


def load_state(state_file: str | os.PathLike[str]) -> HeatmapAccumulator:
    """Read a partial heatmap written by :func:`save_state` back into an accumulator.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If it is corrupt, of another format or a newer version, or its data disagree with
        its metadata (shape, affine, number of volumes and inputs). The message names the
        file.
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
    if meta.get("FormatVersion") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path}: partial heatmap format version {meta.get('FormatVersion')} is not one "
            f"of {READABLE_VERSIONS}; merge with the nipype_heatmap version that wrote it"
        )
    try:
        records, shape, affine, klass, ref_header = provenance_from_json(meta)
        n_inputs = int(meta["NInputs"])
        names = list(meta.get("Volumes", ["sum", "count"]))
        global_min, global_max = meta["GlobalMin"], meta["GlobalMax"]
        stats_meta = meta.get("CohortStats")
    except (KeyError, TypeError, ValueError, IndexError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt partial heatmap ({type(err).__name__}: {err})") from err
    if data.shape != (*shape, len(names)) or data.dtype not in (*_STORAGE_TYPES, np.float64):
        raise ValueError(
            f"{path}: data {data.shape} {data.dtype} do not match its metadata's "
            f"{(*shape, len(names))} (float64 or a narrower integer type)"
        )
    if not np.allclose(header.get_best_affine(), affine, atol=1e-4):
        raise ValueError(f"{path}: affine differs from the one its metadata records")
    volumes = {name: data[..., i] for i, name in enumerate(names)}
    if names[:1] != ["sum"] or len(set(names)) != len(names):
        raise ValueError(f"{path}: corrupt partial heatmap (volumes {names})")
    count = volumes.get("count")  # absent: NInputs everywhere (version 1 always has it)
    if (
        n_inputs < 1
        or len(records) != n_inputs
        or (count is not None and (count.max() > n_inputs or count.min() < 0))
    ):
        raise ValueError(f"{path}: counts and sources disagree with NInputs={n_inputs}")
    stats = None
    if stats_meta is not None:
        try:
            stats = CohortStats.from_state(stats_meta, volumes, shape)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}: corrupt cohort statistics ({type(err).__name__}: {err})"
            ) from err
    total = volumes["sum"]
    if total.dtype != np.float64 and any(r.value_range is None for r in records):
        total = total.astype(np.float64, order="F")  # no ranges to bound it: float64
    return HeatmapAccumulator.from_parts(
        total=total,
        count=None
        if count is None or np.all(count == n_inputs)
        else count.astype(np.uint32, order="F"),
        records=records,
        global_range=None if global_min is None else (float(global_min), float(global_max)),
        ref_affine=affine,
        ref_header=ref_header,
        image_class=klass,
        stats=stats,
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


#: How many new files an update reads ahead while the state loads (memory: that many
#: input volumes as stored, whatever the size of the state).
_UPDATE_READ_AHEAD = 8


def update_state(
    state_file: str | os.PathLike[str],
    *,
    add: Sequence[str | os.PathLike[str]] = (),
    remove: Sequence[str | os.PathLike[str]] = (),
    out_file: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    progress: bool | None = None,
    debug: bool = False,
) -> HeatmapAccumulator:
    """Add files to a saved state and remove files from it, reading only those files.

    The state's inputs become: its inputs without ``remove``, in their order, then ``add``,
    in theirs. The maps made from the updated state equal a recompute from that list: bit
    for bit while every input that was ever in the state is an unscaled integer volume
    (masks, counts: sums, counts and sums of squares are exact integers), to float64
    round-off once a floating-point input has been in it (its value was added and is
    subtracted again in float64). When the first input is removed, the next becomes the
    reference (its header and voxel order), as in a recompute.

    Parameters
    ----------
    state_file : str or os.PathLike
        A partial heatmap (:func:`save_state`, :class:`PartialHeatmap`, ``--save-state``).
    add : sequence of path-like
        Files to add; none may already be an input of the state.
    remove : sequence of path-like
        Files to remove, matched by absolute path; each must be unchanged since it was
        added (its content hash is checked).
    out_file : path-like, optional
        Where to write the updated state; default: replace ``state_file`` (atomically,
        only after every step succeeded).
    num_threads, progress, debug
        As for :func:`~nipype_heatmap.core.accumulate_files`.

    Returns
    -------
    HeatmapAccumulator
        The updated state (to write maps from).

    Raises
    ------
    ValueError
        If a file to remove is not in the state, changed, or was added without a hash
        (version 1 states); a file to add is already in it; or nothing would be left. The
        state file is then unchanged.
    """
    from .core import accumulate_files
    from .io import iter_volumes, prepare_output
    from .parallel import resolve_num_threads

    state_path = os.path.abspath(os.fspath(state_file))
    target = prepare_output(state_path if out_file is None else out_file)
    to_add = [os.path.abspath(os.fspath(p)) for p in add]
    threads = resolve_num_threads(num_threads)
    # The new files are read (on the reader threads) while the state inflates on another,
    # up to _UPDATE_READ_AHEAD of them ahead so that the readers do not wait for the
    # state; nothing is added before every check below has passed.
    ahead = max(2, threads, min(len(to_add), _UPDATE_READ_AHEAD))
    volumes = iter_volumes(to_add, read_ahead=ahead, workers=threads, digest=True)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="heatmap-state") as pool:
            loading = pool.submit(load_state, state_path)
            first = [next(volumes)] if to_add else []
            acc = loading.result()
        indices = _check_update(acc, state_path, target, to_add, remove)
        if to_add:
            acc = accumulate_files(
                to_add,
                acc=acc,
                volumes=itertools.chain(first, volumes),
                num_threads=threads,
                progress=progress,
                debug=debug,
            )
    finally:
        volumes.close()
    try:
        for index in sorted(indices, reverse=True):
            acc.remove_file_at(index)
    finally:
        acc.close()
    save_state(acc, target)
    return acc


def _check_update(
    acc: HeatmapAccumulator,
    state_path: str,
    target: str,
    to_add: Sequence[str],
    remove: Sequence[str | os.PathLike[str]],
) -> list[int]:
    """Check an update before anything changes; return the indices of the inputs to remove.

    Raises
    ------
    ValueError
        As :func:`update_state`.
    """
    from .core import _refuse_output_among_inputs
    from .io import warn_duplicates

    indices: list[int] = []
    for path in (os.path.abspath(os.fspath(p)) for p in remove):
        found = [i for i, r in enumerate(acc.records) if r.path == path and i not in indices]
        if not found:
            raise ValueError(
                f"{path}: not an input of the state {state_path} (or listed twice); nothing "
                "to remove (files are matched by absolute path)"
            )
        if acc.records[found[-1]].digest is None:
            raise ValueError(
                f"{path}: the state {state_path} holds no content hash for it (a format "
                "version 1 state); rebuild the state with this version to remove files"
            )
        indices.append(found[-1])
    if len(acc.records) - len(indices) + len(to_add) < 1:
        raise ValueError(f"{state_path}: removing every input would leave an empty state")
    kept = {r.path: i for i, r in enumerate(acc.records) if i not in indices}
    for path in to_add:
        if path in kept:
            raise ValueError(
                f"{path}: already an input of the state {state_path} (input {kept[path] + 1}); "
                "to replace it with a corrected version, remove it while the old version is "
                "still there (the removal checks its hash), then add the new one"
            )
    warn_duplicates(to_add)
    _refuse_output_among_inputs(to_add, [state_path, target])
    return indices
