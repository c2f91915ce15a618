"""What every interface shares: path traits, the log bridge into Nipype, memory figures,
and the option inputs and map outputs of the heatmap interfaces."""

from __future__ import annotations

import logging as _logging
import os
from contextlib import contextmanager

from nipype import logging
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    OutputMultiObject,
    Str,
    TraitedSpec,
    isdefined,
    traits,
)

from .._docs import SHORT
from ..io import check_output_filename
from ..options import CohortOptions, MapOptions

__all__ = [
    "MEM_GB",
    "AbsDirectory",
    "AbsFile",
    "cohort_options",
    "CohortInputSpec",
    "core_logs_in_nipype",
    "map_options",
    "MapOptionsInputSpec",
    "MapsOutputSpec",
    "mem_gb",
    "output_in_cwd",
    "set_map_outputs",
]

IFLOGGER = logging.getLogger("nipype.interface")

#: Peak memory (GB) of one single-threaded heatmap node on the MNI 1 mm grid
#: (182 x 218 x 182), as measured in the benchmarks (0.28 GB for float32 maps; 0.27 GB for
#: a HeatmapState job, 0.23 GB for MergeHeatmaps), for Nipype's ``mem_gb=``.
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
        value = super().validate(objekt, name, value, return_pathlike=False)  # type: ignore[misc]
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


class MapOptionsInputSpec(BaseInterfaceInputSpec):
    """What the heatmap is (:class:`~nipype_heatmap.options.MapOptions`) and its name."""

    use_mean = traits.Bool(True, usedefault=True, desc=SHORT["use_mean"])
    clip_to_input_range = traits.Bool(True, usedefault=True, desc=SHORT["clip_to_input_range"])
    normalize = traits.Bool(False, usedefault=True, desc=SHORT["normalize"])
    output_filename = Str("heatmap_volume.nii.gz", usedefault=True, desc=SHORT["output_filename"])


class CohortInputSpec(BaseInterfaceInputSpec):
    """The cohort maps to write beside it (:class:`~nipype_heatmap.options.CohortOptions`)."""

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


class MapsOutputSpec(TraitedSpec):
    """The heatmap, the cohort maps asked for, and the inputs used."""

    out_file = File(exists=True, desc="The float32 heatmap, in the node's working directory.")
    n_inputs = traits.Int(desc="How many volumes went into the heatmap.")
    input_files = OutputMultiObject(File(exists=True), desc="The files used, in order.")
    coverage_file = File(exists=True, desc="Coverage map (uint16/uint32), when asked for.")
    std_file = File(exists=True, desc="Standard deviation map (float32), when asked for.")
    variance_file = File(exists=True, desc="Variance map (float32), when asked for.")
    overlap_file = File(exists=True, desc="Per-voxel count of non-zero inputs, with min_count.")
    mincount_file = File(exists=True, desc="Minimum-overlap mask (uint8), with min_count.")
    overlap_table = File(exists=True, desc="TSV of voxels surviving each k, with min_count.")


def output_in_cwd(runtime, filename: str) -> str:
    """``filename`` (checked: a bare ``.nii``/``.nii.gz`` name) in the node's working
    directory, where an interface writes its outputs."""
    return os.path.join(runtime.cwd, check_output_filename(filename))


def map_options(inputs) -> MapOptions:
    """The map options of an interface's inputs."""
    return MapOptions(inputs.use_mean, inputs.clip_to_input_range, inputs.normalize)


def cohort_options(inputs) -> CohortOptions:
    """The cohort options of an interface's inputs."""
    return CohortOptions(
        coverage=inputs.coverage,
        std=inputs.std,
        ddof=inputs.ddof,
        min_count=inputs.min_count if isdefined(inputs.min_count) else None,
        min_fraction=inputs.min_fraction if isdefined(inputs.min_fraction) else None,
    )


def set_map_outputs(results: dict, written: dict[str, str], acc) -> None:
    """Put the written maps, the number of inputs and their files into ``results``."""
    for role, path in written.items():
        if role == "heatmap":
            results["out_file"] = path
        elif role == "table":
            results["overlap_table"] = path
        elif role != "state":
            results[f"{role}_file"] = path
    results["n_inputs"] = acc.n_inputs
    results["input_files"] = acc.sources
