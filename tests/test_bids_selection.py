"""BIDS selection (issue 27): subjects are the unit, template spaces only, filters never
widened, one index for several maps, metadata read strictly, errors that say what exists.

On an fMRIPrep 25-like dataset (sessions, native and template spaces, 4D BOLD, nested
sourcedata, logs, figures, stale group maps) and a lesion dataset (tests/bids_trees.py).
"""

from __future__ import annotations

import json
import logging
import re

import pytest

from nipype_heatmap.bids import (
    BIDSIndex,
    BIDSSelection,
    load_filter_file,
    merge_filters,
    participants_groups,
    select_bids_inputs,
    select_bids_maps,
)
from nipype_heatmap.bids.metadata import read_dataset_description, read_participants

from . import bids_trees
from .bids_trees import SPACE, copy_of

pytest.importorskip("bids", reason="BIDS selection needs the 'bids' extra (pybids)")


GM = {"suffix": "probseg", "label": "GM", "space": SPACE, "res": "2"}


# -- 1. subjects are the unit ----------------------------------------------------------------
def test_sessions_are_refused_naming_the_subjects_and_the_ways_out(lesion_index):
    with pytest.raises(ValueError, match="3 subject") as err:
        select_bids_inputs(lesion_index, label="lesion")
    message = str(err.value)
    for sub in ("sub-01", "sub-02", "sub-03"):
        assert f"{sub}: {sub}_ses-post" in message
    assert "sub-04" not in message
    assert "--session LABEL (sessions: post, pre)" in message
    assert "--several-per-subject average" in message and "each-file" in message


def test_the_weighting_of_several_files_is_explicit(lesion_index):
    average = select_bids_inputs(lesion_index, label="lesion", several_per_subject="average")
    assert average.subjects == ["01", "02", "03", "04", "05", "06"]
    assert len(average.files) == 9 and len(average.units) == 6
    assert [len(u) for u in average.units] == [2, 2, 2, 1, 1, 1]
    assert average.several_per_subject == "average" and "averaged first" in average.weighting
    each = select_bids_inputs(lesion_index, label="lesion", several_per_subject="each-file")
    assert len(each.units) == 9 and "weigh more" in each.weighting
    with pytest.raises(ValueError, match="several_per_subject=True"):
        select_bids_inputs(lesion_index, label="lesion", several_per_subject=True)
    # one file per subject anyway: no weighting to state
    one = select_bids_inputs(
        lesion_index, label="lesion", session="pre", several_per_subject="average"
    )
    assert one.several_per_subject is None


def test_several_runs_are_refused_with_run_as_a_way_out(fp_index):
    query = {"desc": "brain", "datatype": "func", "res": "2", "space": SPACE}
    with pytest.raises(ValueError, match="several matching files") as err:
        select_bids_inputs(fp_index, **query)
    assert "--run N (runs: 1, 2)" in str(err.value)
    assert "--session LABEL" in str(err.value)  # sub-01..03 also have two sessions
    runs = select_bids_inputs(fp_index, run=1, session="pre", **query)
    assert runs.entities["run"] == "1" and runs.entities["session"] == "pre"


def test_a_session_filter_logs_the_subjects_it_drops_by_name(fp_index, caplog):
    with caplog.at_level(logging.WARNING, logger="nipype_heatmap"):
        selections = select_bids_maps(fp_index, session="pre", **{**GM, "label": ["GM", "WM"]})
    assert [s.subjects for s in selections] == [["01", "02", "03"]] * 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per call, not once per map
    for sub in ("04", "05", "06", "07"):
        assert f"sub-{sub} (session none)" in warnings[0]
    assert "none with session=pre" in warnings[0]


@pytest.mark.parametrize(
    ("query", "entity", "values", "flag"),
    [
        ({"desc": "brain", "res": "2", "session": "pre"}, "datatype",
         ("datatype=anat", "datatype=func"), "--datatype"),
        ({"desc": "brain", "datatype": "anat", "session": "pre", "space": SPACE}, "res",
         ("res=1", "res=2"), "--res"),
        ({"suffix": "probseg", "res": "2", "session": "pre"}, "label",
         ("label=CSF", "label=GM", "label=WM"), "--label"),
    ],
    ids=["anat-func", "resolutions", "labels"],
)  # fmt: skip
def test_different_maps_are_never_mixed(fp_index, query, entity, values, flag):
    with pytest.raises(ValueError, match=f"the selection mixes {entity} values") as err:
        select_bids_inputs(fp_index, **query)
    message = str(err.value)
    assert all(v in message for v in values) and f"pick one with {flag}" in message
    assert re.search(r"e\.g\. \S+/sub-01/ses-pre/\w+/sub-01_ses-pre_\S+\.nii\.gz", message)


