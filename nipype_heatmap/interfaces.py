"""Nipype interfaces: thin shells over :mod:`nipype_heatmap.core`.

The import path ``nipype_heatmap.interfaces.HeatmapVolume`` is part of the public API:
Nipype pickles node results with the interface's import path, so moving the class would
break cached working directories.
"""

from __future__ import annotations

import logging as _logging
import os
from contextlib import contextmanager

from nipype import logging
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    Str,
    TraitedSpec,
    isdefined,
    traits,
)
from packaging.version import Version

from . import __version__
from ._docs import SHORT
from .core import DEFAULT_OUTPUT_FILENAME, write_heatmap
from .io import check_output_filename, find_nifti_files

IFLOGGER = logging.getLogger("nipype.interface")

#: Peak memory (GB) of one single-threaded heatmap node on the MNI 1 mm grid
#: (182 x 218 x 182), as measured in the README's benchmarks (0.28 GB for float32 maps;
#: 0.27 GB for a PartialHeatmap job, 0.23 GB for MergeHeatmaps), for Nipype's ``mem_gb=``.
#: It grows with the number of voxels, not with the number of inputs: multiply by 8 for a
#: 0.5 mm grid. Use :func:`mem_gb` for a node with several threads.
MEM_GB = 0.3


def mem_gb(num_threads: int = 1) -> float:
    """Memory estimate (GB) of a heatmap node with ``num_threads`` threads, MNI 1 mm grid.

    Each thread keeps one more float32 volume (and its compressed bytes) in flight: about
    0.06 GB at 1 mm, on top of :data:`MEM_GB` for one thread.
    """
    return round(MEM_GB + 0.06 * (max(1, num_threads) - 1), 2)


class _AbsolutePathMixin:
    """Make a path absolute when it is set, keeping its links (``resolve=True`` would
    follow symlinks, and a BIDS or DataLad dataset's file names must stay its own).

    A relative path is taken relative to where the user sets it, not to the node's
    working directory, where the interface runs.
    """

    def validate(self, objekt, name, value, return_pathlike=False):
        value = super().validate(objekt, name, value, return_pathlike=False)
        return os.path.abspath(value)


class AbsFile(_AbsolutePathMixin, File):
    """A ``File`` trait whose relative paths are made absolute where they are set."""


class AbsDirectory(_AbsolutePathMixin, Directory):
    """A ``Directory`` trait whose relative paths are made absolute where they are set."""


class _ToNipypeLog(_logging.Handler):
    """Hand this package's log records to Nipype's interface logger (and its handlers)."""

    def emit(self, record: _logging.LogRecord) -> None:
        if IFLOGGER.isEnabledFor(record.levelno):
            IFLOGGER.handle(record)


@contextmanager
def core_logs_in_nipype(debug: bool = False):
    """Within the block, this package's log records appear in Nipype's interface log.

    With ``debug``, the package's INFO records (per-file ranges, statistics) are let through.
    """
    logger = _logging.getLogger("nipype_heatmap")
    handler = _ToNipypeLog()
    old_level = logger.level
    logger.addHandler(handler)
    if debug:
        logger.setLevel(_logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class _SpecBase(BaseInterfaceInputSpec):
    """Input specs whose deprecated names are checked against this package's version."""

    # Nipype compares a trait's ``deprecated=`` release with ``package_version``.
    package_version = Version(__version__)


#: The release that drops the deprecated input names below.
_DROP_ALIASES_IN = "1.0"


class _HeatmapOptionsInputSpec(_SpecBase):
    use_mean = traits.Bool(True, usedefault=True, desc=SHORT["use_mean"])
    clip_to_input_range = traits.Bool(True, usedefault=True, desc=SHORT["clip_to_input_range"])
    normalize = traits.Bool(False, usedefault=True, desc=SHORT["normalize"])
    output_filename = Str(DEFAULT_OUTPUT_FILENAME, usedefault=True, desc=SHORT["output_filename"])


class _HeatmapVolumeInputSpec(_HeatmapOptionsInputSpec):
    nii_folder = AbsDirectory(
        exists=True,
        mandatory=True,
        xor=["in_files"],
        desc="Folder whose .nii/.nii.gz files (sorted by name) are the inputs.",
    )
    in_files = InputMultiObject(
        AbsFile(exists=True),
        mandatory=True,
        xor=["nii_folder"],
        desc="3D NIfTI files on one grid, in the order to use; the first sets the header.",
    )
    debug = traits.Bool(False, usedefault=True, nohash=True, desc=SHORT["debug"])
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc=SHORT["num_threads"])


