"""A built-in demo on real anatomy, offline: a synthetic cohort made from the MNI152 template.

nilearn ships the MNI ICBM152 2009a (symmetric) T1, GM, WM and brain mask at 2 mm inside its
wheel; nothing is downloaded. Each subject gets a smooth random deformation, an intensity
non-uniformity field and noise on the T1 (seeded, reproducible), and lesion masks as smooth
blobs inside its white matter near a few shared "hotspots", so that lesions overlap.

``run_demo`` builds the cohort, runs the tissue-probability and lesion-overlap workflows
of :mod:`nipype_heatmap.workflows` and summarizes the maps.
Needs the ``demo`` extra: ``pip install 'nipype_heatmap[demo]'``.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np

from .io import load_image

__all__ = [
    "TISSUE_LABELS",
    "atlas_template_correlations",
    "DemoCohort",
    "gm_template_correlation",
    "make_demo_cohort",
    "run_demo",
    "summarize",
]

LOGGER = logging.getLogger(__name__)


@dataclass
class DemoCohort:
    """Paths of a demo cohort's files."""

    root: Path
    t1w_files: list[str] = field(default_factory=list)
    lesion_masks: list[str] = field(default_factory=list)
    brain_mask: str = ""
    gm_template: str = ""
    wm_template: str = ""


def _templates():
    from ._optional import require

    datasets = require("nilearn.datasets", "the demo", extra="demo")
    ndimage = require("scipy.ndimage", "the demo", extra="demo")
    return datasets, ndimage


def make_demo_cohort(
    out_dir: str | os.PathLike[str], n_subjects: int = 12, seed: int = 0
) -> DemoCohort:
    """Write a reproducible synthetic cohort of T1w images and lesion masks in MNI space.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder to write into (created).
    n_subjects : int, default=12
        Number of subjects.
    seed : int, default=0
        Seed of the random deformations, fields, noise and lesions.

    Returns
    -------
    DemoCohort
        The T1w files, lesion masks, brain mask and nilearn's GM template, as written.
    """
    datasets, ndimage = _templates()
    root = Path(out_dir)
    anat = root / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    t1_img = datasets.load_mni152_template(resolution=2)
    affine, shape = t1_img.affine, t1_img.shape
    t1 = t1_img.get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=2).get_fdata(dtype=np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=2).get_fdata(dtype=np.float32) > 0
    gm_img = datasets.load_mni152_gm_template(resolution=2)
    wm_img = datasets.load_mni152_wm_template(resolution=2)

    cohort = DemoCohort(root=root)
    cohort.brain_mask = _save(
        brain.astype(np.uint8), affine, root / "tpl-MNI152_desc-brain_mask.nii.gz"
    )
    cohort.gm_template = _save(
        gm_img.get_fdata(dtype=np.float32), affine, root / "tpl-MNI152_label-GM_probseg.nii.gz"
    )
    cohort.wm_template = _save(
        wm_img.get_fdata(dtype=np.float32), affine, root / "tpl-MNI152_label-WM_probseg.nii.gz"
    )

    # Lesion "hotspots": deep white matter points shared by the cohort, so lesions overlap.
    deep_wm = np.argwhere(ndimage.binary_erosion(wm > 0.9, iterations=2))
    hotspots = deep_wm[rng.choice(len(deep_wm), size=3, replace=False)]
    grid = np.indices(shape, dtype=np.float32)

    for index in range(1, n_subjects + 1):
        sub = f"sub-{index:02d}"
        coords = grid + _smooth_field(rng, ndimage, shape, sigma=6.0, amplitude=1.5, n=3)
        warped_t1 = ndimage.map_coordinates(t1, coords, order=1, mode="nearest")
        warped_wm = ndimage.map_coordinates(wm, coords, order=1, mode="nearest")
        bias = np.exp(_smooth_field(rng, ndimage, shape, sigma=20.0, amplitude=0.08, n=1)[0])
        noisy = warped_t1 * bias + rng.normal(0.0, 0.02 * float(t1.max()), shape)
        cohort.t1w_files.append(
            _save(noisy.astype(np.float32), affine, anat / f"{sub}_space-MNI152_T1w.nii.gz")
        )

        lesion = np.zeros(shape, dtype=bool)
        for _ in range(rng.integers(1, 4)):
            center = hotspots[rng.integers(len(hotspots))] + rng.normal(0.0, 1.5, 3)
            radius = rng.uniform(1.5, 3.5)
            dist2 = sum((grid[axis] - center[axis]) ** 2 for axis in range(3))
            lesion |= dist2 <= radius**2
        lesion &= warped_wm > 0.5
        cohort.lesion_masks.append(
            _save(
                lesion.astype(np.uint8),
                affine,
                anat / f"{sub}_space-MNI152_label-lesion_mask.nii.gz",
            )
        )
    LOGGER.info("Demo cohort of %d subjects written to %s", n_subjects, root)
    return cohort


