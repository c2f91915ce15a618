"""
Tissue probability maps from segmentation nodes
===============================================

A heatmap node is usually the last step of a Nipype workflow: each subject is segmented
by a node, and the group map is made from the list those nodes produce.
:func:`~nipype_heatmap.workflows.init_tissue_probability_wf` is such a workflow: a
MapNode segments every T1-weighted image into CSF, GM and WM masks (here a three-class
multi-Otsu that runs anywhere; FSL FAST or ANTs Atropos with ``segmenter="fast"`` or
``"atropos"``), ``split_tissues`` turns the per-subject lists into one list per tissue,
and a :class:`~nipype_heatmap.interfaces.HeatmapVolume` per tissue averages them.

The subjects are made from nilearn's MNI152 template (no download) at 4 mm: each is the
template with a smooth intensity non-uniformity and noise, so that their segmentations
differ a little, as real ones do.
"""

# %%
# Eight synthetic T1-weighted images
# ----------------------------------
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
from nilearn import datasets, plotting
from scipy import ndimage

tmp = tempfile.TemporaryDirectory(prefix="nipype_heatmap_tissue_")  # removed at the end
workdir = Path(tmp.name)
t1 = datasets.load_mni152_template(resolution=2).slicer[::2, ::2, ::2]  # 4 mm
brain = datasets.load_mni152_brain_mask(resolution=2).slicer[::2, ::2, ::2]
brain_mask = workdir / "tpl-MNI152_desc-brain_mask.nii.gz"
nb.Nifti1Image((brain.get_fdata() > 0).astype(np.uint8), brain.affine).to_filename(brain_mask)

rng = np.random.default_rng(1)
data = t1.get_fdata()
t1w_files = []
for subject in range(1, 9):
    field = ndimage.gaussian_filter(rng.standard_normal(data.shape), 6)
    bias = np.exp(0.15 * field / np.abs(field).max())
    noisy = data * bias + rng.normal(0, 0.03 * data.max(), data.shape)
    path = workdir / f"sub-{subject:02d}_space-MNI152_T1w.nii.gz"
    nb.Nifti1Image(noisy.astype(np.float32), t1.affine).to_filename(path)
    t1w_files.append(str(path))

# %%
# Build and run the workflow
# --------------------------
# The builder returns an ordinary Nipype workflow: set the inputnode's fields and run it
# on any plugin (``Linear`` here; ``MultiProc`` or a cluster plugin for real cohorts).
from nipype import config, logging

from nipype_heatmap.workflows import init_tissue_probability_wf

config.set("logging", "workflow_level", "WARNING")  # Nipype's per-node log lines: off here
config.set("logging", "interface_level", "WARNING")
logging.update_logging(config)

wf = init_tissue_probability_wf(segmenter="otsu")
wf.base_dir = str(workdir / "work")
wf.config["execution"]["crashdump_dir"] = str(workdir / "crash")
wf.inputs.inputnode.t1w_files = t1w_files
wf.inputs.inputnode.brain_mask = str(brain_mask)
graph = wf.run(plugin="Linear")

# The outputnode is pruned from the executed graph: read the heatmap nodes' results.
results = {node.name: node.result.outputs for node in graph.nodes()}
gm_file = results["gm_heatmap"].out_file
print("GM probability map:", gm_file, "from", results["gm_heatmap"].n_inputs, "subjects")

# %%
# Compare with the template's GM probability
# ------------------------------------------
# Multi-Otsu gives hard labels, so the map is the fraction of subjects labelled GM at
# each voxel; it follows the MNI152 GM template closely.
gm_template = datasets.load_mni152_gm_template(resolution=2).slicer[::2, ::2, ::2]
inside = brain.get_fdata() > 0
r = np.corrcoef(nb.load(gm_file).get_fdata()[inside], gm_template.get_fdata()[inside])[0, 1]
print(f"Pearson r with the MNI152 GM template inside the brain: {r:.2f}")

import matplotlib.pyplot as plt

fig, axes = plt.subplots(2, 1, figsize=(9, 6))
plotting.plot_stat_map(
    gm_file,
    bg_img=t1,
    cmap="viridis",
    vmin=0,
    vmax=1,
    threshold=0.05,
    cut_coords=(0, -18, 10),
    title=f"GM probability, {len(t1w_files)} subjects (Otsu)",
    axes=axes[0],
)
plotting.plot_stat_map(
    gm_template,
    bg_img=t1,
    cmap="viridis",
    vmin=0,
    vmax=1,
    threshold=0.05,
    cut_coords=(0, -18, 10),
    title="MNI152 GM template",
    axes=axes[1],
)
plt.show()
