"""The numeric speed-ups of the accumulators, in one place.

Each gives the same numbers as the plain NumPy expression it replaces, and each is kept
because ``benchmarks/bench_tricks.py`` shows that it buys at least a tenth of a realistic
job's time (see the docs' performance page):

- **sparse adds**: a lesion mask has few non-zero voxels; they are listed once, on the
  reader thread (:func:`sparse_positions`, a block scan several times faster than
  ``numpy.flatnonzero``), and only those are added (:func:`add`);
- **narrow exact integer sums**: while every input is an unscaled integer volume, the sum
  is kept in the smallest integer type that cannot overflow (:func:`integer_sum_dtype`):
  uint8 for up to 255 binary masks, an eighth of the memory traffic (and of the pages to
  fault in) of float64. Integer sums are exact, as float64 sums of integers are below
  2**53, so the maps are the same bits.
"""

from __future__ import annotations

import numpy as np

#: An integer volume whose non-zero voxels lie in blocks covering less than
#: 1 / SPARSE_FRACTION of it is added sparsely.
SPARSE_FRACTION = 8

#: Bytes per block of the scan for non-zero voxels, and how many blocks the first look skips.
BLOCK_BYTES = 1024
SAMPLE_STEP = 16

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

    The volume is scanned :data:`BLOCK_BYTES` at a time as 64-bit words (one reduction);
    only the blocks holding a non-zero byte are searched voxel by voxel. A first look at
    every :data:`SAMPLE_STEP`-th block gives up early on a dense volume.
    """
    if not array.flags.f_contiguous:
        return None
    flat = array.reshape(-1, order="F")
    limit = flat.size // SPARSE_FRACTION
    per_block = BLOCK_BYTES // flat.itemsize
    whole = flat.size // per_block * per_block  # voxels in whole blocks
    if whole == 0:
        found = np.flatnonzero(flat != 0)
        return None if found.size > limit else found
    words = flat[:whole].view(np.uint64).reshape(-1, BLOCK_BYTES // 8)
    sample = np.count_nonzero(np.bitwise_or.reduce(words[::SAMPLE_STEP], axis=1))
    if sample * SAMPLE_STEP * per_block > 2 * limit:
        return None
    hit = np.flatnonzero(np.bitwise_or.reduce(words, axis=1))
    if hit.size * per_block + (flat.size - whole) > limit:
        return None
    # listing the true values of a boolean array is faster than the non-zeros of integers
    inside = np.flatnonzero(flat[:whole].reshape(-1, per_block)[hit] != 0)
    found = hit[inside // per_block] * per_block + inside % per_block
    tail = np.flatnonzero(flat[whole:] != 0) + whole
    return np.concatenate([found, tail]) if tail.size else found


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
