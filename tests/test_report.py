"""The visual report: the scale it decides, what it says, what it draws, what a browser shows."""

from __future__ import annotations

import base64
import io
import logging
import re
import shutil
import socket
import subprocess

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose

from nipype_heatmap import report
from nipype_heatmap.report import decide_display, even_cuts, figures, histogram, pages

from .conftest import default_affine


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


needs_plotting = pytest.mark.skipif(
    not (_have("nilearn") and _have("matplotlib")),
    reason="the report needs the 'report' extra (nilearn, matplotlib)",
)

SPACE = "MNI152NLin2009cAsym"


def _grid() -> np.ndarray:
    """A 2 mm grid around the origin, as a small piece of an MNI grid."""
    affine = default_affine()
    affine[:3, 3] = [-30.0, -36.0, -30.0]
    return affine


def _image(data, affine=None) -> nb.Nifti1Image:
    data = np.asarray(data)
    return nb.Nifti1Image(data, _grid() if affine is None else affine, dtype=data.dtype)


@pytest.fixture
def blob_map(tmp_path):
    """A 0..5 count map with one blob on the subject's left, on a 2 mm grid."""
    data = np.zeros((30, 36, 30), np.float32)
    data[4:9, 15:21, 12:18] = 5.0  # low x indices: left in a RAS grid
    path = tmp_path / "count.nii.gz"
    _image(data).to_filename(path)
    return path


def _signed_blobs(with_negative: bool) -> nb.Nifti1Image:
    """+40 on the subject's left and -40 (or 0) on the right: a subtraction map."""
    data = np.zeros((30, 36, 30), np.float32)
    data[4:9, 15:21, 12:18] = 40.0
    if with_negative:
        data[21:26, 15:21, 12:18] = -40.0
    return _image(data)


# -- the scale: decide_display -------------------------------------------------------------
def test_probability_scale_is_0_to_1_whatever_the_maximum():
    display = decide_display(np.array([0.0, 0.1, 0.49]), "probability")
    assert (display.vmin, display.vmax) == (0.0, 1.0)
    assert display.ticks[0] == 0.0 and display.ticks[-1] == 1.0
    assert display.kind == "probability" and not display.notes


def test_probability_above_1_extends_the_scale_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="nipype_heatmap.report"):
        display = decide_display(np.array([0.0, 0.5, 3.5]), "probability")
    assert (display.vmin, display.vmax) == (0.0, 3.5)
    assert "not a probability map" in display.notes[0]
    assert "3.5" in caplog.text


@pytest.mark.parametrize("top", [1, 2, 5, 7, 9, 10, 23, 40, 137, 1000])
def test_count_ticks_are_whole_numbers_from_0_to_the_largest_count(top):
    data = np.zeros((7, 8, 9), np.int16)
    data[3, 4, 5] = top
    display = decide_display(data, "count")
    assert (display.vmin, display.vmax) == (0.0, float(top))
    ticks = np.array(display.ticks)
    assert ticks[0] == 0 and ticks[-1] == top
    assert np.array_equal(ticks, np.round(ticks)) and np.all(np.diff(ticks) > 0)
    assert len(ticks) <= 10
    assert [display.tick_label(t) for t in ticks[:2]] == [f"{int(t)}" for t in ticks[:2]]


def test_a_count_with_fractions_keeps_whole_ticks_and_covers_the_maximum():
    display = decide_display(np.array([0.0, 2.0, 6.5]), "count")
    assert display.vmax == 7.0 and display.ticks[-1] == 7.0
    assert "not whole numbers" in display.notes[0]


def test_signed_scale_is_symmetric_and_centred_on_0():
    display = decide_display(np.array([-100.0, -3.0, 0.0, 60.0]), "signed")
    assert (display.vmin, display.vmax) == (-100.0, 100.0)
    assert 0.0 in display.ticks and display.ticks == tuple(-t for t in reversed(display.ticks))
    assert display.cmap == report.CMAPS["signed"] and not display.notes


