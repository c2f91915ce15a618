"""
BIDS derivatives with the visual report
=======================================

In an fMRIPrep-style pipeline the inputs are BIDS derivatives and so is the group map.
:func:`~nipype_heatmap.bids.select_bids_maps` picks the inputs by their entities, strictly:
**the subject is the unit** (one file per subject, unless you say how to weigh a subject
with several), **template spaces only**, one value per entity, filters never widened.
:func:`~nipype_heatmap.bids.write_group_maps` writes each map into a derivatives dataset,
named after its selection, with a JSON sidecar (sources as BIDS URIs, the subjects and how
they are weighed, the parameters), ``dataset_description.json`` and, when asked, the
visual report: one self-contained HTML page and its figure.

The same from the command line::

    nipype-heatmap-bids derivatives/lesions derivatives/nipype_heatmap group \\
        --label lesion --space MNI152NLin2009cAsym --sum --no-clip \\
        --several-per-subject average --coverage --report
"""

# %%
# A small BIDS derivatives dataset of lesion masks
# ------------------------------------------------
# Twelve patients' lesion masks on the MNI152 template at 4 mm (from nilearn, no
# download), named as BIDS derivatives. Four patients were traced at two sessions.
import json
import tempfile
import textwrap
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


def lesion_mask():
    """A few balls near two shared spots, inside white matter."""
    lesion = np.zeros(wm.shape, dtype=bool)
    for _ in range(rng.integers(1, 3)):
        center = spots[rng.integers(2)] + rng.normal(0, 1.2, 3)
        lesion |= ((grid - center[:, None, None, None]) ** 2).sum(axis=0) <= rng.uniform(1, 3) ** 2
    return nb.Nifti1Image((lesion & wm).astype(np.uint8), template.affine)


for subject in range(1, 13):
    sub = f"sub-{subject:02d}"
    for session in ("pre", "post") if subject <= 4 else (None,):
        anat = bids_dir / sub / (f"ses-{session}" if session else "") / "anat"
        anat.mkdir(parents=True)
        prefix = f"{sub}_ses-{session}" if session else sub
        lesion_mask().to_filename(
            anat / f"{prefix}_space-MNI152NLin2009cAsym_label-lesion_mask.nii.gz"
        )

# %%
# Select: the subject is the unit
# -------------------------------
# A lesion overlap counts patients. Four patients have two masks, so the default selection
# is refused, naming them and the ways out: one session (``session="pre"``, a map named
# ``ses-pre_...``), or a weighting that the sidecar and the report then state.
from nipype_heatmap.bids import BIDSIndex, select_bids_maps

index = BIDSIndex(bids_dir)  # pybids indexes the dataset once; every selection reuses it
try:
    select_bids_maps(index, label="lesion", space="MNI152NLin2009cAsym")
except ValueError as err:
    who, ways = str(err).split(". A group map", 1)
    print("refused:", who.split(": ", 1)[1].split(" (")[0])
    print(textwrap.fill("A group map" + ways, 88))

# %%
# ``several_per_subject="average"``: each patient counts once, a patient's masks averaged
# first (what a lesion overlap needs; ``"each-file"`` would count each mask once).
[selection] = select_bids_maps(
    index, label="lesion", space="MNI152NLin2009cAsym", several_per_subject="average"
)
print(len(selection.files), "masks of", len(selection.subjects), "patients")
print(textwrap.fill(f"weighting: {selection.weighting}", 88))

# %%
# Map and store
# -------------
# A count of patients (a sum, not clipped) and its coverage map, with the report. Every
# file is planned before any mask is read, and written together.
from nipype_heatmap.bids import write_group_maps
from nipype_heatmap.options import CohortOptions, MapOptions

out_dir = workdir / "derivatives" / "nipype_heatmap"
[written] = write_group_maps(
    [selection],
    out_dir,
    options=MapOptions(use_mean=False, clip_to_input_range=False),
    cohort=CohortOptions(coverage=True),
    report=True,
)
for path in sorted(out_dir.rglob("*")):
    if path.is_file():
        print(path.relative_to(out_dir))

# %%
# The map is named after what it is (``desc-count`` of the inputs' ``Mask``, each subject's
# masks averaged: ``SubjectAvg``), so it never takes the name of the map of one session.
# A patient whose two masks disagree at a voxel counts 0.5 there, so this count is stored
# as float32 (a count of one mask per patient is stored exactly, as uint16). The sidecar
# says where the map comes from and how the patients are weighed; ``SpatialReference`` is
# the template's TemplateFlow URL:
count = nb.load(written["heatmap"])
print(Path(written["heatmap"]).name, count.get_data_dtype(), "max", count.get_fdata().max())
sidecar = json.loads(Path(written["heatmap_sidecar"]).read_text())
print("Sources:", len(sidecar["Sources"]), "BIDS URIs, e.g.", sidecar["Sources"][0])
print(
    json.dumps(
        {
            k: v
            for k, v in sidecar.items()
            if k not in ("Sources", "Subjects", "GeneratedBy", "MissingValues")
        },
        indent=1,
    )
)

# %%
# The same as a Nipype workflow
# -----------------------------
# :func:`~nipype_heatmap.workflows.init_bids_heatmap_wf` takes the same options:
# ``select_inputs`` (:class:`~nipype_heatmap.interfaces.SelectBIDSInputs`), ``heatmap``
# (:class:`~nipype_heatmap.interfaces.HeatmapOfSubjects`, as the patients' masks are
# averaged) and ``ds_heatmap``
# (:class:`~nipype_heatmap.interfaces.HeatmapDerivativesSink`). It writes the same maps,
# bit for bit.
from nipype import config, logging

from nipype_heatmap.workflows import init_bids_heatmap_wf

config.set("logging", "workflow_level", "WARNING")  # Nipype's per-node log lines: off here
config.set("logging", "interface_level", "WARNING")
logging.update_logging(config)

wf = init_bids_heatmap_wf(
    label="lesion",
    space="MNI152NLin2009cAsym",
    several_per_subject="average",
    options=MapOptions(use_mean=False, clip_to_input_range=False),
    cohort=CohortOptions(coverage=True),
)
wf.base_dir = str(workdir / "work")
wf.config["execution"]["crashdump_dir"] = str(workdir / "crash")
wf.inputs.inputnode.bids_dir = str(bids_dir)
wf.inputs.inputnode.output_dir = str(workdir / "via_nipype")
wf.run(plugin="Linear")
via = nb.load(workdir / "via_nipype" / Path(written["heatmap"]).name)
print("same map:", np.array_equal(np.asanyarray(via.dataobj), np.asanyarray(count.dataobj)))

# %%
# The report's figure
# -------------------
# The HTML page beside the map embeds this figure (whole-brain mosaic, cuts through the
# peaks, histogram), drawn over the MNI152 template since the map is in an MNI space, with
# nilearn's interactive viewer, the parameters and the inputs. A count of whole subjects
# gets integer ticks; this one has halves (patients whose two masks disagree), so it is
# drawn as a map of values, from 0 to its maximum.
import matplotlib.pyplot as plt

figure = plt.imread(written["figure"])
plt.figure(figsize=(10, 10 * figure.shape[0] / figure.shape[1]))
plt.imshow(figure)
plt.axis("off")
plt.show()
