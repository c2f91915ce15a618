"""Discovery, loading, validation of one file against a reference grid, and atomic saving.

Nothing here imports Nipype. Every error names the file it is about, says what was expected
and what was found, and what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import logging
import os
import sys
import tempfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np

LOGGER = logging.getLogger(__name__)

#: File name endings taken as NIfTI inputs (single-file NIfTI-1 or NIfTI-2).
NIFTI_SUFFIXES = (".nii.gz", ".nii")

# Deflate's largest possible compression ratio (258-byte matches in 2-bit codes).
_MAX_DEFLATE_RATIO = 1032

#: Largest distance, in millimetres, between the world coordinates of matching grid corners
#: of two affines that still counts as "the same voxel grid" (float32 header round-off is
#: about 1e-5 mm at 200 mm from the origin).
AFFINE_TOL_MM = 1e-4

# What nibabel and the gzip/zlib layers raise for a file that is corrupt, truncated, or not
# NIfTI. ``gzip.BadGzipFile`` is an OSError; a truncated gzip stream is an EOFError.
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    zlib.error,
    nb.filebasedimages.ImageFileError,
    nb.spatialimages.HeaderDataError,
    nb.wrapstruct.WrapStructError,
)


@dataclass(frozen=True)
class Volume:
    """One input volume, read fully, with its raw stored values and scaling.

    Attributes
    ----------
    path : str
        Absolute path of the file.
    data : numpy.ndarray
        The stored (unscaled) voxel values, 3D.
    slope, inter : float or None
        ``scl_slope``/``scl_inter`` to apply; both None when the file is not scaled
        (NaN or zero slope, or the identity ``1, 0`` that nibabel writes by default).
    affine : numpy.ndarray
        The 4x4 voxel-to-world affine nibabel reports for the file.
    header : nibabel.nifti1.Nifti1Header
        The file's header (a NIfTI-2 header for NIfTI-2 files).
    image_class : type
        ``nibabel.Nifti1Image`` or ``nibabel.Nifti2Image``.
    value_range : tuple of float, optional
        ``(min, max)`` of ``data`` when already computed (by a reader thread); NaN, NaN
        when it holds a NaN.
    """

    path: str
    data: np.ndarray
    slope: float | None
    inter: float | None
    affine: np.ndarray
    header: nb.nifti1.Nifti1Header
    image_class: type
    value_range: tuple[float, float] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The 3D shape of the volume."""
        return tuple(self.data.shape)


def is_nifti_name(name: str) -> bool:
    """Tell whether a file name ends in ``.nii`` or ``.nii.gz`` (case-sensitive, as BIDS)."""
    return name.endswith(NIFTI_SUFFIXES)


def find_nifti_files(
    nii_folder: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None
) -> list[str]:
    """List the NIfTI files directly inside a folder, sorted by name.

    Parameters
    ----------
    nii_folder : str or os.PathLike
        The folder to list (not recursively).
    exclude : str or os.PathLike, optional
        A file to leave out even if it is a NIfTI file there (the output of a run that
        writes into its own input folder).

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
    Skipped: hidden files (names starting with ``.``, such as macOS ``._x.nii.gz``), anything
    that is not a regular file after following symlinks (folders, broken links, sockets),
    and ``exclude``.
    """
    folder = Path(nii_folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: input folder does not exist")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: input path is not a folder; pass a folder of NIfTI files"
        )
    excluded = Path(exclude).absolute() if exclude is not None else None
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
            if excluded is not None and same_file(path, excluded):
                LOGGER.debug("Skipping %s: it is the output of this run", path)
                continue
            found.append(path)
    if not found:
        raise FileNotFoundError(
            f"{folder}: no NIfTI file (*.nii, *.nii.gz) found directly in this folder"
        )
    found.sort(key=lambda p: os.fsencode(p.name))
    return [str(p) for p in found]


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Tell whether two paths name one file (same path, or a link to it); never raises."""
    a, b = Path(a).absolute(), Path(b).absolute()
    if a == b:
        return True
    try:
        return b.exists() and a.samefile(b)
    except OSError:
        return False


def load_volume(path: str | os.PathLike[str]) -> Volume:
    """Read one NIfTI file fully and check that it holds one 3D volume of numbers.

    Parameters
    ----------
    path : str or os.PathLike
        A single-file NIfTI-1 or NIfTI-2 image (``.nii`` or ``.nii.gz``).

    Returns
    -------
    Volume
        The raw voxel values with the scaling to apply, the affine and the header.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file cannot be read or parsed (corrupt or truncated gzip, not NIfTI), is not
        3D (a 4D image with one volume counts as 3D), or holds no real numbers.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: input file does not exist")
    img, data = _load_nifti(path)
    # nibabel moves scl_slope/scl_inter from the loaded header into the array proxy.
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    return make_volume(path, data, slope, inter, img.affine, img.header, type(img))


