"""BIDS in and out as Nipype nodes: ``SelectBIDSInputs`` and ``HeatmapDerivativesSink``."""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    OutputMultiObject,
    SimpleInterface,
    Str,
    TraitedSpec,
    isdefined,
    traits,
)

from ._base import AbsDirectory, AbsFile

#: Entity filters of SelectBIDSInputs and init_bids_heatmap_wf: name -> description.
BIDS_ENTITY_FILTERS = {
    "space": "space entity the inputs must have (e.g. MNI152NLin2009cAsym).",
    "res": "res entity the inputs must have (e.g. 2).",
    "label": "label entity the inputs must have (e.g. lesion, GM).",
    "desc": "desc entity the inputs must have (e.g. brain).",
    "datatype": "datatype the inputs must have (anat, func, dwi...).",
    "session": "session the inputs must have.",
    "task": "task entity the inputs must have.",
    "run": "run entity the inputs must have.",
    "acquisition": "acq entity the inputs must have.",
}


class _SelectBIDSInputsInputSpec(BaseInterfaceInputSpec):
    bids_dir = AbsDirectory(
        exists=True, mandatory=True, desc="Root of a BIDS (derivatives) dataset."
    )
    suffix = Str("mask", usedefault=True, desc="BIDS suffix of the inputs (mask, probseg...).")
    bids_filters = traits.Dict(
        Str(), traits.Any(), desc="More entity filters, as in an fMRIPrep BIDS filter file."
    )
    participant_label = traits.List(Str(), desc="Subjects to include (default: all found).")
    several_per_subject = traits.Bool(
        False,
        usedefault=True,
        desc="Allow several files per subject and session (each counts once).",
    )


for _entity, _desc in BIDS_ENTITY_FILTERS.items():
    _SelectBIDSInputsInputSpec.add_class_trait(_entity, Str(desc=_desc))


class _SelectBIDSInputsOutputSpec(TraitedSpec):
    in_files = OutputMultiObject(File(exists=True), desc="The selected files, sorted by path.")
    selection = traits.Dict(desc="The selection as plain data (BIDSSelection.as_dict()).")
    subjects = traits.List(Str(), desc="Subjects found.")


class SelectBIDSInputs(SimpleInterface):
    """Select a group map's inputs from a BIDS dataset by entities (needs pybids).

    The rules (one value per entity, one file per subject and session, every participant
    asked for present) are those of :func:`nipype_heatmap.bids.select_bids_inputs`; a
    broken rule is an error naming the files.
    """

    input_spec = _SelectBIDSInputsInputSpec
    output_spec = _SelectBIDSInputsOutputSpec
    _always_run = True  # the dataset's listing is not in Nipype's hash of bids_dir

    def _run_interface(self, runtime):
        from ..bids import select_bids_inputs

        def value(name):
            v = getattr(self.inputs, name)
            return v if isdefined(v) and v not in ([], {}) else None

        selection = select_bids_inputs(
            self.inputs.bids_dir,
            suffix=self.inputs.suffix,
            bids_filters=value("bids_filters"),
            participant_label=value("participant_label"),
            several_per_subject=self.inputs.several_per_subject,
            **{name: value(name) for name in BIDS_ENTITY_FILTERS},
        )
        self._results["in_files"] = selection.files
        self._results["selection"] = selection.as_dict()
        self._results["subjects"] = selection.subjects
        return runtime


