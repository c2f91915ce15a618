"""The report's figures: the map read and checked, the underlay chosen, and the drawing.

A map is read as one 3D volume (:func:`load_3d`; anything else is refused before drawing),
drawn over an underlay (:func:`choose_underlay`) with nilearn's plotting on a matplotlib
``Figure`` (no pyplot state, no backend): a whole-brain mosaic of evenly spaced axial slices
(:func:`even_cuts`), cuts through the map's peaks, and a histogram
(:func:`draw_map_figure`), or a label atlas's maximum-probability map in the labels'
colours (:func:`draw_atlas_figure`). :func:`figure_png` gives the PNG bytes.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
import os
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

import nibabel as nb
import numpy as np

from .._optional import require
from ..io import load_image
from .display import KIND_SENTENCES, MapDisplay, colormap, histogram

__all__ = [
    "choose_underlay",
    "draw_atlas_figure",
    "draw_map_figure",
    "drawable",
    "even_cuts",
    "figure_png",
    "load_3d",
    "map_values",
    "plotting_modules",
    "quiet_nilearn",
]

LOGGER = logging.getLogger(__name__)

#: The MNI152 template nilearn ships, as it is: its file is
#: ``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz`` (ICBM 2009a, nonlinear, symmetric:
#: it is its own left-right mirror image, whatever nilearn's docstring says), skull-stripped
#: and rescaled by nilearn. Not fMRIPrep's MNI152NLin2009cAsym nor FSL's MNI152NLin6Asym.
_NILEARN_TEMPLATE = (
    "the MNI152 template shipped with nilearn (ICBM 2009a nonlinear symmetric, "
    "MNI152NLin2009aSym-like; skull-stripped)"
)

#: Figure geometry (inches) and resolution.
_WIDTH = 14.0
_LEFT = 0.55
_RIGHT = 0.15
_DPI = 80

#: What every cut of a report figure shares (nilearn's plot options): white on black, no
#: dimming of the underlay, L/R and coordinates written, no title or colour bar of its own.
_CUTS = {"colorbar": False, "black_bg": True, "dim": 0, "annotate": True, "title": None}


# -- reading -------------------------------------------------------------------------------
def load_3d(
    img: nb.spatialimages.SpatialImage | str | os.PathLike[str], what: str
) -> tuple[nb.spatialimages.SpatialImage, str]:
    """The image, checked to be 3D (a 4D image of one volume counts), and its name."""
    if isinstance(img, (str, os.PathLike)):
        name = os.fspath(img)
        img = load_image(name)
    else:
        name = img.get_filename() or f"the {what} (an image in memory)"
    shape = tuple(img.shape)
    if len(shape) < 3 or any(n != 1 for n in shape[3:]):
        raise ValueError(
            f"{name}: the report draws one 3D {what}, and this image has shape {shape}; "
            "pass a 3D image (for a 4D one, pick a volume first, e.g. with "
            "nilearn.image.index_img)"
        )
    return img, name


def map_values(img: nb.spatialimages.SpatialImage) -> np.ndarray:
    """The image's scaled values as 3D float64."""
    return np.asarray(img.dataobj, dtype=np.float64).reshape(img.shape[:3])


def drawable(values: np.ndarray) -> np.ndarray:
    """The values nilearn is given to draw: non-finite ones as 0, which is at or below any
    threshold and so transparent (nilearn would make them 0 too, but silently; the page
    counts them). float32, as nilearn draws."""
    return np.where(np.isfinite(values), values, 0.0).astype(np.float32)


