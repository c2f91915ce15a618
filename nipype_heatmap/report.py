"""The visual report of a map: a figure a neuroimager can read, and that never misstates it.

Rendering is separate from writing. :func:`render_map_report` and
:func:`render_atlas_report` return the bytes of the page (``"html"``) and of its figure
(``"png"``) and write nothing, so that a run's output plan can write every file together;
:func:`make_report` and :func:`write_atlas_report` are thin wrappers that write those bytes
atomically (:func:`nipype_heatmap.io.write_atomic`).

The scale comes from :func:`decide_display`, from every finite value and the kind of map:

- ``"probability"``: 0 to 1, whatever the map's maximum;
- ``"count"``: 0 to the maximum count, integer ticks;
- ``"signed"``: from -m to m (m the largest absolute value), cyan to blue below 0 and red
  to yellow above. A map with a negative value is shown so whatever its kind (logged);
- ``"value"``: 0 to the maximum.

The colour bar and the histogram cover every finite value. NaN and infinite voxels are not
drawn, and the page and figure say how many there are; a map that is not 3D is refused
before anything is drawn. The figure (nilearn's plotting) has a whole-brain mosaic of
evenly spaced axial slices and cuts through the map's peaks, with L/R marks and cut
positions in millimetres, and a histogram; the page adds nilearn's interactive viewer on the
same scale, the tool version, date, command line, parameters and inputs, all inline: one
self-contained HTML file that fetches nothing.

A map in an MNI152 space with no underlay given is drawn over the MNI152 template that
nilearn ships (no download), resampled to the map's grid, and the page says which template
that is; a map in another space is drawn over nothing, and the page says so. An underlay
given always wins. There is no SVG: nilearn's slices are raster images.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import html
import io
import itertools
import json
import logging
import math
import os
import re
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from ._optional import require
from .io import load_image

__all__ = [
    "CMAPS",
    "KINDS",
    "choose_underlay",
    "colormap",
    "decide_display",
    "drawable",
    "even_cuts",
    "histogram",
    "make_report",
    "MapDisplay",
    "render_atlas_report",
    "render_map_report",
    "write_atlas_report",
]

LOGGER = logging.getLogger(__name__)

#: The kinds of map, each with its own scale (see :func:`decide_display`).
KINDS = ("probability", "count", "signed", "value")

#: Colour map of each kind (see :func:`colormap`). Maps from 0 up: dark red to yellow
#: (matplotlib's "hot" without its black and white ends: a low value is never black on the
#: black figure, a high one never white like the white matter under it). Signed maps:
#: cyan to blue below 0, red to yellow above (FSL's convention), so that negative values
#: are as clearly coloured as positive ones, and no value is black, white or grey.
CMAPS = {
    "probability": "red_yellow",
    "count": "red_yellow",
    "value": "red_yellow",
    "signed": "cyan_blue_red_yellow",
}

#: What each kind is, for the page.
_KIND_SENTENCES = {
    "probability": "a probability map: colour from 0 to 1, whatever the map's maximum",
    "count": "a count map: colour from 0 to the largest count, in whole numbers",
    "signed": "a signed map: a scale symmetric about 0, cyan to blue below 0, red to yellow above",
    "value": "a map of values: colour from 0 to the largest value",
}

#: The MNI152 template nilearn ships, as it is: its file is
#: ``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz`` (ICBM 2009a, nonlinear, symmetric:
#: it is its own left-right mirror image, whatever nilearn's docstring says), skull-stripped
#: and rescaled by nilearn. Not fMRIPrep's MNI152NLin2009cAsym nor FSL's MNI152NLin6Asym.
_NILEARN_TEMPLATE = (
    "the MNI152 template shipped with nilearn (ICBM 2009a nonlinear symmetric, "
    "MNI152NLin2009aSym-like; skull-stripped)"
)

#: Readable names of the sidecar fields shown in the parameter table.
_PARAMETER_NAMES = {
    "Aggregation": "aggregation (mean: probability; sum: count)",
    "ClipToInputRange": "clipped to the inputs' value range",
    "Normalized": "min-max normalized to [0, 1]",
    "SeveralFilesPerSubject": "several files per subject allowed",
    "NumberOfInputs": "number of inputs",
    "Subjects": "subjects",
    "SpatialReference": "spatial reference",
    "Resolution": "resolution",
    "ValueRange": "value range of the map",
    "MissingValues": "missing values (NaN, Inf)",
}

#: The pages' style sheet.
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em}
table{border-collapse:collapse} th,td{text-align:left;padding:.25em 1em .25em 0;
vertical-align:top;border-bottom:1px solid #ddd} img{max-width:100%}
code{background:#f4f4f4;padding:.1em .3em;word-break:break-all} .meta{color:#444}
.warn{background:#fff3cd;border-left:4px solid #c90;padding:.4em .8em}
.swatch{display:inline-block;width:1.2em;height:1.2em;border:1px solid #888;
vertical-align:middle}
"""