class _HeatmapVolumeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="The float32 heatmap, in the node's working directory.")
    n_inputs = traits.Int(desc="How many volumes went into the heatmap.")
    input_files = OutputMultiObject(File(exists=True), desc="The files used, in order.")


class _CohortInputSpec(BaseInterfaceInputSpec):
    coverage = traits.Bool(
        False, usedefault=True, desc="Also write the coverage map (inputs with a finite value)."
    )
    std = traits.Bool(
        False, usedefault=True, desc="Also write the standard deviation and variance maps."
    )
    ddof = traits.Int(1, usedefault=True, desc="Delta degrees of freedom of std/variance.")
    min_count = traits.Int(
        xor=["min_fraction"],
        desc="Write the mask of voxels non-zero in at least this many inputs.",
    )
    min_fraction = traits.Float(
        xor=["min_count"], desc="As min_count, with a fraction of the inputs (ceil(F * N))."
    )


class _HeatmapVolumeWithCohortInputSpec(_HeatmapVolumeInputSpec, _CohortInputSpec):
    pass


class _HeatmapVolumeWithCohortOutputSpec(_HeatmapVolumeOutputSpec):
    coverage_file = File(exists=True, desc="Coverage map (uint16/uint32), when asked for.")
    std_file = File(exists=True, desc="Standard deviation map (float32), when asked for.")
    variance_file = File(exists=True, desc="Variance map (float32), when asked for.")
    overlap_file = File(exists=True, desc="Per-voxel count of non-zero inputs, with min_count.")
    mincount_file = File(exists=True, desc="Minimum-overlap mask (uint8), with min_count.")
    overlap_table = File(exists=True, desc="TSV of voxels surviving each k, with min_count.")


class HeatmapVolume(SimpleInterface):
    """Make the voxel-wise mean or sum of many co-registered 3D NIfTI volumes.

    Give either ``nii_folder`` or ``in_files``. With a folder, the node always re-runs:
    Nipype hashes a ``Directory`` input by its path only, so a cached result would go stale
    when files are added to, removed from or changed in the folder (Nipype's own
    ``DataGrabber`` does the same). With ``in_files``, Nipype's usual file hashing decides.

    Examples
    --------
    >>> from nipype_heatmap.interfaces import HeatmapVolume
    >>> hm = HeatmapVolume(nii_folder="lesion_masks", use_mean=False,
    ...                    clip_to_input_range=False)
    >>> res = hm.run()  # writes into the current folder; run(cwd=...) to choose
    >>> res.outputs.out_file  # doctest: +ELLIPSIS
    '.../heatmap_volume.nii.gz'
    >>> res.outputs.n_inputs
    3
    """

    input_spec = _HeatmapVolumeWithCohortInputSpec
    output_spec = _HeatmapVolumeWithCohortOutputSpec

    @property
    def always_run(self) -> bool:
        """Re-run on every call when reading a folder (its listing is not in the hash)."""
        return isdefined(self.inputs.nii_folder)

    def _run_interface(self, runtime):
        name = check_output_filename(self.inputs.output_filename)
        options = {
            "use_mean": self.inputs.use_mean,
            "clip_to_input_range": self.inputs.clip_to_input_range,
            "normalize": self.inputs.normalize,
            "debug": self.inputs.debug,
            "progress": False,  # node logs are files, not terminals
            "num_threads": self.inputs.num_threads,
        }
        out_file = os.path.join(runtime.cwd, name)
        if isdefined(self.inputs.nii_folder):
            in_files = find_nifti_files(self.inputs.nii_folder, exclude=out_file)
        else:
            in_files = [os.path.abspath(f) for f in self.inputs.in_files]
        cohort = _cohort_options(self.inputs)
        with core_logs_in_nipype(self.inputs.debug):
            thresholds = (cohort["min_count"], cohort["min_fraction"])
            if cohort["coverage"] or cohort["std"] or any(t is not None for t in thresholds):
                from .cohort import write_cohort_maps

                written = write_cohort_maps(in_files, out_file, **options, **cohort)
                out_file = written.pop("heatmap")
                for name, path in written.items():
                    key = "overlap_table" if name == "table" else f"{name}_file"
                    self._results[key] = path
            else:
                out_file = write_heatmap(in_files, out_file, **options)
        IFLOGGER.info("HeatmapVolume: %d volume(s) -> %s", len(in_files), out_file)
        self._results["out_file"] = out_file
        self._results["n_inputs"] = len(in_files)
        self._results["input_files"] = in_files
        return runtime


