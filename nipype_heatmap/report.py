"""A visual report a person can judge at a glance: mosaic, colorbar, histogram, HTML page.

matplotlib comes with the ``report`` extra and is imported only here, with the non-GUI Agg
backend. Without an anatomical underlay the map is drawn over its own field of view (the
grid of the inputs, in gray where the map is defined) so the extent is still visible.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import nibabel as nb
import numpy as np


def _matplotlib():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "the visual report needs matplotlib: pip install 'nipype_heatmap[report]'"
        ) from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _underlay(heatmap: nb.Nifti1Image, underlay: str | os.PathLike[str] | None) -> np.ndarray:
    data = np.asanyarray(heatmap.dataobj, dtype=np.float32)
    if underlay is None:
        return np.isfinite(data).astype(np.float32) * 0.35  # the grid's field of view
    anat = nb.load(underlay)
    if anat.shape[:3] != heatmap.shape[:3] or not np.allclose(anat.affine, heatmap.affine):
        from nibabel.processing import resample_from_to

        anat = resample_from_to(anat, (heatmap.shape[:3], heatmap.affine), order=1)
    values = anat.get_fdata(dtype=np.float32).reshape(heatmap.shape[:3])
    lo, hi = np.percentile(values[np.isfinite(values)], [2, 98])
    return np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1)


def _slices(data: np.ndarray, axis: int, n: int) -> list[int]:
    """n slice indices through the part of ``axis`` where the map is non-zero."""
    support = np.nan_to_num(data) != 0
    other = tuple(a for a in range(3) if a != axis)
    hits = np.flatnonzero(support.any(axis=other))
    lo, hi = (hits[0], hits[-1]) if hits.size else (0, data.shape[axis] - 1)
    return [int(round(v)) for v in np.linspace(lo, hi, n + 2)[1:-1]]


def make_report(
    in_file: str | os.PathLike[str],
    figure_stem: str | os.PathLike[str],
    *,
    html_file: str | os.PathLike[str],
    underlay: str | os.PathLike[str] | None = None,
    sources: list[str] | None = None,
    parameters: dict | None = None,
    title: str = "",
    units: str = "value",
    n_slices: int = 6,
) -> dict[str, str]:
    """Draw the heatmap as an axial/coronal/sagittal mosaic with a histogram.

    Parameters
    ----------
    in_file : str or os.PathLike
        The map.
    figure_stem : str or os.PathLike
        Path without extension for ``.png`` and ``.svg`` (folders created).
    html_file : str or os.PathLike
        A small self-contained HTML page: the figure inline, the parameters, the inputs.
    underlay : str or os.PathLike, optional
        Anatomical image (resampled to the map's grid when needed).
    sources : list of str, optional
        The inputs, listed on the page.
    parameters : dict, optional
        Shown in a table on the page and in the figure's title line.
    title : str
        Figure title.
    units : str
        Colorbar label (e.g. "probability (fraction of inputs)" or "count").
    n_slices : int, default=6
        Slices per row.

    Returns
    -------
    dict
        Paths of the ``png``, ``svg`` and ``html`` files.
    """
    plt = _matplotlib()
    img = nb.load(in_file)
    data = np.asanyarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3])
    back = _underlay(img, underlay)
    finite = data[np.isfinite(data)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    shown = np.ma.masked_where(~np.isfinite(data) | (data <= 0), data)
    params = parameters or {}
    n_inputs = params.get("NumberOfInputs", "?")

    fig = plt.figure(figsize=(2.0 * n_slices + 1.5, 9.5), facecolor="black")
    grid = fig.add_gridspec(
        4, n_slices + 1, height_ratios=[1, 1, 1, 0.9], width_ratios=[1] * n_slices + [0.12]
    )
    image = None
    for row, (axis, name) in enumerate(((2, "axial"), (1, "coronal"), (0, "sagittal"))):
        for col, index in enumerate(_slices(data, axis, n_slices)):
            ax = fig.add_subplot(grid[row, col])
            take = [slice(None)] * 3
            take[axis] = index
            ax.imshow(np.rot90(back[tuple(take)]), cmap="gray", vmin=0, vmax=1)
            image = ax.imshow(
                np.rot90(shown[tuple(take)]), cmap="hot", vmin=0, vmax=vmax, alpha=0.85
            )
            ax.set_axis_off()
            ax.set_title(f"{name} {index}", color="white", fontsize=8)
    colorbar_ax = fig.add_subplot(grid[0:3, n_slices])
    if image is not None:
        colorbar = fig.colorbar(image, cax=colorbar_ax)
        colorbar.set_label(units, color="white")
        colorbar.ax.yaxis.set_tick_params(color="white", labelcolor="white")
    hist_ax = fig.add_subplot(grid[3, : n_slices // 2 + 1])
    nonzero = finite[finite != 0]
    if nonzero.size:
        hist_ax.hist(nonzero, bins=50, color="orange")
        hist_ax.set_yscale("log")
    hist_ax.set_xlabel(f"non-zero {units}", color="white")
    hist_ax.set_ylabel("voxels", color="white")
    hist_ax.tick_params(colors="white")
    hist_ax.set_facecolor("#111111")
    flags = "\n".join(
        f"{k}: {params[k]}"
        for k in ("Aggregation", "ClipToInputRange", "Normalized")
        if k in params
    )
    info_ax = fig.add_subplot(grid[3, n_slices // 2 + 1 :])
    info_ax.set_axis_off()
    info_ax.text(
        0.0,
        0.9,
        f"{n_inputs} inputs\n{flags}\n{int(nonzero.size)} non-zero voxels\n"
        f"range {float(finite.min()) if finite.size else 0:.3g} to {vmax:.3g}\n"
        f"underlay: {Path(underlay).name if underlay else 'none (field of view)'}",
        color="white",
        va="top",
        fontsize=10,
        family="monospace",
    )
    fig.suptitle(title, color="white", fontsize=12)

    stem = Path(figure_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = str(stem) + ".png", str(stem) + ".svg"
    fig.savefig(png, dpi=90, facecolor="black")
    fig.savefig(svg, facecolor="black")
    plt.close(fig)

    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in params.items()
    )
    items = "".join(f"<li>{html.escape(s)}</li>" for s in sources or [])
    encoded = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}
th{{text-align:left;padding-right:1em}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{html.escape(str(n_inputs))} inputs. Colour: {html.escape(units)}.</p>
<img alt="heatmap mosaic" src="data:image/png;base64,{encoded}">
<h2>Parameters</h2><table>{rows}</table>
<details><summary>Inputs ({len(sources or [])})</summary><ol>{items}</ol></details>
<p>Made with nipype_heatmap.</p></body></html>
"""
    Path(html_file).write_text(page)
    return {"png": png, "svg": svg, "html": str(html_file)}
