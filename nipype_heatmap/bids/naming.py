"""Names of group maps: every map of a different selection gets a different name.

A group map lies at the root of a derivatives dataset, with no subject entity. Its name is
built from its selection (:class:`~nipype_heatmap.bids.selection.BIDSSelection`):

- every entity its inputs share, in BIDS order (``ses``, ``task``, ``acq``... ``space``,
  ``res``, ``den``, ``label``): a map of one session is ``ses-pre_...``, of one run
  ``run-1_...``, so it never shares a name with the map of every session or run;
- ``desc``: what the map is (``mean``, ``count``, ``union``, ``coverage``...), the inputs'
  own ``desc`` and suffix (``meanBrainMask``: the mean of ``desc-brain`` masks), then, where
  BIDS has no entity for what made the selection:

  - the weighting, when subjects have several files: ``SubjectAvg`` (each subject once, its
    files averaged first) or ``EachFile`` (each file once);
  - a subset of the participants: ``Subset`` and 8 hexadecimal digits of a hash of their
    sorted labels (the sidecar lists them);

- the suffix: ``_probseg`` for a probability (the mean of masks or probability maps), ``_mask``
  for a union of masks, ``_heatmap`` for anything else (declared in ``.bidsignore``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from ..options import MapOptions
from .filters import ENTITY_KEYS, check_label
from .selection import BIDSSelection

__all__ = [
    "COHORT_MAPS",
    "atlas_stem",
    "bids_label_of",
    "camel",
    "cohort_stem",
    "entity_prefix",
    "map_stem",
    "selection_tags",
    "stem",
    "subset_tag",
    "subtraction_fields",
]

#: The cohort maps: name -> (desc prefix, suffix, what the values are).
COHORT_MAPS = {
    "coverage": ("coverage", "heatmap", "number of inputs with a finite value"),
    "std": ("std", "heatmap", "standard deviation across inputs (ddof={ddof})"),
    "variance": ("variance", "heatmap", "variance across inputs (ddof={ddof})"),
    "overlap": ("nonzero", "heatmap", "number of inputs with a finite, non-zero value"),
    "mincount": ("mincount{k}", "mask", "1 where at least {k} inputs are non-zero, else 0"),
    "subtraction": (
        "subtraction{groups}",
        "heatmap",
        "percent of group A minus percent of group B with a non-zero value",
    ),
    "percent_a": ("percent{group_a}", "heatmap", "percent of group A (mean x 100)"),
    "percent_b": ("percent{group_b}", "heatmap", "percent of group B (mean x 100)"),
}

_WEIGHTING_TAGS = {None: "", "average": "SubjectAvg", "each-file": "EachFile"}


def camel(value: str) -> str:
    """``"brain"`` -> ``"Brain"`` (the first letter up, the rest as it is)."""
    return value[:1].upper() + value[1:]


def subset_tag(participants: list[str] | None) -> str:
    """``Subset<8 hex>`` for a subset of participants, ``""`` for all.

    Examples
    --------
    >>> subset_tag(["01", "02"])
    'Subset1f3c3605'
    >>> subset_tag(None)
    ''
    """
    if not participants:
        return ""
    digest = hashlib.sha256(",".join(sorted(participants)).encode()).hexdigest()
    return f"Subset{digest[:8]}"


def selection_tags(selection: BIDSSelection) -> str:
    """What of a selection goes into ``desc`` after the inputs' desc and suffix."""
    return _WEIGHTING_TAGS[selection.several_per_subject] + subset_tag(selection.participants)


def entity_prefix(entities: Mapping[str, str], *, skip: tuple[str, ...] = ("desc",)) -> list[str]:
    """``key-value`` parts of the shared entities, in BIDS order."""
    return [
        f"{key}-{entities[name]}"
        for name, key in ENTITY_KEYS.items()
        if name not in skip and entities.get(name)
    ]


