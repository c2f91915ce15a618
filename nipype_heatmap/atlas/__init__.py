"""Probabilistic atlases from label images: building them, their files, label tables.

The counting itself is :class:`~nipype_heatmap.accumulate.LabelAtlasAccumulator`; here:

- :mod:`~nipype_heatmap.atlas.build`: counting on reader threads, the atlas's files;
- :mod:`~nipype_heatmap.atlas.sparse`: the sparse atlas file (exact, mergeable);
- :mod:`~nipype_heatmap.atlas.tables`: label names and colours, the atlas's label table.
"""

from ..accumulate.labels import LabelAtlasAccumulator, SparseAtlas
from .build import (
    DEFAULT_THRESHOLDS,
    accumulate_labels,
    atlas_names,
    build_atlas,
    plan_atlas,
    threshold_label,
    write_atlas,
    write_atlas_outputs,
)
from .sparse import load_atlas, merge_atlases, save_atlas, sparse_chunks
from .tables import LabelInfo, default_color, label_rows, read_label_table

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LabelAtlasAccumulator",
    "LabelInfo",
    "SparseAtlas",
    "accumulate_labels",
    "atlas_names",
    "build_atlas",
    "default_color",
    "label_rows",
    "load_atlas",
    "merge_atlases",
    "plan_atlas",
    "read_label_table",
    "save_atlas",
    "sparse_chunks",
    "threshold_label",
    "write_atlas",
    "write_atlas_outputs",
]
