"""BIDS-App habits (issue 27, point 8) and the Nipype route: the command's options, the
workflow with the same options, the nodes, and the same files either way."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from nipype_heatmap.bids import BIDSIndex, select_bids_maps, write_group_maps
from nipype_heatmap.cli.bids import get_parser, main
from nipype_heatmap.interfaces import HeatmapDerivativesSink, HeatmapVolume, SelectBIDSInputs
from nipype_heatmap.interfaces.bids import HeatmapOfSubjects
from nipype_heatmap.options import CohortOptions, MapOptions
from nipype_heatmap.workflows import init_bids_heatmap_wf

from . import bids_trees
from .bids_trees import SPACE, validator_errors

pytest.importorskip("bids", reason="BIDS selection needs the 'bids' extra (pybids)")


def _same_maps(a: Path, b: Path) -> None:
    """Two output datasets hold the same maps, bit for bit, and the same sidecars but for
    the command line."""
    names = sorted(p.name for p in a.glob("*.nii.gz"))
    assert names and names == sorted(p.name for p in b.glob("*.nii.gz"))
    for name in names:
        one, two = nb.load(a / name), nb.load(b / name)
        assert one.get_data_dtype() == two.get_data_dtype(), name
        assert_array_equal(np.asanyarray(one.dataobj), np.asanyarray(two.dataobj))
        sidecars = [json.loads((d / name.replace(".nii.gz", ".json")).read_text()) for d in (a, b)]
        for side in sidecars:
            side.pop("GeneratedBy")
        assert sidecars[0] == sidecars[1], name


# -- the command's BIDS-App options -------------------------------------------------------------
def test_bids_app_options_are_accepted_and_documented(fmriprep, tmp_path, capsys):
    out = tmp_path / "derivatives" / "nipype_heatmap"
    database = tmp_path / "bids_db"
    argv = [str(fmriprep), str(out), "group", "--participant_label", "01", "sub-02",
            "--bids-database-dir", str(database), "--skip-bids-validation", "--notrack", "-v",
            "--suffix", "probseg", "--label", "GM", "--label", "WM", "--res", "2",
            "--space", SPACE, "--session", "pre"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr()
    maps = sorted(p.name for p in out.glob("*_probseg.nii.gz"))
    assert len(maps) == 2 and "label-GM" in maps[0] and "label-WM" in maps[1]
    assert all("Subset" in m for m in maps)  # two of the three subjects with sessions
    assert "DEBUG:" in printed.err  # -v
    assert list(database.glob("fmriprep-*/nipype_heatmap_index.json"))
    assert validator_errors(out) == []
    help_text = get_parser().format_help()
    for option in ("--participant_label", "-w DIR, --work-dir DIR", "--bids-database-dir",
                   "--skip-bids-validation", "--notrack", "-v, --verbose"):  # fmt: skip
        assert option in help_text
    assert "nothing to skip" in help_text and "sends nothing" in help_text


def test_usage_errors_exit_2(fmriprep, tmp_path, capsys):
    base = [str(fmriprep), str(tmp_path / "out"), "group"]
    for extra in (["--several-per-subject"], ["--min-count", "2", "--min-fraction", "0.5"]):
        with pytest.raises(SystemExit) as err:
            main([*base, *extra])
        assert err.value.code == 2
    assert "average" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(fmriprep), str(tmp_path / "out"), "participant"])


def test_the_work_dir_runs_the_workflow_with_the_same_result(lesions, tmp_path, capsys):
    argv = ["group", "--label", "lesion", "--sum", "--no-clip", "--several-per-subject",
            "average", "--min-count", "2", "-q"]  # fmt: skip
    direct, via = tmp_path / "direct", tmp_path / "via"
    assert main([str(lesions), str(direct), *argv]) == 0
    work = tmp_path / "work"
    assert main([str(lesions), str(via), *argv, "-w", str(work)]) == 0
    _same_maps(direct, via)
    assert list((work / "bids_db").glob("lesions-*"))  # the index is kept in the work folder
    heatmap_result = next(work.rglob("_heatmap0/result__heatmap0.pklz"))
    stamp = heatmap_result.stat().st_mtime_ns
    capsys.readouterr()
    assert main([str(lesions), str(via), *argv, "-w", str(work)]) == 0  # cached node reused
    assert heatmap_result.stat().st_mtime_ns == stamp
    assert validator_errors(via) == []


# -- the workflow ---------------------------------------------------------------------------
def test_the_workflow_takes_the_command_s_options(fmriprep, tmp_path):
    wf = init_bids_heatmap_wf(
        suffix="probseg",
        label=["GM", "WM"],
        res=2,
        space=SPACE,
        session="post",
        participant_label=["01", "02", "03"],
        cohort=CohortOptions(coverage=True),
        bids_database_dir=tmp_path / "db",
    )
    wf.base_dir = str(tmp_path / "work")
    wf.inputs.inputnode.bids_dir = str(fmriprep)
    wf.inputs.inputnode.output_dir = str(tmp_path / "via")
    graph = wf.run()
    sink = next(n for n in graph.nodes() if n.name == "ds_heatmap")
    written = sink.result.outputs.written
    assert [Path(w["heatmap"]).name for w in written] == [
        f"ses-post_space-{SPACE}_res-2_label-{label}_desc-meanProbseg_probseg.nii.gz"
        for label in ("GM", "WM")
    ]
    assert all("coverage" in w for w in written)
    selections = select_bids_maps(
        BIDSIndex(fmriprep), suffix="probseg", label=["GM", "WM"], res="2", space=SPACE,
        session="post",
    )  # fmt: skip
    write_group_maps(selections, tmp_path / "direct", cohort=CohortOptions(coverage=True))
    _same_maps(tmp_path / "direct", tmp_path / "via")
    assert validator_errors(tmp_path / "via") == []


def test_a_rerun_sees_new_subjects_and_rewrites_a_deleted_map(lesions, tmp_path, rng):
    """Nipype caches a node by its inputs' hash: the dataset's listing is not in it (a
    subject added since the last run) and neither is the map written outside the work
    folder (deleted since). The selection and the sink run again anyway."""
    dataset = bids_trees.copy_of(lesions, tmp_path)
    wf = init_bids_heatmap_wf(label="lesion", session="pre", overwrite=True)
    wf.base_dir = str(tmp_path / "work")
    wf.inputs.inputnode.bids_dir = str(dataset)
    wf.inputs.inputnode.output_dir = str(tmp_path / "deriv")
    stem = tmp_path / "deriv" / f"ses-pre_space-{SPACE}_label-lesion_desc-meanMask_probseg"
    wf.run()
    assert json.loads(stem.with_suffix(".json").read_text())["NumberOfSubjects"] == 3
    stem.with_suffix(".nii.gz").unlink()
    wf.run()
    assert stem.with_suffix(".nii.gz").exists()
    new = (
        dataset
        / "sub-04"
        / "ses-pre"
        / "anat"
        / f"sub-04_ses-pre_space-{SPACE}_label-lesion_mask.nii.gz"
    )
    bids_trees.save(new, (rng.random(bids_trees.SHAPE) > 0.7).astype("u1"))
    wf.run()
    assert json.loads(stem.with_suffix(".json").read_text())["NumberOfSubjects"] == 4


def test_the_workflow_averages_a_subject_s_files_like_the_command(lesions, tmp_path):
    wf = init_bids_heatmap_wf(label="lesion", several_per_subject="average", options=MapOptions())
    assert type(wf.get_node("heatmap").interface) is HeatmapOfSubjects
    wf.base_dir = str(tmp_path / "work")
    wf.inputs.inputnode.bids_dir = str(lesions)
    wf.inputs.inputnode.output_dir = str(tmp_path / "via")
    wf.run()
    argv = [str(lesions), str(tmp_path / "direct"), "group", "--label", "lesion",
            "--several-per-subject", "average", "-q"]  # fmt: skip
    assert main(argv) == 0
    _same_maps(tmp_path / "direct", tmp_path / "via")
    assert validator_errors(tmp_path / "via") == []


def test_the_workflow_takes_the_suffix_from_the_filters(fmriprep, tmp_path):
    wf = init_bids_heatmap_wf(
        bids_filters={"suffix": "probseg", "label": "GM", "res": "2", "session": "pre"}
    )
    wf.base_dir = str(tmp_path / "work")
    wf.inputs.inputnode.bids_dir = str(fmriprep)
    wf.inputs.inputnode.output_dir = str(tmp_path / "deriv")
    wf.run()
    assert len(list((tmp_path / "deriv").glob("*_label-GM_desc-meanProbseg_probseg.nii.gz"))) == 1


def test_the_workflow_refuses_loose_option_mappings():
    with pytest.raises(TypeError, match="MapOptions and CohortOptions"):
        init_bids_heatmap_wf(label="lesion", cohort={"coverage": True})


def _docstring_fields(builder, section):
    block = re.search(
        rf"\n\s*{section}\n\s*-+\n(.*?)(\n\s*\n\s*[A-Z]\w+\n\s*-+\n|\Z)", builder.__doc__, re.S
    )
    return set(re.findall(r"^\s{4}(\w+)\s*$", block.group(1), re.M))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"label": "lesion"},
        {"label": ["GM", "WM"], "suffix": "probseg", "cohort": CohortOptions(std=True)},
        {"label": "lesion", "several_per_subject": "average",
         "cohort": CohortOptions(min_fraction=0.5)},
    ],
    ids=["one", "labels-std", "average-overlap"],
)  # fmt: skip
def test_workflow_docstring_matches_its_nodes(kwargs):
    wf = init_bids_heatmap_wf(**kwargs)
    assert _docstring_fields(init_bids_heatmap_wf, "Inputs") == set(
        wf.get_node("inputnode").inputs.copyable_trait_names()
    )
    assert _docstring_fields(init_bids_heatmap_wf, "Outputs") == set(
        wf.get_node("outputnode").inputs.copyable_trait_names()
    )
    heatmap = wf.get_node("heatmap")
    expected = HeatmapOfSubjects if kwargs.get("several_per_subject") else HeatmapVolume
    assert type(heatmap.interface) is expected


# -- the nodes ------------------------------------------------------------------------------
@pytest.mark.parametrize("interface", [SelectBIDSInputs, HeatmapOfSubjects,
                                       HeatmapDerivativesSink])  # fmt: skip
def test_every_input_and_output_says_what_it_is(interface):
    for spec in (interface.input_spec(), interface.output_spec()):
        for name, trait in spec.traits().items():
            if name.startswith("trait_") or name in ("ignore_exception",):
                continue
            assert trait.desc, f"{interface.__name__}.{name} has no desc"
    spec = interface.input_spec()
    for name in spec.copyable_trait_names():  # relative paths: where the user sets them
        assert type(spec.trait(name).trait_type).__name__ not in ("File", "Directory"), name
    mandatory = {n for n, t in interface.input_spec().traits().items() if t.mandatory}
    assert (
        mandatory
        == {
            SelectBIDSInputs: {"bids_dir"},
            HeatmapOfSubjects: {"in_files", "selection"},
            HeatmapDerivativesSink: {"in_files", "selections", "output_dir"},
        }[interface]
    )


def test_the_sink_stores_a_node_s_maps_as_the_command_writes_them(lesions, tmp_path):
    select = SelectBIDSInputs(bids_dir=str(lesions), label=["lesion"], session=["pre"])
    selected = select.run(cwd=str(tmp_path)).outputs
    heat = HeatmapVolume(in_files=selected.in_files[0], use_mean=False, clip_to_input_range=False,
                         coverage=True).run(cwd=str(tmp_path))  # fmt: skip
    res = HeatmapDerivativesSink(
        in_files=[heat.outputs.out_file],
        selections=selected.selections,
        output_dir=str(tmp_path / "via"),
        use_mean=False,
        clip_to_input_range=False,
        coverage_file=[heat.outputs.coverage_file],
        command="my_pipeline.py --group all",
    ).run(cwd=str(tmp_path))
    [out_file] = res.outputs.out_files
    assert nb.load(out_file).get_data_dtype() == np.uint16  # an exact count, as the command
    side = json.loads(Path(res.outputs.out_sidecars[0]).read_text())
    assert side["GeneratedBy"][0]["CommandLine"] == "my_pipeline.py --group all"
    assert set(res.outputs.out_cohort[0]) == {"coverage"}
    argv = [str(lesions), str(tmp_path / "direct"), "group", "--label", "lesion", "--session",
            "pre", "--sum", "--no-clip", "--coverage", "-q"]  # fmt: skip
    assert main(argv) == 0
    _same_maps(tmp_path / "direct", tmp_path / "via")
    assert validator_errors(tmp_path / "via") == []
    with pytest.raises(ValueError, match="1 map\\(s\\) for 2 selection\\(s\\)"):
        HeatmapDerivativesSink(
            in_files=[heat.outputs.out_file],
            selections=selected.selections * 2,
            output_dir=str(tmp_path / "x"),
        ).run(cwd=str(tmp_path))