@pytest.mark.parametrize("kind", ["probability", "count", "value"])
def test_negative_values_switch_the_map_to_a_signed_scale_and_log_it(kind, caplog):
    with caplog.at_level(logging.WARNING, logger="nipype_heatmap.report"):
        display = decide_display(np.array([-0.25, 0.0, 0.75]), kind)
    assert display.kind == "signed" and display.requested == kind
    assert (display.vmin, display.vmax) == (-0.75, 0.75)
    assert "negative values" in display.notes[0] and "negative values" in caplog.text


@pytest.mark.parametrize("kind", report.KINDS)
def test_the_scale_covers_every_finite_value(kind, rng):
    data = rng.normal(3, 10, (7, 8, 9))
    data.flat[:5] = [np.nan, np.inf, -np.inf, 1e3, -2e3]
    display = decide_display(data, kind)
    finite = data[np.isfinite(data)]
    assert display.vmin <= finite.min() and display.vmax >= finite.max()
    assert (display.data_min, display.data_max) == (finite.min(), finite.max())
    assert display.vmin <= display.ticks[0] and display.ticks[-1] <= display.vmax


def test_value_scale_goes_from_0_to_the_largest_value():
    display = decide_display(np.array([200.0, 750.0, 1000.0]), "value")
    assert (display.vmin, display.vmax, display.kind) == (0.0, 1000.0, "value")


def test_non_finite_voxels_are_counted_and_said():
    data = np.zeros((7, 8, 9), np.float32)
    data.flat[:12] = np.nan
    data.flat[20:23] = np.inf
    data.flat[30] = -np.inf
    data.flat[40] = 0.5
    display = decide_display(data, "probability")
    assert (display.n_nan, display.n_posinf, display.n_neginf) == (12, 3, 1)
    assert display.n_finite == data.size - 16 and display.n_drawn == 1
    assert display.nonfinite_sentence().startswith(
        "12 voxels are NaN, 3 are +Inf, 1 is -Inf: not drawn"
    )
    assert decide_display(np.ones(3), "value").nonfinite_sentence() == ""


def test_a_map_without_finite_values_still_has_a_scale():
    display = decide_display(np.full((2, 3, 4), np.nan), "count")
    assert (display.vmin, display.vmax, display.n_finite, display.n_nan) == (0.0, 1.0, 0, 24)


def test_threshold_default_and_checks():
    assert decide_display(np.array([0.0, 5.0]), "count").threshold == 1e-6
    assert decide_display(np.array([0.0, 1e-5]), "value").threshold == pytest.approx(1e-8)
    assert decide_display(np.array([0.0, 0.2, 0.6]), "value", threshold=0.3).n_drawn == 1
    with pytest.raises(ValueError, match="threshold -1"):
        decide_display(np.ones(3), "value", threshold=-1)


def test_an_unknown_kind_is_refused_naming_the_kinds():
    with pytest.raises(ValueError, match="'percent' is not one of probability, count"):
        decide_display(np.ones(3), "percent")


def test_histogram_counts_every_finite_value_negatives_included(rng):
    data = rng.normal(-2, 5, 5000)
    data[:7] = np.nan
    display = decide_display(data, "value")  # shown signed
    counts, edges = histogram(data, display)
    assert counts.sum() == display.n_finite == 4993
    assert edges[0] <= np.nanmin(data) and edges[-1] >= np.nanmax(data)
    middle = len(counts) // 2
    assert edges[middle] + edges[middle + 1] == pytest.approx(0.0, abs=1e-9)  # centred on 0
    assert counts[:middle].sum() == np.count_nonzero(data < edges[middle]) > 2000


def test_count_histogram_has_one_bin_per_whole_number():
    data = np.array([0, 0, 0, 1, 2, 2, 5], np.int16)
    counts, edges = histogram(data, decide_display(data, "count"))
    assert_allclose((edges[:-1] + edges[1:]) / 2, np.arange(6))
    assert counts.tolist() == [3, 1, 2, 0, 0, 1]