# -- the underlay --------------------------------------------------------------------------
def choose_underlay(
    underlay: nb.spatialimages.SpatialImage | str | os.PathLike[str] | None,
    space: str | None,
    target: nb.spatialimages.SpatialImage,
) -> tuple[nb.spatialimages.SpatialImage | None, str]:
    """Pick the anatomical image to draw a map over, and say what it is.

    Parameters
    ----------
    underlay : nibabel image or path-like, optional
        An anatomical image; when given, it is used (nilearn resamples it for display).
    space : str, optional
        The map's template space (BIDS ``space`` label). Without an underlay, a space whose
        name starts with ``MNI152`` gets nilearn's MNI152 template (shipped with nilearn,
        no download), resampled to the map's grid; any other space gets none.
    target : nibabel image
        The map (its grid).

    Returns
    -------
    image or None, str
        The underlay, and a sentence for the page saying what it is.
    """
    if underlay is not None:
        img, name = load_3d(underlay, "underlay")
        img = nb.Nifti1Image(map_values(img).astype(np.float32), img.affine)
        shown = Path(name).name if isinstance(underlay, (str, os.PathLike)) else name
        return img, f"{shown} (given)"
    if space and space.startswith("MNI152"):
        require("nilearn", "the visual report")
        from nilearn import datasets, image

        with warnings.catch_warnings():  # older nilearn warns of coming default changes
            warnings.simplefilter("ignore", FutureWarning)
            template = datasets.load_mni152_template(resolution=1)
            resampled = image.resample_to_img(template, target, interpolation="continuous")
        LOGGER.info("Drawing the %s map over nilearn's MNI152 template", space)
        return resampled, (
            f"{_NILEARN_TEMPLATE}, resampled to the map's grid; an approximation of {space}, "
            "not that template itself"
        )
    if space:
        return None, (
            "none: no anatomical image was given, and only MNI152 spaces get a default one "
            f"(this map is in {space}; give one with underlay= or --underlay)"
        )
    return None, (
        "none: no anatomical image was given and the map's space is not known "
        "(give one with underlay= or --underlay)"
    )


# -- drawing -------------------------------------------------------------------------------
def plotting_modules():
    """nilearn's plotting module and matplotlib's Figure (no pyplot state, no backend)."""
    require("matplotlib", "the visual report")
    require("nilearn", "the visual report")
    from matplotlib.figure import Figure
    from nilearn import plotting

    return Figure, plotting


class _Stack:
    """Rows of a figure from top to bottom, in inches: each row's rectangle in figure
    fractions, once the figure's height is known."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float]] = []

    def add(self, name: str, height: float) -> None:
        self.rows.append((name, height))

    @property
    def height(self) -> float:
        return sum(h for _, h in self.rows)

    def rect(self, name: str, left: float = _LEFT, right: float = _RIGHT) -> list[float]:
        top = 0.0
        for row, h in self.rows:
            if row == name:
                total = self.height
                return [
                    left / _WIDTH,
                    1 - (top + h) / total,
                    1 - (left + right) / _WIDTH,
                    h / total,
                ]
            top += h
        raise KeyError(name)


def _extent(mask: np.ndarray, affine: np.ndarray, axis: int) -> tuple[float, float] | None:
    """World coordinates (mm) along ``axis`` spanned by the mask's bounding box."""
    if not mask.any():
        return None
    bounds = []
    for d in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != d)))
        bounds.append((hit[0], hit[-1]))
    corners = np.array(list(itertools.product(*bounds)), dtype=np.float64)
    world = nb.affines.apply_affine(affine, corners)[:, axis]
    return float(world.min()), float(world.max())


