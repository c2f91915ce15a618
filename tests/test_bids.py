"""BIDS selection: strict rules on an fMRIPrep-like dataset with anat and func outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from nipype_heatmap.bids import BIDSSelection, load_filter_file, select_bids_inputs
from nipype_heatmap.interfaces import SelectBIDSInputs

from .conftest import SHAPE, default_affine

pytest.importorskip("bids", reason="BIDS selection needs the 'bids' extra (pybids)")

SPACE = "MNI152NLin2009cAsym"
SUBJECTS = ["01", "02", "03", "04"]
FMRIPREP = {"Name": "fMRIPrep", "Version": "24.1.1", "CodeURL": "https://github.com/nipreps"}


def _save(path: Path, data: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nb.Nifti1Image(data, default_affine() if affine is None else affine, dtype=data.dtype)
    img.header.set_xyzt_units("mm")
    img.to_filename(path)
    return path


def make_fmriprep_like(root: Path, rng: np.random.Generator) -> Path:
    """fMRIPrep-style derivatives: anat masks and GM/WM probsegs at res-1 and res-2, func
    brain masks of two runs, and a stale group map at the root."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "fMRIPrep - fMRI PREProcessing workflow",
                "BIDSVersion": "1.10.0",
                "DatasetType": "derivative",
                "GeneratedBy": [FMRIPREP],
            }
        )
    )
    fine = default_affine() @ np.diag([0.5, 0.5, 0.5, 1])
    for sub in SUBJECTS:
        anat = root / f"sub-{sub}" / "anat"
        func = root / f"sub-{sub}" / "func"
        mask = (rng.random(SHAPE) > 0.3).astype(np.uint8)
        _save(anat / f"sub-{sub}_space-{SPACE}_res-2_desc-brain_mask.nii.gz", mask)
        _save(
            anat / f"sub-{sub}_space-{SPACE}_res-1_desc-brain_mask.nii.gz",
            np.ones((14, 16, 18), np.uint8),
            fine,
        )
        for label in ("GM", "WM"):
            prob = rng.random(SHAPE).astype(np.float32)
            _save(anat / f"sub-{sub}_space-{SPACE}_res-2_label-{label}_probseg.nii.gz", prob)
        for run in (1, 2):
            _save(
                func / f"sub-{sub}_task-rest_run-{run}_space-{SPACE}_res-2_desc-brain_mask.nii.gz",
                (rng.random(SHAPE) > 0.2).astype(np.uint8),
            )
    _save(root / f"space-{SPACE}_res-2_desc-meanBrainMask_probseg.nii.gz", np.ones(SHAPE, "f4"))
    return root


@pytest.fixture
def fmriprep(tmp_path, rng):
    return make_fmriprep_like(tmp_path / "derivatives" / "fmriprep", rng)


def test_one_anat_mask_per_subject(fmriprep):
    selection = select_bids_inputs(fmriprep, desc="brain", datatype="anat", res="2", space=SPACE)
    assert selection.subjects == SUBJECTS
    assert len(selection.files) == 4 and all("/anat/" in f for f in selection.files)
    assert selection.entities == {
        "space": SPACE,
        "res": "2",
        "desc": "brain",
        "suffix": "mask",
        "datatype": "anat",
    }
    assert selection.generated_by == [FMRIPREP]


def test_anat_and_func_masks_are_never_mixed(fmriprep):
    with pytest.raises(ValueError, match="mixes datatype values") as err:
        select_bids_inputs(fmriprep, desc="brain", res="2")
    message = str(err.value)
    assert "datatype=anat" in message and "datatype=func" in message and "--datatype" in message
    assert re.search(r"sub-01_space-\S+_desc-brain_mask\.nii\.gz", message)
    assert "task-rest" in message


def test_two_resolutions_are_refused_and_res_picks_one(fmriprep):
    with pytest.raises(ValueError, match="mixes res values") as err:
        select_bids_inputs(fmriprep, desc="brain", datatype="anat")
    assert "res=1" in str(err.value) and "res=2" in str(err.value) and "--res" in str(err.value)
    assert len(select_bids_inputs(fmriprep, desc="brain", datatype="anat", res="1").files) == 4