def _smooth_field(rng, ndimage, shape, sigma: float, amplitude: float, n: int) -> np.ndarray:
    """n smooth random fields with peak absolute value ``amplitude``."""
    fields = np.empty((n, *shape), dtype=np.float32)
    for i in range(n):
        noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
        fields[i] = noise * (amplitude / max(float(np.abs(noise).max()), 1e-12))
    return fields


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> str:
    img = nb.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=4)
    img.header.set_sform(affine, code=4)
    img.to_filename(path)
    return str(path)


def run_demo(
    out_dir: str | os.PathLike[str],
    n_subjects: int = 12,
    seed: int = 0,
    plugin: str = "MultiProc",
) -> str:
    """Build the demo cohort, run the tissue and lesion workflows, and summarize the maps.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder for the cohort (``cohort/``), Nipype's working folder (``work/``) and the
        maps (``maps/``).
    n_subjects : int, default=12
        Number of subjects.
    seed : int, default=0
        Seed of the cohort.
    plugin : str, default="MultiProc"
        Nipype execution plugin.

    Returns
    -------
    str
        A short human-readable summary (where the maps are, voxels with p >= 0.5 per
        tissue, the maximum lesion overlap, the GM map's correlation with the template).
    """
    from .workflows import init_lesion_overlap_wf, init_tissue_probability_wf

    out_dir = Path(out_dir).absolute()
    cohort = make_demo_cohort(out_dir / "cohort", n_subjects=n_subjects, seed=seed)
    plugin_args = {"n_procs": os.cpu_count() or 1} if plugin == "MultiProc" else {}

    tissue_wf = init_tissue_probability_wf(segmenter="otsu")
    tissue_wf.base_dir = str(out_dir / "work")
    tissue_wf.inputs.inputnode.t1w_files = cohort.t1w_files
    tissue_wf.inputs.inputnode.brain_mask = cohort.brain_mask
    lesion_wf = init_lesion_overlap_wf()
    lesion_wf.base_dir = str(out_dir / "work")
    lesion_wf.inputs.inputnode.lesion_masks = cohort.lesion_masks
    results = {}
    for wf in (tissue_wf, lesion_wf):
        LOGGER.info("Running %s with the %s plugin", wf.name, plugin)
        wf.config["execution"]["poll_sleep_duration"] = 0.2
        # Crash reports go beside the demo's outputs, readable as text, never into the
        # folder the command was started from.
        wf.config["execution"]["crashdump_dir"] = str(out_dir / "logs")
        wf.config["execution"]["crashfile_format"] = "txt"
        graph = wf.run(plugin=plugin, plugin_args=plugin_args)
        # Identity nodes (outputnode) are pruned from the executed graph: read the heatmaps.
        results.update({node.name: node.result.outputs for node in graph.nodes()})

    maps = out_dir / "maps"
    maps.mkdir(exist_ok=True)
    written = {
        tissue: shutil.copy(
            results[f"{tissue}_heatmap"].out_file, maps / f"label-{tissue.upper()}_probseg.nii.gz"
        )
        for tissue in ("csf", "gm", "wm")
    }
    written["count"] = shutil.copy(results["overlap_count"].out_file, maps)
    written["lesion"] = shutil.copy(results["lesion_probability"].out_file, maps)
    written.update(_tissue_atlas(results["segment_otsu"].tissue_files, cohort, maps / "atlas"))
    return summarize(written, cohort)


#: The demo atlas's label table: the segmenter's classes.
TISSUE_LABELS = {1: ("CSF", "#3c78d8"), 2: ("GM", "#a0a0a0"), 3: ("WM", "#f2f2f2")}


