"""fMRIPrep-style group derivatives: select from BIDS -> heatmaps -> BIDS derivatives sink."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from .._docs import fill_doc
from ..interfaces import (
    HeatmapDerivativesSink,
    HeatmapOfSubjects,
    HeatmapVolume,
    SelectBIDSInputs,
    mem_gb,
)
from ..options import CohortOptions, MapOptions

__all__ = [
    "init_bids_heatmap_wf",
    "Values",
]

#: Each cohort map's output of the heatmap node (and input of the sink).
_COHORT_FILES = {
    "coverage": ["coverage_file"],
    "std": ["std_file", "variance_file"],
    "overlap": ["overlap_file", "mincount_file", "overlap_table"],
}

Values = str | int | Sequence[str | int] | None


@fill_doc
def init_bids_heatmap_wf(
    *,
    suffix: Values = None,
    space: Values = None,
    res: Values = None,
    label: Values = None,
    desc: Values = None,
    datatype: Values = None,
    session: Values = None,
    task: Values = None,
    run: Values = None,
    acquisition: Values = None,
    participant_label: Sequence[str] | None = None,
    bids_filters: Mapping[str, Any] | None = None,
    bids_filter_file: str | os.PathLike[str] | None = None,
    several_per_subject: str | None = None,
    allow_native_space: bool = False,
    bids_database_dir: str | os.PathLike[str] | None = None,
    options: MapOptions = MapOptions(),
    cohort: CohortOptions = CohortOptions(),
    out_desc: str | None = None,
    overwrite: bool = False,
    generate_report: bool = False,
    command: str | None = None,
    num_threads: int = 1,
    name: str = "bids_heatmap_wf",
) -> pe.Workflow:
    """Build a workflow that turns BIDS inputs into group heatmap BIDS derivatives.

    ``select_inputs`` picks the files of each map with pybids (one file per subject,
    template spaces only, one value per entity, filters never widened: see
    :mod:`nipype_heatmap.bids.selection`; several values of an entity give one map each),
    ``heatmap`` (a MapNode, one job per map) aggregates them, and ``ds_heatmap`` stores every
    map, its cohort maps, sidecars, reports and the dataset's files through one output plan
    (names and provenance: see :mod:`nipype_heatmap.bids`), as ``nipype-heatmap-bids``
    writes them. The workflow's ``base_dir`` is a reusable work folder (``-w``): a node whose
    inputs did not change is not run again; the selection always is.

    Parameters
    ----------
    suffix : str or list, optional
        Suffix of the inputs (default: ``mask``, unless the filters give one).
    space, res, label, desc, datatype, session, task, run, acquisition : str or list
        Entity values the inputs must have; several values give one map each.
    participant_label : sequence of str, optional
        Subjects to include (the BIDS-App ``--participant_label``); all found otherwise.
    bids_filters : mapping, optional
        More entity filters, in any shape of a BIDS filter file (fMRIPrep's included).
    bids_filter_file : path-like, optional
        A BIDS filter file (not with ``bids_filters``).
    several_per_subject : {None, "average", "each-file"}, default=None
        How to weigh subjects with several files: refused by default; ``"average"``: each
        subject once, its files averaged first (``HeatmapOfSubjects``); ``"each-file"``.
    allow_native_space : bool, default=False
        Accept inputs in a space that is not a template.
    bids_database_dir : path-like, optional
        Keep the pybids index there for later runs (the BIDS-App ``--bids-database-dir``).
    options : MapOptions
        What the maps are (mean or sum, clipping, normalization).
    cohort : CohortOptions
        Cohort maps to make in the same pass and store beside each map.
    out_desc : str, optional
        ``desc`` of the map (one map only), replacing the automatic one.
    overwrite : bool, default=False
        Replace maps of the same names made from other inputs or parameters.
    generate_report : bool, default=False
        Write each map's figure and HTML report.
    command : str, optional
        What made the maps, for provenance (default: this builder and its name).
    %(wf_num_threads)s
    name : str, default="bids_heatmap_wf"
        Name of the workflow.

    Inputs
    ------
    bids_dir
        Root of the BIDS (derivatives) dataset holding the inputs.
    output_dir
        Root of the derivatives dataset to write.
    underlay
        Optional anatomical image for the reports.

    Outputs
    -------
    out_files
        The maps in the derivatives dataset, one per selection.
    out_sidecars
        Their JSON sidecars.
    out_reports
        Their HTML reports (when ``generate_report``).
    out_cohort
        Per map, each stored cohort map's name -> its path.
    n_inputs
        Per map, the number of inputs aggregated (subjects when averaging).
    subjects
        Per map, the subjects found.
    written
        Per map, every file written (role -> path).

    Examples
    --------
    >>> wf = init_bids_heatmap_wf(space="MNI152NLin2009cAsym", label="lesion")
    >>> wf.inputs.inputnode.bids_dir = "derivatives/lesions"
    >>> wf.inputs.inputnode.output_dir = "derivatives/nipype_heatmap"
    >>> wf.base_dir = "work"
    >>> graph = wf.run()
    >>> from pathlib import Path
    >>> sorted(p.name for p in Path("derivatives/nipype_heatmap").glob("*.nii.gz"))
    ['space-MNI152NLin2009cAsym_label-lesion_desc-meanMask_probseg.nii.gz']
    """
    if not isinstance(options, MapOptions) or not isinstance(cohort, CohortOptions):
        raise TypeError(
            "options and cohort are MapOptions and CohortOptions "
            "(from nipype_heatmap.options import MapOptions, CohortOptions)"
        )
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["bids_dir", "output_dir", "underlay"]), name="inputnode"
    )
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=[
                "out_files",
                "out_sidecars",
                "out_reports",
                "out_cohort",
                "n_inputs",
                "subjects",
                "written",
            ]
        ),
        name="outputnode",
    )
    select_inputs = pe.Node(
        SelectBIDSInputs(
            several_per_subject=several_per_subject, allow_native_space=allow_native_space
        ),
        name="select_inputs",
    )
    filters = {
        "suffix": suffix,
        "space": space,
        "res": res,
        "label": label,
        "desc": desc,
        "datatype": datatype,
        "session": session,
        "task": task,
        "run": run,
        "acquisition": acquisition,
        "participant_label": participant_label,
        "bids_filters": dict(bids_filters) if bids_filters else None,
        "bids_filter_file": os.path.abspath(bids_filter_file) if bids_filter_file else None,
        "bids_database_dir": os.path.abspath(bids_database_dir) if bids_database_dir else None,
    }
    for key, value in filters.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = [str(v) for v in value]
        elif isinstance(value, int):
            value = str(value)
        setattr(select_inputs.inputs, key, value)
    flags = {
        "use_mean": options.use_mean,
        "clip_to_input_range": options.clip_to_input_range,
        "normalize": options.normalize,
    }
    tracked = {
        "coverage": cohort.coverage,
        "std": cohort.std,
        "ddof": cohort.ddof,
        **({"min_count": cohort.min_count} if cohort.min_count is not None else {}),
        **({"min_fraction": cohort.min_fraction} if cohort.min_fraction is not None else {}),
    }
    if several_per_subject == "average":
        heatmap = pe.MapNode(
            HeatmapOfSubjects(num_threads=num_threads, **flags, **tracked),
            iterfield=["in_files", "selection"],
            name="heatmap",
            mem_gb=mem_gb(num_threads),
        )
    else:
        heatmap = pe.MapNode(
            HeatmapVolume(num_threads=num_threads, **flags, **tracked),
            iterfield=["in_files"],
            name="heatmap",
            mem_gb=mem_gb(num_threads),
        )
    ds_heatmap = pe.Node(
        HeatmapDerivativesSink(
            generate_report=generate_report,
            overwrite=overwrite,
            command=command or f"nipype_heatmap.workflows.init_bids_heatmap_wf(name={name!r})",
            ddof=cohort.ddof,
            **flags,
            **({"out_desc": out_desc} if out_desc else {}),
            **({"min_count": cohort.min_count} if cohort.min_count is not None else {}),
            **({"min_fraction": cohort.min_fraction} if cohort.min_fraction is not None else {}),
        ),
        name="ds_heatmap",
        run_without_submitting=True,
    )
    # fmt: off
    workflow.connect([
        (inputnode, select_inputs, [("bids_dir", "bids_dir")]),
        (inputnode, ds_heatmap, [("output_dir", "output_dir"), ("underlay", "underlay")]),
        (select_inputs, heatmap, [("in_files", "in_files")]),
        (select_inputs, ds_heatmap, [("selections", "selections")]),
        (select_inputs, outputnode, [("subjects", "subjects")]),
        (heatmap, ds_heatmap, [("out_file", "in_files")]),
        (heatmap, outputnode, [("n_inputs", "n_inputs")]),
        (ds_heatmap, outputnode, [("out_files", "out_files"),
                                  ("out_sidecars", "out_sidecars"),
                                  ("out_reports", "out_reports"),
                                  ("out_cohort", "out_cohort"),
                                  ("written", "written")]),
    ])
    # fmt: on
    if several_per_subject == "average":
        workflow.connect(select_inputs, "selections", heatmap, "selection")
    wanted = [
        field
        for option, fields in _COHORT_FILES.items()
        if getattr(cohort, option)
        for field in fields
    ]
    if wanted:
        workflow.connect([(heatmap, ds_heatmap, [(f, f) for f in wanted])])
    return workflow
