"""BIDS out: the output dataset of group maps, its shared files, sidecars and provenance.

A group map is written at the root of a derivatives dataset::

    OUTPUT_DIR/
      dataset_description.json   # DatasetType "derivative"; GeneratedBy: this tool (with
                                 # CodeURL); SourceDatasets: the input datasets (BIDS URIs)
                                 # and their pipelines; DatasetLinks: one name per input
      README.md, .bidsignore
      space-MNI152NLin2009cAsym_res-2_label-GM_desc-meanProbseg_probseg.nii.gz
      space-MNI152NLin2009cAsym_res-2_label-GM_desc-meanProbseg_probseg.json
      space-..._probseg.html, figures/space-..._probseg.png     # the visual report

**Where.** The output folder is a dataset of its own. Refused: the input dataset itself or
a folder inside it (except under its ``derivatives/`` folder), a folder that holds an input
dataset (a parent of it, such as the project root), a folder that holds other datasets
(``derivatives/`` itself), and a raw BIDS dataset.

**Shared files under a lock.** ``dataset_description.json``, ``README.md`` and
``.bidsignore`` are shared by every run that writes into the dataset. A run reads them and
writes them back under the dataset folder's lock (:func:`nipype_heatmap.io.locked`), held
from reading the description to committing the run's output plan, so concurrent runs from
different input datasets keep every ``DatasetLinks`` entry right.

**Overwriting.** A map already there is replaced only when it was made from the same inputs
with the same parameters (a re-run); otherwise the run is refused, before any input is read,
unless ``overwrite``.

**Provenance.** Each sidecar's ``Sources`` are BIDS URIs (``bids:<link>:<path>``) that
resolve from the output dataset through ``DatasetLinks``; ``SpatialReference`` is the
template's TemplateFlow URL (:func:`~nipype_heatmap.bids.spaces.spatial_reference`);
``GeneratedBy`` has the command line with absolute paths.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..io import OutputPlan
from .metadata import read_dataset_description
from .selection import BIDSSelection
from .spaces import spatial_reference

__all__ = [
    "BIDS_VERSION",
    "BIDSIGNORE",
    "CODE_URL",
    "DATASET_ROLES",
    "MISSING_VALUE_RULE",
    "README_TEXT",
    "check_output_dir",
    "generated_by",
    "mask_type",
    "OutputDataset",
    "refuse_replacing",
    "selection_fields",
    "space_reference",
]

LOGGER = logging.getLogger(__name__)

BIDS_VERSION = "1.10.0"

#: Where the code of this tool is (``GeneratedBy.CodeURL``).
CODE_URL = "https://pypi.org/project/nipype-heatmap/"

MISSING_VALUE_RULE = (
    "NaN and infinite input values are missing: they add nothing, and the mean at a voxel "
    "divides by the number of inputs with a finite value there. A voxel with no finite "
    "input value is NaN in a mean and 0 in a sum."
)

#: What goes into ``.bidsignore``: the report, and maps BIDS has no suffix for.
BIDSIGNORE = ("figures", "*.html", "*_heatmap.nii.gz", "*_heatmap.json", "*_heatmap.tsv")

README_TEXT = (
    "# nipype_heatmap group maps\n\nGroup-level maps (voxel-wise mean or sum of many "
    "co-registered volumes, one per subject unless a sidecar says otherwise) made with "
    "nipype_heatmap. Each map's JSON sidecar lists its inputs (`Sources`, BIDS URIs resolved "
    "through `DatasetLinks` in `dataset_description.json`), how subjects are weighed "
    "(`Weighting`) and its parameters. `_probseg` maps are probabilities, `_mask` maps "
    "unions of masks or minimum-overlap masks, `_heatmap` maps counts, sums, cohort "
    "statistics or normalized maps.\n"
)

#: The plan roles of the dataset's shared files.
DATASET_ROLES = ("dataset_description", "readme", "bidsignore")


def generated_by(command: str | None = None) -> dict[str, Any]:
    """This tool's ``GeneratedBy`` entry (with the command line when given)."""
    entry: dict[str, Any] = {
        "Name": "nipype_heatmap",
        "Version": __version__,
        "Description": "Voxel-wise mean or sum of many co-registered volumes.",
        "CodeURL": CODE_URL,
    }
    if command:
        entry["CommandLine"] = command
    return entry


