"""Files in, maps out: the runs that the commands, the interfaces and the workflows share.

Every run follows the same steps, so that its promises hold whatever the entry point:

1. **Plan** every file it will write (:class:`~nipype_heatmap.io.OutputPlan`): the map,
   the cohort maps and their table, the state; checked against each other and against
   every file the run reads, before any input is read (:mod:`.outputs`).
2. **Read** the inputs: every header is checked first (3D, real numbers, on the first
   file's grid), then the voxels are read ahead on reader threads and added in order
   (:mod:`.inputs`).
3. **Write** through the one writer, :func:`write_maps`, into the plan, and commit it:
   every file replaced together, only once all are complete (:mod:`.heatmaps`).

A saved state is updated as a transaction (:func:`update_state`, :mod:`.states`): under an
exclusive lock from reading it to replacing it, and together with the maps made from it.
"""

from .heatmaps import (
    DEFAULT_OUTPUT_FILENAME,
    compute_heatmap,
    compute_subtraction,
    generate_heatmap_volume,
    make_maps,
    write_cohort_maps,
    write_heatmap,
    write_subtraction,
)
from .inputs import accumulate_files, add_files, collect_inputs
from .outputs import beside, plan_maps, plan_maps_of, write_maps
from .states import merge_and_write, update_state, within_promise

__all__ = [
    "DEFAULT_OUTPUT_FILENAME",
    "accumulate_files",
    "add_files",
    "beside",
    "collect_inputs",
    "compute_heatmap",
    "compute_subtraction",
    "generate_heatmap_volume",
    "make_maps",
    "merge_and_write",
    "plan_maps",
    "plan_maps_of",
    "update_state",
    "within_promise",
    "write_cohort_maps",
    "write_heatmap",
    "write_maps",
    "write_subtraction",
]
