"""Saved states: map-reduce over chunks (``PartialHeatmap`` -> ``MergeHeatmaps``) and exact
updates (``UpdateHeatmapState``)."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
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
from ..io import check_output_filename
from ._base import IFLOGGER, AbsFile, _SpecBase, core_logs_in_nipype
from .heatmap import (
    _DROP_ALIASES_IN,
    _cohort_options,
    _CohortInputSpec,
    _HeatmapOptionsInputSpec,
    _HeatmapVolumeWithCohortOutputSpec,
)


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
        from ..core import accumulate_files
        from ..state import save_state

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
        from ..cohort import write_maps
        from ..io import prepare_output
        from ..state import merge_states

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
        from ..state import update_state

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
