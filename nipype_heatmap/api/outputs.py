"""Outputs of a run: the maps declared in its plan, and the one writer of them."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import nibabel as nb

from ..accumulate import HeatmapAccumulator
from ..io import (
    OutputPlan,
    is_own_file,
    same_target,
    split_nifti_name,
)
from ..io.writing import Chunks
from ..maps import cohort_images, overlap_table_text
from ..options import CohortOptions, MapOptions
from ..state import state_chunks
from .inputs import collect_inputs

__all__ = [
    "beside",
    "plan_fixed_maps",
    "plan_inputs_and_mincount",
    "plan_maps",
    "plan_maps_of",
    "write_maps",
    "MapTargets",
]

LOGGER = logging.getLogger(__name__)


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
    plan_fixed_maps(plan, out_file, cohort)
    if cohort.overlap:
        plan.add("mincount", _mincount_path(plan, cohort, n_inputs))


def plan_fixed_maps(plan: OutputPlan, out_file: str | os.PathLike[str], cohort: CohortOptions):
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
    plan_fixed_maps(plan, out_file, cohort)
    return plan_inputs_and_mincount(plan, items, cohort, n_others, allow_empty=n_others > 0)


def plan_inputs_and_mincount(
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


class MapTargets(Protocol):
    """Where :func:`write_maps` writes: an :class:`~nipype_heatmap.io.OutputPlan`, or a view
    of one that names its roles otherwise (the BIDS mode's, one per map set)."""

    def __contains__(self, role: object) -> bool: ...

    def write(self, role: str, chunks: Chunks) -> None: ...

    def write_image(self, role: str, img: nb.Nifti1Image) -> None: ...

    def write_text(self, role: str, text: str) -> None: ...


def write_maps(
    acc: HeatmapAccumulator, plan: MapTargets, options: MapOptions, cohort: CohortOptions
) -> None:
    """The one writer: the heatmap, the cohort maps and their table, and the state, each
    into its role of ``plan`` when declared there (nothing is committed here)."""
    if "heatmap" in plan:
        plan.write_image("heatmap", acc.map_image(options))
    if any(name in plan for name in (*cohort.maps(), "table")):
        images, table = cohort_images(acc, cohort)
    else:  # no map declared (a state updated alone): the cohort options do not matter
        images, table = {}, None
    for name, img in images.items():
        if name in plan:
            plan.write_image(name, img)
    if table is not None and "table" in plan:
        plan.write_text("table", overlap_table_text(table))
    if "state" in plan:
        plan.write("state", state_chunks(acc))
