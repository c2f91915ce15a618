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

Modules, each re-exported here (its public names are this package's ``__all__``):

- :mod:`~nipype_heatmap.report.display`: the kinds, the colour scale, ticks and histogram
  bins (:func:`decide_display`, :class:`MapDisplay`, :func:`colormap`, :func:`histogram`);
- :mod:`~nipype_heatmap.report.figures`: the map read and checked, the underlay
  (:func:`choose_underlay`), the cuts (:func:`even_cuts`) and the drawing;
- :mod:`~nipype_heatmap.report.pages`: the page's HTML, :func:`render_map_report` and
  :func:`make_report`;
- :mod:`~nipype_heatmap.report.atlas`: a label atlas's report
  (:func:`render_atlas_report`, :func:`write_atlas_report`).
"""

from __future__ import annotations

from .atlas import render_atlas_report, write_atlas_report
from .display import CMAPS, KINDS, MapDisplay, colormap, decide_display, histogram
from .figures import choose_underlay, drawable, even_cuts
from .pages import make_report, render_map_report

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
