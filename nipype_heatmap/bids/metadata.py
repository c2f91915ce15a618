"""A dataset's metadata files, read strictly: every malformed file is an error that names it
and says what is wrong.

- JSON files (``dataset_description.json``, filter files) must be one JSON object;
- TSV files (``participants.tsv``, ``dseg.tsv``) must have a header line, a value for every
  column on every line, and (``participants.tsv``) each participant once, as
  ``sub-<label>``;
- both are read as UTF-8, with or without the byte-order mark that spreadsheet programs
  write (``utf-8-sig``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "read_dataset_description",
    "read_json_object",
    "read_participants",
    "read_tsv",
    "Table",
]

_SUBJECT_RE = re.compile(r"^sub-([A-Za-z0-9]+)$")


def _read_text(path: str | os.PathLike[str], what: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise type(err)(err.errno, f"{path}: cannot read the {what} ({err.strerror})") from err
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: the {what} is not UTF-8 text (byte {err.start}: {err.reason}); save it "
            "as UTF-8"
        ) from err


def read_json_object(path: str | os.PathLike[str], what: str = "JSON file") -> dict[str, Any]:
    """Read a file that must hold one JSON object.

    Raises
    ------
    ValueError
        Naming the file: not UTF-8, not JSON (with the line and column of the first error,
        e.g. a truncated file), or JSON but not an object (an array, a string...).
    OSError
        If the file cannot be read.
    """
    text = _read_text(path, what)
    try:
        content = json.loads(text)
    except json.JSONDecodeError as err:
        truncated = err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")
        raise ValueError(
            f"{path}: the {what} is not valid JSON: {err.msg} (line {err.lineno}, column "
            f"{err.colno})" + ("; it ends too early: is the file truncated?" if truncated else "")
        ) from err
    if not isinstance(content, dict):
        raise ValueError(
            f"{path}: the {what} is a JSON {_json_kind(content)}, not an object "
            '({"Name": ..., ...}); it must hold one JSON object'
        )
    return content


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def read_dataset_description(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a dataset's ``dataset_description.json`` strictly.

    Raises
    ------
    FileNotFoundError
        If there is none (then ``root`` is not a BIDS dataset).
    ValueError
        If it is not a JSON object, or ``GeneratedBy``/``DatasetLinks``/``SourceDatasets``
        do not have their BIDS types (naming the file and the field).
    """
    path = Path(root) / "dataset_description.json"
    if not path.is_file():
        raise FileNotFoundError(f"{Path(root)}: not a BIDS dataset (no dataset_description.json)")
    content = read_json_object(path, "dataset description")
    expected = {
        "GeneratedBy": (list, "an array of objects"),
        "SourceDatasets": (list, "an array of objects"),
        "DatasetLinks": (dict, "an object of name: URI"),
        "DatasetType": (str, 'a string ("raw" or "derivative")'),
        "Name": (str, "a string"),
    }
    for key, (kind, text) in expected.items():
        value = content.get(key)
        if value is None:
            continue
        items_ok = kind is not list or all(isinstance(v, dict) for v in value)
        if not isinstance(value, kind) or not items_ok:
            raise ValueError(f"{path}: {key} must be {text}, not {json.dumps(value)[:80]}")
    return content


@dataclass(frozen=True)
class Table:
    """A TSV file as read: its path, columns and rows (with their line numbers)."""

    path: str
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]


def read_tsv(path: str | os.PathLike[str], what: str = "table") -> Table:
    """Read a tab-separated table strictly: a header, then one value per column per line.

    Empty lines are skipped; values keep their text (``n/a`` included).

    Raises
    ------
    ValueError
        Naming the file and line: no header, an empty or repeated column name, a line with
        more or fewer values than columns.
    """
    text = _read_text(path, what)
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1)]
    lines = [(n, line) for n, line in lines if line.strip()]
    if not lines:
        raise ValueError(f"{path}: the {what} is empty; it needs a header line")
    header_line, header = lines[0]
    columns = [c.strip() for c in header.split("\t")]
    if "" in columns:
        raise ValueError(f"{path}, line {header_line}: an empty column name in the header")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ValueError(f"{path}, line {header_line}: column(s) {repeated} appear twice")
    if len(columns) == 1 and ("," in header or ";" in header):
        raise ValueError(
            f"{path}, line {header_line}: one column {columns[0]!r}: the {what} must be "
            "separated by tabs, not commas or semicolons"
        )
    rows = []
    for n, line in lines[1:]:
        values = line.split("\t")
        if len(values) != len(columns):
            raise ValueError(
                f"{path}, line {n}: {len(values)} value(s) for {len(columns)} column(s) "
                f"({', '.join(columns)}); every line needs one tab-separated value per column "
                "(n/a where there is none)"
            )
        rows.append((n, dict(zip(columns, (v.strip() for v in values), strict=True))))
    return Table(str(path), columns, rows)


def read_participants(path: str | os.PathLike[str]) -> tuple[Table, dict[str, dict[str, str]]]:
    """Read ``participants.tsv``: the table, and each participant's row by label (no ``sub-``).

    Raises
    ------
    ValueError
        As :func:`read_tsv`, and naming the file and lines: no ``participant_id`` column, an
        id that is not ``sub-<label>``, a participant listed twice (with both lines).
    """
    table = read_tsv(path, "participants table")
    if "participant_id" not in table.columns:
        raise ValueError(
            f"{path}: no participant_id column (columns: {', '.join(table.columns)}); BIDS "
            "requires it as the first column"
        )
    rows: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for n, row in table.rows:
        match = _SUBJECT_RE.match(row["participant_id"])
        if not match:
            raise ValueError(
                f"{path}, line {n}: participant_id {row['participant_id']!r} is not "
                "sub-<label> (letters and digits)"
            )
        label = match.group(1)
        if label in rows:
            raise ValueError(
                f"{path}: sub-{label} is listed twice (lines {first_line[label]} and {n}); "
                "keep one row per participant"
            )
        rows[label] = row
        first_line[label] = n
    return table, rows
