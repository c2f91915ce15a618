"""What every interface shares: path traits, the log bridge into Nipype, memory figures."""

from __future__ import annotations

import logging as _logging
import os
from contextlib import contextmanager

from nipype import logging
from nipype.interfaces.base import BaseInterfaceInputSpec, Directory, File
from packaging.version import Version

from .._version import __version__

IFLOGGER = logging.getLogger("nipype.interface")

#: Peak memory (GB) of one single-threaded heatmap node on the MNI 1 mm grid
#: (182 x 218 x 182), as measured in the README's benchmarks (0.28 GB for float32 maps;
#: 0.27 GB for a PartialHeatmap job, 0.23 GB for MergeHeatmaps), for Nipype's ``mem_gb=``.
#: It grows with the number of voxels, not with the number of inputs: multiply by 8 for a
#: 0.5 mm grid. Use :func:`mem_gb` for a node with several threads.
MEM_GB = 0.3


def mem_gb(num_threads: int = 1) -> float:
    """Memory estimate (GB) of a heatmap node with ``num_threads`` threads, MNI 1 mm grid.

    Each thread keeps one more float32 volume (and its compressed bytes) in flight: about
    0.06 GB at 1 mm, on top of :data:`MEM_GB` for one thread.
    """
    return round(MEM_GB + 0.06 * (max(1, num_threads) - 1), 2)


class _AbsolutePathMixin:
    """Make a path absolute when it is set, keeping its links (``resolve=True`` would
    follow symlinks, and a BIDS or DataLad dataset's file names must stay its own).

    A relative path is taken relative to where the user sets it, not to the node's
    working directory, where the interface runs.
    """

    def validate(self, objekt, name, value, return_pathlike=False):
        value = super().validate(objekt, name, value, return_pathlike=False)
        return os.path.abspath(value)


class AbsFile(_AbsolutePathMixin, File):
    """A ``File`` trait whose relative paths are made absolute where they are set."""


class AbsDirectory(_AbsolutePathMixin, Directory):
    """A ``Directory`` trait whose relative paths are made absolute where they are set."""


class _ToNipypeLog(_logging.Handler):
    """Hand this package's log records to Nipype's interface logger (and its handlers)."""

    def emit(self, record: _logging.LogRecord) -> None:
        if IFLOGGER.isEnabledFor(record.levelno):
            IFLOGGER.handle(record)


@contextmanager
def core_logs_in_nipype(debug: bool = False):
    """Within the block, this package's log records appear in Nipype's interface log.

    With ``debug``, the package's INFO records (per-file ranges, statistics) are let through.
    """
    logger = _logging.getLogger("nipype_heatmap")
    handler = _ToNipypeLog()
    old_level = logger.level
    logger.addHandler(handler)
    if debug:
        logger.setLevel(_logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class _SpecBase(BaseInterfaceInputSpec):
    """Input specs whose deprecated names are checked against this package's version."""

    # Nipype compares a trait's ``deprecated=`` release with ``package_version``.
    package_version = Version(__version__)
