"""BIDS filters: which entities a filter may name, filter files, and merging them.

A filter names an entity (pybids' names, :data:`ENTITY_KEYS`; or ``subject``,
``datatype``, ``suffix``, ``extension``) and the values it allows: one or several, or
:data:`NONE` (the entity must be absent) or :data:`ANY` (present). Filters come from the
command line's flags (:data:`FLAGS`) and from a filter file (:func:`load_filter_file`, in
this tool's shape or fMRIPrep's, :data:`FMRIPREP_QUERIES`); :func:`merge_filters` merges
them, entity by entity, never widening either.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from .metadata import read_json_object

__all__ = [
    "ANY",
    "ENTITY_KEYS",
    "FILTER_NAMES",
    "FLAGS",
    "FMRIPREP_QUERIES",
    "NONE",
    "FilterMarker",
    "check_label",
    "filters_from_file",
    "load_filter_file",
    "merge_filters",
]

LOGGER = logging.getLogger(__name__)

_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")

#: pybids entity names, in BIDS file-name order, with their file-name keys.
ENTITY_KEYS = {
    "session": "ses",
    "sample": "sample",
    "task": "task",
    "tracksys": "tracksys",
    "acquisition": "acq",
    "nucleus": "nuc",
    "volume": "voi",
    "ceagent": "ce",
    "tracer": "trc",
    "staining": "stain",
    "reconstruction": "rec",
    "direction": "dir",
    "run": "run",
    "modality": "mod",
    "echo": "echo",
    "flip": "flip",
    "inv": "inv",
    "mt": "mt",
    "part": "part",
    "proc": "proc",
    "hemi": "hemi",
    "space": "space",
    "recording": "recording",
    "chunk": "chunk",
    "atlas": "atlas",
    "roi": "roi",
    "model": "model",
    "subset": "subset",
    "segmentation": "seg",
    "res": "res",
    "den": "den",
    "label": "label",
    "desc": "desc",
}

#: Every name a filter may use: the entities, and pybids' datatype, suffix and extension.
FILTER_NAMES = ("subject", *ENTITY_KEYS, "datatype", "suffix", "extension")

#: The command-line flag that sets each filter (the others: --bids-filter-file).
FLAGS = {
    "datatype": "--datatype",
    "space": "--space",
    "res": "--res",
    "label": "--label",
    "desc": "--desc",
    "task": "--task",
    "acquisition": "--acquisition",
    "run": "--run",
    "session": "--session",
    "suffix": "--suffix",
    "subject": "--participant-label",
}

#: fMRIPrep's filter-file queries (niworkflows' DEFAULT_BIDS_QUERIES): the datatype of the
#: outputs each one leads to, and the entities those outputs carry in their names.
FMRIPREP_QUERIES = {
    "t1w": "anat",
    "t2w": "anat",
    "flair": "anat",
    "roi": "anat",
    "bold": "func",
    "sbref": "func",
    "dwi": "dwi",
    "asl": "perf",
    "pet": "pet",
    "fmap": "fmap",
}
_CARRIED = {
    "anat": ("subject", "session"),  # acq/rec/run pick raw T1w files merged into one anatomy
}
_CARRIED_DEFAULT = (
    "subject",
    "session",
    "task",
    "acquisition",
    "ceagent",
    "reconstruction",
    "direction",
    "run",
    "echo",
    "tracer",
)


class FilterMarker:
    """A filter that is not a value: the entity must be absent, or present."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text

    def __repr__(self) -> str:
        return self.text


#: ``null`` in a filter file: the entity must be absent.
NONE = FilterMarker("NONE", "absent (null)")
#: ``"*"`` in a filter file: the entity must be present, with any value.
ANY = FilterMarker("ANY", "present ('*')")


def check_label(name: str, value: str | None) -> None:
    """Raise ValueError unless ``value`` is a BIDS label (letters and digits only)."""
    if value is not None and not _LABEL_RE.match(str(value)):
        raise ValueError(f"{name} {value!r} is not a BIDS label (letters and digits only)")