class _PartialHeatmapInputSpec(_SpecBase):
    in_files = InputMultiObject(
        AbsFile(exists=True),
        mandatory=True,
        desc="One chunk of the 3D NIfTI files, in order; the first sets the grid and header.",
    )
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc=SHORT["num_threads"])
    output_filename = Str(
        "partial_heatmap.nii.gz",
        usedefault=True,
        desc="Bare file name of the partial heatmap (a .nii or .nii.gz file).",
    )
    out_name = Str(
        deprecated=_DROP_ALIASES_IN,
        new_name="output_filename",
        desc="Deprecated name of output_filename.",
    )
    cohort_stats = traits.Bool(
        True,
        usedefault=True,
        desc="Also track the non-zero count and the spread, so that every cohort map can be "
        "written from the merged or updated state (costs time for floating-point inputs).",
    )


class _PartialHeatmapOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="float64 NIfTI of sums and counts, metadata embedded.")
    state_file = File(exists=True, desc="Deprecated name of out_file (the same file).")
    n_inputs = traits.Int(desc="How many volumes this chunk holds.")


class PartialHeatmap(SimpleInterface):
    """Accumulate one chunk of inputs into a partial heatmap file, for :class:`MergeHeatmaps`.

    The state file format is documented in :mod:`nipype_heatmap.state`. It records each
    input's content hash, so that :class:`UpdateHeatmapState` can later remove it exactly.
    """

    input_spec = _PartialHeatmapInputSpec
    output_spec = _PartialHeatmapOutputSpec

    def _run_interface(self, runtime):
        from .core import accumulate_files
        from .state import save_state

        out_file = os.path.join(runtime.cwd, check_output_filename(self.inputs.output_filename))
        files = [os.path.abspath(f) for f in self.inputs.in_files]
        with core_logs_in_nipype():
            acc = accumulate_files(
                files,
                progress=False,
                num_threads=self.inputs.num_threads,
                digests=True,
                overlap=self.inputs.cohort_stats,
                spread=self.inputs.cohort_stats,
            )
        self._results["out_file"] = self._results["state_file"] = save_state(acc, out_file)
        self._results["n_inputs"] = acc.n_inputs
        return runtime


class _MergeHeatmapsInputSpec(_HeatmapOptionsInputSpec, _CohortInputSpec):
    in_files = InputMultiObject(
        AbsFile(exists=True),
        mandatory=True,
        desc="Partial heatmaps from PartialHeatmap, in input order.",
    )
    state_files = InputMultiObject(
        AbsFile(exists=True),
        deprecated=_DROP_ALIASES_IN,
        new_name="in_files",
        desc="Deprecated name of in_files.",
    )


class MergeHeatmaps(SimpleInterface):
    """Merge partial heatmaps exactly and write the final maps, as :class:`HeatmapVolume`.

    Outputs are those of :class:`HeatmapVolume`: the same maps, ``n_inputs`` and
    ``input_files`` as a single node over all the chunks' files. The cohort maps need
    partials that tracked them (:class:`PartialHeatmap` does by default). With one
    partial, it writes the maps of a saved or updated state.
    """

    input_spec = _MergeHeatmapsInputSpec
    output_spec = _HeatmapVolumeWithCohortOutputSpec

    def _run_interface(self, runtime):
        from .cohort import write_maps
        from .io import prepare_output
        from .state import merge_states

        out_file = prepare_output(
            os.path.join(runtime.cwd, check_output_filename(self.inputs.output_filename))
        )
        with core_logs_in_nipype():
            acc = merge_states(self.inputs.in_files)
            written = write_maps(
                acc,
                out_file,
                use_mean=self.inputs.use_mean,
                clip_to_input_range=self.inputs.clip_to_input_range,
                normalize=self.inputs.normalize,
                **_cohort_options(self.inputs),
            )
        self._results["out_file"] = written.pop("heatmap")
        for name, path in written.items():
            self._results["overlap_table" if name == "table" else f"{name}_file"] = path
        self._results["n_inputs"] = acc.n_inputs
        self._results["input_files"] = acc.sources
        IFLOGGER.info(
            "MergeHeatmaps: %d partial(s), %d volume(s)",
            len(self.inputs.in_files),
            acc.n_inputs,
        )
        return runtime


