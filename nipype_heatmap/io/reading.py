"""Reading NIfTI files: one read path, one validated header step, and read-ahead threads.

Every read goes through the same steps, whatever the file's name or the libraries
installed:

1. Only a regular file is read (after following links): a FIFO, a device such as
   ``/dev/zero``, a socket or a folder is refused, naming it, before any byte is read.
2. Whether it is gzip is decided by its first bytes (the gzip magic), never by its name.
3. :func:`parse_header` is the one validated header step: the NIfTI-1/NIfTI-2 magic, the
   dimensions (no zero or negative axis), a real-number data type, finite scaling, a
   finite and invertible affine. Any failure is a ``ValueError`` naming the file, raised
   before any voxel is used.
4. No more is inflated than the header declares (``vox_offset`` plus the voxels, and a
   little slack), and a gzip file may declare at most what its compressed size can hold
   (deflate cannot compress better than 1032:1): a damaged size field never makes a huge
   allocation. Every gzip member is checked (CRC-32 and length), and nothing but zero
   padding or further members may follow the last one: the rules of Python's
   :mod:`gzip`, applied to every file by one inflater (:mod:`.inflating`).
5. The voxels are a view into the inflated bytes (``np.frombuffer``), in native byte
   order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, cast

import nibabel as nb
import numpy as np

from .._runtime import thread_pool
from . import inflating
from .grid import Grid
from .inflating import GZIP_MAGIC, MAX_DEFLATE_RATIO

__all__ = [
    "check_volume_header",
    "file_digest",
    "file_digest_of",
    "load_image",
    "make_volume",
    "parse_header",
    "read_header",
    "read_nifti_data",
    "read_volume",
    "ReadAhead",
    "Volume",
]

LOGGER = logging.getLogger(__name__)

# sizeof_hdr and magic of the two single-file NIfTI formats.
_NIFTI_KINDS = {
    348: (b"n+1\0", nb.Nifti1Header, nb.Nifti1Image),
    540: (b"n+2\0", nb.Nifti2Header, nb.Nifti2Image),
}


@dataclass(frozen=True)
class Volume:
    """One input volume, read fully, with its raw stored values and scaling.

    Attributes
    ----------
    path : str
        Absolute path of the file.
    data : numpy.ndarray
        The stored (unscaled) voxel values, 3D, native byte order.
    slope, inter : float or None
        ``scl_slope``/``scl_inter`` to apply; both None when the file is not scaled
        (NaN, infinite or zero slope, or the identity ``1, 0``), as nibabel reads them.
    affine : numpy.ndarray
        The 4x4 voxel-to-world affine nibabel reports for the file.
    header : nibabel.nifti1.Nifti1Header
        The file's header (a ``Nifti2Header`` for NIfTI-2 files).
    image_class : type
        ``nibabel.Nifti1Image`` or ``nibabel.Nifti2Image``.
    digest : str, optional
        ``"sha256:<hex>"`` of the file's bytes as stored (compressed or not), when asked
        for (:func:`read_volume` with ``digest=True``): what a saved state records to
        recognise the file later.
    """

    path: str
    data: np.ndarray
    slope: float | None
    inter: float | None
    affine: np.ndarray
    header: nb.nifti1.Nifti1Header
    image_class: type
    digest: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The 3D shape of the volume."""
        return tuple(self.data.shape)


