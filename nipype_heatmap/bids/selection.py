"""BIDS in: pick the inputs of group maps from a BIDS (derivatives) dataset, strictly.

The subject is the unit of a group map. The rules, in the order they are checked (each
failure is an error that names the files and what to do, and nothing is written):

1. **Filters are never widened.** Flags and a filter file
   (:func:`~nipype_heatmap.bids.filters.load_filter_file`) are
   merged entity by entity: a value given both ways must agree (a flag narrows a list of the
   file), else the error names both. Unknown entity names are refused with the valid ones.
   A list of values for an entity (``--label GM WM CSF``, ``"label": ["GM", "WM"]``) gives
   one map per value (:func:`select_bids_maps`), all from one index.
2. Files match every filter, the suffix (default ``mask``) and ``.nii``/``.nii.gz``; files
   without a subject entity (group maps, this tool's own) are never inputs. When nothing
   matches, the error lists, for the entity that excluded everything, the values that exist
   (``--label gm`` when the labels are ``CSF, GM, WM``).
3. Every participant asked for has a file.
4. Every entity other than subject, session and run has one value across the selection
   (no anat with func masks, GM with WM, 1 mm with 2 mm): the error names the entity, its
   values, a file of each and the flag that picks one.
5. **Template spaces only**: a space that is not a template (``T1w``, ``boldref``,
   ``fsnative``, no space...) is refused with why (see :mod:`~nipype_heatmap.bids.spaces`),
   unless ``allow_native_space``.
6. **One file per subject.** Several sessions or runs of a subject are refused, naming the
   subjects, their files and the ways out: narrow the selection (``--session``, ``--run``...)
   or say how to weigh them, ``several_per_subject="average"`` (each subject counts once:
   its files are averaged first, as a lesion overlap needs) or ``"each-file"`` (each file
   counts once, so subjects with more files weigh more).
7. Subjects that have matching files but none left after the session or run filter are
   logged by name (``--session pre`` drops the subjects without that session).

The result, :class:`BIDSSelection`, converts to a plain dict (``as_dict``) so that it
travels between Nipype nodes as hash-transparent data.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .filters import (
    ANY,
    ENTITY_KEYS,
    FLAGS,
    NONE,
    FilterMarker,
    filters_from_file,
    load_filter_file,
    merge_filters,
)
from .index import BIDSIndex, IndexedFile
from .spaces import native_space_problem

__all__ = [
    "WEIGHTINGS",
    "BIDSSelection",
    "select_bids_inputs",
    "select_bids_maps",
]

LOGGER = logging.getLogger(__name__)

#: Entities that differ between a subject's files (which session, which run) and are
#: never compared across subjects.
_PER_SUBJECT = ("subject", "session", "run", "extension")

#: Weightings when a subject has several files (``several_per_subject``).
WEIGHTINGS = {
    None: "one file per subject: each subject counts once",
    "average": "each subject counts once: a subject's files are averaged first, voxel by "
    "voxel (NaN and infinite values missing), then the subjects are combined",
    "each-file": "each file counts once: subjects with more files weigh more",
}


@dataclass
class BIDSSelection:
    """The inputs of one group map picked from a BIDS dataset, and what they have in common.

    Attributes
    ----------
    files : list of str
        Absolute paths, sorted.
    dataset_root : str
        Root of the dataset they come from.
    subjects : list of str
        Subject labels (without ``sub-``), sorted.
    entities : dict
        The entities every file shares (pybids names: ``session``, ``space``, ``res``,
        ``label``...), plus ``suffix`` and ``datatype``; they name the map.
    dataset_name : str
        The input dataset's ``Name``.
    generated_by : list of dict
        The input dataset's ``GeneratedBy`` (its pipelines).
    several_per_subject : str or None
        ``"average"`` or ``"each-file"`` when some subject has several files (how they are
        weighed), else None.
    groups : dict
        Subject -> its files, in order.
    participants : list of str or None
        The participants asked for, when they leave out some subject that has matching
        files (a subset, named in the map's desc); else None.
    filters : dict
        The filters that made the selection, as text (for the sidecar).
    """

    files: list[str]
    dataset_root: str
    subjects: list[str]
    entities: dict[str, str] = field(default_factory=dict)
    dataset_name: str = ""
    generated_by: list[dict[str, Any]] = field(default_factory=list)
    several_per_subject: str | None = None
    groups: dict[str, list[str]] = field(default_factory=dict)
    participants: list[str] | None = None
    filters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.groups:  # one file per subject, found from the paths
            for path in self.files:
                self.groups.setdefault(_subject_of(path), []).append(path)

    @property
    def weighting(self) -> str:
        """How subjects and files are weighed, in words (for sidecars and reports)."""
        return WEIGHTINGS[self.several_per_subject]

    @property
    def units(self) -> list[list[str]]:
        """The inputs of the map: a list of files per unit (a subject when averaging, else
        one file each), in order."""
        if self.several_per_subject == "average":
            return [self.groups[s] for s in self.subjects]
        return [[f] for f in self.files]

    def relpath(self, path: str) -> str:
        """Path of an input relative to its dataset's root (for BIDS URIs)."""
        return Path(path).absolute().relative_to(Path(self.dataset_root).absolute()).as_posix()

    def as_dict(self) -> dict[str, Any]:
        """The selection as plain data (JSON-able, hash-transparent in Nipype)."""
        return asdict(self)

    @classmethod
    def from_any(cls, value: BIDSSelection | Mapping[str, Any]) -> BIDSSelection:
        """Accept a selection or its :meth:`as_dict` form."""
        if isinstance(value, BIDSSelection):
            return value
        return cls(**dict(value))


def _subject_of(path: str) -> str:
    match = re.match(r"sub-([A-Za-z0-9]+)_", Path(path).name)
    return match.group(1) if match else ""


# -- selecting -----------------------------------------------------------------------------
def select_bids_maps(
    bids_dir: str | os.PathLike[str] | BIDSIndex,
    *,
    suffix: str | Sequence[str] | None = None,
    space: str | Sequence[str] | None = None,
    res: str | int | Sequence[str | int] | None = None,
    label: str | Sequence[str] | None = None,
    desc: str | Sequence[str] | None = None,
    datatype: str | Sequence[str] | None = None,
    session: str | Sequence[str] | None = None,
    task: str | Sequence[str] | None = None,
    run: str | int | Sequence[str | int] | None = None,
    acquisition: str | Sequence[str] | None = None,
    bids_filters: Mapping[str, Any] | None = None,
    filter_file: str | os.PathLike[str] | None = None,
    participant_label: Sequence[str] | None = None,
    several_per_subject: str | None = None,
    allow_native_space: bool = False,
    bids_database_dir: str | os.PathLike[str] | None = None,
) -> list[BIDSSelection]:
    """Pick the inputs of one or more group maps from a BIDS or BIDS-derivatives dataset.

    Each filter may be one value or several: several values of an entity give one map per
    value (``label=["GM", "WM", "CSF"]``: three maps; lists of two entities: every
    combination). All maps come from one index of the dataset.

    Parameters
    ----------
    bids_dir : str, os.PathLike or BIDSIndex
        Root of the dataset (raw, or derivatives such as fMRIPrep's), or its index.
    suffix : str or list, optional
        BIDS suffix of the inputs (``mask``, ``probseg``, ``dseg``...); default ``mask``
        unless the filters give one.
    space, res, label, desc, datatype, session, task, run, acquisition : str or list
        Entity values the files must have.
    bids_filters : mapping, optional
        Entity filters as a filter file holds them (any shape of :func:`load_filter_file`).
    filter_file : path-like, optional
        A filter file to read (named in errors); merged with ``bids_filters`` and the flags.
    participant_label : sequence of str, optional
        Subjects to include (with or without ``sub-``); all found otherwise.
    several_per_subject : {None, "average", "each-file"}, default=None
        How to weigh a subject with several files (sessions, runs): refused by default;
        ``"average"``: each subject counts once, its files averaged first; ``"each-file"``:
        each file counts once.
    allow_native_space : bool, default=False
        Accept inputs in a space that is not a template (``T1w``...) or without a space.
    bids_database_dir : path-like, optional
        Keep pybids' index there for later calls (see :mod:`~nipype_heatmap.bids.index`).

    Returns
    -------
    list of BIDSSelection
        One per map, in the order of the values given.

    Raises
    ------
    FileNotFoundError
        If ``bids_dir`` is not a BIDS dataset, or nothing matches (listing what exists).
    ValueError
        If the selection breaks a rule of the module docstring (naming the files), a value
        is not a BIDS label, or a metadata file is malformed.
    ImportError
        If pybids is not installed (``pip install 'nipype_heatmap[bids]'``).
    """
    if several_per_subject not in WEIGHTINGS:
        raise ValueError(
            f"several_per_subject={several_per_subject!r}: use None (one file per subject), "
            '"average" (each subject once, its files averaged first) or "each-file"'
        )
    index = (
        bids_dir
        if isinstance(bids_dir, BIDSIndex)
        else BIDSIndex(bids_dir, database_dir=bids_database_dir)
    )
    flags = {
        "suffix": suffix,
        "space": space,
        "res": res,
        "label": label,
        "desc": desc,
        "datatype": datatype,
        "session": session,
        "task": task,
        "run": run,
        "acquisition": acquisition,
        "subject": list(participant_label) if participant_label else None,
    }
    if filter_file is not None and bids_filters:
        raise ValueError("give a filter file or bids_filters, not both")
    content: dict[str, Any] = dict(bids_filters or {})
    file_name: Any = "bids_filters"
    if filter_file is not None:
        content = load_filter_file(filter_file)
        file_name = f"the filter file {filter_file}"
    chosen_datatype = datatype if isinstance(datatype, str) else None
    from_file = filters_from_file(content, path=file_name, datatype=chosen_datatype)
    filters = merge_filters(flags, from_file, file_name=file_name)
    filters.setdefault("suffix", ("mask",))
    extensions = filters.pop("extension", (".nii.gz", ".nii"))
    if extensions in (NONE, ANY) or not set(extensions) & {".nii.gz", ".nii"}:
        raise ValueError(
            f"{file_name}: extension {extensions!r}: the inputs are NIfTI files (.nii.gz, .nii)"
        )
    participants = filters.pop("subject", None)
    if participants is NONE:
        raise ValueError(f"{file_name}: subject null would leave no input (files need a subject)")
    asked = list(participants) if isinstance(participants, tuple) else None
    files = [f for f in index.files if f.entities.get("extension") in extensions]
    if not files:
        present = sorted({f.entities.get("extension", "") for f in index.files})
        raise FileNotFoundError(
            f"{index.root}: no file of a subject has extension {'|'.join(extensions)} "
            f"({file_name}); the subjects' NIfTI files have {', '.join(present) or 'none'}"
        )
    selections = []
    dropped: list[str] = []
    for combination in _combinations(filters):
        selection, message = _select_one(
            index,
            files,
            combination,
            asked,
            several_per_subject=several_per_subject,
            allow_native_space=allow_native_space,
        )
        selections.append(selection)
        if message and message not in dropped:
            dropped.append(message)
    for message in dropped:  # once per call, however many maps it concerns
        LOGGER.warning("%s", message)
    return selections


def select_bids_inputs(
    bids_dir: str | os.PathLike[str] | BIDSIndex, **kwargs: Any
) -> BIDSSelection:
    """Pick the inputs of one group map (see :func:`select_bids_maps`, which takes the same
    arguments).

    Raises
    ------
    ValueError
        If the filters give several maps (several values of an entity).
    """
    selections = select_bids_maps(bids_dir, **kwargs)
    if len(selections) > 1:
        raise ValueError(
            f"these filters give {len(selections)} maps (several values of an entity); use "
            "select_bids_maps for several maps"
        )
    return selections[0]


def _combinations(filters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One filter set per map: every combination of the values of listed entities."""
    names = list(filters)
    choices = [
        [filters[n]] if filters[n] in (NONE, ANY) else [(v,) for v in filters[n]] for n in names
    ]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)]


def _matches(entities: Mapping[str, str], filters: Mapping[str, Any]) -> bool:
    for name, wanted in filters.items():
        value = entities.get(name)
        if wanted is NONE:
            if value is not None:
                return False
        elif wanted is ANY:
            if value is None:
                return False
        elif value not in wanted:
            return False
    return True


def _describe(filters: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{name}={wanted.text if isinstance(wanted, FilterMarker) else '|'.join(wanted)}"
        for name, wanted in filters.items()
    )


def _select_one(
    index: BIDSIndex,
    files: list[IndexedFile],
    filters: dict[str, Any],
    asked: list[str] | None,
    *,
    several_per_subject: str | None,
    allow_native_space: bool,
) -> tuple[BIDSSelection, str | None]:
    """One map's selection, and the message on the subjects it dropped (or None)."""
    root = index.root
    candidates = [f for f in files if asked is None or f.entities["subject"] in asked]
    found = [f for f in candidates if _matches(f.entities, filters)]
    if not found:
        raise FileNotFoundError(_nothing_matches(root, candidates, files, filters, asked))
    subjects = sorted({f.entities["subject"] for f in found})
    everyone = {f.entities["subject"] for f in files if _matches(f.entities, filters)}
    subset = sorted(asked) if asked and everyone - set(asked) else None
    if asked:
        missing = [s for s in asked if s not in subjects]
        if missing:
            raise ValueError(
                f"{root}: no file matches {_describe(filters)} for "
                f"{', '.join('sub-' + m for m in missing)}; {len(everyone)} subject(s) have "
                f"one: {', '.join(sorted(everyone))}"
            )
    _refuse_mixed_entities(root, found)
    space = found[0].entities.get("space")
    problem = native_space_problem(space)
    if problem and not allow_native_space:
        raise ValueError(f"{root}: {len(found)} file(s) such as {found[0].path}: {problem}")
    groups: dict[str, list[str]] = {}
    for f in found:
        groups.setdefault(f.entities["subject"], []).append(f.path)
    crowded = {s: paths for s, paths in groups.items() if len(paths) > 1}
    if crowded and several_per_subject is None:
        raise ValueError(_several_files_message(root, crowded, found))
    message = _dropped(root, candidates, filters, subjects)
    shared = {
        name: found[0].entities[name]
        for name in (*ENTITY_KEYS, "suffix", "datatype")
        if name in found[0].entities
        and len({f.entities.get(name) for f in found}) == 1
        and not (name == "run" and crowded)
    }
    LOGGER.info(
        "Selected %d file(s) from %s for %d subject(s) (%s): %s",
        len(found),
        root,
        len(subjects),
        _describe(filters),
        " ".join(subjects),
    )
    selection = BIDSSelection(
        files=sorted(f.path for f in found),
        dataset_root=str(root),
        subjects=subjects,
        entities=shared,
        dataset_name=index.name,
        generated_by=index.generated_by,
        several_per_subject=several_per_subject if crowded else None,
        groups={s: sorted(groups[s]) for s in subjects},
        participants=subset,
        filters={
            name: wanted.text if isinstance(wanted, FilterMarker) else wanted[0]
            for name, wanted in filters.items()
        },
    )
    return selection, message


def _nothing_matches(
    root: Path,
    candidates: list[IndexedFile],
    files: list[IndexedFile],
    filters: Mapping[str, Any],
    asked: list[str] | None,
) -> str:
    """Say which filter excluded everything, and the values that exist for it."""
    who = f" for {', '.join('sub-' + s for s in asked)}" if asked else ""
    if not candidates:
        subjects = sorted({f.entities["subject"] for f in files})
        return (
            f"{root}: no NIfTI file{who}; the dataset has NIfTI files for "
            f"{len(subjects)} subject(s): {', '.join(subjects[:20])}"
        )
    hints = []
    for name, wanted in filters.items():
        others = {n: w for n, w in filters.items() if n != name}
        rest = [f for f in candidates if _matches(f.entities, others)]
        if not rest:
            continue
        values = sorted({f.entities.get(name, "(none)") for f in rest})
        flag = FLAGS.get(name, name)
        asked_text = wanted.text if isinstance(wanted, FilterMarker) else "|".join(wanted)
        hints.append(
            f"no file has {name}={asked_text} ({flag}); where the other filters match, "
            f"{name} is {', '.join(values[:20])}"
            + (
                " (values are case-sensitive)"
                if any(v.lower() == asked_text.lower() for v in values)
                else ""
            )
        )
    if not hints:  # several filters exclude everything: what each entity holds at all
        for name in filters:
            values = sorted({f.entities.get(name, "(none)") for f in candidates})
            hints.append(f"{name} values in the dataset: {', '.join(values[:20])}")
    return f"{root}: no file matches {_describe(filters)}{who}: " + "; ".join(hints)


def _refuse_mixed_entities(root: Path, found: list[IndexedFile]) -> None:
    """Every entity but the subject's, session's and run's has one value (or none)."""
    names = sorted({n for f in found for n in f.entities} - set(_PER_SUBJECT))
    order = ["datatype", "suffix", "space", "res", "label", "desc", "task", "acquisition"]
    names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
    for name in names:
        groups: dict[str, list[str]] = {}
        for f in found:
            groups.setdefault(f.entities.get(name, "(none)"), []).append(f.path)
        if len(groups) > 1:
            listing = "; ".join(
                f"{name}={value}: {len(paths)} file(s), e.g. {sorted(paths)[0]}"
                for value, paths in sorted(groups.items())
            )
            flag = FLAGS.get(name, "--bids-filter-file")
            raise ValueError(
                f"{root}: the selection mixes {name} values ({listing}); these are different "
                f"maps: pick one with {flag} (several values give one map each)"
            )


def _several_files_message(
    root: Path, crowded: Mapping[str, list[str]], found: list[IndexedFile]
) -> str:
    by_path = {f.path: f.entities for f in found}
    differing: dict[str, set[str]] = {}
    for paths in crowded.values():
        for name in ("session", "run", "task", "acquisition", "echo"):
            values = {by_path[p].get(name, "(none)") for p in paths}
            if len(values) > 1:
                differing.setdefault(name, set()).update(values)
    ways = [
        f"{FLAGS.get(name, '--bids-filter-file')} "
        f"{'LABEL' if name != 'run' else 'N'} ({name}s: {', '.join(sorted(values))})"
        for name, values in differing.items()
    ]
    listing = "; ".join(
        f"sub-{sub}: {', '.join(Path(p).name for p in sorted(paths))}"
        for sub, paths in sorted(crowded.items())
    )
    return (
        f"{root}: {len(crowded)} subject(s) have several matching files ({listing}). A group "
        "map counts subjects: narrow the selection to one file per subject"
        + (f" ({'; '.join(ways)})" if ways else " (--bids-filter-file)")
        + ", or say how to weigh them: --several-per-subject average (each subject counts "
        "once: its files are averaged first, as a lesion overlap needs) or "
        "--several-per-subject each-file (each file counts once, so subjects with more "
        "files weigh more)"
    )


def _dropped(
    root: Path, candidates: list[IndexedFile], filters: Mapping[str, Any], kept: Iterable[str]
) -> str | None:
    """Say which subjects a session or run filter left out, with what they have."""
    narrowing = [n for n in ("session", "run") if n in filters]
    if not narrowing:
        return None
    others = {n: w for n, w in filters.items() if n not in narrowing}
    wider = [f for f in candidates if _matches(f.entities, others)]
    kept = set(kept)
    dropped: dict[str, dict[str, set[str]]] = {}
    for f in wider:
        sub = f.entities["subject"]
        if sub not in kept:
            have = dropped.setdefault(sub, {n: set() for n in narrowing})
            for n in narrowing:
                have[n].add(f.entities.get(n, "none"))
    if not dropped:
        return None
    listing = "; ".join(
        f"sub-{s} ({', '.join(f'{n} {chr(124).join(sorted(v))}' for n, v in have.items())})"
        for s, have in sorted(dropped.items())
    )
    return (
        f"{root}: {len(dropped)} subject(s) have files matching the other filters but none "
        f"with {_describe({n: filters[n] for n in narrowing})}, and are not in the map: "
        f"{listing}"
    )
