"""The report of a label atlas: its maximum-probability map in the labels' colours.

:func:`render_atlas_report` draws the map over an underlay
(:func:`~nipype_heatmap.report.figures.draw_atlas_figure`) and builds a self-contained
page with the label table; it returns bytes and writes nothing. :func:`write_atlas_report`
renders the report of an atlas written to disk and writes it.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from .figures import choose_underlay, draw_atlas_figure, figure_png, load_3d, plotting_modules
from .pages import page_head, page_image, page_inputs, page_meta

__all__ = ["render_atlas_report", "write_atlas_report"]


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

    img, _ = load_3d(dseg, "maximum-probability map")
    plotting_modules()  # the report extra is checked before the labels are read
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

    fig = draw_atlas_figure(
        shown,
        background,
        cmap,
        len(rows),
        title=title,
        underlay_sentence=underlay_sentence,
        n_cuts=n_cuts,
        n_mosaic=n_mosaic,
    )
    png = figure_png(fig)

    esc = html.escape
    body = "".join(
        f"<tr><td><span class='swatch' style='background:{esc(str(r['color']))}'></span></td>"
        f"<td>{esc(str(r['index']))}</td><td>{esc(str(r['name']))}</td>"
        f"<td>{esc(str(r['n_inputs']))}</td><td>{float(r['mean_volume_mm3']):.1f}</td></tr>"
        for r in rows
    )
    head = page_head(title) + page_meta(command)
    figure = page_image(
        png, "maximum-probability map: whole-brain axial slices and cuts in three orientations"
    )
    page = f"""{head}<p>At each voxel, the label most inputs have (ties:
the lowest label value), where at least {esc(threshold_text)} % of the {n_inputs} inputs have
it. Colours are the labels' colours from the table below. Space: {esc(space or "not given")}.
Underlay: {esc(underlay_sentence)}. Cuts are in millimetres; L and R mark the subject's left
and right.</p>
{figure}
<h2>Labels ({len(rows)})</h2>
<table><tr><th></th><th>index</th><th>name</th><th>inputs with the label</th>
<th>mean volume (mm&sup3;)</th></tr>{body}</table>
{page_inputs(list(sources))}
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
    from ..io import write_atomic

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