def even_cuts(
    regions: Sequence[tuple[np.ndarray, np.ndarray]], affine: np.ndarray, n: int, axis: int = 2
) -> list[float]:
    """Evenly spaced cut positions (mm) through everything the regions cover.

    Parameters
    ----------
    regions : sequence of (mask, affine)
        Boolean volumes and their affines (the map's drawn voxels, the underlay's brain);
        the cuts span the union of their extents.
    affine : numpy.ndarray
        The map's affine: its voxel size along ``axis`` bounds how close cuts get.
    n : int
        Cuts wanted (fewer when the extent has fewer slices).
    axis : int, default=2
        World axis: 0 (x, sagittal), 1 (y, coronal), 2 (z, axial).

    Returns
    -------
    list of float
        Cut positions (mm), on the map's slices, a whole number of slices apart, centred
        in the extent; its first and last slice are left out when there is room.
    """
    spans = [s for mask, aff in regions if (s := _extent(mask, aff, axis)) is not None]
    if not spans:
        return []
    lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
    step = float(np.abs(affine[axis, :3]).max()) or 1.0
    slices = int(round((hi - lo) / step)) + 1
    n = max(1, min(n, slices))
    gap = max(1, round((slices - 1) / (n + 1)))  # about a gap's margin at each end
    while gap > 1 and (n - 1) * gap > slices - 1:
        gap -= 1
    first = lo + step * ((slices - 1 - gap * (n - 1)) // 2)
    origin = float(affine[axis, 3])  # cuts on the map's slice centres
    return [
        round(origin + step * round((first + k * gap * step - origin) / step), 2) + 0.0
        for k in range(n)
    ]


def _split(cuts: Sequence[float], per_row: int) -> list[list[float]]:
    rows = math.ceil(len(cuts) / per_row)
    size = math.ceil(len(cuts) / rows) if rows else 0
    return [list(cuts[i : i + size]) for i in range(0, len(cuts), size)] if size else []


def _row_label(fig, stack: _Stack, name: str, label: str) -> None:
    """A row's name, rotated in the left margin, where it covers nothing."""
    x, y, _, h = stack.rect(name)
    fig.text(0.5 * x, y + h / 2, label, rotation=90, color="#cccccc", va="center", ha="center")


def _heading(fig, stack: _Stack, name: str, text: str) -> None:
    """A section heading in its own row, above the cuts, where it covers nothing."""
    x, y, _, h = stack.rect(name)
    fig.text(x, y + 0.25 * h, text, color="white", fontsize=12, va="bottom", ha="left")


@contextlib.contextmanager
def quiet_nilearn():
    """Silence nilearn's warnings that tell the report's reader nothing: a fully masked
    slice's minimum taken as NaN when it sets the underlay's contrast, a threshold that
    hides no voxel of a map without zeros."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Warning: converting a masked element to nan")
        warnings.filterwarnings("ignore", message="Threshold given was", category=UserWarning)
        yield


def figure_png(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=_DPI, facecolor="black")
    return out.getvalue()


def draw_map_figure(
    shown: nb.Nifti1Image,
    background: nb.spatialimages.SpatialImage | None,
    display: MapDisplay,
    values: np.ndarray,
    *,
    title: str,
    units: str,
    underlay_sentence: str,
    n_cuts: int,
    n_mosaic: int,
):
    """The report's figure: colour bar, whole-brain axial mosaic, cuts through the peaks,
    histogram and notes. Returns the matplotlib Figure."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    Figure, plotting = plotting_modules()
    mosaic, peaks = _cut_positions(plotting, shown, background, display, n_cuts, n_mosaic)

    stack = _Stack()
    stack.add("title", 0.75)
    stack.add("colorbar", 0.32)
    stack.add("colorbar-label", 0.55)
    stack.add("mosaic-heading", 0.4)
    for i in range(len(mosaic)):
        stack.add(f"mosaic{i}", 2.0)
    stack.add("peaks-heading", 0.5)
    for direction, height in (("z", 2.0), ("y", 2.0), ("x", 1.75)):
        stack.add(direction, height)
    stack.add("histogram-gap", 0.45)
    stack.add("histogram", 1.7)
    stack.add("histogram-label", 0.55)
    notes = _figure_notes(display, underlay_sentence)
    stack.add("notes", 0.22 * len(notes) + 0.2)

    fig = Figure(figsize=(_WIDTH, stack.height), facecolor="black")
    x, y, w, h = stack.rect("title")
    fig.text(0.5, y + h * 0.55, title, color="white", fontsize=14, ha="center", va="center")
    subtitle = KIND_SENTENCES[display.kind]
    fig.text(0.5, y + h * 0.12, subtitle, color="#cccccc", fontsize=11, ha="center", va="center")

    norm = Normalize(vmin=display.vmin, vmax=display.vmax)
    x, y, w, h = stack.rect("colorbar")
    cax = fig.add_axes([0.3, y, 0.4, h])
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap=colormap(display.cmap)), cax=cax, orientation="horizontal"
    )
    bar.set_ticks(list(display.ticks), labels=[display.tick_label(t) for t in display.ticks])
    bar.set_label(units, color="white", fontsize=11)
    bar.outline.set_edgecolor("white")
    cax.tick_params(colors="white", labelsize=10)

    options = {
        "threshold": display.threshold,
        "vmin": display.vmin,
        "vmax": display.vmax,
        "cmap": colormap(display.cmap),
        "symmetric_cbar": display.kind == "signed",
        **_CUTS,
        "figure": fig,
        "resampling_interpolation": "nearest" if display.kind == "count" else "continuous",
    }
    _heading(fig, stack, "mosaic-heading", _mosaic_heading([c for row in mosaic for c in row]))
    for i, cuts in enumerate(mosaic):
        ax = fig.add_axes(stack.rect(f"mosaic{i}"))
        plotting.plot_stat_map(
            shown, bg_img=background, display_mode="z", cut_coords=cuts, axes=ax, **options
        )
        _row_label(fig, stack, f"mosaic{i}", "axial")
    _heading(fig, stack, "peaks-heading", "Through the map's peaks (cut positions in mm)")
    for direction, name in (("z", "axial"), ("y", "coronal"), ("x", "sagittal")):
        ax = fig.add_axes(stack.rect(direction))
        plotting.plot_stat_map(
            shown,
            bg_img=background,
            display_mode=direction,
            cut_coords=peaks[direction],
            axes=ax,
            **options,
        )
        _row_label(fig, stack, direction, name)

    _draw_histogram(fig, stack, display, values, units)
    x, y, w, h = stack.rect("notes")
    for i, line in enumerate(notes):  # warnings (marked "! ") in amber
        colour = "#ffcc66" if line.startswith("! ") else "#cccccc"
        text = line.removeprefix("! ")
        fig.text(x, y + h - (i + 1) * 0.22 / stack.height, text, color=colour, fontsize=10)
    return fig


