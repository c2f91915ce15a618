"""Tissue probability maps: segment every subject, split per tissue class, average."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from .._docs import fill_doc
from ..interfaces import HeatmapVolume, mem_gb

__all__ = [
    "SEGMENTERS",
    "TISSUES",
    "init_tissue_probability_wf",
]

#: Segmentation steps the workflow can use. "otsu" runs anywhere (scikit-image);
#: "fast" needs FSL and "atropos" needs ANTs on the PATH.
SEGMENTERS = ("otsu", "fast", "atropos")

TISSUES = ("csf", "gm", "wm")


@fill_doc
def init_tissue_probability_wf(
    *,
    segmenter: str = "otsu",
    num_threads: int = 1,
    name: str = "tissue_probability_wf",
) -> pe.Workflow:
    """Build a workflow that makes CSF, GM and WM probability maps from many T1w images.

    Every subject is segmented by a MapNode (iterating over ``t1w_files``) that returns
    its CSF, GM and WM maps as one list; ``split_tissues`` turns the per-subject lists into
    one flat list per tissue; a :class:`~nipype_heatmap.interfaces.HeatmapVolume` per
    tissue averages it.

    Parameters
    ----------
    segmenter : {"otsu", "fast", "atropos"}, default="otsu"
        ``"otsu"``: 3-class multi-Otsu inside the brain mask (hard labels; needs the
        ``demo`` extra). ``"fast"``: FSL FAST partial volume maps of the masked T1w.
        ``"atropos"``: ANTs Atropos posteriors (k-means initialization, 3 classes).
    %(wf_num_threads)s
    name : str, default="tissue_probability_wf"
        Name of the workflow.

    Inputs
    ------
    t1w_files
        List of T1-weighted images, all already in one template space.
    brain_mask
        Brain mask on the template grid.

    Outputs
    -------
    csf_probability
        Voxel-wise mean of the subjects' CSF maps.
    gm_probability
        Voxel-wise mean of the subjects' GM maps.
    wm_probability
        Voxel-wise mean of the subjects' WM maps.
    n_inputs
        Number of subjects aggregated.

    Examples
    --------
    Building runs anywhere; running needs T1-weighted images (the demo makes some):

    >>> wf = init_tissue_probability_wf(segmenter="otsu")
    >>> wf.inputs.inputnode.t1w_files = ["sub-01_T1w.nii.gz", "sub-02_T1w.nii.gz"]
    >>> wf.inputs.inputnode.brain_mask = "tpl-MNI152_desc-brain_mask.nii.gz"
    >>> wf.run(plugin="MultiProc")  # doctest: +SKIP
    """
    if segmenter not in SEGMENTERS:
        raise ValueError(f"segmenter {segmenter!r} is not one of {SEGMENTERS}")

    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["t1w_files", "brain_mask"]), name="inputnode"
    )
    outputnode = pe.Node(
        niu.IdentityInterface(fields=[f"{t}_probability" for t in TISSUES] + ["n_inputs"]),
        name="outputnode",
    )
    split_tissues = pe.Node(
        niu.Function(
            function=_split_tissues,
            input_names=["tissue_lists"],
            output_names=list(TISSUES),
        ),
        name="split_tissues",
    )
    heatmaps = {
        tissue: pe.Node(
            HeatmapVolume(
                use_mean=True,
                output_filename=f"label-{tissue.upper()}_probseg.nii.gz",
                num_threads=num_threads,
            ),
            name=f"{tissue}_heatmap",
            mem_gb=mem_gb(num_threads),
        )
        for tissue in TISSUES
    }

    if segmenter == "otsu":
        segment = pe.MapNode(
            niu.Function(
                function=_otsu_segment,
                input_names=["in_file", "brain_mask"],
                output_names=["tissue_files"],
            ),
            iterfield=["in_file"],
            name="segment_otsu",
        )
        # fmt: off
        workflow.connect([
            (inputnode, segment, [("t1w_files", "in_file"), ("brain_mask", "brain_mask")]),
            (segment, split_tissues, [("tissue_files", "tissue_lists")]),
        ])
        # fmt: on
    elif segmenter == "fast":
        from nipype.interfaces import fsl

        skull_strip = pe.MapNode(
            niu.Function(
                function=_apply_mask, input_names=["in_file", "mask_file"], output_names=["out"]
            ),
            iterfield=["in_file"],
            name="skull_strip",
        )
        segment = pe.MapNode(
            fsl.FAST(number_classes=3, img_type=1, output_type="NIFTI_GZ"),
            iterfield=["in_files"],
            name="segment_fast",
        )
        # fmt: off
        workflow.connect([
            (inputnode, skull_strip, [("t1w_files", "in_file"), ("brain_mask", "mask_file")]),
            (skull_strip, segment, [("out", "in_files")]),
            (segment, split_tissues, [("partial_volume_files", "tissue_lists")]),
        ])
        # fmt: on
    else:
        from nipype.interfaces import ants

        segment = pe.MapNode(
            ants.Atropos(
                dimension=3,
                initialization="KMeans",
                number_of_tissue_classes=3,
                n_iterations=5,
                convergence_threshold=0.0,
                mrf_smoothing_factor=0.1,
                mrf_radius=[1, 1, 1],
                likelihood_model="Gaussian",
                save_posteriors=True,
            ),
            iterfield=["intensity_images"],
            name="segment_atropos",
        )
        # fmt: off
        workflow.connect([
            (inputnode, segment, [("t1w_files", "intensity_images"),
                                  ("brain_mask", "mask_image")]),
            (segment, split_tissues, [("posteriors", "tissue_lists")]),
        ])
        # fmt: on

    for tissue, node in heatmaps.items():
        # fmt: off
        workflow.connect([
            (split_tissues, node, [(tissue, "in_files")]),
            (node, outputnode, [("out_file", f"{tissue}_probability")]),
        ])
        # fmt: on
    workflow.connect(heatmaps["gm"], "n_inputs", outputnode, "n_inputs")
    return workflow


def _otsu_segment(in_file, brain_mask):
    """Segment one T1w image into CSF, GM and WM masks (runs in the node's folder)."""
    from nipype_heatmap.workflows.segment import otsu_tissue_masks

    return otsu_tissue_masks(in_file, brain_mask)


def _apply_mask(in_file, mask_file):
    """Zero the voxels outside a brain mask (FAST expects a brain-extracted image)."""
    import os
    from typing import cast

    import nibabel as nb
    import numpy as np
    from nibabel.spatialimages import SpatialImage

    img = cast(SpatialImage, nb.load(in_file))
    mask = np.asanyarray(cast(SpatialImage, nb.load(mask_file)).dataobj) > 0
    data = img.get_fdata(dtype=np.float32) * mask
    base = os.path.basename(in_file)
    stem = base[: -len(".nii.gz")] if base.endswith(".nii.gz") else os.path.splitext(base)[0]
    out = os.path.abspath(f"{stem}_desc-brain.nii.gz")
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    nb.Nifti1Image(data, img.affine, header).to_filename(out)
    return out


def _split_tissues(tissue_lists):
    """Turn per-subject [CSF, GM, WM] lists into one flat list per tissue."""
    bad = [item for item in tissue_lists if not isinstance(item, list | tuple) or len(item) != 3]
    if bad:
        raise ValueError(f"expected one [CSF, GM, WM] list per subject, got {bad[0]!r}")
    return tuple([subject[index] for subject in tissue_lists] for index in range(3))
