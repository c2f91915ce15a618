"""nipype_heatmap: voxel-wise mean (probability) and sum (count) maps of many NIfTI volumes.

The functions and classes below need only numpy and nibabel. ``HeatmapVolume``, the Nipype
interface, is re-exported lazily so that importing this package (and every call of the
command line) does not pay for importing Nipype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .accumulate import HeatmapAccumulator
from .api import (
    accumulate_files,
    compute_heatmap,
    generate_heatmap_volume,
    update_state,
    write_cohort_maps,
    write_heatmap,
)
from .options import CohortOptions, MapOptions
from .state import load_state, merge_states, save_state

__all__ = [
    "CohortOptions",
    "HeatmapAccumulator",
    "HeatmapVolume",
    "MapOptions",
    "__version__",
    "accumulate_files",
    "compute_heatmap",
    "generate_heatmap_volume",
    "load_state",
    "merge_states",
    "save_state",
    "update_state",
    "write_cohort_maps",
    "write_heatmap",
]

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import HeatmapVolume


def __getattr__(name: str) -> Any:
    """Import the Nipype interface on first use (PEP 562)."""
    if name == "HeatmapVolume":
        from .interfaces import HeatmapVolume

        return HeatmapVolume
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
