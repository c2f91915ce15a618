"""``HeatmapVolume``: the mean or sum of many volumes, and the cohort maps beside it."""

from __future__ import annotations

import os

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
from ..core import DEFAULT_OUTPUT_FILENAME, write_heatmap
from ..io import check_output_filename, find_nifti_files
from ._base import IFLOGGER, AbsDirectory, AbsFile, _SpecBase, core_logs_in_nipype

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
                from ..cohort import write_cohort_maps

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


def _cohort_options(inputs) -> dict:
    """The cohort inputs of an interface, as keyword arguments of the core functions."""
    return {
        "coverage": inputs.coverage,
        "std": inputs.std,
        "ddof": inputs.ddof,
        "min_count": inputs.min_count if isdefined(inputs.min_count) else None,
        "min_fraction": inputs.min_fraction if isdefined(inputs.min_fraction) else None,
    }
