"""Cohort statistics kept beside the sum: the non-zero count and the spread, per voxel.

- :class:`NonzeroCount`: how many inputs have a finite, non-zero value at each voxel, from
  which the minimum-overlap masks come. While every input is a binary integer mask it is
  the sum itself, so nothing more is kept.
- :class:`Spread`: the variance across inputs at each voxel, over finite values. While
  every input is an unscaled integer volume it is exact: the sum of squares ``S2`` is kept
  in int64 (for binary masks not even that: ``x * x == x``, so ``S2 == S``) and the
  variance is ``(n S2 - S**2) / (n (n - ddof))`` with an exact integer numerator. Once an
  input is floating point, the statistics are folded into Welford's sum of squared
  deviations ``M2`` (the mean is ``S / n``), updated per voxel in input order:
  ``M2 += (x - S/n) (x - (S + x)/(n + 1))``, a product of two deviations, never a
  difference of large sums; parts are merged with Chan's formula.

Each update is called before the accumulator changes ``S`` and ``n`` (it needs them as
they were); the arithmetic is the same per voxel however the volume is cut into blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .values import Values

if TYPE_CHECKING:  # pragma: no cover
    from .sum import FiniteCount, VoxelSum

__all__ = [
    "BLOCK",
    "EXACT_SQUARES_LIMIT",
    "Conform",
    "NonzeroCount",
    "Spread",
]

#: While ``n * (bound of S2) < 2**62``, the exact numerator ``n S2 - S**2`` fits int64.
EXACT_SQUARES_LIMIT = 2**62

#: Voxels per step of the Welford updates: a few float64 arrays of it stay in the cache,
#: and no temporary of a whole volume is made.
BLOCK = 1 << 15

Conform = Callable[[np.ndarray], np.ndarray]


def _binary(x: Values) -> bool:
    return (
        x.integer and x.value_range is not None and 0 <= x.value_range[0] and x.value_range[1] <= 1
    )


def _flat(array: np.ndarray) -> np.ndarray:
    """A volume's voxels in memory (Fortran) order: a view of the arrays written into, a
    copy only of an input that was re-ordered onto the grid."""
    return array.reshape(-1, order="F")


def _blocks(size: int):
    for start in range(0, size, BLOCK):
        yield slice(start, min(start + BLOCK, size))


class NonzeroCount:
    """Per voxel, how many inputs have a finite, non-zero value (see the module doc)."""

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None  # uint32; None while it is the sum

    @property
    def is_sum(self) -> bool:
        """Whether every input so far was a binary mask (then the count is the sum)."""
        return self.counts is None

    def add(self, x: Values, s: VoxelSum) -> None:
        """Count ``x``'s non-zero voxels (before ``S`` changes)."""
        self._step(x, s, +1)

    def subtract(self, x: Values, s: VoxelSum) -> None:
        """Take ``x``'s non-zero voxels out of the count (before ``S`` changes)."""
        self._step(x, s, -1)

    def _step(self, x: Values, s: VoxelSum, sign: int) -> None:
        if self.counts is None:
            if _binary(x):
                return
            self.counts = self.value(s)  # the sum, until now
        ufunc = np.add if sign > 0 else np.subtract
        hit = x.array != 0
        if not x.complete:  # NaN != 0, but a missing value is no hit
            hit &= np.isfinite(x.array)
        ufunc(self.counts, hit, out=self.counts, casting="unsafe")

    def value(self, s: VoxelSum) -> np.ndarray:
        """The counts (uint32; from the sum while it is the count)."""
        if self.counts is not None:
            return self.counts
        return _integers(s.values, np.uint32)

    def merge(self, other: NonzeroCount, s: VoxelSum, s_other: VoxelSum, conform: Conform) -> None:
        """Add another part's counts (both sums as they were before merging)."""
        if self.counts is None and other.counts is None:
            return
        self.counts = self.value(s) + conform(other.value(s_other))

    def regrid(self, move: Conform) -> None:
        """Re-order onto a new reference grid."""
        if self.counts is not None:
            self.counts = move(self.counts)


