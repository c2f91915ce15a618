"""Map-reduce label atlases: chunks of label images as separate (cluster) jobs, merged
exactly."""

from __future__ import annotations

from collections.abc import Sequence

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces import LabelAtlas, PartialLabelAtlas
from .scaled_heatmap import split_chunks_node

__all__ = [
    "ATLAS_MEM_GB",
    "init_scaled_atlas_wf",
]

#: Peak memory (GB) of one atlas job on the 1 mm MNI grid with ~100 compact labels (the
#: README's benchmark: under 0.7 GB for the whole command, dense 4D included).
ATLAS_MEM_GB = 1.0


def init_scaled_atlas_wf(
    *,
    chunk_size: int,
    atlas_name: str = "heatmap",
    thresholds: Sequence[float] = (0, 25, 50),
    background: int = 0,
    dense: bool = True,
    sparse: bool = False,
    num_threads: int = 1,
    name: str = "scaled_atlas_wf",
) -> pe.Workflow:
    """Build a workflow that counts chunks of label images apart, then merges them.

    ``split_chunks`` cuts the list into chunks of ``chunk_size`` files, a MapNode of
    :class:`~nipype_heatmap.interfaces.PartialLabelAtlas` counts each chunk into a sparse
    partial atlas (one job per chunk under a cluster plugin), and
    :class:`~nipype_heatmap.interfaces.LabelAtlas` merges them (integer counts: exactly)
    and writes the atlas, the same as one node over every file, for any chunk size.

    Parameters
    ----------
    chunk_size : int
        Label images per chunk (per job).
    atlas_name, thresholds, background, dense, sparse
        As for :class:`~nipype_heatmap.interfaces.LabelAtlas`.
    num_threads : int, default=1
        Threads of each job (reserved by Nipype's resource-aware plugins).
    name : str, default="scaled_atlas_wf"
        Name of the workflow.

    Inputs
    ------
    in_files
        Label images on one grid, in order.

    Outputs
    -------
    probseg_file
        The 4D per-label probability maps (with ``dense``).
    dseg_files
        The maximum-probability maps, one per threshold.
    label_table
        The label table (BIDS ``dseg.tsv``).
    sparse_file
        The sparse atlas (with ``sparse``).
    n_inputs
        How many label images went in.
    labels
        Every label, ascending.
    """
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive number of files, not {chunk_size!r}")
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["in_files"]), name="inputnode")
    fields = ["probseg_file", "dseg_files", "label_table", "sparse_file", "n_inputs", "labels"]
    outputnode = pe.Node(niu.IdentityInterface(fields=fields), name="outputnode")
    split_chunks = split_chunks_node(chunk_size)
    partial = pe.MapNode(
        PartialLabelAtlas(background=background, num_threads=num_threads),
        iterfield=["in_files"],
        name="partial_atlas",
        mem_gb=ATLAS_MEM_GB,
        n_procs=num_threads,
    )
    merge = pe.Node(
        LabelAtlas(
            atlas_name=atlas_name,
            thresholds=[float(t) for t in thresholds],
            dense=dense,
            sparse=sparse,
        ),
        name="label_atlas",
        mem_gb=ATLAS_MEM_GB,
    )
    merged = [
        f for f in fields if (f != "probseg_file" or dense) and (f != "sparse_file" or sparse)
    ]
    # fmt: off
    workflow.connect([
        (inputnode, split_chunks, [("in_files", "in_files")]),
        (split_chunks, partial, [("chunks", "in_files")]),
        (partial, merge, [("out_file", "partial_atlases")]),
        (merge, outputnode, [(f, f) for f in merged]),
    ])
    # fmt: on
    return workflow