def test_a_missing_participant_is_named(fp_index):
    with pytest.raises(ValueError, match="for sub-09; 3 subject") as err:
        select_bids_inputs(fp_index, session="pre", participant_label=["01", "09"], **GM)
    assert "01, 02, 03" in str(err.value)


def test_a_folder_without_a_description_is_not_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a BIDS dataset \\(no dataset_description"):
        select_bids_inputs(tmp_path, label="GM")


# -- 2. template spaces only -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "why"),
    [
        ({"desc": "brain", "datatype": "func", "space": "T1w", "run": 1, "session": "pre"},
         "space-T1w is each subject's T1-weighted anatomy"),
        ({"desc": "brain", "datatype": "anat", "bids_filters": {"space": None},
          "session": "pre"}, "files without a space entity"),
    ],
    ids=["T1w", "no-space"],
)  # fmt: skip
def test_native_spaces_are_refused_with_why_unless_allowed(fp_index, query, why):
    with pytest.raises(ValueError, match=re.escape(why)) as err:
        select_bids_inputs(fp_index, **query)
    message = str(err.value)
    assert "not the same place in two subjects" in message
    assert "--allow-native-space" in message and "--space MNI152NLin2009cAsym" in message
    allowed = select_bids_inputs(fp_index, allow_native_space=True, **query)
    assert allowed.subjects == ["01", "02", "03"]


def test_a_space_that_is_not_a_templateflow_identifier_is_not_a_template():
    from nipype_heatmap.bids.spaces import native_space_problem

    assert native_space_problem("MNI152NLin6Asym") is None
    problem = native_space_problem("study")
    assert problem.startswith("space-study is not a TemplateFlow template identifier")
    assert "--allow-native-space" in problem
    assert native_space_problem("fsnative").startswith("space-fsnative is each subject's")


# -- 3. filters never widened ------------------------------------------------------------------
def test_a_flag_and_the_filter_file_are_merged_never_widened(fp_index, tmp_path):
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"heatmap": {"subject": ["01", "02"], **GM}}))
    selection = select_bids_inputs(fp_index, filter_file=filters, session="pre")
    assert selection.subjects == ["01", "02"]  # not 01, 04, 06...
    with pytest.raises(ValueError, match="--participant-label 03 conflicts with") as err:
        select_bids_inputs(fp_index, filter_file=filters, participant_label=["03"])
    assert str(filters) in str(err.value) and "['01', '02']" in str(err.value)
    with pytest.raises(
        ValueError, match=r"--suffix mask conflicts with .*suffix is \['probseg'\]"
    ):
        select_bids_inputs(fp_index, filter_file=filters, suffix="mask")
    narrowed = select_bids_inputs(
        fp_index, filter_file=filters, participant_label=["sub-02"], session="pre"
    )
    assert narrowed.subjects == ["02"]


def test_suffix_and_extension_from_the_filter_file_are_used_not_replaced(fp_index):
    probseg = {"suffix": "probseg", "label": "GM", "res": "2", "session": "pre"}
    assert select_bids_inputs(fp_index, bids_filters=probseg).entities["suffix"] == "probseg"
    only_nii = {**probseg, "extension": ".nii"}  # none of them is .nii
    with pytest.raises(FileNotFoundError, match="no file of a subject has extension .nii ") as err:
        select_bids_inputs(fp_index, bids_filters=only_nii)
    assert "NIfTI files have .nii.gz" in str(err.value)
    with pytest.raises(ValueError, match="the inputs are NIfTI files"):
        select_bids_inputs(fp_index, bids_filters={**probseg, "extension": ".tsv"})


def test_null_in_the_file_and_a_flag_value_conflict():
    with pytest.raises(ValueError, match="--space MNI152NLin6Asym conflicts with f.json, where"):
        merge_filters({"space": "MNI152NLin6Asym"}, {"space": None}, file_name="f.json")
    assert merge_filters({"space": SPACE}, {"space": "*"}) == {"space": (SPACE,)}
    assert merge_filters({"run": "01"}, {"run": [1, 2]}) == {"run": ("1",)}


