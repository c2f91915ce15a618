"""Which files are inputs: folder listing, file identity, and the tool's own earlier outputs."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

LOGGER = logging.getLogger(__name__)

#: File name endings taken as NIfTI inputs when a folder is listed (case-sensitive, as BIDS).
NIFTI_SUFFIXES = (".nii.gz", ".nii")

#: How a map written by this tool describes itself in its header's ``descrip`` field: the
#: heatmap (mean, sum) and the cohort maps written beside it.
HEATMAP_DESCRIP = re.compile(
    rb"^nipype_heatmap (mean|sum|coverage|variance ddof=-?\d+|std ddof=-?\d+"
    rb"|non-zero count|overlap >= \d+) of \d+ volumes"
)


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


def is_previous_heatmap(path: str | os.PathLike[str]) -> bool:
    """Tell whether a file is recognisably a heatmap written by this tool.

    Only the header is read. The test is the ``descrip`` text every map of this tool
    carries (``nipype_heatmap mean of 42 volumes``, ``nipype_heatmap coverage of 42
    volumes``...); a file that cannot be read is not recognised.
    """
    from .reading import read_header

    try:
        header = read_header(path)
    except (OSError, ValueError):
        return False
    descrip = bytes(header["descrip"].tobytes()).rstrip(b"\0")
    return bool(HEATMAP_DESCRIP.match(descrip))


def find_nifti_files(
    nii_folder: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None
) -> list[str]:
    """List the NIfTI files directly inside a folder, sorted by name.

    Parameters
    ----------
    nii_folder : str or os.PathLike
        The folder to list (not recursively).
    exclude : str or os.PathLike, optional
        The output path of the run. A file there (by identity: the same path, a symlink or
        a hard link), or named like the maps written beside it (``<stem>_*``), is left out
        only when it is recognisably a map of this tool (:func:`is_previous_heatmap`): the
        output of an earlier run into the same folder. Any other file there stays an
        input, and the writer then refuses to overwrite it.

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
            if exclude is not None and _is_own_output(path, Path(exclude)):
                LOGGER.info("Skipping %s: a map this tool wrote at the output path", path)
                continue
            found.append(path)
    if not found:
        raise FileNotFoundError(
            f"{folder}: no NIfTI file (*.nii, *.nii.gz) found directly in this folder"
        )
    found.sort(key=lambda p: os.fsencode(p.name))
    return [str(p) for p in found]


def _is_own_output(path: Path, out_file: Path) -> bool:
    """A previous map of this tool at ``out_file`` or beside it (``<stem>_*``)."""
    stem = split_nifti_name(out_file.name)[0]
    beside = path.parent.resolve() == out_file.parent.resolve() and path.name.startswith(
        stem + "_"
    )
    return (beside or same_file(path, out_file)) and is_previous_heatmap(path)


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
