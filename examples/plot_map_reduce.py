"""
Map-reduce: a heatmap from chunks, as on a cluster
==================================================

A heatmap is a sum, so it splits exactly: each chunk of the inputs is accumulated into a
**state** file by its own job (:class:`~nipype_heatmap.interfaces.HeatmapState`), and one
:class:`~nipype_heatmap.interfaces.MergeHeatmaps` node merges the states and writes the
map. :func:`~nipype_heatmap.workflows.init_scaled_heatmap_wf` wires this with the same
inputs and outputs as a single :class:`~nipype_heatmap.interfaces.HeatmapVolume` node, and
gives the same map for any chunk size (bit for bit for masks).

On one machine this does not pay (Nipype's per-job overhead); on a cluster the chunks run
on many nodes at once (``plugin="SLURM"``, ``"SGE"``, ``"PBS"``: see the user guide). Here
it runs with ``MultiProc`` on two processes.
"""

# %%
# Forty lesion masks
# ------------------
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
from nilearn import datasets, plotting

tmp = tempfile.TemporaryDirectory(prefix="nipype_heatmap_mapreduce_")  # removed at the end
workdir = Path(tmp.name)
template = datasets.load_mni152_template(resolution=2).slicer[::2, ::2, ::2]  # 4 mm
wm = datasets.load_mni152_wm_template(resolution=2).slicer[::2, ::2, ::2].get_fdata() > 0.5
rng = np.random.default_rng(6)
grid = np.indices(wm.shape)
spots = np.argwhere(wm)[rng.choice(int(wm.sum()), size=4, replace=False)]
mask_files = []
for subject in range(1, 41):
    lesion = np.zeros(wm.shape, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        center = spots[rng.integers(4)] + rng.normal(0, 1.5, 3)
        lesion |= ((grid - center[:, None, None, None]) ** 2).sum(axis=0) <= rng.uniform(1, 3) ** 2
    path = workdir / "masks" / f"sub-{subject:03d}_label-lesion_mask.nii.gz"
    path.parent.mkdir(exist_ok=True)
    nb.Nifti1Image((lesion & wm).astype(np.uint8), template.affine).to_filename(path)
    mask_files.append(str(path))

# %%
# The workflow: chunks of 10 files, four jobs, one merge
# ------------------------------------------------------
# The overlap count and its coverage map, from states of 10 masks each.
from nipype import config, logging

from nipype_heatmap.workflows import init_scaled_heatmap_wf

config.set("logging", "workflow_level", "WARNING")  # Nipype's per-node log lines: off here
config.set("logging", "interface_level", "WARNING")
logging.update_logging(config)

wf = init_scaled_heatmap_wf(
    chunk_size=10,
    use_mean=False,
    clip_to_input_range=False,
    output_filename="lesion_count.nii.gz",
    cohort={"coverage": True},
)
wf.base_dir = str(workdir / "work")
wf.config["execution"]["crashdump_dir"] = str(workdir / "crash")
wf.config["execution"]["poll_sleep_duration"] = 0.2  # MultiProc looks for finished jobs
wf.inputs.inputnode.in_files = mask_files
graph = wf.run(plugin="MultiProc", plugin_args={"n_procs": 2})
# On a cluster, the same workflow (not run here):
#   wf.run(plugin="SLURM", plugin_args={"sbatch_args": "-p short --mem=1G -t 30"})

merged = next(n for n in graph.nodes() if n.name == "merge_heatmaps").result.outputs
print("count map:", Path(merged.out_file).name, "from", merged.n_inputs, "masks")

# %%
# The same map as one pass
# ------------------------
# Masks are integers: their sums are exact in any order of chunks, so the merged map is
# the single pass's, bit for bit.
from nipype_heatmap import compute_heatmap

single = compute_heatmap(mask_files, use_mean=False, clip_to_input_range=False)
same = np.array_equal(nb.load(merged.out_file).get_fdata(), single.get_fdata())
print("map-reduce == one pass, bit for bit:", same)

# %%
# Show the graph and the map
# --------------------------
# The graph is Nipype's own (``write_graph``), as on the workflows page.
import matplotlib.pyplot as plt

graph_png = wf.write_graph(
    dotfilename=str(workdir / "graph.dot"), graph2use="colored", format="png"
)
fig, axes = plt.subplots(
    1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1, 3]}, layout="constrained"
)
axes[0].imshow(plt.imread(graph_png))
axes[0].set_axis_off()
axes[0].set_title("init_scaled_heatmap_wf", fontsize=10)
plotting.plot_stat_map(
    merged.out_file,
    bg_img=template,
    cmap="hot",
    threshold=0.5,
    vmin=0,
    title=f"lesion overlap count, {merged.n_inputs} masks in 4 chunks",
    axes=axes[1],
)
plt.show()