def _load_nifti(path: str) -> tuple[nb.Nifti1Image, np.ndarray]:
    """The plain nibabel path: the image and its stored voxels, errors naming the file."""
    try:
        img = _load_verified(path)
        if not isinstance(img, nb.Nifti1Image):  # Nifti2Image is a subclass
            raise ValueError(f"it is a {type(img).__name__}, not a single-file NIfTI image")
        return img, np.asanyarray(img.dataobj.get_unscaled())
    except _READ_ERRORS as err:
        raise ValueError(
            f"{path}: cannot be read as NIfTI ({type(err).__name__}: {err}); "
            "check that the file is a complete .nii or .nii.gz image"
        ) from err


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read one NIfTI file fully, through the fast path when it applies.

    For a single-file NIfTI-1 ``.nii.gz`` in native byte order with a numeric data type, and
    with libdeflate installed (the ``fast`` extra), the whole file is inflated in one shot
    with libdeflate (sized by the gzip trailer, checked against deflate's maximum
    compression ratio and then against the size the header implies), the header is parsed
    by nibabel and the voxels are viewed in place with ``np.frombuffer``. Anything else
    (``.nii``, NIfTI-2, other byte order, multi-member gzip, a size that does not add up, any
    error) goes through :func:`load_volume`, which also produces the error messages. Both
    give identical values.

    Raises
    ------
    As :func:`load_volume`.
    """
    path = os.path.abspath(os.fspath(path))
    fast = _inflate_nifti1(path) if path.endswith(".nii.gz") else None
    if fast is None:
        return load_volume(path)
    header, data = fast
    slope, inter = header.get_slope_inter()
    return make_volume(path, data, slope, inter, header.get_best_affine(), header, nb.Nifti1Image)


def read_nifti_data(path: str | os.PathLike[str]) -> tuple[nb.Nifti1Header, np.ndarray]:
    """Return a NIfTI file's header and stored (unscaled) voxels, of any dimensionality.

    Through the same fast path as :func:`read_volume` when it applies (the array is then a
    read-only view into one inflated buffer), else through nibabel with gzip verification.

    Raises
    ------
    ValueError
        If the file cannot be read as NIfTI (the message names it).
    """
    path = os.path.abspath(os.fspath(path))
    fast = _inflate_nifti1(path) if path.endswith(".nii.gz") else None
    if fast is not None:
        return fast
    img, data = _load_nifti(path)
    return img.header, data


def _inflate_nifti1(path: str) -> tuple[nb.Nifti1Header, np.ndarray] | None:
    """The fast path: header and voxels of a plain NIfTI-1 .nii.gz, or None to fall back."""
    try:
        import deflate
    except ImportError:
        return None
    try:
        with open(path, "rb") as fobj:
            raw = fobj.read()
        # libdeflate sizes its output from the gzip trailer (ISIZE, the length modulo 2**32).
        # Deflate cannot compress more than 1032:1, so a larger ISIZE means a damaged or
        # truncated file: leave it to nibabel rather than allocate what the trailer claims.
        isize = int.from_bytes(raw[-4:], "little") if len(raw) > 18 else 0
        if not 352 <= isize <= _MAX_DEFLATE_RATIO * len(raw):
            return None
        buf = deflate.gzip_decompress(raw)
        del raw
        head = buf[:352]
        if int.from_bytes(head[:4], "little") != 348 or head[344:348] != b"n+1\0":
            return None
        header = nb.Nifti1Header(head[:348], check=False)
        dtype = header.get_data_dtype()
        if dtype.kind not in "iuf" or (dtype.byteorder == ">") != (sys.byteorder == "big"):
            return None
        shape = header.get_data_shape()
        offset = int(header["vox_offset"])
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset < 352 or not shape or len(buf) != offset + nbytes:
            return None  # another member follows, or a size that does not add up
        header = nb.Nifti1Header.from_fileobj(io.BytesIO(buf[:offset]), check=True)
        data = np.frombuffer(buf, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset)
        return header, data.reshape(shape, order="F")
    except Exception:  # noqa: BLE001 - the plain path re-reads and reports properly
        LOGGER.debug("%s: fast read failed; falling back to nibabel", path, exc_info=True)
        return None


def iter_volumes(paths: Iterable[str], read_ahead: int = 2, workers: int = 2) -> Iterator[Volume]:
    """Yield the volumes of ``paths`` in order, reading up to ``read_ahead`` files ahead.

    Reading and inflating run on ``workers`` threads (libdeflate and numpy release the GIL)
    while the caller accumulates. At most ``read_ahead + 1`` volumes are in memory. An error
    reading a file is raised when that file's turn comes; reads queued behind it are
    cancelled.
    """
    paths = list(paths)
    if read_ahead < 1 or len(paths) < 2:
        for path in paths:
            yield read_volume(path)
        return
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="heatmap-read")
    queue: deque[Future[Volume]] = deque()
    pending = iter(paths)
    try:
        for path in pending:
            queue.append(pool.submit(_read_with_range, path))
            if len(queue) >= read_ahead:
                break
        while queue:
            volume = queue.popleft().result()
            nxt = next(pending, None)
            if nxt is not None:
                queue.append(pool.submit(_read_with_range, nxt))
            yield volume
            del volume
    finally:
        for future in queue:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _read_with_range(path: str) -> Volume:
    """Read a volume and, off the caller's thread, the range of its stored values."""
    volume = read_volume(path)
    if volume.data.size == 0 or volume.slope is not None:
        return volume  # a scaled volume's range is taken after scaling, by the caller
    return dataclasses.replace(
        volume, value_range=(volume.data.min().item(), volume.data.max().item())
    )


