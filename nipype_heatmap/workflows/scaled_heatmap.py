"""Map-reduce heatmaps: chunks of inputs as separate (cluster) jobs, merged exactly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from .._docs import fill_doc
from ..interfaces import HeatmapState, MergeHeatmaps, mem_gb

__all__ = [
    "COHORT_OUTPUTS",
    "init_scaled_heatmap_wf",
    "split_chunks_node",
]


@fill_doc
def init_scaled_heatmap_wf(
    *,
    chunk_size: int,
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    output_filename: str = "heatmap_volume.nii.gz",
    cohort: Mapping[str, Any] | None = None,
    num_threads: int = 1,
    name: str = "scaled_heatmap_wf",
) -> pe.Workflow:
    """Build a workflow that computes a heatmap as partial sums over chunks, then merges them.

    ``split_chunks`` cuts the input list into chunks of ``chunk_size`` files, a MapNode of
    :class:`~nipype_heatmap.interfaces.HeatmapState` accumulates each chunk into a
    state file (one job per chunk under a cluster plugin), and
    :class:`~nipype_heatmap.interfaces.MergeHeatmaps` merges them and writes the map. The
    result is the single-node :class:`~nipype_heatmap.interfaces.HeatmapVolume` result
    (same voxels to float32 precision, same ``n_inputs``, same header), for any chunk size.

    Parameters
    ----------
    chunk_size : int
        Files per chunk (per job). Each job holds about three input volumes and two float64
        volumes in memory, whatever the chunk size; larger chunks mean fewer, longer jobs.
    use_mean, clip_to_input_range, normalize : bool
        As for :class:`~nipype_heatmap.interfaces.HeatmapVolume`.
    output_filename : str, default="heatmap_volume.nii.gz"
        Bare file name of the final map.
    cohort : mapping, optional
        Cohort maps to write beside it, as the inputs of
        :class:`~nipype_heatmap.interfaces.HeatmapVolume` (``coverage``, ``std``, ``ddof``,
        ``min_count``, ``min_fraction``); the partials then track what they need, and the
        merged maps equal the single node's.
    %(wf_num_threads)s
    name : str, default="scaled_heatmap_wf"
        Name of the workflow.

    Inputs
    ------
    in_files
        List of 3D NIfTI files on one grid, in order.

    Outputs
    -------
    out_file
        The heatmap.
    coverage_file
        The coverage map, with ``cohort={"coverage": True}`` (undefined otherwise).
    std_file
        The standard deviation map, with ``std``.
    variance_file
        The variance map, with ``std``.
    overlap_file
        The per-voxel count of non-zero inputs, with ``min_count`` or ``min_fraction``.
    mincount_file
        The minimum-overlap mask, with ``min_count`` or ``min_fraction``.
    overlap_table
        The TSV of voxels surviving each k, with ``min_count`` or ``min_fraction``.
    n_inputs
        How many volumes went in.
    input_files
        The files used, in order.

    Examples
    --------
    >>> wf = init_scaled_heatmap_wf(chunk_size=2)
    >>> wf.inputs.inputnode.in_files = mask_files
    >>> wf.base_dir = "work"
    >>> graph = wf.run()  # locally; on a cluster (not run here), e.g.:
    >>> wf.run(plugin="SLURM", plugin_args={"sbatch_args": "--mem=1G -t 30"})  # doctest: +SKIP
    """
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive number of files, not {chunk_size!r}")

    cohort = dict(cohort or {})
    unknown = set(cohort) - set(COHORT_OUTPUTS) - {"ddof", "min_fraction"}
    if unknown:
        raise ValueError(f"unknown cohort option(s) {sorted(unknown)}")
    track = bool(cohort.get("std") or cohort.get("min_count") or cohort.get("min_fraction"))

    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["in_files"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["out_file", "n_inputs", "input_files", *sorted(_COHORT_FILES)]
        ),
        name="outputnode",
    )
    split_chunks = split_chunks_node(chunk_size)
    partial = pe.MapNode(
        HeatmapState(num_threads=num_threads, cohort_stats=track),
        iterfield=["in_files"],
        name="chunk_state",
        mem_gb=mem_gb(num_threads),
    )
    merge = pe.Node(
        MergeHeatmaps(
            use_mean=use_mean,
            clip_to_input_range=clip_to_input_range,
            normalize=normalize,
            output_filename=output_filename,
            **{k: v for k, v in cohort.items() if v is not None},
        ),
        name="merge_heatmaps",
        mem_gb=mem_gb(1),  # merging reads one partial at a time, on one thread
    )
    # fmt: off
    workflow.connect([
        (inputnode, split_chunks, [("in_files", "in_files")]),
        (split_chunks, partial, [("chunks", "in_files")]),
        (partial, merge, [("out_file", "in_files")]),
        (merge, outputnode, [("out_file", "out_file"),
                             ("n_inputs", "n_inputs"),
                             ("input_files", "input_files")]),
    ])
    # fmt: on
    wanted = {
        name
        for option, names in COHORT_OUTPUTS.items()
        if cohort.get(option) or (option == "min_count" and cohort.get("min_fraction"))
        for name in names
    }
    if wanted:
        workflow.connect([(merge, outputnode, [(n, n) for n in sorted(wanted)])])
    return workflow


#: Which outputs each cohort option of HeatmapVolume/MergeHeatmaps adds.
COHORT_OUTPUTS = {
    "coverage": ("coverage_file",),
    "std": ("std_file", "variance_file"),
    "min_count": ("overlap_file", "mincount_file", "overlap_table"),
}
_COHORT_FILES = {name for names in COHORT_OUTPUTS.values() for name in names}


def split_chunks_node(chunk_size: int) -> pe.Node:
    """The node that cuts ``in_files`` into ``chunks`` of ``chunk_size`` files."""
    node = pe.Node(
        niu.Function(
            function=_split_chunks, input_names=["in_files", "chunk_size"], output_names=["chunks"]
        ),
        name="split_chunks",
    )
    node.inputs.chunk_size = int(chunk_size)
    return node


def _split_chunks(in_files, chunk_size):
    """Cut a list of files into consecutive chunks of ``chunk_size`` (the last may be short)."""
    files = [in_files] if isinstance(in_files, str) else list(in_files)
    if not files:
        raise ValueError("no input file given; nothing to split into chunks")
    return [files[i : i + chunk_size] for i in range(0, len(files), chunk_size)]
