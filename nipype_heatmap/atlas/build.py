"""Building an atlas: counting label images on reader threads, and its files.

Outputs (names in the BIDS atlas convention, as TemplateFlow's):

- ``<stem>_probseg.nii.gz``: per-label probability maps, one 4D float32 image, volume
  ``i`` for the ``i``-th row of the label table, value ``count / N``;
- ``<stem>_desc-th<t>_dseg.nii.gz``: maximum-probability maps, one per threshold ``t``
  (percent): at each voxel, the label with the highest probability, where that
  probability is ``>= t %`` and ``> 0``; the background elsewhere. Ties go to the lowest
  label value; how many voxels tie is in the sidecar. Comparisons are exact (integer counts
  against ``t * N / 100``);
- ``<stem>_dseg.tsv``: the label table (``index``, ``name``, ``color``, ``n_inputs``,
  ``mean_volume_mm3``), rows by ascending index;
- ``<stem>_desc-sparse_probseg.nii.gz``: the sparse atlas (:mod:`.sparse`), when asked;
- a JSON sidecar beside every NIfTI (sample size, sources, parameters, tied voxels).

Every file goes through one :class:`~nipype_heatmap.io.OutputPlan`: declared before any
input is read, written together, so that a failure or a kill never leaves half an atlas.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from .._runtime import resolve_num_threads
from .._version import __version__
from ..accumulate import IMAGE_CLASSES, LabelAtlasAccumulator, SourceRecord, header_from_bytes
from ..accumulate.labels import SparseAtlas
from ..io import Grid, OutputPlan, ReadAhead, Volume, check_volume_header, read_header
from ..io.tables import tsv_text
from ..io.writing import header_bytes
from .sparse import label_dtype, sparse_chunks
from .tables import TABLE_COLUMNS, LabelInfo, label_rows

__all__ = [
    "DEFAULT_THRESHOLDS",
    "accumulate_labels",
    "atlas_names",
    "build_atlas",
    "check_headers",
    "plan_atlas",
    "sidecar_name",
    "threshold_label",
    "write_atlas",
    "write_atlas_outputs",
]

LOGGER = logging.getLogger(__name__)

#: Default maximum-probability thresholds, in percent (Harvard-Oxford's).
DEFAULT_THRESHOLDS = (0, 25, 50)


def accumulate_labels(
    files: Iterable[str | os.PathLike[str]],
    *,
    background: int = 0,
    num_threads: int | None = None,
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

    Notes
    -----
    Memory: the boxes of one accumulator per thread, plus ``num_threads + 2`` input
    volumes in flight; flat in the number of files.

    Raises
    ------
    ValueError
        Naming the file: unreadable, not 3D, not a label image, or not on the grid (every
        header is checked before the first voxel is counted).
    """
    paths = [os.path.abspath(os.fspath(f)) for f in files]
    if not paths:
        raise ValueError("no label image given; an atlas needs at least one input")
    threads = resolve_num_threads(num_threads)
    acc = LabelAtlasAccumulator(background)
    header = read_header(paths[0])
    grid = Grid(header.get_data_shape()[:3], header.get_best_affine(), paths[0])
    check_headers(paths, grid)
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

    counted: list[SourceRecord] = []
    with ReadAhead(
        paths, read_ahead=max(2, threads), workers=threads, digest=True, prepare=count
    ) as records:
        for record in records:
            counted.append(record)
            LOGGER.debug("%s: labels %s", record.path, record.value_range)
    acc.ref_header = header_from_bytes(counted[0].header, counted[0].image_class)
    acc.image_class = IMAGE_CLASSES[counted[0].image_class]
    for part in partials:
        part.ref_header, part.image_class = acc.ref_header, acc.image_class
        acc.merge(part)
    acc.grid = grid
    acc.n_inputs += len(counted)
    acc.records.extend(counted)
    return acc


