"""
Lesion overlap: count and probability
=====================================

The most common group map of lesion studies: given one binary lesion mask per patient,
all registered to one template, how many patients have a lesion at each voxel (the
**overlap count**), and what fraction of them do (the **lesion probability**)?

This example makes 20 synthetic lesion masks on the MNI152 template that nilearn ships
(no download), downsampled to 4 mm so that it runs in a second, then maps them with
:func:`~nipype_heatmap.generate_heatmap_volume` (a folder in, a map out) and
:func:`~nipype_heatmap.write_heatmap` (an explicit list of files).
"""

# %%
# A small cohort of lesion masks
# ------------------------------
# Lesions are balls of random size inside the white matter, drawn near three shared
# "hotspots" so that they overlap, one mask per patient, saved as uint8 NIfTI files.
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
from nilearn import datasets, plotting

tmp = tempfile.TemporaryDirectory(prefix="nipype_heatmap_lesions_")  # removed at the end
workdir = Path(tmp.name)
masks_dir = workdir / "lesion_masks"
masks_dir.mkdir()

template = datasets.load_mni152_template(resolution=2).slicer[::2, ::2, ::2]  # 4 mm
white_matter = datasets.load_mni152_wm_template(resolution=2).slicer[::2, ::2, ::2]
wm = white_matter.get_fdata() > 0.5

rng = np.random.default_rng(0)
grid = np.indices(wm.shape)
hotspots = np.argwhere(wm)[rng.choice(int(wm.sum()), size=3, replace=False)]
for subject in range(1, 21):
    lesion = np.zeros(wm.shape, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        center = hotspots[rng.integers(3)] + rng.normal(0, 1.0, 3)
        radius = rng.uniform(1.0, 2.5)
        lesion |= ((grid - center[:, None, None, None]) ** 2).sum(axis=0) <= radius**2
    mask = nb.Nifti1Image((lesion & wm).astype(np.uint8), template.affine)
    mask.to_filename(masks_dir / f"sub-{subject:02d}_label-lesion_mask.nii.gz")

mask_files = sorted(str(p) for p in masks_dir.glob("*.nii.gz"))
print(f"{len(mask_files)} masks on a {wm.shape} grid of 4 mm voxels")

# %%
# The overlap count: a sum, not clipped
# -------------------------------------
# ``use_mean=False`` sums the masks; ``clip_to_input_range=False`` keeps the sum (clipped
# to the masks' 0..1 range it would be the union mask). Every ``*.nii``/``*.nii.gz`` file
# directly in the folder is an input, sorted by name; the first sets the grid and header.
from nipype_heatmap import generate_heatmap_volume, write_heatmap

count_file = generate_heatmap_volume(
    masks_dir,
    workdir / "group",
    "lesion_count.nii.gz",
    use_mean=False,
    clip_to_input_range=False,
)
count = nb.load(count_file)
print(count.header["descrip"].item().decode())  # what the map is, in its header
print("max overlap:", int(count.get_fdata().max()), "patients")

# %%
# The same data as a list of files gives the lesion probability (the default: the mean).
prob_file = write_heatmap(mask_files, workdir / "group" / "lesion_probability.nii.gz")
probability = nb.load(prob_file)

# The map is the mean of the masks, voxel by voxel, as NumPy computes it:
stack = np.stack([nb.load(f).get_fdata() for f in mask_files])
assert np.allclose(probability.get_fdata(), stack.mean(axis=0))

# %%
# Show both maps
# --------------
# The count over the template, then the probability on the same cuts.
import matplotlib.pyplot as plt

fig, axes = plt.subplots(2, 1, figsize=(9, 6))
cut = plotting.find_xyz_cut_coords(count)
plotting.plot_stat_map(
    count,
    bg_img=template,
    cut_coords=cut,
    cmap="hot",
    threshold=0.5,
    vmin=0,
    title="lesion overlap count (patients)",
    axes=axes[0],
)
plotting.plot_stat_map(
    probability,
    bg_img=template,
    cut_coords=cut,
    cmap="viridis",
    threshold=0.01,
    vmin=0,
    vmax=probability.get_fdata().max(),
    title="lesion probability",
    axes=axes[1],
)
plt.show()
