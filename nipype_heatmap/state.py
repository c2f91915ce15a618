"""Saved states: an accumulator as a file, so that chunks computed apart merge exactly and a
saved cohort can grow and shrink without re-reading it.

A state is one NIfTI-1 file of shape ``(X, Y, Z, K)`` on the reference grid (see
:mod:`nipype_heatmap.io.statefile` for the container), holding the accumulator's
per-voxel arrays as volumes, in this order (``Volumes`` names them):

- ``sum``: the sum of finite input values (``S``);
- ``count``: how many inputs have a finite value (left out when every input had one
  everywhere: it is then ``NInputs``);
- ``nonzero``: how many inputs have a non-zero value, when the overlap is tracked and some
  input was not a binary mask (else it is the sum);
- ``squares`` (the exact integer sum of squares, integer inputs) or ``m2`` (Welford's sum
  of squared deviations from the mean ``S / n``), when the spread is tracked.

All volumes share one type: the narrowest integer type that holds every value exactly
while the state is exact (every input an integer volume: masks, labels; uint8 or uint16
for masks), else float64. The metadata::

    {
      "Format": "nipype_heatmap.state", "FormatVersion": 3,
      "NInputs": 12,
      "Volumes": ["sum", "count", "m2"],
      "Sum": {"Exact": false, "Rounding": 1.2e-15},   # bound on |S - exact sum|
      "CohortStats": {"Overlap": true, "Spread": true,
                      "SpreadForm": "welford", "SquareBound": 0},
      "Headers": ["<base64 header>", ...],          # each distinct input header once
      "Sources": [{"Path": "/abs/sub-01.nii.gz",
                   "Digest": "sha256:9f2c...",      # of the file's bytes
                   "Identity": [2049, 1234567],     # device and inode when it was read
                   "Range": [0, 1], "Integer": true,
                   "Header": 0, "ImageClass": "Nifti1Image"}, ...],
      "Shape": [182, 218, 182], "Affine": [[...], ...], "ImageClass": "Nifti1Image",
      "ReferenceHeader": "<base64 of the first input's header>",
      "GeneratedBy": {"Name": "nipype_heatmap", "Version": "0.1.0"},
      "Checksum": "sha256:..."                      # of all the above and the voxels
    }

The input range of the maps, the exact sum's bounds and the magnitudes behind the rounding
bound are all derived from ``Sources``, so they cannot disagree with it. Loading checks the
checksum, then every field against the data and the others (see :func:`load_state`); a
state that fails any check is refused naming the file.

Print the metadata with ``python -c "import sys; from nipype_heatmap.state import
read_metadata; print(read_metadata(sys.argv[1]))" state.nii.gz | python -m json.tool``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from ._version import __version__
from .accumulate import (
    IMAGE_CLASSES,
    FiniteCount,
    HeatmapAccumulator,
    NonzeroCount,
    Reference,
    SourceRecord,
    Spread,
    VoxelSum,
    header_from_bytes,
    records_from_json,
    records_to_json,
)
from .accumulate.spread import EXACT_SQUARES_LIMIT
from .io import Grid, OutputPlan, read_nifti_data, statefile

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "VOLUMES",
    "load_state",
    "merge_states",
    "read_metadata",
    "save_state",
    "state_chunks",
]

FORMAT = "nipype_heatmap.state"
FORMAT_VERSION = 3

#: The volumes a state may hold, in their order.
VOLUMES = ("sum", "count", "nonzero", "squares", "m2")

#: Types a state's volumes are stored in: the narrowest that holds every value exactly.
_STORAGE_TYPES = tuple(
    np.dtype(t) for t in ("uint8", "uint16", "int16", "uint32", "int32", "int64")
)


# -- writing --------------------------------------------------------------------------------
def _volumes(acc: HeatmapAccumulator) -> list[tuple[str, np.ndarray]]:
    candidates = [
        ("sum", acc.sum.values),
        ("count", acc.count.per_voxel),  # None: every input complete, n is NInputs
        ("nonzero", None if acc.nonzero is None else acc.nonzero.counts),  # None: the sum
        ("squares", None if acc.spread is None else acc.spread.squares),
        ("m2", None if acc.spread is None else acc.spread.m2),
    ]
    return [(name, array) for name, array in candidates if array is not None]


def _storage_dtype(acc: HeatmapAccumulator, names: Sequence[str]) -> np.dtype:
    """The narrowest integer type holding every volume exactly, else float64."""
    if not acc.exact or "m2" in names:
        return np.dtype(np.float64)
    low, high = min(acc.sum.low, 0), max(acc.sum.high, acc.n_inputs)
    if "squares" in names and acc.spread is not None:
        high = max(high, acc.spread.square_bound)
    for dtype in _STORAGE_TYPES:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return dtype
    return np.dtype(np.float64)


def state_chunks(acc: HeatmapAccumulator) -> Iterator[bytes | memoryview]:
    """The bytes of an accumulator's state file, for an output plan (module doc).

    The volumes stream from the accumulator's memory (converted a block at a time when
    stored in another type): no 4D copy of them is made.
    """
    volumes = _volumes(acc)
    names = [name for name, _ in volumes]
    dtype = _storage_dtype(acc, names)
    reference = acc.reference
    meta = {
        "Format": FORMAT,
        "FormatVersion": FORMAT_VERSION,
        "NInputs": acc.n_inputs,
        "Volumes": names,
        "Sum": {"Exact": acc.exact, "Rounding": acc.sum.rounding},
        "CohortStats": {
            "Overlap": acc.nonzero is not None,
            "Spread": acc.spread is not None,
            "SpreadForm": None if acc.spread is None else acc.spread.form,
            "SquareBound": 0 if acc.spread is None else acc.spread.square_bound,
        },
        **records_to_json(acc.records),
        "Shape": [int(n) for n in acc.shape],
        "Affine": np.asarray(acc.affine).tolist(),
        "ImageClass": reference.image_class.__name__,
        "ReferenceHeader": base64.b64encode(reference.header.binaryblock).decode("ascii"),
        "GeneratedBy": {"Name": "nipype_heatmap", "Version": __version__},
    }
    arrays = [array for _, array in volumes]
    meta["Checksum"] = statefile.checksum(meta, statefile.storage_chunks(arrays, dtype))
    yield statefile.head_bytes(
        (*acc.shape, len(volumes)),
        dtype,
        acc.affine,
        reference.header.get_xyzt_units(),
        f"nipype_heatmap state: {', '.join(names)} of {acc.n_inputs}",
        meta,
    )
    yield from statefile.storage_chunks(arrays, dtype)


def save_state(acc: HeatmapAccumulator, state_file: str | os.PathLike[str]) -> str:
    """Write an accumulator as a state file, atomically.

    Raises
    ------
    ValueError
        If the accumulator is empty (no input added: no state could be loaded back), or
        the name does not end in ``.nii``/``.nii.gz``.
    OSError
        If it cannot be written (the previous file, if any, is unchanged).
    """
    if acc.n_inputs < 1:
        raise ValueError(
            f"{os.fspath(state_file)}: the accumulator is empty (no input added); a state "
            "needs at least one input"
        )
    with OutputPlan() as plan:
        path = plan.add("state", state_file)
        plan.write("state", state_chunks(acc))
        plan.commit()
    return path


# -- reading --------------------------------------------------------------------------------
def read_metadata(state_file: str | os.PathLike[str]) -> str:
    """Return the JSON metadata of a state file, as text."""
    path = os.path.abspath(os.fspath(state_file))
    header, _ = read_nifti_data(path)
    return json.dumps(statefile.read_metadata(header, path, FORMAT, "state"))


def load_state(state_file: str | os.PathLike[str]) -> HeatmapAccumulator:
    """Read a state file back into an accumulator, after checking all of it.

    Checked: the format and version; the checksum (the metadata and voxels are those
    written); every field's type; ``NInputs`` against the sources; the volumes against
    the statistics tracked and the inputs (an exact sum, a binary spread or a sum standing
    for the non-zero count only where every input allows it); the data's shape, type and
    affine against the metadata; and the values: an exact sum within the bounds its inputs'
    ranges give, a floating sum within their magnitudes and its rounding bound, counts from
    0 to ``NInputs``, sums of squares within their bound, ``M2`` finite and non-negative.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        Naming the file and what is wrong, whatever fails underneath.
    """
    path = os.path.abspath(os.fspath(state_file))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: state file is missing")
    header, data = read_nifti_data(path)
    meta = statefile.read_metadata(header, path, FORMAT, "state")
    if meta.get("Format") != FORMAT:
        raise ValueError(f"{path}: not a nipype_heatmap state (Format != {FORMAT})")
    version = meta.get("FormatVersion")
    if type(version) is not int or version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise ValueError(
            f"{path}: state format version {version} is not {FORMAT_VERSION}; "
            + (
                "it was written by a newer nipype_heatmap: update this one"
                if newer
                else "rebuild the state from its inputs with this version"
            )
        )
    statefile.verify_checksum(meta, data, path, "state")
    try:
        return _restore(meta, data, header)
    except _Invalid as err:
        raise ValueError(f"{path}: invalid state ({err}); rebuild it from its inputs") from err
    except (
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AttributeError,
        OverflowError,
        binascii.Error,
        HeaderDataError,  # a header block nibabel cannot parse
        WrapStructError,  # a header block of the wrong size for its class
    ) as err:
        raise ValueError(
            f"{path}: corrupt state ({type(err).__name__}: {err}); rebuild it from its inputs"
        ) from err


class _Invalid(Exception):
    """A state whose fields disagree with each other or with its data."""


def _restore(meta: dict, data: np.ndarray, header) -> HeatmapAccumulator:
    _check_types(meta)
    records = records_from_json(meta)
    n_inputs = int(meta["NInputs"])
    names = [str(n) for n in meta["Volumes"]]
    stats = meta["CohortStats"]
    overlap, spread, form = bool(stats["Overlap"]), bool(stats["Spread"]), stats["SpreadForm"]
    square_bound = int(stats["SquareBound"])
    exact = meta["Sum"]["Exact"]
    rounding = float(meta["Sum"]["Rounding"])
    shape = tuple(int(n) for n in meta["Shape"])
    affine = np.asarray(meta["Affine"], dtype=np.float64).reshape(4, 4)
    klass = IMAGE_CLASSES[meta["ImageClass"]]
    block = base64.b64decode(meta["ReferenceHeader"], validate=True)
    ref_header = header_from_bytes(block, meta["ImageClass"])

    _require(
        all(r.value_range is None or all(map(math.isfinite, r.value_range)) for r in records),
        "a source whose Range is not finite",
    )
    integer = all(r.integer for r in records)
    binary = integer and all(r.value_range is None or _binary_range(r) for r in records)
    _require(
        n_inputs >= 1 and len(records) == n_inputs,
        f"NInputs {n_inputs} with {len(records)} sources",
    )
    _require(names[:1] == ["sum"] and len(set(names)) == len(names), f"volumes {names}")
    _require(all(name in VOLUMES for name in names), f"unknown volumes in {names}")
    _require(list(names) == [n for n in VOLUMES if n in names], f"volumes out of order: {names}")
    _require(
        isinstance(exact, bool) and math.isfinite(rounding) and rounding >= 0, "the Sum fields"
    )
    _require(not exact or (integer and rounding == 0), "an exact sum of non-integer inputs")
    if "nonzero" in names:
        _require(overlap, "a non-zero count that is not tracked")
    elif overlap:
        _require(binary, "no non-zero count, but not every input is a binary mask")
    expected_part = {None: None, "binary": None, "squares": "squares", "welford": "m2"}
    _require(form in expected_part and (form is None) == (not spread), f"SpreadForm {form!r}")
    for part in ("squares", "m2"):
        _require((part in names) == (expected_part[form] == part), f"the {part} volume")
    _require(form != "binary" or binary, "a binary spread of inputs that are not binary masks")
    _require(form != "squares" or integer, "exact squares of non-integer inputs")
    _require(
        0 <= square_bound and n_inputs * square_bound < EXACT_SQUARES_LIMIT,
        f"SquareBound {square_bound}",
    )
    _require(
        data.shape == (*shape, len(names)), f"data {data.shape} for volumes {names} on {shape}"
    )
    _require(data.dtype in (*_STORAGE_TYPES, np.dtype(np.float64)), f"data type {data.dtype}")
    _require(
        np.allclose(header.get_best_affine(), affine, atol=1e-4),
        "an affine other than the one its metadata records",
    )
    # Each source's header becomes the maps' header and grid once the inputs before it
    # are removed: each must be one, on this grid (up to a re-ordering of voxel axes).
    grid = Grid(shape, affine, "the state")
    for block_of, class_of in {(r.header, r.image_class) for r in records}:
        source = header_from_bytes(block_of, class_of)
        dims = tuple(int(n) for n in source.get_data_shape()[:3])
        on_grid = len(dims) == 3 and (
            grid.matches(dims, source.get_best_affine())
            or grid.reordering(dims, source.get_best_affine()) is not None
        )
        _require(on_grid, "a source header not on the state's grid")
    _require(
        (records[0].header, records[0].image_class) == (block, meta["ImageClass"]),
        "a ReferenceHeader other than its first source's header",
    )

    volumes = {name: data[..., i] for i, name in enumerate(names)}
    total = volumes["sum"]
    low = sum(min(int(r.value_range[0]), 0) for r in records if r.value_range and integer)
    high = sum(max(int(r.value_range[1]), 0) for r in records if r.value_range and integer)
    magnitude = math.fsum(r.magnitude for r in records)
    if exact:
        _require_integers(total, low, high, "sum")
    else:
        finite = np.isfinite(total).all()
        _require(bool(finite), "a sum with values that are not finite")
        limit = magnitude * (1 + 1e-12) + rounding
        _require(float(np.abs(total).max()) <= limit, "a sum larger than its inputs allow")
        total = np.array(total, dtype=np.float64, order="F")
    count = volumes.get("count")
    if count is not None:
        _require_integers(count, 0, n_inputs, "count")
    nonzero = volumes.get("nonzero")
    if nonzero is not None:
        _require_integers(nonzero, 0, n_inputs, "nonzero count")

    counts = FiniteCount(shape, n_inputs)
    if count is not None:
        counts.per_voxel = count.astype(np.uint32, order="F")
    nonzero_count = None
    if overlap:
        nonzero_count = NonzeroCount()
        if nonzero is not None:
            nonzero_count.counts = nonzero.astype(np.uint32, order="F")
    spread_stats = None
    if spread:
        spread_stats = Spread(shape)
        spread_stats.square_bound = square_bound
        if form == "squares":
            squares = volumes["squares"]
            _require_integers(squares, 0, square_bound, "sum of squares")
            spread_stats.squares = squares.astype(np.int64, order="F")  # whole, checked above
        elif form == "welford":
            m2 = volumes["m2"]
            _require(
                bool(np.isfinite(m2).all()) and float(m2.min()) >= 0, "a negative or non-finite M2"
            )
            spread_stats.m2 = np.array(m2, dtype=np.float64, order="F")
    return HeatmapAccumulator.restore(
        Reference(Grid(shape, affine, records[0].path), ref_header, klass),
        records,
        sum=VoxelSum.restore(
            total, exact=exact, magnitude=magnitude, rounding=rounding, low=low, high=high
        ),
        count=counts,
        nonzero=nonzero_count,
        spread=spread_stats,
    )


def _check_types(meta: dict) -> None:
    """Refuse fields of the wrong JSON type, which Python would otherwise turn into
    something plausible (``str(None)`` as a path, ``bool("no")`` as true, ``int(3.5)``)."""

    def whole(value: object) -> bool:
        return type(value) is int  # not bool, not 3.0

    def number(value: object) -> bool:
        return type(value) in (int, float)

    def text(value: object) -> bool:
        return type(value) is str

    def flag(value: object) -> bool:
        return type(value) is bool

    checks = {
        "NInputs": whole(meta["NInputs"]),
        "Volumes": type(meta["Volumes"]) is list and all(map(text, meta["Volumes"])),
        "Shape": type(meta["Shape"]) is list and all(whole(n) and n > 0 for n in meta["Shape"]),
        "ImageClass": text(meta["ImageClass"]),
        "ReferenceHeader": text(meta["ReferenceHeader"]),
        "Headers": type(meta["Headers"]) is list and all(map(text, meta["Headers"])),
        "Sum.Exact": flag(meta["Sum"]["Exact"]),
        "Sum.Rounding": number(meta["Sum"]["Rounding"]),
        "CohortStats.Overlap": flag(meta["CohortStats"]["Overlap"]),
        "CohortStats.Spread": flag(meta["CohortStats"]["Spread"]),
        "CohortStats.SpreadForm": meta["CohortStats"]["SpreadForm"] is None
        or text(meta["CohortStats"]["SpreadForm"]),
        "CohortStats.SquareBound": whole(meta["CohortStats"]["SquareBound"]),
        "Sources": type(meta["Sources"]) is list
        and all(type(item) is dict for item in meta["Sources"]),
    }
    for name, ok in checks.items():
        _require(ok, f"{name} of the wrong type")
    for item in meta["Sources"]:
        identity, value_range = item["Identity"], item["Range"]
        fields = {
            "Path": text(item["Path"]),
            "Digest": item["Digest"] is None or text(item["Digest"]),
            "Identity": identity is None
            or (type(identity) is list and len(identity) == 2 and all(map(whole, identity))),
            "Range": value_range is None
            or (
                type(value_range) is list
                and len(value_range) == 2
                and all(map(number, value_range))
            ),
            "Integer": flag(item["Integer"]),
            "Header": whole(item["Header"]) and 0 <= item["Header"] < len(meta["Headers"]),
            "ImageClass": text(item["ImageClass"]),
        }
        for name, ok in fields.items():
            _require(ok, f"the {name} of a source of the wrong type ({item.get('Path')!r})")
        _require(
            not item["Integer"]
            or value_range is None
            or all(float(v).is_integer() for v in value_range),
            f"an integer source whose Range is not whole ({item['Path']})",
        )


def _binary_range(record: SourceRecord) -> bool:
    lo, hi = record.value_range  # type: ignore[misc]
    return 0 <= lo and hi <= 1


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise _Invalid(what)


def _require_integers(values: np.ndarray, low: int, high: int, what: str) -> None:
    if values.dtype.kind == "f":
        _require(bool(np.all(values == np.round(values))), f"a {what} that is not whole")
    lo, hi = values.min(), values.max()
    _require(low <= lo and hi <= high, f"a {what} from {lo} to {hi}, outside [{low}, {high}]")


def merge_states(state_files: Iterable[str | os.PathLike[str]]) -> HeatmapAccumulator:
    """Load and merge states, in order (map-reduce: each one a chunk of the inputs).

    Raises
    ------
    ValueError
        If no file is given, a file is not a valid state, or the states are not on one
        grid or track different statistics (naming the one that differs).
    """
    files = list(state_files)
    if not files:
        raise ValueError("no state given; nothing to merge")
    merged = load_state(files[0])
    for state_file in files[1:]:
        part = load_state(state_file)
        try:
            merged.merge(part)
        except ValueError as err:
            raise ValueError(f"{state_file}: {err}") from err
        del part  # one part in memory at a time besides the merged one
    return merged
