"""Sample workflows: segmentation nodes chained into :class:`HeatmapVolume`.

Copy and adapt them. They are not installed with the package; run them from a clone.
"""

from .bids_heatmap import init_bids_heatmap_wf
from .lesion_overlap import init_lesion_overlap_wf
from .scaled_heatmap import init_scaled_heatmap_wf
from .tissue_probability import SEGMENTERS, init_tissue_probability_wf

__all__ = [
    "SEGMENTERS",
    "init_bids_heatmap_wf",
    "init_lesion_overlap_wf",
    "init_scaled_heatmap_wf",
    "init_tissue_probability_wf",
]
