"""Writing files: output names, temporary files beside their outputs, gzip, NIfTI bytes.

Every output is first written to a hidden temporary file in its own folder
(``.<name>.<random>.part``), flushed to disk, and only then renamed over its final name
(see :mod:`~nipype_heatmap.io.plan`, which does that for all of a run's outputs together).
The writer holds an exclusive ``flock`` on its temporary file until the rename; a
temporary file whose lock can be taken belongs to a writer that is gone (a killed run) and
is removed by the next run that writes the same output. A running writer's file is never
touched.

Compression is ISA-L's (the ``isal`` dependency), level 1 as nibabel's default, one gzip
member with no name and mtime 0, the data handed to the compressor in blocks of a fixed
size: the same content gives the same bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator

import nibabel as nb
import numpy as np
from isal import isal_zlib

from .discovery import split_nifti_name

__all__ = [
    "GZIP_BLOCK",
    "check_output_filename",
    "Chunks",
    "fsync_folder",
    "gzip_stream",
    "header_bytes",
    "image_chunks",
    "remove_stale_temporaries",
    "Temporary",
]

LOGGER = logging.getLogger(__name__)

_PART_SUFFIX = ".part"

Chunks = Iterable[bytes | bytearray | memoryview]


def check_output_filename(output_filename: str) -> str:
    """Check that ``output_filename`` is a bare ``.nii``/``.nii.gz`` file name.

    Raises
    ------
    ValueError
        If it contains a folder part, is ``.``/``..``, is hidden or lacks the NIfTI ending.

    Examples
    --------
    >>> check_output_filename("lesion_count.nii.gz")
    'lesion_count.nii.gz'
    """
    name = os.fspath(output_filename)
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    if not name or any(s in name for s in seps) or name in (".", ".."):
        raise ValueError(
            f"output_filename {name!r} must be a bare file name (no folder part); "
            "put the folder in output_path"
        )
    if name.startswith("."):
        raise ValueError(
            f"output_filename {name!r} must not start with '.': hidden files are skipped "
            "as inputs and easily lost"
        )
    stem, suffix = split_nifti_name(name)
    if not stem or not suffix:
        raise ValueError(
            f"output_filename {name!r} must end in .nii or .nii.gz, e.g. 'heatmap_volume.nii.gz'"
        )
    return name


def _temp_prefix(out_file: str) -> str:
    return f".{os.path.basename(out_file)}."


class Temporary:
    """The temporary file of one output, locked by this process until it is renamed.

    Parameters
    ----------
    out_file : str
        The output's final (absolute) path; the temporary file goes beside it.

    Raises
    ------
    OSError
        Naming the output, if the temporary file cannot be created.
    """

    def __init__(self, out_file: str) -> None:
        self.out_file = out_file
        folder = os.path.dirname(out_file)
        self.settled = False  # renamed into place, or handed to a commit's journal
        try:
            self.fd, self.path = tempfile.mkstemp(
                prefix=_temp_prefix(out_file), suffix=_PART_SUFFIX, dir=folder
            )
        except OSError as err:
            raise type(err)(
                err.errno, f"{out_file}: cannot create a temporary file ({err.strerror})"
            ) from err
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def write(self, chunks: Chunks) -> None:
        """Write the chunks (gzip-compressed when the output's name ends in ``.gz``) and
        flush them to disk.

        Raises
        ------
        OSError
            Naming the output (full disk, quota, file-size limit, I/O error).
        """
        stream = gzip_stream(chunks) if self.out_file.endswith(".gz") else iter(chunks)
        try:
            with os.fdopen(self.fd, "wb", closefd=False) as fobj:
                for chunk in stream:
                    fobj.write(chunk)
                fobj.flush()
                os.fsync(self.fd)
            os.fchmod(self.fd, 0o666 & ~_umask())
        except OSError as err:
            raise type(err)(
                err.errno,
                f"{self.out_file}: cannot write the output ({err.strerror}); "
                "any previous file there is unchanged",
            ) from err

    def rename(self) -> None:
        """Put the complete file in place of the output (one atomic rename)."""
        os.replace(self.path, self.out_file)
        self.settled = True

    def close(self, *, keep: bool = False) -> None:
        """Release the lock; remove the temporary file unless it was renamed, or ``keep``
        (an interrupted commit's journal will put it in place)."""
        if not (self.settled or keep):
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.settled = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def remove_stale_temporaries(out_file: str | os.PathLike[str]) -> list[str]:
    """Remove temporary files of ``out_file`` left by writers that no longer run.

    A writer holds an exclusive ``flock`` on its temporary file until it renames it; a file
    whose lock can be taken has no writer. Returns the paths removed.
    """
    out_file = os.path.abspath(os.fspath(out_file))
    folder = os.path.dirname(out_file)
    prefix = _temp_prefix(out_file)
    removed: list[str] = []
    try:
        with os.scandir(folder) as entries:
            candidates = [
                e.path
                for e in entries
                if e.name.startswith(prefix) and e.name.endswith(_PART_SUFFIX)
            ]
    except OSError:
        return removed
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            LOGGER.debug("%s: temporary file of a running writer; left alone", path)
            continue
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            removed.append(path)
            LOGGER.info("Removed %s, left behind by an interrupted write", path)
        finally:
            os.close(fd)
    return removed


def fsync_folder(folder: str) -> None:
    """Make renames in a folder durable (best effort: not every system can open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: Bytes handed to the compressor at a time, whatever the cuts of the data.
GZIP_BLOCK = 1 << 20


def gzip_stream(chunks: Chunks) -> Iterator[bytes]:
    """The gzip file of the concatenated ``chunks`` (one member, level 1, mtime 0), as a
    stream of byte strings: large data never needs a second copy in memory.

    The compressor's output depends on how its input is cut, so the data are handed to it
    in blocks of :data:`GZIP_BLOCK` bytes (views into large chunks, small ones joined):
    the same content gives the same bytes however it was cut into chunks.
    """
    compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)  # 31: the gzip wrapper
    for block in _blocks(chunks, GZIP_BLOCK):
        out = compressor.compress(block)
        if out:
            yield out
    yield compressor.flush()


def _blocks(chunks: Chunks, size: int) -> Iterator[bytes | memoryview]:
    """The concatenated ``chunks`` in blocks of ``size`` bytes (the last one shorter).

    A block that views a chunk is yielded before the next chunk is asked for (a writer
    may fill one buffer again for each chunk)."""
    joined = bytearray()
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        if joined:
            take = size - len(joined)
            joined += view[:take]
            view = view[take:]
            if len(joined) < size:
                continue
            yield bytes(joined)
            joined = bytearray()
        whole = len(view) - len(view) % size
        for start in range(0, whole, size):
            yield view[start : start + size]
        joined += view[whole:]
    if joined:
        yield bytes(joined)


def image_chunks(img: nb.Nifti1Image) -> list[bytes | memoryview]:
    """The bytes of ``img.to_bytes()``, without copying voxels that are stored as they are.

    nibabel writes an image through ``BytesIO`` in blocks, converting each, then copies the
    whole buffer out again: two copies of the voxels in memory (for a 1 mm float32 map, 58
    MB more at the peak of a run that otherwise holds a few volumes). When the data already
    have the header's data type (byte order included), are Fortran-contiguous and need no
    scaling, as every map this package makes, the file is the header as nibabel writes it
    followed by the array's own memory: that is what is returned. Any other image goes
    through ``to_bytes``. Both give the same bytes.
    """
    data = np.asanyarray(img.dataobj)
    header = img.header
    if (
        type(data) is not np.ndarray
        or data.dtype != header.get_data_dtype()
        or not data.flags.f_contiguous
        or not isinstance(header, nb.Nifti1Header)  # NIfTI-1 or NIfTI-2, with scaling fields
        or not np.isnan(header["scl_slope"]) & np.isnan(header["scl_inter"])
    ):
        return [img.to_bytes()]
    img.update_header()  # as to_bytes does: the affine into the header
    header = img.header.copy()
    header.set_slope_inter(1.0, 0.0)  # what nibabel's writer stores for unscaled data
    return [header_bytes(header), data.reshape(-1, order="F").data.cast("B")]


def header_bytes(header: nb.nifti1.Nifti1Header) -> bytes:
    """A NIfTI header with its extensions, padded to ``vox_offset``: the bytes before the
    voxels (nibabel sets ``vox_offset`` to where the extensions end)."""
    head = io.BytesIO()
    header.write_to(head)
    padding = int(header.get_data_offset()) - head.tell()
    return head.getvalue() + b"\0" * max(padding, 0)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
