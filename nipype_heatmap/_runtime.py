"""What this process may use: its CPUs, its threads, and (for the commands) its allocator.

:func:`available_cpus` is the smallest of what limits the process: the CPUs it may run on
(its affinity mask: ``taskset``, ``numactl``, a container's cpuset), a cgroup CPU quota (v2
``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``: Docker's ``--cpus``, Kubernetes
limits) and, in a SLURM job, ``SLURM_CPUS_PER_TASK``. :func:`resolve_num_threads` turns a
requested count into the one used: never more than asked, never more than available.

"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LOGGER = logging.getLogger(__name__)

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


def thread_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """The thread pool of a parallel step (reading ahead, counting labels): the one place
    where this package starts threads. Use it as a context manager, or shut it down."""
    return ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix=f"heatmap-{name}")


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
