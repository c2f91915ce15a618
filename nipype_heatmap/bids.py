"""BIDS in, BIDS derivatives out: select inputs by entities, write a group-level derivative.

Selection uses pybids (the ``bids`` extra), imported only when called. Writing needs only
the standard library, nibabel and this package.

A group map is written at the root of a derivatives dataset, with no subject entity (BIDS
makes it optional for ``probseg``)::

    OUTPUT_DIR/
      dataset_description.json    # DatasetType "derivative", GeneratedBy, SourceDatasets
      README.md
      .bidsignore                  # figures and *.html (the visual report)
      space-MNI152NLin2009cAsym_label-lesion_desc-mean_probseg.nii.gz
      space-MNI152NLin2009cAsym_label-lesion_desc-mean_probseg.json
      figures/space-..._desc-mean_probseg.{png,svg}
      space-..._desc-mean_probseg.html

The ``desc`` says what the map is: ``mean`` (probability: the fraction of inputs), ``count``
(an unclipped sum), ``union`` (a sum clipped to the input range), with ``norm`` appended when
min-max normalized. The sidecar lists every input as a BIDS URI (``bids:<link>:<path>``, the
link declared in ``DatasetLinks``), the parameters and the missing-value rule.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__

LOGGER = logging.getLogger(__name__)

BIDS_VERSION = "1.10.0"

MISSING_VALUE_RULE = (
    "NaN and infinite input values are missing: they add nothing, and the mean at a voxel "
    "divides by the number of inputs with a finite value there. A voxel with no finite "
    "input value is NaN in a mean and 0 in a sum."
)

_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")


@dataclass
class BIDSSelection:
    """The inputs picked from a BIDS dataset, and what was asked for."""

    files: list[str]
    dataset_root: str
    subjects: list[str]
    entities: dict[str, str] = field(default_factory=dict)

    def relpath(self, path: str) -> str:
        """Path of an input relative to its dataset's root (for BIDS URIs)."""
        return Path(path).resolve().relative_to(Path(self.dataset_root).resolve()).as_posix()


def _check_label(name: str, value: str | None) -> None:
    if value is not None and not _LABEL_RE.match(value):
        raise ValueError(f"{name} {value!r} is not a BIDS label (letters and digits only)")


