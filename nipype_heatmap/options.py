"""What a run is asked to make, each option interpreted here and nowhere else.

:class:`MapOptions` says what the heatmap is (mean or sum, clipped, normalized) and
therefore what its header says (``descrip``), its units, and what kind of map it is for
BIDS names and the report. :class:`CohortOptions` says which cohort maps go beside it
(coverage, spread, minimum overlap) and what they need tracked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "COHORT_MAPS",
    "CohortOptions",
    "MapOptions",
]


@dataclass(frozen=True)
class MapOptions:
    """How the heatmap is made: mean or sum, then clipping, then normalization.

    Parameters
    ----------
    use_mean : bool, default=True
        The voxel-wise mean (probability map); False: the sum (count or density map).
    clip_to_input_range : bool, default=True
        Clip the map to ``[min, max]`` of all finite input values (after the mean or sum).
    normalize : bool, default=False
        Min-max scale the finite values of the (clipped) map to ``[0, 1]``.

    Examples
    --------
    >>> MapOptions(use_mean=False, clip_to_input_range=False).descrip(42)
    b'nipype_heatmap sum of 42 volumes'
    >>> MapOptions().units
    'probability (fraction of inputs)'
    """

    use_mean: bool = True
    clip_to_input_range: bool = True
    normalize: bool = False

    def descrip(self, n_inputs: int) -> bytes:
        """The ``descrip`` header text of the map (at most 80 bytes)."""
        text = f"nipype_heatmap {'mean' if self.use_mean else 'sum'} of {n_inputs} volumes"
        flags = [
            flag
            for flag, on in (("clipped", self.clip_to_input_range), ("normalized", self.normalize))
            if on
        ]
        if flags:
            text += " (" + ", ".join(flags) + ")"
        return text.encode("ascii")[:80]

    @property
    def units(self) -> str:
        """What the map's values are, for reports and sidecars."""
        if self.normalize:
            return "normalized value (0 to 1)"
        if self.use_mean:
            return "probability (fraction of inputs)"
        return "clipped sum" if self.clip_to_input_range else "count (number of inputs)"

    def report_kind(self, input_suffix: str = "") -> str:
        """How a report scales the map: ``probability``, ``count`` or ``value``."""
        if self.normalize:
            return "value"
        if self.use_mean and input_suffix in ("mask", "probseg"):
            return "probability"
        if not self.use_mean and not self.clip_to_input_range and input_suffix == "mask":
            return "count"
        return "value"

    def bids_kind(self, input_suffix: str) -> tuple[str, str]:
        """``(desc prefix, suffix)`` of the map as a BIDS derivative.

        Only a probability (the mean of masks or probability maps, not normalized) is a
        ``_probseg``; the union of masks (a clipped sum of masks) is a ``_mask``; anything
        else (counts, sums, normalized maps, means of other images) is a ``_heatmap``.

        Examples
        --------
        >>> MapOptions().bids_kind("mask")
        ('mean', 'probseg')
        >>> MapOptions(use_mean=False, clip_to_input_range=False).bids_kind("mask")
        ('count', 'heatmap')
        """
        binary = input_suffix == "mask"
        if self.use_mean:
            kind = "mean"
            probability = input_suffix in ("mask", "probseg") and not self.normalize
            suffix = "probseg" if probability else "heatmap"
        elif self.clip_to_input_range:
            union = binary and not self.normalize
            kind, suffix = ("union", "mask") if union else ("clippedSum", "heatmap")
        else:
            kind, suffix = ("count" if binary else "sum"), "heatmap"
        return kind + ("Norm" if self.normalize else ""), suffix

    def as_parameters(self) -> dict[str, object]:
        """The options as sidecar fields."""
        return {
            "Aggregation": "mean" if self.use_mean else "sum",
            "ClipToInputRange": bool(self.clip_to_input_range),
            "Normalized": bool(self.normalize),
        }


#: The cohort maps, in the order they are written.
COHORT_MAPS = ("coverage", "std", "variance", "overlap", "mincount")


@dataclass(frozen=True)
class CohortOptions:
    """Which cohort maps go beside the heatmap, from the same single pass.

    Parameters
    ----------
    coverage : bool, default=False
        How many inputs have a finite value at each voxel.
    std : bool, default=False
        The standard deviation and variance across inputs (over finite values).
    ddof : int, default=1
        Delta degrees of freedom of ``std`` (1: ``numpy.std(ddof=1)``).
    min_count : int, optional
        The mask of voxels non-zero in at least this many inputs, with the per-voxel
        non-zero count and the table of voxels surviving each count.
    min_fraction : float, optional
        As ``min_count``, as a fraction F of the inputs: the count is ``ceil(F N)``,
        computed exactly (F as written in decimal).

    Raises
    ------
    ValueError
        If both ``min_count`` and ``min_fraction`` are given, or either is out of range.

    Examples
    --------
    >>> CohortOptions(min_fraction=0.5).min_count_for(7)
    4
    >>> CohortOptions(min_fraction=0.3333333334).min_count_for(3)
    2
    """

    coverage: bool = False
    std: bool = False
    ddof: int = 1
    min_count: int | None = None
    min_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.min_count is not None and self.min_fraction is not None:
            raise ValueError("give min_count or min_fraction, not both")
        if self.min_fraction is not None and not 0 < self.min_fraction <= 1:
            raise ValueError(f"min_fraction must be in (0, 1], not {self.min_fraction}")
        if self.min_count is not None and self.min_count < 1:
            raise ValueError(f"min_count must be at least 1, not {self.min_count}")

    @property
    def overlap(self) -> bool:
        """Whether the minimum-overlap maps are asked for (the non-zero count is needed)."""
        return self.min_count is not None or self.min_fraction is not None

    @property
    def any(self) -> bool:
        """Whether any cohort map is asked for."""
        return self.coverage or self.std or self.overlap

    def min_count_for(self, n_inputs: int) -> int | None:
        """The overlap threshold k for ``n_inputs`` inputs: ``min_count``, or
        ``ceil(F N)`` of ``min_fraction`` in exact rational arithmetic (at least 1)."""
        if self.min_fraction is not None:
            return max(1, math.ceil(Fraction(str(self.min_fraction)) * n_inputs))
        return self.min_count

    def maps(self) -> list[str]:
        """The names of the cohort maps asked for, in :data:`COHORT_MAPS` order."""
        wanted = {
            "coverage": self.coverage,
            "std": self.std,
            "variance": self.std,
            "overlap": self.overlap,
            "mincount": self.overlap,
        }
        return [name for name in COHORT_MAPS if wanted[name]]

    def as_parameters(self, n_inputs: int) -> dict[str, object]:
        """The options as sidecar fields."""
        fields: dict[str, object] = {}
        if self.std:
            fields["DeltaDegreesOfFreedom"] = int(self.ddof)
        if self.overlap:
            fields["MinimumCount"] = self.min_count_for(n_inputs)
        return fields
