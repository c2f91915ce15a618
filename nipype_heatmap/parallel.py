"""How many cores this process may use, and running voxel-wise work on all of them.

:func:`available_cpus` is the smallest of what limits the process: the CPUs it may run on
(its affinity mask: ``taskset``, ``numactl``, a container's cpuset), a cgroup CPU quota (v2
``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``: Docker's ``--cpus``, Kubernetes
limits) and, in a SLURM job, ``SLURM_CPUS_PER_TASK``. :func:`resolve_num_threads` turns a
requested count into the one used: never more than asked, never more than available.

:class:`SlabPool` splits a 3D grid into slabs along its last axis (contiguous in the
Fortran order of NIfTI data) and runs one function per slab on a thread pool; numpy
releases the GIL in its loops. Each voxel belongs to exactly one slab, so work done volume
after volume, slab by slab, performs for every voxel the same operations in the same order
as one thread would: results are bit for bit those of the serial path.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


def _cgroup_quota_cpus(root: Path = _CGROUP_ROOT) -> int | None:
    """CPUs allowed by a cgroup CPU quota (v2 or v1), rounded up; None without a quota."""
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return max(1, math.ceil(quota_us / period_us))
    except (OSError, ValueError):
        pass
    return None


def _slurm_cpus() -> int | None:
    value = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def available_cpus() -> int:
    """Return how many CPUs this process may use (at least 1); see the module docstring."""
    limits = [_affinity_cpus(), _cgroup_quota_cpus(), _slurm_cpus()]
    known = [n for n in limits if n]
    return max(1, min(known)) if known else max(1, os.cpu_count() or 1)


def resolve_num_threads(num_threads: int | None) -> int:
    """The number of threads to use: ``num_threads`` (None or 0: all available), capped at
    :func:`available_cpus`.

    Raises
    ------
    ValueError
        If ``num_threads`` is negative.
    """
    available = available_cpus()
    if num_threads is None or num_threads == 0:
        return available
    if num_threads < 0:
        raise ValueError(f"num_threads must be a positive number of threads, not {num_threads}")
    if num_threads > available:
        LOGGER.info(
            "%d threads asked for, but this process may use %d CPUs; using %d",
            num_threads,
            available,
            available,
        )
    return min(num_threads, available)


def slabs(shape: Sequence[int], n: int) -> list[tuple[slice, ...]]:
    """Split a 3D grid into at most ``n`` slabs along its last axis, as index tuples."""
    depth = int(shape[-1])
    n = max(1, min(n, depth))
    bounds = [round(i * depth / n) for i in range(n + 1)]
    return [
        (slice(None), slice(None), slice(bounds[i], bounds[i + 1]))
        for i in range(n)
        if bounds[i + 1] > bounds[i]
    ]


class SlabPool:
    """Run a function on every slab of a 3D grid, on ``num_threads`` threads.

    With one thread the function runs once on the whole grid in the calling thread.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, shape: Sequence[int], num_threads: int = 1) -> None:
        self.num_threads = max(1, int(num_threads))
        whole = (slice(None), slice(None), slice(None))
        self.slabs = slabs(shape, self.num_threads) if self.num_threads > 1 else [whole]
        self._pool = (
            ThreadPoolExecutor(len(self.slabs) - 1, thread_name_prefix="heatmap-slab")
            if len(self.slabs) > 1
            else None
        )

    def map(self, fn: Callable[[int, tuple[slice, ...]], T]) -> list[T]:
        """Call ``fn(index, slab)`` for every slab; return the results in slab order.

        The calling thread does the first slab itself while the pool does the others, so
        that it never just waits for a hand-off.
        """
        if self._pool is None:
            return [fn(i, slab) for i, slab in enumerate(self.slabs)]
        others = [self._pool.submit(fn, i, slab) for i, slab in enumerate(self.slabs) if i > 0]
        return [fn(0, self.slabs[0]), *(future.result() for future in others)]

    def close(self) -> None:
        """Stop the threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> SlabPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: glibc's ``mallopt`` parameters (``<malloc.h>``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def retain_freed_memory(mmap_threshold: int = 64 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Let this process reuse the memory of freed volumes instead of asking the system anew.

    Every input is inflated into a new buffer of the size of the volume (7 MB for a 1 mm
    mask, 29 MB for a float32 map). By default glibc serves such buffers with ``mmap`` and
    returns them on ``free``, so each one is handed out as fresh pages that the kernel
    zeroes on first touch: on 100 1 mm masks that page-faulting was a third of the run's
    CPU time (see ``benchmarks/``). Raising glibc's mmap threshold (buffers up to
    ``mmap_threshold`` come from the heap) and its trim threshold (up to ``trim_threshold``
    of free heap is kept) lets the next volume reuse the last one's pages. One arena for
    all threads lets a buffer freed by the accumulating thread serve the next read on any
    reader thread.

    This changes the allocator of the whole process, so the library never calls it on its
    own: the command-line programs do, before their job (they own their process), and a
    script that reads many volumes may. The process's peak memory is unchanged; memory freed
    below the peak is kept for reuse instead of returned until the process ends.

    Parameters
    ----------
    mmap_threshold : int, default=64 MiB
        Allocations up to this size come from the heap (glibc may refuse more than half
        its arena heap size: then 32 MiB is asked for).
    trim_threshold : int, default=1 GiB
        Free memory at the top of the heap kept before any is returned to the system.

    Returns
    -------
    bool
        Whether the allocator took the settings (glibc on Linux); elsewhere nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this interpreter runs on
    except (OSError, AttributeError):
        return False
    # Some glibc versions refuse an mmap threshold above half the arena heap (32 MiB).
    if not (mallopt(_M_MMAP_THRESHOLD, mmap_threshold) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)):
        return False  # not glibc (musl's mallopt does nothing and returns 0)
    taken = bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    mallopt(_M_ARENA_MAX, 1)
    LOGGER.debug("Allocator keeps freed volume buffers for reuse: %s", taken)
    return taken