#: Figure geometry (inches) and resolution.
_WIDTH = 14.0
_LEFT = 0.55
_RIGHT = 0.15
_DPI = 80


# -- deciding the display ------------------------------------------------------------------
@dataclass(frozen=True)
class MapDisplay:
    """How a map is drawn, decided from all its values by :func:`decide_display`.

    Attributes
    ----------
    kind : str
        The kind shown (``"signed"`` when the map has negative values, whatever was asked).
    requested : str
        The kind asked for.
    vmin, vmax : float
        The colour scale's ends; every finite value lies between them.
    cmap : str
        The colour map's name (:func:`colormap` gives the matplotlib one).
    ticks : tuple of float
        Colour bar ticks (whole numbers for a count map).
    threshold : float
        Voxels whose absolute value is at or below it are transparent.
    n_finite, n_drawn : int
        Finite voxels, and those of them above the threshold.
    n_nan, n_posinf, n_neginf : int
        NaN, +Inf and -Inf voxels (not drawn).
    data_min, data_max : float or None
        The smallest and largest finite value (None when there is none).
    notes : tuple of str
        What the reader must know about the scale (a kind changed, a scale extended).
    """

    kind: str
    requested: str
    vmin: float
    vmax: float
    cmap: str
    ticks: tuple[float, ...]
    threshold: float
    n_finite: int
    n_drawn: int
    n_nan: int
    n_posinf: int
    n_neginf: int
    data_min: float | None
    data_max: float | None
    notes: tuple[str, ...] = ()

    @property
    def n_nonfinite(self) -> int:
        """NaN and infinite voxels."""
        return self.n_nan + self.n_posinf + self.n_neginf

    def nonfinite_sentence(self) -> str:
        """Say how many voxels are not finite, e.g. ``"12 voxels are NaN, 3 are +Inf: not
        drawn"``; ``""`` when every voxel is finite."""
        parts: list[str] = []
        for n, what in ((self.n_nan, "NaN"), (self.n_posinf, "+Inf"), (self.n_neginf, "-Inf")):
            if n:
                verb = "is" if n == 1 else "are"
                noun = ("voxel " if n == 1 else "voxels ") if not parts else ""
                parts.append(f"{n:,} {noun}{verb} {what}")
        if not parts:
            return ""
        return ", ".join(parts) + ": not drawn, and not in the colour bar nor the histogram"

    def tick_label(self, value: float) -> str:
        """A colour bar or histogram tick's text (whole numbers for a count map)."""
        return f"{value:.0f}" if self.kind == "count" else f"{value:g}"