def _brain(img: nb.spatialimages.SpatialImage) -> np.ndarray:
    """An underlay's voxels above 5 % of its largest finite value: the anatomy's extent."""
    anat = np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3])
    finite = np.isfinite(anat)
    top = float(anat[finite].max()) if finite.any() else 0.0
    return finite & (anat > 0.05 * top) if top > 0 else np.zeros(anat.shape, bool)


def _cut_positions(
    plotting,
    shown: nb.Nifti1Image,
    background: nb.spatialimages.SpatialImage | None,
    display: MapDisplay,
    n_cuts: int,
    n_mosaic: int,
) -> tuple[list[list[float]], dict[str, list[float]]]:
    """The mosaic's axial cuts (rows of at most 7), evenly spaced through the drawn voxels
    and the underlay's anatomy, and the cuts through the peaks in each direction (nilearn's
    ``find_cut_slices``; evenly spaced through the grid when nothing is drawn)."""
    data = np.asanyarray(shown.dataobj)
    grid = [(np.ones(data.shape, bool), shown.affine)]
    regions = [(np.abs(data) > display.threshold, shown.affine)]
    if background is not None:
        regions.append((_brain(background), background.affine))
    mosaic = even_cuts(regions, shown.affine, n_mosaic) or even_cuts(grid, shown.affine, n_mosaic)
    peaks = {}
    for direction, axis in (("z", 2), ("y", 1), ("x", 0)):
        if display.n_drawn:
            found = plotting.find_cut_slices(shown, direction=direction, n_cuts=n_cuts)
            peaks[direction] = sorted(float(c) for c in found)
        else:
            peaks[direction] = even_cuts(grid, shown.affine, n_cuts, axis=axis)
    return _split(mosaic, 7), peaks


def _mosaic_heading(cuts: Sequence[float] | int) -> str:
    """The whole-brain mosaic's heading, with the cuts' spacing when they are known."""
    step = ""
    if isinstance(cuts, Sequence) and len(cuts) > 1:
        step = f" every {abs(cuts[1] - cuts[0]):g} mm"
    return f"Whole brain: axial slices evenly spaced{step}"


def _figure_notes(display: MapDisplay, underlay_sentence: str) -> list[str]:
    """The figure's footer lines: what is not drawn, and what the underlay is."""
    lines = []
    if display.n_nonfinite:
        lines.append("! " + display.nonfinite_sentence() + ".")
    for note in display.notes:
        lines.extend("! " + part for part in textwrap.wrap(note, 150))
    lines.extend(textwrap.wrap(f"Underlay: {underlay_sentence}.", 150))
    lines.append("L and R: the subject's left and right.")
    return lines