def _open_regular_file(path: str) -> tuple[int, int]:
    """Open a regular file (after links) for reading; return its descriptor and size.

    Anything else is refused, naming it, before a byte is read: a FIFO (opened without
    waiting for a writer), a device, a folder, or a socket (which cannot even be opened).
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: input file does not exist") from None
    except OSError as err:  # a socket: ENXIO; say what it is rather than the errno
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG  # cannot tell: the open's own error stands
        if stat.S_ISREG(mode):
            raise
        raise _not_a_regular_file(path, mode) from err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _not_a_regular_file(path, info.st_mode)
    return fd, info.st_size


def _not_a_regular_file(path: str, mode: int) -> ValueError:
    if stat.S_ISDIR(mode):
        return ValueError(f"{path}: is a folder, not a NIfTI file")
    return ValueError(
        f"{path}: not a regular file ({_file_kind(mode)}); only NIfTI files "
        "are read: copy the data into a .nii or .nii.gz file first"
    )


def _read_regular_file(path: str) -> bytes:
    """The bytes of a regular file; anything else is refused before it is read."""
    fd, size = _open_regular_file(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fobj:
            return fobj.read(size)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO or pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a file"


def file_digest_of(raw: bytes | memoryview) -> str:
    """``"sha256:<hex>"`` of a file's stored bytes (the form states record)."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """``"sha256:<hex>"`` of a regular file's bytes (refused like an input otherwise)."""
    return file_digest_of(_read_regular_file(os.path.abspath(os.fspath(path))))


def read_nifti_data(
    path: str | os.PathLike[str], *, digest: list[str] | None = None
) -> tuple[nb.nifti1.Nifti1Header, np.ndarray]:
    """Return a NIfTI file's validated header and stored (unscaled) voxels, any number of axes.

    The array is a read-only view into one buffer, in native byte order (a copy only for
    files written in the other byte order). With ``digest`` (a list), ``"sha256:<hex>"``
    of the file's bytes as stored is appended to it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a regular file, or cannot be read as NIfTI (the message names it and
        says why).
    """
    path = os.path.abspath(os.fspath(path))
    raw = _read_regular_file(path)
    if digest is not None:
        digest.append(file_digest_of(raw))
    compressed = raw[:2] == GZIP_MAGIC
    try:
        head = inflating.peek(raw, 540, len(raw)) if compressed else raw[:540]  # either header
        total = _declared_size(path, head)
        if compressed and total > MAX_DEFLATE_RATIO * len(raw):
            raise ValueError(
                f"{path}: its header declares {total} bytes, more than a gzip file of "
                f"{len(raw)} bytes can hold; the file is truncated or its header is damaged"
            )
        content = inflating.inflate(raw, total) if compressed else raw[:total]
    except inflating.GzipError as err:
        raise ValueError(_damaged_gzip(path, err)) from err
    if len(content) < total:
        raise ValueError(
            f"{path}: the header declares {total} bytes but the file holds {len(content)} "
            "(truncated: copy or export it again)"
        )
    header = parse_header(path, content)
    dtype = header.get_data_dtype()
    shape = header.get_data_shape()
    count = int(np.prod(shape, dtype=np.int64))
    data = np.frombuffer(content, dtype=dtype, count=count, offset=int(header.get_data_offset()))
    if not dtype.isnative:
        data = data.astype(dtype.newbyteorder("="))
    return header, data.reshape(shape, order="F")


def _damaged_gzip(path: str, err: Exception) -> str:
    return (
        f"{path}: damaged gzip data ({err}); the file is truncated or corrupt: copy or "
        "export it again"
    )


def _declared_size(path: str, head: bytes) -> int:
    """Bytes up to the end of the voxels, from the first bytes of a file (its header)."""
    header = _parse_header(path, head, extensions=False)
    try:
        shape = header.get_data_shape()
        itemsize = header.get_data_dtype().itemsize
        offset = int(header.get_data_offset())
    except Exception as err:  # noqa: BLE001 - any field nibabel cannot read: invalid header
        raise ValueError(f"{path}: invalid NIfTI header ({err})") from err
    if any(n <= 0 for n in shape):
        raise ValueError(
            f"{path}: invalid NIfTI header (an axis of length zero or less in shape {shape})"
        )
    return max(offset, header.sizeof_hdr) + int(np.prod(shape, dtype=object)) * itemsize


def parse_header(path: str, buf: bytes | memoryview) -> nb.nifti1.Nifti1Header:
    """The one validated header step: parse and check a NIfTI header against its bytes.

    Parameters
    ----------
    path : str
        The file, for messages.
    buf : bytes
        The file's (inflated) content, at least up to the end of its voxels.

    Returns
    -------
    nibabel.nifti1.Nifti1Header
        The header (``Nifti2Header`` for NIfTI-2), parsed as ``nibabel.load`` parses it
        (``check=True``), with extensions.

    Raises
    ------
    ValueError
        Naming the file, if it is not a single-file NIfTI-1/NIfTI-2 image, its header is
        invalid (dimensions, data type, scaling, quaternion, affine), or the file holds
        fewer voxel bytes than the header promises.
    """
    header = _parse_header(path, buf, extensions=True)
    try:
        with np.errstate(all="ignore"):  # NaN fields are reported below, not warned about
            _check_header(header, len(buf))
    except Exception as err:  # noqa: BLE001 - any check failure is "invalid header"
        raise ValueError(
            f"{path}: invalid NIfTI header ({err}); "
            "the file is damaged or was written by a broken tool"
        ) from err
    return header


def _parse_header(
    path: str, buf: bytes | memoryview, *, extensions: bool
) -> nb.nifti1.Nifti1Header:
    """Parse the header at the start of ``buf``; with ``extensions``, also the extensions
    that end at ``vox_offset`` (``check=True``, as ``nibabel.load``)."""
    for size, (magic, header_class, _) in _NIFTI_KINDS.items():
        for order in ("little", "big"):
            if int.from_bytes(buf[:4], order) != size or len(buf) < size:
                continue
            where = 344 if size == 348 else 4
            if buf[where : where + 4] != magic:
                raise ValueError(
                    f"{path}: not a single-file NIfTI image (magic "
                    f"{bytes(buf[where : where + 4])!r}, expected {magic!r}); .hdr/.img pairs "
                    "and ANALYZE files are not read: convert them to .nii or .nii.gz first"
                )
            try:
                with np.errstate(all="ignore"):
                    if not extensions:
                        return header_class(bytes(buf[:size]), check=False)
                    end = int(header_class(bytes(buf[:size]), check=False).get_data_offset())
                    end = end if size < end <= len(buf) else size
                    return header_class.from_fileobj(io.BytesIO(buf[:end]), check=True)
            except Exception as err:  # noqa: BLE001 - any parser failure: invalid header
                raise ValueError(
                    f"{path}: invalid NIfTI header ({err}); "
                    "the file is damaged or was written by a broken tool"
                ) from err
    if len(buf) < 348:
        raise ValueError(
            f"{path}: not a NIfTI image: {len(buf)} bytes, shorter than any NIfTI header"
        )
    raise ValueError(
        f"{path}: not a NIfTI-1 or NIfTI-2 image (no NIfTI header size at its start); "
        "convert it to .nii or .nii.gz first (e.g. with nibabel or mrconvert)"
    )


def _check_header(header: nb.nifti1.Nifti1Header, nbytes: int) -> None:
    dims = header["dim"]
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise ValueError(f"dim[0] = {ndim}, not a number of axes between 1 and 7")
    shape = tuple(int(n) for n in dims[1 : ndim + 1])
    if any(n <= 0 for n in shape):
        raise ValueError(f"an axis of length zero or less in shape {shape}")
    dtype = header.get_data_dtype()  # raises for an unknown datatype code
    offset = int(header.get_data_offset())
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if offset < header.sizeof_hdr or offset + need > nbytes:
        raise ValueError(
            f"shape {shape} of {dtype} needs {need} voxel bytes at offset {offset}, but the "
            f"file holds {nbytes} bytes in all (truncated, or absurd dimensions)"
        )
    header.get_slope_inter()  # raises for a valid slope with a NaN or infinite intercept
    affines = {"best": header.get_best_affine()}
    if header["qform_code"] > 0:  # a qform in force must be valid even when the sform wins
        affines["qform"] = header.get_qform()  # raises for an invalid quaternion
    for name, affine in affines.items():
        if not np.all(np.isfinite(affine)):
            raise ValueError(
                f"the {name} affine holds NaN or infinite values (check pixdim, the "
                "quaternion and the sform)"
            )
        if abs(_det3(affine[:3, :3])) < 1e-12:
            raise ValueError(
                f"the {name} affine is singular (a zero voxel size or collapsed axes): the "
                "voxel grid has no defined position in space"
            )


def _det3(m: np.ndarray) -> float:
    """The determinant of a 3x3 matrix, in plain arithmetic: ``numpy.linalg.det`` goes
    through LAPACK, whose OpenBLAS build wakes its worker threads, which then spin for a
    while on CPUs the reader threads need (a tenth of a 100-file job's time)."""
    (a, b, c), (d, e, f), (g, h, i) = np.asarray(m, dtype=np.float64).tolist()
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


def read_header(path: str | os.PathLike[str]) -> nb.nifti1.Nifti1Header:
    """Return a NIfTI file's header (without extensions), reading only its first bytes.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a regular file, or not a NIfTI-1/NIfTI-2 file.
    """
    path = os.path.abspath(os.fspath(path))
    fd, file_size = _open_regular_file(path)
    try:
        start = os.pread(fd, 1 << 16, 0)
    finally:
        os.close(fd)
    if start[:2] == GZIP_MAGIC:
        try:
            start = inflating.peek(start, 540, file_size)
        except inflating.GzipError as err:
            raise ValueError(_damaged_gzip(path, err)) from err
    return _parse_header(path, start, extensions=False)


def check_volume_header(path: str, header: nb.nifti1.Nifti1Header, grid: Grid) -> None:
    """Check what a header alone tells against the reference grid, before any voxel of the
    file is used: one 3D volume (a 4D image with one volume counts as 3D), real numbers,
    and the grid (up to a lossless re-ordering of voxel axes).

    Raises
    ------
    ValueError
        Naming the file and what is wrong.
    """
    try:  # fields nibabel cannot interpret (an unknown data type code, a bad quaternion)
        shape = tuple(int(n) for n in header.get_data_shape())
        dtype = header.get_data_dtype()
        affine = header.get_best_affine()
    except Exception as err:  # noqa: BLE001 - any field nibabel cannot read: invalid header
        raise ValueError(
            f"{path}: invalid NIfTI header ({err!r}); "
            "the file is damaged or was written by a broken tool"
        ) from err
    if len(shape) < 3 or any(n != 1 for n in shape[3:]):
        raise ValueError(
            f"{path}: expected a 3D volume (or 4D with one volume), found shape {shape}; "
            "split 4D series into 3D volumes first (e.g. nibabel.funcs.four_to_three)"
        )
    if dtype.kind not in "biuf":
        raise ValueError(
            f"{path}: data type {dtype} is not a real number type; "
            "only integer and floating-point volumes can be averaged"
        )
    if not grid.matches(shape[:3], affine) and grid.reordering(shape[:3], affine) is None:
        # raises, saying why; a zero-stride stand-in: the header's shape is not allocated
        grid.conform(np.broadcast_to(np.uint8(0), shape[:3]), affine, path)


def load_image(path: str | os.PathLike[str]) -> nb.spatialimages.SpatialImage:
    """``nibabel.load`` of an image file (typed as the image it is, for the callers that read
    an image this package wrote or a user gave, with nibabel's own checks)."""
    return cast(nb.spatialimages.SpatialImage, nb.load(os.fspath(path)))


def read_volume(path: str | os.PathLike[str], *, digest: bool = False) -> Volume:
    """Read one NIfTI file fully and check that it holds one 3D volume of real numbers.

    Parameters
    ----------
    path : str or os.PathLike
        A single-file NIfTI-1 or NIfTI-2 image, gzip-compressed or not (by content).
    digest : bool, default=False
        Also hash the file's stored bytes (:attr:`Volume.digest`).

    Returns
    -------
    Volume
        The raw voxel values with the scaling to apply, the affine and the header.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a regular file, cannot be read or parsed (see
        :func:`parse_header`), is not 3D (a 4D image with one volume counts as 3D), or
        holds no real numbers.
    """
    path = os.path.abspath(os.fspath(path))
    digests: list[str] | None = [] if digest else None
    header, data = read_nifti_data(path, digest=digests)
    klass = _NIFTI_KINDS[header.sizeof_hdr][2]
    slope, inter = header.get_slope_inter()
    volume = make_volume(path, data, slope, inter, header.get_best_affine(), header, klass)
    return dataclasses.replace(volume, digest=digests[0]) if digests else volume


def make_volume(
    path: str,
    data: np.ndarray,
    slope: float | None,
    inter: float | None,
    affine: np.ndarray,
    header: nb.nifti1.Nifti1Header,
    image_class: type,
) -> Volume:
    """Check the dimensionality and data type of loaded voxels and wrap them in a Volume.

    Raises
    ------
    ValueError
        If the data are not 3D (trailing axes of length 1 are dropped first) or are not
        real numbers.
    """
    shape = data.shape
    if len(shape) > 3 and all(n == 1 for n in shape[3:]):
        data = data.reshape(shape[:3], order="A")
    if data.ndim != 3:
        raise ValueError(
            f"{path}: expected a 3D volume (or 4D with one volume), found shape {shape}; "
            "split 4D series into 3D volumes first (e.g. nibabel.funcs.four_to_three)"
        )
    if data.dtype.kind not in "biuf":
        raise ValueError(
            f"{path}: data type {data.dtype} is not a real number type; "
            "only integer and floating-point volumes can be averaged"
        )
    if slope is not None and (slope, inter) == (1.0, 0.0):
        slope = inter = None
    if slope is not None and inter is None:
        inter = 0.0
    return Volume(
        path, data, slope, inter, np.asarray(affine, dtype=np.float64), header, image_class
    )


class ReadAhead:
    """The volumes of ``paths`` in order, each read on a reader thread ahead of its turn.

    Use as a context manager (or call :meth:`close`): entering the block starts the first
    ``read_ahead`` reads, so that they run while the caller still works on something else
    (the first volume); leaving it cancels the reads not started and waits for those
    running, on the caller's thread, so that no reader thread outlives it.

    Parameters
    ----------
    paths : iterable of str
        The files, in order.
    read_ahead : int, default=2
        How many files are read ahead of the one being used (at most ``read_ahead + 1``
        volumes are in memory); 0 reads each file on the caller's thread when its turn
        comes.
    workers : int, default=2
        Reader threads (libdeflate and numpy release the GIL: they inflate in parallel).
    digest : bool, default=False
        Hash each file (see :class:`Volume`).
    prepare : callable, optional
        Run on the reader thread on each volume; what it returns is yielded instead (the
        per-file work that can run ahead of its turn: values on the reference grid, label
        counts). Its exceptions are raised as read errors are: when that file's turn comes.

    Examples
    --------
    >>> with ReadAhead(mask_files) as volumes:
    ...     shapes = [volume.shape for volume in volumes]
    >>> shapes
    [(7, 8, 9), (7, 8, 9), (7, 8, 9)]
    """

    def __init__(
        self,
        paths: Iterable[str],
        *,
        read_ahead: int = 2,
        workers: int = 2,
        digest: bool = False,
        prepare: Callable[[Volume], Any] | None = None,
    ) -> None:
        self._paths = list(paths)
        self._ahead = max(0, read_ahead)
        self._digest = digest
        self._prepare = prepare
        self._pool = thread_pool(workers, "read") if self._ahead and len(self._paths) > 1 else None
        self._queue: deque[Future[Any]] = deque()
        self._pending = iter(self._paths)

    def _read(self, path: str) -> Any:
        volume = read_volume(path, digest=self._digest)
        return volume if self._prepare is None else self._prepare(volume)

    def _fill(self) -> None:
        """Start reads until ``read_ahead`` are queued (or no file is left)."""
        assert self._pool is not None
        while len(self._queue) < self._ahead:
            path = next(self._pending, None)
            if path is None:
                return
            self._queue.append(self._pool.submit(self._read, path))

    def __iter__(self) -> Iterator[Any]:
        if self._pool is None:
            for path in self._paths:
                yield self._read(path)
            return
        self._fill()
        while self._queue:
            item = self._queue.popleft().result()
            self._fill()
            yield item
            del item

    def close(self) -> None:
        """Cancel the reads not started and wait for the running ones."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._queue.clear()

    def __enter__(self) -> ReadAhead:
        if self._pool is not None:
            self._fill()  # the first reads run while the caller still works on its own
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
