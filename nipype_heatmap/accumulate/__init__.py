"""The accumulators: one pass over the inputs, exact sums and counts, mergeable parts.

- :class:`HeatmapAccumulator` (:mod:`~nipype_heatmap.accumulate.sum`): the voxel-wise sum
  and count of finite values, and the cohort statistics beside them
  (:mod:`~nipype_heatmap.accumulate.spread`);
- :class:`LabelAtlasAccumulator` (:mod:`~nipype_heatmap.accumulate.labels`): per-label
  counts of label images, each over its label's bounding box;
- :mod:`~nipype_heatmap.accumulate.values`: one input on the reference grid, and what is
  recorded of it.

Nothing here imports Nipype, and nothing here writes files.
"""

from .labels import LabelAtlasAccumulator, label_data, probability
from .spread import NonzeroCount, Spread
from .sum import FiniteCount, HeatmapAccumulator, VoxelSum, finite_range
from .values import (
    IMAGE_CLASSES,
    Reference,
    SourceRecord,
    Values,
    header_from_bytes,
    records_from_json,
    records_to_json,
    values_on_grid,
    volume_record,
)

__all__ = [
    "IMAGE_CLASSES",
    "FiniteCount",
    "HeatmapAccumulator",
    "LabelAtlasAccumulator",
    "NonzeroCount",
    "Reference",
    "SourceRecord",
    "Spread",
    "Values",
    "VoxelSum",
    "finite_range",
    "header_from_bytes",
    "label_data",
    "probability",
    "records_from_json",
    "records_to_json",
    "values_on_grid",
    "volume_record",
]