def decide_display(
    data: np.ndarray, kind: str = "value", *, threshold: float | None = None
) -> MapDisplay:
    """Decide how to draw a map so that the figure states it correctly.

    Parameters
    ----------
    data : numpy.ndarray
        The map's values (any shape; NaN and infinities allowed, and counted).
    kind : {"probability", "count", "signed", "value"}, default="value"
        What the map is. ``"probability"``: scale 0 to 1 (extended, with a note, if a value
        is above 1); ``"count"``: 0 to the largest count rounded up, integer ticks;
        ``"signed"``: -m to m on a diverging colour map, m the largest absolute value;
        ``"value"``: 0 to the largest value. A map with a negative value is shown as
        ``"signed"`` whatever the kind, with a warning logged and a note.
    threshold : float, optional
        Voxels whose absolute value is at or below it are transparent. Default: 1e-6 (or a
        thousandth of the largest absolute value, if smaller), so every non-zero voxel shows.

    Returns
    -------
    MapDisplay

    Raises
    ------
    ValueError
        If ``kind`` is unknown or ``threshold`` is negative or not finite.

    Examples
    --------
    >>> d = decide_display(np.array([0.0, 0.2, 0.49]), "probability")
    >>> d.vmin, d.vmax
    (0.0, 1.0)
    >>> decide_display(np.array([0, 3, 7]), "count").ticks
    (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)
    >>> d = decide_display(np.array([-40.0, 0.0, 25.0]), "value")
    >>> d.kind, d.vmin, d.vmax
    ('signed', -40.0, 40.0)
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}; pick the one that fits")
    values = np.asarray(data)
    finite = values[np.isfinite(values)].astype(np.float64, copy=False)
    lo = float(finite.min()) if finite.size else None
    hi = float(finite.max()) if finite.size else None
    extreme = max(abs(lo), abs(hi)) if lo is not None and hi is not None else 0.0
    if threshold is None:
        threshold = min(1e-6, extreme / 1000) if extreme > 0 else 1e-6
    elif not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold {threshold!r} must be a finite number, 0 or more")
    notes = []
    shown = kind
    if lo is not None and lo < 0 and kind != "signed":
        LOGGER.warning(
            "The %s map has negative values (down to %g): shown on a signed scale", kind, lo
        )
        notes.append(
            f"The map was given as a {kind} map but has negative values (down to {lo:.4g}): "
            "it is shown on a signed scale centred on 0, so that they show."
        )
        shown = "signed"
    if shown == "signed":
        vmax = extreme if extreme > 0 else 1.0
        vmin, ticks = -vmax, _nice_ticks(-vmax, vmax)
    elif shown == "probability":
        vmin, vmax = 0.0, max(1.0, hi or 0.0)
        ticks = (0.0, 0.25, 0.5, 0.75, 1.0) if vmax == 1.0 else _nice_ticks(0.0, vmax)
        if vmax > 1.0:
            LOGGER.warning("The probability map has values up to %g: scale extended", vmax)
            notes.append(
                f"Values up to {vmax:.4g}, above 1: this is not a probability map; the "
                "scale goes from 0 to its maximum."
            )
    elif shown == "count":
        vmin, vmax = 0.0, float(max(1, math.ceil(hi or 0.0)))
        ticks = _count_ticks(int(vmax))
        if finite.size and not np.array_equal(finite, np.round(finite)):
            notes.append("Some values are not whole numbers: this is not a plain count.")
    else:
        vmin, vmax = 0.0, (hi if hi is not None and hi > 0 else 1.0)
        ticks = _nice_ticks(0.0, vmax)
    return MapDisplay(
        kind=shown,
        requested=kind,
        vmin=float(vmin),
        vmax=float(vmax),
        cmap=CMAPS[shown],
        ticks=ticks,
        threshold=float(threshold),
        n_finite=int(finite.size),
        n_drawn=int(np.count_nonzero(np.abs(finite) > threshold)),
        n_nan=int(np.count_nonzero(np.isnan(values))),
        n_posinf=int(np.count_nonzero(np.isposinf(values))),
        n_neginf=int(np.count_nonzero(np.isneginf(values))),
        data_min=lo,
        data_max=hi,
        notes=tuple(notes),
    )


def colormap(name: str):
    """The matplotlib colour map of a :class:`MapDisplay`'s ``cmap`` name.

    ``"red_yellow"`` and ``"cyan_blue_red_yellow"`` are built here (see :data:`CMAPS`);
    any other name is matplotlib's.
    """
    import matplotlib
    from matplotlib.colors import ListedColormap

    if name == "red_yellow":
        hot = matplotlib.colormaps["hot"]
        return ListedColormap(hot(np.linspace(0.12, 0.75, 256)), name=name)
    if name == "cyan_blue_red_yellow":
        ramp = np.linspace(0.0, 1.0, 128)[:, None]
        cyan, blue = np.array([0.0, 1.0, 1.0, 1.0]), np.array([0.0, 0.3, 1.0, 1.0])
        red, yellow = np.array([1.0, 0.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0, 1.0])
        below = cyan + (blue - cyan) * ramp  # -max (cyan) to just below 0 (blue)
        above = red + (yellow - red) * ramp  # just above 0 (red) to max (yellow)
        return ListedColormap(np.vstack([below, above]), name=name)
    return matplotlib.colormaps[name]


def _nice_ticks(lo: float, hi: float, n: int = 6) -> tuple[float, ...]:
    """Round ticks (steps of 1, 2, 2.5 or 5 times a power of ten) from ``lo`` to ``hi``."""
    raw = (hi - lo) / n
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return tuple(round(k * step, 12) + 0.0 for k in range(first, last + 1))


def _count_ticks(top: int) -> tuple[float, ...]:
    """Whole-number ticks from 0 to ``top``, at most about nine, ``top`` always one."""
    step = next(
        s for m in itertools.count() for s in (10**m, 2 * 10**m, 5 * 10**m) if top / s <= 8
    )
    ticks = list(range(0, top + 1, step))
    if ticks[-1] != top:
        if len(ticks) > 1 and top - ticks[-1] < step / 2:
            ticks.pop()  # too close to the top's label to be read
        ticks.append(top)
    return tuple(float(t) for t in ticks)


def histogram(values: np.ndarray, display: MapDisplay) -> tuple[np.ndarray, np.ndarray]:
    """Count finite values in bins spanning the display's whole colour scale.

    Parameters
    ----------
    values : numpy.ndarray
        The map's values; non-finite ones are left out (they are counted in ``display``).
    display : MapDisplay
        The display decided for these values.

    Returns
    -------
    counts, edges : numpy.ndarray
        As :func:`numpy.histogram`: every finite value is in one bin. A count map has one
        bin per whole number (up to 200 of them); a signed map a bin centred on 0.
    """
    finite = np.asarray(values)[np.isfinite(values)]
    if display.kind == "count" and display.vmax <= 200:
        edges = np.arange(display.vmax + 2.0) - 0.5
    elif display.kind == "count":
        edges = np.linspace(-0.5, display.vmax + 0.5, 101)
    elif display.kind == "signed":
        edges = np.linspace(display.vmin, display.vmax, 62)  # 61 bins: one centred on 0
    else:
        edges = np.linspace(display.vmin, display.vmax, 61)
    counts, edges = np.histogram(finite, bins=edges)
    return counts, edges


# -- reading -------------------------------------------------------------------------------
def _load_3d(
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


def _values(img: nb.spatialimages.SpatialImage) -> np.ndarray:
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
        img, name = _load_3d(underlay, "underlay")
        img = nb.Nifti1Image(_values(img).astype(np.float32), img.affine)
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
def _plotting():
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
def _quiet_nilearn():
    """Silence nilearn's warnings that tell the report's reader nothing: a fully masked
    slice's minimum taken as NaN when it sets the underlay's contrast, a threshold that
    hides no voxel of a map without zeros."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Warning: converting a masked element to nan")
        warnings.filterwarnings("ignore", message="Threshold given was", category=UserWarning)
        yield


