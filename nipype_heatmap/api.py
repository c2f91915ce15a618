"""Files in, maps out: the runs that the commands, the interfaces and the workflows share.

Every run follows the same steps, so that its promises hold whatever the entry point:

1. **Plan** every file it will write (:class:`~nipype_heatmap.io.OutputPlan`): the map,
   the cohort maps and their table, the state; checked against each other and against
   every file the run reads, before any input is read.
2. **Read** the inputs: every header is checked first (3D, real numbers, on the first
   file's grid), then the voxels are read ahead on reader threads and added in order.
3. **Write** through the one writer, :func:`write_maps`, into the plan, and commit it:
   every file replaced together, only once all are complete.

A saved state is updated as a transaction (:func:`update_state`): under an exclusive
lock from reading it to replacing it, and together with the maps made from it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import nibabel as nb
import numpy as np

from ._docs import fill_doc
from ._runtime import resolve_num_threads
from .accumulate import HeatmapAccumulator, Reference, SourceRecord, finite_range, values_on_grid
from .accumulate.sum import UNIT_ROUNDOFF
from .io import (
    OutputPlan,
    ReadAhead,
    check_output_filename,
    check_volume_header,
    file_identity,
    find_nifti_files,
    is_own_file,
    locked,
    read_header,
    read_volume,
    recover_interrupted_commits,
    same_target,
    split_nifti_name,
    warn_duplicates,
)
from .io.locking import DEFAULT_TIMEOUT
from .maps import cohort_images, overlap_table_text, subtraction_images
from .options import CohortOptions, MapOptions
from .state import load_state, state_chunks

LOGGER = logging.getLogger(__name__)

DEFAULT_OUTPUT_FILENAME = "heatmap_volume.nii.gz"


# -- reading and adding --------------------------------------------------------------------
@fill_doc
def accumulate_files(
    files: Iterable[str | os.PathLike[str]],
    *,
    overlap: bool = False,
    spread: bool = False,
    digests: bool = False,
    debug: bool = False,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> HeatmapAccumulator:
    """Add files to a new accumulator in order, reading ahead on other threads.

    Every file's header is checked before the first voxel is added (3D, real numbers, on
    the first file's grid up to a lossless re-ordering of voxel axes).

    Parameters
    ----------
    files : iterable of path-like
        The files, in order; the first sets the grid and header.
    overlap, spread : bool, default=False
        Also keep the per-voxel non-zero count and the spread (for cohort maps).
    digests : bool, default=False
        Hash each file, so that it can be recognised and removed later (a saved state).
    %(debug)s
    %(progress)s
    %(num_threads)s

    Returns
    -------
    HeatmapAccumulator

    Raises
    ------
    ValueError
        If no file is given, or a file cannot be read, is not 3D, or is not on the first
        file's grid (the message names the file).

    Notes
    -----
    Memory: at most ``num_threads + 2`` input volumes in flight (as stored, and as float64
    for scaled inputs), the sum and, once an input has a missing value, the count; it does
    not grow with the number of files.
    """
    paths = [os.path.abspath(os.fspath(f)) for f in files]
    if not paths:
        raise ValueError("no input file given; pass at least one 3D NIfTI file")
    first = read_volume(paths[0], digest=digests)
    acc = HeatmapAccumulator(Reference.of(first), overlap=overlap, spread=spread)
    return add_files(
        acc,
        paths,
        first=first,
        digests=digests,
        debug=debug,
        progress=progress,
        num_threads=num_threads,
    )


def add_files(
    acc: HeatmapAccumulator,
    files: Sequence[str],
    *,
    first=None,
    digests: bool = False,
    debug: bool = False,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> HeatmapAccumulator:
    """Add files to an accumulator, in order (see :func:`accumulate_files`); ``first`` is
    the first file's volume when it was read already."""
    grid = acc.reference.grid
    for path in files[1 if first is not None else 0 :]:
        check_volume_header(path, read_header(path), grid)
    threads = resolve_num_threads(num_threads)
    level = logging.INFO if debug else logging.DEBUG
    rest = files[1:] if first is not None else files

    def prepare(volume):
        return values_on_grid(volume, grid)

    with (
        _progress_bar(len(files), progress) as bar,
        ReadAhead(
            rest, read_ahead=max(2, threads), workers=threads, digest=digests, prepare=prepare
        ) as values,
    ):
        for x in _chain([prepare(first)] if first is not None else [], values):
            acc.add(x)
            if not x.complete:
                LOGGER.info("%s: voxels that are NaN or infinite count as missing", x.path)
            LOGGER.log(level, "%s: finite value range %s", x.path, x.value_range)
            bar.update(1)
    return acc