def select_bids_inputs(
    bids_dir: str | os.PathLike[str],
    *,
    space: str | None = None,
    label: str | None = None,
    desc: str | None = None,
    suffix: str = "mask",
    participant_label: Sequence[str] | None = None,
    derivatives: Sequence[str | os.PathLike[str]] | bool = False,
) -> BIDSSelection:
    """Pick the 3D inputs of a group heatmap from a BIDS or BIDS-derivatives dataset.

    Parameters
    ----------
    bids_dir : str or os.PathLike
        Root of the dataset (raw, or a derivatives dataset such as lesion masks).
    space, label, desc : str, optional
        Entity values the files must have (``space-<space>`` etc.).
    suffix : str, default="mask"
        BIDS suffix of the files (``mask``, ``probseg``, ``dseg``...).
    participant_label : sequence of str, optional
        Subjects to include (with or without ``sub-``); all found otherwise.
    derivatives : sequence of paths or bool, default=False
        Derivatives datasets to index with a raw ``bids_dir`` (pybids' ``derivatives``).

    Returns
    -------
    BIDSSelection
        Files sorted by path, the dataset root, the subjects found.

    Raises
    ------
    FileNotFoundError
        If ``bids_dir`` is not a BIDS dataset, or nothing matches.
    ValueError
        If the selection mixes spaces or resolutions (naming the files of each), or
        subjects asked for have no matching file (naming them).
    ImportError
        If pybids is not installed (``pip install 'nipype_heatmap[bids]'``).
    """
    try:
        from bids import BIDSLayout
    except ImportError as err:
        raise ImportError(
            "selecting inputs from BIDS needs pybids: pip install 'nipype_heatmap[bids]'"
        ) from err
    root = Path(bids_dir).absolute()
    description = root / "dataset_description.json"
    if not description.is_file():
        raise FileNotFoundError(f"{root}: not a BIDS dataset (no dataset_description.json)")
    for name, value in (("space", space), ("label", label), ("desc", desc), ("suffix", suffix)):
        _check_label(name, value)
    is_derivative = json.loads(description.read_text()).get("DatasetType") == "derivative"
    layout = BIDSLayout(
        root, validate=False, is_derivative=is_derivative, derivatives=derivatives or False
    )
    query = {"suffix": suffix, "extension": [".nii.gz", ".nii"]}
    query.update({k: v for k, v in (("space", space), ("label", label), ("desc", desc)) if v})
    asked = [p.removeprefix("sub-") for p in participant_label] if participant_label else None
    if asked:
        query["subject"] = asked
    found = layout.get(return_type="object", **query)
    described = ", ".join(f"{k}={v}" for k, v in query.items())
    if not found:
        raise FileNotFoundError(f"{root}: no file matches {described}")

    groups: dict[tuple[str, str], list[str]] = {}
    for bids_file in found:
        entities = bids_file.get_entities()
        key = (str(entities.get("space", "-")), str(entities.get("res", "-")))
        groups.setdefault(key, []).append(bids_file.path)
    if len(groups) > 1:
        listing = "; ".join(
            f"space-{s} res-{r}: {len(files)} file(s), e.g. {sorted(files)[0]}"
            for (s, r), files in sorted(groups.items())
        )
        raise ValueError(
            f"{root}: the selection mixes spaces or resolutions ({listing}); "
            "pick one with --space (and a res entity), or resample the inputs"
        )
    subjects = sorted({str(f.get_entities().get("subject")) for f in found} - {"None"})
    if asked:
        missing = sorted(set(asked) - set(subjects))
        if missing:
            raise ValueError(
                f"{root}: no file matches {described} for subject(s) "
                f"{', '.join('sub-' + m for m in missing)}; found {len(subjects)} subject(s)"
            )
    LOGGER.info(
        "Selected %d file(s) from %s for %d subject(s): %s",
        len(found),
        root,
        len(subjects),
        " ".join(subjects),
    )
    (space_found, res_found) = next(iter(groups))
    entities = {"space": space_found} if space_found != "-" else {}
    if res_found != "-":
        entities["res"] = res_found
    if label:
        entities["label"] = label
    return BIDSSelection(
        files=sorted(f.path for f in found),
        dataset_root=str(root),
        subjects=subjects,
        entities=entities,
    )


def map_desc(use_mean: bool, clip_to_input_range: bool, normalize: bool) -> str:
    """The ``desc`` entity naming what a map is: mean, count or union, +norm."""
    desc = "mean" if use_mean else ("union" if clip_to_input_range else "count")
    return desc + ("norm" if normalize else "")


