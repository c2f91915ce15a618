"""Participants' groups: a selection's subjects split by a ``participants.tsv`` column.

:func:`participants_groups` finds the table (the inputs' dataset's, or one of the datasets
around it), reads it strictly (:func:`~nipype_heatmap.bids.metadata.read_participants`)
and splits the subjects into group A and group B, for the subtraction analysis.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .selection import BIDSSelection

__all__ = ["participants_groups"]

LOGGER = logging.getLogger(__name__)


def participants_groups(
    selection: BIDSSelection,
    column: str,
    group_a: str,
    group_b: str | None = None,
    participants_tsv: str | os.PathLike[str] | None = None,
) -> tuple[list[list[str]], list[list[str]], dict[str, Any]]:
    """Split a selection's subjects into two groups by a ``participants.tsv`` column.

    Group A: the subjects whose value in ``column`` is ``group_a``; group B: those whose
    value is ``group_b`` (default: any other value). Subjects without a row, or with ``n/a``
    or an empty value, are in neither group and are logged by name. The table is read
    strictly (:func:`~nipype_heatmap.bids.metadata.read_participants`).

    Parameters
    ----------
    selection : BIDSSelection
        The selected inputs.
    column : str
        A column of ``participants.tsv`` (e.g. ``aphasia``).
    group_a, group_b : str
        The values that make the groups.
    participants_tsv : path-like, optional
        The table; default: ``participants.tsv`` of the inputs' dataset, else of a dataset
        it lies in (a derivatives folder inside its raw dataset).

    Returns
    -------
    units_a, units_b : list of list of str
        Each group's subjects, as the files of each (one file, or several to average).
    groups : dict
        ``Column``, ``GroupA``, ``GroupB`` (``"not <A>"`` by default), ``SubjectsA``,
        ``SubjectsB`` and ``ParticipantsTable``, for the sidecars.

    Raises
    ------
    FileNotFoundError
        If no ``participants.tsv`` is found.
    ValueError
        If the table is malformed (naming it and the line), the column is missing, a group
        is empty, or the selection weighs files rather than subjects.
    """
    from .metadata import read_participants

    if selection.several_per_subject == "each-file":
        raise ValueError(
            "a subtraction compares the percentages of subjects in two groups: with several "
            "files per subject, use --several-per-subject average (each subject counts once), "
            "not each-file"
        )
    table_path = _find_participants_tsv(selection.dataset_root, participants_tsv)
    table, rows = read_participants(table_path)
    if column not in table.columns:
        raise ValueError(
            f"{table_path}: no column {column!r} (columns: {', '.join(table.columns)})"
        )
    groups: dict[str, list[str]] = {"a": [], "b": []}
    left_out = []
    for subject in selection.subjects:
        value = rows.get(subject, {}).get(column, "")
        if value in ("", "n/a"):
            left_out.append(
                f"sub-{subject} ({'no row' if subject not in rows else value or 'empty'})"
            )
            continue
        if value == group_a:
            groups["a"].append(subject)
        elif group_b is None or value == group_b:
            groups["b"].append(subject)
        else:
            left_out.append(f"sub-{subject} ({value})")
    if left_out:
        LOGGER.warning(
            "%d subject(s) in neither group (no %s value in %s, or another value): %s",
            len(left_out),
            column,
            table_path,
            ", ".join(left_out),
        )
    label_b = group_b if group_b is not None else f"not {group_a}"
    for key, label in (("a", group_a), ("b", label_b)):
        if not groups[key]:
            raise ValueError(
                f"{table_path}: no selected subject has {column} = {label!r}; a subtraction "
                "needs subjects in both groups"
            )
    info = {
        "Column": column,
        "GroupA": group_a,
        "GroupB": label_b,
        "SubjectsA": groups["a"],
        "SubjectsB": groups["b"],
        "ParticipantsTable": str(table_path),
    }
    units = selection.groups
    return [units[s] for s in groups["a"]], [units[s] for s in groups["b"]], info


def _find_participants_tsv(
    dataset_root: str | os.PathLike[str], given: str | os.PathLike[str] | None
) -> Path:
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: participants table does not exist")
        return path
    root = Path(dataset_root).absolute()
    for folder in (root, *list(root.parents)[:3]):
        candidate = folder / "participants.tsv"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{root}: no participants.tsv in the dataset or the datasets around it; "
        "give one (--participants-tsv FILE)"
    )
