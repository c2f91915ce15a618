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

What the runs share lives here: :class:`MapSet` (one map of a run and its files' plan
roles), :func:`finish_run` (step 3) and :func:`outputs_of` (a map's files, by role). The
runs: :mod:`~nipype_heatmap.bids.group_maps` (group maps, and the sink's),
:mod:`~nipype_heatmap.bids.subtraction` and :mod:`~nipype_heatmap.bids.atlas`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import OutputPlan, locked
from .derivatives import OutputDataset, refuse_replacing
from .selection import BIDSSelection

__all__ = ["MapSet", "finish_run", "outputs_of"]


# -- one map of a run ------------------------------------------------------------------------
@dataclass
class MapSet:
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


def finish_run(
    plan: OutputPlan,
    dataset: OutputDataset,
    sets: Sequence[MapSet],
    *,
    sidecars: Callable[[MapSet, list[str]], dict[str, dict[str, Any]]],
    report: Callable[[MapSet, list[str]], dict[str, bytes] | None],
    overwrite: bool,
    identity: Callable[[MapSet, str, list[str]], dict[str, Any]] | None,
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


def outputs_of(written: Mapping[str, str], key: str) -> dict[str, str]:
    return {r.split(":", 1)[1]: p for r, p in written.items() if r.startswith(f"{key}:")}
