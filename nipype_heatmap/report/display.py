"""How a map is shown: its kind, its colour scale and ticks, and its histogram's bins.

:func:`decide_display` reads every finite value of a map and the kind asked for, and returns
a :class:`MapDisplay`: the scale, the colour map's name (:data:`CMAPS`, built by
:func:`colormap`), the ticks, the threshold below which voxels are transparent, and how many
voxels are not finite. Nothing here draws: matplotlib is imported only by :func:`colormap`.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CMAPS",
    "KINDS",
    "KIND_SENTENCES",
    "MapDisplay",
    "colormap",
    "decide_display",
    "histogram",
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
KIND_SENTENCES = {
    "probability": "a probability map: colour from 0 to 1, whatever the map's maximum",
    "count": "a count map: colour from 0 to the largest count, in whole numbers",
    "signed": "a signed map: a scale symmetric about 0, cyan to blue below 0, red to yellow above",
    "value": "a map of values: colour from 0 to the largest value",
}


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
