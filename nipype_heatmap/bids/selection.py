"""BIDS in: pick the inputs of a group map from a BIDS (derivatives) dataset, strictly.

Selection uses pybids (the ``bids`` extra), imported only when called. The rules, in the
order they are checked (each failure is an error that names the files, and writes nothing):

1. Files match the suffix, the ``.nii``/``.nii.gz`` extension, every entity asked for (flags
   or an fMRIPrep-style filter file) and, when given, the participants. Files without a
   subject entity (group maps such as this tool's own outputs) are never inputs.
2. Every entity other than subject, session (and run, with ``several_per_subject``) has one
   value across the selection, or is absent everywhere: no anat masks averaged with func
   masks, no GM with WM, no two resolutions. The error says which entity, which values, an
   example file of each, and the flag that picks one.
3. Exactly one file per subject and session, unless ``several_per_subject`` (then every
   file counts once, so a subject with more files weighs more: the error says so).
4. Every participant asked for has a file.

The result, :class:`BIDSSelection`, converts to a plain dict (``as_dict``) so that it
travels between Nipype nodes as hash-transparent data. Writing the derivative is in
:mod:`nipype_heatmap.bids.derivatives`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._optional import require

LOGGER = logging.getLogger(__name__)

_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")

#: pybids entity names, in BIDS file-name order, with their file-name keys. These are the
#: entities that distinguish one selection from another (subject and session excluded).
ENTITY_KEYS = {
    "task": "task",
    "acquisition": "acq",
    "ceagent": "ce",
    "reconstruction": "rec",
    "direction": "dir",
    "run": "run",
    "echo": "echo",
    "space": "space",
    "res": "res",
    "den": "den",
    "label": "label",
    "desc": "desc",
}

#: The command-line flag that picks one value of an entity.
_FLAGS = {
    "datatype": "--datatype",
    "space": "--space",
    "res": "--res",
    "label": "--label",
    "desc": "--desc",
    "task": "--task",
    "acquisition": "--acquisition",
    "run": "--run",
    "session": "--session",
}

#: Entities never compared across the selection: whose file it is, and which repetition
#: (several runs of one subject are the "one file per subject" rule's business).
_PER_SUBJECT = ("subject", "session", "run", "extension")


@dataclass
class BIDSSelection:
    """The inputs picked from a BIDS dataset, and what they have in common.

    Attributes
    ----------
    files : list of str
        Absolute paths, sorted.
    dataset_root : str
        Root of the dataset they come from.
    subjects : list of str
        Subject labels (without ``sub-``), sorted.
    entities : dict
        The entities every file shares (pybids names: ``space``, ``res``, ``label``...), plus
        ``suffix`` and ``datatype``; they name the derivative.
    dataset_name : str
        The input dataset's ``Name`` (from its ``dataset_description.json``).
    generated_by : list of dict
        The input dataset's ``GeneratedBy`` (carried into the derivative's provenance).
    several_per_subject : bool
        Whether several files per subject and session were allowed.
    """

    files: list[str]
    dataset_root: str
    subjects: list[str]
    entities: dict[str, str] = field(default_factory=dict)
    dataset_name: str = ""
    generated_by: list[dict[str, Any]] = field(default_factory=list)
    several_per_subject: bool = False

    def relpath(self, path: str) -> str:
        """Path of an input relative to its dataset's root (for BIDS URIs)."""
        return Path(path).absolute().relative_to(Path(self.dataset_root).absolute()).as_posix()

    def as_dict(self) -> dict[str, Any]:
        """The selection as plain data (JSON-able, hash-transparent in Nipype)."""
        return asdict(self)

    @classmethod
    def from_any(cls, value: BIDSSelection | Mapping[str, Any]) -> BIDSSelection:
        """Accept a selection or its :meth:`as_dict` form."""
        return value if isinstance(value, cls) else cls(**dict(value))


def check_label(name: str, value: str | None) -> None:
    """Raise ValueError unless ``value`` is a BIDS label (letters and digits only)."""
    if value is not None and not _LABEL_RE.match(str(value)):
        raise ValueError(f"{name} {value!r} is not a BIDS label (letters and digits only)")


