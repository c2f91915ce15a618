"""BIDS out: names that never collide, no silent overwrite, provenance that resolves,
validator-clean datasets, and the command and workflow that write them.

Written against the first BIDS layer and ported to the reworked one (issue 27): maps a
node made are stored with :func:`~nipype_heatmap.bids.store_group_maps` (the sink's run),
names come from :mod:`nipype_heatmap.bids.naming`. Where issue 27 changed a behaviour on
purpose (names carry the selection and the weighting, SpatialReference is a TemplateFlow
URL, the dataset's GeneratedBy holds this tool only, native spaces need
--allow-native-space, units count subjects), the expectation follows it and says so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose

from nipype_heatmap.api import compute_heatmap, write_cohort_maps, write_heatmap
from nipype_heatmap.bids import BIDSSelection, select_bids_inputs, store_group_maps
from nipype_heatmap.bids.naming import map_stem
from nipype_heatmap.cli.bids import main
from nipype_heatmap.interfaces import HeatmapDerivativesSink
from nipype_heatmap.options import CohortOptions, MapOptions
from nipype_heatmap.workflows import init_bids_heatmap_wf

from .bids_trees import validator_errors
from .conftest import SHAPE
from .test_bids import FMRIPREP, SPACE, _save, make_fmriprep_like
from .test_cli import as_if_not_installed

pytest.importorskip("bids", reason="BIDS selection needs the 'bids' extra (pybids)")


@pytest.fixture
def datasets(tmp_path, rng):
    """An fMRIPrep-like dataset and a second one of lesion masks, side by side."""
    fmriprep = make_fmriprep_like(tmp_path / "derivatives" / "fmriprep", rng)
    lesions = tmp_path / "derivatives" / "lesions"
    lesions.mkdir()
    (lesions / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "lesion tracings",
                "BIDSVersion": "1.10.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "ITK-SNAP", "Version": "4.0"}],
            }
        )
    )
    for sub in ("01", "02", "03"):
        mask = (rng.random(SHAPE) > 0.7).astype(np.uint8)
        _save(
            lesions / f"sub-{sub}" / "anat" / f"sub-{sub}_space-{SPACE}_label-lesion_mask.nii.gz",
            mask,
        )
    return fmriprep, lesions


#: SpatialReference of MNI152NLin2009cAsym maps (TemplateFlow URLs, as fMRIPrep writes them).
TEMPLATE = "https://templateflow.s3.amazonaws.com/tpl-{0}/tpl-{0}_res-{1}_T1w.nii.gz"
REFERENCE_RES_02 = TEMPLATE.format(SPACE, "02")
REFERENCE_RES_01 = TEMPLATE.format(SPACE, "01")  # inputs without res: the template's frame

_OPTIONS = ("use_mean", "clip_to_input_range", "normalize")


def _store(heatmap, out_dir, selection, **flags):
    """Store a map a node made, as the sink does: role (heatmap, heatmap_sidecar, report,
    figure) -> path. ``flags``: the map's options and the run's (overwrite, command,
    report, out_desc)."""
    options = MapOptions(**{k: v for k, v in flags.items() if k in _OPTIONS})
    rest = {k: v for k, v in flags.items() if k not in _OPTIONS}
    [written] = store_group_maps(
        [{"heatmap": str(heatmap)}], [selection], out_dir, options=options, **rest
    )
    return written


def _write(selection, out_dir, tmp_path, **flags):
    heatmap = write_heatmap(
        selection.files,
        tmp_path / "tmp" / "h.nii.gz",
        **{k: v for k, v in flags.items() if k in _OPTIONS},
    )
    return _store(heatmap, out_dir, selection, **flags)


# -- names -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("use_mean", "clip", "normalize", "suffix", "expected"),
    [
        (True, True, False, "mask", ("mean", "probseg")),
        (True, True, False, "probseg", ("mean", "probseg")),
        (True, True, False, "T1w", ("mean", "heatmap")),
        (True, True, True, "mask", ("meanNorm", "heatmap")),
        (False, True, False, "mask", ("union", "mask")),
        (False, True, False, "probseg", ("clippedSum", "heatmap")),
        (False, False, False, "mask", ("count", "heatmap")),
        (False, False, False, "probseg", ("sum", "heatmap")),
        (False, False, True, "mask", ("countNorm", "heatmap")),
    ],
)
def test_only_probabilities_are_named_probseg(use_mean, clip, normalize, suffix, expected):
    assert MapOptions(use_mean, clip, normalize).bids_kind(suffix) == expected


def test_different_selections_never_share_a_name(datasets):
    fmriprep, _ = datasets
    selections = [
        select_bids_inputs(fmriprep, desc="brain", datatype="anat", res="2"),
        select_bids_inputs(fmriprep, desc="brain", datatype="anat", res="1"),
        select_bids_inputs(fmriprep, desc="brain", datatype="func", res="2", run="1"),
        select_bids_inputs(
            fmriprep, desc="brain", datatype="func", res="2", several_per_subject="each-file"
        ),
        select_bids_inputs(fmriprep, suffix="probseg", res="2", label="GM"),
        select_bids_inputs(fmriprep, suffix="probseg", res="2", label="WM"),
    ]
    names = []
    for selection in selections:
        for flags in ({}, {"use_mean": False}, {"use_mean": False, "clip_to_input_range": False}):
            names.append(map_stem(selection, MapOptions(**flags)))
    assert len(set(names)) == len(names), names
    assert names[0] == f"space-{SPACE}_res-2_desc-meanBrainMask_probseg"
    assert names[6] == f"task-rest_run-1_space-{SPACE}_res-2_desc-meanBrainMask_probseg"
    # both runs, each file once: the weighting is in the name (issue 27)
    assert names[9] == f"task-rest_space-{SPACE}_res-2_desc-meanBrainMaskEachFile_probseg"


def test_an_existing_map_from_other_inputs_is_not_replaced(datasets, tmp_path):
    # A subset of the participants has a name of its own now (desc ...Subset<hash>, issue
    # 27); an --out-desc given to both gives them one name, and the refusal is as before.
    fmriprep, _ = datasets
    out = tmp_path / "group"
    everyone = select_bids_inputs(fmriprep, suffix="probseg", res="2", label="GM")
    first = _write(everyone, out, tmp_path, out_desc="gm")
    before = Path(first["heatmap"]).read_bytes()
    _write(everyone, out, tmp_path, out_desc="gm")  # a re-run with the same inputs: fine
    some = select_bids_inputs(
        fmriprep, suffix="probseg", res="2", label="GM", participant_label=["01", "02"]
    )
    with pytest.raises(FileExistsError, match="Sources differ.*--overwrite"):
        _write(some, out, tmp_path, out_desc="gm")
    assert Path(first["heatmap"]).read_bytes() == before
    replaced = _write(some, out, tmp_path, out_desc="gm", overwrite=True)
    assert json.loads(Path(replaced["heatmap_sidecar"]).read_text())["NumberOfInputs"] == 2


# -- provenance --------------------------------------------------------------------------
def test_provenance_resolves_for_two_input_datasets(datasets, tmp_path):
    fmriprep, lesions = datasets
    out = tmp_path / "derivatives" / "nipype_heatmap"
    gm = _write(
        select_bids_inputs(fmriprep, suffix="probseg", res="2", label="GM"),
        out,
        tmp_path,
        command="test gm",
    )
    lesion = _write(
        select_bids_inputs(lesions, label="lesion"),
        out,
        tmp_path,
        use_mean=False,
        clip_to_input_range=False,
    )
    description = json.loads((out / "dataset_description.json").read_text())
    links = description["DatasetLinks"]
    assert links == {"fmriprep": "../fmriprep", "lesions": "../lesions"}
    assert {s["URL"] for s in description["SourceDatasets"]} == {"bids:fmriprep:", "bids:lesions:"}
    # GeneratedBy is this tool only; the inputs' pipelines are in SourceDatasets (issue 27)
    assert [g["Name"] for g in description["GeneratedBy"]] == ["nipype_heatmap"]
    versions = {s["URL"]: s.get("Version") for s in description["SourceDatasets"]}
    assert versions == {
        "bids:fmriprep:": f"{FMRIPREP['Name']} {FMRIPREP['Version']}",
        "bids:lesions:": "ITK-SNAP 4.0",
    }
    for outputs, link, n, reference in (
        (gm, "fmriprep", 4, REFERENCE_RES_02),
        (lesion, "lesions", 3, REFERENCE_RES_01),
    ):
        sidecar = json.loads(Path(outputs["heatmap_sidecar"]).read_text())
        assert len(sidecar["Sources"]) == n
        for uri in sidecar["Sources"]:
            scheme, name, relative = uri.split(":", 2)
            assert (scheme, name) == ("bids", link)
            assert (out / links[name] / relative).resolve().is_file()
        assert sidecar["SpatialReference"] == reference  # a URL that resolves (issue 27)
    gm_sidecar = json.loads(Path(gm["heatmap_sidecar"]).read_text())
    assert gm_sidecar["Resolution"] == {"2": "voxels of 2 x 2 x 2 mm"}
    assert gm_sidecar["GeneratedBy"][0]["CommandLine"] == "test gm"
    assert "Resolution" not in json.loads(Path(lesion["heatmap_sidecar"]).read_text())
    assert lesion["heatmap"].endswith(f"space-{SPACE}_label-lesion_desc-countMask_heatmap.nii.gz")
    assert validator_errors(out) == []


def test_a_link_name_taken_by_another_dataset_gets_a_new_name(datasets, tmp_path, rng):
    fmriprep, _ = datasets
    elsewhere = make_fmriprep_like(tmp_path / "site2" / "fmriprep", rng)
    out = tmp_path / "derivatives" / "nipype_heatmap"
    _write(select_bids_inputs(fmriprep, suffix="probseg", res="2", label="GM"), out, tmp_path)
    second = _write(
        select_bids_inputs(elsewhere, suffix="probseg", res="2", label="WM"), out, tmp_path
    )
    links = json.loads((out / "dataset_description.json").read_text())["DatasetLinks"]
    assert links["fmriprep"] == "../fmriprep" and links["fmriprep2"] == "../../site2/fmriprep"
    sources = json.loads(Path(second["heatmap_sidecar"]).read_text())["Sources"]
    assert sources[0].startswith("bids:fmriprep2:")


def test_stale_root_map_is_not_an_input_and_writing_into_the_input_is_refused(datasets, tmp_path):
    fmriprep, _ = datasets
    selection = select_bids_inputs(fmriprep, desc="brain", datatype="anat", res="2")
    with pytest.raises(ValueError, match="inside the input dataset"):
        _write(selection, fmriprep, tmp_path)
    with pytest.raises(ValueError, match="inside the input dataset"):
        _write(selection, fmriprep / "group", tmp_path)
    inner = _write(selection, fmriprep / "derivatives" / "nipype_heatmap", tmp_path)
    assert Path(inner["heatmap"]).exists()
    again = select_bids_inputs(fmriprep, desc="brain", datatype="anat", res="2")
    assert again.files == selection.files


# -- the command, the interface, the workflow ----------------------------------------------
def test_command_with_report_is_validator_clean(datasets, tmp_path, capsys):
    fmriprep, _ = datasets
    out = tmp_path / "derivatives" / "nipype_heatmap"
    argv = [str(fmriprep), str(out), "group", "--suffix", "probseg", "--label", "GM", "--res", "2"]
    assert main([*argv, "--space", SPACE, "--report", "-q"]) == 0
    stem = f"space-{SPACE}_res-2_label-GM_desc-meanProbseg_probseg"
    printed = capsys.readouterr().out
    assert str(out / f"{stem}.nii.gz") in printed and str(out / f"{stem}.html") in printed
    selection = select_bids_inputs(fmriprep, suffix="probseg", res="2", label="GM")
    assert_allclose(
        nb.load(out / f"{stem}.nii.gz").get_fdata(), compute_heatmap(selection.files).get_fdata()
    )
    sidecar = json.loads((out / f"{stem}.json").read_text())
    assert sidecar["GeneratedBy"][0]["CommandLine"].startswith("nipype-heatmap-bids ")
    assert "--label GM" in sidecar["GeneratedBy"][0]["CommandLine"]
    assert (out / "figures" / f"{stem}.png").stat().st_size > 20_000
    assert not list((out / "figures").glob("*.svg"))
    assert validator_errors(out) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--participant-label", "01", "09"], "sub-09"),
        (["--label", "CSF"], "no file matches"),
        ([], "mixes label values"),
    ],
    ids=["missing-subject", "empty", "mixed-labels"],
)
def test_command_errors_write_nothing(datasets, tmp_path, capsys, extra, message):
    fmriprep, _ = datasets
    out = tmp_path / "out"
    argv = [str(fmriprep), str(out), "group", "--suffix", "probseg", "--res", "2"]
    if extra and extra[0] == "--participant-label":
        extra = [*extra, "--label", "GM"]
    assert main([*argv, *extra, "-q"]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("module", "extra", "flags"),
    [
        ("bids", "bids", []),
        ("nilearn", "report", ["--report"]),
        ("matplotlib", "report", ["--report"]),
    ],
    ids=["pybids", "nilearn", "matplotlib"],
)
def test_a_missing_extra_says_what_to_install_and_nothing_is_written(
    datasets, tmp_path, capsys, monkeypatch, module, extra, flags
):
    # pybids for any selection, the report's packages for --report: one line naming the
    # package and the extra to install, exit 1, not an "unexpected" error; checked before
    # anything is written (mutant: the report's packages imported after the map is
    # written, leaving a map and a dataset behind a failed command).
    fmriprep, _ = datasets
    out = tmp_path / "derivatives" / "nipype_heatmap"
    as_if_not_installed(monkeypatch, module)
    argv = [str(fmriprep), str(out), "group", "--suffix", "probseg", "--label", "GM"]
    assert main([*argv, "--res", "2", *flags, "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected" not in err and "Traceback" not in err
    assert f"needs the Python package {module!r}: pip install 'nipype_heatmap[{extra}]'" in err
    assert not out.exists()


def test_sink_interface_takes_the_selection_as_plain_data(datasets, tmp_path):
    fmriprep, _ = datasets
    selection = select_bids_inputs(fmriprep, suffix="probseg", res="2", label="WM")
    heatmap = tmp_path / "h.nii.gz"
    compute_heatmap(selection.files, normalize=True).to_filename(heatmap)
    res = HeatmapDerivativesSink(
        in_files=[str(heatmap)],
        selections=[selection.as_dict()],
        output_dir=str(tmp_path / "deriv"),
        normalize=True,
    ).run(cwd=str(tmp_path))
    [out_file] = res.outputs.out_files
    assert out_file.endswith(f"space-{SPACE}_res-2_label-WM_desc-meanNormProbseg_heatmap.nii.gz")
    sidecar = json.loads(open(res.outputs.out_sidecars[0]).read())
    assert sidecar["Normalized"] is True
    # no command given: the sink names itself as what wrote the map
    assert sidecar["GeneratedBy"][0]["CommandLine"] == (
        "nipype_heatmap.interfaces.HeatmapDerivativesSink"
    )


def test_sink_records_the_command_it_is_given_for_the_map_and_its_cohort_maps(
    lesion_cohort, tmp_path
):
    selection = select_bids_inputs(lesion_cohort, suffix="mask", label="lesion")
    written = write_cohort_maps(
        selection.files, tmp_path / "h.nii.gz", cohort=CohortOptions(coverage=True)
    )
    res = HeatmapDerivativesSink(
        in_files=[written["heatmap"]],
        selections=[selection.as_dict()],
        output_dir=str(tmp_path / "deriv"),
        coverage_file=[written["coverage"]],
        command="my_pipeline.py --group all",
    ).run(cwd=str(tmp_path))
    for path in (res.outputs.out_sidecars[0], res.outputs.out_cohort[0]["coverage"]):
        sidecar = json.loads(Path(path).with_suffix("").with_suffix(".json").read_text())
        assert sidecar["GeneratedBy"][0]["CommandLine"] == "my_pipeline.py --group all", path


def test_workflow_writes_a_validator_clean_derivative(datasets, tmp_path):
    fmriprep, _ = datasets
    wf = init_bids_heatmap_wf(
        space=SPACE,
        desc="brain",
        bids_filters={"datatype": "func", "res": "2"},
        several_per_subject="each-file",
        generate_report=True,
    )
    wf.base_dir = str(tmp_path / "work")
    wf.inputs.inputnode.bids_dir = str(fmriprep)
    wf.inputs.inputnode.output_dir = str(tmp_path / "deriv")
    wf.run()
    # both runs, each file once: the weighting is in the name (issue 27)
    stem = f"task-rest_space-{SPACE}_res-2_desc-meanBrainMaskEachFile_probseg"
    sidecar = json.loads((tmp_path / "deriv" / f"{stem}.json").read_text())
    assert sidecar["NumberOfInputs"] == 8 and sidecar["SeveralFilesPerSubject"] is True
    assert (tmp_path / "deriv" / f"{stem}.html").exists()
    assert validator_errors(tmp_path / "deriv") == []


@pytest.fixture
def lesion_cohort(tmp_path, rng):
    """Six subjects' lesion masks and a participants.tsv with a deficit column."""
    root = tmp_path / "derivatives" / "lesions"
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "lesions", "BIDSVersion": "1.10.0", "DatasetType": "derivative"})
    )
    rows = ["participant_id\taphasia"]
    for i, value in enumerate(["yes", "no", "yes", "n/a", "no", "yes"], start=1):
        sub = f"{i:02d}"
        mask = (rng.random(SHAPE) > 0.6).astype(np.uint8)
        _save(root / f"sub-{sub}" / "anat" / f"sub-{sub}_space-{SPACE}_label-lesion_mask.nii.gz",
              mask)  # fmt: skip
        rows.append(f"sub-{sub}\t{value}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_cohort_maps_are_bids_derivatives_with_their_own_names(lesion_cohort, tmp_path):
    out = tmp_path / "derivatives" / "nipype_heatmap"
    argv = [str(lesion_cohort), str(out), "group", "--label", "lesion", "-q"]
    assert main([*argv, "--coverage", "--std", "--min-count", "2"]) == 0
    stem = f"space-{SPACE}_label-lesion_desc-{{}}Mask_{{}}"
    expected = {
        "coverage": stem.format("coverage", "heatmap"),
        "std": stem.format("std", "heatmap"),
        "variance": stem.format("variance", "heatmap"),
        "overlap": stem.format("nonzero", "heatmap"),
        "mincount": stem.format("mincount2", "mask"),
    }
    files = sorted(str(p) for p in lesion_cohort.rglob("sub-*_mask.nii.gz"))
    reference = write_cohort_maps(
        files,
        tmp_path / "ref" / "r.nii.gz",
        cohort=CohortOptions(coverage=True, std=True, min_count=2),
    )
    for name, name_stem in expected.items():
        got = nb.load(out / f"{name_stem}.nii.gz")
        want = nb.load(reference[name])
        np.testing.assert_array_equal(np.asanyarray(got.dataobj), np.asanyarray(want.dataobj))
        sidecar = json.loads((out / f"{name_stem}.json").read_text())
        assert sidecar["Statistic"] == name and sidecar["NumberOfInputs"] == 6
        assert sidecar["Sources"][0].startswith("bids:lesions:sub-01/")
    assert json.loads((out / f"{expected['std']}.json").read_text())["DeltaDegreesOfFreedom"] == 1
    assert json.loads((out / f"{expected['mincount']}.json").read_text())["MinimumCount"] == 2
    table = (out / f"{expected['overlap']}.tsv").read_text()
    assert table == Path(reference["table"]).read_text()
    assert (out / f"space-{SPACE}_label-lesion_desc-meanMask_probseg.nii.gz").exists()
    # a re-run with another k is another file; the same names from other inputs are
    # refused (a subject added since); a subset of the participants has names of its own
    # (desc ...Subset<hash>, issue 27)
    assert main([*argv, "--min-count", "3"]) == 0
    assert (out / f"{stem.format('mincount3', 'mask')}.nii.gz").exists()
    coverage = (out / f"{expected['coverage']}.nii.gz").read_bytes()
    _save(
        lesion_cohort / "sub-07" / "anat" / f"sub-07_space-{SPACE}_label-lesion_mask.nii.gz",
        np.ones(SHAPE, np.uint8),
    )
    assert main([*argv, "--coverage"]) == 1
    assert (out / f"{expected['coverage']}.nii.gz").read_bytes() == coverage
    assert main([*argv, "--participant-label", "01", "02", "--coverage"]) == 0
    assert len(list(out.glob("*_desc-coverageMaskSubset*_heatmap.nii.gz"))) == 1
    assert validator_errors(out) == []


def test_subtraction_by_a_participants_column(lesion_cohort, tmp_path, caplog):
    out = tmp_path / "derivatives" / "nipype_heatmap"
    argv = [str(lesion_cohort), str(out), "group", "--label", "lesion"]
    assert main([*argv, "--group-column", "aphasia", "--group-a", "yes", "--group-b", "no"]) == 0
    files = sorted(str(p) for p in lesion_cohort.rglob("sub-*_mask.nii.gz"))
    yes = [files[i] for i in (0, 2, 5)]
    no = [files[i] for i in (1, 4)]
    percent = {k: np.mean([nb.load(f).get_fdata() for f in v], axis=0) * 100
               for k, v in (("yes", yes), ("no", no))}  # fmt: skip
    stem = f"space-{SPACE}_label-lesion_desc-{{}}Mask_heatmap"
    sub = nb.load(out / f"{stem.format('subtractionAphasiaYesVsNo')}.nii.gz").get_fdata()
    assert_allclose(sub, percent["yes"] - percent["no"], atol=1e-4)
    assert_allclose(
        nb.load(out / f"{stem.format('percentAphasiaNo')}.nii.gz").get_fdata(),
        percent["no"],
        atol=1e-4,
    )
    sidecar = json.loads((out / f"{stem.format('percentAphasiaYes')}.json").read_text())
    assert sidecar["Groups"]["SubjectsA"] == ["01", "03", "06"]
    assert sidecar["Groups"]["SubjectsB"] == ["02", "05"]
    assert len(sidecar["Sources"]) == 5  # sub-04 (n/a) is in neither group
    assert validator_errors(out) == []
    # a value nobody has is an error naming the table
    assert main([*argv, "--group-column", "aphasia", "--group-a", "maybe"]) == 1
    assert main([*argv, "--group-column", "deficit", "--group-a", "yes"]) == 1


def test_bids_workflow_stores_cohort_maps(lesion_cohort, tmp_path):
    out = tmp_path / "derivatives" / "nipype_heatmap"
    wf = init_bids_heatmap_wf(
        space=SPACE, label="lesion", cohort=CohortOptions(coverage=True, min_fraction=0.5)
    )
    wf.base_dir = str(tmp_path / "work")
    wf.inputs.inputnode.bids_dir = str(lesion_cohort)
    wf.inputs.inputnode.output_dir = str(out)
    wf.run()
    stem = f"space-{SPACE}_label-lesion_desc-{{}}Mask_{{}}"
    for name in (("coverage", "heatmap"), ("nonzero", "heatmap"), ("mincount3", "mask")):
        assert (out / f"{stem.format(*name)}.nii.gz").exists(), name
        assert (out / f"{stem.format(*name)}.json").exists(), name
    assert (out / f"{stem.format('nonzero', 'heatmap')}.tsv").exists()
    mask = nb.load(out / f"{stem.format('mincount3', 'mask')}.nii.gz").get_fdata()
    files = sorted(lesion_cohort.rglob("sub-*_mask.nii.gz"))
    count = np.sum([nb.load(f).get_fdata() for f in files], axis=0)
    np.testing.assert_array_equal(mask, count >= 3)  # k = ceil(0.5 * 6)


@pytest.fixture
def lesion_maps(lesion_cohort, tmp_path):
    """The lesion cohort's selection and its heatmap and cohort maps (in tmp_path/maps)."""
    selection = select_bids_inputs(lesion_cohort, suffix="mask", label="lesion")
    (tmp_path / "maps").mkdir()
    maps = write_cohort_maps(
        selection.files,
        tmp_path / "maps" / "h.nii.gz",
        cohort=CohortOptions(coverage=True, std=True, min_count=2),
    )
    return selection, maps


def test_a_group_map_with_the_defaults_and_the_dataset_files_around_it(
    lesion_maps, lesion_cohort, tmp_path
):
    _, maps = lesion_maps
    about = lesion_cohort / "dataset_description.json"
    tracer = {"Name": "ITK-SNAP", "Version": "4.0"}
    about.write_text(json.dumps({**json.loads(about.read_text()), "GeneratedBy": [tracer]}))
    selection = select_bids_inputs(lesion_cohort, suffix="mask", label="lesion")
    out = tmp_path / "deriv"
    first = _store(maps["heatmap"], out, selection)  # every default
    assert first["heatmap"].endswith(f"space-{SPACE}_label-lesion_desc-meanMask_probseg.nii.gz")
    assert "report" not in first and not list(out.glob("*.html"))  # no report unasked
    sidecar = json.loads(Path(first["heatmap_sidecar"]).read_text())
    # the subjects and how they are weighed are stated (issue 27)
    assert sidecar["Description"] == (
        f"Voxel-wise mean of 6 lesion mask volumes of 6 subjects in {SPACE} space (one file "
        "per subject: each subject counts once) (the fraction of subjects at each voxel), "
        "clipped to the inputs' value range. Made with nipype_heatmap."
    )
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["Name"] == "nipype_heatmap group maps"  # BIDS requires one
    readme = out / "README.md"
    assert "nipype_heatmap group maps" in readme.read_text()
    readme.write_text("# Our lab's lesion maps\n")  # the user's own words stay
    _store(maps["heatmap"], out, selection, use_mean=False)
    assert readme.read_text() == "# Our lab's lesion maps\n"
    description = json.loads((out / "dataset_description.json").read_text())
    generated = description["GeneratedBy"]
    assert len(generated) == len({json.dumps(g, sort_keys=True) for g in generated})  # once each
    assert [g["Name"] for g in generated].count("nipype_heatmap") == 1
    # the inputs' pipeline is in SourceDatasets, not GeneratedBy (issue 27): listed once
    # after two maps
    assert tracer not in generated
    sources = description["SourceDatasets"]
    assert [s for s in sources if s["URL"] == "bids:lesions:"] == [
        {"URL": "bids:lesions:", "Version": "ITK-SNAP 4.0"}
    ]


def test_a_desc_that_is_not_a_bids_label_is_refused():
    entities = {"space": SPACE, "label": "lesion", "suffix": "mask"}
    selection = BIDSSelection([], "/d", [], entities)
    assert "_desc-lesionCount_" in map_stem(selection, out_desc="lesionCount")
    with pytest.raises(ValueError, match="'lesion_count' is not a BIDS label"):
        map_stem(selection, out_desc="lesion_count")


@pytest.mark.parametrize(
    ("flags", "units"),
    [
        ({}, "probability (fraction of subjects)"),
        ({"use_mean": False, "clip_to_input_range": False}, "count (number of subjects)"),
        ({"normalize": True}, "normalized value (0 to 1)"),
    ],
)
def test_the_report_names_the_map_s_units_and_lists_its_parameters(
    lesion_maps, tmp_path, flags, units
):
    # the units count subjects, the unit of a group map (issue 27)
    selection, maps = lesion_maps
    outputs = _store(maps["heatmap"], tmp_path / "deriv", selection, report=True, **flags)
    page = Path(outputs["report"]).read_text()
    assert f"Colour: {units};" in page
    # the parameters table lists the map's parameters (not its sources and description)
    assert "aggregation (mean: probability; sum: count)" in page
    assert "number of inputs" in page


def test_cohort_derivatives_with_the_defaults(lesion_maps, lesion_cohort, tmp_path):
    # The sink stores cohort maps with their heatmap (std comes with its variance).
    selection, maps = lesion_maps
    out = tmp_path / "not" / "yet" / "there"  # made, with its parents
    node_maps = {name: maps[name] for name in ("heatmap", "std", "variance")}
    [written] = store_group_maps([node_maps], [selection], out, cohort=CohortOptions(std=True))
    sidecar_file = Path(written["std_sidecar"])
    assert sidecar_file == Path(written["std"]).with_suffix("").with_suffix(".json")
    sidecar = json.loads(sidecar_file.read_text())
    assert sidecar["DeltaDegreesOfFreedom"] == 1
    assert sidecar["SpatialReference"] == REFERENCE_RES_01  # a TemplateFlow URL (issue 27)
    assert f"subjects in {SPACE} space" in sidecar["Description"]
    # the same name from other inputs (a subject added since; a subset of the participants
    # has names of its own now) is refused unless overwrite is asked for; the heatmap gets
    # another desc, so that the std map is the one in the way
    _save(
        lesion_cohort / "sub-07" / "anat" / f"sub-07_space-{SPACE}_label-lesion_mask.nii.gz",
        np.ones(SHAPE, np.uint8),
    )
    more = select_bids_inputs(lesion_cohort, suffix="mask", label="lesion")
    assert more.subjects[-1] == "07"
    with pytest.raises(FileExistsError, match=re.escape(written["std"])):
        store_group_maps([node_maps], [more], out, cohort=CohortOptions(std=True), out_desc="more")
    assert json.loads(sidecar_file.read_text()) == sidecar


# -- the command's options reach the selection and the names ------------------------------
@pytest.mark.parametrize("run", ["1", "2"])
def test_run_reaches_the_selection_and_the_name(datasets, tmp_path, capsys, run):
    # Two runs per subject: without --run reaching the selection, the command refuses
    # (several files per subject); with it, the run's four masks, named run-<n>.
    fmriprep, _ = datasets
    out = tmp_path / "derivatives" / "nipype_heatmap"
    argv = [str(fmriprep), str(out), "group", "--datatype", "func", "--desc", "brain"]
    assert main([*argv, "--res", "2", "--run", run, "-q"]) == 0
    stem = f"task-rest_run-{run}_space-{SPACE}_res-2_desc-meanBrainMask_probseg"
    assert capsys.readouterr().out.strip() == str(out / f"{stem}.nii.gz")
    sidecar = json.loads((out / f"{stem}.json").read_text())
    assert sidecar["NumberOfInputs"] == 4
    assert all(f"_run-{run}_" in uri for uri in sidecar["Sources"])
    files = sorted(str(p) for p in fmriprep.rglob(f"*_run-{run}_*_desc-brain_mask.nii.gz"))
    assert_allclose(
        nb.load(out / f"{stem}.nii.gz").get_fdata(), compute_heatmap(files).get_fdata()
    )


@pytest.mark.parametrize(("fraction", "k"), [("0.5", 3), ("0.2", 2), ("1", 6)])
def test_min_fraction_reaches_the_mask_and_its_name(lesion_cohort, tmp_path, fraction, k):
    # k = ceil(F * 6) names the mask, its sidecar and its content (mutants: the option
    # dropped on the way, or k taken as F).
    out = tmp_path / "derivatives" / "nipype_heatmap"
    argv = [str(lesion_cohort), str(out), "group", "--label", "lesion", "-q"]
    assert main([*argv, "--min-fraction", fraction]) == 0
    stem = f"space-{SPACE}_label-lesion_desc-mincount{k}Mask_mask"
    assert [p.name for p in out.glob("*mincount*.nii.gz")] == [f"{stem}.nii.gz"]
    assert json.loads((out / f"{stem}.json").read_text())["MinimumCount"] == k
    files = sorted(lesion_cohort.rglob("sub-*_mask.nii.gz"))
    count = np.sum([nb.load(f).get_fdata() for f in files], axis=0)
    np.testing.assert_array_equal(nb.load(out / f"{stem}.nii.gz").get_fdata(), count >= k)


@pytest.mark.parametrize("space", [None, "T1w"], ids=["no-space", "space-T1w"])
def test_a_map_in_a_native_space_is_not_given_a_template_name(tmp_path, rng, space):
    # SpatialReference is a template's TemplateFlow URL only for standard spaces; for a
    # native space (no space entity, or space-T1w), allowed with --allow-native-space, it
    # is the first input, as a BIDS URI.
    root = tmp_path / "derivatives" / "native"
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "native", "BIDSVersion": "1.10.0", "DatasetType": "derivative"})
    )
    entity = f"_space-{space}" if space else ""
    for sub in ("01", "02"):
        name = f"sub-{sub}{entity}_label-lesion_mask.nii.gz"
        _save(root / f"sub-{sub}" / "anat" / name, (rng.random(SHAPE) > 0.5).astype(np.uint8))
    out = tmp_path / "derivatives" / "nipype_heatmap"
    argv = [str(root), str(out), "group", "--label", "lesion", "--coverage", "-q"]
    assert main(argv) == 1  # refused unless asked for (issue 27: template spaces only)
    assert not out.exists()
    assert main([*argv, "--allow-native-space"]) == 0
    sidecars = sorted(out.glob("*.json"))
    assert len(sidecars) == 3  # the map, the coverage map, dataset_description.json
    for path in sidecars:
        content = json.loads(path.read_text())
        if path.name == "dataset_description.json":
            continue
        assert content["SpatialReference"] == content["Sources"][0], path.name
        assert content["SpatialReference"].startswith("bids:native:sub-01/anat/sub-01")
        assert content["SpatialReference"] != space
    assert validator_errors(out) == []


