"""BIDS output (issue 27): subjects counted, names that carry the selection, the output
folder checked, provenance that resolves, one output set per run even when killed or run
concurrently, the reports wired to the kind of map, validator-clean datasets.

Ground truth from numpy; datasets from tests/bids_trees.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from nipype_heatmap.bids import (
    BIDSIndex,
    select_bids_inputs,
    select_bids_maps,
    write_group_maps,
)
from nipype_heatmap.bids.derivatives import OutputDataset
from nipype_heatmap.cli.bids import main
from nipype_heatmap.io import recover_interrupted_commits
from nipype_heatmap.options import CohortOptions, MapOptions

from .bids_trees import SHAPE, SPACE, copy_of, save, validator_errors

pytest.importorskip("bids", reason="BIDS selection needs the 'bids' extra (pybids)")

COUNT = MapOptions(use_mean=False, clip_to_input_range=False)


def _data(path) -> np.ndarray:
    return np.asanyarray(nb.load(path).dataobj)


def _sidecar(path) -> dict:
    return json.loads(Path(str(path).replace(".nii.gz", ".json")).read_text())


def _subject_means(selection) -> list[np.ndarray]:
    return [np.mean([nb.load(f).get_fdata() for f in unit], axis=0) for unit in selection.units]


@pytest.fixture
def no_reading(monkeypatch):
    """Fail if any input volume is read (checks must come first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("an input was read before the outputs were checked")

    for target in (
        "nipype_heatmap.bids.group_maps.accumulate_units",
        "nipype_heatmap.io.read_volume",
    ):
        monkeypatch.setattr(target, refuse)


# -- 1. subjects, not sessions --------------------------------------------------------------------
def test_a_lesion_count_counts_subjects_not_sessions(lesion_index, tmp_path):
    average = select_bids_inputs(lesion_index, label="lesion", several_per_subject="average")
    each = select_bids_inputs(lesion_index, label="lesion", several_per_subject="each-file")
    out = tmp_path / "derivatives" / "nipype_heatmap"
    [by_subject] = write_group_maps([average], out, options=COUNT)
    [by_file] = write_group_maps([each], out, options=COUNT)
    assert_allclose(_data(by_subject["heatmap"]), np.sum(_subject_means(average), axis=0))
    assert _data(by_subject["heatmap"]).max() <= 6 < 9
    files = np.sum([nb.load(f).get_fdata() for f in each.files], axis=0)
    assert_array_equal(_data(by_file["heatmap"]), files)
    side = _sidecar(by_subject["heatmap"])
    assert side["NumberOfSubjects"] == 6 and side["NumberOfInputs"] == 9
    assert side["SeveralFilesPerSubject"] is True and "averaged first" in side["Weighting"]
    assert side["FilesPerSubject"] == {"01": 2, "02": 2, "03": 2, "04": 1, "05": 1, "06": 1}
    assert side["Units"] == "count (number of subjects)"
    assert _sidecar(by_file["heatmap"])["Units"] == "count (number of files)"
    assert by_subject["heatmap"] != by_file["heatmap"]  # the weighting is in the name
    assert "desc-countMaskSubjectAvg_" in by_subject["heatmap"]
    assert "desc-countMaskEachFile_" in by_file["heatmap"]
    assert validator_errors(out) == []


def test_the_default_refuses_sessions_and_writes_nothing(lesions, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([str(lesions), str(out), "group", "--label", "lesion", "--sum", "--no-clip"])
    assert code == 1
    assert "--several-per-subject average" in capsys.readouterr().err
    assert not out.exists()


def test_the_subtraction_counts_subjects(lesions, lesion_index, tmp_path):
    out = tmp_path / "derivatives" / "nipype_heatmap"
    argv = [str(lesions), str(out), "group", "--label", "lesion", "-q", "--group-column",
            "aphasia", "--group-a", "yes", "--group-b", "no"]  # fmt: skip
    assert main([*argv, "--several-per-subject", "each-file"]) == 1
    assert main([*argv, "--several-per-subject", "average"]) == 0
    selection = select_bids_inputs(lesion_index, label="lesion", several_per_subject="average")
    means = dict(zip(selection.subjects, _subject_means(selection), strict=True))
    yes = np.mean([means[s] for s in ("01", "03", "06")], axis=0) * 100
    no = np.mean([means[s] for s in ("02", "05")], axis=0) * 100
    stem = f"space-{SPACE}_label-lesion_desc-{{}}MaskSubjectAvg_heatmap"
    assert_allclose(_data(out / f"{stem.format('subtractionAphasiaYesVsNo')}.nii.gz"),
                    yes - no, atol=1e-4)  # fmt: skip
    assert_allclose(_data(out / f"{stem.format('percentAphasiaYes')}.nii.gz"), yes, atol=1e-4)
    side = _sidecar(out / f"{stem.format('subtractionAphasiaYesVsNo')}.nii.gz")
    assert side["Groups"]["SubjectsA"] == ["01", "03", "06"]
    assert side["Groups"]["SubjectsB"] == ["02", "05"]
    assert side["NumberOfSubjects"] == 5 and len(side["Sources"]) == 8  # sub-04 n/a
    assert "3 subjects with aphasia = yes (A) and 2 with aphasia = no" in side["Description"]
    assert validator_errors(out) == []


# -- 2. template spaces only ----------------------------------------------------------------------
def test_the_command_refuses_a_native_space_and_writes_nothing(fmriprep, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [str(fmriprep), str(out), "group", "--desc", "brain", "--datatype", "func",
            "--session", "pre", "--run", "1", "--space", "T1w", "-q"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert (
        "space-T1w is each subject's T1-weighted anatomy" in err and "--allow-native-space" in err
    )
    assert not out.exists()
    assert main([*argv, "--allow-native-space"]) == 0
    [written] = out.glob("*_probseg.nii.gz")
    side = _sidecar(written)
    assert side["SpatialReference"].startswith("bids:fmriprep:sub-01/ses-pre/func/")
    assert validator_errors(out) == []


# -- 4. where the dataset goes --------------------------------------------------------------------
def test_the_output_folder_is_a_dataset_of_its_own(fp_index, fmriprep, tmp_path, no_reading):
    selection = select_bids_inputs(fp_index, suffix="probseg", label="GM", res="2", session="pre")
    derivatives = fmriprep.parent
    others = tmp_path / "others"
    for name in ("a", "b"):
        (others / name).mkdir(parents=True)
        (others / name / "dataset_description.json").write_text("{}")
    refusals = {
        derivatives: "holds the input dataset",
        derivatives.parent: "holds the input dataset",
        others: "holds other datasets",
        fmriprep: "is inside the input dataset",
        fmriprep / "sub-01": "is inside the input dataset",
        fmriprep / "derivatives": "is inside the input dataset",
    }
    for folder, why in refusals.items():
        before = sorted(p.name for p in folder.iterdir()) if folder.exists() else None
        with pytest.raises(ValueError, match=re.escape(f"{folder}: {why}")):
            write_group_maps([selection], folder)
        after = sorted(p.name for p in folder.iterdir()) if folder.exists() else None
        assert after == before, folder
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    with pytest.raises(ValueError, match="is a raw BIDS dataset"):
        write_group_maps([selection], raw)


# -- 6. names carry the selection, collisions before any input is read ----------------------------
def test_a_subset_is_in_the_name(lesion_index, tmp_path):
    selections = [
        select_bids_inputs(lesion_index, label="lesion", several_per_subject="average"),
        select_bids_inputs(lesion_index, label="lesion", session="pre"),
        select_bids_inputs(lesion_index, label="lesion", session="post"),
        select_bids_inputs(
            lesion_index, label="lesion", participant_label=["04", "05"], session=None
        ),
        select_bids_inputs(lesion_index, label="lesion", participant_label=["05", "06"]),
    ]
    written = write_group_maps(selections, tmp_path / "deriv", options=COUNT)
    names = [Path(w["heatmap"]).name for w in written]
    assert len(set(names)) == len(names)
    assert names[1] == f"ses-pre_space-{SPACE}_label-lesion_desc-countMask_heatmap.nii.gz"
    assert re.fullmatch(rf"space-{SPACE}_label-lesion_desc-countMaskSubset[0-9a-f]{{8}}_"
                        r"heatmap\.nii\.gz", names[3])  # fmt: skip
    assert _sidecar(written[3]["heatmap"])["Participants"] == ["04", "05"]
    assert validator_errors(tmp_path / "deriv") == []


def test_collisions_are_found_before_any_input_is_read(lesion_index, tmp_path, no_reading):
    pre = select_bids_inputs(lesion_index, label="lesion", session="pre")
    post = select_bids_inputs(lesion_index, label="lesion", session="post")
    with pytest.raises(ValueError, match="would give 2 maps one name"):
        write_group_maps([pre, post], tmp_path / "a", out_desc="lesions")
    out = tmp_path / "b"
    out.mkdir()
    stem = f"ses-pre_space-{SPACE}_label-lesion_desc-countMask_heatmap"
    save(out / f"{stem}.nii.gz", np.zeros(SHAPE, "u2"))
    (out / f"{stem}.json").write_text(json.dumps({"Sources": ["bids:lesions:other.nii.gz"]}))
    with pytest.raises(
        FileExistsError, match=r"exists and was made from other inputs .*--overwrite"
    ):
        write_group_maps([pre], out, options=COUNT)


def test_a_rerun_with_the_same_inputs_replaces_its_map_and_keeps_the_user_s_readme(
    lesion_index, tmp_path
):
    pre = select_bids_inputs(lesion_index, label="lesion", session="pre")
    out = tmp_path / "deriv"
    [first] = write_group_maps([pre], out, options=COUNT)
    (out / "README.md").write_text("# Our lab's lesion maps\n")
    [again] = write_group_maps([pre], out, options=COUNT)
    assert again == first and (out / "README.md").read_text() == "# Our lab's lesion maps\n"
    description = json.loads((out / "dataset_description.json").read_text())
    assert [g["Name"] for g in description["GeneratedBy"]] == ["nipype_heatmap"]
    assert description["Name"] == "nipype_heatmap group maps"  # BIDS requires one
    (out / "README.md").rename(out / "README")  # BIDS's other names are the README too
    write_group_maps([pre], out, options=COUNT)
    assert not (out / "README.md").exists()
    assert (out / "README").read_text() == "# Our lab's lesion maps\n"
    assert validator_errors(out) == []


# -- 9. provenance --------------------------------------------------------------------------------
def test_provenance_resolves_and_counts_are_integers(fmriprep, lesions, tmp_path, monkeypatch):
    monkeypatch.chdir(fmriprep.parent)  # relative paths on the command line
    out = tmp_path / "derivatives" / "nipype_heatmap"
    gm = ["fmriprep", str(out), "group", "--suffix", "probseg", "--label", "GM", "--res", "2",
          "--space", SPACE, "--session", "pre", "-q"]  # fmt: skip
    assert main(gm) == 0
    argv = ["lesions", str(out), "group", "--label", "lesion", "--session", "pre", "-q"]
    assert main([*argv, "--sum", "--no-clip", "--min-count", "2", "--coverage"]) == 0
    assert main([*argv, "--sum"]) == 0  # the union of the masks
    brain = ["fmriprep", str(out), "group", "--desc", "brain", "--datatype", "anat",
             "--space", SPACE, "--res", "2", "--session", "post", "--sum", "-q"]  # fmt: skip
    assert main(brain) == 0
    gm_side = _sidecar(out / f"ses-pre_space-{SPACE}_res-2_label-GM_desc-meanProbseg_probseg.json")
    assert gm_side["SpatialReference"] == (
        "https://templateflow.s3.amazonaws.com/tpl-MNI152NLin2009cAsym/"
        "tpl-MNI152NLin2009cAsym_res-02_T1w.nii.gz"
    )
    command = gm_side["GeneratedBy"][0]["CommandLine"]
    assert command.startswith(f"nipype-heatmap-bids {fmriprep} {out} group ")
    lesion = out / f"ses-pre_space-{SPACE}_label-lesion_desc-countMask_heatmap.nii.gz"
    assert _sidecar(lesion)["SpatialReference"].endswith("_res-01_T1w.nii.gz")
    files = sorted(lesions.glob("sub-0[123]/ses-pre/anat/*_mask.nii.gz"))
    count = np.sum([nb.load(f).get_fdata() for f in files], axis=0)
    assert nb.load(lesion).get_data_dtype() == np.uint16
    assert_array_equal(_data(lesion), count)
    union = out / f"ses-pre_space-{SPACE}_label-lesion_desc-unionMask_mask.nii.gz"
    assert nb.load(union).get_data_dtype() == np.uint8 and _sidecar(union)["Type"] == "Lesion"
    mincount = out / f"ses-pre_space-{SPACE}_label-lesion_desc-mincount2Mask_mask.nii.gz"
    assert _sidecar(mincount)["Type"] == "ROI"
    brain_union = f"ses-post_space-{SPACE}_res-2_desc-unionBrainMask_mask.nii.gz"
    assert _sidecar(out / brain_union)["Type"] == "Brain"
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"] == [
        {
            "Name": "nipype_heatmap",
            "Version": description["GeneratedBy"][0]["Version"],
            "Description": "Voxel-wise mean or sum of many co-registered volumes.",
            "CodeURL": "https://pypi.org/project/nipype-heatmap/",
        }
    ]
    sources = {s["URL"]: s.get("Version") for s in description["SourceDatasets"]}
    assert sources == {"bids:fmriprep:": "fMRIPrep 25.0.0", "bids:lesions:": "ITK-SNAP 4.0.2"}
    links = description["DatasetLinks"]
    for uri in _sidecar(lesion)["Sources"]:
        _, name, relative = uri.split(":", 2)
        assert (out / links[name] / relative).resolve().is_file()
    assert validator_errors(out) == []


# -- 11. concurrent runs, killed runs -------------------------------------------------------------
def test_concurrent_runs_from_two_datasets_keep_every_link(fmriprep, tmp_path, monkeypatch):
    sites = [copy_of(fmriprep, tmp_path / f"site{n}") for n in (1, 2)]
    selections = [
        select_bids_inputs(BIDSIndex(site), suffix="probseg", label=label, res="2", session="pre")
        for site, label in zip(sites, ("GM", "WM"), strict=True)
    ]
    out = tmp_path / "group"
    original = OutputDataset.write_shared

    def slow(self, *args, **kwargs):  # the other run reads the description meanwhile
        time.sleep(0.3)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OutputDataset, "write_shared", slow)
    errors = []

    def run(selection):
        try:
            write_group_maps([selection], out)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(s,)) for s in selections]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    links = json.loads((out / "dataset_description.json").read_text())["DatasetLinks"]
    assert sorted(links.values()) == ["../site1/fmriprep", "../site2/fmriprep"]
    for label in ("GM", "WM"):
        side = _sidecar(
            out / f"ses-pre_space-{SPACE}_res-2_label-{label}_desc-meanProbseg_probseg.json"
        )
        site = "site1" if label == "GM" else "site2"
        name, relative = side["Sources"][0].split(":", 2)[1:]
        assert links[name] == f"../{site}/fmriprep"
        assert (out / links[name] / relative).resolve().is_file()
    assert validator_errors(out) == []


