"""BIDS in and out as Nipype nodes: ``SelectBIDSInputs``, ``HeatmapOfSubjects`` and
``HeatmapDerivativesSink``."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    Str,
    TraitedSpec,
    isdefined,
    traits,
)

from ._base import (
    IFLOGGER,
    AbsDirectory,
    AbsFile,
    CohortInputSpec,
    MapOptionsInputSpec,
    MapsOutputSpec,
    cohort_options,
    core_logs_in_nipype,
    map_options,
    output_in_cwd,
    set_map_outputs,
)

__all__ = [
    "BIDS_ENTITY_FILTERS",
    "HeatmapDerivativesSink",
    "HeatmapOfSubjects",
    "SelectBIDSInputs",
]

#: Entity filters of SelectBIDSInputs and init_bids_heatmap_wf: name -> description.
BIDS_ENTITY_FILTERS = {
    "suffix": "BIDS suffix of the inputs (mask, probseg, dseg...; default: mask).",
    "space": "space entity the inputs must have (a template, e.g. MNI152NLin2009cAsym).",
    "res": "res entity the inputs must have (e.g. 2).",
    "label": "label entity the inputs must have (e.g. lesion, GM); several: one map each.",
    "desc": "desc entity the inputs must have (e.g. brain).",
    "datatype": "datatype the inputs must have (anat, func, dwi...).",
    "session": "session the inputs must have (the map is then named ses-<label>).",
    "task": "task entity the inputs must have.",
    "run": "run entity the inputs must have.",
    "acquisition": "acq entity the inputs must have.",
}


class _SelectBIDSInputsInputSpec(BaseInterfaceInputSpec):
    bids_dir = AbsDirectory(
        exists=True, mandatory=True, desc="Root of a BIDS (derivatives) dataset."
    )
    bids_filters = traits.Dict(
        Str(), traits.Any(), desc="Entity filters, in any shape of a BIDS filter file."
    )
    bids_filter_file = AbsFile(exists=True, desc="A BIDS filter file (JSON), as fMRIPrep's.")
    participant_label = traits.List(Str(), desc="Subjects to include (default: all found).")
    several_per_subject = traits.Enum(
        None,
        "average",
        "each-file",
        usedefault=True,
        desc="How to weigh subjects with several files: refused (None), average (each "
        "subject once, its files averaged first) or each-file.",
    )
    allow_native_space = traits.Bool(
        False, usedefault=True, desc="Accept inputs in a space that is not a template."
    )
    bids_database_dir = AbsDirectory(
        nohash=True, desc="Keep the pybids index here for later runs (created)."
    )


for _entity, _desc in BIDS_ENTITY_FILTERS.items():
    _SelectBIDSInputsInputSpec.add_class_trait(_entity, InputMultiObject(Str(), desc=_desc))


class _SelectBIDSInputsOutputSpec(TraitedSpec):
    in_files = traits.List(
        traits.List(File(exists=True)), desc="Each map's files, sorted by path."
    )
    selections = traits.List(
        traits.Dict(), desc="Each map's selection as plain data (BIDSSelection.as_dict())."
    )
    subjects = traits.List(traits.List(Str()), desc="Each map's subjects.")


class SelectBIDSInputs(SimpleInterface):
    """Select group maps' inputs from a BIDS dataset by entities (needs pybids).

    Several values of an entity (``label=["GM", "WM"]``) give one map each, from one index.
    The rules (one file per subject, template spaces only, one value per entity, filters
    never widened, every participant asked for present) are those of
    :func:`nipype_heatmap.bids.select_bids_maps`; a broken rule is an error naming the
    files.
    """

    input_spec = _SelectBIDSInputsInputSpec
    output_spec = _SelectBIDSInputsOutputSpec
    _always_run = True  # the dataset's listing is not in Nipype's hash of bids_dir

    def _run_interface(self, runtime):
        from ..bids import select_bids_maps

        def value(name):
            v = getattr(self.inputs, name)
            return v if isdefined(v) and v not in ([], {}) else None

        with core_logs_in_nipype():
            selections = select_bids_maps(
                self.inputs.bids_dir,
                bids_filters=value("bids_filters"),
                filter_file=value("bids_filter_file"),
                participant_label=value("participant_label"),
                several_per_subject=self.inputs.several_per_subject,
                allow_native_space=self.inputs.allow_native_space,
                bids_database_dir=value("bids_database_dir"),
                **{name: value(name) for name in BIDS_ENTITY_FILTERS},
            )
        self._results["in_files"] = [s.files for s in selections]
        self._results["selections"] = [s.as_dict() for s in selections]
        self._results["subjects"] = [s.subjects for s in selections]
        return runtime


class _HeatmapOfSubjectsInputSpec(MapOptionsInputSpec, CohortInputSpec):
    in_files = InputMultiObject(
        AbsFile(exists=True),
        mandatory=True,
        desc="The selection's files (hashed, so that a changed file re-runs the node).",
    )
    selection = traits.Dict(
        mandatory=True, desc="The selection (SelectBIDSInputs): which files are whose."
    )
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="Reader threads.")


class HeatmapOfSubjects(SimpleInterface):
    """A heatmap in which each subject counts once: a subject's files (sessions, runs) are
    averaged first, in memory, then the subjects are combined (the
    ``several_per_subject="average"`` weighting of :mod:`nipype_heatmap.bids`).

    Writes what :class:`~nipype_heatmap.interfaces.HeatmapVolume` writes, in the node's
    working directory; ``n_inputs`` counts subjects.
    """

    input_spec = _HeatmapOfSubjectsInputSpec
    output_spec = MapsOutputSpec

    def _run_interface(self, runtime):
        from ..api import plan_maps, write_maps
        from ..bids import BIDSSelection, accumulate_units
        from ..io import OutputPlan

        selection = BIDSSelection.from_any(self.inputs.selection)
        if sorted(map(os.path.abspath, self.inputs.in_files)) != sorted(selection.files):
            raise ValueError("in_files must be the selection's files (SelectBIDSInputs)")
        options, cohort = map_options(self.inputs), cohort_options(self.inputs)
        out_file = output_in_cwd(runtime, self.inputs.output_filename)
        units = selection.units
        with core_logs_in_nipype(), OutputPlan() as plan:
            plan_maps(plan, out_file, cohort, len(units))
            plan.refuse_inputs(selection.files)
            acc = accumulate_units(
                units,
                overlap=cohort.overlap,
                spread=cohort.std,
                num_threads=self.inputs.num_threads,
            )
            write_maps(acc, plan, options, cohort)
            written = plan.commit()
        IFLOGGER.info("HeatmapOfSubjects: %d subject(s) -> %s", acc.n_inputs, out_file)
        set_map_outputs(self._results, written, acc)
        return runtime


#: The cohort maps the sink stores: its input -> the map's role.
_COHORT_INPUTS = {
    "coverage_file": "coverage",
    "std_file": "std",
    "variance_file": "variance",
    "overlap_file": "overlap",
    "mincount_file": "mincount",
    "overlap_table": "table",
}


class _HeatmapDerivativesSinkInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(
        AbsFile(exists=True), mandatory=True, desc="The heatmaps to store, one per selection."
    )
    selections = traits.List(
        traits.Dict(), mandatory=True, desc="Each map's selection (SelectBIDSInputs)."
    )
    output_dir = AbsDirectory(mandatory=True, desc="Root of the derivatives dataset to write.")
    use_mean = traits.Bool(True, usedefault=True, desc="Whether the maps are means (else sums).")
    clip_to_input_range = traits.Bool(True, usedefault=True, desc="Whether they were clipped.")
    normalize = traits.Bool(False, usedefault=True, desc="Whether they were normalized.")
    out_desc = Str(desc="desc entity of the map (one map only), replacing the automatic one.")
    overwrite = traits.Bool(
        False,
        usedefault=True,
        desc="Replace maps of the same names made from other inputs or parameters.",
    )
    command = Str(desc="What made the maps (command line or workflow), for provenance.")
    generate_report = traits.Bool(
        False, usedefault=True, desc="Also write each map's figure and HTML report."
    )
    underlay = AbsFile(exists=True, desc="Anatomical underlay for the reports.")
    coverage_file = InputMultiObject(AbsFile(exists=True), desc="Coverage maps, one per map.")
    std_file = InputMultiObject(AbsFile(exists=True), desc="Standard deviation maps.")
    variance_file = InputMultiObject(AbsFile(exists=True), desc="Variance maps.")
    overlap_file = InputMultiObject(AbsFile(exists=True), desc="Non-zero count maps.")
    mincount_file = InputMultiObject(AbsFile(exists=True), desc="Minimum-overlap masks.")
    overlap_table = InputMultiObject(AbsFile(exists=True), desc="Minimum-overlap tables.")
    ddof = traits.Int(1, usedefault=True, desc="Delta degrees of freedom of std/variance.")
    min_count = traits.Int(xor=["min_fraction"], desc="The k of the minimum-overlap mask.")
    min_fraction = traits.Float(xor=["min_count"], desc="The k as a fraction (ceil(F * N)).")


class _HeatmapDerivativesSinkOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="The maps, BIDS-named, in the dataset.")
    out_sidecars = traits.List(File(exists=True), desc="Their JSON sidecars.")
    out_reports = traits.List(File(exists=True), desc="Their HTML reports, when asked for.")
    out_cohort = traits.List(traits.Dict(), desc="Per map, each stored cohort map -> its path.")
    written = traits.List(traits.Dict(), desc="Per map, every file written (role -> path).")


class HeatmapDerivativesSink(SimpleInterface):
    """Store group heatmaps (and their cohort maps) in a BIDS derivatives dataset, with
    sidecars, reports and provenance, through one output plan.

    A group-level sink: unlike niworkflows' ``DerivativesDataSink``, it names files without a
    subject entity, at the dataset root; names, overwriting and provenance follow
    :mod:`nipype_heatmap.bids` (:func:`~nipype_heatmap.bids.store_group_maps`), exactly as
    ``nipype-heatmap-bids`` writes them.
    """

    input_spec = _HeatmapDerivativesSinkInputSpec
    output_spec = _HeatmapDerivativesSinkOutputSpec
    _always_run = True  # writes outside its working directory

    def _run_interface(self, runtime):
        from ..bids import store_group_maps
        from ..options import CohortOptions, MapOptions

        def optional(name):
            v = getattr(self.inputs, name)
            return v if isdefined(v) else None

        n_maps = len(self.inputs.in_files)
        if len(self.inputs.selections) != n_maps:
            raise ValueError(
                f"{n_maps} map(s) for {len(self.inputs.selections)} selection(s): give one "
                "selection per map"
            )
        maps = [{"heatmap": path} for path in self.inputs.in_files]
        for trait, role in _COHORT_INPUTS.items():
            files = optional(trait)
            if files:
                if len(files) != n_maps:
                    raise ValueError(f"{trait}: {len(files)} file(s) for {n_maps} map(s)")
                for one, path in zip(maps, files, strict=True):
                    one[role] = path
        first = maps[0]
        cohort = CohortOptions(
            coverage="coverage" in first,
            std="std" in first,
            ddof=self.inputs.ddof,
            min_count=optional("min_count") if "mincount" in first else None,
            min_fraction=optional("min_fraction") if "mincount" in first else None,
        )
        if "mincount" in first and not cohort.overlap:
            raise ValueError("mincount_file needs min_count or min_fraction (its k)")
        with core_logs_in_nipype():
            written = store_group_maps(
                maps,
                self.inputs.selections,
                self.inputs.output_dir,
                options=MapOptions(
                    self.inputs.use_mean, self.inputs.clip_to_input_range, self.inputs.normalize
                ),
                cohort=cohort,
                out_desc=optional("out_desc"),
                overwrite=self.inputs.overwrite,
                command=optional("command") or "nipype_heatmap.interfaces.HeatmapDerivativesSink",
                report=self.inputs.generate_report,
                underlay=optional("underlay"),
            )
        self._results["written"] = written
        self._results["out_files"] = [w["heatmap"] for w in written]
        self._results["out_sidecars"] = [w["heatmap_sidecar"] for w in written]
        if self.inputs.generate_report:
            self._results["out_reports"] = [w["report"] for w in written]
        self._results["out_cohort"] = [
            {r: p for r, p in w.items() if r in cohort.maps() or r == "table"} for w in written
        ]
        return runtime
