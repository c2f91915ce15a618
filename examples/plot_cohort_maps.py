"""
Cohort maps and a group subtraction
===================================

A lesion probability map is rarely the last step. From the **same single pass** over the
masks, :func:`~nipype_heatmap.write_cohort_maps` also writes, beside the map, what a
lesion-symptom analysis needs: the **coverage** (how many inputs have a value at each
voxel), the **spread** (standard deviation and variance across inputs), the per-voxel
count of non-zero inputs with the **minimum-overlap mask** (voxels lesioned in at least K
patients, where such analyses are restricted) and its table.

Then a **subtraction analysis** compares two groups: the percentage of patients with a
deficit who have a lesion at each voxel, minus the percentage of those without
(:func:`nipype_heatmap.api.write_subtraction`).
"""

# %%
# Two groups of lesion masks
# --------------------------
# 30 patients on the MNI152 template at 4 mm (no download). Patients with the deficit
# tend to have their lesions near one "critical" spot; the others anywhere near three.
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
from nilearn import datasets, plotting

tmp = tempfile.TemporaryDirectory(prefix="nipype_heatmap_cohort_")  # removed at the end
workdir = Path(tmp.name)
template = datasets.load_mni152_template(resolution=2).slicer[::2, ::2, ::2]
wm = datasets.load_mni152_wm_template(resolution=2).slicer[::2, ::2, ::2].get_fdata() > 0.5

rng = np.random.default_rng(2)
grid = np.indices(wm.shape)
spots = np.argwhere(wm)[rng.choice(int(wm.sum()), size=3, replace=False)]
deficit, no_deficit = [], []
for subject in range(1, 31):
    has_deficit = subject % 2 == 0
    lesion = np.zeros(wm.shape, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        spot = spots[0] if has_deficit and rng.random() < 0.8 else spots[rng.integers(3)]
        center = spot + rng.normal(0, 1.2, 3)
        lesion |= ((grid - center[:, None, None, None]) ** 2).sum(axis=0) <= rng.uniform(1, 3) ** 2
    path = workdir / "masks" / f"sub-{subject:02d}_label-lesion_mask.nii.gz"
    path.parent.mkdir(exist_ok=True)
    nb.Nifti1Image((lesion & wm).astype(np.uint8), template.affine).to_filename(path)
    (deficit if has_deficit else no_deficit).append(str(path))
all_masks = sorted(deficit + no_deficit)

# %%
# Cohort maps from one pass
# -------------------------
# :class:`~nipype_heatmap.MapOptions` says what the map is (here the default: the mean,
# clipped to the inputs' range), :class:`~nipype_heatmap.CohortOptions` which maps go
# beside it. The result is a dict: role -> path of every file written (they are written
# together, once all are complete).
from nipype_heatmap import CohortOptions, MapOptions, write_cohort_maps

written = write_cohort_maps(
    all_masks,
    workdir / "group" / "lesion_prob.nii.gz",
    options=MapOptions(),
    cohort=CohortOptions(coverage=True, std=True, min_count=4),
)
for role, path in written.items():
    print(f"{role:9s} {Path(path).name}")

# %%
# The overlap table says, for each K, how many voxels are lesioned in at least K of the
# N patients (what NiiStat prints before a lesion-symptom analysis):
table = Path(written["table"]).read_text().splitlines()
print("\n".join(table[:8]), "\n...")

# %%
# The subtraction of two groups
# -----------------------------
# Percent of group A (deficit) minus percent of group B (no deficit) at each voxel, with
# both groups' percent maps beside it (``_percentA``, ``_percentB``).
from nipype_heatmap.api import write_subtraction

subtraction = write_subtraction(deficit, no_deficit, workdir / "group" / "subtraction.nii.gz")
print({role: Path(path).name for role, path in subtraction.items()})

# %%
# Show the maps
# -------------
# The standard deviation across patients, the minimum-overlap mask (K = 4) over the
# probability map, and the subtraction (red: lesioned more often with the deficit).
import matplotlib.pyplot as plt

cut = plotting.find_xyz_cut_coords(nb.load(written["heatmap"]))
fig, axes = plt.subplots(3, 1, figsize=(9, 9))
plotting.plot_stat_map(
    written["std"],
    bg_img=template,
    cut_coords=cut,
    cmap="magma",
    threshold=0.01,
    title="standard deviation across patients",
    axes=axes[0],
)
display = plotting.plot_stat_map(
    written["heatmap"],
    bg_img=template,
    cut_coords=cut,
    cmap="viridis",
    threshold=0.01,
    title="lesion probability, contour: lesioned in >= 4 patients",
    axes=axes[1],
)
display.add_contours(written["mincount"], levels=[0.5], colors="white")
plotting.plot_stat_map(
    subtraction["subtraction"],
    bg_img=template,
    cut_coords=cut,
    cmap="cold_hot",
    threshold=1,
    title="subtraction: % with deficit - % without",
    axes=axes[2],
)
plt.show()
