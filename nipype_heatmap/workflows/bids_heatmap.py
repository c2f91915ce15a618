"""fMRIPrep-style group derivative: select from BIDS -> HeatmapVolume -> BIDS derivatives sink."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from .._docs import fill_doc
from ..interfaces import HeatmapDerivativesSink, HeatmapVolume, SelectBIDSInputs, mem_gb
from .scaled_heatmap import COHORT_OUTPUTS


@fill_doc
def init_bids_heatmap_wf(
    *,
    space: str | None = None,
    label: str | None = None,
    suffix: str = "mask",
    desc: str | None = None,
    participant_label: Sequence[str] | None = None,
    bids_filters: Mapping[str, Any] | None = None,
    several_per_subject: bool = False,
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    overwrite: bool = False,
    generate_report: bool = False,
    cohort: Mapping[str, Any] | None = None,
    num_threads: int = 1,
    name: str = "bids_heatmap_wf",
) -> pe.Workflow:
    """Build a workflow that turns BIDS inputs into a group heatmap BIDS derivative.

    ``select_inputs`` picks the files by entities with pybids (one value per entity, one
    file per subject and session, every participant present: see
    :mod:`nipype_heatmap.bids`), ``heatmap`` aggregates them, and ``ds_heatmap`` writes the
    map, its JSON sidecar and ``dataset_description.json`` into the derivatives dataset,
    plus the visual report when asked (names and provenance: see
    :mod:`nipype_heatmap.bids.derivatives`).

    Parameters
    ----------
    space : str, optional
        ``space`` entity of the inputs (and of the map).
    label : str, optional
        ``label`` entity (e.g. ``lesion``, ``GM``).
    suffix : str, default="mask"
        Suffix of the inputs.
    desc : str, optional
        ``desc`` entity of the inputs.
    participant_label : sequence of str, optional
        Subjects to include; all found otherwise.
    bids_filters : mapping, optional
        More entity filters (``res``, ``datatype``, ``session``, ``task``, ``run``,
        ``acquisition``...), as in an fMRIPrep BIDS filter file.
    several_per_subject : bool, default=False
        Allow several files per subject and session (each counts once).
    use_mean, clip_to_input_range, normalize : bool
        As for :class:`~nipype_heatmap.interfaces.HeatmapVolume`.
    overwrite : bool, default=False
        Replace a map of the same name made from other inputs or parameters.
    generate_report : bool, default=False
        Write the figure and the HTML report beside the map.
    cohort : mapping, optional
        Cohort maps to make in the same pass and store beside the map, each BIDS-named
        (``desc-coverage...``, ``desc-std...``: see
        :func:`~nipype_heatmap.bids.derivatives.write_cohort_derivatives`), as the inputs of
        :class:`~nipype_heatmap.interfaces.HeatmapVolume` (``coverage``, ``std``,
        ``ddof``, ``min_count``, ``min_fraction``).
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
        Optional anatomical image for the report.

    Outputs
    -------
    out_file
        The map in the derivatives dataset.
    out_sidecar
        Its JSON sidecar.
    out_report
        The HTML report (when ``generate_report``).
    out_cohort
        Each stored cohort map's name -> its path (when ``cohort`` asks for maps).
    n_inputs
        Number of inputs aggregated.
    subjects
        Subjects found.

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
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["bids_dir", "output_dir", "underlay"]), name="inputnode"
    )
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["out_file", "out_sidecar", "out_report", "out_cohort", "n_inputs", "subjects"]
        ),
        name="outputnode",
    )
    select_inputs = pe.Node(
        SelectBIDSInputs(suffix=suffix, several_per_subject=several_per_subject),
        name="select_inputs",
    )
    for entity, value in (("space", space), ("label", label), ("desc", desc)):
        if value:
            setattr(select_inputs.inputs, entity, value)
    if bids_filters:
        select_inputs.inputs.bids_filters = dict(bids_filters)
    if participant_label:
        select_inputs.inputs.participant_label = list(participant_label)
    flags = {
        "use_mean": use_mean,
        "clip_to_input_range": clip_to_input_range,
        "normalize": normalize,
    }
    cohort = {k: v for k, v in (cohort or {}).items() if v is not None}
    heatmap = pe.Node(
        HeatmapVolume(num_threads=num_threads, **flags, **cohort),
        name="heatmap",
        mem_gb=mem_gb(num_threads),
    )
    ds_heatmap = pe.Node(
        HeatmapDerivativesSink(
            generate_report=generate_report,
            overwrite=overwrite,
            command=f"nipype_heatmap.workflows.init_bids_heatmap_wf(name={name!r})",
            **flags,
            **{k: v for k, v in cohort.items() if k in ("ddof", "min_count", "min_fraction")},
        ),
        name="ds_heatmap",
        run_without_submitting=True,
    )
    # fmt: off
    workflow.connect([
        (inputnode, select_inputs, [("bids_dir", "bids_dir")]),
        (inputnode, ds_heatmap, [("output_dir", "output_dir"), ("underlay", "underlay")]),
        (select_inputs, heatmap, [("in_files", "in_files")]),
        (select_inputs, ds_heatmap, [("selection", "selection")]),
        (select_inputs, outputnode, [("subjects", "subjects")]),
        (heatmap, ds_heatmap, [("out_file", "in_file")]),
        (heatmap, outputnode, [("n_inputs", "n_inputs")]),
        (ds_heatmap, outputnode, [("out_file", "out_file"),
                                  ("out_sidecar", "out_sidecar"),
                                  ("out_report", "out_report")]),
    ])
    # fmt: on
    wanted = sorted(
        name
        for option, names in COHORT_OUTPUTS.items()
        if cohort.get(option) or (option == "min_count" and cohort.get("min_fraction"))
        for name in names
    )
    if wanted:
        workflow.connect([
            (heatmap, ds_heatmap, [(n, n) for n in wanted]),
            (ds_heatmap, outputnode, [("out_cohort", "out_cohort")]),
        ])  # fmt: skip
    return workflow