def _tissue_atlas(tissue_lists, cohort: DemoCohort, out_dir: Path) -> dict[str, str]:
    """A 3-class tissue atlas of the subjects' segmentations: each subject's CSF, GM and WM
    masks become one label image (1, 2, 3), then one atlas pass."""
    from .atlas import LabelInfo, accumulate_labels, write_atlas

    dseg_dir = cohort.root / "dseg"
    dseg_dir.mkdir(parents=True, exist_ok=True)
    dsegs = []
    for n, masks in enumerate(tissue_lists):
        imgs = [load_image(path) for path in masks]
        labels = np.zeros(imgs[0].shape[:3], np.uint8)
        for label, img in zip(TISSUE_LABELS, imgs, strict=True):
            labels += (np.asanyarray(img.dataobj) > 0).astype(np.uint8) * np.uint8(label)
        dsegs.append(_save(labels, imgs[0].affine, dseg_dir / f"sub-{n + 1:02d}_dseg.nii.gz"))
    table = {label: LabelInfo(name, color) for label, (name, color) in TISSUE_LABELS.items()}
    written = write_atlas(
        accumulate_labels(dsegs), out_dir, atlas_name="Tissue", label_table=table
    )
    return {f"atlas_{key}": path for key, path in written.items()}


def atlas_template_correlations(
    probseg: str | os.PathLike[str], cohort: DemoCohort
) -> dict[str, float]:
    """Pearson r of the atlas's CSF, GM and WM maps with the MNI152 templates, inside the
    brain mask (CSF against what the GM and WM templates leave: 1 - GM - WM)."""
    mask = np.asanyarray(load_image(cohort.brain_mask).dataobj) > 0
    maps = load_image(probseg).get_fdata()
    gm = load_image(cohort.gm_template).get_fdata()
    wm = load_image(cohort.wm_template).get_fdata()
    templates = {"GM": gm, "WM": wm, "CSF": np.clip(1.0 - gm - wm, 0.0, 1.0)}
    return {
        name: float(np.corrcoef(maps[..., label - 1][mask], templates[name][mask])[0, 1])
        for label, (name, _) in TISSUE_LABELS.items()
    }


def gm_template_correlation(
    gm_map: str | os.PathLike[str], gm_template: str, brain_mask: str
) -> float:
    """Pearson r between a GM probability map and the template's, inside the brain mask."""
    mask = np.asanyarray(load_image(brain_mask).dataobj) > 0
    a = load_image(gm_map).get_fdata()[mask]
    b = load_image(gm_template).get_fdata()[mask]
    return float(np.corrcoef(a, b)[0, 1])


def summarize(written: Mapping[str, str | os.PathLike[str]], cohort: DemoCohort) -> str:
    """Describe the demo's maps in a few lines."""
    lines = [f"Demo cohort: {len(cohort.t1w_files)} subjects in {cohort.root}", "Maps:"]
    for tissue in ("csf", "gm", "wm"):
        data = load_image(written[tissue]).get_fdata()
        lines.append(
            f"  {tissue.upper():3s} probability  {written[tissue]}  "
            f"({int((data >= 0.5).sum())} voxels with p >= 0.5)"
        )
    count = load_image(written["count"]).get_fdata()
    lines.append(
        f"  lesion count     {written['count']}  (max overlap {int(count.max())} of "
        f"{len(cohort.lesion_masks)} subjects)"
    )
    lines.append(f"  lesion probability  {written['lesion']}")
    r = gm_template_correlation(written["gm"], cohort.gm_template, cohort.brain_mask)
    lines.append(f"GM map vs MNI152 GM template: Pearson r = {r:.3f} inside the brain mask")
    if "atlas_probseg" in written:
        lines.append(f"  tissue atlas     {written['atlas_probseg']}  (+ max-probability maps")
        lines.append(f"                   and the label table {written['atlas_table']})")
        r_all = atlas_template_correlations(written["atlas_probseg"], cohort)
        lines.append(
            "Tissue atlas vs MNI152 templates (Pearson r inside the brain mask): "
            + ", ".join(f"{name} {value:.3f}" for name, value in r_all.items())
        )
    return "\n".join(lines)
