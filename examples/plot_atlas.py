"""
A probabilistic atlas and its maximum-probability map
=====================================================

A heatmap of masks says where subjects agree on one structure; a **label atlas** says it
for a whole segmentation at once, as Harvard-Oxford and Julich-Brain are made: per-label
probability maps over many subjects' label images, and maximum-probability maps at
thresholds. One pass reads each label image once, whatever the number of labels
(:func:`~nipype_heatmap.atlas.accumulate_labels`), and
:func:`~nipype_heatmap.atlas.write_atlas` writes its files together.

The label images here are 15 synthetic three-class tissue segmentations (1 CSF, 2 GM,
3 WM) made from nilearn's MNI152 tissue templates at 4 mm (no download).
"""

# %%
# Fifteen label images
# --------------------
# Each subject's label is the most probable tissue of the templates after a smooth random
# perturbation, inside the brain (0 outside: the background).
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
from nilearn import datasets, plotting
from scipy import ndimage

tmp = tempfile.TemporaryDirectory(prefix="nipype_heatmap_atlas_")  # removed at the end
workdir = Path(tmp.name)
(workdir / "dseg").mkdir()


def at_4mm(img):
    return img.slicer[::2, ::2, ::2]


template = at_4mm(datasets.load_mni152_template(resolution=2))
gm = at_4mm(datasets.load_mni152_gm_template(resolution=2)).get_fdata()
wm = at_4mm(datasets.load_mni152_wm_template(resolution=2)).get_fdata()
brain = at_4mm(datasets.load_mni152_brain_mask(resolution=2)).get_fdata() > 0
tissues = np.stack([np.clip(1 - gm - wm, 0, 1), gm, wm])  # CSF, GM, WM

rng = np.random.default_rng(4)
label_files = []
for subject in range(1, 16):
    noise = ndimage.gaussian_filter(rng.standard_normal(tissues.shape), (0, 2, 2, 2))
    labels = (np.argmax(tissues + 0.25 * noise / noise.std(), axis=0) + 1) * brain
    path = workdir / "dseg" / f"sub-{subject:02d}_dseg.nii.gz"
    nb.Nifti1Image(labels.astype(np.uint8), template.affine).to_filename(path)
    label_files.append(str(path))

# %%
# Count, then write the atlas
# ---------------------------
# The label table gives names and colours (a BIDS ``dseg.tsv`` or a FreeSurfer LUT on the
# command line: ``nipype-heatmap-atlas dseg/ -o atlas/ --label-table table.tsv``). The
# thresholds are in percent and compared exactly (integer counts against t N / 100).
from nipype_heatmap.atlas import LabelInfo, accumulate_labels, load_atlas, write_atlas

table = {
    1: LabelInfo("CSF", "#3c78d8"),
    2: LabelInfo("GM", "#d9534f"),
    3: LabelInfo("WM", "#f2f2f2"),
}
counts = accumulate_labels(label_files)
written = write_atlas(
    counts,
    workdir / "atlas",
    atlas_name="Tissue",
    label_table=table,
    thresholds=(0, 25, 50),
    sparse=True,
)
for role, path in written.items():
    print(f"{role:8s} {Path(path).name}")
print(Path(written["table"]).read_text())

# %%
# The sparse atlas answers "what is here?"
# ----------------------------------------
# It keeps, per voxel, only the labels some input has there, with their exact counts; it
# round-trips to the dense 4D maps bit for bit.
atlas = load_atlas(written["sparse"])
for xyz in ((-26.0, -10.0, 10.0), (0.0, -50.0, 30.0)):
    print(xyz, "mm ->", [(table[label].name, round(p, 2)) for label, p in atlas.query(xyz)])

# %%
# Show the maximum-probability map and the GM probability
# -------------------------------------------------------
import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
from nilearn.image import index_img

colors = ListedColormap([table[label].color for label in (1, 2, 3)])
fig, axes = plt.subplots(2, 1, figsize=(9, 6))
plotting.plot_roi(
    written["th25"],
    bg_img=template,
    cmap=colors,
    vmin=1,
    vmax=3,
    alpha=0.8,
    cut_coords=(0, -18, 10),
    colorbar=False,
    title="maximum-probability map at 25 %: CSF blue, GM red, WM white",
    axes=axes[0],
)
plotting.plot_stat_map(
    index_img(written["probseg"], 1),  # volume i is the i-th row of the table: GM
    bg_img=template,
    cmap="viridis",
    vmin=0,
    vmax=1,
    threshold=0.05,
    cut_coords=(0, -18, 10),
    title="GM probability (15 subjects)",
    axes=axes[1],
)
plt.show()
