"""A segmentation that runs anywhere: three-class multi-Otsu inside a brain mask.

Used by the sample workflow ``workflows.tissue_probability`` when no FSL or ANTs is
installed. Needs scikit-image (``pip install 'nipype_heatmap[demo]'``), imported lazily.
"""

from __future__ import annotations

import os

import nibabel as nb
import numpy as np

from ..io import load_image

__all__ = [
    "TISSUES",
    "otsu_tissue_masks",
]

#: Tissue classes in the order every segmenter of the sample workflows returns them.
TISSUES = ("CSF", "GM", "WM")


def otsu_tissue_masks(
    in_file: str | os.PathLike[str],
    brain_mask: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    smooth_fwhm_mm: float = 2.0,
) -> list[str]:
    """Split a T1-weighted image into CSF, GM and WM masks with a 3-class multi-Otsu.

    Intensities inside the brain mask are lightly smoothed, the two multi-Otsu thresholds
    are found on them, and each voxel gets the class of its intensity band (T1w contrast:
    CSF darkest, WM brightest).

    Parameters
    ----------
    in_file : str or os.PathLike
        A T1-weighted image.
    brain_mask : str or os.PathLike
        A brain mask on the same grid (non-zero inside the brain).
    out_dir : str or os.PathLike, optional
        Where to write the masks; default is the current folder (a Nipype node's).
    smooth_fwhm_mm : float, default=2.0
        Gaussian smoothing applied before thresholding, to tame noise.

    Returns
    -------
    list of str
        Paths of the uint8 CSF, GM and WM masks, in that order.

    Raises
    ------
    ValueError
        If the mask and the image are not on the same grid, or the mask is empty.
    ImportError
        If scikit-image or SciPy is not installed.
    """
    from .._optional import require

    gaussian_filter = require("scipy.ndimage", "the Otsu segmenter").gaussian_filter
    threshold_multiotsu = require("skimage.filters", "the Otsu segmenter").threshold_multiotsu

    img = load_image(in_file)
    mask_img = load_image(brain_mask)
    if img.shape[:3] != mask_img.shape[:3] or not np.allclose(img.affine, mask_img.affine):
        raise ValueError(
            f"{brain_mask}: brain mask grid {mask_img.shape} differs from {in_file} "
            f"{img.shape}; resample the mask to the image first"
        )
    inside = np.asanyarray(mask_img.dataobj).reshape(img.shape[:3]) > 0
    if not inside.any():
        raise ValueError(f"{brain_mask}: brain mask is empty")
    data = img.get_fdata(dtype=np.float32).reshape(img.shape[:3])
    sigma_vox = smooth_fwhm_mm / 2.3548 / np.asarray(img.header.get_zooms()[:3])
    data = gaussian_filter(data, sigma_vox)
    low, high = threshold_multiotsu(data[inside], classes=3)
    labels = np.digitize(data, [low, high])  # 0 CSF, 1 GM, 2 WM

    out_dir = os.fspath(out_dir) if out_dir is not None else os.getcwd()
    base = os.path.basename(os.fspath(in_file))
    stem = base[: -len(".nii.gz")] if base.endswith(".nii.gz") else os.path.splitext(base)[0]
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    out_files = []
    for index, tissue in enumerate(TISSUES):
        out_file = os.path.join(out_dir, f"{stem}_label-{tissue}_mask.nii.gz")
        mask = ((labels == index) & inside).astype(np.uint8)
        nb.Nifti1Image(mask, img.affine, header).to_filename(out_file)
        out_files.append(out_file)
    return out_files
