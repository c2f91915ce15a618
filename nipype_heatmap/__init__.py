"""nipype_heatmap: voxel-wise mean (probability) and sum (count) maps of many NIfTI volumes.

``generate_heatmap_volume`` and the lower-level functions need only numpy and nibabel.
``HeatmapVolume``, the Nipype interface, is re-exported lazily so that importing this
package (and every call of the command line) does not pay for importing Nipype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core import (
    HeatmapAccumulator,
    compute_heatmap,
    generate_heatmap_volume,
    write_heatmap,
)

from ._version import __version__

__all__ = [
    "HeatmapAccumulator",
    "HeatmapVolume",
    "__version__",
    "compute_heatmap",
    "generate_heatmap_volume",
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
