"""Inflating gzip files: one set of rules, a member at a time, into a buffer of known size.

The rules are RFC 1952's, as Python's :mod:`gzip` applies them: a file is one or more gzip
members, each checked against its CRC-32 and length; zero bytes may pad the end; anything
else after a member is an error. Three differences, all stricter: the first header's
reserved flags and its header CRC (FHCRC), when present, are checked, as zlib checks them;
and the inflated content may not run more than :data:`SLACK` bytes past what the NIfTI
header declares (the voxels end there; a stream that goes on is damaged, and no reader
needs it), so that a damaged file never makes a large allocation.

The start of the content (the NIfTI header, to learn the size) is inflated by ISA-L's
zlib-compatible inflater (:func:`peek`); then each member by libdeflate's
``libdeflate_gzip_decompress_ex``, which reports how much input the member took: that is
how the end of a member is found, exactly. libdeflate is called through its C API (the
``deflate`` dependency ships the library and exports it), with the GIL released; it is a
quarter faster than ISA-L's inflater on a 1 mm float32 map. There is one path: every
install accepts exactly the same files.
"""

from __future__ import annotations

import ctypes
import logging
import threading

import numpy as np
from isal import isal_zlib

__all__ = [
    "GZIP_MAGIC",
    "MAX_DEFLATE_RATIO",
    "SLACK",
    "GzipError",
    "inflate",
    "peek",
]

LOGGER = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"

#: Deflate's largest possible compression ratio (258-byte matches in 2-bit codes).
MAX_DEFLATE_RATIO = 1032

#: Inflated bytes tolerated past the end of the voxels.
SLACK = 1 << 20


class GzipError(ValueError):
    """A gzip stream is damaged: a CRC or length mismatch, invalid data, trailing junk, a
    truncated member, or more content than declared."""


def inflate(raw: bytes, size: int) -> memoryview:
    """The content of a gzip file whose first ``size`` bytes are needed.

    Returns all of the content (at most ``size + SLACK`` bytes; fewer than ``size`` when the
    file holds fewer: the caller decides).

    Raises
    ------
    GzipError
        If the stream breaks the rules of the module docstring.
    """
    capacity = size + SLACK
    out = np.empty(capacity, np.uint8)
    member = _member_inflater()
    pos = got = 0
    while True:
        consumed, produced = member(raw, pos, out, got)
        pos += consumed
        got += produced
        if pos < len(raw) and raw[pos] == 0:  # zero padding after a member
            rest = np.frombuffer(raw, np.uint8, offset=pos)
            nonzero = np.flatnonzero(rest)
            pos = len(raw) if nonzero.size == 0 else pos + int(nonzero[0])
        if pos >= len(raw):
            return out.data[:got]
        if raw[pos : pos + 2] != GZIP_MAGIC:
            raise GzipError("data after the last gzip member that are not gzip")


class _Libdeflate:
    """libdeflate's gzip member inflater, through its C API."""

    _SUCCESS, _BAD_DATA, _SHORT_OUTPUT, _INSUFFICIENT_SPACE = 0, 1, 2, 3

    def __init__(self, library: ctypes.CDLL) -> None:
        self._alloc = library.libdeflate_alloc_decompressor
        self._alloc.restype = ctypes.c_void_p
        self._alloc.argtypes = []
        self._free = library.libdeflate_free_decompressor
        self._free.argtypes = [ctypes.c_void_p]
        self._inflate = library.libdeflate_gzip_decompress_ex
        self._inflate.restype = ctypes.c_int
        self._inflate.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        self._local = threading.local()  # a decompressor is not shared between threads

    def __call__(self, raw: bytes, pos: int, out: np.ndarray, got: int) -> tuple[int, int]:
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = self._local.decompressor = _Decompressor(self._alloc, self._free)
        taken, produced = ctypes.c_size_t(0), ctypes.c_size_t(0)
        source = ctypes.cast(ctypes.c_char_p(raw), ctypes.c_void_p).value or 0
        result = self._inflate(
            decompressor.handle,
            source + pos,
            len(raw) - pos,
            out.ctypes.data + got,
            out.size - got,
            ctypes.byref(taken),
            ctypes.byref(produced),
        )
        if result == self._INSUFFICIENT_SPACE:
            raise GzipError("the stream holds more than the header declares")
        if result != self._SUCCESS:
            raise GzipError("invalid or truncated gzip data, or a CRC-32 or length mismatch")
        return taken.value, produced.value


class _Decompressor:
    """One libdeflate decompressor, freed with its owner (a thread)."""

    def __init__(self, alloc, free) -> None:
        self.handle = alloc()
        if not self.handle:
            raise MemoryError("libdeflate could not allocate a decompressor")
        self._free = free

    def __del__(self) -> None:
        self._free(self.handle)


_LIBDEFLATE: _Libdeflate | None = None


def _member_inflater() -> _Libdeflate:
    """libdeflate's member inflater, loaded on first use.

    Raises
    ------
    ImportError
        If the ``deflate`` package or its library cannot be loaded.
    """
    global _LIBDEFLATE
    if _LIBDEFLATE is None:
        try:
            import deflate._deflate as binding

            _LIBDEFLATE = _Libdeflate(ctypes.CDLL(binding.__file__))
        except (ImportError, OSError, AttributeError) as err:
            raise ImportError(
                f"reading .nii.gz files needs libdeflate's C API, which the 'deflate' package "
                f"ships; it could not be loaded here ({err}): reinstall it "
                "(pip install --force-reinstall deflate)"
            ) from err
    return _LIBDEFLATE


def peek(raw: bytes, size: int, file_size: int) -> bytes:
    """The first ``size`` bytes of a gzip file's content (enough for either NIfTI header),
    or all of it when shorter, from its first 64 KiB (``raw``: at least those, or the whole
    file of ``file_size`` bytes), across members: a writer may end a member anywhere, even
    inside the header. The other checks are :func:`inflate`'s.

    Raises
    ------
    GzipError
        If the start of the stream is damaged, or the whole file ends inside it.
    """
    pending = raw[: 1 << 16]
    head = b""
    try:
        while len(head) < size and pending[:2] == GZIP_MAGIC:
            stream = isal_zlib.decompressobj(31)  # 31: the gzip wrapper
            head += stream.decompress(pending, size - len(head))
            if not stream.eof:
                if len(head) < size and file_size <= 1 << 16:  # all the file, ending early
                    raise GzipError("the compressed data end before the gzip stream does")
                break
            pending = stream.unused_data.lstrip(b"\0")
    except isal_zlib.error as err:  # type: ignore[misc]  # isal's stub types it loosely
        raise GzipError(str(err)) from err
    return head