# -- 5. several maps, one index, a database that stays right --------------------------------------
def test_several_values_give_one_map_each_from_one_index(fp_index):
    selections = select_bids_maps(fp_index, session="post", **{**GM, "label": ["GM", "WM", "CSF"]})
    assert [s.entities["label"] for s in selections] == ["GM", "WM", "CSF"]
    assert all(s.subjects == ["01", "02", "03"] for s in selections)
    both = select_bids_maps(
        fp_index, session="post", suffix="probseg", label=["GM", "WM"], res=["2"], space=SPACE
    )
    assert len(both) == 2
    # a label given twice is one map
    assert len(select_bids_maps(fp_index, session="post", **{**GM, "label": ["GM", "GM"]})) == 1
    # lists in the filter file too
    from_file = select_bids_maps(
        fp_index, bids_filters={**GM, "label": ["WM", "CSF"], "session": "pre"}
    )
    assert [s.entities["label"] for s in from_file] == ["WM", "CSF"]


def test_the_database_is_reused_and_rebuilt_when_the_dataset_changes(
    fmriprep, tmp_path, monkeypatch, rng
):
    from bids.layout import BIDSLayoutIndexer

    calls = []
    original = BIDSLayoutIndexer.__call__

    def counting(self, layout):
        calls.append(layout)
        return original(self, layout)

    monkeypatch.setattr(BIDSLayoutIndexer, "__call__", counting)
    dataset = copy_of(fmriprep, tmp_path)
    database = tmp_path / "bids_db"
    first = BIDSIndex(dataset, database_dir=database)
    second = BIDSIndex(dataset, database_dir=database)
    assert len(calls) == 1 and second.files == first.files
    extra = dataset / "sub-08" / "anat" / f"sub-08_space-{SPACE}_res-2_label-GM_probseg.nii.gz"
    bids_trees.save(extra, rng.random(bids_trees.SHAPE).astype("f4"))
    third = BIDSIndex(dataset, database_dir=database)
    assert len(calls) == 2 and str(extra) in {f.path for f in third.files}
    assert "08" in select_bids_inputs(third, session=None, **GM, participant_label=["08"]).subjects


# -- 7. fMRIPrep's filter file, unknown entities, what exists ----------------------------------
def test_fmriprep_s_own_filter_file_is_read_by_its_query_names(fp_index, tmp_path, caplog):
    filters = tmp_path / "fmriprep_filters.json"
    filters.write_text(json.dumps({
        "t1w": {"session": "pre", "acquisition": "mprage", "suffix": "T1w"},
        "bold": {"task": "rest", "session": "post", "run": 1},
    }))  # fmt: skip
    with pytest.raises(ValueError, match="queries for outputs of several datatypes") as err:
        select_bids_inputs(fp_index, filter_file=filters, **GM)
    assert "anat: t1w" in str(err.value) and "func: bold" in str(err.value)
    assert "--datatype" in str(err.value)
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        anat = select_bids_inputs(fp_index, filter_file=filters, datatype="anat", **GM)
    assert anat.entities["session"] == "pre" and anat.subjects == ["01", "02", "03"]
    assert "acquisition='mprage'" in caplog.text and "not applied" in caplog.text
    func = select_bids_inputs(
        fp_index, filter_file=filters, datatype="func", desc="brain", res="2", space=SPACE
    )
    assert func.entities["session"] == "post" and func.entities["run"] == "1"


def test_a_file_mixing_queries_and_entities_says_which_shapes_are_expected(tmp_path):
    bad = tmp_path / "mixed.json"
    bad.write_text(json.dumps({"t1w": {"session": "pre"}, "res": "2"}))
    with pytest.raises(ValueError, match=re.escape(str(bad))) as err:
        load_filter_file(bad)
    assert "fMRIPrep's queries (t1w, t2w" in str(err.value) and '"heatmap"' in str(err.value)


def test_a_filter_file_that_is_not_an_object_is_named(tmp_path):
    bad = tmp_path / "filters.json"
    bad.write_text("[1, 2]")
    with pytest.raises(
        ValueError, match=re.escape(f"{bad}: the BIDS filter file is a JSON array")
    ):
        load_filter_file(bad)


