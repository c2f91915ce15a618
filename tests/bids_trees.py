"""Synthetic BIDS datasets for the BIDS tests, built once per session (pybids is slow).

- :func:`make_fmriprep25`: an fMRIPrep 25-like derivatives dataset: 7 subjects, 3 of them
  with two sessions (anatomy per session), native T1w-space outputs (no space entity, as
  fMRIPrep names them, and ``space-T1w`` for func), MNI152NLin2009cAsym outputs at res-1 and
  res-2 (brain masks, GM/WM/CSF probsegs, a tissue dseg), 4D BOLD, transforms, confounds,
  sidecars, figures, logs, nested ``sourcedata/freesurfer`` and stale group maps at the root;
- :func:`make_lesions`: lesion tracings of 6 patients, 3 of them with two sessions (9 masks),
  with a ``participants.tsv`` (an aphasia column).

Every volume is small (the res-2 grid is ``SHAPE``). Builders are pure functions of a root
folder and a seed; :func:`shared` builds each once per session.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nb
import numpy as np

from .conftest import SHAPE, default_affine

SPACE = "MNI152NLin2009cAsym"
SUBJECTS = ["01", "02", "03", "04", "05", "06", "07"]
WITH_SESSIONS = ["01", "02", "03"]
SESSIONS = ["pre", "post"]
FMRIPREP = {
    "Name": "fMRIPrep",
    "Version": "25.0.0",
    "CodeURL": "https://github.com/nipreps/fmriprep/archive/25.0.0.tar.gz",
}
TRACER = {"Name": "ITK-SNAP", "Version": "4.0.2"}
FINE = default_affine() @ np.diag([0.5, 0.5, 0.5, 1])
FINE_SHAPE = tuple(2 * n for n in SHAPE)
LESION_SUBJECTS = ["01", "02", "03", "04", "05", "06"]
APHASIA = {"01": "yes", "02": "no", "03": "yes", "04": "n/a", "05": "no", "06": "yes"}


def save(path: Path, data: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nb.Nifti1Image(data, default_affine() if affine is None else affine, dtype=data.dtype)
    img.header.set_xyzt_units("mm")
    img.to_filename(path)
    return path


def _touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _anat(folder: Path, prefix: str, rng: np.random.Generator) -> None:
    native = np.diag([1.0, 1.0, 1.0, 1.0])  # every subject's T1w on one grid, by chance
    save(folder / f"{prefix}_desc-brain_mask.nii.gz", (rng.random(SHAPE) > 0.3).astype("u1"),
         native)  # fmt: skip
    save(folder / f"{prefix}_desc-preproc_T1w.nii.gz", rng.random(SHAPE).astype("f4"), native)
    save(folder / f"{prefix}_label-GM_probseg.nii.gz", rng.random(SHAPE).astype("f4"), native)
    save(
        folder / f"{prefix}_space-{SPACE}_res-1_desc-brain_mask.nii.gz",
        (rng.random(FINE_SHAPE) > 0.3).astype("u1"),
        FINE,
    )
    save(folder / f"{prefix}_space-{SPACE}_res-2_desc-brain_mask.nii.gz",
         (rng.random(SHAPE) > 0.3).astype("u1"))  # fmt: skip
    probs = rng.random((3, *SHAPE))
    probs /= probs.sum(axis=0)
    for label, prob in zip(("GM", "WM", "CSF"), probs, strict=True):
        save(folder / f"{prefix}_space-{SPACE}_res-2_label-{label}_probseg.nii.gz",
             prob.astype("f4"))  # fmt: skip
    save(folder / f"{prefix}_space-{SPACE}_res-2_dseg.nii.gz",
         rng.integers(0, 4, SHAPE).astype("u1"))  # fmt: skip
    _touch(folder / f"{prefix}_space-{SPACE}_res-2_desc-brain_mask.json",
           json.dumps({"Type": "Brain", "RawSources": ["bids:raw:x"]}))  # fmt: skip
    _touch(folder / f"{prefix}_from-T1w_to-{SPACE}_mode-image_xfm.h5", "not an image")


def _func(folder: Path, prefix: str, rng: np.random.Generator) -> None:
    for run in (1, 2):
        base = f"{prefix}_task-rest_run-{run}"
        save(folder / f"{base}_space-{SPACE}_res-2_desc-brain_mask.nii.gz",
             (rng.random(SHAPE) > 0.2).astype("u1"))  # fmt: skip
        save(folder / f"{base}_space-T1w_desc-brain_mask.nii.gz",
             (rng.random(SHAPE) > 0.2).astype("u1"), np.eye(4))  # fmt: skip
        save(folder / f"{base}_space-{SPACE}_res-2_desc-preproc_bold.nii.gz",
             rng.random((*SHAPE, 3)).astype("f4"))  # fmt: skip
        save(folder / f"{base}_space-{SPACE}_res-2_boldref.nii.gz", rng.random(SHAPE).astype("f4"))
        _touch(folder / f"{base}_desc-confounds_timeseries.tsv", "csf\twhite_matter\n1\t2\n")
        _touch(folder / f"{base}_desc-confounds_timeseries.json", "{}")


def make_fmriprep25(root: Path, seed: int = 2025) -> Path:
    """The fMRIPrep 25-like dataset of the module doc, at ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    _touch(root / "dataset_description.json", json.dumps({
        "Name": "fMRIPrep - fMRI PREProcessing workflow",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [FMRIPREP],
        "DatasetLinks": {"raw": "../../rawdata"},
    }))  # fmt: skip
    _touch(root / "dataset_description.json.bak", "stale")
    _touch(root / "logs" / "CITATION.md", "fMRIPrep citation")
    _touch(root / "dseg.tsv", "index\tname\n1\tGM\n2\tWM\n3\tCSF\n")
    _touch(root / "desc-aseg_dseg.tsv", "index\tname\n2\tLeft-Cerebral-White-Matter\n")
    save(root / f"space-{SPACE}_res-2_desc-meanBrainMask_probseg.nii.gz", np.ones(SHAPE, "f4"))
    save(root / "sourcedata" / "freesurfer" / "sub-01" / "mri" / "sub-01_T1w.nii.gz",
         np.ones(SHAPE, "f4"))  # fmt: skip
    for sub in SUBJECTS:
        folder = root / f"sub-{sub}"
        sessions = SESSIONS if sub in WITH_SESSIONS else [None]
        for ses in sessions:
            base = folder / f"ses-{ses}" if ses else folder
            prefix = f"sub-{sub}_ses-{ses}" if ses else f"sub-{sub}"
            _anat(base / "anat", prefix, rng)
            _func(base / "func", prefix, rng)
        _touch(folder / "figures" / f"sub-{sub}_desc-summary_T1w.html", "<html/>")
        _touch(folder / "figures" / f"sub-{sub}_dseg.svg", "<svg/>")
        _touch(folder / "log" / "20250101-000000_abc" / "fmriprep.toml", "[x]")
    _touch(root / f"sub-{SUBJECTS[0]}.html", "<html/>")
    return root


