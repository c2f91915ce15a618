"""Workflow builders: ``init_<name>_wf(*, ..., name=...)`` with ``inputnode``/``outputnode``.

Importable from any install (``from nipype_heatmap.workflows import ...``), as sMRIPrep and
fMRIPrep keep theirs. The repository's top-level ``workflows/`` folder has short sample
scripts that build and run these on your own data.
"""

from .bids_heatmap import init_bids_heatmap_wf
from .lesion_overlap import init_lesion_overlap_wf
from .scaled_atlas import init_scaled_atlas_wf
from .scaled_heatmap import init_scaled_heatmap_wf
from .tissue_probability import SEGMENTERS, init_tissue_probability_wf

__all__ = [
    "SEGMENTERS",
    "init_bids_heatmap_wf",
    "init_lesion_overlap_wf",
    "init_scaled_atlas_wf",
    "init_scaled_heatmap_wf",
    "init_tissue_probability_wf",
]
