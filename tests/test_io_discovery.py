"""Discovery: which files are inputs, file identity, the tool's own earlier outputs."""

from __future__ import annotations

import logging
import os
import re

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from nipype_heatmap import io
from nipype_heatmap.api import compute_heatmap, generate_heatmap_volume, write_heatmap

from .conftest import SHAPE, file_digest, reference_heatmap


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
    with pytest.raises(ValueError, match="overwrite one of the inputs"):
        generate_heatmap_volume(in_dir, in_dir, "sub-01_mask.nii.gz")
    assert {p.name: file_digest(p) for p in in_dir.iterdir()} == before


def test_previous_heatmap_at_the_output_path_is_skipped(make_nifti, in_dir, caplog):
    files = [make_nifti(f"m{i}.nii.gz") for i in range(3)]
    generate_heatmap_volume(in_dir, in_dir, "overlap.nii.gz")
    with caplog.at_level(logging.INFO, logger="nipype_heatmap"):
        out = generate_heatmap_volume(in_dir, in_dir, "overlap.nii.gz")
    assert "a map this tool wrote at the output path" in caplog.text
    assert b"of 3 volumes" in nb.load(out).header["descrip"].tobytes()
    assert_array_equal(
        np.asanyarray(nb.load(out).dataobj), reference_heatmap(files).astype(np.float32)
    )


def test_float_map_that_is_not_ours_at_the_output_path_is_refused(make_nifti, in_dir):
    make_nifti("a.nii.gz")
    theirs = make_nifti("heatmap_volume.nii.gz", np.ones(SHAPE, np.float32) / 2)
    before = file_digest(theirs)
    with pytest.raises(ValueError, match="overwrite one of the inputs"):
        generate_heatmap_volume(in_dir, in_dir)
    assert file_digest(theirs) == before


def test_output_path_through_a_symlinked_folder_is_recognised(make_nifti, in_dir, tmp_path):
    make_nifti("a.nii.gz")
    make_nifti("b.nii.gz")
    alias = tmp_path / "alias"
    alias.symlink_to(in_dir, target_is_directory=True)
    generate_heatmap_volume(in_dir, alias)  # written through the alias
    out = generate_heatmap_volume(in_dir, alias)  # re-run: the old map is not an input
    assert b"of 2 volumes" in nb.load(out).header["descrip"].tobytes()
    with pytest.raises(ValueError, match="overwrite one of the inputs"):
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
    with pytest.raises(ValueError, match="overwrite one of the inputs"):
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
    found = io.find_nifti_files(sites, exclude=tmp_path / "out" / "heatmap.nii.gz")
    assert found == sorted(maps)
    # ... while the same names beside the output are its own side maps, skipped.
    with pytest.raises(FileNotFoundError, match="no NIfTI file"):
        io.find_nifti_files(sites, exclude=sites / "heatmap.nii.gz")