def test_a_run_killed_between_renames_is_completed_never_mixed(lesions, tmp_path, rng):
    dataset = copy_of(lesions, tmp_path)
    out = tmp_path / "group"
    argv = [str(dataset), str(out), "group", "--label", "lesion", "--session", "pre", "--sum",
            "--no-clip", "-q", "--overwrite"]  # fmt: skip
    assert main(argv) == 0
    stem = out / f"ses-pre_space-{SPACE}_label-lesion_desc-countMask_heatmap"
    assert _sidecar(f"{stem}.nii.gz")["NumberOfSubjects"] == 3
    new = dataset / "sub-04" / "ses-pre" / "anat"
    save(new / f"sub-04_ses-pre_space-{SPACE}_label-lesion_mask.nii.gz",
         (rng.random(SHAPE) > 0.7).astype("u1"))  # fmt: skip
    script = textwrap.dedent(f"""
        import os, signal
        from nipype_heatmap.io import writing
        from nipype_heatmap.cli.bids import main
        original = writing.Temporary.rename
        def rename(self):
            original(self)
            os.kill(os.getpid(), signal.SIGKILL)  # killed right after the first rename
        writing.Temporary.rename = rename
        main({argv!r})
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    n_map = int(
        re.search(rb"sum of (\d+) volumes", nb.load(f"{stem}.nii.gz").header["descrip"].tobytes())[
            1
        ]
    )
    assert (n_map, _sidecar(f"{stem}.nii.gz")["NumberOfSubjects"]) == (4, 3)  # half renamed
    assert list(out.glob(".nipype_heatmap-commit-*.json"))  # the journal says so
    recover_interrupted_commits(out)  # what the next run into this folder does first
    side = _sidecar(f"{stem}.nii.gz")
    assert side["NumberOfSubjects"] == 4 and len(side["Sources"]) == 4
    assert not list(out.glob(".nipype_heatmap-commit-*.json"))
    assert validator_errors(out) == []


# -- 10. the report: kind and space wired ---------------------------------------------------------
def test_each_map_s_report_gets_its_kind_and_space(lesion_index, fp_index, tmp_path, monkeypatch):
    calls = []

    def fake(img, **kwargs):
        calls.append((np.asanyarray(img.dataobj).copy(), kwargs))
        return {"html": b"<html></html>", "png": b"\x89PNG"}

    monkeypatch.setattr("nipype_heatmap.report.render_map_report", fake)
    out = tmp_path / "deriv"
    gm = select_bids_maps(fp_index, suffix="probseg", label="GM", res="2", session="pre")
    pre = select_bids_inputs(lesion_index, label="lesion", session="pre")
    average = select_bids_inputs(lesion_index, label="lesion", several_per_subject="average")
    [prob] = write_group_maps(gm, out, report=True)
    [count] = write_group_maps([pre], out, options=COUNT, report=True)
    write_group_maps([average], out, options=COUNT, report=True)
    main([str(lesion_index.root), str(out), "group", "--label", "lesion", "--session", "pre",
          "--group-column", "aphasia", "--group-a", "yes", "--report", "-q"])  # fmt: skip
    kinds = [(c[1]["kind"], c[1]["space"], c[1]["underlay"]) for c in calls]
    assert kinds == [("probability", SPACE, None), ("count", SPACE, None),
                     ("value", SPACE, None), ("signed", SPACE, None)]  # fmt: skip
    assert calls[1][1]["units"] == "count (number of subjects)"
    assert calls[0][1]["title"] == Path(prob["heatmap"]).name.removesuffix(".nii.gz")
    assert calls[0][1]["sources"][0].startswith("bids:fmriprep:sub-01/ses-pre/")
    assert Path(count["report"]).read_bytes() == b"<html></html>"
    assert Path(count["figure"]).parent.name == "figures"
    assert validator_errors(out) == []


def test_a_real_report_draws_a_probability_map_over_the_template(fp_index, tmp_path):
    pytest.importorskip("nilearn", reason="the report needs the 'report' extra")
    gm = select_bids_maps(fp_index, suffix="probseg", label="GM", res="2", session="pre")
    [written] = write_group_maps(gm, tmp_path / "deriv", report=True)
    page = Path(written["report"]).read_text()
    assert "A probability map: colour from 0 to 1" in page
    assert "Underlay: the MNI152 template shipped with nilearn" in page
    assert "one file per subject: each subject counts once" in page
    assert Path(written["figure"]).read_bytes()[:4] == b"\x89PNG"
    assert validator_errors(tmp_path / "deriv") == []


# -- the atlas: label names by inheritance --------------------------------------------------------
def test_atlas_labels_are_named_by_the_dseg_tsv_that_applies(fmriprep, tmp_path):
    out = tmp_path / "deriv"
    argv = [str(fmriprep), str(out), "group", "--atlas", "Tissue", "--space", SPACE, "--res",
            "2", "--session", "pre", "-q"]  # fmt: skip
    assert main(argv) == 0
    stem = f"ses-pre_space-{SPACE}_atlas-Tissue_res-2"
    rows = (out / f"{stem}_dseg.tsv").read_text().splitlines()
    assert [r.split("\t")[1] for r in rows[1:]] == ["GM", "WM", "CSF"]  # root dseg.tsv
    side = json.loads((out / f"{stem}_desc-th25_dseg.json").read_text())
    assert side["LabelTable"] == str(fmriprep / "dseg.tsv")
    assert side["SpatialReference"].endswith("tpl-MNI152NLin2009cAsym_res-02_T1w.nii.gz")
    table = tmp_path / "tissues.tsv"
    table.write_text("index\tname\n1\tgrey\n2\twhite\n3\tfluid\n")
    assert main([*argv, "--label-table", str(table), "--overwrite"]) == 0
    rows = (out / f"{stem}_dseg.tsv").read_text().splitlines()
    assert [r.split("\t")[1] for r in rows[1:]] == ["grey", "white", "fluid"]
    assert validator_errors(out) == []


def test_cohort_maps_of_several_labels_in_one_plan(fp_index, tmp_path):
    selections = select_bids_maps(
        fp_index, suffix="probseg", label=["GM", "WM"], res="2", session="pre"
    )
    cohort = CohortOptions(coverage=True, std=True, min_fraction=0.5)
    written = write_group_maps(selections, tmp_path / "deriv", cohort=cohort)
    for selection, maps in zip(selections, written, strict=True):
        data = np.array([nb.load(f).get_fdata() for f in selection.files])
        assert_allclose(_data(maps["heatmap"]), data.mean(axis=0), rtol=1e-6)
        assert_allclose(_data(maps["std"]), data.std(axis=0, ddof=1), rtol=1e-5)
        assert_array_equal(_data(maps["mincount"]), (data != 0).sum(axis=0) >= 2)
        assert Path(maps["table"]).name.endswith("_heatmap.tsv")
        assert _sidecar(maps["mincount"])["MinimumCount"] == 2
        std = _sidecar(maps["std"])
        assert std["DeltaDegreesOfFreedom"] == 1 and std["Statistic"] == "std"
        assert std["SpatialReference"].endswith("_res-02_T1w.nii.gz")
    assert validator_errors(tmp_path / "deriv") == []


def test_a_desc_that_is_not_a_bids_label_is_refused(lesion_index, tmp_path, no_reading):
    pre = select_bids_inputs(lesion_index, label="lesion", session="pre")
    with pytest.raises(ValueError, match="'lesion_count' is not a BIDS label"):
        write_group_maps([pre], tmp_path / "deriv", out_desc="lesion_count")