def _png(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=_DPI, facecolor="black")
    return out.getvalue()


def _draw_map_figure(
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

    Figure, plotting = _plotting()
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
    subtitle = _KIND_SENTENCES[display.kind]
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
        "colorbar": False,
        "black_bg": True,
        "dim": 0,
        "annotate": True,
        "title": None,
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


# -- the page ------------------------------------------------------------------------------
def _head(title: str) -> str:
    esc = html.escape
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{_STYLE}</style></head>
<body><h1>{esc(title)}</h1>
"""


def _meta(command: str | None) -> str:
    from ._version import __version__

    made = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<p class="meta">nipype_heatmap {html.escape(__version__)} &middot; {made}</p>\n'
        f'<p class="meta">Command: <code>{html.escape(command or "(not recorded)")}</code></p>\n'
    )


def _inputs(sources: Sequence[str]) -> str:
    items = "".join(f"<li>{html.escape(str(s))}</li>" for s in sources)
    return (
        f"<h2>Inputs ({len(sources)})</h2>"
        f"<details><summary>show</summary><ol>{items}</ol></details>"
    )


def _img(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">\n'


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_show(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _viewer(plotting, shown, background, display: MapDisplay) -> str:
    """nilearn's interactive viewer, inline (its scripts are in the page), same scale."""
    signed = display.kind == "signed"
    with _quiet_nilearn():
        view = plotting.view_img(
            shown,
            bg_img=background if background is not None else False,
            threshold=display.threshold,
            cmap=colormap(display.cmap),
            symmetric_cmap=signed,
            vmin=None if signed else display.vmin,
            vmax=display.vmax,
            black_bg=True,
            dim=0,
            title=None,
            colorbar=True,
            resampling_interpolation="nearest" if display.kind == "count" else "continuous",
        )
    # Its page links nilearn's favicon on GitHub: dropped, so that nothing is fetched.
    document = re.sub(r"<link\b[^>]*>", "", view.get_standalone())
    return (
        f'<iframe srcdoc="{html.escape(document, quote=True)}" width="960" height="470" '
        'frameBorder="0" title="interactive viewer"></iframe>'
    )


def render_map_report(
    img: nb.spatialimages.SpatialImage | str | os.PathLike[str],
    *,
    kind: str,
    title: str,
    space: str | None = None,
    underlay: nb.spatialimages.SpatialImage | str | os.PathLike[str] | None = None,
    units: str | None = None,
    sources: Sequence[str] = (),
    parameters: Mapping[str, Any] | None = None,
    command: str | None = None,
    threshold: float | None = None,
    n_cuts: int = 6,
    n_mosaic: int = 14,
) -> dict[str, bytes]:
    """Render the report of a map: its figure and its self-contained page, as bytes.

    Nothing is written: the caller writes the bytes (see :func:`make_report`).

    Parameters
    ----------
    img : nibabel image or str or os.PathLike
        The map: 3D, or 4D with one volume.
    kind : {"probability", "count", "signed", "value"}
        What the map is; it sets the scale (see :func:`decide_display`).
    title : str
        Title of the figure and the page.
    space : str, optional
        The map's template space (BIDS ``space`` label, e.g. ``"MNI152NLin2009cAsym"``).
        Without an underlay, an MNI152 space is drawn over nilearn's MNI152 template
        (see :func:`choose_underlay`).
    underlay : nibabel image or str or os.PathLike, optional
        Anatomical image to draw over; it always wins over the template.
    units : str, optional
        The colour bar's and histogram's label; default: the kind ("probability",
        "count", "value").
    sources : sequence of str, default=()
        The inputs, listed on the page.
    parameters : mapping, optional
        Shown in a table on the page (``GeneratedBy`` left out).
    command : str, optional
        The command line that made the map.
    threshold : float, optional
        Voxels whose absolute value is at or below it are transparent (see
        :func:`decide_display`).
    n_cuts : int, default=6
        Cuts per orientation through the map's peaks.
    n_mosaic : int, default=14
        Axial slices of the whole-brain mosaic (fewer when the map has fewer slices).

    Returns
    -------
    dict
        ``{"html": page, "png": figure}``: the page (UTF-8, with the figure and the viewer
        inline) and the figure alone.

    Raises
    ------
    ValueError
        If the map (or the underlay) is not 3D, naming it; if ``kind`` is unknown.
    ImportError
        Without the ``report`` extra (nilearn, matplotlib).

    Examples
    --------
    >>> from nipype_heatmap import generate_heatmap_volume
    >>> count = generate_heatmap_volume(
    ...     mask_dir, "maps", output_filename="lesion_count.nii.gz", use_mean=False
    ... )
    >>> out = render_map_report(count, kind="count", title="Lesion count, 3 masks")
    >>> sorted(out)
    ['html', 'png']
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}; pick the one that fits")
    img, _ = _load_3d(img, "map")
    _, plotting = _plotting()
    values = _values(img)
    display = decide_display(values, kind, threshold=threshold)
    units = units or {"signed": "value"}.get(display.kind, display.kind)
    shown = nb.Nifti1Image(drawable(values), img.affine)
    background, underlay_sentence = choose_underlay(underlay, space, shown)
    with _quiet_nilearn():
        fig = _draw_map_figure(
            shown,
            background,
            display,
            values,
            title=title,
            units=units,
            underlay_sentence=underlay_sentence,
            n_cuts=n_cuts,
            n_mosaic=n_mosaic,
        )
        png = _png(fig)
    page = _map_page(
        title=title,
        units=units,
        png=png,
        viewer=_viewer(plotting, shown, background, display),
        display=display,
        space=space,
        underlay_sentence=underlay_sentence,
        parameters=parameters or {},
        sources=list(sources),
        command=command,
    )
    return {"html": page.encode("utf-8"), "png": png}


def _map_page(
    *,
    title: str,
    units: str,
    png: bytes,
    viewer: str,
    display: MapDisplay,
    space: str | None,
    underlay_sentence: str,
    parameters: Mapping[str, Any],
    sources: list[str],
    command: str | None,
) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><th>{esc(_PARAMETER_NAMES.get(k, k))}</th><td>{esc(_show(v))}</td></tr>"
        for k, v in parameters.items()
        if k != "GeneratedBy"
    )
    if display.n_finite:
        values = (
            f"from {display.data_min:.4g} to {display.data_max:.4g} over {display.n_finite:,} "
            f"finite voxels; {display.n_drawn:,} of them are above the threshold and drawn"
        )
    else:
        values = "none is finite: nothing is drawn"
    warn = "".join(
        f'<p class="warn">{esc(text)}</p>\n'
        for text in (
            ([display.nonfinite_sentence() + "."] if display.n_nonfinite else [])
            + list(display.notes)
        )
    )
    kind = _KIND_SENTENCES[display.kind]
    return f"""{_head(title)}{_meta(command)}<ul>
<li>{esc(kind[0].upper() + kind[1:])}.</li>
<li>Colour: {esc(units)}; scale from {display.vmin:.4g} to {display.vmax:.4g}; voxels at or
below {display.threshold:g} in absolute value are transparent.</li>
<li>Values: {esc(values)}.</li>
<li>Space: {esc(space or "not given")}. Underlay: {esc(underlay_sentence)}.</li>
</ul>
{warn}<p>The figure shows evenly spaced axial slices through the whole brain, then cuts
through the map's peaks; positions are in millimetres, and L and R mark the subject's left
and right. The histogram counts every finite voxel, on the colour bar's scale.</p>
{_img(png, "the map: whole-brain axial slices, cuts through its peaks, and a histogram")}
<h2>Explore</h2>
{viewer}
<h2>Parameters</h2><table>{rows}</table>
{_inputs(sources)}
</body></html>
"""


# -- the wrappers that write ---------------------------------------------------------------
def _kind_from_parameters(parameters: Mapping[str, Any]) -> str:
    """The kind of a map from its sidecar fields (``Aggregation``, ``Normalized``,
    ``ClipToInputRange``, ``ValueRange``): a mean within [0, 1] is a probability, an
    unclipped sum a count, anything else a value."""
    if parameters.get("Normalized"):
        return "value"
    value_range = parameters.get("ValueRange")
    within = not value_range or (value_range[0] >= 0 and value_range[1] <= 1)
    if parameters.get("Aggregation") == "mean" and within:
        return "probability"
    if parameters.get("Aggregation") == "sum" and not parameters.get("ClipToInputRange"):
        return "count"
    return "value"


def _space_from_parameters(parameters: Mapping[str, Any]) -> str | None:
    reference = parameters.get("SpatialReference")
    if isinstance(reference, str) and reference and not any(c in reference for c in ":/"):
        return reference
    return None


def make_report(
    in_file: nb.spatialimages.SpatialImage | str | os.PathLike[str],
    figure_stem: str | os.PathLike[str],
    *,
    html_file: str | os.PathLike[str],
    underlay: nb.spatialimages.SpatialImage | str | os.PathLike[str] | None = None,
    sources: Sequence[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    title: str = "",
    units: str | None = None,
    command: str | None = None,
    threshold: float | None = None,
    n_cuts: int = 6,
    kind: str | None = None,
    space: str | None = None,
) -> dict[str, str]:
    """Render a map's report (:func:`render_map_report`) and write its figure and page.

    Each file is written atomically (:func:`nipype_heatmap.io.write_atomic`); folders are
    created.

    Parameters
    ----------
    in_file : nibabel image or str or os.PathLike
        The map.
    figure_stem : str or os.PathLike
        Path without extension of the ``.png`` figure.
    html_file : str or os.PathLike
        The self-contained HTML page.
    underlay, sources, parameters, units, command, threshold, n_cuts
        As :func:`render_map_report`.
    title : str, default=""
        Title of the figure and the page; default: the map's file name.
    kind : str, optional
        As :func:`render_map_report`; default: from ``parameters`` (a mean within [0, 1]
        is a probability, an unclipped sum a count, else a value).
    space : str, optional
        As :func:`render_map_report`; default: ``parameters["SpatialReference"]`` when it
        is a space name.

    Returns
    -------
    dict
        Paths of the ``png`` and ``html`` files.
    """
    from .io import write_atomic

    parameters = dict(parameters or {})
    if not title:
        title = Path(in_file).name if isinstance(in_file, (str, os.PathLike)) else "map"
    rendered = render_map_report(
        in_file,
        kind=kind or _kind_from_parameters(parameters),
        title=title,
        space=space or _space_from_parameters(parameters),
        underlay=underlay,
        units=units,
        sources=list(sources or []),
        parameters=parameters,
        command=command,
        threshold=threshold,
        n_cuts=n_cuts,
    )
    png = f"{os.fspath(figure_stem)}.png"
    for path, key in ((png, "png"), (html_file, "html")):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic([rendered[key]], path)
    return {"png": png, "html": str(html_file)}


# -- the atlas report ----------------------------------------------------------------------
def render_atlas_report(
    dseg: nb.spatialimages.SpatialImage | str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    threshold: float,
    n_inputs: int,
    sources: Sequence[str] = (),
    space: str | None = None,
    underlay: nb.spatialimages.SpatialImage | str | os.PathLike[str] | None = None,
    command: str | None = None,
    title: str | None = None,
    n_cuts: int = 6,
    n_mosaic: int = 7,
) -> dict[str, bytes]:
    """Render the report of a label atlas's maximum-probability map, as bytes.

    The map is drawn in the labels' colours over an underlay (chosen as for a map, see
    :func:`choose_underlay`), with the label table and each label's sample count and mean
    volume. Nothing is written.

    Parameters
    ----------
    dseg : nibabel image or str or os.PathLike
        The maximum-probability map (label values; 0 or unknown labels are not drawn).
    rows : sequence of mapping
        The label table's rows: ``index``, ``name``, ``color`` (``#rrggbb``),
        ``n_inputs``, ``mean_volume_mm3``, as :func:`nipype_heatmap.atlas.label_rows`.
    threshold : float
        The map's threshold, in percent of the inputs.
    n_inputs : int
        The number of label images.
    sources : sequence of str, default=()
        The inputs, listed on the page.
    space, underlay
        As :func:`render_map_report`.
    command : str, optional
        Shown on the page.
    title : str, optional
        Default: "Maximum-probability map at <threshold> %, <n> label images".
    n_cuts : int, default=6
        Cuts per orientation.
    n_mosaic : int, default=7
        Axial slices of the whole-brain row.

    Returns
    -------
    dict
        ``{"html": page, "png": figure}``.

    Raises
    ------
    ValueError
        If the map is not 3D.
    """
    from matplotlib.colors import ListedColormap

    img, _ = _load_3d(dseg, "maximum-probability map")
    Figure, plotting = _plotting()
    labels = np.asarray(img.dataobj).reshape(img.shape[:3])
    index_of = {int(row["index"]): n + 1 for n, row in enumerate(rows)}
    ranks = np.zeros(labels.shape, np.int16)  # each label's row in the table, 1-based
    for value in np.unique(labels).tolist():
        ranks[labels == value] = index_of.get(int(value), 0)
    shown = nb.Nifti1Image(ranks, img.affine)
    background, underlay_sentence = choose_underlay(underlay, space, shown)
    cmap = ListedColormap([str(row["color"]) for row in rows] or ["#ffffff"], name="atlas")
    threshold_text = f"{threshold:g}"
    title = title or f"Maximum-probability map at {threshold_text} %, {n_inputs} label images"

    regions = [(ranks > 0, img.affine)]
    if background is not None:
        regions.append((_brain(background), background.affine))
    mosaic = even_cuts(regions, img.affine, n_mosaic) or n_mosaic

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
        "vmax": len(rows) + 0.5,
        "colorbar": False,
        "black_bg": True,
        "dim": 0,
        "annotate": True,
        "title": None,
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
    png = _png(fig)

    esc = html.escape
    body = "".join(
        f"<tr><td><span class='swatch' style='background:{esc(str(r['color']))}'></span></td>"
        f"<td>{esc(str(r['index']))}</td><td>{esc(str(r['name']))}</td>"
        f"<td>{esc(str(r['n_inputs']))}</td><td>{float(r['mean_volume_mm3']):.1f}</td></tr>"
        for r in rows
    )
    page = f"""{_head(title)}{_meta(command)}<p>At each voxel, the label most inputs have (ties:
the lowest label value), where at least {esc(threshold_text)} % of the {n_inputs} inputs have
it. Colours are the labels' colours from the table below. Space: {esc(space or "not given")}.
Underlay: {esc(underlay_sentence)}. Cuts are in millimetres; L and R mark the subject's left
and right.</p>
{_img(png, "maximum-probability map: whole-brain axial slices and cuts in three orientations")}
<h2>Labels ({len(rows)})</h2>
<table><tr><th></th><th>index</th><th>name</th><th>inputs with the label</th>
<th>mean volume (mm&sup3;)</th></tr>{body}</table>
{_inputs(list(sources))}
</body></html>
"""
    return {"html": page.encode("utf-8"), "png": png}


def write_atlas_report(
    stored: Mapping[str, str],
    atlas: Any,
    output_dir: str | os.PathLike[str],
    *,
    underlay: str | os.PathLike[str] | None = None,
    command: str | None = None,
    space: str | None = None,
) -> str:
    """Render a label atlas's report (:func:`render_atlas_report`) and write it.

    Parameters
    ----------
    stored : mapping
        The atlas's files (``th<k>`` maps, ``table``), as
        :func:`nipype_heatmap.atlas.write_atlas` or
        :func:`nipype_heatmap.bids.derivatives.write_atlas_derivatives` return them. The
        ``th25`` map is drawn if there is one, else the first.
    atlas : LabelAtlasAccumulator or SparseAtlas
        The atlas (for its sample size and sources).
    output_dir : path-like
        Where the page goes (the figure in ``figures/``).
    underlay : path-like, optional
        Anatomical image to draw over (see :func:`choose_underlay`).
    command : str, optional
        Shown on the page.
    space : str, optional
        The atlas's template space; default: the map's ``space-`` entity, if any.

    Returns
    -------
    str
        The HTML page's path.

    Raises
    ------
    ValueError
        If ``stored`` has no maximum-probability map.
    """
    from .io import write_atomic

    maps = sorted((k for k in stored if k.startswith("th")), key=lambda k: k != "th25")
    if not maps:
        raise ValueError(
            "the atlas report needs a maximum-probability map: write the atlas with at "
            "least one threshold"
        )
    dseg_file = stored[maps[0]]
    stem = Path(dseg_file).name.removesuffix(".gz").removesuffix(".nii")
    sidecar = Path(dseg_file).with_name(f"{stem}.json")
    threshold = float(json.loads(sidecar.read_text())["Threshold"])
    if space is None:
        entity = [p for p in stem.split("_") if p.startswith("space-")]
        space = entity[0][len("space-") :] if entity else None
    rendered = render_atlas_report(
        dseg_file,
        _read_tsv(stored["table"]),
        threshold=threshold,
        n_inputs=atlas.n_inputs,
        sources=[str(r.path) for r in atlas.records],
        space=space,
        underlay=underlay,
        command=command,
    )
    out_dir = Path(output_dir)
    png = out_dir / "figures" / f"{stem}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    write_atomic([rendered["png"]], png)
    html_file = out_dir / f"{stem}.html"
    write_atomic([rendered["html"]], html_file)
    return str(html_file)


def _read_tsv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:] if line]
