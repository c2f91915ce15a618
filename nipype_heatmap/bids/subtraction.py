"""The subtraction analysis: the percent of group A minus the percent of group B.

:func:`write_subtraction_maps` splits a selection's subjects by a ``participants.tsv``
column (:func:`~nipype_heatmap.bids.participants.participants_groups`) and writes the
subtraction and both groups' percent maps as derivatives, through one plan, in the steps
every run follows (:mod:`~nipype_heatmap.bids._runs`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io import OutputPlan
from ..io.locking import DEFAULT_TIMEOUT
from ..maps import subtraction_images
from ._runs import MapSet, finish_run, outputs_of
from .derivatives import OutputDataset, generated_by, refuse_replacing, selection_fields
from .naming import COHORT_MAPS, cohort_stem, subtraction_fields
from .participants import participants_groups
from .selection import BIDSSelection
from .units import accumulate_units

__all__ = ["write_subtraction_maps"]


# -- subtraction -------------------------------------------------------------------------------
def write_subtraction_maps(
    selection: BIDSSelection | Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    *,
    column: str,
    group_a: str,
    group_b: str | None = None,
    participants_tsv: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    command: str | None = None,
    report: bool = False,
    underlay: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, str]:
    """The subtraction analysis of a selection's subjects, split by a ``participants.tsv``
    column: the percent of group A minus the percent of group B with a non-zero value, and
    both groups' percent maps, as derivatives (and, with ``report``, the subtraction's
    report, on a symmetric scale).

    Subjects are the unit: a subject with several files (``several_per_subject="average"``)
    counts once, its files averaged first. Planned and written as :func:`write_group_maps`.

    Returns
    -------
    dict
        Role (``subtraction``, ``percent_a``, ``percent_b``, their ``*_sidecar``,
        ``report``, ``figure``) -> path.
    """
    selection = BIDSSelection.from_any(selection)
    units_a, units_b, groups = participants_groups(
        selection, column, group_a, group_b, participants_tsv
    )
    kept = sorted([*groups["SubjectsA"], *groups["SubjectsB"]])
    both = BIDSSelection(
        files=sorted(f for s in kept for f in selection.groups[s]),
        dataset_root=selection.dataset_root,
        subjects=kept,
        entities=selection.entities,
        dataset_name=selection.dataset_name,
        generated_by=selection.generated_by,
        several_per_subject=selection.several_per_subject,
        groups={s: selection.groups[s] for s in kept},
        participants=selection.participants,
        filters=selection.filters,
    )
    fields = subtraction_fields(groups)
    dataset = OutputDataset(output_dir, [selection.dataset_root])
    with OutputPlan() as plan:
        names = ("subtraction", "percent_a", "percent_b")
        maps = MapSet("sub", both, cohort_stem(both, "subtraction", **fields), {})
        maps.n_units = len(kept)
        for name in names:
            stem = cohort_stem(both, name, **fields)
            plan.add(maps.role(name), dataset.path / f"{stem}.nii.gz")
            plan.add(maps.role(f"{name}_sidecar"), dataset.path / f"{stem}.json", nifti=False)
        if report:
            plan.add(maps.role("report"), dataset.path / f"{maps.stem}.html", nifti=False)
            plan.add(
                maps.role("figure"), dataset.path / "figures" / f"{maps.stem}.png", nifti=False
            )
        dataset.declare(plan)
        plan.refuse_inputs([f for unit in units_a for f in unit], "group A input")
        plan.refuse_inputs([f for unit in units_b for f in unit], "group B input")
        plan.refuse_inputs([groups["ParticipantsTable"]], "participants table")
        groups_field = {k: v for k, v in groups.items() if k != "ParticipantsTable"}

        def identity(m, name, uris):
            return {
                "Sources": uris,
                "Statistic": name,
                "Groups": groups_field,
                "Weighting": both.weighting,
            }

        links = dataset.links(dataset.read_description())
        for name in names:
            refuse_replacing(
                Path(plan.path(maps.role(name))),
                Path(plan.path(maps.role(f"{name}_sidecar"))),
                identity(maps, name, dataset.uris(both, links)),
                overwrite,
            )
        acc_a = accumulate_units(units_a, num_threads=num_threads)
        acc_b = accumulate_units(units_b, num_threads=num_threads)
        images = subtraction_images(acc_a, acc_b)
        for name in names:
            plan.write_image(maps.role(name), images[name])
        maps.image = images["subtraction"]

        def sidecars(m, uris):
            out = {}
            for name in names:
                what = COHORT_MAPS[name][2]
                out[name] = {
                    "Description": f"Per voxel, {what}: {len(units_a)} subjects with "
                    f"{column} = {groups['GroupA']} (A) and {len(units_b)} with "
                    f"{column} = {groups['GroupB']} (B), from {groups['ParticipantsTable']}. "
                    "Made with nipype_heatmap.",
                    **selection_fields(both, uris),
                    "Statistic": name,
                    "Groups": groups_field,
                    "Units": "percentage points" if name == "subtraction" else "percent",
                    "GeneratedBy": [generated_by(command)],
                }
            return out

        def render(m, uris):
            if not report:
                return None
            from ..report import render_map_report

            sidecar = sidecars(m, uris)["subtraction"]
            return render_map_report(
                images["subtraction"],
                kind="signed",
                title=maps.stem,
                space=both.entities.get("space"),
                underlay=underlay,
                units="percent of A minus percent of B",
                sources=uris,
                parameters={
                    k: v for k, v in sidecar.items() if k not in ("Sources", "Description")
                },
                command=command,
            )

        written = finish_run(
            plan,
            dataset,
            [maps],
            sidecars=sidecars,
            report=render,
            overwrite=overwrite,
            identity=identity,
            lock_timeout=lock_timeout,
        )
    return outputs_of(written, maps.key)
