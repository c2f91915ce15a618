"""
BIDS derivatives with the visual report
=======================================

In an fMRIPrep-style pipeline the inputs are BIDS derivatives and so is the group map:
:func:`~nipype_heatmap.workflows.init_bids_heatmap_wf` selects the inputs by their
entities (strictly: one value per entity, one file per subject), makes the map, and
stores it in a derivatives dataset with a JSON sidecar (sources as BIDS URIs, the
parameters, the subjects), ``dataset_description.json`` and, when asked, the visual
report: one self-contained HTML page and its figure.

The same from the command line::

    nipype-heatmap-bids derivatives/lesions derivatives/nipype_heatmap group \\
        --label lesion --space MNI152NLin2009cAsym --report
"""

# %%
# A small BIDS derivatives dataset of lesion masks
# ------------------------------------------------
# Twelve subjects' lesion masks on the MNI152 template at 4 mm (from nilearn, no
# download), named as BIDS derivatives.
import json
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
from nilearn import datasets

tmp = tempfile.TemporaryDirectory(prefix="nipype_heatmap_bids_")  # removed at the end
workdir = Path(tmp.name)
bids_dir = workdir / "derivatives" / "lesions"
bids_dir.mkdir(parents=True)
(bids_dir / "dataset_description.json").write_text(
    json.dumps({"Name": "lesion masks", "BIDSVersion": "1.10.0", "DatasetType": "derivative"})
)

template = datasets.load_mni152_template(resolution=2).slicer[::2, ::2, ::2]
wm = datasets.load_mni152_wm_template(resolution=2).slicer[::2, ::2, ::2].get_fdata() > 0.5
rng = np.random.default_rng(5)
grid = np.indices(wm.shape)
spots = np.argwhere(wm)[rng.choice(int(wm.sum()), size=2, replace=False)]
for subject in range(1, 13):
    lesion = np.zeros(wm.shape, dtype=bool)
    for _ in range(rng.integers(1, 3)):
        center = spots[rng.integers(2)] + rng.normal(0, 1.2, 3)
        lesion |= ((grid - center[:, None, None, None]) ** 2).sum(axis=0) <= rng.uniform(1, 3) ** 2
    anat = bids_dir / f"sub-{subject:02d}" / "anat"
    anat.mkdir(parents=True)
    name = f"sub-{subject:02d}_space-MNI152NLin2009cAsym_label-lesion_mask.nii.gz"
    nb.Nifti1Image((lesion & wm).astype(np.uint8), template.affine).to_filename(anat / name)

# %%
# Select, map, store
# ------------------
# The workflow's nodes: ``select_inputs`` (pybids), ``heatmap``
# (:class:`~nipype_heatmap.interfaces.HeatmapVolume`) and ``ds_heatmap``
# (:class:`~nipype_heatmap.interfaces.HeatmapDerivativesSink`).
from nipype import config, logging

from nipype_heatmap.workflows import init_bids_heatmap_wf

config.set("logging", "workflow_level", "WARNING")  # Nipype's per-node log lines: off here
config.set("logging", "interface_level", "WARNING")
logging.update_logging(config)

out_dir = workdir / "derivatives" / "nipype_heatmap"
wf = init_bids_heatmap_wf(
    space="MNI152NLin2009cAsym", label="lesion", generate_report=True, cohort={"coverage": True}
)
wf.base_dir = str(workdir / "work")
wf.config["execution"]["crashdump_dir"] = str(workdir / "crash")
wf.inputs.inputnode.bids_dir = str(bids_dir)
wf.inputs.inputnode.output_dir = str(out_dir)
wf.run(plugin="Linear")

for path in sorted(out_dir.rglob("*")):
    if path.is_file():
        print(path.relative_to(out_dir))

# %%
# The map is named after what it is (``desc-mean`` of the inputs' ``Mask``: a
# ``_probseg``), and its sidecar says where it comes from:
prob = next(out_dir.glob("*_desc-meanMask_probseg.nii.gz"))
sidecar = json.loads(prob.with_name(prob.name.replace(".nii.gz", ".json")).read_text())
print("Sources:", len(sidecar["Sources"]), "BIDS URIs, e.g.", sidecar["Sources"][0])
print(
    json.dumps(
        {k: v for k, v in sidecar.items() if k not in ("Sources", "Subjects", "GeneratedBy")},
        indent=1,
    )
)
print("Subjects:", " ".join(sidecar["Subjects"]))

# %%
# The report's figure
# -------------------
# The HTML page beside the map embeds this figure (whole-brain mosaic, cuts through the
# peaks, histogram), drawn over the MNI152 template since the map is in an MNI space,
# with nilearn's interactive viewer, the parameters and the inputs.
import matplotlib.pyplot as plt

figure = next(out_dir.rglob("*.png"))
plt.figure(figsize=(10, 10 * plt.imread(figure).shape[0] / plt.imread(figure).shape[1]))
plt.imshow(plt.imread(figure))
plt.axis("off")
plt.show()