class _HeatmapDerivativesSinkInputSpec(BaseInterfaceInputSpec):
    in_file = AbsFile(exists=True, mandatory=True, desc="The heatmap to store.")
    selection = traits.Dict(
        mandatory=True, desc="The selection its inputs came from (SelectBIDSInputs)."
    )
    output_dir = AbsDirectory(mandatory=True, desc="Root of the derivatives dataset to write.")
    use_mean = traits.Bool(True, usedefault=True, desc="Whether the map is a mean (else a sum).")
    clip_to_input_range = traits.Bool(True, usedefault=True, desc="Whether it was clipped.")
    normalize = traits.Bool(False, usedefault=True, desc="Whether it was normalized.")
    out_desc = Str(desc="desc entity of the map, replacing the automatic one.")
    overwrite = traits.Bool(
        False,
        usedefault=True,
        desc="Replace a map of the same name made from other inputs or parameters.",
    )
    command = Str(desc="What made the map (command line or workflow), for provenance.")
    generate_report = traits.Bool(
        False, usedefault=True, desc="Also write the figure and the HTML report."
    )
    underlay = AbsFile(exists=True, desc="Anatomical underlay for the report.")
    coverage_file = AbsFile(exists=True, desc="Coverage map to store beside it (desc-coverage).")
    std_file = AbsFile(exists=True, desc="Standard deviation map to store (desc-std).")
    variance_file = AbsFile(exists=True, desc="Variance map to store (desc-variance).")
    overlap_file = AbsFile(exists=True, desc="Non-zero count map to store (desc-nonzero).")
    mincount_file = AbsFile(exists=True, desc="Minimum-overlap mask to store (desc-mincount<k>).")
    overlap_table = AbsFile(exists=True, desc="Minimum-overlap table, stored beside desc-nonzero.")
    ddof = traits.Int(1, usedefault=True, desc="Delta degrees of freedom of std/variance.")
    min_count = traits.Int(xor=["min_fraction"], desc="The k of the minimum-overlap mask.")
    min_fraction = traits.Float(xor=["min_count"], desc="The k as a fraction (ceil(F * N)).")


class _HeatmapDerivativesSinkOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="The map, BIDS-named, in the derivatives dataset.")
    out_sidecar = File(exists=True, desc="Its JSON sidecar (Sources, parameters).")
    out_report = File(desc="The HTML report, when asked for.")
    out_figures = OutputMultiObject(File(exists=True), desc="The report's figure, when asked for.")
    out_cohort = traits.Dict(desc="Each stored cohort map's name -> its path.")


class HeatmapDerivativesSink(SimpleInterface):
    """Write a group heatmap into a BIDS derivatives dataset, with sidecar and provenance.

    A group-level sink: unlike niworkflows' ``DerivativesDataSink``, it names files without a
    subject entity, at the dataset root; names, overwriting and provenance follow
    :mod:`nipype_heatmap.bids.derivatives`.
    """

    input_spec = _HeatmapDerivativesSinkInputSpec
    output_spec = _HeatmapDerivativesSinkOutputSpec
    _always_run = True  # writes outside its working directory

    def _run_interface(self, runtime):
        from ..bids.derivatives import write_group_derivative

        def optional(name):
            v = getattr(self.inputs, name)
            return v if isdefined(v) else None

        outputs = write_group_derivative(
            self.inputs.in_file,
            self.inputs.output_dir,
            self.inputs.selection,
            use_mean=self.inputs.use_mean,
            clip_to_input_range=self.inputs.clip_to_input_range,
            normalize=self.inputs.normalize,
            out_desc=optional("out_desc"),
            overwrite=self.inputs.overwrite,
            command=optional("command") or "nipype_heatmap.interfaces.HeatmapDerivativesSink",
            generate_report=self.inputs.generate_report,
            underlay=optional("underlay"),
        )
        self._results["out_file"] = outputs.out_file
        self._results["out_sidecar"] = outputs.sidecar
        cohort = {
            name: optional(f"{name}_file")
            for name in ("coverage", "std", "variance", "overlap", "mincount")
            if optional(f"{name}_file")
        }
        if cohort:
            from ..bids.derivatives import write_cohort_derivatives
            from ..options import CohortOptions

            n_inputs = len(self.inputs.selection["files"])
            self._results["out_cohort"] = write_cohort_derivatives(
                cohort,
                self.inputs.output_dir,
                self.inputs.selection,
                table=optional("overlap_table"),
                ddof=self.inputs.ddof,
                min_count=CohortOptions(
                    min_count=optional("min_count"), min_fraction=optional("min_fraction")
                ).min_count_for(n_inputs),
                overwrite=self.inputs.overwrite,
                command=optional("command") or "nipype_heatmap.interfaces.HeatmapDerivativesSink",
            )
        if outputs.report_html:
            self._results["out_report"] = outputs.report_html
            self._results["out_figures"] = outputs.figures
        return runtime
