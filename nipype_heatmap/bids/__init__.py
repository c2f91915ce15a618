"""BIDS in and out: pick group maps' inputs from a BIDS dataset, write BIDS derivatives.

- :mod:`~nipype_heatmap.bids.index`: the dataset's index (pybids, the ``bids`` extra), kept
  in a database folder for later calls;
- :mod:`~nipype_heatmap.bids.filters`: entity filters from flags and filter files, merged
  without widening;
- :mod:`~nipype_heatmap.bids.selection`: strict selection (subjects are the unit, template
  spaces only, filters never widened);
- :mod:`~nipype_heatmap.bids.participants`: a selection's subjects split into two groups by
  a ``participants.tsv`` column;
- :mod:`~nipype_heatmap.bids.metadata`: metadata files read strictly;
- :mod:`~nipype_heatmap.bids.spaces`: template and native spaces, ``SpatialReference``;
- :mod:`~nipype_heatmap.bids.naming`: names that carry the selection;
- :mod:`~nipype_heatmap.bids.derivatives`: the output dataset, its shared files, sidecars;
- :mod:`~nipype_heatmap.bids.units`: a selection's units (subjects, or files) accumulated;
- the runs, each through one output plan in the same steps (:mod:`~nipype_heatmap.bids._runs`):
  :mod:`~nipype_heatmap.bids.group_maps` (group maps, and the maps a Nipype node made),
  :mod:`~nipype_heatmap.bids.subtraction` (group A minus group B) and
  :mod:`~nipype_heatmap.bids.atlas` (a probabilistic atlas of label images).
"""

from .atlas import find_label_table, write_atlas_maps
from .filters import load_filter_file, merge_filters
from .group_maps import store_group_maps, write_group_maps
from .index import BIDSIndex
from .participants import participants_groups
from .selection import BIDSSelection, select_bids_inputs, select_bids_maps
from .subtraction import write_subtraction_maps
from .units import accumulate_units

__all__ = [
    "BIDSIndex",
    "BIDSSelection",
    "accumulate_units",
    "find_label_table",
    "load_filter_file",
    "merge_filters",
    "participants_groups",
    "select_bids_inputs",
    "select_bids_maps",
    "store_group_maps",
    "write_atlas_maps",
    "write_group_maps",
    "write_subtraction_maps",
]
