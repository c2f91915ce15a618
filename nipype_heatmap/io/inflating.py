"""Inflating gzip files: one set of rules, a member at a time, into a buffer of known size.

The rules are RFC 1952's, as Python's :mod:`gzip` applies them: a file is one or more gzip
members, each checked against its CRC-32 and length; zero bytes may pad the end; anything
else after a member is an error. Two differences, both stricter: reserved header flags are
refused (RFC 1952 asks readers to), and the inflated content may not run more than
:data:`SLACK` bytes past what the NIfTI header declares (the voxels end there; a stream
that goes on is damaged, and no reader needs it), so that a damaged file never makes a
large allocation.

Each member is inflated by libdeflate's ``libdeflate_gzip_decompress_ex``, which reports
how much input the member took: that is how the end of a member is found, exactly. It is
called through its C API (the ``deflate`` dependency ships libdeflate and exports it),
with the GIL released. Where that library cannot be loaded, ISA-L's inflater does the
same, member by member, under the same rules (slower: about a quarter more time on a 1 mm
float32 map); the tests run both on the same files.
"""

from __future__ import annotations

import ctypes
import logging
import threading

import numpy as np
from isal import isal_zlib

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
            return memoryview(out)[:got]
        if raw[pos : pos + 2] != GZIP_MAGIC:
            raise GzipError("data after the last gzip member that are not gzip")


def _inflate_with_isal(raw: bytes, pos: int, out: np.ndarray, got: int) -> tuple[int, int]:
    """Inflate the member at ``pos`` into ``out[got:]`` with ISA-L; return the input it
    took and the bytes it produced."""
    stream = isal_zlib.decompressobj(31)  # 31: the gzip wrapper, checked at the member's end
    room = out.size - got
    try:
        content = stream.decompress(memoryview(raw)[pos:], room)
    except isal_zlib.error as err:
        raise GzipError(str(err)) from err
    if not stream.eof:
        if stream.unconsumed_tail:
            raise GzipError("the stream holds more than the header declares")
        raise GzipError("the compressed data end before the gzip member does")
    out[got : got + len(content)] = np.frombuffer(content, np.uint8)
    return len(raw) - pos - len(stream.unused_data), len(content)


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
        source = ctypes.cast(ctypes.c_char_p(raw), ctypes.c_void_p).value
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


def _load_libdeflate() -> _Libdeflate | None:
    try:
        import deflate._deflate as binding

        return _Libdeflate(ctypes.CDLL(binding.__file__))
    except (ImportError, OSError, AttributeError) as err:  # no library, or no C API in it
        LOGGER.debug("libdeflate's C API cannot be loaded (%s): ISA-L inflates", err)
        return None


_LIBDEFLATE = _load_libdeflate()


def _member_inflater():
    return _LIBDEFLATE if _LIBDEFLATE is not None else _inflate_with_isal


def peek(raw: bytes, size: int) -> bytes:
    """The first ``size`` bytes of a gzip file's content, from its first 64 KiB (a header).

    Raises
    ------
    GzipError
        If the start of the stream is damaged.
    """
    try:
        return isal_zlib.decompressobj(31).decompress(raw[: 1 << 16], size)
    except isal_zlib.error as err:
        raise GzipError(str(err)) from err