def _cohort_options(inputs) -> dict:
    """The cohort inputs of an interface, as keyword arguments of the core functions."""
    return {
        "coverage": inputs.coverage,
        "std": inputs.std,
        "ddof": inputs.ddof,
        "min_count": inputs.min_count if isdefined(inputs.min_count) else None,
        "min_fraction": inputs.min_fraction if isdefined(inputs.min_fraction) else None,
    }


class _UpdateHeatmapStateInputSpec(_SpecBase):
    in_file = AbsFile(exists=True, mandatory=True, desc="The partial heatmap (state) to update.")
    add_files = InputMultiObject(
        AbsFile(exists=True), desc="3D NIfTI files to add, in order (none already in it)."
    )
    remove_files = InputMultiObject(
        AbsFile(exists=True),
        desc="Inputs of the state to remove, unchanged since they were added (hash checked).",
    )
    output_filename = Str(
        "heatmap_state.nii.gz",
        usedefault=True,
        desc="Bare file name of the updated state (a .nii or .nii.gz file).",
    )
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc=SHORT["num_threads"])


class _UpdateHeatmapStateOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="The updated state, in the node's working directory.")
    n_inputs = traits.Int(desc="How many volumes the updated state holds.")
    input_files = OutputMultiObject(File(), desc="Its inputs, in order.")


class UpdateHeatmapState(SimpleInterface):
    """Add files to and remove files from a saved state, reading only those files.

    The updated state gives the maps of a recompute from its inputs (see
    :func:`nipype_heatmap.state.update_state` for the precision); write them with
    :class:`MergeHeatmaps` (``in_files=[out_file]``). The input state is not modified.
    """

    input_spec = _UpdateHeatmapStateInputSpec
    output_spec = _UpdateHeatmapStateOutputSpec

    def _run_interface(self, runtime):
        from .state import update_state

        out_file = os.path.join(runtime.cwd, check_output_filename(self.inputs.output_filename))
        with core_logs_in_nipype():
            acc = update_state(
                self.inputs.in_file,
                add=self.inputs.add_files if isdefined(self.inputs.add_files) else (),
                remove=self.inputs.remove_files if isdefined(self.inputs.remove_files) else (),
                out_file=out_file,
                num_threads=self.inputs.num_threads,
                progress=False,
            )
        self._results["out_file"] = out_file
        self._results["n_inputs"] = acc.n_inputs
        self._results["input_files"] = acc.sources
        return runtime


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


class _SelectBIDSInputsInputSpec(_SpecBase):
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
        from .bids import select_bids_inputs

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