@needs_plotting
def test_colour_maps_show_low_and_negative_values_in_clear_colours():
    signed = report.colormap(report.CMAPS["signed"])
    for at in (0.0, 0.3, 0.499):  # -max .. just below 0: blue or cyan, bright, not grey
        r, g, b, _ = signed(at)
        assert b > 0.9 and r < 0.1
    for at in (0.501, 0.7, 1.0):  # just above 0 .. max: red to yellow
        r, g, b, _ = signed(at)
        assert r > 0.9 and b < 0.1
    positive = report.colormap(report.CMAPS["count"])
    low, high = positive(0.0), positive(1.0)
    assert max(low[:3]) > 0.3  # not black on the black figure
    assert high[2] < 0.2  # not white like the white matter under it


# -- cut positions -------------------------------------------------------------------------
def test_mosaic_cuts_are_evenly_spaced_slices_through_the_whole_extent():
    affine = _grid()
    mask = np.zeros((30, 36, 30), bool)
    mask[10:12, 10:12, 2:28] = True  # z from -26 to 24 mm
    cuts = even_cuts([(mask, affine)], affine, 6)
    assert len(cuts) == 6 and len(set(np.diff(cuts))) == 1  # evenly spaced
    assert -26 < cuts[0] and cuts[-1] < 24 and (cuts[-1] - cuts[0]) >= 0.6 * 50
    assert all((c - affine[2, 3]) % 2 == 0 for c in cuts)  # on the map's slices
    other = np.zeros((10, 10, 10), bool)
    other[5, 5, 9] = True
    far = np.diag([4.0, 4.0, 4.0, 1.0])
    far[:3, 3] = [0.0, 0.0, 20.0]  # z = 56 mm: the union reaches it
    assert even_cuts([(mask, affine), (other, far)], affine, 6)[-1] > 24
    whole = even_cuts([(np.ones_like(mask), affine)], affine, 14)  # 30 slices: 2 apart
    assert np.diff(whole).tolist() == [4.0] * 13 and whole[0] >= -30 + 2
    mask[:, :, :] = False
    mask[..., :25] = True  # z from -30 to 18 mm: 14 cuts 2 slices apart would not fit
    tight = even_cuts([(mask, affine)], affine, 14)
    assert len(tight) == 14 and -30 <= tight[0] and tight[-1] <= 18


def test_mosaic_of_a_thin_map_has_no_more_cuts_than_slices():
    affine = _grid()
    mask = np.zeros((30, 36, 30), bool)
    mask[:, :, 14:17] = True
    assert even_cuts([(mask, affine)], affine, 14) == [-2.0, 0.0, 2.0]
    assert even_cuts([(np.zeros_like(mask), affine)], affine, 14) == []


@needs_plotting
def test_cuts_go_through_the_blob(blob_map):
    """nilearn places the peak cuts through the map's peak, in mm; evenly spaced slices
    could miss a blob this small."""
    from nilearn import plotting

    img = nb.load(blob_map)
    for direction, (lo, hi) in (("x", (-22, -12)), ("y", (-6, 6)), ("z", (-6, 6))):
        cuts = plotting.find_cut_slices(img, direction=direction, n_cuts=3)
        assert all(lo - 2 <= c <= hi + 2 for c in cuts), (direction, cuts)


# -- the underlay --------------------------------------------------------------------------
@needs_plotting
def test_an_mni_space_gets_nilearn_s_template_on_the_map_s_grid_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the report must not use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    target = _image(np.zeros((30, 36, 30), np.float32))
    underlay, sentence = report.choose_underlay(None, "MNI152NLin6Asym", target)
    assert underlay.shape == target.shape and np.array_equal(underlay.affine, target.affine)
    assert np.asarray(underlay.dataobj).max() > 0.5  # brain where the grid covers it
    assert "MNI152 template shipped with nilearn" in sentence
    assert "2009a" in sentence and "an approximation of MNI152NLin6Asym" in sentence


@needs_plotting
def test_another_space_gets_no_underlay_and_says_so():
    target = _image(np.zeros((7, 8, 9), np.float32))
    underlay, sentence = report.choose_underlay(None, "fsLR", target)
    assert underlay is None and sentence.startswith("none") and "in fsLR" in sentence
    assert report.choose_underlay(None, None, target)[0] is None