def _chain(head, tail):
    yield from head
    yield from tail


def _progress_bar(total: int, progress: bool | None):
    """A tqdm bar on stderr, or a no-op (tqdm is not even imported) when none is shown."""
    if progress is None:
        progress = sys.stderr is not None and sys.stderr.isatty()
    if not progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="heatmap", unit="vol", file=sys.stderr)


class _NoBar:
    """Stands in for a tqdm bar that is not shown."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        """Do nothing."""


# -- the plan and the one writer -------------------------------------------------------------
def beside(out_file: str | os.PathLike[str], label: str, suffix: str | None = None) -> str:
    """``<stem>_<label><suffix>`` beside ``out_file`` (its own NIfTI ending by default)."""
    out = Path(out_file)
    stem, ending = split_nifti_name(out.name)
    return str(out.with_name(f"{stem}_{label}{ending if suffix is None else suffix}"))


def plan_maps(
    plan: OutputPlan,
    out_file: str | os.PathLike[str],
    cohort: CohortOptions,
    n_inputs: int,
) -> None:
    """Declare the heatmap and the cohort maps asked for, named after it: ``<stem>_coverage``,
    ``<stem>_std``, ``<stem>_variance``, ``<stem>_overlap``, ``<stem>_mincount<k>`` and the
    table ``<stem>_overlap.tsv``. Roles: ``heatmap``, each map's name, ``table``."""
    _plan_fixed_maps(plan, out_file, cohort)
    if cohort.overlap:
        plan.add("mincount", _mincount_path(plan, cohort, n_inputs))


def _plan_fixed_maps(plan: OutputPlan, out_file: str | os.PathLike[str], cohort: CohortOptions):
    """The maps whose names do not depend on the number of inputs."""
    out_file = plan.add("heatmap", out_file)
    for name in cohort.maps():
        if name != "mincount":
            plan.add(name, beside(out_file, name))
    if cohort.overlap:
        plan.add("table", beside(out_file, "overlap", ".tsv"), nifti=False)


def _mincount_path(plan: OutputPlan, cohort: CohortOptions, n_inputs: int) -> str:
    return beside(plan.path("heatmap"), f"mincount{cohort.min_count_for(n_inputs)}")