def test_unknown_entities_are_named_with_the_valid_ones(fp_index):
    with pytest.raises(ValueError, match="'resolution' is not a BIDS entity") as err:
        select_bids_inputs(fp_index, bids_filters={"resolution": "2"})
    assert "res, den, label, desc" in str(err.value)


@pytest.mark.parametrize(
    ("query", "hint"),
    [
        ({**GM, "label": "gm"}, "no file has label=gm (--label); where the other filters "
         "match, label is CSF, GM, WM (values are case-sensitive)"),
        ({**GM, "res": "02"}, "no file has res=02 (--res); where the other filters match, "
         "res is 2"),
        ({**GM, "space": "MNI152NLin2009cAsm"}, "no file has space=MNI152NLin2009cAsm "
         "(--space); where the other filters match, space is MNI152NLin2009cAsym"),
    ],
    ids=["label-case", "res-padding", "space-typo"],
)  # fmt: skip
def test_no_match_lists_the_values_that_exist(fp_index, query, hint):
    with pytest.raises(FileNotFoundError, match=re.escape(hint)):
        select_bids_inputs(fp_index, session="pre", **query)


def test_group_maps_stale_files_and_sourcedata_are_never_inputs(fp_index):
    paths = [f.path for f in fp_index.files]
    assert not [p for p in paths if "/sourcedata/" in p or "/figures/" in p or "/log" in p]
    assert all("/sub-" in p for p in paths)
    assert all(p.endswith((".nii", ".nii.gz")) for p in paths)


# -- 12. metadata read strictly ----------------------------------------------------------------
def test_a_participant_listed_twice_is_refused_naming_both_lines(tmp_path):
    table = tmp_path / "participants.tsv"
    table.write_text("participant_id\taphasia\nsub-01\tyes\nsub-02\tno\nsub-01\tno\n")
    with pytest.raises(
        ValueError, match=re.escape(f"{table}: sub-01 is listed twice (lines 2 and 4)")
    ):
        read_participants(table)


def test_a_byte_order_mark_is_read_as_utf8(lesions, lesion_index, tmp_path):
    table = tmp_path / "participants.tsv"
    table.write_bytes(b"\xef\xbb\xbf" + (lesions / "participants.tsv").read_bytes())
    _, rows = read_participants(table)
    assert rows["01"]["aphasia"] == "yes"
    selection = select_bids_inputs(lesion_index, label="lesion", several_per_subject="average")
    a, b, groups = participants_groups(selection, "aphasia", "yes", "no", participants_tsv=table)
    assert groups["SubjectsA"] == ["01", "03", "06"] and groups["SubjectsB"] == ["02", "05"]
    assert [len(u) for u in a] == [2, 2, 1]  # subjects, each with its files


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ('{"Name": "x", "BIDSVersion": "1.10', "; it ends too early: is the file truncated?"),
        ('["Name", "x"]', "is a JSON array, not an object"),
        ('{"Name": "x", "GeneratedBy": {"Name": "y"}}', "GeneratedBy must be an array"),
    ],
    ids=["truncated", "array", "field-type"],
)
def test_a_malformed_dataset_description_is_named_with_what_is_wrong(tmp_path, content, what):
    (tmp_path / "dataset_description.json").write_text(content)
    with pytest.raises(ValueError, match=re.escape(what)) as err:
        read_dataset_description(tmp_path)
    assert str(tmp_path / "dataset_description.json") in str(err.value)
    with pytest.raises(ValueError, match=re.escape(what)):
        BIDSIndex(tmp_path)


def test_a_tsv_line_with_a_missing_value_is_named(tmp_path):
    table = tmp_path / "participants.tsv"
    table.write_text("participant_id\taphasia\tage\nsub-01\tyes\n")
    with pytest.raises(ValueError, match=re.escape(f"{table}, line 2: 2 value(s) for 3")):
        read_participants(table)
    table.write_text("participant_id,aphasia\nsub-01,yes\n")
    with pytest.raises(ValueError, match="separated by tabs, not commas"):
        read_participants(table)


# -- the selection as plain data ---------------------------------------------------------------
def test_selection_travels_as_plain_data(fp_index):
    selection = select_bids_inputs(fp_index, session="pre", **GM)
    plain = selection.as_dict()
    assert json.loads(json.dumps(plain)) == plain
    again = BIDSSelection.from_any(plain)
    assert again == selection and again.units == [[f] for f in selection.files]
