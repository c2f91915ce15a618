"""A visual report a neuroimager can trust, built on nilearn's plotting.

nilearn (the ``report`` extra) draws what hand-made mosaics get wrong: orientation labels
(L/R), cut coordinates in millimetres, cuts through the map's peaks (so a small blob is not
missed between evenly spaced slices), a threshold under which the underlay shows, and an
interactive viewer. The page is one self-contained HTML file (figure inline, viewer inline,
no network), with the tool version, date, command line and a readable parameter table.
There is no SVG: nilearn's slices are raster images, and an SVG wrapping PNGs is not a
vector figure.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from ._optional import require

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
.swatch{display:inline-block;width:1.2em;height:1.2em;border:1px solid #888;
vertical-align:middle}
"""


def _plotting():
    require("matplotlib", "the visual report")
    import matplotlib

    matplotlib.use("Agg", force=True)
    require("nilearn", "the visual report")
    import matplotlib.pyplot as plt
    from nilearn import plotting

    return plt, plotting


def _display_images(
    img: nb.Nifti1Image, underlay: str | os.PathLike[str] | None
) -> tuple[nb.Nifti1Image, nb.Nifti1Image | None]:
    """The map with NaN as 0 (nilearn cannot cut through NaN), and the underlay if any.

    Without an underlay, none is drawn: nilearn's default MNI template would be a lie for
    a map in another space.
    """
    data = np.asanyarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3])
    shown = nb.Nifti1Image(np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0), img.affine)
    return shown, (nb.load(underlay) if underlay is not None else None)


