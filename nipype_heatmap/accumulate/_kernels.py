"""The numeric speed-ups of the accumulators, in one place.

Each gives the same numbers as the plain NumPy expression it replaces, and each is kept
because ``benchmarks/bench_tricks.py`` shows that it buys at least a tenth of a realistic
job's time (see the docs' performance page):

- **narrow exact integer sums**: while every input is an unscaled integer volume, the sum
  is kept in the smallest integer type that cannot overflow (:func:`integer_sum_dtype`):
  uint8 for up to 255 binary masks, an eighth of the memory traffic (and of the pages to
  fault in) of float64. Integer sums are exact, as float64 sums of integers are below
  2**53, so the maps are the same bits.
"""

from __future__ import annotations

import numpy as np

#: Integer sums are exact while every partial sum is an integer that float64 represents
#: exactly (and so does any integer type it fits).
EXACT_INTEGER_LIMIT = 2**53

_INTEGER_SUM_TYPES = tuple(
    np.dtype(t) for t in ("uint8", "uint16", "uint32", "int16", "int32", "int64")
)


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