def make_lesions(root: Path, seed: int = 7) -> Path:
    """The lesion dataset of the module doc, at ``root`` (a derivatives dataset)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    _touch(root / "dataset_description.json", json.dumps({
        "Name": "lesion tracings",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [TRACER],
    }))  # fmt: skip
    rows = ["participant_id\taphasia\tage"]
    for sub in LESION_SUBJECTS:
        rows.append(f"sub-{sub}\t{APHASIA[sub]}\t{50 + int(sub)}")
        sessions = SESSIONS if sub in WITH_SESSIONS else [None]
        for ses in sessions:
            folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
            prefix = f"sub-{sub}_ses-{ses}" if ses else f"sub-{sub}"
            mask = (rng.random(SHAPE) > 0.7).astype("u1")
            save(folder / f"{prefix}_space-{SPACE}_label-lesion_mask.nii.gz", mask)
    _touch(root / "participants.tsv", "\n".join(rows) + "\n")
    return root


_BUILT: dict[str, Path] = {}


def shared(tmp_path_factory, name: str) -> Path:
    """The dataset ``name`` (``fmriprep`` or ``lesions``), built once per session, side by
    side in one ``derivatives/`` folder; tests must not change it (copy it with
    :func:`copy_of` first)."""
    if "base" not in _BUILT:
        _BUILT["base"] = tmp_path_factory.mktemp("shared") / "derivatives"
    if name not in _BUILT:
        builder = {"fmriprep": make_fmriprep25, "lesions": make_lesions}[name]
        _BUILT[name] = builder(_BUILT["base"] / name)
    return _BUILT[name]


def copy_of(dataset: Path, where: Path) -> Path:
    """A copy of a dataset (to change it), at ``where/<its name>``."""
    target = where / dataset.name
    shutil.copytree(dataset, target)
    return target


def validator_errors(dataset: Path) -> list[str]:
    """Run the official BIDS validator; return its errors (an empty list when clean)."""
    import subprocess
    import sys

    import pytest

    beside = Path(sys.executable).with_name("bids-validator-deno")  # venv not on PATH
    exe = str(beside) if beside.exists() else shutil.which("bids-validator-deno")
    if exe is None:
        pytest.skip("bids-validator-deno is not installed (it is in the 'test' extra)")
    run = subprocess.run(
        [exe, str(dataset), "--format", "json"], capture_output=True, text=True, timeout=300
    )
    report = json.loads(run.stdout)
    return [
        f"{i['code']} {i.get('location', '')}: {i.get('issueMessage', '')[:200]}"
        for i in report["issues"]["issues"]
        if i["severity"] == "error"
    ]