def test_n_a_and_missing_subjects_are_in_neither_group(lesion_cohort, tmp_path):
    # Group B defaults to "any other value": never n/a, an empty value or a subject
    # without a row, which say nothing about the column (mutant: n/a counted in "not A").
    table = tmp_path / "participants.tsv"
    table.write_text(
        "participant_id\taphasia\n"
        "sub-01\tyes\nsub-02\tno\nsub-03\tyes\nsub-04\tn/a\nsub-05\t\n"  # sub-06: no row
    )
    out = tmp_path / "derivatives" / "nipype_heatmap"
    argv = [str(lesion_cohort), str(out), "group", "--label", "lesion", "-q"]
    argv += ["--group-column", "aphasia", "--group-a", "yes", "--participants-tsv", str(table)]
    assert main(argv) == 0
    stem = f"space-{SPACE}_label-lesion_desc-{{}}Mask_heatmap"
    sidecar = json.loads((out / f"{stem.format('percentAphasiaNotYes')}.json").read_text())
    assert sidecar["Groups"]["GroupB"] == "not yes"
    assert sidecar["Groups"]["SubjectsA"] == ["01", "03"]
    assert sidecar["Groups"]["SubjectsB"] == ["02"]
    assert len(sidecar["Sources"]) == 3
    files = sorted(str(p) for p in lesion_cohort.rglob("sub-*_mask.nii.gz"))
    percent_b = nb.load(out / f"{stem.format('percentAphasiaNotYes')}.nii.gz").get_fdata()
    assert_allclose(percent_b, nb.load(files[1]).get_fdata() * 100, atol=1e-4)


def test_the_earlier_name_of_underlay_is_gone(datasets, tmp_path, capsys):
    # --anat was the deprecated name of --underlay; deprecated aliases are gone (0.x).
    fmriprep, _ = datasets
    argv = [str(fmriprep), str(tmp_path / "out"), "group", "--label", "GM"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--anat", str(fmriprep / "x.nii.gz")])
    assert exc.value.code == 2 and "unrecognized arguments: --anat" in capsys.readouterr().err
    from nipype_heatmap.cli.bids import get_parser

    (underlay,) = [a for a in get_parser()._actions if a.dest == "underlay"]
    assert underlay.option_strings == ["--underlay"]