def test_labels_are_never_averaged_together(fmriprep):
    with pytest.raises(ValueError, match="mixes label values") as err:
        select_bids_inputs(fmriprep, suffix="probseg", res="2")
    assert "label=GM" in str(err.value) and "label=WM" in str(err.value)
    selection = select_bids_inputs(fmriprep, suffix="probseg", res="2", label="GM")
    assert len(selection.files) == 4 and all("label-GM" in f for f in selection.files)


def test_several_runs_per_subject_are_refused_unless_asked_for(fmriprep):
    query = {"desc": "brain", "datatype": "func", "res": "2"}
    with pytest.raises(ValueError, match="several matching files") as err:
        select_bids_inputs(fmriprep, **query)
    assert "sub-01: " in str(err.value) and "run-2" in str(err.value)
    assert "--several-per-subject" in str(err.value)
    # several_per_subject=True is gone: the weighting is named (each file once, as True
    # did, or each subject once with its files averaged first)
    for weighting in ("each-file", "average"):
        selection = select_bids_inputs(fmriprep, several_per_subject=weighting, **query)
        assert len(selection.files) == 8 and "run" not in selection.entities
    assert len(select_bids_inputs(fmriprep, run="1", **query).files) == 4


def test_group_maps_without_subject_are_never_inputs(fmriprep):
    selection = select_bids_inputs(fmriprep, suffix="probseg", res="2", label="GM")
    assert all("/sub-" in f for f in selection.files)
    with pytest.raises(FileNotFoundError, match="no file matches"):
        select_bids_inputs(fmriprep, suffix="probseg", desc="meanBrainMask")


def test_filter_file_selects_like_the_flags(fmriprep, tmp_path):
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"heatmap": {"datatype": "anat", "res": "2", "desc": "brain"}}))
    by_file = select_bids_inputs(fmriprep, bids_filters=load_filter_file(filters))
    by_flags = select_bids_inputs(fmriprep, datatype="anat", res="2", desc="brain")
    assert by_file.files == by_flags.files
    absent = select_bids_inputs(
        fmriprep, suffix="probseg", bids_filters={"res": "2", "label": "GM", "desc": None}
    )
    assert len(absent.files) == 4


def test_bad_filter_file_names_itself(tmp_path):
    bad = tmp_path / "filters.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        load_filter_file(bad)


def test_missing_subjects_are_named(fmriprep):
    with pytest.raises(ValueError, match="sub-09"):
        select_bids_inputs(
            fmriprep, desc="brain", datatype="anat", res="2", participant_label=["01", "09"]
        )


def test_not_a_bids_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_description.json"):
        select_bids_inputs(tmp_path, space=SPACE)


def test_selection_travels_as_plain_data(fmriprep, tmp_path):
    res = SelectBIDSInputs(bids_dir=str(fmriprep), desc="brain", datatype="anat", res="2").run(
        cwd=str(tmp_path)
    )
    [selection] = res.outputs.selections  # one map: one selection
    assert isinstance(selection, dict) and json.loads(json.dumps(selection)) == selection
    assert [BIDSSelection.from_any(selection).files] == res.outputs.in_files


def test_the_interface_s_entity_filters_reach_the_selection(fmriprep, tmp_path):
    # run (and the other entity inputs) travel from SelectBIDSInputs to the selection
    # (mutant: an entity input not passed on: both runs selected, refused).
    res = SelectBIDSInputs(
        bids_dir=str(fmriprep), desc="brain", datatype="func", res="2", run="2"
    ).run(cwd=str(tmp_path))
    [in_files] = res.outputs.in_files  # one map
    assert len(in_files) == 4
    assert all("_run-2_" in f for f in in_files)
    assert res.outputs.selections[0]["entities"]["run"] == "2"