# -- where -----------------------------------------------------------------------------------
def check_output_dir(
    output_dir: str | os.PathLike[str], input_roots: Iterable[str | os.PathLike[str]]
) -> Path:
    """Check that ``output_dir`` can be a derivatives dataset of these inputs (module doc).

    Returns
    -------
    pathlib.Path
        The absolute output folder.

    Raises
    ------
    ValueError
        Naming the folder and why, when it is refused.
    """
    out_dir = Path(output_dir).absolute()
    out = out_dir.resolve()
    for input_root in input_roots:
        root = Path(input_root).absolute()
        real = root.resolve()
        if out == real or real in out.parents:
            if (real / "derivatives") not in (out, *out.parents) or out == real / "derivatives":
                raise ValueError(
                    f"{out_dir}: is inside the input dataset {root}; a group map would change "
                    "the dataset it reads. Write it into a derivatives dataset of its own, "
                    f"e.g. {root.parent / 'nipype_heatmap'}"
                )
        if out in real.parents:
            raise ValueError(
                f"{out_dir}: holds the input dataset {root}; a derivatives dataset is a folder "
                f"of its own beside its inputs, e.g. {root.parent / 'nipype_heatmap'}"
            )
    own = out_dir / "dataset_description.json"
    if out_dir.is_dir() and not own.exists():
        held = _datasets_inside(out_dir)
        if held:
            raise ValueError(
                f"{out_dir}: holds other datasets ({', '.join(str(p) for p in held[:3])}); it "
                "is a folder of datasets (such as derivatives/), not a dataset: write into a "
                f"folder of its own inside it, e.g. {out_dir / 'nipype_heatmap'}"
            )
    if own.is_file():
        kind = read_dataset_description(out_dir).get("DatasetType", "raw")
        if kind != "derivative":
            raise ValueError(
                f"{own}: {out_dir} is a {kind} BIDS dataset; write derivatives into their own "
                "folder (e.g. derivatives/nipype_heatmap)"
            )
    return out_dir