def check_headers(paths: Sequence[str], grid: Grid) -> None:
    """Check every input's header against the reference grid before any voxel is used:
    3D (or 4D with one volume), a real-number type, on the grid up to a lossless
    re-ordering of voxel axes.

    Raises
    ------
    ValueError
        Naming the first file that fails, and why.
    """
    for path in paths:
        check_volume_header(path, read_header(path), grid)


def atlas_names(
    atlas_name: str, thresholds: Sequence[float], stem: str | None = None
) -> dict[str, str]:
    """File names of an atlas's outputs (see the module doc), by role.

    ``probseg``, ``th<t>`` per threshold, ``table``, ``sparse``; the stem is
    ``atlas-<name>`` unless given (a BIDS derivative's has its inputs' entities too).

    Raises
    ------
    ValueError
        If the name is not a BIDS label, or a threshold is not a percentage.
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
        names[f"th{threshold_label(t)}"] = f"{stem}_desc-th{threshold_label(t)}_dseg.nii.gz"
    return names


def threshold_label(threshold: float) -> str:
    """``25`` -> ``"25"``, ``12.5`` -> ``"12p5"`` (BIDS labels are alphanumeric).

    Raises
    ------
    ValueError
        If the threshold is not a percentage in [0, 100].
    """
    value = Fraction(str(threshold))
    if not 0 <= value <= 100:
        raise ValueError(f"threshold {threshold} is not a percentage in [0, 100]")
    return f"{float(value):g}".replace(".", "p")


def sidecar_name(name: str) -> str:
    """The JSON sidecar of a NIfTI file name."""
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".json"
    return name + ".json"


def plan_atlas(
    plan: OutputPlan,
    out_dir: str | os.PathLike[str],
    names: Mapping[str, str],
    *,
    dense: bool = True,
    sparse: bool = False,
) -> None:
    """Declare an atlas's files in a plan: each NIfTI (role as in :func:`atlas_names`) with
    its sidecar (role ``<role>_sidecar``), and the table."""
    out_dir = os.fspath(out_dir)
    for role, name in names.items():
        if (role == "probseg" and not dense) or (role == "sparse" and not sparse):
            continue
        path = os.path.join(out_dir, name)
        if role == "table":
            plan.add(role, path, nifti=False)
            continue
        plan.add(role, path)
        plan.add(f"{role}_sidecar", os.path.join(out_dir, sidecar_name(name)), nifti=False)


def write_atlas_outputs(
    atlas: SparseAtlas | LabelAtlasAccumulator,
    plan: OutputPlan,
    *,
    thresholds: Sequence[float],
    label_table: Mapping[int, LabelInfo] | None = None,
    extra_metadata: Mapping[str, object] | None = None,
) -> list[dict[str, object]]:
    """Write the atlas's files declared in ``plan`` (:func:`plan_atlas`); return the label
    table's rows. Nothing is committed here.

    Raises
    ------
    ValueError
        If no input has any label (every voxel is the background).
    """
    if not atlas.label_list:
        raise ValueError(
            f"no label in any of the {atlas.n_inputs} input(s): every voxel is the background "
            f"value {atlas.background}; are these label images, and is --background right?"
        )
    rows = label_rows(atlas, label_table)
    labels = [int(str(row["index"])) for row in rows]
    common = {
        "SampleSize": atlas.n_inputs,
        "Sources": [r.path for r in atlas.records],
        "Background": atlas.background,
        "GeneratedBy": [{"Name": "nipype_heatmap", "Version": __version__}],
        **(extra_metadata or {}),
    }
    if "probseg" in plan:
        plan.write(
            "probseg",
            _image_chunks(atlas, np.float32, atlas.iter_probabilities(), len(labels)),
        )
        plan.write_json(
            "probseg_sidecar",
            {
                **common,
                "Description": "Per-label probability maps: volume i is the fraction of "
                "inputs with the label of row i of the dseg.tsv at each voxel.",
                "Labels": labels,
            },
        )
    dtype = label_dtype([*labels, atlas.background])
    for t in thresholds:
        role = f"th{threshold_label(t)}"
        dseg, tied = atlas.max_probability(t)
        plan.write(
            role,
            _image_chunks(
                atlas,
                dtype,
                [dseg],
                None,
                intent="label",
                cal=(float(min(labels)), float(max(labels))),
            ),
        )
        plan.write_json(
            f"{role}_sidecar",
            {
                **common,
                "Description": f"Maximum-probability map: the most probable label where its "
                f"probability is >= {t} % (and > 0); ties go to the lowest label.",
                "Threshold": float(t),
                "TiedVoxels": tied,
            },
        )
        LOGGER.info("maximum-probability map at %g %%: %d tied voxel(s)", t, tied)
    plan.write_text("table", tsv_text(TABLE_COLUMNS, rows))
    if "sparse" in plan:
        sparse_atlas = atlas.to_sparse() if isinstance(atlas, LabelAtlasAccumulator) else atlas
        plan.write("sparse", sparse_chunks(sparse_atlas))
        plan.write_json(
            "sparse_sidecar",
            {
                **common,
                "Description": "Sparse atlas (nipype_heatmap.atlas format 2): volumes "
                f"0..{sparse_atlas.slots - 1} are the labels present at each voxel, most "
                f"probable first; volumes {sparse_atlas.slots}..{2 * sparse_atlas.slots - 1} "
                "the number of inputs with each; probability = count / SampleSize. Load it "
                "with nipype_heatmap.atlas.load_atlas.",
                "Slots": sparse_atlas.slots,
            },
        )
    return rows


def _image_chunks(atlas: Any, dtype, volumes, n: int | None, *, intent="none", cal=(0.0, 1.0)):
    """One NIfTI with the first input's header (as the heatmap's: data type set, scaling
    cleared, no extensions) followed by ``volumes``: 3D when ``n`` is None, else 4D with
    ``n`` volumes (even one)."""
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
    yield header_bytes(header)
    for volume in volumes:
        if isinstance(volume, memoryview):
            yield volume
        else:
            yield np.asarray(volume, dtype).tobytes(order="F")


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
    """Write an atlas's files into ``out_dir``, together (see the module doc).

    Returns
    -------
    dict
        ``{"probseg": path, "th25": path, ..., "table": path, "sparse": path}`` of the
        NIfTI files and the table written (sidecars beside each NIfTI).
    """
    with OutputPlan() as plan:
        plan_atlas(
            plan, out_dir, atlas_names(atlas_name, thresholds, stem), dense=dense, sparse=sparse
        )
        write_atlas_outputs(
            atlas,
            plan,
            thresholds=thresholds,
            label_table=label_table,
            extra_metadata=extra_metadata,
        )
        written = plan.commit()
    return {role: path for role, path in written.items() if not role.endswith("_sidecar")}


def build_atlas(
    files: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    background: int = 0,
    label_table: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    atlas_name: str = "heatmap",
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    dense: bool = True,
    sparse: bool = False,
) -> dict[str, str]:
    """Make a probabilistic atlas from label images: one pass, then its files.

    Every output is declared (and checked against the inputs) before any input is read.

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
    atlas_name, thresholds, dense, sparse
        As for :func:`write_atlas`.

    Returns
    -------
    dict
        What :func:`write_atlas` returns.
    """
    from .tables import read_label_table

    files = [os.path.abspath(os.fspath(f)) for f in files]
    table = read_label_table(label_table) if label_table is not None else None
    with OutputPlan() as plan:
        plan_atlas(plan, out_dir, atlas_names(atlas_name, thresholds), dense=dense, sparse=sparse)
        plan.refuse_inputs(files)
        acc = accumulate_labels(files, background=background, num_threads=num_threads)
        write_atlas_outputs(acc, plan, thresholds=thresholds, label_table=table)
        written = plan.commit()
    return {role: path for role, path in written.items() if not role.endswith("_sidecar")}
