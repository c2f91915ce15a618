"""The group maps made from accumulators: cohort maps, the overlap table, subtraction.

- **coverage**: how many inputs have a finite value at each voxel (``n``);
- **std**, **variance**: the spread across inputs, over finite values (``ddof`` as
  ``numpy.std``; NaN where fewer than ``ddof + 1`` values);
- **overlap**: how many inputs have a finite, non-zero value at each voxel, and
  **mincount**: the mask where that is at least k (as lesion-symptom mapping restricts its
  analysis), with the table of voxels surviving each k;
- **subtraction**: percent of group A minus percent of group B at each voxel (lesion
  subtraction analysis), with both groups' percent maps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nibabel as nb
import numpy as np

from .accumulate import HeatmapAccumulator
from .options import CohortOptions, MapOptions

__all__ = [
    "cohort_images",
    "overlap_table",
    "overlap_table_text",
    "OverlapRow",
    "subtraction_images",
]

LOGGER = logging.getLogger(__name__)

#: Voxels histogrammed per step of the overlap table (np.bincount widens to int64).
_TABLE_STEP = 1 << 20


@dataclass(frozen=True)
class OverlapRow:
    """One row of the minimum-overlap table: voxels where at least ``min_count`` inputs
    have a non-zero value."""

    min_count: int
    fraction: float
    voxels: int


def overlap_table(nonzero: np.ndarray, n_inputs: int) -> list[OverlapRow]:
    """For every k from 1 to ``n_inputs``: how many voxels have ``nonzero >= k``."""
    flat = np.ravel(nonzero, order="K")
    length = n_inputs + 1  # a count above n_inputs (none should be) is left out
    counts = np.zeros(length, np.int64)
    for start in range(0, flat.size, _TABLE_STEP):
        counts += np.bincount(flat[start : start + _TABLE_STEP], minlength=length)[:length]
    surviving = np.cumsum(counts[::-1])[::-1]  # surviving[k] = voxels with nonzero >= k
    return [
        OverlapRow(k, round(k / n_inputs, 6), int(surviving[k])) for k in range(1, n_inputs + 1)
    ]


def overlap_table_text(rows: list[OverlapRow]) -> str:
    """The overlap table as TSV (``min_count``, ``fraction``, ``voxels``)."""
    lines = ["min_count\tfraction\tvoxels"]
    lines += [f"{r.min_count}\t{r.fraction:g}\t{r.voxels}" for r in rows]
    return "\n".join(lines) + "\n"


def cohort_images(
    acc: HeatmapAccumulator, cohort: CohortOptions
) -> tuple[dict[str, nb.Nifti1Image], list[OverlapRow] | None]:
    """The cohort maps asked for, as images on the accumulator's grid, and the overlap
    table (None unless the minimum-overlap maps are asked for).

    Returns images named ``coverage`` (uint16, or uint32 past 65,535 inputs), ``std`` and
    ``variance`` (float32), ``overlap`` (the per-voxel non-zero count) and ``mincount``
    (uint8 mask of ``overlap >= k``).

    Raises
    ------
    ValueError
        If a map needs a statistic the accumulator did not track.
    """
    n_inputs = acc.n_inputs
    count_dtype = np.uint16 if n_inputs < 2**16 else np.uint32

    def tag(what: str) -> bytes:
        return f"nipype_heatmap {what} of {n_inputs} volumes".encode()

    images: dict[str, nb.Nifti1Image] = {}
    if cohort.coverage:
        count = acc.count.value
        if isinstance(count, np.ndarray):
            cover = count.astype(count_dtype, order="F")
        else:
            cover = np.full(acc.shape, count, count_dtype, order="F")
        images["coverage"] = acc.make_image(cover, tag("coverage"))
    if cohort.std:
        if acc.spread is None:
            raise ValueError("the spread was not tracked: accumulate with spread=True")
        var, std = acc.spread.variance_maps(acc.count, acc.sum, cohort.ddof)
        images["std"] = acc.make_image(std, tag(f"std ddof={cohort.ddof}"))
        images["variance"] = acc.make_image(var, tag(f"variance ddof={cohort.ddof}"))
    table = None
    k = cohort.min_count_for(n_inputs)
    if k is not None:
        if acc.nonzero is None:
            raise ValueError("the overlap was not tracked: accumulate with overlap=True")
        nonzero = acc.nonzero.value(acc.sum).astype(count_dtype, order="F")
        table = overlap_table(nonzero, n_inputs)
        images["overlap"] = acc.make_image(nonzero, tag("non-zero count"))
        mask = np.greater_equal(nonzero, k).view(np.uint8)
        images["mincount"] = acc.make_image(mask, tag(f"overlap >= {k}"))
        LOGGER.info(
            "%d voxel(s) have a non-zero value in at least %d of %d inputs",
            np.count_nonzero(mask),
            k,
            n_inputs,
        )
    return images, table


def subtraction_images(
    group_a: HeatmapAccumulator, group_b: HeatmapAccumulator
) -> dict[str, nb.Nifti1Image]:
    """The subtraction map of two groups: percent of A minus percent of B, per voxel.

    With binary masks, ``percent_a`` is the percentage of group A (e.g. patients with a
    deficit) with a lesion at each voxel, ``percent_b`` that of group B, and
    ``subtraction`` their difference (-100 to 100). Group B is re-ordered onto group A's
    grid when its first file's voxel axes are permuted or flipped; A's first file sets
    the header. Missing values count as in the mean (per group).

    Raises
    ------
    ValueError
        If the groups are not on one grid.
    """
    mean = MapOptions(use_mean=True, clip_to_input_range=False)
    percent_a = group_a.aggregate(mean) * 100
    grid_b = group_b.reference.grid
    percent_b = group_a.reference.grid.conform(
        group_b.aggregate(mean) * 100, grid_b.affine, grid_b.source
    )
    text = f"nipype_heatmap % of {group_a.n_inputs} minus % of {group_b.n_inputs}".encode()
    return {
        "subtraction": group_a.make_image((percent_a - percent_b).astype(np.float32), text),
        "percent_a": group_a.make_image(
            percent_a.astype(np.float32), b"nipype_heatmap % of group A"
        ),
        "percent_b": group_a.make_image(
            np.asfortranarray(percent_b).astype(np.float32), b"nipype_heatmap % of group B"
        ),
    }