def _datasets_inside(folder: Path) -> list[Path]:
    """Datasets (folders with a dataset_description.json) one or two levels down."""
    found = []
    for child in sorted(folder.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if (child / "dataset_description.json").is_file():
            found.append(child)
            continue
        try:
            grandchildren = sorted(child.iterdir())
        except OSError:
            continue
        found += [g for g in grandchildren if (g / "dataset_description.json").is_file()]
    return found


# -- the dataset's shared files --------------------------------------------------------------
class OutputDataset:
    """A derivatives dataset of group maps: its place, links and shared files.

    Parameters
    ----------
    output_dir : path-like
        The dataset's folder (created when new).
    input_roots : iterable of path-like
        The input datasets of this run (checked against the folder: :func:`check_output_dir`).

    Raises
    ------
    ValueError
        If the folder is refused (:func:`check_output_dir`).
    """

    def __init__(
        self, output_dir: str | os.PathLike[str], input_roots: Iterable[str | os.PathLike[str]]
    ) -> None:
        self.input_roots = [Path(r).absolute() for r in input_roots]
        self.path = check_output_dir(output_dir, self.input_roots)

    def declare(self, plan: OutputPlan) -> None:
        """Declare the shared files in a plan (roles :data:`DATASET_ROLES`)."""
        plan.add("dataset_description", self.path / "dataset_description.json", nifti=False)
        plan.add("readme", self._readme(), nifti=False)
        plan.add("bidsignore", self.path / ".bidsignore", nifti=False)

    def _readme(self) -> Path:
        """The dataset's README: the one there (any of BIDS's names), else README.md."""
        for name in ("README", "README.md", "README.rst", "README.txt"):
            if (self.path / name).is_file():
                return self.path / name
        return self.path / "README.md"

    def read_description(self) -> dict[str, Any]:
        """The dataset's description as it is now (an empty dict for a new dataset)."""
        if not (self.path / "dataset_description.json").exists():
            return {}
        description = read_dataset_description(self.path)
        if description.get("DatasetType", "raw") != "derivative":
            raise ValueError(
                f"{self.path / 'dataset_description.json'}: {self.path} is not a derivatives "
                "dataset"
            )
        return description

    def links(self, description: Mapping[str, Any]) -> dict[Path, str]:
        """The ``DatasetLinks`` name of each input dataset: the existing one, else a new free
        name (its folder's name, then ``2``, ``3``...)."""
        links = dict(description.get("DatasetLinks", {}))
        names: dict[Path, str] = {}
        for root in self.input_roots:
            found = next(
                (
                    n
                    for n, t in links.items()
                    if _resolve_link(str(t), self.path) == root.resolve()
                ),
                None,
            )
            if found is None:
                base = re.sub(r"[^A-Za-z0-9]", "", root.name) or "input"
                found, number = base, 1
                while found in links:
                    number += 1
                    found = f"{base}{number}"
                if found != base:
                    LOGGER.warning(
                        "DatasetLinks already names another dataset %s (%s); linking %s as %s",
                        base,
                        links[base],
                        root,
                        found,
                    )
                links[found] = _link_target(root, self.path)
            names[root] = found
        return names

    def uris(self, selection: BIDSSelection, links: Mapping[Path, str]) -> list[str]:
        """The BIDS URIs of a selection's files, in order."""
        link = links[Path(selection.dataset_root).absolute()]
        return [f"bids:{link}:{selection.relpath(f)}" for f in selection.files]

    def write_shared(
        self,
        plan: OutputPlan,
        description: Mapping[str, Any],
        links: Mapping[Path, str],
        selections: Sequence[BIDSSelection],
    ) -> None:
        """Write the updated description, the README (the user's own kept) and
        ``.bidsignore`` into their roles of ``plan``."""
        updated = dict(description)
        updated.setdefault("Name", "nipype_heatmap group maps")
        updated["BIDSVersion"] = BIDS_VERSION
        updated["DatasetType"] = "derivative"
        dataset_links = dict(updated.get("DatasetLinks", {}))
        for root, name in links.items():
            dataset_links[name] = _link_target(root, self.path)
        updated["DatasetLinks"] = dataset_links
        sources = [dict(s) for s in updated.get("SourceDatasets", [])]
        pipelines: dict[str, list[dict[str, Any]]] = {}
        for selection in selections:
            name = links[Path(selection.dataset_root).absolute()]
            pipelines[name] = selection.generated_by
        for name in links.values():
            entry = {"URL": f"bids:{name}:"}
            version = "; ".join(
                " ".join(str(g[k]) for k in ("Name", "Version") if g.get(k))
                for g in pipelines.get(name, [])
                if g.get("Name")
            )
            if version:
                entry["Version"] = version
            sources = [s for s in sources if s.get("URL") != entry["URL"]] + [entry]
        updated["SourceDatasets"] = sources
        others = [g for g in updated.get("GeneratedBy", []) if g.get("Name") != "nipype_heatmap"]
        updated["GeneratedBy"] = [generated_by(), *others]
        plan.write_json("dataset_description", updated)
        readme = self._readme()
        plan.write_text("readme", readme.read_text() if readme.is_file() else README_TEXT)
        ignore = self.path / ".bidsignore"
        lines = ignore.read_text().splitlines() if ignore.is_file() else []
        plan.write_text(
            "bidsignore", "\n".join([*lines, *(e for e in BIDSIGNORE if e not in lines)]) + "\n"
        )


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


# -- sidecars ----------------------------------------------------------------------------------
def space_reference(selection: BIDSSelection, uris: Sequence[str]) -> str:
    """The ``SpatialReference`` of a selection's maps: the template's TemplateFlow URL, or
    (a native space, allowed) the first input's URI."""
    entities = selection.entities
    return spatial_reference(entities.get("space"), entities.get("res")) or uris[0]


def selection_fields(selection: BIDSSelection, uris: Sequence[str]) -> dict[str, Any]:
    """What every sidecar of a selection's maps says about its inputs."""
    fields: dict[str, Any] = {
        "Sources": list(uris),
        "SpatialReference": space_reference(selection, uris),
        "Weighting": selection.weighting,
        "SeveralFilesPerSubject": selection.several_per_subject is not None,
        "NumberOfSubjects": len(selection.subjects),
        "NumberOfInputs": len(selection.files),
        "Subjects": selection.subjects,
    }
    if selection.several_per_subject is not None:
        fields["FilesPerSubject"] = {s: len(selection.groups[s]) for s in selection.subjects}
    if selection.participants:
        fields["Participants"] = selection.participants
    fields["Selection"] = dict(selection.filters)
    fields["MissingValues"] = MISSING_VALUE_RULE
    return fields


def mask_type(entities: Mapping[str, str]) -> str:
    """The BIDS ``Type`` of a mask made from masks with these entities."""
    if entities.get("label", "").lower() == "lesion":
        return "Lesion"
    if entities.get("desc") == "brain" or entities.get("label", "").lower() == "brain":
        return "Brain"
    return "ROI"


def refuse_replacing(
    path: Path, sidecar: Path, identity: Mapping[str, Any], overwrite: bool
) -> None:
    """Refuse to replace a map made from other inputs or parameters (unless ``overwrite``).

    ``identity`` holds the sidecar fields that must be equal (``Sources`` and parameters).

    Raises
    ------
    FileExistsError
        Naming the map and the fields that differ, and ``--overwrite``.
    """
    if overwrite or not path.exists():
        return
    try:
        old = json.loads(sidecar.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        old = {}
    differences = [key for key, value in identity.items() if old.get(key) != value]
    if differences:
        raise FileExistsError(
            f"{path}: exists and was made from other inputs or parameters "
            f"({', '.join(differences)} differ); pass --overwrite (overwrite=True) to "
            "replace it, or write into another folder"
        )
