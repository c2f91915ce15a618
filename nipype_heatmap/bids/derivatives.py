"""BIDS out: group maps as BIDS derivatives with names that never collide and provenance
that resolves.

A group map is written at the root of a derivatives dataset, with no subject entity::

    OUTPUT_DIR/
      dataset_description.json   # DatasetType "derivative", GeneratedBy (this tool, then
                                 # the inputs' pipelines), SourceDatasets, DatasetLinks
      README.md, .bidsignore
      space-MNI152NLin2009cAsym_res-2_label-GM_desc-meanProbseg_probseg.nii.gz
      space-MNI152NLin2009cAsym_res-2_label-GM_desc-meanProbseg_probseg.json
      space-..._probseg.html, figures/space-..._probseg.png     # the visual report

**Names.** Every entity the inputs share goes into the name, in BIDS order (``task``,
``acq``, ``ce``, ``rec``, ``dir``, ``run``, ``echo``, ``space``, ``res``, ``den``,
``label``), and ``desc`` says what the map is made of: the kind of map, then the inputs'
own ``desc`` and suffix (``meanBrainMask``: the mean of the ``desc-brain`` masks). So two
different selections never share a name. Only a probability (the mean of masks or
probability maps, not normalized) is a ``_probseg``; the union of masks (a clipped sum of
masks) is a ``_mask``; anything else (counts, sums, normalized maps, means of other images)
is a ``_heatmap``, a name no one reads as a probability, declared in ``.bidsignore``
because BIDS has no suffix for it.

**Overwriting.** A map already there is replaced only when it was made from the same
inputs with the same parameters (a re-run); otherwise the write is refused unless
``overwrite=True``.

**Provenance.** ``DatasetLinks`` names every input dataset (updated, and checked for
conflicts, on every write); ``SourceDatasets`` and each sidecar's ``Sources`` are BIDS URIs
(``bids:<link>:<path>``) that resolve from the output dataset; ``SpatialReference`` is the
template identifier for standard spaces (else the first input's URI); ``Resolution``
accompanies a ``res`` entity; ``GeneratedBy`` records this tool's version and command, and
carries the inputs' own ``GeneratedBy``.

**Where.** Writing into the input dataset itself (or inside it, other than under its
``derivatives/`` folder) is refused: the derivative would change the dataset it reads.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from .selection import ENTITY_KEYS, BIDSSelection, check_label

LOGGER = logging.getLogger(__name__)

BIDS_VERSION = "1.10.0"

MISSING_VALUE_RULE = (
    "NaN and infinite input values are missing: they add nothing, and the mean at a voxel "
    "divides by the number of inputs with a finite value there. A voxel with no finite "
    "input value is NaN in a mean and 0 in a sum."
)

#: BIDS standard template identifiers (and TemplateFlow's spellings of them).
STANDARD_SPACES = frozenset(
    """ICBM452AirSpace ICBM452Warp5Space IXI549Space fsaverage fsaverageSym fsLR MNIColin27
    MNI152Lin MNI152NLin2009aSym MNI152NLin2009bSym MNI152NLin2009cSym MNI152NLin2009aAsym
    MNI152NLin2009bAsym MNI152NLin2009cAsym MNI152NLin6Sym MNI152NLin6ASym MNI152NLin6Asym
    MNI305 NIHPD OASIS30AntsOASISAnts OASIS30Atropos Talairach UNCInfant MNIInfant
    MNIPediatricAsym""".split()
)

#: What goes into ``.bidsignore``: the report, and maps BIDS has no suffix for.
BIDSIGNORE = ("figures", "*.html", "*_heatmap.nii.gz", "*_heatmap.json", "*_heatmap.tsv")


def map_kind(
    use_mean: bool, clip_to_input_range: bool, normalize: bool, input_suffix: str
) -> tuple[str, str]:
    """Return ``(kind, suffix)`` naming what a map is (see the module docstring)."""
    binary = input_suffix == "mask"
    if use_mean:
        kind = "mean"
        suffix = "probseg" if input_suffix in ("mask", "probseg") and not normalize else "heatmap"
    elif clip_to_input_range:
        kind, suffix = ("union", "mask") if binary and not normalize else ("clippedSum", "heatmap")
    else:
        kind, suffix = ("count" if binary else "sum"), "heatmap"
    return kind + ("Norm" if normalize else ""), suffix


def _camel(value: str) -> str:
    return value[:1].upper() + value[1:]


def derivative_stem(
    entities: Mapping[str, str],
    *,
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    out_desc: str | None = None,
) -> str:
    """Build the file stem of a group map from the entities its inputs share.

    Examples
    --------
    >>> derivative_stem({"space": "MNI152NLin2009cAsym", "res": "2", "desc": "brain",
    ...                  "suffix": "mask", "datatype": "anat"})
    'space-MNI152NLin2009cAsym_res-2_desc-meanBrainMask_probseg'
    >>> derivative_stem({"space": "MNI152NLin2009cAsym", "label": "lesion", "suffix": "mask"},
    ...                 use_mean=False, clip_to_input_range=False)
    'space-MNI152NLin2009cAsym_label-lesion_desc-countMask_heatmap'
    """
    input_suffix = entities.get("suffix", "")
    kind, suffix = map_kind(use_mean, clip_to_input_range, normalize, input_suffix)
    desc = out_desc or kind + _camel(entities.get("desc", "")) + _camel(input_suffix)
    return _stem(entities, desc, suffix)


def _stem(entities: Mapping[str, str], desc: str, suffix: str) -> str:
    check_label("desc", desc)
    parts = [
        f"{key}-{entities[name]}"
        for name, key in ENTITY_KEYS.items()
        if name != "desc" and entities.get(name)
    ]
    return "_".join([*parts, f"desc-{desc}", suffix])


#: The cohort maps in BIDS mode: name -> (desc prefix, suffix, what the values are).
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


def cohort_stem(entities: Mapping[str, str], name: str, **fields: Any) -> str:
    """The file stem of a cohort map (see :data:`COHORT_MAPS`) of the given inputs.

    Examples
    --------
    >>> cohort_stem({"space": "MNI152NLin2009cAsym", "label": "lesion", "suffix": "mask"},
    ...             "mincount", k=5)
    'space-MNI152NLin2009cAsym_label-lesion_desc-mincount5Mask_mask'
    >>> cohort_stem({"space": "MNI152NLin2009cAsym", "label": "GM", "suffix": "probseg"},
    ...             "std")
    'space-MNI152NLin2009cAsym_label-GM_desc-stdProbseg_heatmap'
    """
    prefix, suffix, _ = COHORT_MAPS[name]
    desc = (
        prefix.format(**fields)
        + _camel(entities.get("desc", ""))
        + _camel(entities.get("suffix", ""))
    )
    return _stem(entities, desc, suffix)


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
    return "".join(_camel(w) for w in words)


@dataclass
class DerivativeOutputs:
    """Paths written by :func:`write_group_derivative`."""

    out_file: str
    sidecar: str
    dataset_description: str
    report_html: str | None = None
    figures: list[str] = field(default_factory=list)


def write_group_derivative(
    in_file: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    selection: BIDSSelection | Mapping[str, Any],
    *,
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    out_desc: str | None = None,
    overwrite: bool = False,
    command: str | None = None,
    generate_report: bool = False,
    underlay: str | os.PathLike[str] | None = None,
) -> DerivativeOutputs:
    """Store a group map in a BIDS derivatives dataset, with its sidecar and provenance.

    Parameters
    ----------
    in_file : str or os.PathLike
        The map (from :class:`HeatmapVolume` or :func:`write_heatmap`).
    output_dir : str or os.PathLike
        Root of the derivatives dataset; created when new. Not the input dataset itself.
    selection : BIDSSelection or dict
        The inputs, as selected (their order is the map's).
    use_mean, clip_to_input_range, normalize : bool
        How the map was made (recorded; they also name it).
    out_desc : str, optional
        ``desc`` entity of the map, replacing the automatic one.
    overwrite : bool, default=False
        Replace a map of the same name made from other inputs or parameters.
    command : str, optional
        The command line or workflow that made the map, for ``GeneratedBy``.
    generate_report : bool, default=False
        Also write the visual report (needs the ``report`` extra).
    underlay : str or os.PathLike, optional
        Anatomical image for the report.

    Returns
    -------
    DerivativeOutputs

    Raises
    ------
    ValueError
        If ``output_dir`` is the input dataset (or inside it), holds a raw dataset, or
        links another dataset under the name this one needs; or a label is not a BIDS label.
    FileExistsError
        If a map of that name exists, made from other inputs or parameters, and not
        ``overwrite``.
    """
    import nibabel as nb
    import numpy as np

    from ..io import write_atomic

    selection = BIDSSelection.from_any(selection)
    out_dir, input_root, description_file, description, link = _open_dataset(output_dir, selection)

    stem = derivative_stem(
        selection.entities,
        use_mean=use_mean,
        clip_to_input_range=clip_to_input_range,
        normalize=normalize,
        out_desc=out_desc,
    )
    out_file = out_dir / f"{stem}.nii.gz"
    sidecar_file = out_dir / f"{stem}.json"
    uris = [f"bids:{link}:{selection.relpath(f)}" for f in selection.files]
    parameters = {
        "Aggregation": "mean" if use_mean else "sum",
        "ClipToInputRange": bool(clip_to_input_range),
        "Normalized": bool(normalize),
        "SeveralFilesPerSubject": bool(selection.several_per_subject),
    }
    _refuse_replacing_another_map(out_file, sidecar_file, uris, parameters, overwrite)

    img = nb.load(in_file)
    data = np.asanyarray(img.dataobj)
    finite = data[np.isfinite(data)]
    entities = selection.entities
    space = entities.get("space")
    what = entities.get("label") or entities.get("desc") or entities.get("suffix", "")
    sidecar: dict[str, Any] = {
        "Description": (
            f"Voxel-wise {parameters['Aggregation']} of {len(uris)} {what} "
            f"{entities.get('suffix', 'image')} volumes in {space or 'native'} space"
            + (" (the fraction of inputs at each voxel)" if use_mean else "")
            + (", clipped to the inputs' value range" if clip_to_input_range else "")
            + (", min-max normalized to [0, 1]" if normalize else "")
            + ". Made with nipype_heatmap."
        ),
        "Sources": uris,
        "SpatialReference": space if space in STANDARD_SPACES else uris[0],
        **parameters,
        "NumberOfInputs": len(uris),
        "Subjects": selection.subjects,
        "MissingValues": MISSING_VALUE_RULE,
        "ValueRange": [float(finite.min()), float(finite.max())] if finite.size else None,
        "GeneratedBy": [_generated_by(command)],
    }
    if entities.get("res"):
        zooms = " x ".join(f"{z:g}" for z in img.header.get_zooms()[:3])
        sidecar["Resolution"] = {entities["res"]: f"voxels of {zooms} mm"}

    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic([nb.load(os.fspath(in_file)).to_bytes()], out_file)
    _write_json(sidecar_file, sidecar)
    _update_description(description_file, description, link, input_root, out_dir, selection)
    _ensure_dataset_files(out_dir)
    outputs = DerivativeOutputs(str(out_file), str(sidecar_file), str(description_file))
    if generate_report:
        from ..report import make_report

        report = make_report(
            str(out_file),
            out_dir / "figures" / stem,
            html_file=out_dir / f"{stem}.html",
            underlay=underlay,
            sources=uris,
            parameters={k: v for k, v in sidecar.items() if k not in ("Sources", "Description")},
            title=stem,
            command=command,
            units=_units(use_mean, clip_to_input_range, normalize),
        )
        outputs.report_html = report["html"]
        outputs.figures = [report["png"]]
    LOGGER.info("Wrote %s (%d inputs)", out_file, len(uris))
    return outputs


def _open_dataset(
    output_dir: str | os.PathLike[str], selection: BIDSSelection
) -> tuple[Path, Path, Path, dict[str, Any], str]:
    """Check where a derivative goes and read what is there: the output folder, the input
    dataset's root, ``dataset_description.json`` (path and content) and the input's link name.

    Raises
    ------
    ValueError
        As :func:`write_group_derivative`.
    """
    out_dir = Path(output_dir).absolute()
    input_root = Path(selection.dataset_root).absolute()
    _refuse_inside_input(out_dir, input_root)
    description_file = out_dir / "dataset_description.json"
    description = _read_description(description_file)
    return (
        out_dir,
        input_root,
        description_file,
        description,
        _dataset_link(description, input_root, out_dir),
    )


def _units(use_mean: bool, clip_to_input_range: bool, normalize: bool) -> str:
    if normalize:
        return "normalized value (0 to 1)"
    if use_mean:
        return "probability (fraction of inputs)"
    return "count (number of inputs)" if not clip_to_input_range else "clipped sum"


def _generated_by(command: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Name": "nipype_heatmap",
        "Version": __version__,
        "Description": "Voxel-wise mean or sum of many co-registered volumes.",
    }
    if command:
        entry["CommandLine"] = command
    return entry


def _refuse_inside_input(out_dir: Path, input_root: Path) -> None:
    out, root = out_dir.resolve(), input_root.resolve()
    inside = out == root or root in out.parents
    if inside and (root / "derivatives") not in (out, *out.parents):
        raise ValueError(
            f"{out_dir}: is inside the input dataset {input_root}; a group map would change "
            "the dataset it reads. Write it into its own derivatives folder, e.g. "
            f"{input_root / 'derivatives' / 'nipype_heatmap'} or a sibling of the dataset"
        )


def _read_description(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    description = json.loads(path.read_text())
    dataset_type = description.get("DatasetType", "raw")
    if dataset_type != "derivative":
        raise ValueError(
            f"{path}: {path.parent} is a {dataset_type} BIDS dataset; write derivatives "
            "into their own folder (e.g. derivatives/nipype_heatmap)"
        )
    return description


def _link_target(input_root: Path, out_dir: Path) -> str:
    """A relative path from the derivatives folder to the input dataset, else a file URI."""
    try:
        return os.path.relpath(input_root, out_dir)
    except ValueError:  # another drive on Windows
        return input_root.as_uri()


def _resolve_link(target: str, out_dir: Path) -> Path:
    if target.startswith("file://"):
        return Path(target[len("file://") :]).resolve()
    return (out_dir / target).resolve()


def _dataset_link(description: Mapping[str, Any], input_root: Path, out_dir: Path) -> str:
    """The DatasetLinks name of the input dataset: the existing one, else a new free name."""
    links = dict(description.get("DatasetLinks", {}))
    for name, target in links.items():
        if _resolve_link(str(target), out_dir) == input_root.resolve():
            return name
    base = re.sub(r"[^A-Za-z0-9]", "", input_root.name) or "input"
    name, number = base, 1
    while name in links:
        number += 1
        name = f"{base}{number}"
    if name != base:
        LOGGER.warning(
            "DatasetLinks already names another dataset %s (%s); linking %s as %s",
            base,
            links[base],
            input_root,
            name,
        )
    return name


def _refuse_replacing_another_map(
    out_file: Path,
    sidecar_file: Path,
    uris: list[str],
    parameters: Mapping[str, Any],
    overwrite: bool,
) -> None:
    if overwrite or not out_file.exists():
        return
    try:
        old = json.loads(sidecar_file.read_text())
    except (OSError, ValueError):
        old = {}
    differences = [
        key for key, value in {"Sources": uris, **parameters}.items() if old.get(key) != value
    ]
    if differences:
        raise FileExistsError(
            f"{out_file}: exists and was made from other inputs or parameters "
            f"({', '.join(differences)} differ); pass --overwrite (overwrite=True) to "
            "replace it, or write into another folder"
        )


def _update_description(
    path: Path,
    description: dict[str, Any],
    link: str,
    input_root: Path,
    out_dir: Path,
    selection: BIDSSelection,
) -> None:
    """Create or update dataset_description.json: links, sources and pipelines of this run."""
    description = dict(description)
    description.setdefault("Name", "nipype_heatmap group maps")
    description["BIDSVersion"] = BIDS_VERSION
    description["DatasetType"] = "derivative"
    links = dict(description.get("DatasetLinks", {}))
    links[link] = _link_target(input_root, out_dir)
    description["DatasetLinks"] = links
    sources = [s for s in description.get("SourceDatasets", []) if isinstance(s, dict)]
    if not any(s.get("URL") == f"bids:{link}:" for s in sources):
        sources.append({"URL": f"bids:{link}:"})
    description["SourceDatasets"] = sources
    generated = [g for g in description.get("GeneratedBy", []) if isinstance(g, dict)]
    ours = _generated_by(None)
    generated = [ours] + [g for g in generated if g.get("Name") != "nipype_heatmap"]
    for upstream in selection.generated_by:  # the inputs' pipelines (e.g. fMRIPrep)
        if isinstance(upstream, dict) and upstream not in generated:
            generated.append(upstream)
    description["GeneratedBy"] = generated
    _write_json(path, description)


def _ensure_dataset_files(out_dir: Path) -> None:
    readme = out_dir / "README.md"
    if not readme.exists():
        readme.write_text(
            "# nipype_heatmap group maps\n\nGroup-level maps (voxel-wise mean or sum of many "
            "co-registered volumes) made with nipype_heatmap. Each map's JSON sidecar lists "
            "its inputs (`Sources`, BIDS URIs resolved through `DatasetLinks` in "
            "`dataset_description.json`) and parameters. `_probseg` maps are probabilities, "
            "`_mask` maps unions of masks, `_heatmap` maps counts, sums or normalized maps.\n"
        )
    ignore = out_dir / ".bidsignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    missing = [entry for entry in BIDSIGNORE if entry not in lines]
    if missing:
        ignore.write_text("\n".join([*lines, *missing]) + "\n")


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    from ..io import write_atomic

    write_atomic([(json.dumps(content, indent=2) + "\n").encode("utf-8")], path)


def write_cohort_derivatives(
    maps: Mapping[str, str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    selection: BIDSSelection | Mapping[str, Any],
    *,
    table: str | os.PathLike[str] | None = None,
    ddof: int = 1,
    min_count: int | None = None,
    groups: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, str]:
    """Store cohort maps (coverage, spread, overlap, subtraction) as BIDS derivatives.

    Each map gets the name :func:`cohort_stem` gives (its ``desc`` says what it is, then
    the inputs' ``desc`` and suffix, as for the heatmap), a JSON sidecar with its inputs as
    BIDS URIs, what its values are and its parameters, and the same overwrite rule as
    :func:`write_group_derivative`. The minimum-overlap table goes beside the non-zero
    count map, as ``<its stem>.tsv``.

    Parameters
    ----------
    maps : mapping
        Cohort map name (a key of :data:`COHORT_MAPS`) -> its file.
    output_dir, selection, overwrite, command
        As for :func:`write_group_derivative`. For a subtraction, ``selection`` holds the
        files of both groups.
    table : path-like, optional
        The minimum-overlap TSV.
    ddof : int, default=1
        Of the std and variance maps (recorded).
    min_count : int, optional
        The k of the ``mincount`` mask (named and recorded).
    groups : mapping, optional
        For a subtraction: ``Column``, ``GroupA``, ``GroupB`` (the values, as labels or
        text), ``SubjectsA``, ``SubjectsB``.

    Returns
    -------
    dict
        Each map's name (and ``table``) -> the written path.
    """
    import nibabel as nb

    from ..io import write_atomic

    selection = BIDSSelection.from_any(selection)
    out_dir, input_root, description_file, description, link = _open_dataset(output_dir, selection)
    uris = [f"bids:{link}:{selection.relpath(f)}" for f in selection.files]
    fields: dict[str, Any] = {"ddof": ddof, "k": min_count}
    if groups is not None:
        a, b = bids_label_of(groups["GroupA"]), bids_label_of(groups["GroupB"])
        column = bids_label_of(groups["Column"])
        fields |= {"groups": f"{column}{a}Vs{b}", "group_a": column + a, "group_b": column + b}
    planned = {}
    for name, path in maps.items():
        stem = cohort_stem(selection.entities, name, **fields)
        parameters: dict[str, Any] = {
            "Statistic": name,
            "SeveralFilesPerSubject": bool(selection.several_per_subject),
        }
        if name in ("std", "variance"):
            parameters["DeltaDegreesOfFreedom"] = int(ddof)
        if name == "mincount":
            parameters["MinimumCount"] = int(min_count) if min_count is not None else None
        if groups is not None:
            parameters["Groups"] = dict(groups)
        out_file = out_dir / f"{stem}.nii.gz"
        sidecar_file = out_dir / f"{stem}.json"
        _refuse_replacing_another_map(out_file, sidecar_file, uris, parameters, overwrite)
        planned[name] = (path, stem, out_file, sidecar_file, parameters)
    out_dir.mkdir(parents=True, exist_ok=True)
    space = selection.entities.get("space")
    written: dict[str, str] = {}
    for name, (path, stem, out_file, sidecar_file, parameters) in planned.items():
        what = COHORT_MAPS[name][2].format(**fields)
        sidecar = {
            "Description": f"Per voxel, {what}, over {len(uris)} "
            f"{selection.entities.get('suffix', 'image')} volumes in {space or 'native'} space. "
            "Made with nipype_heatmap.",
            "Sources": uris,
            "SpatialReference": space if space in STANDARD_SPACES else uris[0],
            **parameters,
            "NumberOfInputs": len(uris),
            "Subjects": selection.subjects,
            "MissingValues": MISSING_VALUE_RULE,
            "GeneratedBy": [_generated_by(command)],
        }
        write_atomic([nb.load(os.fspath(path)).to_bytes()], out_file)
        _write_json(sidecar_file, sidecar)
        written[name] = str(out_file)
        if name == "overlap" and table is not None:
            table_file = out_dir / f"{stem}.tsv"
            write_atomic([Path(table).read_bytes()], table_file)
            written["table"] = str(table_file)
    _update_description(description_file, description, link, input_root, out_dir, selection)
    _ensure_dataset_files(out_dir)
    LOGGER.info("Wrote %d cohort map(s) into %s", len(planned), out_dir)
    return written


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
        if name in ("label", "desc"):
            continue
        if entities.get(name):
            parts.append(f"{key}-{entities[name]}")
        if name == "space":
            parts.append(f"atlas-{atlas_name}")
    return "_".join(parts)


def check_atlas_derivative(
    output_dir: str | os.PathLike[str],
    selection: BIDSSelection | Mapping[str, Any],
    *,
    atlas_name: str,
    thresholds: Sequence[float],
    background: int = 0,
    overwrite: bool = False,
) -> str:
    """Check, before any input is read, where an atlas derivative goes: the output folder's
    place (not inside the input dataset), and that no map of the same name made from other
    inputs or parameters would be replaced (the rule of :func:`write_group_derivative`).

    Returns
    -------
    str
        The file stem of the atlas's files (:func:`atlas_stem`).

    Raises
    ------
    ValueError, FileExistsError
        As :func:`write_group_derivative`.
    """
    selection = BIDSSelection.from_any(selection)
    out_dir, _, _, _, link = _open_dataset(output_dir, selection)
    uris = [f"bids:{link}:{selection.relpath(f)}" for f in selection.files]
    return _check_atlas_targets(
        out_dir, selection, uris, atlas_name, thresholds, background, overwrite
    )


def _check_atlas_targets(
    out_dir: Path,
    selection: BIDSSelection,
    uris: list[str],
    atlas_name: str,
    thresholds: Sequence[float],
    background: int,
    overwrite: bool,
) -> str:
    """:func:`check_atlas_derivative` once the dataset is open; returns the stem."""
    from ..atlas import atlas_names, threshold_label

    stem = atlas_stem(selection.entities, atlas_name)
    threshold_of = {f"th{threshold_label(t)}": float(t) for t in thresholds}
    for key, name in atlas_names(atlas_name, thresholds, stem=stem).items():
        if not name.endswith(".nii.gz"):
            continue
        parameters: dict[str, Any] = {"Background": int(background)}
        if key in threshold_of:
            parameters["Threshold"] = threshold_of[key]
        target = out_dir / name
        sidecar = target.with_name(name[: -len(".nii.gz")] + ".json")
        _refuse_replacing_another_map(target, sidecar, uris, parameters, overwrite)
    return stem


def write_atlas_derivatives(
    atlas: Any,
    output_dir: str | os.PathLike[str],
    selection: BIDSSelection | Mapping[str, Any],
    *,
    atlas_name: str,
    thresholds: Sequence[float],
    label_table: Mapping[int, Any] | None = None,
    sparse: bool = False,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, str]:
    """Write an atlas as a BIDS derivative, straight into ``output_dir``:
    ``<stem>_probseg.nii.gz``, ``<stem>_desc-th<k>_dseg.nii.gz``, ``<stem>_dseg.tsv``
    and, with ``sparse``, ``<stem>_desc-sparse_probseg.nii.gz`` (see :func:`atlas_stem`),
    each NIfTI with its sidecar (inputs as BIDS URIs, ``SpatialReference``, the subjects,
    the atlas's parameters), ``atlas-<name>_description.json``, and the overwrite rule of
    :func:`check_atlas_derivative` (checked again here).

    Parameters
    ----------
    atlas : LabelAtlasAccumulator or SparseAtlas
        The counted atlas.
    output_dir, selection, overwrite, command
        As for :func:`write_group_derivative`.
    atlas_name, thresholds, label_table, sparse
        As for :func:`nipype_heatmap.atlas.write_atlas`.

    Returns
    -------
    dict
        What :func:`~nipype_heatmap.atlas.write_atlas` wrote, and ``description``.
    """
    from ..atlas import write_atlas

    selection = BIDSSelection.from_any(selection)
    out_dir, input_root, description_file, description, link = _open_dataset(output_dir, selection)
    uris = [f"bids:{link}:{selection.relpath(f)}" for f in selection.files]
    stem = _check_atlas_targets(
        out_dir, selection, uris, atlas_name, thresholds, atlas.background, overwrite
    )
    space = selection.entities.get("space")
    reference = space if space in STANDARD_SPACES else uris[0]
    result = write_atlas(
        atlas,
        out_dir,
        atlas_name=atlas_name,
        stem=stem,
        thresholds=thresholds,
        label_table=label_table,
        sparse=sparse,
        extra_metadata={
            "Sources": uris,
            "SpatialReference": reference,
            "Subjects": selection.subjects,
            "GeneratedBy": [_generated_by(command)],
        },
    )
    description_json = out_dir / f"atlas-{atlas_name}_description.json"
    _write_json(
        description_json,
        {
            "Name": f"{atlas_name}: probabilistic atlas of {len(uris)} label images",
            "Description": "Per-label probability maps (fraction of inputs with each label), "
            "maximum-probability maps at thresholds and a label table, made with "
            "nipype_heatmap from the images listed in each file's Sources.",
            "SpatialReference": reference,
        },
    )
    result["description"] = str(description_json)
    _update_description(description_file, description, link, input_root, out_dir, selection)
    _ensure_dataset_files(out_dir)
    LOGGER.info("Wrote the atlas %s into %s", atlas_name, out_dir)
    return result