def plan_maps_of(
    plan: OutputPlan,
    items: Iterable[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    cohort: CohortOptions,
    *,
    n_others: int = 0,
) -> list[str]:
    """Declare the maps of :func:`plan_maps` for the inputs of ``items`` (folders and files,
    see :func:`collect_inputs`), and return those inputs.

    The minimum-overlap mask's name depends on the number of inputs (``--min-fraction``;
    ``n_others`` counts inputs that are not in ``items``, those of a state); an earlier
    run's mask of that name in an input folder is left out like the other maps.
    """
    _plan_fixed_maps(plan, out_file, cohort)
    return _collect_and_plan_mincount(plan, items, cohort, n_others, allow_empty=n_others > 0)


def _collect_and_plan_mincount(
    plan: OutputPlan,
    items: Iterable[str | os.PathLike[str]],
    cohort: CohortOptions,
    n_others: int,
    *,
    allow_empty: bool,
) -> list[str]:
    """The inputs of ``items``, and the minimum-overlap mask declared once their number is
    known (see :func:`plan_maps_of`)."""
    plan_mask = cohort.overlap and "heatmap" in plan
    files = collect_inputs(items, plan, refuse=not plan_mask, allow_empty=allow_empty)
    if plan_mask:
        while True:  # leaving out an earlier mask of this name can change the name: again
            path = _mincount_path(plan, cohort, n_others + len(files))
            earlier = [f for f in files if same_target(f, path) and is_own_file(f)]
            if not earlier:
                break
            for f in earlier:
                LOGGER.info("Skipping %s: this run replaces it (an earlier run's output)", f)
            files = [f for f in files if f not in earlier]
        plan.add("mincount", path)
        plan.refuse_inputs(files)
    return files


def write_maps(
    acc: HeatmapAccumulator, plan: OutputPlan, options: MapOptions, cohort: CohortOptions
) -> None:
    """The one writer: the heatmap, the cohort maps and their table, and the state, each
    into its role of ``plan`` when declared there (nothing is committed here)."""
    if "heatmap" in plan:
        plan.write_image("heatmap", acc.map_image(options))
    images, table = cohort_images(acc, cohort)
    for name, img in images.items():
        if name in plan:
            plan.write_image(name, img)
    if table is not None and "table" in plan:
        plan.write_text("table", overlap_table_text(table))
    if "state" in plan:
        plan.write("state", state_chunks(acc))


def collect_inputs(
    items: Iterable[str | os.PathLike[str]],
    plan: OutputPlan | None = None,
    *,
    refuse: bool = True,
    allow_empty: bool = False,
) -> list[str]:
    """The files of folders (their NIfTI files, sorted by name) and files, in order.

    A folder's listing leaves out the plan's outputs that are this tool's (an earlier run's
    outputs, about to be replaced), the states it reads, and this tool's cohort maps beside
    the plan's heatmap that this run does not make (an earlier run's, see
    :func:`_earlier_map`); an explicit file that is an output is an error. The files are
    then declared to the plan as inputs (``refuse``).

    Raises
    ------
    FileNotFoundError
        If an item does not exist, or a folder holds no NIfTI file.
    ValueError
        If an input is one of the plan's outputs (naming both).
    """
    files: list[str] = []
    for item in items:
        item = os.fspath(item)
        if os.path.isdir(item):
            exclude = functools.partial(_replaced_or_earlier, plan) if plan else None
            files.extend(find_nifti_files(item, exclude=exclude))
        elif os.path.lexists(item):
            files.append(os.path.abspath(item))
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    if not files and not allow_empty:
        raise ValueError("no input file given; pass at least one 3D NIfTI file")
    if plan is not None and refuse:
        plan.refuse_inputs(files)
    return files


#: The labels of the cohort maps beside a heatmap ``<stem>``: ``<stem>_<label>``.
_COHORT_MAP_LABEL = re.compile(r"coverage|std|variance|overlap|mincount[0-9]+")


def _replaced_or_earlier(plan: OutputPlan, path: str) -> bool:
    """Whether a listed file is one the plan writes or reads, or :func:`_earlier_map`
    (the listing leaves it out only when its header says it is this tool's)."""
    return plan.involves(path) or _earlier_map(plan, path)


def _earlier_map(plan: OutputPlan, path: str) -> bool:
    """Whether ``path`` is named as a cohort map beside the plan's heatmap
    (``<stem>_coverage``, ``<stem>_mincount<k>``...): an earlier run's map that this run
    does not make (not asked for this time, or another k), which a re-run into the input
    folder must not take for an input."""
    if "heatmap" not in plan:
        return False
    heatmap = plan.path("heatmap")
    folder, name = os.path.split(os.path.abspath(path))
    stem, _ = split_nifti_name(os.path.basename(heatmap))
    label = split_nifti_name(name)[0][len(stem) + 1 :]
    return (
        name.startswith(f"{stem}_")
        and _COHORT_MAP_LABEL.fullmatch(label) is not None
        and os.path.samefile(folder, os.path.dirname(heatmap))
    )


# -- files in, maps out --------------------------------------------------------------------
@fill_doc
def compute_heatmap(
    in_files: Sequence[str | os.PathLike[str]],
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    debug: bool = False,
    *,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> nb.Nifti1Image:
    """Compute the heatmap of an explicit list of files, without writing it.

    Parameters
    ----------
    %(in_files)s
    %(use_mean)s
    %(clip_to_input_range)s
    %(normalize)s
    %(debug)s
    %(progress)s
    %(num_threads)s

    Returns
    -------
    nibabel.Nifti1Image
        float32 heatmap (a ``Nifti2Image`` when the first input is NIfTI-2).

    Raises
    ------
    ValueError
        If ``in_files`` is empty, or an input cannot be read, is not 3D or is not on the
        first file's grid (the message names the file).
    FileNotFoundError
        If an input does not exist.
    """
    files = [os.path.abspath(os.fspath(f)) for f in in_files]
    warn_duplicates(files)
    acc = accumulate_files(files, debug=debug, progress=progress, num_threads=num_threads)
    img = acc.map_image(MapOptions(use_mean, clip_to_input_range, normalize))
    if debug:
        _log_statistics(acc, img, use_mean)
    return img


def _log_statistics(acc: HeatmapAccumulator, img: nb.Nifti1Image, use_mean: bool) -> None:
    data = np.asanyarray(img.dataobj)
    lo, hi = finite_range(data)
    LOGGER.info(
        "%s; output %s range [%s, %s], %d non-zero voxel(s)",
        acc.summary(),
        "mean" if use_mean else "sum",
        lo,
        hi,
        int(np.count_nonzero(np.nan_to_num(data))),
    )


@fill_doc
def write_heatmap(
    in_files: Sequence[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    debug: bool = False,
    *,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> str:
    """Compute the heatmap of an explicit list of files and write it atomically.

    The output is checked (name, writable folder, not one of the inputs) before any input
    is read; the file is replaced only after full success, and a failure leaves no partial
    file.

    Parameters
    ----------
    %(in_files)s
    out_file : str or os.PathLike
        Where to write; the name must end in ``.nii`` or ``.nii.gz`` (gzip for ``.gz``).
        Missing parent folders are created.
    use_mean, clip_to_input_range, normalize, debug, progress, num_threads
        As in :func:`compute_heatmap`.

    Returns
    -------
    str
        The absolute path of the written heatmap.

    Raises
    ------
    OSError
        If the output location is not writable (raised before any input is read).
    ValueError
        As in :func:`compute_heatmap`, or if ``out_file`` is one of the inputs.
    """
    written = write_cohort_maps(
        in_files,
        out_file,
        options=MapOptions(use_mean, clip_to_input_range, normalize),
        debug=debug,
        progress=progress,
        num_threads=num_threads,
    )
    return written["heatmap"]


@fill_doc
def make_maps(
    in_files: Iterable[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    *,
    options: MapOptions = MapOptions(),
    cohort: CohortOptions = CohortOptions(),
    state_file: str | os.PathLike[str] | None = None,
    debug: bool = False,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> tuple[HeatmapAccumulator, dict[str, str]]:
    """Write the heatmap and, from the same single pass, the cohort maps beside it.

    Beside ``<stem>.nii.gz``: ``<stem>_coverage``, ``<stem>_std``, ``<stem>_variance``,
    ``<stem>_overlap`` (non-zero count), ``<stem>_mincount<k>`` (mask) and the table
    ``<stem>_overlap.tsv`` (voxels surviving each k), as ``cohort`` asks. With
    ``state_file``, the run is also saved as a state (tracking every cohort statistic and
    each input's content hash), which :func:`update_state` adds to and removes from later.
    All files are planned before any input is read and replaced together.

    Parameters
    ----------
    in_files : iterable of str or os.PathLike
        The 3D NIfTI files, in order (the first sets the grid and header), or folders of
        them (their NIfTI files, sorted by name).
    out_file : str or os.PathLike
        The heatmap (``.nii`` or ``.nii.gz``).
    options : MapOptions
        What the heatmap is (mean or sum, clipping, normalization).
    cohort : CohortOptions
        Which cohort maps to write beside it.
    state_file : str or os.PathLike, optional
        Also save the run as a state here.
    %(debug)s
    %(progress)s
    %(num_threads)s

    Returns
    -------
    accumulator, dict
        The accumulator (its ``records`` list the inputs, in order), and role
        (``heatmap``, each cohort map's name, ``table``, ``state``) -> path.

    Raises
    ------
    ValueError, OSError
        As :func:`write_heatmap`; ValueError if two outputs are one file.
    """
    with OutputPlan() as plan:
        if state_file is not None:
            plan.add("state", state_file)
        files = plan_maps_of(plan, in_files, out_file, cohort)
        warn_duplicates(files)
        acc = accumulate_files(
            files,
            overlap=cohort.overlap or state_file is not None,
            spread=cohort.std or state_file is not None,
            digests=state_file is not None,
            debug=debug,
            progress=progress,
            num_threads=num_threads,
        )
        write_maps(acc, plan, options, cohort)
        written = plan.commit()
    if debug:
        _log_statistics(acc, nb.load(written["heatmap"]), options.use_mean)
    LOGGER.info("Wrote %s", ", ".join(written.values()))
    return acc, written


def write_cohort_maps(
    in_files: Iterable[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    *,
    options: MapOptions = MapOptions(),
    cohort: CohortOptions = CohortOptions(),
    state_file: str | os.PathLike[str] | None = None,
    debug: bool = False,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> dict[str, str]:
    """Write the heatmap and the cohort maps beside it (and a state); return role -> path.

    See :func:`make_maps`, which also returns the accumulator.
    """
    return make_maps(
        in_files,
        out_file,
        options=options,
        cohort=cohort,
        state_file=state_file,
        debug=debug,
        progress=progress,
        num_threads=num_threads,
    )[1]


@fill_doc
def generate_heatmap_volume(
    nii_folder: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    output_filename: str = DEFAULT_OUTPUT_FILENAME,
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    debug: bool = False,
    *,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> str:
    """Make the voxel-wise mean or sum of all 3D NIfTI files in a folder and save it.

    Parameters
    ----------
    nii_folder : str or os.PathLike
        Folder whose ``*.nii``/``*.nii.gz`` files (not recursive, hidden files skipped) are
        the inputs, taken in byte order of their names.
    output_path : str or os.PathLike
        Folder to write into; created with parents. It may be ``nii_folder`` itself: a
        heatmap this tool wrote at the output's name is then not taken as an input.
    %(output_filename)s
    %(use_mean)s
    %(clip_to_input_range)s
    %(normalize)s
    %(debug)s
    %(progress)s
    %(num_threads)s

    Returns
    -------
    str
        Absolute path of the written heatmap.

    Raises
    ------
    FileNotFoundError
        If ``nii_folder`` is missing, not a folder, or holds no NIfTI file.
    ValueError
        If ``output_filename`` is not a bare NIfTI name, another file is at the output's
        name, or an input cannot be read, is not 3D, or is not on the first file's grid
        (the message names the file).
    OSError
        If the output location is not writable (checked before any input is read).

    Examples
    --------
    >>> from nipype_heatmap import generate_heatmap_volume
    >>> out = generate_heatmap_volume("lesion_masks", "derivatives",
    ...                               "lesion_overlap.nii.gz", use_mean=False,
    ...                               clip_to_input_range=False)
    >>> out  # doctest: +ELLIPSIS
    '.../derivatives/lesion_overlap.nii.gz'
    """
    check_output_filename(output_filename)
    folder = Path(nii_folder)
    if not folder.is_dir():
        what = (
            "is not a folder; pass a folder of NIfTI files"
            if folder.exists()
            else "does not exist"
        )
        raise FileNotFoundError(f"{folder}: input folder {what}")
    LOGGER.info("%s the volumes of %s", "Averaging" if use_mean else "Summing", folder)
    return write_heatmap(
        [folder],
        os.path.join(os.fspath(output_path), output_filename),
        use_mean,
        clip_to_input_range,
        normalize,
        debug,
        progress=progress,
        num_threads=num_threads,
    )


# -- subtraction ---------------------------------------------------------------------------
def write_subtraction(
    group_a: Sequence[str | os.PathLike[str]],
    group_b: Sequence[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    *,
    num_threads: int | None = None,
) -> dict[str, str]:
    """Write the subtraction map of two groups (percent of A minus percent of B) and both
    groups' percent maps beside it (``<stem>_percentA``, ``<stem>_percentB``). Each group
    is files or folders of them (:func:`collect_inputs`).

    Raises
    ------
    ValueError
        If a group is empty, an output is an input of either group, or the groups are not
        on one grid.
    """
    with OutputPlan() as plan:
        out_file = plan.add("subtraction", out_file)
        plan.add("percent_a", beside(out_file, "percentA"))
        plan.add("percent_b", beside(out_file, "percentB"))
        files_a = collect_inputs(group_a, plan, refuse=False)
        files_b = collect_inputs(group_b, plan, refuse=False)
        plan.refuse_inputs(files_a, "group A input")
        plan.refuse_inputs(files_b, "group B input")
        for name, img in compute_subtraction(files_a, files_b, num_threads=num_threads).items():
            plan.write_image(name, img)
        return plan.commit()


def compute_subtraction(
    group_a: Sequence[str | os.PathLike[str]],
    group_b: Sequence[str | os.PathLike[str]],
    *,
    num_threads: int | None = None,
) -> dict[str, nb.Nifti1Image]:
    """The subtraction images of two groups (see
    :func:`nipype_heatmap.maps.subtraction_images`).

    Raises
    ------
    ValueError
        If a group is empty or the groups are not on one grid.
    """
    if not group_a or not group_b:
        raise ValueError("a subtraction needs files in both groups")
    acc_a = accumulate_files(group_a, num_threads=num_threads)
    acc_b = accumulate_files(group_b, num_threads=num_threads)
    return subtraction_images(acc_a, acc_b)


# -- saved states --------------------------------------------------------------------------
def merge_and_write(
    state_files: Sequence[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    *,
    options: MapOptions = MapOptions(),
    cohort: CohortOptions = CohortOptions(),
) -> tuple[HeatmapAccumulator, dict[str, str]]:
    """Merge states (map-reduce) and write the maps of all their inputs.

    Returns
    -------
    accumulator, dict
        The merged accumulator, and role -> path of what was written.
    """
    from .state import merge_states

    with OutputPlan() as plan:
        plan.refuse_inputs(state_files, "state")
        for folder in {os.path.dirname(os.path.abspath(f)) for f in state_files}:
            recover_interrupted_commits(folder)  # a state an interrupted run was replacing
        acc = merge_states(state_files)
        plan_maps(plan, out_file, cohort, acc.n_inputs)
        write_maps(acc, plan, options, cohort)
        return acc, plan.commit()


def within_promise(acc: HeatmapAccumulator) -> bool:
    """Whether an updated state's maps are what the documentation promises against a
    recompute from its inputs.

    Integer states: bit for bit, wherever a recompute is exact (its sums within 2**53, its
    sums of squares within int64's exact range). Otherwise: every voxel's sum within
    ``2 n u M`` of the exact sum (``u = 2**-53``, ``M`` the sum of the inputs' largest
    absolute values), so within ``3 n u M`` of a recompute's, which is within ``n u M`` of
    it.
    """
    records = acc.records
    if all(r.integer for r in records):
        ranges = [r.value_range or (0.0, 0.0) for r in records]
        low = sum(min(int(lo), 0) for lo, _ in ranges)
        high = sum(max(int(hi), 0) for _, hi in ranges)
        if max(-low, high) <= 2**53 and not acc.exact:
            return False
        squares = sum(max(int(lo) ** 2, int(hi) ** 2) for lo, hi in ranges)
        spread = acc.spread
        if spread is not None and not spread.exact and len(records) * squares < 2**62:
            return False
    n, magnitude = acc.n_inputs, acc.sum.magnitude
    return acc.sum.rounding <= 2 * n * UNIT_ROUNDOFF * magnitude


def update_state(
    state_file: str | os.PathLike[str],
    *,
    add: Sequence[str | os.PathLike[str]] = (),
    remove: Sequence[str | os.PathLike[str]] = (),
    out_state: str | os.PathLike[str] | None = None,
    out_file: str | os.PathLike[str] | None = None,
    options: MapOptions = MapOptions(),
    cohort: CohortOptions = CohortOptions(),
    num_threads: int | None = None,
    progress: bool | None = None,
    debug: bool = False,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> tuple[HeatmapAccumulator, dict[str, str]]:
    """Add files to a saved state and remove files from it, as one transaction.

    The state's inputs become: its inputs without ``remove``, in their order, then ``add``,
    in theirs. The maps of the updated state equal a recompute from that list: bit for bit
    while every input is an integer volume (masks, counts), and within the documented
    rounding bound otherwise (:func:`within_promise`); where an update could not keep that
    (a removal that cancels values much larger than what remains), the state is recomputed
    from its remaining inputs, each checked against its recorded content hash.

    The state file is locked (``<state>.lock``) from reading it to replacing it: a
    concurrent update of the same state waits (up to ``lock_timeout`` seconds), and never
    loses the other's changes (an update into another file, ``out_state``, only reads it,
    and takes no lock beside it: its folder may be read-only). The updated state and the
    maps (with ``out_file``) are written together: a failure or a kill never leaves a new
    state beside old maps, and the same command can then be run again.

    Parameters
    ----------
    state_file : str or os.PathLike
        A saved state (:func:`write_cohort_maps` with ``state_file``, ``--save-state``,
        :class:`~nipype_heatmap.interfaces.HeatmapState`).
    add : sequence of path-like
        Files to add; none may already be an input of the state (the same path, or a link
        to the same file with the same content). Equal copies of an input are accepted
        (and logged): the empty masks of two controls are identical.
    remove : sequence of path-like
        Inputs to remove (their path as recorded, or a link to the same file); each must be
        unchanged since it was added (its content hash is checked).
    out_state : path-like, optional
        Where the updated state goes; default: replace ``state_file``.
    out_file : path-like, optional
        Also write the maps of the updated state (the heatmap, and the cohort maps of
        ``cohort`` beside it).
    options, cohort
        What the maps are (:class:`~nipype_heatmap.options.MapOptions`,
        :class:`~nipype_heatmap.options.CohortOptions`).
    num_threads, progress, debug
        As for :func:`accumulate_files`.
    lock_timeout : float, default=600
        Seconds to wait for another update of the same state.

    Returns
    -------
    accumulator, dict
        The updated state, and role (``state``, ``heatmap``, cohort maps) -> path.

    Raises
    ------
    ValueError
        If a file to remove is not in the state or changed; a file to add is already in
        it; nothing would be left; an output is one of the files read; or a recompute
        needs an input that is missing or changed (naming it). Nothing is written then.
    LockTimeout
        If another run holds the state for longer than ``lock_timeout``.
    """
    state_path = os.path.abspath(os.fspath(state_file))
    if out_state is None or same_target(out_state, state_path):  # read, changed, replaced
        guard = locked(f"{state_path}.lock", what=f"the state {state_path}", timeout=lock_timeout)
    else:  # only read, and replaced atomically by others: its folder may be read-only
        guard = contextlib.nullcontext()
    with guard:
        # an earlier update killed between its renames: its state first, then this one
        recover_interrupted_commits(os.path.dirname(state_path))
        with OutputPlan() as plan:  # the outputs are checked before the state is read
            plan.refuse_inputs([state_path], "state being updated", replaced_by="state")
            plan.add("state", out_state if out_state is not None else state_path)
            if out_file is not None:
                _plan_fixed_maps(plan, out_file, cohort)
            acc = load_state(state_path)
            indices = _removal_indices(acc, state_path, remove)
            plan.refuse_inputs([acc.records[i].path for i in indices], "input to remove")
            kept = [r.path for i, r in enumerate(acc.records) if i not in indices]
            plan.refuse_inputs(kept, "input of the state")
            n_kept = acc.n_inputs - len(indices)
            to_add = _collect_and_plan_mincount(plan, add, cohort, n_kept, allow_empty=True)
            if n_kept + len(to_add) < 1:
                raise ValueError(f"{state_path}: removing every input would leave an empty state")
            _refuse_already_added(acc, state_path, to_add)
            warn_duplicates(to_add)
            if to_add:  # first, so that every input may go: a state is never empty
                _add_new(acc, to_add, num_threads=num_threads, progress=progress, debug=debug)
            for index in sorted(indices, reverse=True):
                record = acc.records[index]
                volume = read_volume(record.path, digest=True)
                _check_unchanged(volume.digest, record, "remove it")
                acc.remove(values_on_grid(volume, acc.reference.grid), index)
            if not within_promise(acc):
                LOGGER.warning(
                    "%s: the removal cancelled values much larger than those left (or left a "
                    "sum that is no longer exact); recomputing the state from its %d "
                    "remaining input(s)",
                    state_path,
                    acc.n_inputs,
                )
                acc = _recompute(acc, num_threads)
            write_maps(acc, plan, options, cohort)
            written = plan.commit()
    return acc, written


def _removal_indices(
    acc: HeatmapAccumulator, state_path: str, remove: Sequence[str | os.PathLike[str]]
) -> list[int]:
    """The positions of the inputs to remove: by their recorded path, or a link to the file
    at that path now (not by the recorded inode: files restored under their paths get new
    ones, and the system gives freed ones to other files); each once."""
    indices: list[int] = []
    for item in remove:
        path = os.path.abspath(os.fspath(item))
        identity = file_identity(path)
        found = [
            i
            for i, r in enumerate(acc.records)
            if i not in indices
            and (r.path == path or (identity is not None and file_identity(r.path) == identity))
        ]
        if not found:
            raise ValueError(
                f"{path}: not an input of the state {state_path} (or listed twice); nothing "
                "to remove (inputs are matched by their recorded path, or a link to the same "
                "file)"
            )
        if acc.records[found[-1]].digest is None:
            raise ValueError(
                f"{path}: the state {state_path} has no content hash of this input (it was "
                "saved without hashes), so its removal cannot be checked; recompute the state "
                "from the files to keep (--save-state records every hash)"
            )
        indices.append(found[-1])
    return indices


def _refuse_already_added(acc: HeatmapAccumulator, state_path: str, to_add: Sequence[str]):
    """Refuse a file to add that is already an input: the same path, or the file (device and
    inode) at its recorded path now, whatever inode was recorded (files restored or synced
    under their paths get new ones)."""
    for path in to_add:
        identity = file_identity(path)
        for number, record in enumerate(acc.records, start=1):
            same_file = identity is not None and file_identity(record.path) == identity
            if record.path == path or same_file:
                raise ValueError(
                    f"{path}: already an input of the state {state_path} (input {number}, "
                    f"{record.path}); to replace it with a corrected version, remove it while "
                    "the old version is still there (the removal checks its hash), then add "
                    "the new one"
                )


def _check_unchanged(digest: str | None, record: SourceRecord, to_do: str) -> None:
    if digest != record.digest:
        raise ValueError(
            f"{record.path}: the file has changed since it was added (content hash "
            f"{digest} is not the recorded {record.digest}); cannot {to_do}: restore the "
            "original file, or recompute the map from the files as they are now"
        )


def _recompute(acc: HeatmapAccumulator, num_threads: int | None) -> HeatmapAccumulator:
    """The state of an accumulator's inputs made anew from their files (hashes checked)."""
    records = list(acc.records)
    fresh = accumulate_files(
        [r.path for r in records], digests=True, num_threads=num_threads, **acc.tracks
    )
    for new, old in zip(fresh.records, records, strict=True):
        _check_unchanged(new.digest, old, "recompute the state")
    return fresh


def _add_new(
    acc: HeatmapAccumulator,
    to_add: Sequence[str],
    *,
    num_threads: int | None,
    progress: bool | None,
    debug: bool,
) -> None:
    """Add files to a state, hashing them; refuse one that is an input already under
    another name (the same file and content), log equal copies."""
    before = {r.digest: r for r in acc.records if r.digest}
    start = acc.n_inputs
    add_files(acc, to_add, digests=True, num_threads=num_threads, progress=progress, debug=debug)
    for record in acc.records[start:]:
        old = before.get(record.digest)
        if old is None:
            continue
        if old.identity is not None and old.identity == record.identity:
            raise ValueError(
                f"{record.path}: the same file as the state's input {old.path} (same device, "
                "inode and content); it would be counted twice"
            )
        LOGGER.info(
            "%s: identical content to the input %s; counted as its own input (equal "
            "copies are legitimate, e.g. empty masks)",
            record.path,
            old.path,
        )