def make_report(
    in_file: str | os.PathLike[str],
    figure_stem: str | os.PathLike[str],
    *,
    html_file: str | os.PathLike[str],
    underlay: str | os.PathLike[str] | None = None,
    sources: list[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    title: str = "",
    units: str = "value",
    command: str | None = None,
    threshold: float | None = None,
    n_cuts: int = 6,
) -> dict[str, str]:
    """Draw a map in three orientations over an underlay and write an HTML page about it.

    Parameters
    ----------
    in_file : str or os.PathLike
        The map.
    figure_stem : str or os.PathLike
        Path without extension of the ``.png`` figure (folders created).
    html_file : str or os.PathLike
        The self-contained HTML page.
    underlay : str or os.PathLike, optional
        Anatomical image (nilearn resamples it for display); else none is drawn.
    sources : list of str, optional
        The inputs, listed on the page.
    parameters : mapping, optional
        Shown in a table on the page.
    title : str
        Title of the figure and the page.
    units : str
        Colorbar label (e.g. "probability (fraction of inputs)" or "count").
    command : str, optional
        The command line that made the map, shown on the page.
    threshold : float, optional
        Values at or below it are transparent; default: just above 0, so that every
        voxel with a value shows and the underlay shows everywhere else.
    n_cuts : int, default=6
        Cuts per orientation, placed through the map's peaks.

    Returns
    -------
    dict
        Paths of the ``png`` and ``html`` files.
    """
    from ._version import __version__

    plt, plotting = _plotting()
    img = nb.load(in_file)
    shown, background = _display_images(img, underlay)
    values = np.asanyarray(shown.dataobj)
    vmax = float(values.max()) if values.max() > 0 else 1.0
    threshold = threshold if threshold is not None else min(1e-6, vmax / 1000)

    fig = plt.figure(figsize=(14, 11), facecolor="black")
    rows = fig.add_gridspec(4, 1, height_ratios=[1, 1, 1, 0.8], hspace=0.08)
    for row, (direction, name) in enumerate((("z", "axial"), ("y", "coronal"), ("x", "sagittal"))):
        ax = fig.add_subplot(rows[row])
        if values.max() > threshold:
            cuts = plotting.find_cut_slices(shown, direction=direction, n_cuts=n_cuts)
        else:
            cuts = n_cuts
        plotting.plot_stat_map(
            shown,
            bg_img=background,
            display_mode=direction,
            cut_coords=cuts,
            threshold=threshold,
            vmin=0,
            vmax=vmax,
            cmap="hot",
            symmetric_cbar=False,
            colorbar=row == 0,
            black_bg=True,
            dim=0,
            annotate=True,
            title=f"{name} cuts (mm)",
            axes=ax,
            figure=fig,
        )
    fig.suptitle(f"{title}\ncolour: {units}", color="white", fontsize=13)
    hist_ax = fig.add_subplot(rows[3])
    nonzero = values[values > threshold]
    if nonzero.size:
        hist_ax.hist(nonzero, bins=60, color="orange")
        hist_ax.set_yscale("log")
    hist_ax.set_xlabel(f"{units}, voxels above the threshold {threshold:g}", color="white")
    hist_ax.set_ylabel("voxels", color="white")
    hist_ax.tick_params(colors="white")
    hist_ax.set_facecolor("#111111")

    stem = Path(figure_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = str(stem) + ".png"
    fig.savefig(png, dpi=80, facecolor="black")
    plt.close(fig)

    with warnings.catch_warnings():  # a map without zeros has nothing to hide: fine
        warnings.filterwarnings("ignore", message="Threshold given was", category=UserWarning)
        viewer = plotting.view_img(
            shown,
            bg_img=background if background is not None else False,
            threshold=threshold,
            vmax=vmax,
            cmap="hot",
            symmetric_cmap=False,
            black_bg=True,
            dim=0,
            title=None,
            colorbar=True,
        )
    page = _page(
        title=title,
        units=units,
        png=Path(png),
        viewer=viewer.get_iframe(width=960, height=470),
        parameters=parameters or {},
        sources=sources or [],
        command=command,
        version=__version__,
        underlay=underlay,
        threshold=threshold,
    )
    Path(html_file).write_text(page)
    return {"png": png, "html": str(html_file)}


def _page(
    *,
    title: str,
    units: str,
    png: Path,
    viewer: str,
    parameters: Mapping[str, Any],
    sources: list[str],
    command: str | None,
    version: str,
    underlay: str | os.PathLike[str] | None,
    threshold: float,
) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><th>{esc(_PARAMETER_NAMES.get(k, k))}</th><td>{esc(_show(v))}</td></tr>"
        for k, v in parameters.items()
        if k != "GeneratedBy"
    )
    items = "".join(f"<li>{esc(s)}</li>" for s in sources)
    encoded = base64.b64encode(png.read_bytes()).decode("ascii")
    made = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    background = Path(underlay).name if underlay else "none (no anatomical image was given)"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{_STYLE}</style></head>
<body><h1>{esc(title)}</h1>
<p class="meta">nipype_heatmap {esc(version)} &middot; {esc(made)}</p>
<p class="meta">Command: <code>{esc(command or "(not recorded)")}</code></p>
<p>Colour: {esc(units)}; voxels at or below {threshold:g} are transparent.
Underlay: {esc(background)}. Cuts are in millimetres, through the map's peaks;
L and R mark the subject's left and right.</p>
<img alt="the map in axial, coronal and sagittal cuts, with a histogram"
 src="data:image/png;base64,{encoded}">
<h2>Explore</h2>
{viewer}
<h2>Parameters</h2><table>{rows}</table>
<h2>Inputs ({len(sources)})</h2><details><summary>show</summary><ol>{items}</ol></details>
</body></html>
"""


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


def write_atlas_report(
    stored: Mapping[str, str],
    atlas: Any,
    output_dir: str | os.PathLike[str],
    *,
    underlay: str | os.PathLike[str] | None = None,
    command: str | None = None,
) -> str:
    """The visual report of a label atlas: its maximum-probability map over an underlay in
    the labels' colours, and the label table with each label's sample count and volume.

    Parameters
    ----------
    stored : mapping
        The atlas's files (``th<k>`` maps, ``table``), as
        :func:`nipype_heatmap.atlas.write_atlas` or
        :func:`nipype_heatmap.bids.derivatives.write_atlas_derivatives` return them.
    atlas : LabelAtlasAccumulator or SparseAtlas
        The atlas (for its sample size and sources).
    output_dir : path-like
        Where the page goes (the figure in ``figures/``).
    underlay : path-like, optional
        Anatomical image to draw over; else none is drawn.
    command : str, optional
        Shown on the page.

    Returns
    -------
    str
        The HTML page's path.
    """
    from matplotlib.colors import ListedColormap

    from ._version import __version__

    plt, plotting = _plotting()
    maps = sorted((k for k in stored if k.startswith("th")), key=lambda k: k != "th25")
    if not maps:
        raise ValueError("the atlas report needs a maximum-probability map (a threshold)")
    dseg_file = stored[maps[0]]
    rows = _read_tsv(stored["table"])
    index_of = {int(row["index"]): n + 1 for n, row in enumerate(rows)}
    img = nb.load(dseg_file)
    labels = np.asanyarray(img.dataobj)
    ranks = np.zeros(labels.shape, np.int16)  # each label's row in the table, 1-based
    for value in np.unique(labels).tolist():
        ranks[labels == value] = index_of.get(int(value), 0)
    shown = nb.Nifti1Image(ranks, img.affine)
    cmap = ListedColormap([row["color"] for row in rows], name="atlas")
    background = nb.load(underlay) if underlay is not None else None

    fig = plt.figure(figsize=(14, 8.5), facecolor="black")
    grid = fig.add_gridspec(3, 1, hspace=0.08)
    for row, (direction, name) in enumerate((("z", "axial"), ("y", "coronal"), ("x", "sagittal"))):
        ax = fig.add_subplot(grid[row])
        plotting.plot_roi(
            shown,
            bg_img=background,
            display_mode=direction,
            cut_coords=6,
            cmap=cmap,
            vmin=0.5,
            vmax=len(rows) + 0.5,
            colorbar=False,
            black_bg=True,
            dim=0,
            annotate=True,
            title=f"{name} cuts (mm)",
            axes=ax,
            figure=fig,
            alpha=0.9,
        )
    sidecar = Path(dseg_file[: -len(".nii.gz")] + ".json")
    threshold = f"{json.loads(sidecar.read_text())['Threshold']:g}"
    title = f"Maximum-probability map at {threshold} %, {atlas.n_inputs} label images"
    fig.suptitle(title, color="white", fontsize=13)
    out_dir = Path(output_dir)
    stem = Path(dseg_file).name[: -len(".nii.gz")]
    png = out_dir / "figures" / f"{stem}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80, facecolor="black")
    plt.close(fig)

    esc = html.escape
    body = "".join(
        f"<tr><td><span class='swatch' style='background:{esc(r['color'])}'></span></td>"
        f"<td>{esc(r['index'])}</td><td>{esc(r['name'])}</td><td>{esc(r['n_inputs'])}</td>"
        f"<td>{float(r['mean_volume_mm3']):.1f}</td></tr>"
        for r in rows
    )
    sources = "".join(f"<li>{esc(r.path)}</li>" for r in atlas.records)
    made = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    encoded = base64.b64encode(png.read_bytes()).decode("ascii")
    underlay_name = Path(underlay).name if underlay else "none (no anatomical image was given)"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{_STYLE}</style></head>
<body><h1>{esc(title)}</h1>
<p class="meta">nipype_heatmap {esc(__version__)} &middot; {esc(made)}</p>
<p class="meta">Command: <code>{esc(command or "(not recorded)")}</code></p>
<p>At each voxel, the label most inputs have (ties: the lowest label value), where at least
{esc(threshold)} % of the {atlas.n_inputs} inputs have it. Colours are the labels' colours
from the table below. Underlay: {esc(underlay_name)}. Cuts are in millimetres; L and R mark
the subject's left and right.</p>
<img alt="maximum-probability map in axial, coronal and sagittal cuts"
 src="data:image/png;base64,{encoded}">
<h2>Labels ({len(rows)})</h2>
<table><tr><th></th><th>index</th><th>name</th><th>inputs with the label</th>
<th>mean volume (mm&sup3;)</th></tr>{body}</table>
<h2>Inputs ({atlas.n_inputs})</h2><details><summary>show</summary><ol>{sources}</ol></details>
</body></html>
"""
    html_file = out_dir / f"{stem}.html"
    html_file.write_text(page)
    return str(html_file)


def _read_tsv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:] if line]
