"""Discovery: which files are inputs, file identity, the tool's own earlier outputs."""

from __future__ import annotations

import logging
import os
import re

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from nipype_heatmap import api, io
from nipype_heatmap.api import compute_heatmap, generate_heatmap_volume, write_heatmap
from nipype_heatmap.options import CohortOptions

from .conftest import SHAPE, file_digest, reference_heatmap


def _overwrites(out, read_role="input", role="heatmap"):
    """The pattern of the plan's error: the output named, with both roles."""
    return re.escape(f"{out}: the {role} would overwrite the {read_role} there")


# -- discovery -------------------------------------------------------------------------
def test_discovery_sorts_by_bytes_and_skips_non_inputs(make_nifti, in_dir, tmp_path):
    make_nifti("b.nii.gz")
    make_nifti("B.nii")
    make_nifti("a10.nii.gz")
    make_nifti("a2.nii.gz")
    (in_dir / "._b.nii.gz").write_bytes(b"\0\5\26\7AppleDouble")  # macOS resource fork
    make_nifti(".hidden.nii.gz")
    (in_dir / "sub.nii.gz").mkdir()  # a folder with a NIfTI name
    (in_dir / "broken.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    os.mkfifo(in_dir / "pipe.nii.gz")  # not opened, so no wait for a writer
    (in_dir / "zero.nii").symlink_to("/dev/zero")
    (in_dir / "notes.txt").write_text("not an image")
    (in_dir / "x.nii.gz.bak").write_text("backup")
    target = make_nifti("linked_target.nii.gz", folder=tmp_path / "elsewhere")
    (in_dir / "c_link.nii.gz").symlink_to(target)
    found = [os.path.basename(p) for p in io.find_nifti_files(in_dir)]
    assert found == ["B.nii", "a10.nii.gz", "a2.nii.gz", "b.nii.gz", "c_link.nii.gz"]


def test_missing_folder_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        generate_heatmap_volume(tmp_path / "nope", tmp_path / "out")


def test_folder_that_is_a_file_raises_file_not_found(make_nifti, tmp_path):
    f = make_nifti("a.nii.gz")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        generate_heatmap_volume(f, tmp_path / "out")


def test_folder_without_nifti_raises_file_not_found(in_dir, tmp_path):
    (in_dir / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no NIfTI file"):
        generate_heatmap_volume(in_dir, tmp_path / "out")


# -- the output path (issue: an output named like an input overwrote it) -----------------
def test_output_named_like_an_input_is_refused_and_the_input_kept(make_nifti, in_dir):
    make_nifti("sub-01_mask.nii.gz")
    make_nifti("sub-02_mask.nii.gz")
    before = {p.name: file_digest(p) for p in in_dir.iterdir()}
    with pytest.raises(ValueError, match=_overwrites(in_dir / "sub-01_mask.nii.gz")):
        generate_heatmap_volume(in_dir, in_dir, "sub-01_mask.nii.gz")
    assert {p.name: file_digest(p) for p in in_dir.iterdir()} == before


def test_previous_heatmap_at_the_output_path_is_skipped(make_nifti, in_dir, caplog):
    files = [make_nifti(f"m{i}.nii.gz") for i in range(3)]
    generate_heatmap_volume(in_dir, in_dir, "overlap.nii.gz")
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        out = generate_heatmap_volume(in_dir, in_dir, "overlap.nii.gz")
    assert f"Skipping {out}: this run replaces it (an earlier run's output)" in caplog.text
    assert b"of 3 volumes" in nb.load(out).header["descrip"].tobytes()
    assert_array_equal(
        np.asanyarray(nb.load(out).dataobj), reference_heatmap(files).astype(np.float32)
    )


def test_float_map_that_is_not_ours_at_the_output_path_is_refused(make_nifti, in_dir):
    make_nifti("a.nii.gz")
    theirs = make_nifti("heatmap_volume.nii.gz", np.ones(SHAPE, np.float32) / 2)
    before = file_digest(theirs)
    with pytest.raises(ValueError, match=_overwrites(theirs)):
        generate_heatmap_volume(in_dir, in_dir)
    assert file_digest(theirs) == before


def test_output_path_through_a_symlinked_folder_is_recognised(make_nifti, in_dir, tmp_path):
    a = make_nifti("a.nii.gz")
    make_nifti("b.nii.gz")
    alias = tmp_path / "alias"
    alias.symlink_to(in_dir, target_is_directory=True)
    generate_heatmap_volume(in_dir, alias)  # written through the alias
    out = generate_heatmap_volume(in_dir, alias)  # re-run: the old map is not an input
    assert b"of 2 volumes" in nb.load(out).header["descrip"].tobytes()
    with pytest.raises(
        ValueError, match=_overwrites(alias / "a.nii.gz") + re.escape(f" (the same file as {a})")
    ):
        generate_heatmap_volume(in_dir, alias, "a.nii.gz")


def test_unreadable_file_at_the_output_path_is_not_taken_for_ours(make_nifti, in_dir):
    make_nifti("a.nii.gz")
    damaged = in_dir / "heatmap_volume.nii.gz"
    damaged.write_bytes(b"\x1f\x8b damaged")
    with pytest.raises(ValueError, match=re.escape(str(damaged))):
        generate_heatmap_volume(in_dir, in_dir)
    assert damaged.read_bytes() == b"\x1f\x8b damaged"


# -- file identity (issue: a link to a listed file was not a duplicate) --------------------
@pytest.mark.parametrize("link", ["same_path", "symlink", "hardlink"])
def test_the_same_file_twice_is_warned_about(make_nifti, tmp_path, caplog, link):
    a = make_nifti("a.nii.gz")
    b = make_nifti("b.nii.gz")
    twin = {
        "same_path": a,
        "symlink": tmp_path / "link.nii.gz",
        "hardlink": tmp_path / "hard.nii.gz",
    }[link]
    if link == "symlink":
        twin.symlink_to(a)
    elif link == "hardlink":
        os.link(a, twin)
    with caplog.at_level(logging.WARNING, logger="nipype_heatmap"):
        compute_heatmap([a, b, twin])
    warnings = [r for r in caplog.records if "more than once" in r.getMessage()]
    assert len(warnings) == 1 and str(twin) in warnings[0].getMessage()
    # A link under another name says which listed file it is; the same path does not.
    assert (f"the same file as {a}" in warnings[0].getMessage()) == (link != "same_path")


def test_distinct_files_with_equal_content_are_not_duplicates(make_nifti, tmp_path, caplog):
    a = make_nifti("a.nii.gz")
    copy = tmp_path / "copy.nii.gz"
    copy.write_bytes(a.read_bytes())
    with caplog.at_level(logging.WARNING, logger="nipype_heatmap"):
        compute_heatmap([a, copy])
    assert "more than once" not in caplog.text


def test_output_linked_to_an_input_is_refused(make_nifti, tmp_path):
    a = make_nifti("a.nii.gz")
    link = tmp_path / "out.nii.gz"
    os.link(a, link)
    before = file_digest(a)
    with pytest.raises(
        ValueError, match=_overwrites(link) + re.escape(f" (the same file as {a})")
    ):
        write_heatmap([a], link)
    assert file_digest(a) == before


def test_maps_of_this_tool_in_another_folder_are_inputs_like_any(make_nifti, tmp_path):
    # Averaging earlier maps (one per site, say) named like the output's side maps, from a
    # folder that is not the output's: they are inputs, not "own outputs" to skip
    # (mutants: the same-folder test inverted or or-ed with the name test).
    sites = tmp_path / "sites"
    maps = []
    for site in ("a", "b"):
        files = [make_nifti(f"{site}{i}.nii.gz", folder=tmp_path / site) for i in range(2)]
        maps.append(write_heatmap(files, sites / f"heatmap_{site}.nii.gz"))
    with io.OutputPlan() as plan:
        plan.add("heatmap", tmp_path / "out" / "heatmap.nii.gz")
        assert io.find_nifti_files(sites, exclude=plan.is_output) == sorted(maps)
    # ... and so they are beside the output too: only the plan's own files are left out,
    # never files by a name pattern (the old rule skipped them as side maps).
    with io.OutputPlan() as plan:
        plan.add("heatmap", sites / "heatmap.nii.gz")
        plan.add("coverage", sites / "heatmap_coverage.nii.gz")
        assert io.find_nifti_files(sites, exclude=plan.is_output) == sorted(maps)
        plan.add("site_a", maps[0])  # a planned output that is ours: left out
        assert io.find_nifti_files(sites, exclude=plan.is_output) == [maps[1]]


# -- discovery skips only this run's planned outputs that are this tool's files ------------
def _site_means(make_nifti, tmp_path):
    """means/prob_site1 and prob_site2 (maps of this tool), means/site3_prob (not)."""
    means = tmp_path / "means"
    for site in (1, 2):
        files = [
            make_nifti(f"s{site}_{i}.nii.gz", folder=tmp_path / f"site{site}") for i in range(2)
        ]
        write_heatmap(files, means / f"prob_site{site}.nii.gz")
    make_nifti("site3_prob.nii.gz", np.full(SHAPE, 0.25, np.float32), folder=means)
    return means, sorted(str(p) for p in means.iterdir())


def _mean_of(files):
    return reference_heatmap([str(f) for f in files])


@pytest.mark.parametrize("cohort", [CohortOptions(), CohortOptions(coverage=True, min_count=2)])
def test_maps_named_like_side_maps_of_the_output_are_averaged(make_nifti, tmp_path, cohort):
    means, inputs = _site_means(make_nifti, tmp_path)
    assert [os.path.basename(p) for p in inputs] == [
        "prob_site1.nii.gz",
        "prob_site2.nii.gz",
        "site3_prob.nii.gz",
    ]
    assert io.is_own_file(inputs[0]) and not io.is_own_file(inputs[2])
    acc, written = api.make_maps([means], means / "prob.nii.gz", cohort=cohort)
    assert acc.n_inputs == 3
    assert [r.path for r in acc.records] == inputs
    assert_array_equal(np.asanyarray(nb.load(written["heatmap"]).dataobj), _mean_of(inputs))


@pytest.mark.parametrize("cohort", [CohortOptions(), CohortOptions(coverage=True, min_count=2)])
def test_an_earlier_run_s_maps_at_the_planned_paths_are_skipped(
    make_nifti, tmp_path, caplog, cohort
):
    means, inputs = _site_means(make_nifti, tmp_path)
    first = api.write_cohort_maps([means], means / "prob.nii.gz", cohort=cohort)
    assert all(io.is_own_file(p) for role, p in first.items() if role != "table")
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        acc, again = api.make_maps([means], means / "prob.nii.gz", cohort=cohort)
    assert acc.n_inputs == 3 and [r.path for r in acc.records] == inputs
    assert again == first
    for role, path in first.items():
        if role not in ("table", "mincount"):  # the mask is left out by api, unlogged
            assert f"Skipping {path}: this run replaces it" in caplog.text
    assert_array_equal(np.asanyarray(nb.load(again["heatmap"]).dataobj), _mean_of(inputs))


def test_a_file_not_of_this_tool_at_the_output_path_is_an_input_and_refused(make_nifti, tmp_path):
    means, _ = _site_means(make_nifti, tmp_path)
    theirs = make_nifti("prob.nii.gz", np.full(SHAPE, 0.5, np.float32), folder=means)
    before = file_digest(theirs)
    with pytest.raises(ValueError, match=_overwrites(theirs)):
        api.write_cohort_maps([means], means / "prob.nii.gz")
    assert file_digest(theirs) == before


def test_a_file_not_of_this_tool_at_a_side_map_path_is_refused_naming_its_role(
    make_nifti, tmp_path
):
    means, _ = _site_means(make_nifti, tmp_path)
    theirs = make_nifti("prob_coverage.nii.gz", np.ones(SHAPE, np.float32), folder=means)
    with pytest.raises(ValueError, match=_overwrites(theirs, role="coverage")):
        api.write_cohort_maps([means], means / "prob.nii.gz", cohort=CohortOptions(coverage=True))


def test_an_explicit_input_that_is_a_planned_output_is_refused_not_dropped(make_nifti, tmp_path):
    means, inputs = _site_means(make_nifti, tmp_path)
    out = api.write_cohort_maps([means], means / "prob.nii.gz")["heatmap"]
    assert io.is_own_file(out)
    before = file_digest(out)
    with pytest.raises(ValueError, match=_overwrites(out)):
        api.write_cohort_maps([*inputs, out], out)
    with pytest.raises(ValueError, match=_overwrites(out)):  # a folder and the file
        api.write_cohort_maps([means, out], out)
    assert file_digest(out) == before


def test_the_exclusion_is_by_identity_not_by_name(make_nifti, tmp_path):
    # A planned output reached through a symlinked folder or a hard link is the file.
    means, inputs = _site_means(make_nifti, tmp_path)
    alias = tmp_path / "alias"
    alias.symlink_to(means, target_is_directory=True)
    with io.OutputPlan() as plan:
        plan.add("site1", alias / "prob_site1.nii.gz")
        assert io.find_nifti_files(means, exclude=plan.is_output) == inputs[1:]
    hard = tmp_path / "elsewhere" / "copy.nii.gz"
    hard.parent.mkdir()
    os.link(inputs[0], hard)
    with io.OutputPlan() as plan:
        plan.add("copy", hard)
        assert io.find_nifti_files(means, exclude=plan.is_output) == inputs[1:]


@pytest.mark.parametrize(
    ("descrip", "own"),
    [
        (b"nipype_heatmap mean of 3 volumes", True),
        (b"nipype_heatmap state", True),
        (b"made with nipype_heatmap mean", False),
        (b"nipype_heatmapmean", False),
        (b"Nipype_heatmap mean", False),
        (b"", False),
    ],
)
def test_own_files_are_told_by_the_start_of_descrip(make_nifti, descrip, own):
    path = make_nifti("m.nii.gz", header_hook=lambda h: h.__setitem__("descrip", descrip))
    assert io.is_own_file(path) is own


def test_what_cannot_be_read_is_not_an_own_file(tmp_path):
    damaged = tmp_path / "damaged.nii.gz"
    damaged.write_bytes(b"\x1f\x8bnipype_heatmap ")
    assert not io.is_own_file(damaged)
    assert not io.is_own_file(tmp_path)  # a folder
    assert not io.is_own_file(tmp_path / "missing.nii.gz")


# -- collect_inputs: folders and files in order, the plan's defaults ----------------------
def test_collect_inputs_lists_folders_and_files_without_a_plan(make_nifti, tmp_path):
    folder = [str(make_nifti(f"m{i}.nii.gz")) for i in (2, 0, 1)]
    extra = str(make_nifti("x.nii", folder=tmp_path / "other"))
    assert api.collect_inputs([os.path.dirname(folder[0]), extra]) == [*sorted(folder), extra]
    with pytest.raises(ValueError, match="no input file given"):
        api.collect_inputs([])  # empty is an error unless allowed
    assert api.collect_inputs([], allow_empty=True) == []
    with pytest.raises(FileNotFoundError, match="nope.nii: no such file or folder"):
        api.collect_inputs([tmp_path / "nope.nii"])


def test_collect_inputs_refuses_an_explicit_output_by_default(make_nifti, tmp_path):
    mask = str(make_nifti("m.nii.gz"))
    with io.OutputPlan() as plan:
        plan.add("heatmap", mask)
        with pytest.raises(ValueError, match=re.escape(mask)):
            api.collect_inputs([mask], plan)
        assert api.collect_inputs([mask], plan, refuse=False) == [mask]


def test_a_plan_without_a_heatmap_leaves_out_no_map_by_its_name(make_nifti, tmp_path):
    # Only a heatmap's side maps are left out by name (<stem>_coverage...): a plan that
    # writes a state alone keeps every map of this tool in the folder, whatever its name.
    masks = [make_nifti(f"m{i}.nii.gz") for i in range(2)]
    maps = tmp_path / "maps"
    files = [write_heatmap(masks, maps / n) for n in ("a.nii.gz", "a_coverage.nii.gz")]
    with io.OutputPlan() as plan:
        plan.add("state", tmp_path / "state.nii.gz")
        assert api.collect_inputs([maps], plan) == sorted(files)
