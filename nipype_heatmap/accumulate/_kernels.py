"""The numeric speed-ups of the accumulators, in one place.

Each gives the same numbers as the plain NumPy expression it replaces, and each is kept
because ``benchmarks/bench_tricks.py`` shows that it buys at least a tenth of a realistic
job's time (see the docs' performance page):

- **sparse adds**: a lesion mask has few non-zero voxels; they are listed once, on the
  reader thread (:func:`sparse_positions`), and only those are added (:func:`add`);
- **narrow exact integer sums**: while every input is an unscaled integer volume, the sum
  is kept in the smallest integer type that cannot overflow (:func:`integer_sum_dtype`):
  uint8 for up to 255 binary masks, an eighth of the memory traffic (and of the pages to
  fault in) of float64. Integer sums are exact, as float64 sums of integers are below
  2**53, so the maps are the same bits.
"""

from __future__ import annotations

import numpy as np

#: An integer volume with fewer than 1 / SPARSE_FRACTION non-zero voxels is added sparsely.
SPARSE_FRACTION = 8

#: Integer sums are exact while every partial sum is an integer that float64 represents
#: exactly (and so does any integer type it fits).
EXACT_INTEGER_LIMIT = 2**53

_INTEGER_SUM_TYPES = tuple(
    np.dtype(t) for t in ("uint8", "uint16", "uint32", "int16", "int32", "int64")
)


def sparse_positions(array: np.ndarray) -> np.ndarray | None:
    """Flat (Fortran-order) positions of the non-zero voxels of a sparse integer volume.

    None when the volume is not sparse enough to be worth it, or not stored in Fortran
    order (a re-ordered view), where positions would have to be translated.
    """
    if not array.flags.f_contiguous:
        return None
    hit = array.reshape(-1, order="F") != 0
    if np.count_nonzero(hit) > hit.size // SPARSE_FRACTION:
        return None
    return np.flatnonzero(hit)


def integer_sum_dtype(low: int, high: int) -> np.dtype | None:
    """The smallest integer type holding every value in ``[low, high]``, or None beyond the
    exact range (then the sum is float64, as a plain float64 loop would keep it)."""
    if low < -EXACT_INTEGER_LIMIT or high > EXACT_INTEGER_LIMIT:
        return None
    for dtype in _INTEGER_SUM_TYPES:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return dtype
    return None  # pragma: no cover - int64 holds everything within 2**53


def add(total: np.ndarray, values: np.ndarray, nonzero: np.ndarray | None, sign: int) -> None:
    """``total += values`` (``sign=-1``: ``-=``) in place, where ``values`` are finite.

    With ``nonzero`` (the listed non-zero voxels of an integer volume in ``total``'s voxel
    order), only those are added: the others add zero.
    """
    if nonzero is not None:
        flat = total.reshape(-1, order="F")  # a view: sums are Fortran-ordered
        part = values.reshape(-1, order="F")[nonzero].astype(total.dtype, copy=False)
        if sign > 0:
            flat[nonzero] += part
        else:
            flat[nonzero] -= part
    elif sign > 0:
        np.add(total, values, out=total, casting="unsafe")
    else:
        np.subtract(total, values, out=total, casting="unsafe")
