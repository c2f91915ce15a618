"""The visual report: nilearn figure, self-contained page, and what a browser shows."""

from __future__ import annotations

import re
import shutil
import subprocess

import nibabel as nb
import numpy as np
import pytest

from .conftest import default_affine

pytest.importorskip("nilearn", reason="the report needs the 'report' extra (nilearn)")


@pytest.fixture
def blob_map(tmp_path):
    """A 0..5 count map with one blob on the subject's left, on a 2 mm grid."""
    data = np.zeros((30, 36, 30), np.float32)
    data[4:9, 15:21, 12:18] = 5.0  # low x indices: left in a RAS grid
    affine = default_affine()
    affine[:3, 3] = [-30.0, -36.0, -30.0]
    path = tmp_path / "count.nii.gz"
    nb.Nifti1Image(data, affine).to_filename(path)
    return path


def _report(path, tmp_path, **kwargs):
    from nipype_heatmap.report import make_report

    return make_report(
        path,
        tmp_path / "figures" / "count",
        html_file=tmp_path / "count.html",
        title="lesion count",
        units="count",
        parameters={"Aggregation": "sum", "ClipToInputRange": False, "NumberOfInputs": 5},
        sources=["bids:lesions:sub-01/anat/sub-01_mask.nii.gz"],
        command="nipype-heatmap-bids lesions out group --sum --no-clip",
        **kwargs,
    )


def test_page_says_what_made_the_map(blob_map, tmp_path):
    from nipype_heatmap import __version__

    report = _report(blob_map, tmp_path)
    page = (tmp_path / "count.html").read_text()
    assert f"nipype_heatmap {__version__}" in page
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", page)
    assert "nipype-heatmap-bids lesions out group --sum --no-clip" in page
    assert "clipped to the inputs&#x27; value range</th><td>no" in page
    assert "<iframe" in page and "brainsprite" in page.lower()  # the viewer, inline
    assert "data:image/png;base64," in page
    assert "http://" not in page.split("<iframe", 1)[0]  # nothing fetched for the page
    assert set(report) == {"png", "html"}
    assert not list((tmp_path / "figures").glob("*.svg"))


def test_cuts_go_through_the_blob(blob_map, tmp_path):
    """nilearn places the cuts through the map's peak, in mm; evenly spaced slices of the
    old mosaic could miss a blob this small."""
    from nilearn import plotting

    img = nb.load(blob_map)
    for direction, (lo, hi) in (("x", (-22, -12)), ("y", (-6, 6)), ("z", (-6, 6))):
        cuts = plotting.find_cut_slices(img, direction=direction, n_cuts=3)
        assert all(lo - 2 <= c <= hi + 2 for c in cuts), (direction, cuts)


def test_a_browser_shows_the_page(blob_map, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no headless Chromium here (Debian: apt-get install chromium)")
    _report(blob_map, tmp_path)
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            (tmp_path / "count.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.exists(), "the browser wrote no screenshot"
    pixels = np.asarray(_png_pixels(shot))
    # The figure's black panel and the white page both show, and the map's colours too.
    assert (pixels.min(axis=-1) < 20).mean() > 0.1 and (pixels.min(axis=-1) > 235).mean() > 0.1
    red = (pixels[..., 0] > 180) & (pixels[..., 2] < 80)
    assert red.sum() > 50


def _png_pixels(path):
    import matplotlib.image

    return (matplotlib.image.imread(path)[..., :3] * 255).astype(np.uint8)
