"""The runs of the BIDS mode: selections in, a derivatives dataset out, through one plan.

Every run (group maps, the subtraction, the atlas, and the Nipype sink that stores maps a
node made) follows the same steps:

1. **Plan** every file it writes (:class:`~nipype_heatmap.io.OutputPlan`): each map, its
   sidecar, its cohort maps and their sidecars and table, its report (page and figure),
   and the dataset's shared files; checked against each other and against every input, and
   against the maps already there (:func:`~nipype_heatmap.bids.derivatives.refuse_replacing`),
   before any input is read.
2. **Compute** the maps straight into the plan (or, for the sink, copy the node's maps).
3. **Finish under the dataset's lock**: read ``dataset_description.json``, name the links,
   write the sidecars (whose ``Sources`` use those names), the reports and the shared files,
   and commit the plan; all files are replaced together, so a map, its sidecar and its report
   are always one run's (a run killed between renames is completed by the next one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from .._runtime import resolve_num_threads
from ..accumulate import HeatmapAccumulator, Reference, SourceRecord, values_on_grid
from ..accumulate.values import Values
from ..api import accumulate_files, write_maps
from ..io import (
    OutputPlan,
    ReadAhead,
    check_volume_header,
    load_image,
    locked,
    read_header,
    read_volume,
)
from ..io.locking import DEFAULT_TIMEOUT
from ..maps import subtraction_images
from ..options import CohortOptions, MapOptions
from .derivatives import (
    OutputDataset,
    generated_by,
    mask_type,
    refuse_replacing,
    selection_fields,
)
from .naming import COHORT_MAPS, atlas_stem, cohort_stem, map_stem, subtraction_fields
from .participants import participants_groups
from .selection import BIDSSelection

__all__ = [
    "accumulate_units",
    "find_label_table",
    "heatmap_image",
    "store_group_maps",
    "subject_mean",
    "write_atlas_maps",
    "write_group_maps",
    "write_subtraction_maps",
]

LOGGER = logging.getLogger(__name__)


# -- accumulating subjects -----------------------------------------------------------------
def accumulate_units(
    units: Sequence[Sequence[str]],
    *,
    overlap: bool = False,
    spread: bool = False,
    num_threads: int | None = None,
    progress: bool | None = None,
    debug: bool = False,
) -> HeatmapAccumulator:
    """Add each unit (a subject's files, or one file) to a new accumulator, in order.

    A unit of one file is added as it is; a unit of several files (a subject's sessions) is
    first averaged into one volume in memory, voxel by voxel over its finite values (NaN
    where none is), so that each unit counts once. Every header is checked before the first
    voxel is added.

    Raises
    ------
    ValueError
        As :func:`nipype_heatmap.api.accumulate_files`, naming the file.
    """
    if all(len(unit) == 1 for unit in units):
        return accumulate_files(
            [unit[0] for unit in units],
            overlap=overlap,
            spread=spread,
            num_threads=num_threads,
            progress=progress,
            debug=debug,
        )
    paths = [os.path.abspath(p) for unit in units for p in unit]
    first = read_volume(paths[0])
    reference = Reference.of(first)
    grid = reference.grid
    for path in paths[1:]:
        check_volume_header(path, read_header(path), grid)
    acc = HeatmapAccumulator(reference, overlap=overlap, spread=spread)
    threads = resolve_num_threads(num_threads)

    def prepare(volume):
        return values_on_grid(volume, grid)

    with ReadAhead(
        paths[1:], read_ahead=max(2, threads), workers=threads, prepare=prepare
    ) as rest:
        stream = _chain(prepare(first), rest)
        for unit in units:
            values = [next(stream) for _ in unit]
            acc.add(values[0] if len(values) == 1 else subject_mean(values))
            LOGGER.debug("Added %s (%d file(s))", unit[0], len(unit))
    return acc


def _chain(head: Any, tail: Any) -> Iterator[Any]:
    yield head
    yield from tail


def subject_mean(values: Sequence[Values]) -> Values:
    """The mean of one subject's volumes (on one grid), voxel by voxel over finite values;
    NaN where none of them is finite. Its record is the first file's (header, path)."""
    total = np.zeros(values[0].array.shape, np.float64, order="F")
    count = np.zeros(values[0].array.shape, np.int64, order="F")
    for x in values:
        array = np.asarray(x.array, dtype=np.float64)
        finite = np.isfinite(array)
        total += np.where(finite, array, 0.0)
        count += finite
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.asfortranarray(total / count)
    finite = mean[np.isfinite(mean)]
    value_range = (float(finite.min()), float(finite.max())) if finite.size else None
    head = values[0].record
    record = SourceRecord(
        head.path, value_range, head.header, head.image_class, None, None, integer=False
    )
    return Values(mean, value_range, bool(finite.size == mean.size), None, record)


def heatmap_image(acc: HeatmapAccumulator, options: MapOptions, input_suffix: str):
    """The heatmap image: a count or sum of integer inputs, exact, in an integer type (uint8
    for a union of masks, uint16/uint32 for counts); anything else float32."""
    if options.use_mean or options.normalize or not acc.exact:
        return acc.map_image(options)
    data = acc.aggregate(options)
    dtype = _integer_dtype(data, union=options.clip_to_input_range and input_suffix == "mask")
    if dtype is None:
        return acc.map_image(options)
    return acc.make_image(data.astype(dtype), options.descrip(acc.n_inputs))


def _integer_dtype(data: np.ndarray, *, union: bool) -> type | None:
    lo, hi = float(np.min(data)), float(np.max(data))
    if union and lo >= 0 and hi <= 1:
        return np.uint8
    for dtype in (np.uint16, np.uint32) if lo >= 0 else (np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return None


# -- one map of a run ------------------------------------------------------------------------
@dataclass
class _MapSet:
    """One group map of a run and the files that go with it, by plan role."""

    key: str
    selection: BIDSSelection
    stem: str
    cohort_stems: dict[str, str]
    image: Any = None
    exact: bool = False
    n_units: int = 0

    def role(self, name: str) -> str:
        return f"{self.key}:{name}"


class _Roles:
    """A plan seen by :func:`nipype_heatmap.api.write_maps` for one map set: its roles
    (``coverage``, ``table``...) are the set's (``<key>:coverage``); the heatmap is left out
    (the run writes it, in an integer type when exact)."""

    def __init__(self, plan: OutputPlan, key: str) -> None:
        self._plan, self._key = plan, key

    def __contains__(self, role: object) -> bool:
        return role != "heatmap" and f"{self._key}:{role}" in self._plan

    def write(self, role: str, chunks: Any) -> None:
        self._plan.write(f"{self._key}:{role}", chunks)

    def write_image(self, role: str, img: Any) -> None:
        self._plan.write_image(f"{self._key}:{role}", img)

    def write_text(self, role: str, text: str) -> None:
        self._plan.write_text(f"{self._key}:{role}", text)


def _declare(
    plan: OutputPlan,
    out_dir: Path,
    key: str,
    selection: BIDSSelection,
    options: MapOptions,
    cohort: CohortOptions,
    *,
    out_desc: str | None,
    report: bool,
) -> _MapSet:
    n_units = len(selection.units)
    k = cohort.min_count_for(n_units)
    stems = {name: cohort_stem(selection, name, ddof=cohort.ddof, k=k) for name in cohort.maps()}
    maps = _MapSet(key, selection, map_stem(selection, options, out_desc=out_desc), stems)
    maps.n_units = n_units
    for name, stem in [("heatmap", maps.stem), *stems.items()]:
        plan.add(maps.role(name), out_dir / f"{stem}.nii.gz")
        plan.add(maps.role(f"{name}_sidecar"), out_dir / f"{stem}.json", nifti=False)
    if cohort.overlap:
        plan.add(maps.role("table"), out_dir / f"{stems['overlap']}.tsv", nifti=False)
    if report:
        plan.add(maps.role("report"), out_dir / f"{maps.stem}.html", nifti=False)
        plan.add(maps.role("figure"), out_dir / "figures" / f"{maps.stem}.png", nifti=False)
    return maps


def _identity(maps: _MapSet, name: str, uris: list[str], options: MapOptions, cohort) -> dict:
    """The sidecar fields that must match for a map to be replaced without --overwrite."""
    identity: dict[str, Any] = {"Sources": uris, "Weighting": maps.selection.weighting}
    if name == "heatmap":
        return {**identity, **options.as_parameters()}
    identity["Statistic"] = name
    if name in ("std", "variance"):
        identity["DeltaDegreesOfFreedom"] = int(cohort.ddof)
    if name == "mincount":
        identity["MinimumCount"] = cohort.min_count_for(maps.n_units)
    return identity


def _check_existing(plan, sets, dataset, links, options, cohort, overwrite) -> None:
    for maps in sets:
        uris = dataset.uris(maps.selection, links)
        for name in ["heatmap", *maps.cohort_stems]:
            refuse_replacing(
                Path(plan.path(maps.role(name))),
                Path(plan.path(maps.role(f"{name}_sidecar"))),
                _identity(maps, name, uris, options, cohort),
                overwrite,
            )


def _units_word(selection: BIDSSelection) -> str:
    return "files" if selection.several_per_subject == "each-file" else "subjects"


def _units(options: MapOptions, selection: BIDSSelection) -> str:
    return options.units.replace("inputs", _units_word(selection))


def _heatmap_sidecar(maps: _MapSet, uris, options: MapOptions, command) -> dict[str, Any]:
    selection = maps.selection
    entities = selection.entities
    data = np.asanyarray(maps.image.dataobj)
    finite = data[np.isfinite(data)]
    space = entities.get("space")
    what = entities.get("label") or entities.get("desc") or entities.get("suffix", "")
    parameters = options.as_parameters()
    sidecar: dict[str, Any] = {
        "Description": (
            f"Voxel-wise {parameters['Aggregation']} of {len(selection.files)} {what} "
            f"{entities.get('suffix', 'image')} volumes of {len(selection.subjects)} subjects "
            f"in {space or 'native'} space ({selection.weighting})"
            + (" (the fraction of subjects at each voxel)" if options.use_mean else "")
            + (", clipped to the inputs' value range" if options.clip_to_input_range else "")
            + (", min-max normalized to [0, 1]" if options.normalize else "")
            + ". Made with nipype_heatmap."
        ),
        **selection_fields(selection, uris),
        **parameters,
        "Units": _units(options, selection),
        "ValueRange": [float(finite.min()), float(finite.max())] if finite.size else None,
    }
    if entities.get("res"):
        zooms = " x ".join(f"{z:g}" for z in maps.image.header.get_zooms()[:3])
        sidecar["Resolution"] = {entities["res"]: f"voxels of {zooms} mm"}
    if options.bids_kind(entities.get("suffix", ""))[1] == "mask":
        sidecar["Type"] = mask_type(entities)
    sidecar["GeneratedBy"] = [generated_by(command)]
    return sidecar


def _cohort_sidecar(maps: _MapSet, name: str, uris, cohort: CohortOptions, command) -> dict:
    selection = maps.selection
    k = cohort.min_count_for(maps.n_units)
    what = (
        COHORT_MAPS[name][2]
        .format(ddof=cohort.ddof, k=k)
        .replace("inputs", _units_word(selection))
    )
    space = selection.entities.get("space")
    sidecar: dict[str, Any] = {
        "Description": f"Per voxel, {what}, over {len(selection.files)} "
        f"{selection.entities.get('suffix', 'image')} volumes of {len(selection.subjects)} "
        f"subjects in {space or 'native'} space ({selection.weighting}). Made with "
        "nipype_heatmap.",
        **selection_fields(selection, uris),
        "Statistic": name,
    }
    if name in ("std", "variance"):
        sidecar["DeltaDegreesOfFreedom"] = int(cohort.ddof)
    if name == "mincount":
        sidecar["MinimumCount"] = k
        sidecar["Type"] = "ROI"
    sidecar["GeneratedBy"] = [generated_by(command)]
    return sidecar


def _report_kind(options: MapOptions, selection: BIDSSelection, exact: bool) -> str:
    kind = options.report_kind(selection.entities.get("suffix", ""))
    return "value" if kind == "count" and not exact else kind


def _finish(
    plan: OutputPlan,
    dataset: OutputDataset,
    sets: Sequence[_MapSet],
    *,
    sidecars: Callable[[_MapSet, list[str]], dict[str, dict[str, Any]]],
    report: Callable[[_MapSet, list[str]], dict[str, bytes] | None],
    overwrite: bool,
    identity: Callable[[_MapSet, str, list[str]], dict[str, Any]] | None,
    lock_timeout: float,
) -> dict[str, str]:
    """Step 3 of the module doc: under the dataset's lock, the sidecars, reports and shared
    files, then the commit. Returns role -> path."""
    with locked(dataset.path, what=f"the dataset {dataset.path}", timeout=lock_timeout):
        description = dataset.read_description()
        links = dataset.links(description)
        for maps in sets:
            uris = dataset.uris(maps.selection, links)
            content = sidecars(maps, uris)
            for name, sidecar in content.items():
                if identity is not None:
                    refuse_replacing(
                        Path(plan.path(maps.role(name))),
                        Path(plan.path(maps.role(f"{name}_sidecar"))),
                        identity(maps, name, uris),
                        overwrite,
                    )
                plan.write_json(maps.role(f"{name}_sidecar"), sidecar)
            rendered = report(maps, uris)
            if rendered is not None:
                plan.write(maps.role("report"), [rendered["html"]])
                plan.write(maps.role("figure"), [rendered["png"]])
        dataset.write_shared(plan, description, links, [m.selection for m in sets])
        return plan.commit()


# -- group maps -----------------------------------------------------------------------------
def write_group_maps(
    selections: Sequence[BIDSSelection | Mapping[str, Any]],
    output_dir: str | os.PathLike[str],
    *,
    options: MapOptions = MapOptions(),
    cohort: CohortOptions = CohortOptions(),
    out_desc: str | None = None,
    overwrite: bool = False,
    command: str | None = None,
    report: bool = False,
    underlay: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    progress: bool | None = None,
    debug: bool = False,
    lock_timeout: float = DEFAULT_TIMEOUT,
    _maps: Sequence[Mapping[str, str]] | None = None,
) -> list[dict[str, str]]:
    """Make group maps of BIDS selections and write them into a derivatives dataset.

    Each selection gives a map (and the cohort maps ``cohort`` asks for), named after it
    (:mod:`~nipype_heatmap.bids.naming`), with a JSON sidecar and, with ``report``, a visual
    report; the dataset's shared files are updated. All files of all maps are planned before
    any input is read, and written together (see the module doc).

    Parameters
    ----------
    selections : sequence of BIDSSelection (or their ``as_dict()``)
        One per map (:func:`~nipype_heatmap.bids.select_bids_maps`).
    output_dir : path-like
        The derivatives dataset (created); see
        :func:`~nipype_heatmap.bids.derivatives.check_output_dir`.
    options, cohort
        What the maps are (:class:`~nipype_heatmap.options.MapOptions`,
        :class:`~nipype_heatmap.options.CohortOptions`).
    out_desc : str, optional
        The ``desc`` of the map, replacing the automatic one (one map only).
    overwrite : bool, default=False
        Replace maps of the same names made from other inputs or parameters.
    command : str, optional
        What made the maps (recorded in ``GeneratedBy.CommandLine``).
    report : bool, default=False
        Also write each map's report (the ``report`` extra).
    underlay : path-like, optional
        Anatomy for the reports (default: nilearn's MNI152 template for MNI152 spaces).
    num_threads, progress, debug
        As :func:`nipype_heatmap.api.accumulate_files`.
    lock_timeout : float, default=600
        Seconds to wait for another run writing into the same dataset.

    Returns
    -------
    list of dict
        Per selection, role (``heatmap``, ``heatmap_sidecar``, cohort maps, ``table``,
        ``report``, ``figure``) -> path.

    Raises
    ------
    ValueError
        If the output folder is refused, two outputs are one file, or an input cannot be
        read or is not on the first one's grid (naming it).
    FileExistsError
        If a map of the same name made from other inputs or parameters is there.
    """
    chosen = [BIDSSelection.from_any(s) for s in selections]
    if out_desc is not None and len(chosen) > 1:
        raise ValueError(f"--out-desc {out_desc} would give {len(chosen)} maps one name")
    dataset = OutputDataset(output_dir, {s.dataset_root for s in chosen})
    with OutputPlan() as plan:
        sets = [
            _declare(
                plan, dataset.path, f"map{i}", s, options, cohort, out_desc=out_desc, report=report
            )
            for i, s in enumerate(chosen)
        ]
        dataset.declare(plan)
        for s in chosen:
            plan.refuse_inputs(s.files)
        if _maps is not None:
            for node_maps in _maps:
                plan.refuse_inputs(node_maps.values(), "map to store")
        _check_existing(
            plan,
            sets,
            dataset,
            dataset.links(dataset.read_description()),
            options,
            cohort,
            overwrite,
        )
        for i, maps in enumerate(sets):
            if _maps is None:
                _compute(plan, maps, options, cohort, num_threads, progress, debug)
            else:
                _copy(plan, maps, _maps[i], options)
        written = _finish(
            plan,
            dataset,
            sets,
            sidecars=lambda m, uris: {
                "heatmap": _heatmap_sidecar(m, uris, options, command),
                **{n: _cohort_sidecar(m, n, uris, cohort, command) for n in m.cohort_stems},
            },
            report=lambda m, uris: (
                _render(m, uris, options, underlay, command) if report else None
            ),
            overwrite=overwrite,
            identity=lambda m, name, uris: _identity(m, name, uris, options, cohort),
            lock_timeout=lock_timeout,
        )
    result = [_of(written, m.key) for m in sets]
    LOGGER.info("Wrote %s", ", ".join(r["heatmap"] for r in result))
    return result


def _of(written: Mapping[str, str], key: str) -> dict[str, str]:
    return {r.split(":", 1)[1]: p for r, p in written.items() if r.startswith(f"{key}:")}


def _compute(plan, maps: _MapSet, options, cohort, num_threads, progress, debug) -> None:
    acc = accumulate_units(
        maps.selection.units,
        overlap=cohort.overlap,
        spread=cohort.std,
        num_threads=num_threads,
        progress=progress,
        debug=debug,
    )
    maps.image = heatmap_image(acc, options, maps.selection.entities.get("suffix", ""))
    maps.exact = acc.exact
    plan.write_image(maps.role("heatmap"), maps.image)
    write_maps(acc, _Roles(plan, maps.key), options, cohort)


def _copy(plan, maps: _MapSet, node_maps: Mapping[str, str], options: MapOptions) -> None:
    """The sink's step 2: a node's maps into the plan (counts of integer inputs in an
    integer type, as the direct route writes them)."""
    image = load_image(node_maps["heatmap"])
    maps.exact = _integer_inputs(maps.selection.files)
    if not (options.use_mean or options.normalize) and maps.exact:
        data = np.asanyarray(image.dataobj)
        suffix = maps.selection.entities.get("suffix", "")
        dtype = _integer_dtype(data, union=options.clip_to_input_range and suffix == "mask")
        if dtype is not None and np.all(np.isfinite(data)) and np.all(data == np.round(data)):
            header = image.header.copy()
            header.set_data_dtype(dtype)
            image = type(image)(data.astype(dtype), image.affine, header)
    maps.image = image
    plan.write_image(maps.role("heatmap"), image)
    for name in maps.cohort_stems:
        plan.write_image(maps.role(name), load_image(node_maps[name]))
    if "table" in node_maps and maps.role("table") in plan:
        plan.write_text(maps.role("table"), Path(node_maps["table"]).read_text())


def _integer_inputs(files: Sequence[str]) -> bool:
    """Whether every file holds unscaled integers (their sums are exact)."""
    for path in files:
        header = read_header(path)
        slope, inter = header.get_slope_inter()
        scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
        if header.get_data_dtype().kind not in "biu" or scaled:
            return False
    return True


def _render(maps: _MapSet, uris, options: MapOptions, underlay, command) -> dict[str, bytes]:
    from ..report import render_map_report

    sidecar = _heatmap_sidecar(maps, uris, options, command)
    return render_map_report(
        maps.image,
        kind=_report_kind(options, maps.selection, maps.exact),
        title=maps.stem,
        space=maps.selection.entities.get("space"),
        underlay=underlay,
        units=sidecar["Units"],
        sources=uris,
        parameters={k: v for k, v in sidecar.items() if k not in ("Sources", "Description")},
        command=command,
    )


def store_group_maps(
    maps: Sequence[Mapping[str, str]],
    selections: Sequence[BIDSSelection | Mapping[str, Any]],
    output_dir: str | os.PathLike[str],
    **kwargs: Any,
) -> list[dict[str, str]]:
    """Store maps that a node made (``HeatmapVolume``) as :func:`write_group_maps` would
    have written them: one plan, the same names, sidecars and reports.

    Parameters
    ----------
    maps : sequence of mapping
        Per selection, role (``heatmap``, ``coverage``, ``std``, ``variance``, ``overlap``,
        ``mincount``, ``table``) -> the node's file.
    selections, output_dir, kwargs
        As :func:`write_group_maps` (the computing options are not used).
    """
    for key in ("num_threads", "progress", "debug"):
        kwargs.pop(key, None)
    return write_group_maps(selections, output_dir, _maps=list(maps), **kwargs)


# -- subtraction -------------------------------------------------------------------------------
def write_subtraction_maps(
    selection: BIDSSelection | Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    *,
    column: str,
    group_a: str,
    group_b: str | None = None,
    participants_tsv: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    command: str | None = None,
    report: bool = False,
    underlay: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, str]:
    """The subtraction analysis of a selection's subjects, split by a ``participants.tsv``
    column: the percent of group A minus the percent of group B with a non-zero value, and
    both groups' percent maps, as derivatives (and, with ``report``, the subtraction's
    report, on a symmetric scale).

    Subjects are the unit: a subject with several files (``several_per_subject="average"``)
    counts once, its files averaged first. Planned and written as :func:`write_group_maps`.

    Returns
    -------
    dict
        Role (``subtraction``, ``percent_a``, ``percent_b``, their ``*_sidecar``,
        ``report``, ``figure``) -> path.
    """
    selection = BIDSSelection.from_any(selection)
    units_a, units_b, groups = participants_groups(
        selection, column, group_a, group_b, participants_tsv
    )
    kept = sorted([*groups["SubjectsA"], *groups["SubjectsB"]])
    both = BIDSSelection(
        files=sorted(f for s in kept for f in selection.groups[s]),
        dataset_root=selection.dataset_root,
        subjects=kept,
        entities=selection.entities,
        dataset_name=selection.dataset_name,
        generated_by=selection.generated_by,
        several_per_subject=selection.several_per_subject,
        groups={s: selection.groups[s] for s in kept},
        participants=selection.participants,
        filters=selection.filters,
    )
    fields = subtraction_fields(groups)
    dataset = OutputDataset(output_dir, [selection.dataset_root])
    with OutputPlan() as plan:
        names = ("subtraction", "percent_a", "percent_b")
        maps = _MapSet("sub", both, cohort_stem(both, "subtraction", **fields), {})
        maps.n_units = len(kept)
        for name in names:
            stem = cohort_stem(both, name, **fields)
            plan.add(maps.role(name), dataset.path / f"{stem}.nii.gz")
            plan.add(maps.role(f"{name}_sidecar"), dataset.path / f"{stem}.json", nifti=False)
        if report:
            plan.add(maps.role("report"), dataset.path / f"{maps.stem}.html", nifti=False)
            plan.add(
                maps.role("figure"), dataset.path / "figures" / f"{maps.stem}.png", nifti=False
            )
        dataset.declare(plan)
        plan.refuse_inputs([f for unit in units_a for f in unit], "group A input")
        plan.refuse_inputs([f for unit in units_b for f in unit], "group B input")
        plan.refuse_inputs([groups["ParticipantsTable"]], "participants table")
        groups_field = {k: v for k, v in groups.items() if k != "ParticipantsTable"}

        def identity(m, name, uris):
            return {
                "Sources": uris,
                "Statistic": name,
                "Groups": groups_field,
                "Weighting": both.weighting,
            }

        links = dataset.links(dataset.read_description())
        for name in names:
            refuse_replacing(
                Path(plan.path(maps.role(name))),
                Path(plan.path(maps.role(f"{name}_sidecar"))),
                identity(maps, name, dataset.uris(both, links)),
                overwrite,
            )
        acc_a = accumulate_units(units_a, num_threads=num_threads)
        acc_b = accumulate_units(units_b, num_threads=num_threads)
        images = subtraction_images(acc_a, acc_b)
        for name in names:
            plan.write_image(maps.role(name), images[name])
        maps.image = images["subtraction"]

        def sidecars(m, uris):
            out = {}
            for name in names:
                what = COHORT_MAPS[name][2]
                out[name] = {
                    "Description": f"Per voxel, {what}: {len(units_a)} subjects with "
                    f"{column} = {groups['GroupA']} (A) and {len(units_b)} with "
                    f"{column} = {groups['GroupB']} (B), from {groups['ParticipantsTable']}. "
                    "Made with nipype_heatmap.",
                    **selection_fields(both, uris),
                    "Statistic": name,
                    "Groups": groups_field,
                    "Units": "percentage points" if name == "subtraction" else "percent",
                    "GeneratedBy": [generated_by(command)],
                }
            return out

        def render(m, uris):
            if not report:
                return None
            from ..report import render_map_report

            sidecar = sidecars(m, uris)["subtraction"]
            return render_map_report(
                images["subtraction"],
                kind="signed",
                title=maps.stem,
                space=both.entities.get("space"),
                underlay=underlay,
                units="percent of A minus percent of B",
                sources=uris,
                parameters={
                    k: v for k, v in sidecar.items() if k not in ("Sources", "Description")
                },
                command=command,
            )

        written = _finish(
            plan,
            dataset,
            [maps],
            sidecars=sidecars,
            report=render,
            overwrite=overwrite,
            identity=identity,
            lock_timeout=lock_timeout,
        )
    return _of(written, maps.key)


# -- atlas -------------------------------------------------------------------------------------
def find_label_table(selection: BIDSSelection) -> str | None:
    """The ``dseg.tsv`` that applies to every input by BIDS inheritance, if any.

    For each input, candidates are ``*_dseg.tsv`` files in its folder or a folder above it
    up to the dataset root, whose entities all appear in the input's name; the one nearest
    the input (then with the most entities) applies.

    Raises
    ------
    ValueError
        If the inputs inherit different tables (naming two of them).
    """
    root = Path(selection.dataset_root).absolute()
    chosen: dict[str, str] = {}
    for path in selection.files:
        entities = set(Path(path).name.split("_")[:-1])
        best = None
        folder = Path(path).parent
        depth = 0
        while True:
            for table in sorted(folder.glob("*dseg.tsv")):
                parts = table.name.split("_")[:-1]
                if table.name != "dseg.tsv" and not table.name.endswith("_dseg.tsv"):
                    continue
                if set(parts) <= entities:
                    rank = (-depth, len(parts))
                    if best is None or rank > best[0]:
                        best = (rank, str(table))
            if folder == root or root not in folder.parents:
                break
            folder = folder.parent
            depth += 1
        if best is not None:
            chosen[path] = best[1]
    tables = sorted(set(chosen.values()))
    if len(tables) > 1:
        raise ValueError(
            f"the inputs inherit different label tables ({tables[0]} and {tables[1]}); give "
            "one with --label-table"
        )
    if tables and len(chosen) < len(selection.files):
        LOGGER.warning("%s applies to only some inputs; used for all", tables[0])
    return tables[0] if tables else None


def write_atlas_maps(
    selection: BIDSSelection | Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    *,
    atlas_name: str,
    thresholds: Sequence[float],
    background: int = 0,
    label_table: str | os.PathLike[str] | None = None,
    sparse: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    report: bool = False,
    underlay: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, str]:
    """A probabilistic atlas of a selection's label images, as a BIDS derivative.

    Files as :func:`nipype_heatmap.atlas.write_atlas` names them, with the inputs' entities
    (:func:`~nipype_heatmap.bids.naming.atlas_stem`), each NIfTI with its sidecar (Sources as
    BIDS URIs, SpatialReference, the subjects), ``atlas-<name>_description.json`` and, with
    ``report``, the report of the ``th25`` (or first) maximum-probability map. Labels are
    named by ``label_table``, else by the ``dseg.tsv`` that applies to the inputs by BIDS
    inheritance (:func:`find_label_table`), else by their values. Planned and written as
    :func:`write_group_maps`.

    Returns
    -------
    dict
        Role (``probseg``, ``th<t>``, ``table``, ``sparse``, ``description``, ``report``)
        -> path.
    """
    from ..atlas import (
        accumulate_labels,
        atlas_names,
        plan_atlas,
        read_label_table,
        threshold_label,
        write_atlas_outputs,
    )

    selection = BIDSSelection.from_any(selection)
    if selection.several_per_subject == "average":
        raise ValueError(
            "label images cannot be averaged: an atlas of subjects with several label images "
            "takes --several-per-subject each-file, or one image per subject"
        )
    table_file = label_table if label_table is not None else find_label_table(selection)
    if table_file is not None and label_table is None:
        LOGGER.info("Label names from %s", table_file)
    table = read_label_table(table_file) if table_file is not None else None
    dataset = OutputDataset(output_dir, [selection.dataset_root])
    stem = atlas_stem(selection.entities, atlas_name)
    names = atlas_names(atlas_name, thresholds, stem=stem)
    with OutputPlan() as plan:
        plan_atlas(plan, dataset.path, names, sparse=sparse)
        description_file = dataset.path / f"atlas-{atlas_name}_description.json"
        plan.add("description", description_file, nifti=False)
        shown = sorted((k for k in names if k.startswith("th")), key=lambda k: k != "th25")
        if report and shown:
            page = names[shown[0]].removesuffix(".nii.gz")
            plan.add("report", dataset.path / f"{page}.html", nifti=False)
            plan.add("figure", dataset.path / "figures" / f"{page}.png", nifti=False)
        dataset.declare(plan)
        plan.refuse_inputs(selection.files)
        if table_file is not None:
            plan.refuse_inputs([table_file], "label table")
        threshold_of = {f"th{threshold_label(t)}": float(t) for t in thresholds}

        def check(links: Mapping[Path, str]) -> list[str]:
            uris = dataset.uris(selection, links)
            for role in names:
                if role == "table" or (role == "sparse" and not sparse):
                    continue
                identity: dict[str, Any] = {"Sources": uris, "Background": int(background)}
                if role in threshold_of:
                    identity["Threshold"] = threshold_of[role]
                refuse_replacing(
                    Path(plan.path(role)), Path(plan.path(f"{role}_sidecar")), identity, overwrite
                )
            return uris

        check(dataset.links(dataset.read_description()))
        atlas = accumulate_labels(selection.files, background=background, num_threads=num_threads)
        with locked(dataset.path, what=f"the dataset {dataset.path}", timeout=lock_timeout):
            description = dataset.read_description()
            links = dataset.links(description)
            uris = check(links)
            fields = selection_fields(selection, uris)
            reference = fields["SpatialReference"]
            rows = write_atlas_outputs(
                atlas,
                plan,
                thresholds=thresholds,
                label_table=table,
                extra_metadata={
                    "Sources": uris,
                    "SpatialReference": reference,
                    "Subjects": selection.subjects,
                    "Weighting": selection.weighting,
                    **({"LabelTable": str(table_file)} if table_file is not None else {}),
                    "GeneratedBy": [generated_by(command)],
                },
            )
            plan.write_json(
                "description",
                {
                    "Name": f"{atlas_name}: probabilistic atlas of {len(uris)} label images",
                    "Description": "Per-label probability maps (fraction of inputs with each "
                    "label), maximum-probability maps at thresholds and a label table, made "
                    "with nipype_heatmap from the images listed in each file's Sources.",
                    "SpatialReference": reference,
                },
            )
            if "report" in plan:
                from ..report import render_atlas_report

                t = threshold_of[shown[0]]
                dseg, _ = atlas.max_probability(t)
                rendered = render_atlas_report(
                    nb.Nifti1Image(np.asarray(dseg, np.int32), atlas.affine),
                    rows,
                    threshold=t,
                    n_inputs=atlas.n_inputs,
                    sources=uris,
                    space=selection.entities.get("space"),
                    underlay=underlay,
                    command=command,
                )
                plan.write("report", [rendered["html"]])
                plan.write("figure", [rendered["png"]])
            dataset.write_shared(plan, description, links, [selection])
            written = plan.commit()
    LOGGER.info("Wrote the atlas %s into %s", atlas_name, dataset.path)
    return {r: p for r, p in written.items() if not r.endswith("_sidecar")}
