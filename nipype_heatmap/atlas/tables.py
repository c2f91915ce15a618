"""Label tables: names and colours of labels (BIDS ``dseg.tsv``, FreeSurfer colour LUT),
and the atlas's own table of labels."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TABLE_COLUMNS",
    "default_color",
    "label_rows",
    "LabelInfo",
    "read_label_table",
]

LOGGER = logging.getLogger(__name__)


# -- label tables ------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelInfo:
    """A label's name and colour (``#rrggbb``), from a label table."""

    name: str
    color: str | None = None


def read_label_table(path: str | os.PathLike[str]) -> dict[int, LabelInfo]:
    """Read label names (and colours) from a BIDS ``dseg.tsv`` or a FreeSurfer colour LUT.

    A file whose first non-comment line has tab-separated ``index`` and ``name`` columns is
    read as a BIDS table (``color`` as ``#rrggbb``, if present); otherwise every
    non-comment line must be ``index name R G B [A]`` (FreeSurfer's
    ``FreeSurferColorLUT.txt``).

    Raises
    ------
    ValueError
        Naming the file and line, if a row cannot be read or an index repeats.
    """
    path = os.fspath(path)
    text = Path(path).read_text(encoding="utf-8-sig")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)]
    content = [
        (n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")
    ]
    table: dict[int, LabelInfo] = {}
    if not content:
        raise ValueError(f"{path}: empty label table")

    def put(n: int, index: str, info: LabelInfo) -> None:
        try:
            value = int(index)
        except ValueError:
            raise ValueError(
                f"{path}, line {n}: label index {index!r} is not an integer"
            ) from None
        if value in table:
            raise ValueError(f"{path}, line {n}: label {value} is listed twice")
        table[value] = info

    first = content[0][1].rstrip("\n").split("\t")
    if "index" in first and "name" in first:
        rows = csv.DictReader(io.StringIO("\n".join(line for _, line in content)), delimiter="\t")
        for (n, _), row in zip(content[1:], rows, strict=False):  # rows may be fewer
            color = (row.get("color") or "").strip() or None
            if color is not None and not _is_hex_color(color):
                raise ValueError(f"{path}, line {n}: color {color!r} is not #rrggbb")
            put(n, row["index"].strip(), LabelInfo((row["name"] or "").strip(), color))
        return table
    for n, line in content:
        parts = line.split()
        if len(parts) < 5:
            raise ValueError(
                f"{path}, line {n}: expected 'index name R G B [A]' (FreeSurfer LUT) or a "
                "tab-separated table with 'index' and 'name' columns (BIDS dseg.tsv)"
            )
        try:
            rgb = [int(v) for v in parts[2:5]]
        except ValueError:
            raise ValueError(f"{path}, line {n}: R G B must be integers") from None
        put(n, parts[0], LabelInfo(parts[1], "#{:02x}{:02x}{:02x}".format(*rgb)))
    return table


def _is_hex_color(text: str) -> bool:
    return (
        len(text) == 7 and text[0] == "#" and all(c in "0123456789abcdefABCDEF" for c in text[1:])
    )


def default_color(label: int) -> str:
    """A distinct, reproducible colour for a label without one (golden-angle hues)."""
    import colorsys

    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


# -- writing the atlas -------------------------------------------------------------------
def label_rows(
    atlas: Any, table: Mapping[int, LabelInfo] | None = None
) -> list[dict[str, object]]:
    """The label table's rows (ascending index): index, name, color, n_inputs,
    mean_volume_mm3. Labels missing from ``table`` are named by their index (and logged).

    ``atlas`` is a :class:`~nipype_heatmap.accumulate.LabelAtlasAccumulator` or a
    :class:`~nipype_heatmap.accumulate.labels.SparseAtlas`."""
    table = dict(table or {})
    zooms = atlas.ref_header.get_zooms()[:3]
    voxel_mm3 = float(np.prod(np.asarray(zooms, np.float64)))
    totals = atlas.totals()
    missing = [label for label in atlas.label_list if label not in table]
    if table and missing:
        LOGGER.warning(
            "labels %s occur in the inputs but not in the label table; named by their index",
            missing,
        )
    rows = []
    for label in atlas.label_list:
        info = table.get(label, LabelInfo(str(label)))
        rows.append({
            "index": label,
            "name": info.name,
            "color": info.color or default_color(label),
            "n_inputs": atlas.presence[label],
            "mean_volume_mm3": round(totals[label] * voxel_mm3 / atlas.n_inputs, 4),
        })  # fmt: skip
    return rows


#: The columns of the atlas's label table (a BIDS ``dseg.tsv`` with two more).
TABLE_COLUMNS = ("index", "name", "color", "n_inputs", "mean_volume_mm3")