@needs_plotting
def test_an_underlay_given_wins_over_the_template(tmp_path, rng):
    anat = rng.random((20, 22, 24)).astype(np.float32)
    path = tmp_path / "sub-01_T1w.nii.gz"
    _image(anat).to_filename(path)
    target = _image(np.zeros((30, 36, 30), np.float32))
    underlay, sentence = report.choose_underlay(path, SPACE, target)
    assert_allclose(np.asarray(underlay.dataobj), anat)
    assert sentence == "sub-01_T1w.nii.gz (given)"


# -- rendering -----------------------------------------------------------------------------
def test_a_4d_map_is_refused_before_anything_is_drawn(tmp_path, monkeypatch):
    path = tmp_path / "two_volumes.nii.gz"
    _image(np.zeros((7, 8, 9, 2), np.float32)).to_filename(path)

    def no_drawing():
        raise AssertionError("drawing started")

    monkeypatch.setattr(pages, "plotting_modules", no_drawing)
    with pytest.raises(ValueError, match=re.escape(f"{path}: the report draws one 3D map")):
        report.render_map_report(path, kind="value", title="t")
    with pytest.raises(ValueError, match=r"shape \(7, 8, 9, 2\).*pick a volume"):
        report.render_map_report(path, kind="value", title="t")


@needs_plotting
def test_rendering_returns_bytes_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = np.zeros((30, 36, 30, 1), np.float32)  # one volume: a 3D map
    data[4:9, 15:21, 12:18, 0] = 0.4
    out = report.render_map_report(_image(data), kind="probability", title="GM", space=SPACE)
    assert set(out) == {"html", "png"}
    assert out["png"].startswith(b"\x89PNG\r\n\x1a\n")
    assert base64.b64encode(out["png"]) in out["html"]  # the figure, inline
    assert list(tmp_path.iterdir()) == []


@needs_plotting
def test_page_says_the_default_underlay_for_an_mni_space(blob_map):
    page = report.render_map_report(blob_map, kind="count", title="lesions", space=SPACE)
    text = page["html"].decode()
    assert "Underlay: the MNI152 template shipped with nilearn" in text
    assert f"an approximation of {SPACE}" in text
    other = report.render_map_report(blob_map, kind="count", title="lesions", space="T1w")
    assert "Underlay: none: no anatomical image was given" in other["html"].decode()


@needs_plotting
def test_page_says_how_many_voxels_are_not_finite():
    data = np.zeros((30, 36, 30), np.float32)
    data[4:9, 15:21, 12:18] = 3.0
    data.flat[:12] = np.nan
    data.flat[100:103] = np.inf
    out = report.render_map_report(_image(data), kind="count", title="lesions")
    assert "12 voxels are NaN, 3 are +Inf: not drawn" in out["html"].decode()


@needs_plotting
def test_negative_values_are_drawn_in_blue():
    """A map with a negative blob has many more blue pixels than the same map without it,
    on the same symmetric scale (the colour bar's blue is in both)."""
    blue = []
    for with_negative in (True, False):
        out = report.render_map_report(
            _signed_blobs(with_negative), kind="signed", title="A - B", space="T1w"
        )
        pixels = _png_pixels(out["png"]).astype(int)
        blue.append(int(((pixels[..., 2] > 200) & (pixels[..., 0] < 60)).sum()))
    assert blue[0] > blue[1] + 500, blue


