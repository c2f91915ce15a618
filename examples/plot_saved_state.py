"""
A cohort that grows and shrinks: saving a state and updating it
===============================================================

Biobanks release subjects in batches and must honour withdrawals. Re-reading every file
for each release is not needed: save the **state** of a run once (the voxel-wise sums and
counts, the cohort statistics, and for each input its path, content hash, value range and
header), then add and remove files reading only those files
(:func:`nipype_heatmap.api.update_state`, a transaction: the state is locked, and the
updated state and its maps are written together). The maps of the updated state equal a
recompute from the final list of inputs, bit for bit for integer inputs such as masks.
"""

# %%
# Two releases of lesion masks
# ----------------------------
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
from nilearn import datasets, plotting

tmp = tempfile.TemporaryDirectory(prefix="nipype_heatmap_state_")  # removed at the end
workdir = Path(tmp.name)
template = datasets.load_mni152_template(resolution=2).slicer[::2, ::2, ::2]  # 4 mm
wm = datasets.load_mni152_wm_template(resolution=2).slicer[::2, ::2, ::2].get_fdata() > 0.5

rng = np.random.default_rng(3)
grid = np.indices(wm.shape)
spots = np.argwhere(wm)[rng.choice(int(wm.sum()), size=3, replace=False)]


def write_masks(folder, subjects):
    """One lesion mask per subject: a few balls near shared spots, inside white matter."""
    folder.mkdir(parents=True)
    for subject in subjects:
        lesion = np.zeros(wm.shape, dtype=bool)
        for _ in range(rng.integers(1, 4)):
            center = spots[rng.integers(3)] + rng.normal(0, 1.2, 3)
            r2 = rng.uniform(1, 2.5) ** 2
            lesion |= ((grid - center[:, None, None, None]) ** 2).sum(axis=0) <= r2
        img = nb.Nifti1Image((lesion & wm).astype(np.uint8), template.affine)
        img.to_filename(folder / f"sub-{subject:03d}_label-lesion_mask.nii.gz")
    return sorted(str(p) for p in folder.glob("*.nii.gz"))


release1 = write_masks(workdir / "release1", range(1, 41))
release2 = write_masks(workdir / "release2", range(41, 51))

# %%
# Release 1: the maps, and the state
# ----------------------------------
# ``state_file=`` saves the run's state beside the maps (the command line's
# ``--save-state``). Here the maps are the lesion probability and the coverage.
from nipype_heatmap import CohortOptions, MapOptions, load_state, write_cohort_maps

maps = workdir / "maps"
state_file = workdir / "cohort_state.nii.gz"
cohort = CohortOptions(coverage=True, min_count=5)
written = write_cohort_maps(
    release1, maps / "lesion_prob.nii.gz", cohort=cohort, state_file=state_file
)
before = nb.load(written["heatmap"]).get_fdata()
print(sorted(written), "| state:", state_file.stat().st_size // 1024, "KiB")
print("inputs in the state:", load_state(state_file).n_inputs)

# %%
# Release 2: add ten subjects, honour two withdrawals
# ---------------------------------------------------
# Only the 10 new files and the 2 withdrawn ones are read. A file to remove must be an
# input of the state and unchanged since it was added (its SHA-256 is checked), or the
# update is refused, naming the file, and nothing is written. The updated state and the
# maps are written together (``nipype-heatmap --update STATE INPUT... --remove FILE...``
# on the command line). It returns the updated state (an accumulator) and what it wrote,
# by role.
from nipype_heatmap.api import update_state

withdrawn = [release1[16], release1[33]]
acc, written = update_state(
    state_file,
    add=release2,
    remove=withdrawn,
    out_file=maps / "lesion_prob.nii.gz",
    options=MapOptions(),
    cohort=cohort,
)
print("inputs now:", acc.n_inputs, "| written:", sorted(written))
print("the state:", Path(written["state"]).name, "| the map:", Path(written["heatmap"]).name)

# %%
# The update equals a recompute
# -----------------------------
# A recompute from the final list (the state's inputs without the withdrawn ones, in
# order, then the added ones) gives the same map, bit for bit: masks are integers, and
# their sums are kept exactly.
from nipype_heatmap import compute_heatmap

final_list = [f for f in release1 if f not in withdrawn] + release2
recomputed = compute_heatmap(final_list).get_fdata()
after = nb.load(written["heatmap"]).get_fdata()
print("update == recompute, bit for bit:", np.array_equal(after, recomputed))

# %%
# Removing a file that changed since it was added is refused, naming the file; the state
# is left as it was.
changed = release1[0]
nb.Nifti1Image(np.ones(wm.shape, np.uint8), template.affine).to_filename(changed)
state_before = state_file.read_bytes()
try:
    update_state(state_file, remove=[changed])
except ValueError as err:
    print("refused:", str(err)[:160], "...")
print("state unchanged:", state_file.read_bytes() == state_before)

# %%
# Release 1 against the updated cohort
# ------------------------------------
import matplotlib.pyplot as plt

cut = plotting.find_xyz_cut_coords(nb.load(written["heatmap"]))
fig, axes = plt.subplots(2, 1, figsize=(9, 6))
for ax, data, title in (
    (axes[0], before, "release 1: 40 patients"),
    (axes[1], after, "after the update: 48 patients (10 added, 2 withdrawn)"),
):
    plotting.plot_stat_map(
        nb.Nifti1Image(data.astype(np.float32), template.affine),
        bg_img=template,
        cut_coords=cut,
        cmap="viridis",
        vmin=0,
        vmax=max(before.max(), after.max()),
        threshold=0.01,
        title=title,
        axes=ax,
    )
plt.show()
