"""A probabilistic atlas of a selection's label images, as a BIDS derivative.

:func:`write_atlas_maps` builds the atlas (:mod:`nipype_heatmap.atlas`) and writes its
maps, sidecars, label table and report through one plan, finished under the dataset's
lock; :func:`find_label_table` finds the ``dseg.tsv`` that names the labels by BIDS
inheritance.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from ..io import OutputPlan, locked
from ..io.locking import DEFAULT_TIMEOUT
from .derivatives import OutputDataset, generated_by, refuse_replacing, selection_fields
from .naming import atlas_stem
from .selection import BIDSSelection

__all__ = ["find_label_table", "write_atlas_maps"]

LOGGER = logging.getLogger(__name__)


# -- atlas -------------------------------------------------------------------------------------
def find_label_table(selection: BIDSSelection) -> str | None:
    """The ``dseg.tsv`` that applies to every input by BIDS inheritance, if any.

    For each input, candidates are ``*_dseg.tsv`` files in its folder or a folder above it
    up to the dataset root, whose entities all appear in the input's name; the one nearest
    the input (then with the most entities) applies.

    Raises
    ------
    ValueError
        If the inputs inherit different tables (naming two of them).
    """
    root = Path(selection.dataset_root).absolute()
    chosen: dict[str, str] = {}
    for path in selection.files:
        entities = set(Path(path).name.split("_")[:-1])
        best = None
        folder = Path(path).parent
        depth = 0
        while True:
            for table in sorted(folder.glob("*dseg.tsv")):
                parts = table.name.split("_")[:-1]
                if table.name != "dseg.tsv" and not table.name.endswith("_dseg.tsv"):
                    continue
                if set(parts) <= entities:
                    rank = (-depth, len(parts))
                    if best is None or rank > best[0]:
                        best = (rank, str(table))
            if folder == root or root not in folder.parents:
                break
            folder = folder.parent
            depth += 1
        if best is not None:
            chosen[path] = best[1]
    tables = sorted(set(chosen.values()))
    if len(tables) > 1:
        raise ValueError(
            f"the inputs inherit different label tables ({tables[0]} and {tables[1]}); give "
            "one with --label-table"
        )
    if tables and len(chosen) < len(selection.files):
        LOGGER.warning("%s applies to only some inputs; used for all", tables[0])
    return tables[0] if tables else None


def write_atlas_maps(
    selection: BIDSSelection | Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    *,
    atlas_name: str,
    thresholds: Sequence[float],
    background: int = 0,
    label_table: str | os.PathLike[str] | None = None,
    sparse: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    report: bool = False,
    underlay: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, str]:
    """A probabilistic atlas of a selection's label images, as a BIDS derivative.

    Files as :func:`nipype_heatmap.atlas.write_atlas` names them, with the inputs' entities
    (:func:`~nipype_heatmap.bids.naming.atlas_stem`), each NIfTI with its sidecar (Sources as
    BIDS URIs, SpatialReference, the subjects), ``atlas-<name>_description.json`` and, with
    ``report``, the report of the ``th25`` (or first) maximum-probability map. Labels are
    named by ``label_table``, else by the ``dseg.tsv`` that applies to the inputs by BIDS
    inheritance (:func:`find_label_table`), else by their values. Planned and written as
    :func:`write_group_maps`.

    Returns
    -------
    dict
        Role (``probseg``, ``th<t>``, ``table``, ``sparse``, ``description``, ``report``)
        -> path.
    """
    from ..atlas import (
        accumulate_labels,
        atlas_names,
        plan_atlas,
        read_label_table,
        threshold_label,
        write_atlas_outputs,
    )

    selection = BIDSSelection.from_any(selection)
    if selection.several_per_subject == "average":
        raise ValueError(
            "label images cannot be averaged: an atlas of subjects with several label images "
            "takes --several-per-subject each-file, or one image per subject"
        )
    table_file = label_table if label_table is not None else find_label_table(selection)
    if table_file is not None and label_table is None:
        LOGGER.info("Label names from %s", table_file)
    table = read_label_table(table_file) if table_file is not None else None
    dataset = OutputDataset(output_dir, [selection.dataset_root])
    stem = atlas_stem(selection.entities, atlas_name)
    names = atlas_names(atlas_name, thresholds, stem=stem)
    with OutputPlan() as plan:
        plan_atlas(plan, dataset.path, names, sparse=sparse)
        description_file = dataset.path / f"atlas-{atlas_name}_description.json"
        plan.add("description", description_file, nifti=False)
        shown = sorted((k for k in names if k.startswith("th")), key=lambda k: k != "th25")
        if report and shown:
            page = names[shown[0]].removesuffix(".nii.gz")
            plan.add("report", dataset.path / f"{page}.html", nifti=False)
            plan.add("figure", dataset.path / "figures" / f"{page}.png", nifti=False)
        dataset.declare(plan)
        plan.refuse_inputs(selection.files)
        if table_file is not None:
            plan.refuse_inputs([table_file], "label table")
        threshold_of = {f"th{threshold_label(t)}": float(t) for t in thresholds}

        def check(links: Mapping[Path, str]) -> list[str]:
            uris = dataset.uris(selection, links)
            for role in names:
                if role == "table" or (role == "sparse" and not sparse):
                    continue
                identity: dict[str, Any] = {"Sources": uris, "Background": int(background)}
                if role in threshold_of:
                    identity["Threshold"] = threshold_of[role]
                refuse_replacing(
                    Path(plan.path(role)), Path(plan.path(f"{role}_sidecar")), identity, overwrite
                )
            return uris

        check(dataset.links(dataset.read_description()))
        atlas = accumulate_labels(selection.files, background=background, num_threads=num_threads)
        with locked(dataset.path, what=f"the dataset {dataset.path}", timeout=lock_timeout):
            description = dataset.read_description()
            links = dataset.links(description)
            uris = check(links)
            fields = selection_fields(selection, uris)
            reference = fields["SpatialReference"]
            rows = write_atlas_outputs(
                atlas,
                plan,
                thresholds=thresholds,
                label_table=table,
                extra_metadata={
                    "Sources": uris,
                    "SpatialReference": reference,
                    "Subjects": selection.subjects,
                    "Weighting": selection.weighting,
                    **({"LabelTable": str(table_file)} if table_file is not None else {}),
                    "GeneratedBy": [generated_by(command)],
                },
            )
            plan.write_json(
                "description",
                {
                    "Name": f"{atlas_name}: probabilistic atlas of {len(uris)} label images",
                    "Description": "Per-label probability maps (fraction of inputs with each "
                    "label), maximum-probability maps at thresholds and a label table, made "
                    "with nipype_heatmap from the images listed in each file's Sources.",
                    "SpatialReference": reference,
                },
            )
            if "report" in plan:
                from ..report import render_atlas_report

                t = threshold_of[shown[0]]
                dseg, _ = atlas.max_probability(t)
                rendered = render_atlas_report(
                    nb.Nifti1Image(np.asarray(dseg, np.int32), atlas.affine),
                    rows,
                    threshold=t,
                    n_inputs=atlas.n_inputs,
                    sources=uris,
                    space=selection.entities.get("space"),
                    underlay=underlay,
                    command=command,
                )
                plan.write("report", [rendered["html"]])
                plan.write("figure", [rendered["png"]])
            dataset.write_shared(plan, description, links, [selection])
            written = plan.commit()
    LOGGER.info("Wrote the atlas %s into %s", atlas_name, dataset.path)
    return {r: p for r, p in written.items() if not r.endswith("_sidecar")}