@needs_plotting
def test_headings_and_row_names_cover_no_cut(blob_map):
    """The old 'axial cuts' box covered the first L: the figure's own texts now sit
    outside every nilearn panel."""
    img = nb.load(blob_map)
    values = np.asarray(img.dataobj, dtype=np.float64)
    display = decide_display(values, "count")
    fig = figures.draw_map_figure(
        img,
        None,
        display,
        values,
        title="lesions",
        units="count",
        underlay_sentence="none",
        n_cuts=6,
        n_mosaic=14,
    )
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    cuts = [ax for ax in fig.axes if ax.images]
    assert len(cuts) > 20  # each cut is an axes with an image
    panels = [ax.get_window_extent(renderer) for ax in cuts]
    for text in fig.texts:  # headings, row names, notes: outside every cut
        box = text.get_window_extent(renderer)
        assert not any(box.overlaps(p) for p in panels), text.get_text()
    for ax in cuts:  # in a cut, only nilearn's orientation marks and its position
        for text in ax.texts:
            assert re.fullmatch(r"[LR]|[xyz]=-?\d+", text.get_text()), text.get_text()
    boxes = []  # and no text (or its box) over another
    for text in [*fig.texts, *(t for ax in fig.axes for t in ax.texts)]:
        patch = text.get_bbox_patch()
        box = (patch or text).get_window_extent(renderer)
        assert not any(box.overlaps(b) for b in boxes), text.get_text()
        boxes.append(box)


def test_non_finite_voxels_are_given_to_nilearn_as_transparent_zeros():
    values = np.array([np.nan, np.inf, -np.inf, -2.5, 0.0, 7.0])
    shown = report.drawable(values)
    assert shown.tolist() == [0.0, 0.0, 0.0, -2.5, 0.0, 7.0] and shown.dtype == np.float32
    display = decide_display(values, "value")
    assert np.count_nonzero(np.abs(shown) > display.threshold) == display.n_drawn == 2


@needs_plotting
def test_the_colour_bar_and_the_histogram_use_the_decided_scale(rng):
    values = np.zeros((30, 36, 30))
    values[4:9, 15:21, 12:18] = rng.integers(0, 24, (5, 6, 6))
    values[0, 0, 0] = 23
    display = decide_display(values, "count")
    img = _image(report.drawable(values))
    fig = figures.draw_map_figure(
        img, None, display, values, title="t", units="count (number of inputs)",
        underlay_sentence="none", n_cuts=3, n_mosaic=7,
    )  # fmt: skip
    labelled = {ax.get_ylabel(): ax for ax in fig.axes if ax.get_xlabel()}
    colour_bar, hist = labelled[""], labelled["voxels (log scale)"]
    assert colour_bar.get_xlim() == (display.vmin, display.vmax) == (0.0, 23.0)
    assert tuple(colour_bar.get_xticks()) == display.ticks
    assert [t.get_text() for t in colour_bar.get_xticklabels()][-1] == "23"
    assert colour_bar.get_xlabel() == hist.get_xlabel() == "count (number of inputs)"
    low, high = hist.get_xlim()
    assert low <= display.vmin and high >= display.vmax
    heights = [patch.get_height() for patch in hist.patches]
    assert sum(heights) == display.n_finite


@needs_plotting
def test_make_report_writes_the_rendered_files(blob_map, tmp_path):
    written = _report(blob_map, tmp_path)
    assert written == {
        "png": str(tmp_path / "figures" / "count.png"),
        "html": str(tmp_path / "count.html"),
    }
    png = (tmp_path / "figures" / "count.png").read_bytes()
    assert base64.b64encode(png).decode() in (tmp_path / "count.html").read_text()
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "count.html",
        "count.nii.gz",
        "count.png",
        "figures",
    ]  # no temporary file left


