"""BIDS in, validator-clean BIDS derivatives out: function, interface, workflow, command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose

from nipype_heatmap.bids import select_bids_inputs, write_group_derivative
from nipype_heatmap.cli_bids import main
from nipype_heatmap.core import compute_heatmap
from nipype_heatmap.interfaces import HeatmapDerivativesSink
from nipype_heatmap.workflows import init_bids_heatmap_wf

from .conftest import SHAPE, default_affine

pytest.importorskip("bids", reason="BIDS selection needs the 'bids' extra (pybids)")

SPACE = "MNI152NLin2009cAsym"


@pytest.fixture
def lesion_dataset(tmp_path, rng):
    """A BIDS derivatives dataset of binary lesion masks for five subjects."""
    root = tmp_path / "lesions"
    root.mkdir()
    (root / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "lesion masks",
                "BIDSVersion": "1.10.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "manual tracing"}],
            }
        )
    )
    for sub in range(1, 6):
        anat = root / f"sub-{sub:02d}" / "anat"
        anat.mkdir(parents=True)
        mask = (rng.random(SHAPE) > 0.7).astype(np.uint8)
        img = nb.Nifti1Image(mask, default_affine())
        img.header.set_xyzt_units("mm")
        img.to_filename(anat / f"sub-{sub:02d}_space-{SPACE}_label-lesion_mask.nii.gz")
    return root


def _add(root, name, shape=SHAPE):
    sub = name.split("_")[0]
    path = root / sub / "anat" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.Nifti1Image(np.ones(shape, np.uint8), default_affine()).to_filename(path)
    return path


def validator_errors(dataset):
    """Run the official BIDS validator; return its errors (an empty list when clean)."""
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


def test_selection_by_entities(lesion_dataset):
    selection = select_bids_inputs(lesion_dataset, space=SPACE, label="lesion", suffix="mask")
    assert selection.subjects == ["01", "02", "03", "04", "05"]
    assert len(selection.files) == 5 and selection.files == sorted(selection.files)
    assert selection.entities == {"space": SPACE, "label": "lesion"}


def test_selection_by_participant(lesion_dataset):
    selection = select_bids_inputs(
        lesion_dataset, space=SPACE, label="lesion", participant_label=["sub-02", "04"]
    )
    assert selection.subjects == ["02", "04"]


def test_mixed_spaces_are_refused_naming_files(lesion_dataset):
    other = _add(lesion_dataset, "sub-06_space-T1w_label-lesion_mask.nii.gz")
    with pytest.raises(ValueError, match="mixes spaces") as err:
        select_bids_inputs(lesion_dataset, label="lesion")
    assert str(other) in str(err.value) and SPACE in str(err.value)
    # Naming the space picks one.
    assert len(select_bids_inputs(lesion_dataset, space=SPACE, label="lesion").files) == 5


def test_mixed_resolutions_are_refused(lesion_dataset):
    _add(lesion_dataset, f"sub-06_space-{SPACE}_res-2_label-lesion_mask.nii.gz")
    with pytest.raises(ValueError, match="res-2"):
        select_bids_inputs(lesion_dataset, space=SPACE, label="lesion")


def test_missing_subjects_are_named(lesion_dataset):
    with pytest.raises(ValueError, match="sub-09"):
        select_bids_inputs(
            lesion_dataset, space=SPACE, label="lesion", participant_label=["01", "09"]
        )


def test_empty_selection_is_an_error(lesion_dataset):
    with pytest.raises(FileNotFoundError, match="no file matches"):
        select_bids_inputs(lesion_dataset, space=SPACE, label="tumour")


def test_not_a_bids_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_description.json"):
        select_bids_inputs(tmp_path, space=SPACE)


def test_command_writes_a_validator_clean_derivative(lesion_dataset, tmp_path, capsys):
    out = tmp_path / "derivatives" / "nipype_heatmap"
    argv = [str(lesion_dataset), str(out), "group", "--space", SPACE, "--label", "lesion"]
    assert main([*argv, "--report", "-q"]) == 0
    assert main([*argv, "--sum", "--no-clip", "-q"]) == 0
    stem = f"space-{SPACE}_label-lesion_desc-mean_probseg"
    mean_file = out / f"{stem}.nii.gz"
    count_file = out / f"space-{SPACE}_label-lesion_desc-count_probseg.nii.gz"
    assert str(mean_file) in capsys.readouterr().out

    selection = select_bids_inputs(lesion_dataset, space=SPACE, label="lesion")
    assert_allclose(nb.load(mean_file).get_fdata(), compute_heatmap(selection.files).get_fdata())
    assert nb.load(count_file).get_fdata().max() > 1  # a count, not clipped

    sidecar = json.loads((out / f"{stem}.json").read_text())
    assert sidecar["NumberOfInputs"] == 5 and sidecar["Aggregation"] == "mean"
    assert sidecar["Subjects"] == ["01", "02", "03", "04", "05"]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "nipype_heatmap"
    link = description["DatasetLinks"]["input"]
    for uri in sidecar["Sources"]:  # every source resolves to an input file
        assert uri.startswith("bids:input:sub-")
        assert (out / link / uri.split(":", 2)[2]).resolve().is_file()
    for suffix in (".png", ".svg"):
        assert (out / "figures" / f"{stem}{suffix}").stat().st_size > 10_000
    page = (out / f"{stem}.html").read_text()
    assert "data:image/png;base64," in page and "sub-05" in page

    assert validator_errors(out) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--participant-label", "01", "09"], "sub-09"),
        (["--label", "tumour"], "no file matches"),
    ],
    ids=["missing-subject", "empty"],
)
def test_command_errors_write_nothing(lesion_dataset, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    argv = [str(lesion_dataset), str(out), "group", "--space", SPACE, "--label", "lesion"]
    assert main([*argv, *extra, "-q"]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_command_refuses_mixed_spaces_and_writes_nothing(lesion_dataset, tmp_path, capsys):
    _add(lesion_dataset, f"sub-06_space-{SPACE}_res-2_label-lesion_mask.nii.gz")
    out = tmp_path / "out"
    assert main([str(lesion_dataset), str(out), "group", "--space", SPACE, "-q"]) == 1
    assert "mixes spaces" in capsys.readouterr().err
    assert not out.exists()


def test_refuses_to_write_into_a_raw_dataset(lesion_dataset, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    selection = select_bids_inputs(lesion_dataset, space=SPACE, label="lesion")
    heatmap = tmp_path / "h.nii.gz"
    compute_heatmap(selection.files).to_filename(heatmap)
    with pytest.raises(ValueError, match="raw BIDS dataset"):
        write_group_derivative(heatmap, raw, selection)


def test_sink_interface(lesion_dataset, tmp_path):
    selection = select_bids_inputs(lesion_dataset, space=SPACE, label="lesion")
    heatmap = tmp_path / "h.nii.gz"
    compute_heatmap(selection.files, normalize=True).to_filename(heatmap)
    res = HeatmapDerivativesSink(
        in_file=str(heatmap),
        selection=selection,
        output_dir=str(tmp_path / "deriv"),
        normalize=True,
    ).run(cwd=str(tmp_path))
    assert res.outputs.out_file.endswith(
        f"space-{SPACE}_label-lesion_desc-meannorm_probseg.nii.gz"
    )
    assert json.loads(open(res.outputs.out_sidecar).read())["Normalized"] is True


def test_workflow_writes_a_validator_clean_derivative(lesion_dataset, tmp_path):
    wf = init_bids_heatmap_wf(space=SPACE, label="lesion", generate_report=True)
    wf.base_dir = str(tmp_path / "work")
    wf.inputs.inputnode.bids_dir = str(lesion_dataset)
    wf.inputs.inputnode.output_dir = str(tmp_path / "deriv")
    wf.run()
    stem = f"space-{SPACE}_label-lesion_desc-mean_probseg"
    assert (tmp_path / "deriv" / f"{stem}.nii.gz").exists()
    assert (tmp_path / "deriv" / f"{stem}.html").exists()
    assert validator_errors(tmp_path / "deriv") == []