# -- filters -------------------------------------------------------------------------------
def load_filter_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a BIDS filter file: a JSON object, in one of three shapes.

    - entity filters for this tool's inputs: ``{"datatype": "anat", "res": "2"}``;
    - the same under a query named ``"heatmap"``: ``{"heatmap": {...}}``;
    - fMRIPrep's own file, by its query names: ``{"t1w": {"session": "pre"}, "bold":
      {"task": "rest"}}``. Each query's filters apply to the outputs it led to (``t1w``,
      ``t2w``, ``flair``, ``roi``: anatomical outputs, ``bold``, ``sbref``: functional
      ones), for the entities those outputs carry in their names (see
      :func:`filters_from_file`).

    A value may be a string, a number, a list (one map per value; subjects: any of them),
    ``null`` (the entity must be absent) or ``"*"`` (present).

    Raises
    ------
    ValueError
        Naming the file: not a JSON object, or not one of the shapes above.
    """
    content = read_json_object(path, "BIDS filter file")
    _shape(content, path)
    return content


def _shape(content: Mapping[str, Any], path: Any) -> str:
    """Which shape a filter file has: ``"entities"``, ``"heatmap"`` or ``"fmriprep"``."""
    keys = set(content)
    nested = {k for k, v in content.items() if isinstance(v, dict)}
    if keys == {"heatmap"} and nested == keys:
        return "heatmap"
    if keys and keys <= set(FMRIPREP_QUERIES) and nested == keys:
        return "fmriprep"
    if not nested:
        return "entities"
    raise ValueError(
        f"{path}: a BIDS filter file is one JSON object of entity filters "
        '({"space": "MNI152NLin2009cAsym", "res": "2"}), the same under "heatmap", or '
        f"fMRIPrep's queries ({', '.join(FMRIPREP_QUERIES)}) each holding entity filters; "
        f"this one mixes query names and entities ({', '.join(sorted(keys))})"
    )


def filters_from_file(
    content: Mapping[str, Any], *, path: Any = "filter file", datatype: str | None = None
) -> dict[str, Any]:
    """The entity filters of a filter file's content (:func:`load_filter_file`), flat.

    fMRIPrep's queries lead to outputs of one datatype each; the queries for the inputs'
    ``datatype`` apply (all of them must agree), with the entities those outputs carry (an
    anatomical query's ``session``; a functional query's ``task``, ``session``, ``run``,
    ``echo``, ``acquisition``...). A query's other entities (``suffix``, ``part``, an
    anatomical ``acquisition`` or ``run`` that picked the raw T1w images fMRIPrep merged)
    say nothing about the outputs and are left out, with a log line.

    Raises
    ------
    ValueError
        If the file has queries for several datatypes and none is chosen (naming them and
        ``--datatype``), or the queries disagree.
    """
    shape = _shape(content, path)
    if shape == "entities":
        return dict(content)
    if shape == "heatmap":
        return dict(content["heatmap"])
    kinds: dict[str, list[str]] = {}
    for query in content:
        kinds.setdefault(FMRIPREP_QUERIES[query], []).append(query)
    if datatype is None and len(kinds) > 1:
        listing = "; ".join(f"{k}: {', '.join(q)}" for k, q in sorted(kinds.items()))
        raise ValueError(
            f"{path}: fMRIPrep's filter file has queries for outputs of several datatypes "
            f"({listing}); a group map uses one kind of input: pass --datatype "
            f"({' or '.join(sorted(kinds))}) to apply that one's filters"
        )
    chosen = datatype if datatype is not None else next(iter(kinds))
    queries = kinds.get(chosen, [])
    if not queries:
        LOGGER.info("%s: no fMRIPrep query applies to %s outputs", path, chosen)
    merged: dict[str, Any] = {"datatype": chosen}
    for query in queries:
        carried = _CARRIED.get(chosen, _CARRIED_DEFAULT)
        for name, value in content[query].items():
            if name not in carried:
                LOGGER.info(
                    "%s: fMRIPrep's %s filter %s=%r selects the raw images fMRIPrep read, not "
                    "its %s outputs (they carry no %s entity): not applied",
                    path,
                    query,
                    name,
                    value,
                    chosen,
                    name,
                )
                continue
            if name in merged and _normal(name, merged[name]) != _normal(name, value):
                raise ValueError(
                    f"{path}: fMRIPrep's queries {', '.join(queries)} give {name} different "
                    f"values ({merged[name]!r} and {value!r}); make them agree"
                )
            merged[name] = value
    return merged


def _normal(name: str, value: Any) -> Any:
    """A filter value in one form: NONE, ANY, or a tuple of strings (runs without padding)."""
    if value is None or value is NONE or value == "Query.NONE":
        return NONE
    if value == "*" or value is ANY or value == "Query.ANY":
        return ANY
    values = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for one in values:
        if isinstance(one, bool) or not isinstance(one, (str, int)):
            raise ValueError(f"{name} {one!r}: a filter value is a string or a number")
        text = str(one).removeprefix("sub-") if name == "subject" else str(one)
        if name == "run":
            if not text.isdigit():
                raise ValueError(f"run {one!r} is not a run index (a number)")
            text = str(int(text))
        elif name == "extension":
            text = text if text.startswith(".") else f".{text}"
        elif name != "datatype":
            check_label(name, text)
        if text not in out:
            out.append(text)
    return tuple(out)


def merge_filters(
    flags: Mapping[str, Any],
    file_filters: Mapping[str, Any] | None = None,
    *,
    file_name: Any = "the filter file",
) -> dict[str, Any]:
    """Merge filters from flags and from a filter file, never widening either.

    For each entity given both ways: a value from a flag must be one of the file's (the
    result is the flag's values that the file allows); ``"*"`` in the file allows any;
    ``null`` in the file allows none. Entities given one way are taken as given.

    Returns
    -------
    dict
        Entity -> NONE, ANY or a tuple of values.

    Raises
    ------
    ValueError
        Naming both sides, when they cannot both hold; naming the valid entities, for an
        unknown one.

    Examples
    --------
    >>> merge_filters({"label": "GM"}, {"label": ["GM", "WM"], "res": 2})
    {'label': ('GM',), 'res': ('2',)}
    """
    merged: dict[str, Any] = {}
    for name, value in (file_filters or {}).items():
        _check_name(name, f"{file_name}")
        merged[name] = _normal(name, value)
    for name, value in flags.items():
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        _check_name(name, FLAGS.get(name, name))
        mine = _normal(name, value)
        theirs = merged.get(name)
        flag = FLAGS.get(name, name)
        if theirs is None or theirs is ANY:
            merged[name] = mine
        elif theirs is NONE:
            raise ValueError(
                f"{flag} {' '.join(mine)} conflicts with {file_name}, where {name} is null "
                f"(files without a {name} entity); drop one of them"
            )
        else:
            kept = tuple(v for v in mine if v in theirs)
            if not kept:
                raise ValueError(
                    f"{flag} {' '.join(mine)} conflicts with {file_name}, where {name} is "
                    f"{list(theirs)}; filters are never widened: make them agree, or drop "
                    "one of them"
                )
            merged[name] = kept
    return merged


def _check_name(name: str, where: str) -> None:
    if name not in FILTER_NAMES:
        raise ValueError(
            f"{where}: {name!r} is not a BIDS entity that pybids knows; valid names: "
            f"{', '.join(FILTER_NAMES)}"
        )