def load_filter_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an fMRIPrep-style BIDS filter file: a JSON object of entity filters.

    Either ``{"datatype": "anat", "res": "2"}`` or, as fMRIPrep writes it, one query named
    ``"heatmap"``: ``{"heatmap": {...}}``. A value may be a string, a list of strings (any
    of them), ``null`` (the entity must be absent) or ``"*"`` (the entity must be present).

    Raises
    ------
    ValueError
        If the file is not such a JSON object (the message names it).
    """
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable JSON filter file ({err})") from err
    if isinstance(content, dict) and isinstance(content.get("heatmap"), dict):
        content = content["heatmap"]
    if not isinstance(content, dict) or not all(isinstance(k, str) for k in content):
        raise ValueError(f"{path}: a BIDS filter file is a JSON object of entity filters")
    return content


def _query_value(value: Any) -> Any:
    from bids.layout import Query

    if value is None:
        return Query.NONE
    if value == "*":
        return Query.ANY
    return value


def select_bids_inputs(
    bids_dir: str | os.PathLike[str],
    *,
    suffix: str = "mask",
    space: str | None = None,
    res: str | None = None,
    label: str | None = None,
    desc: str | None = None,
    datatype: str | None = None,
    session: str | Sequence[str] | None = None,
    task: str | None = None,
    run: str | int | None = None,
    acquisition: str | None = None,
    bids_filters: Mapping[str, Any] | None = None,
    participant_label: Sequence[str] | None = None,
    several_per_subject: bool = False,
) -> BIDSSelection:
    """Pick the 3D inputs of a group map from a BIDS or BIDS-derivatives dataset.

    Parameters
    ----------
    bids_dir : str or os.PathLike
        Root of the dataset (raw, or a derivatives dataset such as fMRIPrep's outputs).
    suffix : str, default="mask"
        BIDS suffix of the files (``mask``, ``probseg``, ``dseg``, ``T1w``...).
    space, res, label, desc, datatype, session, task, run, acquisition : str, optional
        Entity values the files must have.
    bids_filters : mapping, optional
        More entity filters, as in an fMRIPrep filter file (:func:`load_filter_file`);
        the named arguments win over it.
    participant_label : sequence of str, optional
        Subjects to include (with or without ``sub-``); all found otherwise.
    several_per_subject : bool, default=False
        Allow several files per subject and session (e.g. every run's mask). Each file then
        counts once, so a subject with more files weighs more in the map.

    Returns
    -------
    BIDSSelection

    Raises
    ------
    FileNotFoundError
        If ``bids_dir`` is not a BIDS dataset, or nothing matches.
    ValueError
        If the selection breaks a rule of the module docstring (naming the files), or a
        value is not a BIDS label.
    ImportError
        If pybids is not installed (``pip install 'nipype_heatmap[bids]'``).
    """
    require("bids", "selecting inputs from BIDS")
    from bids import BIDSLayout
    from bids.layout import Query

    root = Path(bids_dir).absolute()
    description_file = root / "dataset_description.json"
    if not description_file.is_file():
        raise FileNotFoundError(f"{root}: not a BIDS dataset (no dataset_description.json)")
    description = json.loads(description_file.read_text())

    query: dict[str, Any] = {k: _query_value(v) for k, v in (bids_filters or {}).items()}
    named = {
        "space": space,
        "res": res,
        "label": label,
        "desc": desc,
        "datatype": datatype,
        "session": session,
        "task": task,
        "run": run,
        "acquisition": acquisition,
    }
    for name, value in named.items():
        if value is not None:
            values = [value] if isinstance(value, (str, int)) else list(value)
            for one in values:
                check_label(name, str(one))
            if name == "run":  # pybids matches runs as integers
                values = [int(v) for v in values]
            query[name] = values[0] if len(values) == 1 else values
    check_label("suffix", suffix)
    query["suffix"] = suffix
    query["extension"] = [".nii.gz", ".nii"]
    asked = [p.removeprefix("sub-") for p in participant_label] if participant_label else None
    query["subject"] = asked if asked else Query.ANY  # no subject entity: never an input

    layout = BIDSLayout(
        root,
        validate=False,
        is_derivative=description.get("DatasetType") == "derivative",
    )
    found = layout.get(return_type="object", **query)
    described = ", ".join(f"{k}={_show(v)}" for k, v in query.items())
    if not found:
        raise FileNotFoundError(f"{root}: no file matches {described}")

    records = [(f.path, f.get_entities(metadata=False)) for f in found]
    _refuse_mixed_entities(root, records)
    _refuse_several_per_subject(root, records, several_per_subject)
    subjects = sorted({str(e["subject"]) for _, e in records})
    if asked:
        missing = sorted(set(asked) - set(subjects))
        if missing:
            raise ValueError(
                f"{root}: no file matches {described} for subject(s) "
                f"{', '.join('sub-' + m for m in missing)}; found {len(subjects)} subject(s)"
            )
    shared = {  # what every file has, with one value: it names the derivative
        name: str(records[0][1][name])
        for name in (*ENTITY_KEYS, "suffix", "datatype")
        if len({str(e.get(name)) for _, e in records}) == 1 and name in records[0][1]
    }
    LOGGER.info(
        "Selected %d file(s) from %s for %d subject(s): %s",
        len(records),
        root,
        len(subjects),
        " ".join(subjects),
    )
    return BIDSSelection(
        files=sorted(path for path, _ in records),
        dataset_root=str(root),
        subjects=subjects,
        entities=shared,
        dataset_name=str(description.get("Name", root.name)),
        generated_by=list(description.get("GeneratedBy", [])),
        several_per_subject=several_per_subject,
    )


def _show(value: Any) -> str:
    return value.name if hasattr(value, "name") and not isinstance(value, str) else str(value)


def _refuse_mixed_entities(root: Path, records: list[tuple[str, dict[str, Any]]]) -> None:
    """Every entity but the subject's and session's has one value (or none) everywhere."""
    names = sorted({n for _, e in records for n in e} - set(_PER_SUBJECT))
    order = ["datatype", "space", "res", "label", "desc", "task", "acquisition"]
    names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
    for name in names:
        groups: dict[str, list[str]] = {}
        for path, entities in records:
            groups.setdefault(str(entities.get(name, "(none)")), []).append(path)
        if len(groups) > 1:
            listing = "; ".join(
                f"{name}={value}: {len(paths)} file(s), e.g. {sorted(paths)[0]}"
                for value, paths in sorted(groups.items())
            )
            flag = _FLAGS.get(name, "--bids-filter-file")
            raise ValueError(
                f"{root}: the selection mixes {name} values ({listing}); these are different "
                f"maps: pick one with {flag}"
            )


def _refuse_several_per_subject(
    root: Path, records: list[tuple[str, dict[str, Any]]], several_per_subject: bool
) -> None:
    """One file per subject and session, unless asked otherwise."""
    per_subject: dict[tuple[str, str], list[str]] = {}
    for path, entities in records:
        key = (str(entities["subject"]), str(entities.get("session", "")))
        per_subject.setdefault(key, []).append(path)
    crowded = {key: paths for key, paths in per_subject.items() if len(paths) > 1}
    if crowded and not several_per_subject:
        listing = "; ".join(
            f"sub-{sub}{'_ses-' + ses if ses else ''}: {', '.join(sorted(paths))}"
            for (sub, ses), paths in sorted(crowded.items())
        )
        raise ValueError(
            f"{root}: {len(crowded)} subject(s) have several matching files ({listing}); "
            "narrow the selection (--run, --task, --acquisition, --bids-filter-file), or pass "
            "--several-per-subject to count every file, so that subjects with more files "
            "weigh more"
        )


def participants_groups(
    selection: BIDSSelection,
    column: str,
    group_a: str,
    group_b: str | None = None,
    participants_tsv: str | os.PathLike[str] | None = None,
) -> tuple[list[str], list[str], dict[str, Any]]:
    """Split a selection's files into two groups by a ``participants.tsv`` column.

    Group A holds the files of subjects whose value in ``column`` is ``group_a``; group B
    those whose value is ``group_b`` (default: any other value). Subjects without a row, or
    with ``n/a`` or an empty value, are in neither group and are logged.

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
    files_a, files_b : list of str
        The files of each group, in selection order.
    groups : dict
        ``Column``, ``GroupA``, ``GroupB`` (``"not <A>"`` by default), ``SubjectsA`` and
        ``SubjectsB``, for the sidecars.

    Raises
    ------
    FileNotFoundError
        If no ``participants.tsv`` is found.
    ValueError
        If the column is missing or a group is empty.
    """
    import csv

    table = _find_participants_tsv(selection.dataset_root, participants_tsv)
    with open(table, newline="", encoding="utf-8") as fobj:
        rows = list(csv.DictReader(fobj, delimiter="\t"))
    if not rows or column not in rows[0]:
        found = ", ".join(rows[0]) if rows else "none"
        raise ValueError(f"{table}: no column {column!r} (columns: {found})")
    values = {
        str(row.get("participant_id", "")).removeprefix("sub-"): (row.get(column) or "").strip()
        for row in rows
    }
    groups: dict[str, list[str]] = {"a": [], "b": []}
    subjects: dict[str, set[str]] = {"a": set(), "b": set()}
    left_out = set()
    for path in selection.files:
        match = re.search(r"(?:^|/)sub-([A-Za-z0-9]+)", selection.relpath(path))
        subject = match.group(1) if match else ""
        value = values.get(subject, "")
        if value in ("", "n/a"):
            left_out.add(subject or path)
            continue
        if value == group_a:
            key = "a"
        elif group_b is None or value == group_b:
            key = "b"
        else:
            left_out.add(subject)
            continue
        groups[key].append(path)
        subjects[key].add(subject)
    if left_out:
        LOGGER.warning(
            "%d subject(s) in neither group (no %s value in %s, or another value): %s",
            len(left_out),
            column,
            table,
            " ".join(sorted(left_out)),
        )
    label_b = group_b if group_b is not None else f"not {group_a}"
    for key, label in (("a", group_a), ("b", label_b)):
        if not groups[key]:
            raise ValueError(
                f"{table}: no selected subject has {column} = {label!r}; a subtraction needs "
                "files in both groups"
            )
    info = {
        "Column": column,
        "GroupA": group_a,
        "GroupB": label_b,
        "SubjectsA": sorted(subjects["a"]),
        "SubjectsB": sorted(subjects["b"]),
    }
    return groups["a"], groups["b"], info


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
