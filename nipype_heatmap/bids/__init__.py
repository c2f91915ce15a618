"""BIDS in and out: pick a group map's inputs from a BIDS dataset, write BIDS derivatives.

- :mod:`~nipype_heatmap.bids.selection`: strict selection with pybids (the ``bids`` extra);
- :mod:`~nipype_heatmap.bids.derivatives`: names, sidecars and provenance of group maps.
"""

from .derivatives import (
    write_atlas_derivatives,
    write_cohort_derivatives,
    write_group_derivative,
)
from .selection import (
    BIDSSelection,
    load_filter_file,
    participants_groups,
    select_bids_inputs,
)

__all__ = [
    "BIDSSelection",
    "load_filter_file",
    "participants_groups",
    "select_bids_inputs",
    "write_atlas_derivatives",
    "write_cohort_derivatives",
    "write_group_derivative",
]