def _report(path, tmp_path, **kwargs):
    return report.make_report(
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


@needs_plotting
def test_page_says_what_made_the_map(blob_map, tmp_path):
    from nipype_heatmap import __version__

    _report(blob_map, tmp_path)
    page = (tmp_path / "count.html").read_text()
    assert f"nipype_heatmap {__version__}" in page
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", page)
    assert "nipype-heatmap-bids lesions out group --sum --no-clip" in page
    assert "clipped to the inputs&#x27; value range</th><td>no" in page
    assert "bids:lesions:sub-01/anat/sub-01_mask.nii.gz" in page
    assert "<iframe" in page and "brainsprite" in page.lower()  # the viewer, inline
    assert "A count map" in page  # the kind, from the sidecar's parameters
    # nothing fetched: no address in a src or href, in the page or the viewer's page
    assert not re.search(r"(?:src|href)=(?:\"|&quot;|')?(?:https?:)?//", page)


@pytest.mark.parametrize(
    ("parameters", "kind"),
    [
        ({"Aggregation": "mean"}, "probability"),
        ({"Aggregation": "mean", "ValueRange": [0.0, 0.4]}, "probability"),
        ({"Aggregation": "mean", "ValueRange": [0.0, 850.0]}, "value"),  # mean of T1w
        ({"Aggregation": "mean", "Normalized": True}, "value"),
        ({"Aggregation": "sum", "ClipToInputRange": False}, "count"),
        ({"Aggregation": "sum", "ClipToInputRange": True}, "value"),
        ({}, "value"),
    ],
)
def test_make_report_takes_the_kind_from_the_sidecar(parameters, kind):
    assert pages._kind_from_parameters(parameters) == kind


def test_make_report_takes_the_space_from_the_sidecar():
    assert pages._space_from_parameters({"SpatialReference": SPACE}) == SPACE
    uri = "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"
    assert pages._space_from_parameters({"SpatialReference": uri}) is None
    assert pages._space_from_parameters({}) is None


@needs_plotting
def test_the_viewer_uses_the_figure_s_scale(monkeypatch):
    seen = {}
    from nilearn import plotting

    real = plotting.view_img

    def spy(img, **kwargs):
        seen.update(kwargs)
        return real(img, **kwargs)

    monkeypatch.setattr(plotting, "view_img", spy)
    report.render_map_report(_signed_blobs(True), kind="value", title="A - B")
    assert seen["symmetric_cmap"] is True and seen["vmax"] == 40.0
    assert seen["cmap"].name == report.CMAPS["signed"]


# -- the atlas report ----------------------------------------------------------------------
@needs_plotting
def test_atlas_report_renders_in_memory_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    labels = np.zeros((30, 36, 30), np.int16)
    labels[4:9, 15:21, 12:18] = 3
    labels[20:25, 15:21, 12:18] = 8
    rows = [
        {"index": 3, "name": "hippocampus", "color": "#ff0000", "n_inputs": 4,
         "mean_volume_mm3": 960.0},
        {"index": 8, "name": "amygdala", "color": "#00ff00", "n_inputs": 3,
         "mean_volume_mm3": 900.5},
    ]  # fmt: skip
    out = report.render_atlas_report(
        _image(labels), rows, threshold=25, n_inputs=4, sources=["a", "b", "c", "d"], space=SPACE
    )
    page = out["html"].decode()
    assert "hippocampus" in page and "Labels (2)" in page and "Inputs (4)" in page
    assert "at least 25 % of the 4 inputs" in page
    assert "MNI152 template shipped with nilearn" in page
    pixels = _png_pixels(out["png"]).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    green = (pixels[..., 1] > 200) & (pixels[..., 0] < 60) & (pixels[..., 2] < 60)
    assert red.sum() > 20 and green.sum() > 20
    assert list(tmp_path.iterdir()) == []


# -- what a browser shows ------------------------------------------------------------------
@needs_plotting
def test_a_browser_shows_the_page(blob_map, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no headless Chromium here (Debian: apt-get install chromium)")
    _report(blob_map, tmp_path, space=SPACE)
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
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
    pixels = _png_pixels(shot.read_bytes()).astype(int)
    # The figure's black panel and the white page both show ...
    assert (pixels.min(axis=-1) < 20).mean() > 0.1 and (pixels.min(axis=-1) > 235).mean() > 0.1
    # ... the underlay's grey anatomy, and the map's colours.
    grey = (np.ptp(pixels, axis=-1) < 8) & (pixels[..., 0] > 60) & (pixels[..., 0] < 200)
    assert grey.mean() > 0.02
    warm = (pixels[..., 0] > 180) & (pixels[..., 2] < 80)
    assert warm.sum() > 500


def _png_pixels(png: bytes) -> np.ndarray:
    import matplotlib.image

    return (matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3] * 255).astype(np.uint8)
