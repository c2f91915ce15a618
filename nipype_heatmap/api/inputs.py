"""Inputs of a run: files and folders listed, every header checked, volumes read ahead
and added in order."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence

from .._docs import fill_doc
from .._runtime import resolve_num_threads
from ..accumulate import HeatmapAccumulator, Reference, values_on_grid
from ..io import (
    OutputPlan,
    ReadAhead,
    check_volume_header,
    find_nifti_files,
    read_header,
    read_volume,
    split_nifti_name,
)

__all__ = [
    "accumulate_files",
    "add_files",
    "collect_inputs",
]

LOGGER = logging.getLogger(__name__)


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
    head = [read_volume(paths[0], digest=digests)]  # handed over: add_files empties it
    acc = HeatmapAccumulator(Reference.of(head[0]), overlap=overlap, spread=spread)
    return add_files(
        acc,
        paths,
        first=head,
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
    """Add files to an accumulator, in order (see :func:`accumulate_files`).

    ``first``, when the first file was read already, is a list holding its volume: it is
    taken out of the list, so that its memory goes once it is added, as every other
    volume's does."""
    grid = acc.reference.grid
    threads = resolve_num_threads(num_threads)
    level = logging.INFO if debug else logging.DEBUG
    rest = files[1:] if first else files

    def prepare(volume):
        return values_on_grid(volume, grid)

    with (
        _progress_bar(len(files), progress) as bar,
        ReadAhead(
            rest, read_ahead=max(2, threads), workers=threads, digest=digests, prepare=prepare
        ) as values,
    ):
        # every header is checked before the first voxel is added (while the first files
        # are read: reading adds nothing)
        for path in rest:
            check_volume_header(path, read_header(path), grid)
        for x in _chain(first, prepare, values):
            acc.add(x)
            if not x.complete:
                LOGGER.info("%s: voxels that are NaN or infinite count as missing", x.path)
            LOGGER.log(level, "%s: finite value range %s", x.path, x.value_range)
            bar.update(1)
            del x  # before the next read starts: no more volumes in memory than read ahead
    return acc


def _chain(head: list | None, prepare, tail):
    """The prepared volume of ``head`` (taken out of it), then ``tail``'s."""
    if head:
        yield prepare(head.pop())
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