class _HeatmapDerivativesSinkInputSpec(_SpecBase):
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
    :mod:`nipype_heatmap.derivatives`.
    """

    input_spec = _HeatmapDerivativesSinkInputSpec
    output_spec = _HeatmapDerivativesSinkOutputSpec
    _always_run = True  # writes outside its working directory

    def _run_interface(self, runtime):
        from .derivatives import write_group_derivative

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
            from .cohort import resolve_min_count
            from .derivatives import write_cohort_derivatives

            n_inputs = len(self.inputs.selection["files"])
            self._results["out_cohort"] = write_cohort_derivatives(
                cohort,
                self.inputs.output_dir,
                self.inputs.selection,
                table=optional("overlap_table"),
                ddof=self.inputs.ddof,
                min_count=resolve_min_count(
                    n_inputs, optional("min_count"), optional("min_fraction")
                ),
                overwrite=self.inputs.overwrite,
                command=optional("command") or "nipype_heatmap.interfaces.HeatmapDerivativesSink",
            )
        if outputs.report_html:
            self._results["out_report"] = outputs.report_html
            self._results["out_figures"] = outputs.figures
        return runtime


# -- label atlases ------------------------------------------------------------------------
class _AtlasOptionsInputSpec(_SpecBase):
    atlas_name = Str(
        "heatmap", usedefault=True, desc="The atlas-<name> entity of the output names."
    )
    thresholds = traits.List(
        traits.Float,
        [0.0, 25.0, 50.0],
        usedefault=True,
        desc="Percent thresholds of the maximum-probability maps.",
    )
    label_table = AbsFile(
        exists=True, desc="Label names and colours: a BIDS dseg.tsv or a FreeSurfer LUT."
    )
    dense = traits.Bool(True, usedefault=True, desc="Write the dense 4D probability image.")
    sparse = traits.Bool(False, usedefault=True, desc="Write the sparse atlas.")


class _LabelAtlasInputSpec(_AtlasOptionsInputSpec):
    in_files = InputMultiObject(
        AbsFile(exists=True),
        xor=["partial_atlases"],
        desc="Label images on one grid, in order; the first sets the grid and header.",
    )
    partial_atlases = InputMultiObject(
        AbsFile(exists=True),
        xor=["in_files"],
        desc="Sparse partial atlases (PartialLabelAtlas) to merge, in input order.",
    )
    background = traits.Int(0, usedefault=True, desc="The value that is no label.")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc=SHORT["num_threads"])


class _LabelAtlasOutputSpec(TraitedSpec):
    probseg_file = File(desc="4D float32 per-label probability maps (with dense=True).")
    dseg_files = OutputMultiObject(
        File(exists=True), desc="Maximum-probability maps, one per threshold, in order."
    )
    label_table = File(exists=True, desc="The label table (BIDS dseg.tsv).")
    sparse_file = File(desc="The sparse atlas (with sparse=True).")
    n_inputs = traits.Int(desc="How many label images went in.")
    labels = traits.List(traits.Int, desc="Every label, ascending (the 4D volumes' order).")


class LabelAtlas(SimpleInterface):
    """A probabilistic atlas from label images (or merged partial atlases), in one pass.

    Writes into the node's folder what ``nipype-heatmap-atlas`` writes: the per-label
    probability maps (4D), the maximum-probability maps at each threshold, the label table
    and, with ``sparse=True``, the sparse atlas (see :mod:`nipype_heatmap.atlas`). Given
    ``partial_atlases`` instead of ``in_files``, it merges them exactly: the same atlas as
    one node over all their inputs.
    """

    input_spec = _LabelAtlasInputSpec
    output_spec = _LabelAtlasOutputSpec

    def _run_interface(self, runtime):
        from .atlas import accumulate_labels, merge_atlases, read_label_table, write_atlas

        table = None
        if isdefined(self.inputs.label_table):
            table = read_label_table(self.inputs.label_table)
        with core_logs_in_nipype():
            if isdefined(self.inputs.partial_atlases):
                acc = merge_atlases(self.inputs.partial_atlases)
            elif isdefined(self.inputs.in_files):
                acc = accumulate_labels(
                    self.inputs.in_files,
                    background=self.inputs.background,
                    num_threads=self.inputs.num_threads,
                )
            else:
                raise ValueError("LabelAtlas needs in_files or partial_atlases")
            written = write_atlas(
                acc,
                runtime.cwd,
                atlas_name=self.inputs.atlas_name,
                thresholds=self.inputs.thresholds,
                label_table=table,
                dense=self.inputs.dense,
                sparse=self.inputs.sparse,
            )
        if "probseg" in written:
            self._results["probseg_file"] = written["probseg"]
        if "sparse" in written:
            self._results["sparse_file"] = written["sparse"]
        self._results["dseg_files"] = [v for k, v in written.items() if k.startswith("th")]
        self._results["label_table"] = written["table"]
        self._results["n_inputs"] = acc.n_inputs
        self._results["labels"] = acc.label_list
        return runtime


class _PartialLabelAtlasInputSpec(_SpecBase):
    in_files = InputMultiObject(
        AbsFile(exists=True), mandatory=True, desc="One chunk of the label images, in order."
    )
    background = traits.Int(0, usedefault=True, desc="The value that is no label.")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc=SHORT["num_threads"])
    output_filename = Str(
        "partial_atlas.nii.gz",
        usedefault=True,
        desc="Bare file name of the partial atlas (a .nii or .nii.gz file).",
    )


class _PartialLabelAtlasOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="The chunk's sparse atlas (exact counts).")
    n_inputs = traits.Int(desc="How many label images this chunk holds.")


class PartialLabelAtlas(SimpleInterface):
    """Count one chunk of label images into a sparse partial atlas, for :class:`LabelAtlas`
    (``partial_atlases``): the map step of the atlas map-reduce."""

    input_spec = _PartialLabelAtlasInputSpec
    output_spec = _PartialLabelAtlasOutputSpec

    def _run_interface(self, runtime):
        from .atlas import accumulate_labels

        out_file = os.path.join(runtime.cwd, check_output_filename(self.inputs.output_filename))
        with core_logs_in_nipype():
            acc = accumulate_labels(
                self.inputs.in_files,
                background=self.inputs.background,
                num_threads=self.inputs.num_threads,
            )
            self._results["out_file"] = acc.to_sparse().save(out_file)
        self._results["n_inputs"] = acc.n_inputs
        return runtime
