"""Lesion overlap: binary lesion masks -> overlap count and lesion probability maps."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from .._docs import fill_doc
from ..interfaces import HeatmapVolume, mem_gb

__all__ = [
    "init_lesion_overlap_wf",
]


@fill_doc
def init_lesion_overlap_wf(
    *, num_threads: int = 1, name: str = "lesion_overlap_wf"
) -> pe.Workflow:
    """Build a workflow that maps where binary lesion masks overlap.

    Two :class:`~nipype_heatmap.interfaces.HeatmapVolume` nodes read the same list: one sums
    the masks without clipping (how many patients have a lesion at each voxel) and one
    averages them (the lesion probability).

    Parameters
    ----------
    %(wf_num_threads)s
    name : str, default="lesion_overlap_wf"
        Name of the workflow.

    Inputs
    ------
    lesion_masks
        List of binary lesion masks, all on one template grid.

    Outputs
    -------
    count_map
        Voxel-wise number of masks with a lesion (float32 NIfTI).
    probability_map
        Voxel-wise fraction of masks with a lesion, 0 to 1.
    n_inputs
        Number of masks aggregated.

    Examples
    --------
    >>> wf = init_lesion_overlap_wf()
    >>> wf.inputs.inputnode.lesion_masks = mask_files
    >>> wf.base_dir = "work"
    >>> graph = wf.run()
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["lesion_masks"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["count_map", "probability_map", "n_inputs"]),
        name="outputnode",
    )
    overlap_count = pe.Node(
        HeatmapVolume(
            use_mean=False,
            clip_to_input_range=False,
            output_filename="lesion_count.nii.gz",
            num_threads=num_threads,
        ),
        name="overlap_count",
        mem_gb=mem_gb(num_threads),
    )
    lesion_probability = pe.Node(
        HeatmapVolume(
            use_mean=True, output_filename="lesion_probability.nii.gz", num_threads=num_threads
        ),
        name="lesion_probability",
        mem_gb=mem_gb(num_threads),
    )
    # fmt: off
    workflow.connect([
        (inputnode, overlap_count, [("lesion_masks", "in_files")]),
        (inputnode, lesion_probability, [("lesion_masks", "in_files")]),
        (overlap_count, outputnode, [("out_file", "count_map"), ("n_inputs", "n_inputs")]),
        (lesion_probability, outputnode, [("out_file", "probability_map")]),
    ])
    # fmt: on
    return workflow