def _load_verified(path: str) -> nb.spatialimages.SpatialImage:
    """Load an image with nibabel, checking a gzip file's integrity first.

    nibabel stops reading a ``.nii.gz`` after the voxels, so it never checks the gzip CRC
    and length, and a damaged file can load as silently wrong values. Here the whole
    stream (every member) is inflated by Python's gzip, which verifies them, and the image
    is parsed from those bytes.
    """
    if not path.endswith(".gz"):
        return nb.load(path)
    with open(path, "rb") as fobj:
        raw = gzip.decompress(fobj.read())
    size = raw[:4]
    klass = (
        nb.Nifti2Image
        if 540 in (int.from_bytes(size, "little"), int.from_bytes(size, "big"))
        else nb.Nifti1Image
    )
    return klass.from_bytes(raw)


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


def _grid_corners(shape: tuple[int, ...]) -> np.ndarray:
    """Return the 8 corner voxel indices of a 3D grid as a 4x8 homogeneous array."""
    ii, jj, kk = np.meshgrid(*[(0, n - 1) for n in shape[:3]], indexing="ij")
    return np.vstack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(8)])


def grid_distance_mm(affine: np.ndarray, ref_affine: np.ndarray, shape: tuple[int, ...]) -> float:
    """Return the largest world-space distance (mm) between the grids' matching corners."""
    corners = _grid_corners(shape)
    diff = (np.asarray(affine) @ corners - np.asarray(ref_affine) @ corners)[:3]
    return float(np.sqrt((diff**2).sum(axis=0)).max())


def conform_to_grid(
    volume: Volume,
    ref_shape: tuple[int, ...],
    ref_affine: np.ndarray,
    ref_path: str,
) -> np.ndarray:
    """Return the volume's voxels in the reference grid's voxel order.

    An input whose voxel axes are a permutation and/or flip of the reference's, covering
    exactly the same world grid, is re-ordered losslessly (a view: no voxel is copied or
    resampled) and the re-ordering is logged.

    Raises
    ------
    ValueError
        If the shape differs from the reference's (after any lossless re-ordering), or the
        affine does not describe the reference's voxel grid within ``AFFINE_TOL_MM``.
    """
    data = volume.data
    shape = volume.shape
    if shape == tuple(ref_shape) and (
        np.array_equal(volume.affine, ref_affine)
        or grid_distance_mm(volume.affine, ref_affine, shape) <= AFFINE_TOL_MM
    ):
        return data

    reordered = _axis_reordering(volume.affine, shape, ref_affine, ref_shape)
    if reordered is not None:
        perm, flips = reordered
        out = np.transpose(data, perm)
        for axis in flips:
            out = np.flip(out, axis=axis)
        LOGGER.info(
            "%s: voxel axes re-ordered onto the grid of %s (input axes %s, flipped %s); "
            "no resampling",
            volume.path,
            ref_path,
            tuple(perm),
            tuple(flips),
        )
        return out

    if shape != tuple(ref_shape):
        raise ValueError(
            f"{volume.path}: shape {shape} differs from {ref_path} {tuple(ref_shape)}; "
            "resample all inputs to one grid first"
        )
    distance = grid_distance_mm(volume.affine, ref_affine, shape)
    raise ValueError(
        f"{volume.path}: affine {_fmt_affine(volume.affine)} is not on the voxel grid of "
        f"{ref_path} {_fmt_affine(ref_affine)} (corners up to {distance:.4g} mm apart, "
        f"tolerance {AFFINE_TOL_MM:g} mm); register and resample all inputs to one grid first"
    )


def _fmt_affine(affine: np.ndarray) -> str:
    rows = np.asarray(affine)[:3]
    return "[" + "; ".join(" ".join(f"{v:.6g}" for v in row) for row in rows) + "]"


