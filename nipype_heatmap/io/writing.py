"""Writing outputs: name checks, the writability probe, and one atomic writer for every file.

The writer never leaves a file that outlives its process. Where the system allows it
(Linux, ``O_TMPFILE``), the bytes go to an unnamed file in the output folder, which gets a
name only when complete, just before the rename over the output. Elsewhere, a hidden named
temporary file is used. Either way, the writer holds an exclusive ``flock`` on its temporary
file until the rename, and :func:`prepare_output` removes this output's temporary files
whose writer is gone (a process killed between naming and renaming, or on a system without
``O_TMPFILE``): a lock still held means a running writer, whose file is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import logging
import os
import tempfile
import zlib
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import nibabel as nb
import numpy as np

from .._optional import have_isal, isal_zlib
from .discovery import split_nifti_name

LOGGER = logging.getLogger(__name__)

_PART_SUFFIX = ".part"


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


def prepare_output(out_file: str | os.PathLike[str]) -> str:
    """Create the output folder and prove it writable, before any input is read.

    Also removes temporary files of earlier writes of this same output whose writer is gone
    (see the module docstring); a running writer's file is never touched.

    Parameters
    ----------
    out_file : str or os.PathLike
        Full path of the file to be written; its name must end in ``.nii`` or ``.nii.gz``.

    Returns
    -------
    str
        The absolute output path.

    Raises
    ------
    ValueError
        If the file name is not a ``.nii``/``.nii.gz`` name.
    OSError
        If the folder cannot be created or written, or the output path is a folder. The
        message names the path.
    """
    out_file = os.path.abspath(os.fspath(out_file))
    folder, name = os.path.split(out_file)
    check_output_filename(name)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise type(err)(
            err.errno, f"{folder}: cannot create the output folder ({err.strerror})"
        ) from err
    if os.path.isdir(out_file):
        raise IsADirectoryError(
            errno.EISDIR, f"{out_file}: output path is an existing folder; choose another name"
        )
    try:  # unnamed where the system allows it: nothing to clean up, even after a kill
        with tempfile.TemporaryFile(prefix=".nipype_heatmap_probe_", dir=folder):
            pass
    except OSError as err:
        raise type(err)(
            err.errno, f"{folder}: output folder is not writable ({err.strerror})"
        ) from err
    remove_stale_temporaries(out_file)
    return out_file


def _temp_prefix(out_file: str) -> str:
    return f".{os.path.basename(out_file)}."


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


def save_atomic(
    img: nb.Nifti1Image, out_file: str | os.PathLike[str], *, num_threads: int = 1
) -> str:
    """Write an image to ``out_file`` atomically (see :func:`write_atomic`).

    Returns
    -------
    str
        The absolute path written.
    """
    return write_atomic(image_chunks(img), out_file, num_threads=num_threads)


def image_chunks(img: nb.Nifti1Image) -> list[bytes | memoryview]:
    """The bytes of ``img.to_bytes()``, without copying voxels that are stored as they are.

    nibabel writes an image through ``BytesIO`` in blocks, converting each, then copies the
    whole buffer out again: for a float32 map of the 1 mm MNI grid that is ~25 ms, three
    times the compression of it. When the data already have the header's data type (byte
    order included), are Fortran-contiguous and need no scaling, the file is the header as
    nibabel writes it followed by the array's own memory in Fortran order: that is what is
    returned (the header through nibabel's own steps, and, as with ``to_bytes``, the image's
    header first brought up to date with its affine and shape). Any other image (a
    conversion, scaling, another byte order) goes through ``to_bytes``. Both give the same
    bytes (tested).
    """
    data = np.asanyarray(img.dataobj)
    header = img.header
    out_dtype = header.get_data_dtype()
    if (
        type(data) is not np.ndarray
        or data.dtype != out_dtype  # (in the header's byte order, as nibabel writes)
        or data.dtype.kind not in "biuf"
        or not data.flags.f_contiguous
        or not isinstance(header, nb.Nifti1Header)  # NIfTI-1 or NIfTI-2, with scaling fields
        or not np.isnan(header["scl_slope"]) & np.isnan(header["scl_inter"])  # else kept
    ):
        return [img.to_bytes()]
    img.update_header()  # as to_bytes does: the affine into the header
    header = img.header.copy()
    header.set_slope_inter(1.0, 0.0)  # nibabel's writer for data already of the stored type
    head = io.BytesIO()
    header.write_to(head)  # header, extensions; vox_offset is set to where they end
    assert head.tell() == int(header.get_data_offset())
    return [head.getvalue(), memoryview(data.reshape(-1, order="F")).cast("B")]


def write_atomic(
    chunks: Iterable[bytes | memoryview],
    out_file: str | os.PathLike[str],
    *,
    num_threads: int = 1,
) -> str:
    """Write buffers, in order, to ``out_file`` atomically; gzip when it ends in ``.gz``.

    The bytes go to a temporary file in the same folder (unnamed where the system allows
    it), which is flushed to disk and renamed over ``out_file``: an existing file is
    replaced only after full success, and a failure leaves no file behind. Compression
    streams (level 1, as nibabel; ISA-L when installed, else zlib), so large data never
    needs a second copy in memory. The gzip file is one member with mtime 0 whose deflate
    stream is cut into independent blocks of :data:`GZIP_BLOCK` bytes of the data
    (pigz's ``--independent``), compressed on ``num_threads`` threads: any reader sees an
    ordinary gzip file, and the same content gives the same bytes whatever the number of
    threads or how the buffers were cut.

    Returns
    -------
    str
        The absolute path written.

    Raises
    ------
    OSError
        Naming ``out_file``, if it cannot be written (full disk, file-size limit, I/O
        error); the previous file, if any, is unchanged.
    """
    out_file = os.path.abspath(os.fspath(out_file))
    folder, name = os.path.split(out_file)
    stream = _gzip_stream(chunks, num_threads) if name.endswith(".gz") else iter(chunks)
    fd, tmp = _open_temporary(out_file)
    try:
        with os.fdopen(fd, "wb", closefd=False) as fobj:
            for chunk in stream:
                fobj.write(chunk)
            fobj.flush()
            os.fsync(fd)
        os.fchmod(fd, 0o666 & ~_umask())
        if tmp is None:  # unnamed: give it a name only now that it is complete
            tmp = _link_unnamed(fd, out_file)
        os.replace(tmp, out_file)
        tmp = None
    except OSError as err:
        raise type(err)(
            err.errno,
            f"{out_file}: cannot write the output ({err.strerror}); "
            "any previous file there is unchanged",
        ) from err
    finally:
        if hasattr(stream, "close"):  # a failed write: stop the compression threads now
            stream.close()
        os.close(fd)  # releases the lock
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_folder(folder)
    return out_file


def _open_temporary(out_file: str) -> tuple[int, str | None]:
    """Open a locked temporary file beside ``out_file``: ``(fd, None)`` if unnamed."""
    folder = os.path.dirname(out_file)
    if _unnamed_files_possible():
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError:  # the file system does not support unnamed files
            pass
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(out_file), suffix=_PART_SUFFIX, dir=folder)
    except OSError as err:
        raise type(err)(
            err.errno, f"{out_file}: cannot create a temporary file ({err.strerror})"
        ) from err
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd, tmp


def _unnamed_files_possible() -> bool:
    """Whether unnamed files can be made and linked here (Linux ``O_TMPFILE`` and /proc)."""
    return hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


def _link_unnamed(fd: int, out_file: str) -> str:
    """Give an unnamed (``O_TMPFILE``) file a hidden temporary name beside ``out_file``."""
    folder = os.path.dirname(out_file)
    # A folder descriptor makes os.link call linkat(AT_SYMLINK_FOLLOW), which follows the
    # /proc magic link to the unnamed file; plain link() would try to link the link itself.
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for _ in range(100):
            name = f"{_temp_prefix(out_file)}{os.urandom(6).hex()}{_PART_SUFFIX}"
            try:
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=folder_fd, follow_symlinks=True)
            except FileExistsError:
                continue
            return os.path.join(folder, name)
    finally:
        os.close(folder_fd)
    raise FileExistsError(errno.EEXIST, f"{out_file}: no free temporary name")


def _fsync_folder(folder: str) -> None:
    """Make the rename durable (best effort: not every system can open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: Bytes of data per independently compressed deflate block of a gzip output: large
#: enough that the lost back-references at block starts cost < 1 % in size, small enough
#: to spread a 1 mm volume (14-29 MB) over a few threads.
GZIP_BLOCK = 1 << 22

#: The gzip member header: deflate, no name, mtime 0, fastest compression, Unix.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"


def _gzip_stream(chunks: Iterable[bytes | memoryview], num_threads: int):
    """The gzip file of the concatenated ``chunks``, as a stream of byte strings.

    The data is re-cut into :data:`GZIP_BLOCK` blocks; each is compressed on its own (raw
    deflate at level 1, ending on a byte-aligned sync flush, no reference to the block
    before), on the calling thread or up to ``num_threads + 1`` at a time on a pool, and
    written in order. An empty final deflate block, the CRC32 and the length close the
    member. ISA-L and zlib release the GIL while they compress and checksum, so the
    threads run in parallel.
    """
    backend = isal_zlib if have_isal else zlib

    def compress(block: bytes | memoryview) -> bytes:
        compressor = backend.compressobj(1, backend.DEFLATED, -15)
        return compressor.compress(block) + compressor.flush(backend.Z_SYNC_FLUSH)

    crc, size = 0, 0
    yield _GZIP_HEADER
    if num_threads <= 1:
        for block in _cut(chunks, GZIP_BLOCK):
            if block is not None:
                crc, size = backend.crc32(block, crc), size + len(block)
                yield compress(block)
    else:
        with ThreadPoolExecutor(num_threads, thread_name_prefix="heatmap-gzip") as pool:
            pending: deque[tuple[Future[bytes], bool]] = deque()  # (compressed, is a view)
            for block in _cut(chunks, GZIP_BLOCK):
                if block is None:  # the next chunk may reuse the last one's buffer: finish
                    while any(view for _, view in pending):  # every block that views it
                        yield pending.popleft()[0].result()
                    continue
                crc, size = backend.crc32(block, crc), size + len(block)
                pending.append((pool.submit(compress, block), isinstance(block, memoryview)))
                if len(pending) > num_threads:
                    yield pending.popleft()[0].result()
            while pending:
                yield pending.popleft()[0].result()
    yield backend.compressobj(1, backend.DEFLATED, -15).flush()  # the final, empty block
    yield crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")


def _cut(chunks: Iterable[bytes | memoryview], size: int):
    """The concatenated ``chunks`` as blocks of ``size`` bytes (the last one shorter, none
    empty): views into large chunks, copies of small ones joined. ``None`` marks the end
    of each chunk: a caller may reuse a chunk's buffer for the next one, so a view of it
    must be used before the next block is asked for."""
    joined = bytearray()
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        if joined:
            take = size - len(joined)
            joined += view[:take]
            view = view[take:]
            if len(joined) == size:
                yield bytes(joined)
                joined = bytearray()
        if not joined:
            whole = len(view) - len(view) % size
            for start in range(0, whole, size):
                yield view[start : start + size]
            joined += view[whole:]
        yield None
    if joined:
        yield bytes(joined)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