def stem(entities: Mapping[str, str], desc: str, suffix: str) -> str:
    """A group map's file stem from its inputs' shared entities, ``desc`` and suffix."""
    check_label("desc", desc)
    return "_".join([*entity_prefix(entities), f"desc-{desc}", suffix])


def map_stem(
    selection: BIDSSelection, options: MapOptions = MapOptions(), *, out_desc: str | None = None
) -> str:
    """The file stem of a group map (see the module doc).

    Examples
    --------
    >>> sel = BIDSSelection(["/d/sub-01/anat/sub-01_desc-brain_mask.nii.gz"], "/d", ["01"],
    ...     {"space": "MNI152NLin2009cAsym", "res": "2", "desc": "brain", "suffix": "mask",
    ...     "datatype": "anat"})
    >>> map_stem(sel)
    'space-MNI152NLin2009cAsym_res-2_desc-meanBrainMask_probseg'
    >>> map_stem(sel, MapOptions(use_mean=False, clip_to_input_range=False))
    'space-MNI152NLin2009cAsym_res-2_desc-countBrainMask_heatmap'
    """
    entities = selection.entities
    input_suffix = entities.get("suffix", "")
    kind, suffix = options.bids_kind(input_suffix)
    desc = out_desc or (
        kind + camel(entities.get("desc", "")) + camel(input_suffix) + selection_tags(selection)
    )
    return stem(entities, desc, suffix)


def cohort_stem(selection: BIDSSelection, name: str, **fields: Any) -> str:
    """The file stem of a cohort map (a key of :data:`COHORT_MAPS`) of a selection.

    Examples
    --------
    >>> sel = BIDSSelection([], "/d", [], {"space": "MNI152NLin2009cAsym", "label": "lesion",
    ...     "suffix": "mask"})
    >>> cohort_stem(sel, "mincount", k=5)
    'space-MNI152NLin2009cAsym_label-lesion_desc-mincount5Mask_mask'
    """
    prefix, suffix, _ = COHORT_MAPS[name]
    entities = selection.entities
    desc = (
        prefix.format(**fields)
        + camel(entities.get("desc", ""))
        + camel(entities.get("suffix", ""))
        + selection_tags(selection)
    )
    return stem(entities, desc, suffix)


def bids_label_of(value: str) -> str:
    """A BIDS label (letters and digits) from a free text such as a participants.tsv value,
    in camel case: ``"no deficit"`` -> ``"NoDeficit"``.

    Raises
    ------
    ValueError
        If no letter or digit is left.
    """
    words = re.findall(r"[A-Za-z0-9]+", str(value))
    if not words:
        raise ValueError(f"{value!r} holds no letter or digit to name a map with")
    return "".join(camel(w) for w in words)


def subtraction_fields(groups: Mapping[str, Any]) -> dict[str, str]:
    """The name parts of a subtraction's maps from its groups (``Column``, ``GroupA``,
    ``GroupB``)."""
    a, b = bids_label_of(groups["GroupA"]), bids_label_of(groups["GroupB"])
    column = bids_label_of(groups["Column"])
    return {"groups": f"{column}{a}Vs{b}", "group_a": column + a, "group_b": column + b}


def atlas_stem(entities: Mapping[str, str], atlas_name: str) -> str:
    """The stem shared by an atlas's files: the inputs' entities (not ``label`` or ``desc``,
    which the atlas summarizes) with ``atlas-<name>`` after ``space``, in BIDS order.

    Examples
    --------
    >>> atlas_stem({"space": "MNI152NLin2009cAsym", "res": "2", "desc": "aseg",
    ...             "suffix": "dseg"}, "Cohort")
    'space-MNI152NLin2009cAsym_atlas-Cohort_res-2'
    """
    check_label("atlas", atlas_name)
    parts = []
    for name, key in ENTITY_KEYS.items():
        if name in ("label", "desc", "atlas"):
            continue
        if entities.get(name):
            parts.append(f"{key}-{entities[name]}")
        if name == "space":
            parts.append(f"atlas-{atlas_name}")
    return "_".join(parts)