def _axis_reordering(
    affine: np.ndarray,
    shape: tuple[int, ...],
    ref_affine: np.ndarray,
    ref_shape: tuple[int, ...],
) -> tuple[tuple[int, int, int], tuple[int, ...]] | None:
    """Find the transpose and flips that map an input's voxels exactly onto the reference's.

    Returns ``(perm, flips)`` such that ``np.flip(np.transpose(data, perm), flips)`` is in
    the reference voxel order, or None when no lossless re-ordering exists.
    """
    try:
        vox2vox = np.linalg.inv(affine) @ ref_affine  # reference voxel -> input voxel
    except np.linalg.LinAlgError:
        return None
    rot = vox2vox[:3, :3]
    signed_perm = np.round(rot)
    if not np.allclose(rot, signed_perm, atol=1e-3):
        return None
    if not (
        np.all(np.abs(signed_perm).sum(axis=0) == 1)
        and np.all(np.abs(signed_perm).sum(axis=1) == 1)
    ):
        return None
    perm = tuple(int(np.flatnonzero(signed_perm[:, j])[0]) for j in range(3))
    if tuple(shape[p] for p in perm) != tuple(ref_shape):
        return None
    flips = []
    exact = np.eye(4)
    exact[:3, :3] = signed_perm
    for j, p in enumerate(perm):
        if signed_perm[p, j] < 0:
            flips.append(j)
            exact[p, 3] = shape[p] - 1
    # The exact voxel mapping must put the input's grid onto the reference's in world space.
    if grid_distance_mm(affine @ exact, ref_affine, ref_shape) > AFFINE_TOL_MM:
        return None
    if perm == (0, 1, 2) and not flips:
        return None  # same axes: the affine differs by a shift, not a re-ordering
    return perm, tuple(flips)  # type: ignore[return-value]


def check_output_filename(output_filename: str) -> str:
    """Check that ``output_filename`` is a bare ``.nii``/``.nii.gz`` file name.

    Raises
    ------
    ValueError
        If it contains a folder part, is ``.``/``..``, is hidden or lacks the NIfTI ending.
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
    stem = next((name[: -len(s)] for s in NIFTI_SUFFIXES if name.endswith(s)), None)
    if not stem:
        raise ValueError(
            f"output_filename {name!r} must end in .nii or .nii.gz, e.g. 'heatmap_volume.nii.gz'"
        )
    return name


def prepare_output(out_file: str | os.PathLike[str]) -> str:
    """Create the output folder and prove it writable, before any input is read.

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
        If the folder cannot be created or written, or the output path is a folder.
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
            f"{out_file}: output path is an existing folder; choose another file name"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".nipype_heatmap_probe_", dir=folder)
    except OSError as err:
        raise type(err)(
            err.errno, f"{folder}: output folder is not writable ({err.strerror})"
        ) from err
    os.close(fd)
    os.unlink(probe)
    return out_file


def save_atomic(img: nb.Nifti1Image, out_file: str | os.PathLike[str]) -> str:
    """Write an image to ``out_file`` atomically (see :func:`write_atomic`).

    Returns
    -------
    str
        The absolute path written.
    """
    return write_atomic([img.to_bytes()], out_file)


def write_atomic(chunks: Iterable[bytes | memoryview], out_file: str | os.PathLike[str]) -> str:
    """Write buffers, in order, to ``out_file`` atomically; gzip when it ends in ``.gz``.

    The bytes go to a hidden temporary file in the same folder, which is flushed to disk
    and renamed over ``out_file``: an existing file is replaced only after full success,
    and a failure leaves no partial file behind. Compression streams (level 1, as nibabel;
    ISA-L when installed, else zlib; one gzip member with mtime 0, so the same content
    gives the same bytes), so large data never needs a second copy in memory.

    Returns
    -------
    str
        The absolute path written.
    """
    out_file = os.path.abspath(os.fspath(out_file))
    folder, name = os.path.split(out_file)
    compressor = _gzip_compressor() if name.endswith(".gz") else None
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fobj:
            for chunk in chunks:
                fobj.write(compressor.compress(chunk) if compressor else chunk)
            if compressor:
                fobj.write(compressor.flush())
            fobj.flush()
            os.fsync(fobj.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out_file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out_file


def _gzip_compressor():
    """A streaming gzip compressor at level 1: ISA-L (the ``fast`` extra, 5x faster than
    zlib and libdeflate at this level for the same size) when installed, else zlib."""
    try:
        from isal import isal_zlib as backend
    except ImportError:
        backend = zlib
    return backend.compressobj(1, backend.DEFLATED, 31)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def warn_duplicates(paths: Iterable[str]) -> None:
    """Log a warning for every input listed more than once (it would be counted twice)."""
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            LOGGER.warning("%s is listed more than once and is counted each time", path)
        seen.add(path)