def _draw_histogram(fig, stack: _Stack, display: MapDisplay, values: np.ndarray, units: str):
    counts, edges = histogram(values, display)
    ax = fig.add_axes(stack.rect("histogram", left=1.6, right=1.6))
    ax.set_facecolor("#111111")
    if counts.any():
        widths = np.diff(edges) * (0.8 if display.kind == "count" else 1.0)  # whole numbers
        ax.bar((edges[:-1] + edges[1:]) / 2, counts, width=widths, color="#f0a030")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5)  # a bin of one voxel still shows
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xticks(list(display.ticks), labels=[display.tick_label(t) for t in display.ticks])
    ax.set_xlabel(units, color="white", fontsize=11)
    ax.set_ylabel("voxels (log scale)", color="white")
    ax.tick_params(colors="white")
    for spine in ax.spines.values():
        spine.set_color("#888888")
    hidden = display.n_finite - display.n_drawn
    ax.set_title(
        f"All {display.n_finite:,} finite voxels; {hidden:,} of them at or below "
        f"{display.threshold:g} (in absolute value) are transparent in the cuts",
        color="#cccccc",
        fontsize=10,
        loc="left",
    )


# -- the atlas's figure --------------------------------------------------------------------
def draw_atlas_figure(
    shown: nb.Nifti1Image,
    background: nb.spatialimages.SpatialImage | None,
    cmap,
    n_labels: int,
    *,
    title: str,
    underlay_sentence: str,
    n_cuts: int,
    n_mosaic: int,
):
    """The atlas report's figure: a whole-brain axial row and cuts in three orientations
    through the labelled region, in the labels' colours, and notes. Returns the matplotlib
    Figure.

    ``shown`` holds each voxel's row in the label table (1-based; 0 is not drawn), ``cmap``
    has a colour per row, and ``n_labels`` is the number of rows.
    """
    Figure, plotting = plotting_modules()
    regions = [(np.asanyarray(shown.dataobj) > 0, shown.affine)]
    if background is not None:
        regions.append((_brain(background), background.affine))
    mosaic = even_cuts(regions, shown.affine, n_mosaic) or n_mosaic

    stack = _Stack()
    stack.add("title", 0.6)
    stack.add("mosaic-heading", 0.4)
    stack.add("mosaic0", 2.0)
    stack.add("peaks-heading", 0.5)
    for direction, height in (("z", 2.0), ("y", 2.0), ("x", 1.75)):
        stack.add(direction, height)
    notes = textwrap.wrap(f"Underlay: {underlay_sentence}.", 150)
    notes.append("L and R: the subject's left and right; colours: the label table's.")
    stack.add("notes", 0.22 * len(notes) + 0.25)
    fig = Figure(figsize=(_WIDTH, stack.height), facecolor="black")
    x, y, w, h = stack.rect("title")
    fig.text(0.5, y + h / 2, title, color="white", fontsize=14, ha="center", va="center")
    options = {
        "bg_img": background,
        "cmap": cmap,
        "vmin": 0.5,
        "vmax": n_labels + 0.5,
        **_CUTS,
        "figure": fig,
        "alpha": 0.9,
    }
    _heading(fig, stack, "mosaic-heading", _mosaic_heading(mosaic))
    ax = fig.add_axes(stack.rect("mosaic0"))
    plotting.plot_roi(shown, display_mode="z", cut_coords=mosaic, axes=ax, **options)
    _row_label(fig, stack, "mosaic0", "axial")
    _heading(fig, stack, "peaks-heading", "Through the labelled region (cut positions in mm)")
    for direction, name in (("z", "axial"), ("y", "coronal"), ("x", "sagittal")):
        ax = fig.add_axes(stack.rect(direction))
        plotting.plot_roi(shown, display_mode=direction, cut_coords=n_cuts, axes=ax, **options)
        _row_label(fig, stack, direction, name)
    x, y, w, h = stack.rect("notes")
    for i, line in enumerate(notes):
        fig.text(x, y + h - (i + 1) * 0.22 / stack.height, line, color="#cccccc", fontsize=10)
    return fig
