"""Nipype interfaces: thin shells over the library's functions.

The import paths ``nipype_heatmap.interfaces.<Name>`` are part of the public API: Nipype
pickles node results with the interface's import path, so each class says it lives here
(its ``__module__``), whichever module of this package defines it.
"""

from __future__ import annotations

from ._base import MEM_GB, AbsDirectory, AbsFile, core_logs_in_nipype, mem_gb
from .atlas import LabelAtlas, PartialLabelAtlas
from .bids import (
    BIDS_ENTITY_FILTERS,
    HeatmapDerivativesSink,
    HeatmapOfSubjects,
    SelectBIDSInputs,
)
from .heatmap import HeatmapVolume
from .state import HeatmapState, MergeHeatmaps, UpdateHeatmapState

__all__ = [
    "BIDS_ENTITY_FILTERS",
    "MEM_GB",
    "AbsDirectory",
    "AbsFile",
    "HeatmapDerivativesSink",
    "HeatmapOfSubjects",
    "HeatmapState",
    "HeatmapVolume",
    "LabelAtlas",
    "MergeHeatmaps",
    "PartialLabelAtlas",
    "SelectBIDSInputs",
    "UpdateHeatmapState",
    "core_logs_in_nipype",
    "mem_gb",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith(__name__ + "."):
        _obj.__module__ = __name__  # pickles name the stable path (see the docstring)
del _name, _obj
