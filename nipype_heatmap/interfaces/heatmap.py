"""``HeatmapVolume``: the mean or sum of many volumes, and the cohort maps beside it."""

from __future__ import annotations

from nipype.interfaces.base import InputMultiObject, SimpleInterface, isdefined, traits

from .._docs import SHORT
from ..api import make_maps
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
    "HeatmapVolume",
]


class _HeatmapVolumeInputSpec(MapOptionsInputSpec, CohortInputSpec):
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

    input_spec = _HeatmapVolumeInputSpec
    output_spec = MapsOutputSpec

    @property
    def always_run(self) -> bool:
        """Re-run on every call when reading a folder (its listing is not in the hash)."""
        return isdefined(self.inputs.nii_folder)

    def _run_interface(self, runtime):
        out_file = output_in_cwd(runtime, self.inputs.output_filename)
        inputs = (
            [self.inputs.nii_folder] if isdefined(self.inputs.nii_folder) else self.inputs.in_files
        )
        with core_logs_in_nipype(self.inputs.debug):
            acc, written = make_maps(
                inputs,
                out_file,
                options=map_options(self.inputs),
                cohort=cohort_options(self.inputs),
                debug=self.inputs.debug,
                progress=False,  # node logs are files, not terminals
                num_threads=self.inputs.num_threads,
            )
        IFLOGGER.info("HeatmapVolume: %d volume(s) -> %s", acc.n_inputs, written["heatmap"])
        set_map_outputs(self._results, written, acc)
        return runtime
