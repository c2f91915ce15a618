"""Group maps of BIDS selections, written as a derivatives dataset.

:func:`write_group_maps` makes each selection's map (and the cohort maps asked for) and
writes it with its sidecars and report, through one plan, in the steps every run follows
(:mod:`~nipype_heatmap.bids._runs`); :func:`store_group_maps` stores maps that a Nipype
node made in the same way. :func:`heatmap_image` gives a count of integer inputs an
integer type.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..accumulate import HeatmapAccumulator
from ..api import write_maps
from ..io import OutputPlan, load_image, read_header
from ..io.locking import DEFAULT_TIMEOUT
from ..options import CohortOptions, MapOptions
from ._runs import MapSet, finish_run, outputs_of
from .derivatives import (
    OutputDataset,
    generated_by,
    mask_type,
    refuse_replacing,
    selection_fields,
)
from .naming import COHORT_MAPS, cohort_stem, map_stem
from .selection import BIDSSelection
from .units import accumulate_units

__all__ = ["heatmap_image", "store_group_maps", "write_group_maps"]

LOGGER = logging.getLogger(__name__)


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
) -> MapSet:
    n_units = len(selection.units)
    k = cohort.min_count_for(n_units)
    stems = {name: cohort_stem(selection, name, ddof=cohort.ddof, k=k) for name in cohort.maps()}
    maps = MapSet(key, selection, map_stem(selection, options, out_desc=out_desc), stems)
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


def _identity(maps: MapSet, name: str, uris: list[str], options: MapOptions, cohort) -> dict:
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


def _heatmap_sidecar(maps: MapSet, uris, options: MapOptions, command) -> dict[str, Any]:
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


def _cohort_sidecar(maps: MapSet, name: str, uris, cohort: CohortOptions, command) -> dict:
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
        written = finish_run(
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
    result = [outputs_of(written, m.key) for m in sets]
    LOGGER.info("Wrote %s", ", ".join(r["heatmap"] for r in result))
    return result


def _compute(plan, maps: MapSet, options, cohort, num_threads, progress, debug) -> None:
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


def _copy(plan, maps: MapSet, node_maps: Mapping[str, str], options: MapOptions) -> None:
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


def _render(maps: MapSet, uris, options: MapOptions, underlay, command) -> dict[str, bytes]:
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
