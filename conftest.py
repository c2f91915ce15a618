"""Doctest fixtures: the docstring examples run on a tiny data set, in a scratch folder.

Every docstring example of the package runs in a fresh temporary folder (the working
directory for that example) holding ``lesion_masks/`` with three small binary masks,
``sub-01_mask.nii.gz`` to ``sub-03_mask.nii.gz``; ``mask_dir`` names it and ``mask_files``
lists them. ``derivatives/lesions`` holds the same masks as a BIDS derivatives dataset.
"""

from __future__ import annotations

import numpy as np
import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_data(request, tmp_path, monkeypatch, doctest_namespace):
    if not isinstance(request.node, DoctestItem):
        return
    import nibabel as nb

    masks = tmp_path / "lesion_masks"
    masks.mkdir()
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    files = []
    for index in range(1, 4):
        data = (rng.random((7, 8, 9)) > 0.6).astype(np.uint8)
        path = masks / f"sub-{index:02d}_mask.nii.gz"
        nb.Nifti1Image(data, affine, dtype=np.uint8).to_filename(path)
        files.append(str(path))
    # The same masks as a small BIDS derivatives dataset, for the BIDS examples.
    bids_root = tmp_path / "derivatives" / "lesions"
    bids_root.mkdir(parents=True)
    (bids_root / "dataset_description.json").write_text(
        '{"Name": "lesion masks", "BIDSVersion": "1.10.0", "DatasetType": "derivative"}'
    )
    for index, path in enumerate(files, start=1):
        anat = bids_root / f"sub-{index:02d}" / "anat"
        anat.mkdir(parents=True)
        name = f"sub-{index:02d}_space-MNI152NLin2009cAsym_label-lesion_mask.nii.gz"
        (anat / name).write_bytes(open(path, "rb").read())
    monkeypatch.chdir(tmp_path)
    doctest_namespace["mask_dir"] = "lesion_masks"
    doctest_namespace["mask_files"] = files
