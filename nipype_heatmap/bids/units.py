"""Subjects are the unit: a selection's units (a subject's files, or one file) accumulated.

:func:`accumulate_units` adds each unit to a new accumulator, in order: a unit of one file as
it is, a unit of several files (a subject's sessions) first averaged into one volume
(:func:`subject_mean`), so that each subject counts once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._runtime import resolve_num_threads
from ..accumulate import HeatmapAccumulator, Reference, SourceRecord, values_on_grid
from ..accumulate.values import Values
from ..api import accumulate_files
from ..io import ReadAhead, check_volume_header, read_header, read_volume

__all__ = ["accumulate_units", "subject_mean"]

LOGGER = logging.getLogger(__name__)


# -- accumulating subjects -----------------------------------------------------------------
def accumulate_units(
    units: Sequence[Sequence[str]],
    *,
    overlap: bool = False,
    spread: bool = False,
    num_threads: int | None = None,
    progress: bool | None = None,
    debug: bool = False,
) -> HeatmapAccumulator:
    """Add each unit (a subject's files, or one file) to a new accumulator, in order.

    A unit of one file is added as it is; a unit of several files (a subject's sessions) is
    first averaged into one volume in memory, voxel by voxel over its finite values (NaN
    where none is), so that each unit counts once. Every header is checked before the first
    voxel is added.

    Raises
    ------
    ValueError
        As :func:`nipype_heatmap.api.accumulate_files`, naming the file.
    """
    if all(len(unit) == 1 for unit in units):
        return accumulate_files(
            [unit[0] for unit in units],
            overlap=overlap,
            spread=spread,
            num_threads=num_threads,
            progress=progress,
            debug=debug,
        )
    paths = [os.path.abspath(p) for unit in units for p in unit]
    first = read_volume(paths[0])
    reference = Reference.of(first)
    grid = reference.grid
    for path in paths[1:]:
        check_volume_header(path, read_header(path), grid)
    acc = HeatmapAccumulator(reference, overlap=overlap, spread=spread)
    threads = resolve_num_threads(num_threads)

    def prepare(volume):
        return values_on_grid(volume, grid)

    with ReadAhead(
        paths[1:], read_ahead=max(2, threads), workers=threads, prepare=prepare
    ) as rest:
        stream = _chain(prepare(first), rest)
        for unit in units:
            values = [next(stream) for _ in unit]
            acc.add(values[0] if len(values) == 1 else subject_mean(values))
            LOGGER.debug("Added %s (%d file(s))", unit[0], len(unit))
    return acc


def _chain(head: Any, tail: Any) -> Iterator[Any]:
    yield head
    yield from tail


def subject_mean(values: Sequence[Values]) -> Values:
    """The mean of one subject's volumes (on one grid), voxel by voxel over finite values;
    NaN where none of them is finite. Its record is the first file's (header, path)."""
    total = np.zeros(values[0].array.shape, np.float64, order="F")
    count = np.zeros(values[0].array.shape, np.int64, order="F")
    for x in values:
        array = np.asarray(x.array, dtype=np.float64)
        finite = np.isfinite(array)
        total += np.where(finite, array, 0.0)
        count += finite
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.asfortranarray(total / count)
    finite = mean[np.isfinite(mean)]
    value_range = (float(finite.min()), float(finite.max())) if finite.size else None
    head = values[0].record
    record = SourceRecord(
        head.path, value_range, head.header, head.image_class, None, None, integer=False
    )
    return Values(mean, value_range, bool(finite.size == mean.size), record)
