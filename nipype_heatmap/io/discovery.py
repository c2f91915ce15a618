"""Which files are inputs: folder listing, file identity, and the tool's own earlier outputs.

A folder's listing leaves out only the files that the run itself is about to replace (its
output plan's files: see :mod:`~nipype_heatmap.io.plan`), and only when they are
recognisably this tool's (an earlier run's outputs): never files by a name pattern. Any
other file at an output path stays an input, and the plan then refuses the run, naming the
file as both an input and an output.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "NIFTI_SUFFIXES",
    "OWN_DESCRIP_PREFIX",
    "file_identity",
    "find_nifti_files",
    "is_nifti_name",
    "is_own_file",
    "same_file",
    "split_nifti_name",
    "warn_duplicates",
]

LOGGER = logging.getLogger(__name__)

#: File name endings taken as NIfTI inputs when a folder is listed (case-sensitive, as BIDS).
NIFTI_SUFFIXES = (".nii.gz", ".nii")

#: How every NIfTI file this tool writes describes itself in its header's ``descrip``.
OWN_DESCRIP_PREFIX = b"nipype_heatmap "


def is_nifti_name(name: str) -> bool:
    """Tell whether a file name ends in ``.nii`` or ``.nii.gz`` (case-sensitive, as BIDS)."""
    return name.endswith(NIFTI_SUFFIXES)


def split_nifti_name(name: str) -> tuple[str, str]:
    """Split a file name into its stem and NIfTI ending (``.nii.gz``, ``.nii``, or ``""``).

    Examples
    --------
    >>> split_nifti_name("sub-01_mask.nii.gz")
    ('sub-01_mask', '.nii.gz')
    """
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def file_identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """Return ``(device, inode)`` of the file a path names (after links), or None if none."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Tell whether two paths name one file: the same path, or a link to the same inode.

    Never raises. Two paths to a file that does not exist yet are the same only when they
    are the same absolute path.
    """
    if Path(a).absolute() == Path(b).absolute():
        return True
    ida = file_identity(a)
    return ida is not None and ida == file_identity(b)


def is_own_file(path: str | os.PathLike[str]) -> bool:
    """Tell whether a NIfTI file was written by this tool (a map, a state, an atlas).

    Only the header is read: every NIfTI file this tool writes says so in ``descrip``
    (``nipype_heatmap mean of 42 volumes``...). A file that cannot be read is not
    recognised.
    """
    from .reading import read_header

    try:
        header = read_header(path)
    except (OSError, ValueError):
        return False
    return bytes(header["descrip"].tobytes()).startswith(OWN_DESCRIP_PREFIX)


def find_nifti_files(
    nii_folder: str | os.PathLike[str], exclude: Callable[[str], bool] | None = None
) -> list[str]:
    """List the NIfTI files directly inside a folder, sorted by name.

    Parameters
    ----------
    nii_folder : str or os.PathLike
        The folder to list (not recursively).
    exclude : callable, optional
        Tells whether a path is one of the run's outputs (``OutputPlan.is_output``). Such
        a file is left out when it is recognisably this tool's (:func:`is_own_file`): an
        earlier run's output, about to be replaced. Any other file there stays an input
        (and the plan refuses to overwrite it).

    Returns
    -------
    list of str
        Absolute paths, sorted by file name in byte order so that the result and the
        "first file" are the same on every machine and locale.

    Raises
    ------
    FileNotFoundError
        If ``nii_folder`` does not exist, is not a folder, or holds no NIfTI file.

    Notes
    -----
    Skipped: hidden files (names starting with ``.``, such as macOS ``._x.nii.gz``) and
    anything that is not a regular file after following symlinks (folders, broken links,
    sockets).

    Examples
    --------
    >>> find_nifti_files(mask_dir)  # doctest: +ELLIPSIS
    ['.../sub-01_mask.nii.gz', '.../sub-02_mask.nii.gz', '.../sub-03_mask.nii.gz']
    """
    folder = Path(nii_folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: input folder does not exist")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: input path is not a folder; pass a folder of NIfTI files"
        )
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not is_nifti_name(name):
                continue
            path = Path(entry.path).absolute()
            if not path.is_file():  # follows symlinks; drops folders and broken links
                LOGGER.debug("Skipping %s: not a regular file", path)
                continue
            if exclude is not None and exclude(str(path)) and is_own_file(path):
                LOGGER.info("Skipping %s: this run replaces it (an earlier run's output)", path)
                continue
            found.append(path)
    if not found:
        raise FileNotFoundError(
            f"{folder}: no NIfTI file (*.nii, *.nii.gz) found directly in this folder"
        )
    found.sort(key=lambda p: os.fsencode(p.name))
    return [str(p) for p in found]


def warn_duplicates(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Log a warning for every input that is a file already listed (it is counted twice).

    Files are compared by identity (device and inode), so a symlink or hard link to a
    listed file is a duplicate too.
    """
    seen: dict[tuple[int, int] | str, str] = {}
    for path in paths:
        key = file_identity(path) or os.path.abspath(path)
        if key in seen:
            same = "" if os.fspath(path) == seen[key] else f" (the same file as {seen[key]})"
            LOGGER.warning("%s is listed more than once%s and is counted each time", path, same)
        else:
            seen[key] = os.fspath(path)
