"""Nipype interfaces: thin shells over :mod:`nipype_heatmap.core`.

The import path ``nipype_heatmap.interfaces.HeatmapVolume`` is part of the public API:
Nipype pickles node results with the interface's import path, so moving the class would
break cached working directories.
"""

from __future__ import annotations

import os

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

from .core import DEFAULT_OUTPUT_FILENAME, write_heatmap
from .io import check_output_filename, find_nifti_files

IFLOGGER = logging.getLogger("nipype.interface")


class _HeatmapVolumeInputSpec(BaseInterfaceInputSpec):
    nii_folder = Directory(
        exists=True,
        mandatory=True,
        xor=["in_files"],
        desc="Folder whose .nii/.nii.gz files (sorted by name) are the inputs.",
    )
    in_files = InputMultiObject(
        File(exists=True),
        mandatory=True,
        xor=["nii_folder"],
        desc="3D NIfTI files on one grid, in the order to use; the first sets the header.",
    )
    use_mean = traits.Bool(
        True, usedefault=True, desc="Voxel-wise mean (probability map); False gives the sum."
    )
    clip_to_input_range = traits.Bool(
        True, usedefault=True, desc="Clip the map to the range of all finite input values."
    )
    normalize = traits.Bool(
        False, usedefault=True, desc="Min-max scale the finite values of the map to [0, 1]."
    )
    output_filename = Str(
        DEFAULT_OUTPUT_FILENAME,
        usedefault=True,
        desc="Bare file name of the heatmap, ending in .nii or .nii.gz.",
    )
    debug = traits.Bool(
        False, usedefault=True, desc="Log per-file value ranges and final statistics."
    )


class _HeatmapVolumeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="The float32 heatmap, in the node's working directory.")
    n_inputs = traits.Int(desc="How many volumes went into the heatmap.")
    input_files = OutputMultiObject(File(exists=True), desc="The files used, in order.")


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
    ...                    clip_to_input_range=False)  # doctest: +SKIP
    >>> res = hm.run(cwd="/tmp/overlap")  # doctest: +SKIP
    >>> res.outputs.out_file  # doctest: +SKIP
    '/tmp/overlap/heatmap_volume.nii.gz'
    """

    input_spec = _HeatmapVolumeInputSpec
    output_spec = _HeatmapVolumeOutputSpec

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
        }
        out_file = os.path.join(runtime.cwd, name)
        if isdefined(self.inputs.nii_folder):
            in_files = find_nifti_files(self.inputs.nii_folder, exclude=out_file)
        else:
            in_files = [os.path.abspath(f) for f in self.inputs.in_files]
        out_file = write_heatmap(in_files, out_file, **options)
        IFLOGGER.info("HeatmapVolume: %d volume(s) -> %s", len(in_files), out_file)
        self._results["out_file"] = out_file
        self._results["n_inputs"] = len(in_files)
        self._results["input_files"] = in_files
        return runtime


class _PartialHeatmapInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(
        File(exists=True),
        mandatory=True,
        desc="One chunk of the 3D NIfTI files, in order; the first sets the grid and header.",
    )
    out_name = Str(
        "partial_heatmap.nii.gz",
        usedefault=True,
        desc="Bare file name of the partial heatmap (a .nii or .nii.gz file).",
    )


class _PartialHeatmapOutputSpec(TraitedSpec):
    state_file = File(exists=True, desc="float64 NIfTI of sums and counts, metadata embedded.")
    n_inputs = traits.Int(desc="How many volumes this chunk holds.")


class PartialHeatmap(SimpleInterface):
    """Accumulate one chunk of inputs into a partial heatmap file, for :class:`MergeHeatmaps`.

    The state file format is documented in :mod:`nipype_heatmap.state`.
    """

    input_spec = _PartialHeatmapInputSpec
    output_spec = _PartialHeatmapOutputSpec

    def _run_interface(self, runtime):
        from .core import accumulate_files
        from .state import save_state

        out_file = os.path.join(runtime.cwd, check_output_filename(self.inputs.out_name))
        files = [os.path.abspath(f) for f in self.inputs.in_files]
        acc = accumulate_files(files, progress=False)
        self._results["state_file"] = save_state(acc, out_file)
        self._results["n_inputs"] = acc.n_inputs
        return runtime


class _MergeHeatmapsInputSpec(BaseInterfaceInputSpec):
    state_files = InputMultiObject(
        File(exists=True),
        mandatory=True,
        desc="Partial heatmaps from PartialHeatmap, in input order.",
    )
    use_mean = traits.Bool(
        True, usedefault=True, desc="Voxel-wise mean (probability map); False gives the sum."
    )
    clip_to_input_range = traits.Bool(
        True, usedefault=True, desc="Clip the map to the range of all finite input values."
    )
    normalize = traits.Bool(
        False, usedefault=True, desc="Min-max scale the finite values of the map to [0, 1]."
    )
    output_filename = Str(
        DEFAULT_OUTPUT_FILENAME,
        usedefault=True,
        desc="Bare file name of the heatmap, ending in .nii or .nii.gz.",
    )


class MergeHeatmaps(SimpleInterface):
    """Merge partial heatmaps exactly and write the final map, as :class:`HeatmapVolume`.

    Outputs are those of :class:`HeatmapVolume`: the same map, ``n_inputs`` and
    ``input_files`` as a single node over all the chunks' files.
    """

    input_spec = _MergeHeatmapsInputSpec
    output_spec = _HeatmapVolumeOutputSpec

    def _run_interface(self, runtime):
        from .io import prepare_output, save_atomic
        from .state import merge_states

        out_file = prepare_output(
            os.path.join(runtime.cwd, check_output_filename(self.inputs.output_filename))
        )
        acc = merge_states(self.inputs.state_files)
        img = acc.finalize(
            self.inputs.use_mean, self.inputs.clip_to_input_range, self.inputs.normalize
        )
        self._results["out_file"] = save_atomic(img, out_file)
        self._results["n_inputs"] = acc.n_inputs
        self._results["input_files"] = acc.sources
        IFLOGGER.info(
            "MergeHeatmaps: %d partial(s), %d volume(s)",
            len(self.inputs.state_files),
            acc.n_inputs,
        )
        return runtime
