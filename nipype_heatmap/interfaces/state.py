"""Saved states as nodes: map-reduce over chunks (``HeatmapState`` -> ``MergeHeatmaps``) and
exact updates (``UpdateHeatmapState``)."""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    Str,
    TraitedSpec,
    isdefined,
    traits,
)

from .._docs import SHORT
from ..api import accumulate_files, merge_and_write, update_state
from ..state import save_state
from ._base import (
    IFLOGGER,
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
    "HeatmapState",
    "MergeHeatmaps",
    "UpdateHeatmapState",
]


class _HeatmapStateInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(
        AbsFile(exists=True),
        mandatory=True,
        desc="One chunk of the 3D NIfTI files, in order; the first sets the grid and header.",
    )
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc=SHORT["num_threads"])
    output_filename = Str(
        "heatmap_state.nii.gz",
        usedefault=True,
        desc="Bare file name of the state (a .nii or .nii.gz file).",
    )
    cohort_stats = traits.Bool(
        True,
        usedefault=True,
        desc="Also track the non-zero count and the spread, so that every cohort map can be "
        "written from the merged or updated state (costs time for floating-point inputs).",
    )


class _HeatmapStateOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="The state: sums and counts, metadata embedded.")
    n_inputs = traits.Int(desc="How many volumes the state holds.")


class HeatmapState(SimpleInterface):
    """Accumulate a chunk of inputs into a saved state, for :class:`MergeHeatmaps` (the map
    step of a map-reduce) or :class:`UpdateHeatmapState`.

    The state file format is documented in :mod:`nipype_heatmap.state`. It records each
    input's content hash, so that an update can later remove it exactly.
    """

    input_spec = _HeatmapStateInputSpec
    output_spec = _HeatmapStateOutputSpec

    def _run_interface(self, runtime):
        out_file = output_in_cwd(runtime, self.inputs.output_filename)
        with core_logs_in_nipype():
            acc = accumulate_files(
                self.inputs.in_files,
                progress=False,
                num_threads=self.inputs.num_threads,
                digests=True,
                overlap=self.inputs.cohort_stats,
                spread=self.inputs.cohort_stats,
            )
            self._results["out_file"] = save_state(acc, out_file)
        self._results["n_inputs"] = acc.n_inputs
        return runtime


class _MergeHeatmapsInputSpec(MapOptionsInputSpec, CohortInputSpec):
    in_files = InputMultiObject(
        AbsFile(exists=True),
        mandatory=True,
        desc="States (HeatmapState, UpdateHeatmapState), in input order.",
    )


class MergeHeatmaps(SimpleInterface):
    """Merge states exactly and write the final maps, as :class:`HeatmapVolume` does.

    Outputs are those of :class:`HeatmapVolume`: the same maps, ``n_inputs`` and
    ``input_files`` as a single node over all the chunks' files. The cohort maps need
    states that tracked them (:class:`HeatmapState` does by default). With one state, it
    writes the maps of a saved or updated state.
    """

    input_spec = _MergeHeatmapsInputSpec
    output_spec = MapsOutputSpec

    def _run_interface(self, runtime):
        out_file = output_in_cwd(runtime, self.inputs.output_filename)
        with core_logs_in_nipype():
            acc, written = merge_and_write(
                self.inputs.in_files,
                out_file,
                options=map_options(self.inputs),
                cohort=cohort_options(self.inputs),
            )
        set_map_outputs(self._results, written, acc)
        IFLOGGER.info(
            "MergeHeatmaps: %d state(s), %d volume(s)", len(self.inputs.in_files), acc.n_inputs
        )
        return runtime


class _UpdateHeatmapStateInputSpec(BaseInterfaceInputSpec):
    in_file = AbsFile(exists=True, mandatory=True, desc="The state to update (not modified).")
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
    :func:`nipype_heatmap.api.update_state` for the precision); write them with
    :class:`MergeHeatmaps` (``in_files=[out_file]``). The input state is not modified.
    """

    input_spec = _UpdateHeatmapStateInputSpec
    output_spec = _UpdateHeatmapStateOutputSpec

    def _run_interface(self, runtime):
        out_file = output_in_cwd(runtime, self.inputs.output_filename)
        with core_logs_in_nipype():
            acc, written = update_state(
                self.inputs.in_file,
                add=self.inputs.add_files if isdefined(self.inputs.add_files) else (),
                remove=self.inputs.remove_files if isdefined(self.inputs.remove_files) else (),
                out_state=out_file,
                num_threads=self.inputs.num_threads,
                progress=False,
            )
        self._results["out_file"] = written["state"]
        self._results["n_inputs"] = acc.n_inputs
        self._results["input_files"] = acc.sources
        return runtime
