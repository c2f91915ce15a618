"""Grid geometry: the reference voxel grid as one immutable value, and lossless re-ordering.

Two images are on the same grid when their shapes match and their affines put the grid's
corners at the same world coordinates within :data:`AFFINE_TOL_MM`. An image whose voxel
axes are only permuted and/or flipped relative to the reference, covering exactly the same
world grid, is re-ordered onto the reference's voxel order (a view; nothing is resampled).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from nibabel import orientations

__all__ = [
    "AFFINE_TOL_MM",
    "Grid",
    "grid_distance_mm",
]

LOGGER = logging.getLogger(__name__)

#: Largest distance, in millimetres, between the world coordinates of matching grid corners
#: of two affines that still counts as "the same voxel grid" (float32 header round-off is
#: about 1e-5 mm at 200 mm from the origin).
AFFINE_TOL_MM = 1e-4


def _grid_corners(shape: tuple[int, ...]) -> np.ndarray:
    """Return the 8 corner voxel indices of a 3D grid as a 4x8 homogeneous array."""
    ii, jj, kk = np.meshgrid(*[(0, n - 1) for n in shape[:3]], indexing="ij")
    return np.vstack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(8)])


def grid_distance_mm(affine: np.ndarray, ref_affine: np.ndarray, shape: tuple[int, ...]) -> float:
    """Return the largest world-space distance (mm) between the grids' matching corners."""
    corners = _grid_corners(shape)
    diff = (np.asarray(affine) @ corners - np.asarray(ref_affine) @ corners)[:3]
    return float(np.sqrt((diff**2).sum(axis=0)).max())


def _fmt_affine(affine: np.ndarray) -> str:
    rows = np.asarray(affine)[:3]
    return "[" + "; ".join(" ".join(f"{v:.6g}" for v in row) for row in rows) + "]"


@dataclass(frozen=True, eq=False)
class Grid:
    """A 3D voxel grid: shape, voxel-to-world affine, and the file that defined it.

    Attributes
    ----------
    shape : tuple of int
        The three axis lengths.
    affine : numpy.ndarray
        4x4 float64 voxel-to-world affine (read-only).
    source : str
        The file the grid was taken from, for messages.
    """

    shape: tuple[int, ...]
    affine: np.ndarray
    source: str

    def __post_init__(self) -> None:
        affine = np.array(self.affine, dtype=np.float64)
        affine.flags.writeable = False
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))

    def matches(self, shape: tuple[int, ...], affine: np.ndarray) -> bool:
        """Tell whether ``shape``/``affine`` is this grid in this voxel order."""
        return tuple(shape) == self.shape and (
            np.array_equal(affine, self.affine)
            or grid_distance_mm(affine, self.affine, self.shape) <= AFFINE_TOL_MM
        )

    def reordering(self, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray | None:
        """Return the ``nibabel.orientations`` transform that maps an image onto this grid.

        The transform (``apply_orientation(data, ornt)``) permutes and flips voxel axes
        only. None when no such lossless re-ordering puts the image's grid exactly (within
        :data:`AFFINE_TOL_MM`) onto this one.
        """
        try:
            ornt = orientations.ornt_transform(
                orientations.io_orientation(affine), orientations.io_orientation(self.affine)
            )
        except ValueError:  # a singular or degenerate affine has no orientation
            return None
        # ornt[i, 0] is where input axis i goes: the new axes are the inputs in argsort order
        new_shape = tuple(int(shape[int(axis)]) for axis in np.argsort(ornt[:, 0]))
        if new_shape != self.shape:
            return None
        reordered = affine @ orientations.inv_ornt_aff(ornt, shape)
        if grid_distance_mm(reordered, self.affine, self.shape) > AFFINE_TOL_MM:
            return None
        return ornt

    def conform(
        self, data: np.ndarray, affine: np.ndarray, path: str, what: str = "image"
    ) -> np.ndarray:
        """Return ``data`` (3D, or 3D with more axes after) in this grid's voxel order.

        Parameters
        ----------
        data : numpy.ndarray
            The voxels; only the first three axes are re-ordered.
        affine : numpy.ndarray
            Their voxel-to-world affine.
        path : str
            The file they came from, for messages.
        what : str, default="image"
            What the data are, for the log line ("image", "partial heatmap").

        Raises
        ------
        ValueError
            If the shape differs from this grid's (after any lossless re-ordering), or the
            affine does not describe this grid within :data:`AFFINE_TOL_MM`.
        """
        shape = tuple(data.shape[:3])
        if self.matches(shape, affine):
            return data
        ornt = self.reordering(shape, affine)
        if ornt is not None:
            LOGGER.info(
                "%s: %s voxel axes re-ordered onto the grid of %s (axes %s, flips %s); "
                "no resampling",
                path,
                what,
                self.source,
                tuple(int(a) for a in ornt[:, 0]),
                tuple(int(f) for f in ornt[:, 1]),
            )
            return orientations.apply_orientation(data, ornt)
        if shape != self.shape:
            raise ValueError(
                f"{path}: shape {shape} differs from {self.source} {self.shape}; "
                "resample all inputs to one grid first"
            )
        distance = grid_distance_mm(affine, self.affine, shape)
        raise ValueError(
            f"{path}: affine {_fmt_affine(affine)} is not on the voxel grid of "
            f"{self.source} {_fmt_affine(self.affine)} (corners up to {distance:.4g} mm apart, "
            f"tolerance {AFFINE_TOL_MM:g} mm); register and resample all inputs to one grid first"
        )