class Spread:
    """Per voxel, the spread of the finite values (see the module doc for its forms).

    Attributes
    ----------
    squares : numpy.ndarray or None
        The exact int64 sum of squares ``S2``, while exact and not binary.
    square_bound : int
        While exact, a bound of every voxel's ``S2``; 0 once folded into ``m2`` (no exact
        sum of squares is kept then).
    m2 : numpy.ndarray or None
        Welford's sum of squared deviations (float64), once folded.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.squares: np.ndarray | None = None
        self.square_bound = 0
        self.m2: np.ndarray | None = None

    @property
    def form(self) -> str:
        """``"binary"`` (``S2 == S``), ``"squares"`` (exact ``S2``) or ``"welford"``."""
        if self.m2 is not None:
            return "welford"
        return "binary" if self.squares is None else "squares"

    @property
    def exact(self) -> bool:
        """Whether the spread is still kept exactly."""
        return self.m2 is None

    # -- adding and removing ---------------------------------------------------------
    def add(self, x: Values, n: FiniteCount, s: VoxelSum) -> None:
        """Update with ``x``, before ``n`` and ``S`` change."""
        if self.exact and x.integer:
            if self.squares is None and _binary(x):
                self.square_bound += 1
                return
            lo, hi = (int(v) for v in x.value_range or (0, 0))
            peak = max(lo * lo, hi * hi)
            if (n.n_inputs + 1) * (self.square_bound + peak) < EXACT_SQUARES_LIMIT:
                if self.squares is None:  # binary so far: the squares are the sums
                    self.squares = _integers(s.values, np.int64)
                self.square_bound += peak
                _add_squares(self.squares, x, +1)
                return
        if self.exact:
            self._fold(n, s)
        self._welford(x, n.value, s.as_float())

    def subtract(self, x: Values, n: FiniteCount, s: VoxelSum) -> None:
        """Undo :meth:`add` of ``x``, before ``n`` and ``S`` change.

        Exact forms subtract exactly; Welford's ``M2`` is stepped back with
        ``mean' = (S - x) / (n - 1)``: ``M2 -= (x - mean') (x - mean)``.
        """
        if self.exact:
            if self.squares is not None:
                _add_squares(self.squares, x, -1)
            return
        m2, total, count = self.m2, s.as_float(), n.value
        values = x.array.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore", divide="ignore"):
            finite = np.isfinite(values)
            n_after = np.asarray(count - finite, dtype=np.float64)
            mean_now = np.divide(
                total, count, out=np.zeros(self.shape), where=np.asarray(count) > 0
            )
            s_prev = np.where(finite, total - values, total)
            mean_prev = np.divide(s_prev, n_after, out=np.zeros(self.shape), where=n_after > 0)
            change = np.where(finite, (values - mean_prev) * (values - mean_now), 0.0)
        m2 -= change
        np.maximum(m2, 0.0, out=m2)  # round-off must not make a variance negative
        m2[finite & (n_after <= 1)] = 0.0  # one value (or none) deviates by nothing

    def _welford(self, x: Values, count: int | np.ndarray, total: np.ndarray) -> None:
        """Welford's step for one volume: ``d = x - S/n``, ``M2 += d (x - (S + x)/(n + 1))``."""
        m2 = self.m2
        assert m2 is not None  # folded before any Welford step
        if x.complete and not np.ndim(count):
            # Every voxel has a value and the same count: a block of voxels at a time (the
            # same operations per voxel as on whole arrays, without volume temporaries).
            old = 1.0 / count if count else 0.0
            new = 1.0 / (count + 1)
            xs, ss, ms = _flat(x.array), _flat(total), _flat(m2)
            work = np.empty((3, min(BLOCK, xs.size)))  # x, d and e of a block, reused
            for block in _blocks(xs.size):
                xb, d, e = work[:, : block.stop - block.start]
                np.copyto(xb, xs[block])
                np.subtract(xb, np.multiply(ss[block], old, out=d), out=d)  # x - S/n
                np.subtract(xb, np.multiply(np.add(ss[block], xb, out=e), new, out=e), out=e)
                d *= e
                ms[block] += d
            return
        values = x.array.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(values)
            n_new = np.asarray(count + finite, dtype=np.float64)
            mean_old = np.divide(
                total, count, out=np.zeros(self.shape), where=np.asarray(count) > 0
            )
            d = np.where(finite, values, 0.0) - np.where(finite, mean_old, 0.0)
            s_new = np.where(finite, total + values, total)
            mean_new = np.divide(s_new, n_new, out=np.zeros(self.shape), where=n_new > 0)
            d *= np.where(finite, values - mean_new, 0.0)
        m2 += d

    def _fold(self, n: FiniteCount, s: VoxelSum) -> None:
        """Turn the exact ``(n, S, S2)`` into Welford's ``M2 = (n S2 - S**2) / n``, a block
        of voxels at a time.

        Exact statistics hold only integer inputs, which are complete: ``n`` is a number.
        """
        m2 = np.zeros(self.shape, order="F")
        if n.n_inputs:
            flat, sums = _flat(m2), _flat(s.values)
            squares = None if self.squares is None else _flat(self.squares)
            for block in _blocks(flat.size):
                part = None if squares is None else squares[block]
                np.divide(_numerator(n.n_inputs, sums[block], part), n.n_inputs, out=flat[block])
        self.m2, self.squares, self.square_bound = m2, None, 0

    # -- the maps ---------------------------------------------------------------------
    def variance_maps(
        self, n: FiniteCount, s: VoxelSum, ddof: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The variance and standard deviation as float32 maps (NaN where ``n - ddof <= 0``).

        Computed in float64, a block of voxels at a time, then rounded once to float32 (a
        variance past float32's largest value, of inputs near 1e20 and beyond, is inf).
        """
        count = n.value
        var32 = np.empty(self.shape, np.float32, order="F")
        std32 = np.empty(self.shape, np.float32, order="F")
        flats = [_flat(var32), _flat(std32)]
        m2 = None if self.m2 is None else _flat(self.m2)
        sums = _flat(s.values)
        squares = None if self.squares is None else _flat(self.squares)
        counts = _flat(count) if isinstance(count, np.ndarray) else None
        for block in _blocks(flats[0].size):
            n_b = np.asarray(count if counts is None else counts[block], dtype=np.float64)
            denominator = n_b - ddof
            with np.errstate(invalid="ignore", divide="ignore"):
                if m2 is not None:
                    var = m2[block] / denominator
                else:  # exact: integer inputs, complete, so n is a number
                    part = None if squares is None else squares[block]
                    var = _numerator(count, sums[block], part).astype(np.float64)
                    var /= n_b * denominator
            np.copyto(var, np.nan, where=denominator <= 0)
            with np.errstate(over="ignore"):  # past float32's range: inf, as numpy casts
                flats[0][block] = var
            np.sqrt(var, out=var)
            flats[1][block] = var
        return var32, std32

    # -- merging and re-ordering ------------------------------------------------------
    def merge(
        self,
        other: Spread,
        n: FiniteCount,
        s: VoxelSum,
        n_other: FiniteCount,
        s_other: VoxelSum,
        conform: Conform,
    ) -> None:
        """Combine another part's spread (both counts and sums as they were before
        merging): exactly while both are exact and their sum stays within int64, with
        Chan's formula otherwise."""
        if self.exact and other.exact:
            if self.squares is None and other.squares is None:
                self.square_bound += other.square_bound
                return
            bound = self.square_bound + other.square_bound
            if (n.n_inputs + n_other.n_inputs) * bound < EXACT_SQUARES_LIMIT:
                mine = self._squares_or_sum(s)
                self.squares = mine + conform(other._squares_or_sum(s_other))
                self.square_bound = bound
                return
        if self.exact:
            self._fold(n, s)
        if other.exact:
            other._fold(n_other, s_other)
        na = np.broadcast_to(np.asarray(n.value, dtype=np.float64), self.shape)
        nb = np.asarray(conform(np.broadcast_to(n_other.value, other.shape)), dtype=np.float64)
        s_a, s_b = s.as_float(), conform(s_other.as_float())
        total = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = np.where(nb > 0, s_b / nb, 0.0) - np.where(na > 0, s_a / na, 0.0)
            assert self.m2 is not None and other.m2 is not None  # both folded above
            self.m2 += conform(other.m2) + np.where(
                total > 0, delta * delta * na * nb / total, 0.0
            )

    def _squares_or_sum(self, s: VoxelSum) -> np.ndarray:
        return self.squares if self.squares is not None else _integers(s.values, np.int64)

    def regrid(self, move: Conform, shape: Sequence[int]) -> None:
        """Re-order onto a new reference grid."""
        self.shape = tuple(int(n) for n in shape)
        if self.squares is not None:
            self.squares = move(self.squares)
        if self.m2 is not None:
            self.m2 = move(self.m2)


def _integers(values: np.ndarray, dtype) -> np.ndarray:
    """Exact whole-number values (an exact sum) as ``dtype``: cast, or rounded first when
    they are stored as floats."""
    if values.dtype.kind == "f":
        values = np.rint(values)
    return values.astype(dtype, order="F")


def _numerator(count, s1: np.ndarray, s2: np.ndarray | None) -> np.ndarray:
    """``n S2 - S**2`` of some voxels in exact int64 arithmetic (``s2`` None: binary inputs,
    ``S2 == S``); the caller keeps ``n S2`` within int64 (:data:`EXACT_SQUARES_LIMIT`)."""
    s1 = _integers(s1, np.int64)
    return np.int64(count) * (s1 if s2 is None else s2) - s1 * s1


def _add_squares(squares: np.ndarray, x: Values, sign: int) -> None:
    """``S2 += x**2`` (``sign=-1``: ``-=``), exactly in int64."""
    ufunc = np.add if sign > 0 else np.subtract
    ufunc(squares, np.square(x.array, dtype=np.int64), out=squares)
