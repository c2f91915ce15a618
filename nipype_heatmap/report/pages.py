"""The map's report page: HTML pieces, :func:`render_map_report` and :func:`make_report`.

:func:`render_map_report` reads the map, decides its display
(:func:`~nipype_heatmap.report.display.decide_display`), draws its figure
(:mod:`~nipype_heatmap.report.figures`) and builds one self-contained page around it:
nilearn's interactive viewer on the same scale, the tool version, date, command line,
parameters and inputs, all inline. It returns bytes and writes nothing;
:func:`make_report` writes them. The pieces every page has (:func:`page_head`,
:func:`page_meta`, :func:`page_image`, :func:`page_inputs`) are shared with the atlas
report.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nb

from .display import KIND_SENTENCES, KINDS, MapDisplay, colormap, decide_display
from .figures import (
    choose_underlay,
    draw_map_figure,
    drawable,
    figure_png,
    load_3d,
    map_values,
    plotting_modules,
    quiet_nilearn,
)

__all__ = [
    "make_report",
    "page_head",
    "page_image",
    "page_inputs",
    "page_meta",
    "render_map_report",
]

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


# -- the page ------------------------------------------------------------------------------
def page_head(title: str) -> str:
    esc = html.escape
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{_STYLE}</style></head>
<body><h1>{esc(title)}</h1>
"""


def page_meta(command: str | None) -> str:
    from .._version import __version__

    made = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<p class="meta">nipype_heatmap {html.escape(__version__)} &middot; {made}</p>\n'
        f'<p class="meta">Command: <code>{html.escape(command or "(not recorded)")}</code></p>\n'
    )


def page_inputs(sources: Sequence[str]) -> str:
    items = "".join(f"<li>{html.escape(str(s))}</li>" for s in sources)
    return (
        f"<h2>Inputs ({len(sources)})</h2>"
        f"<details><summary>show</summary><ol>{items}</ol></details>"
    )


def page_image(png: bytes, alt: str) -> str:
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
    with quiet_nilearn():
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
    img, _ = load_3d(img, "map")
    _, plotting = plotting_modules()
    values = map_values(img)
    display = decide_display(values, kind, threshold=threshold)
    units = units or {"signed": "value"}.get(display.kind, display.kind)
    shown = nb.Nifti1Image(drawable(values), img.affine)
    background, underlay_sentence = choose_underlay(underlay, space, shown)
    with quiet_nilearn():
        fig = draw_map_figure(
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
        png = figure_png(fig)
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
    kind = KIND_SENTENCES[display.kind]
    return f"""{page_head(title)}{page_meta(command)}<ul>
<li>{esc(kind[0].upper() + kind[1:])}.</li>
<li>Colour: {esc(units)}; scale from {display.vmin:.4g} to {display.vmax:.4g}; voxels at or
below {display.threshold:g} in absolute value are transparent.</li>
<li>Values: {esc(values)}.</li>
<li>Space: {esc(space or "not given")}. Underlay: {esc(underlay_sentence)}.</li>
</ul>
{warn}<p>The figure shows evenly spaced axial slices through the whole brain, then cuts
through the map's peaks; positions are in millimetres, and L and R mark the subject's left
and right. The histogram counts every finite voxel, on the colour bar's scale.</p>
{page_image(png, "the map: whole-brain axial slices, cuts through its peaks, and a histogram")}
<h2>Explore</h2>
{viewer}
<h2>Parameters</h2><table>{rows}</table>
{page_inputs(sources)}
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
    from ..io import write_atomic

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