def derivative_name(entities: dict[str, str], desc: str, suffix: str = "probseg") -> str:
    """Build the BIDS file stem ``space-X[_res-R][_label-L]_desc-D_<suffix>``."""
    parts = [f"{k}-{entities[k]}" for k in ("space", "res", "label") if entities.get(k)]
    _check_label("desc", desc)
    return "_".join([*parts, f"desc-{desc}", suffix])


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
    selection: BIDSSelection,
    *,
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    out_desc: str | None = None,
    dataset_link: str = "input",
    generate_report: bool = False,
    underlay: str | os.PathLike[str] | None = None,
) -> DerivativeOutputs:
    """Copy a heatmap into a BIDS derivatives dataset, with its sidecar and provenance.

    Parameters
    ----------
    in_file : str or os.PathLike
        The heatmap (from :class:`HeatmapVolume` or :func:`write_heatmap`).
    output_dir : str or os.PathLike
        Root of the derivatives dataset; created with ``dataset_description.json`` and a
        README when new. An existing raw (non-derivative) dataset there is refused.
    selection : BIDSSelection
        The inputs, as selected (their order is the heatmap's).
    use_mean, clip_to_input_range, normalize : bool
        How the map was made (recorded; they also choose the default ``desc``).
    out_desc : str, optional
        ``desc`` entity of the map; default from :func:`map_desc`.
    dataset_link : str, default="input"
        Name of the input dataset in ``DatasetLinks`` (BIDS URIs ``bids:<link>:<path>``).
    generate_report : bool, default=False
        Also write the visual report (PNG, SVG, HTML; needs the ``report`` extra).
    underlay : str or os.PathLike, optional
        Anatomical image for the report, on the map's grid or resampled to it.

    Returns
    -------
    DerivativeOutputs

    Raises
    ------
    ValueError
        If ``output_dir`` holds a raw BIDS dataset, or a label is not alphanumeric.
    """
    import nibabel as nb
    import numpy as np

    from .io import save_atomic

    _check_label("dataset_link", dataset_link)
    out_dir = Path(output_dir).absolute()
    existing = out_dir / "dataset_description.json"
    if existing.exists():
        dataset_type = json.loads(existing.read_text()).get("DatasetType", "raw")
        if dataset_type != "derivative":
            raise ValueError(
                f"{existing}: {out_dir} is a {dataset_type} BIDS dataset; write derivatives "
                "into their own folder (e.g. derivatives/nipype_heatmap)"
            )
    stem = derivative_name(
        selection.entities, out_desc or map_desc(use_mean, clip_to_input_range, normalize)
    )
    uris = [f"bids:{dataset_link}:{selection.relpath(f)}" for f in selection.files]
    img = nb.load(in_file)
    data = np.asanyarray(img.dataobj)
    finite = data[np.isfinite(data)]
    aggregation = "mean" if use_mean else "sum"
    label = selection.entities.get("label", "the selected")
    space = selection.entities.get("space", "native")
    sidecar = {
        "Description": (
            f"Voxel-wise {aggregation} of {len(uris)} {label} volumes in {space} space"
            + (" (the fraction of inputs at each voxel)" if use_mean else "")
            + (", clipped to the inputs' value range" if clip_to_input_range else "")
            + (", min-max normalized to [0, 1]" if normalize else "")
            + ". Made with nipype_heatmap."
        ),
        "Sources": uris,
        "SpatialReference": uris[0],
        "Aggregation": aggregation,
        "ClipToInputRange": bool(clip_to_input_range),
        "Normalized": bool(normalize),
        "NumberOfInputs": len(uris),
        "Subjects": selection.subjects,
        "MissingValues": MISSING_VALUE_RULE,
        "ValueRange": [float(finite.min()), float(finite.max())] if finite.size else None,
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    if not existing.exists():
        _write_json(
            existing,
            {
                "Name": "nipype_heatmap group maps",
                "BIDSVersion": BIDS_VERSION,
                "DatasetType": "derivative",
                "GeneratedBy": [
                    {
                        "Name": "nipype_heatmap",
                        "Version": __version__,
                        "Description": "Voxel-wise mean or sum of many co-registered volumes.",
                    }
                ],
                "SourceDatasets": [{"URL": f"bids:{dataset_link}"}],
                "DatasetLinks": {dataset_link: _link_to(selection.dataset_root, out_dir)},
            },
        )
    readme = out_dir / "README.md"
    if not readme.exists():
        readme.write_text(
            "# nipype_heatmap group maps\n\nGroup-level maps (voxel-wise mean or sum of many "
            "co-registered volumes) made with nipype_heatmap. Each map's JSON sidecar lists "
            "its inputs (`Sources`) and parameters.\n"
        )
    ignore = out_dir / ".bidsignore"
    if not ignore.exists():
        ignore.write_text("figures\n*.html\n")

    out_file = Path(save_atomic(img, out_dir / f"{stem}.nii.gz"))
    sidecar_file = out_dir / f"{stem}.json"
    _write_json(sidecar_file, sidecar)
    outputs = DerivativeOutputs(str(out_file), str(sidecar_file), str(existing))
    if generate_report:
        from .report import make_report

        report = make_report(
            str(out_file),
            out_dir / "figures" / stem,
            html_file=out_dir / f"{stem}.html",
            underlay=underlay,
            sources=uris,
            parameters={k: v for k, v in sidecar.items() if k not in ("Sources", "Description")},
            title=stem,
            units="probability (fraction of inputs)"
            if use_mean and not normalize
            else ("normalized value" if normalize else "count (number of inputs)"),
        )
        outputs.report_html = report["html"]
        outputs.figures = [report["png"], report["svg"]]
    LOGGER.info("Wrote %s (%d inputs)", out_file, len(uris))
    return outputs


def _link_to(dataset_root: str, out_dir: Path) -> str:
    """A relative path from the derivatives folder to the input dataset, else a file URI."""
    try:
        return os.path.relpath(dataset_root, out_dir)
    except ValueError:  # another drive on Windows
        return Path(dataset_root).as_uri()


def _write_json(path: Path, content: dict) -> None:
    from .io import write_atomic

    write_atomic([(json.dumps(content, indent=2) + "\n").encode("utf-8")], path)
