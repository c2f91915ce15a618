"""Text outputs, written one way: JSON sidecars and tab-separated tables.

Both return text; an :class:`~nipype_heatmap.io.plan.OutputPlan` writes it with the run's
other outputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "json_text",
    "tsv_text",
]


def json_text(content: object) -> str:
    """JSON as this package writes it: indented, UTF-8 (no ASCII escapes), a final newline.

    Examples
    --------
    >>> print(json_text({"SampleSize": 3}), end="")
    {
      "SampleSize": 3
    }
    """
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"


def tsv_text(columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> str:
    """A tab-separated table with a header line (BIDS ``.tsv``).

    Examples
    --------
    >>> tsv_text(["index", "name"], [{"index": 1, "name": "GM"}])
    'index\\tname\\n1\\tGM\\n'
    """
    lines = ["\t".join(columns)]
    lines += ["\t".join(str(row[column]) for column in columns) for row in rows]
    return "\n".join(lines) + "\n"
